//! How an entry's personal parameters are shown: sealed or forgotten, and in the clear only
//! with `--decrypt` (opened with the key store's keys).

use backbone_core::personal::{open_all, Sealed};
use backbone_core::{Fields, MessageId};
use backbone_redis::entry::{MESSAGE_ID, PERSONAL, SUBJECT};
use backbone_redis::RedisKeyStore;
use serde_json::{Map, Value};

use super::{field_json, Stream};
use crate::error::Failure;

/// What a sealed parameter shows without `--decrypt`.
pub const SEALED: &str = "(personal: sealed; --decrypt shows it)";
/// What a parameter of a forgotten subject shows.
pub const FORGOTTEN: &str = "(personal: forgotten)";

/// Replaces each sealed parameter of the entry document `doc` (its `parameters`, its
/// `personal`, `subject` and `message_id` fields) by [`SEALED`], [`FORGOTTEN`], or with
/// `--decrypt` its value; a value that does not open says why. Those kept in an object store
/// are left as they are (their fields hold references; see [`objects`](super::objects)).
pub async fn present(stream: &Stream, doc: &mut Map<String, Value>) -> Result<(), Failure> {
    let text = |name: &str| doc.get(name).and_then(Value::as_str).map(str::to_owned);
    let (Some(names), Some(subject), Some(id)) = (text(PERSONAL), text(SUBJECT), text(MESSAGE_ID))
    else {
        return Ok(());
    };
    let Ok(message_id) = id.parse::<MessageId>() else {
        return Ok(());
    };
    let objects = super::objects::names(doc);
    let Some(Value::Object(parameters)) = doc.get_mut("parameters") else {
        return Ok(());
    };
    let names: Vec<String> = (names.split(','))
        .filter(|name| !objects.iter().any(|o| o == name))
        .map(str::to_owned)
        .collect();
    let keys = RedisKeyStore::new(stream.conn()).prefix(&stream.key_prefix);
    let mut fields = Fields::new();
    for name in &names {
        if let Some(Value::String(sealed)) = parameters.get(name) {
            fields.push(name.clone(), sealed.clone().into_bytes());
        }
    }
    let sealed = Sealed {
        subject: &subject,
        message_id: &message_id,
        personal: &names,
        fields: &mut fields,
    };
    let opened = open_all(&keys, vec![sealed]).await?.pop().unwrap_or(Ok(()));
    for name in names {
        if !parameters.contains_key(&name) {
            continue;
        }
        let shown = match &opened {
            Err(e) => Value::from(format!("(personal: {e})")),
            Ok(()) if fields.is_forgotten(&name) => Value::from(FORGOTTEN),
            Ok(()) if !stream.decrypt => Value::from(SEALED),
            Ok(()) => field_json(fields.get(&name).unwrap_or_default()),
        };
        parameters.insert(name, shown);
    }
    Ok(())
}
