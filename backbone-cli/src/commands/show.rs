//! `backbone show <uri> <id>`: one event, whole — by stream id or by message id.

use backbone_core::MessageId;
use backbone_redis::keys::StreamKeys;
use serde_json::{Map, Value};

use super::{field_json, Stream};
use crate::error::{redis, Failure};
use crate::output::Output;

/// A stream id, or a message id to look for.
enum Wanted {
    StreamId(String),
    Message(MessageId),
}

fn parse(id: &str) -> Result<Wanted, Failure> {
    let is_number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match id.split_once('-') {
        Some((ms, seq)) if is_number(ms) && is_number(seq) => {
            return Ok(Wanted::StreamId(id.to_owned()))
        }
        _ if is_number(id) => return Ok(Wanted::StreamId(format!("{id}-0"))),
        _ => {}
    }
    id.parse::<MessageId>().map(Wanted::Message).map_err(|_| {
        Failure::Usage(format!(
            "{id:?} is neither a stream id (like 1700000000000-0) nor a message id (a UUID)"
        ))
    })
}

pub async fn run(stream: &Stream, id: &str, out: &Output) -> Result<(), Failure> {
    let wanted = parse(id)?;
    for (p, keys) in stream.layout.partitions().iter().enumerate() {
        if let Some((entry_id, fields)) = find(stream, keys, &wanted).await? {
            let mut doc = entry_document(stream, keys, &entry_id, &fields).await?;
            doc.insert("partition".into(), Value::from(p));
            doc.insert("stream".into(), Value::from(keys.stream()));
            out.document(&doc);
            return Ok(());
        }
    }
    Err(Failure::NotFound(format!(
        "entry {id} in {} ({} partition(s))",
        stream.layout.address(),
        stream.layout.count()
    )))
}

/// An entry's fields, name and value.
pub type Fields = Vec<(String, Vec<u8>)>;

/// An entry of `keys`' streams as a document: its id, its fields, and its parameters: an
/// inline entry's `param.<name>` fields, or those read from its payload hash (only a hash of
/// this stream's own; a missing one is said so), [presented](present). An entry with both
/// keeps its `param.*` fields as fields (it is malformed: consumers dead-letter it).
pub async fn entry_document(
    stream: &Stream,
    keys: &StreamKeys,
    entry_id: &str,
    fields: &Fields,
) -> Result<Map<String, Value>, Failure> {
    let mut doc = Map::new();
    doc.insert("stream_id".into(), Value::from(entry_id));
    if let Some(key) = put_fields(fields, &mut doc) {
        let parameters = hash_parameters(stream, keys, &key).await?;
        doc.insert("parameters".into(), parameters);
    }
    present(stream, &mut doc).await?;
    Ok(doc)
}

/// Puts an entry's `fields` in `doc`, each as text, except an inline entry's
/// `param.<name>` fields: they become its `parameters` (their JSON). Returns the payload hash
/// key of an entry that has one (its parameters are not read).
pub fn put_fields(fields: &Fields, doc: &mut Map<String, Value>) -> Option<String> {
    let payload = fields
        .iter()
        .find(|(name, _)| name == backbone_redis::entry::PAYLOAD)
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned());
    let mut inline = Map::new();
    for (name, value) in fields {
        if payload.is_none() {
            if let Some(param) = name.strip_prefix(backbone_redis::entry::PARAM_PREFIX) {
                inline.insert(param.to_owned(), field_json(value));
                continue;
            }
        }
        let text = String::from_utf8_lossy(value).into_owned();
        doc.insert(name.clone(), Value::from(text));
    }
    if payload.is_none() {
        doc.insert("parameters".into(), Value::Object(inline));
    }
    payload
}

/// The parameters in the payload hash `key` (only a hash of `keys`' own; a missing one is
/// said so).
async fn hash_parameters(stream: &Stream, keys: &StreamKeys, key: &str) -> Result<Value, Failure> {
    if !key.starts_with(&keys.payload_prefix()) {
        return Ok(Value::from(format!(
            "not read: {key} is outside this stream's payload hashes"
        )));
    }
    let hash: Vec<(String, Vec<u8>)> = ::redis::cmd("HGETALL")
        .arg(key)
        .query_async(&mut stream.conn())
        .await
        .map_err(|e| redis(format!("HGETALL {key}"), e))?;
    if hash.is_empty() {
        return Ok(Value::from(format!(
            "missing: {key} does not exist (expired or trimmed)"
        )));
    }
    let parameters = hash
        .into_iter()
        .map(|(name, value)| (name, field_json(&value)))
        .collect();
    Ok(Value::Object(parameters))
}

/// Shows the parameters of the entry document `doc` as people may see them: personal ones
/// sealed, forgotten or (with `--decrypt`) opened, those in an object store as the references
/// their fields hold.
pub async fn present(stream: &Stream, doc: &mut Map<String, Value>) -> Result<(), Failure> {
    super::personal::present(stream, doc).await?;
    super::objects::describe(doc, stream.json);
    Ok(())
}

/// The entry of `keys`' stream that `wanted` names.
async fn find(
    stream: &Stream,
    keys: &StreamKeys,
    wanted: &Wanted,
) -> Result<Option<(String, Fields)>, Failure> {
    let key = keys.stream();
    let range = |start: String, end: String, count: usize| {
        let mut connection = stream.conn();
        async move {
            ::redis::cmd("XRANGE")
                .arg(key)
                .arg(start)
                .arg(end)
                .arg("COUNT")
                .arg(count)
                .query_async::<Vec<(String, Fields)>>(&mut connection)
                .await
                .map_err(|e| redis(format!("XRANGE {key}"), e))
        }
    };
    match wanted {
        Wanted::StreamId(id) => Ok(range(id.clone(), id.clone(), 1).await?.pop()),
        Wanted::Message(message_id) => {
            let wanted = message_id.to_string();
            let mut start = "-".to_owned();
            loop {
                let page = range(start.clone(), "+".into(), 1000).await?;
                let done = page.len() < 1000;
                let last = page.last().map(|(id, _)| id.clone());
                for (id, fields) in page {
                    let hit = fields.iter().any(|(name, value)| {
                        name == backbone_redis::entry::MESSAGE_ID && value == wanted.as_bytes()
                    });
                    if hit {
                        return Ok(Some((id, fields)));
                    }
                }
                match (done, last) {
                    (false, Some(last)) => start = format!("({last}"),
                    _ => return Ok(None),
                }
            }
        }
    }
}
