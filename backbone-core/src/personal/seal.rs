//! Sealing and opening personal parameters: AES-256-GCM with the subject's key, a random
//! 96-bit nonce per value, the event's message id and the parameter's name as associated data
//! (a ciphertext moved to another event or parameter does not open).
//!
//! A sealed value is text: `v1.<key class>.<key id, 16 hex digits>.<base64 of nonce ‖
//! ciphertext ‖ tag>`, the class `s` (the subject's key) or `t<ttl>-<bucket>` (see
//! [`KeyClass`]).

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;

use std::time::Duration;

use super::{KeyClass, KeyId, KeyStore, PersonalParameter, SubjectKey};
use crate::{Error, Fields, MessageId, Operation};

/// Separates the parameter names in an entry's `personal` field (`email,address`).
pub const PERSONAL_FIELD_SEPARATOR: char = ',';

const VERSION: &str = "v1";
const NONCE_LEN: usize = 12;

/// Checks a data subject's id: 1 to 256 bytes, no control characters. It is stored in the
/// clear (entry field `subject`, key store key names): use an opaque id, not an e-mail.
///
/// ```
/// use backbone_core::personal::validate_subject;
///
/// assert!(validate_subject("customer-7").is_ok());
/// assert!(validate_subject("").unwrap_err().to_string().contains("empty"));
/// assert!(validate_subject("a\nb").is_err());
/// ```
pub fn validate_subject(subject: &str) -> Result<(), Error> {
    let problem = if subject.is_empty() {
        "is empty"
    } else if subject.len() > 256 {
        "is longer than 256 bytes"
    } else if subject.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(Error::Config(format!(
        "the data subject {subject:?} {problem}"
    )))
}

fn aad(message_id: &MessageId, parameter: &str) -> Vec<u8> {
    format!("backbone.personal.v1\0{message_id}\0{parameter}").into_bytes()
}

/// Seals one value with `key`, of `class`.
fn seal_value(
    key: &SubjectKey,
    class: KeyClass,
    message_id: &MessageId,
    parameter: &str,
    plain: &[u8],
) -> Vec<u8> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.secret()));
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let aad = aad(message_id, parameter);
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plain,
                aad: &aad,
            },
        )
        .expect("AES-GCM encrypts any message shorter than 64 GiB");
    let mut bytes = nonce.to_vec();
    bytes.extend_from_slice(&sealed);
    let body = STANDARD_NO_PAD.encode(bytes);
    format!("{VERSION}.{class}.{}.{body}", key.id()).into_bytes()
}

fn unsealable(parameter: &str, reason: impl Into<String>) -> Error {
    Error::Unsealable {
        parameter: parameter.to_owned(),
        reason: reason.into(),
    }
}

/// A sealed value, parsed: the key it names, and its nonce and ciphertext.
struct Parsed {
    class: KeyClass,
    id: KeyId,
    bytes: Vec<u8>,
}

fn parse(parameter: &str, sealed: &[u8]) -> Result<Parsed, Error> {
    let not_sealed = || {
        unsealable(
            parameter,
            "the value is not a sealed value (`v1.<key class>.<key id>.<base64>`)",
        )
    };
    let text = std::str::from_utf8(sealed).map_err(|_| not_sealed())?;
    let mut parts = text.splitn(4, '.');
    let (Some(VERSION), Some(class), Some(id), Some(body)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(not_sealed());
    };
    let class = class.parse::<KeyClass>().map_err(|_| not_sealed())?;
    let mut key_id = [0u8; 8];
    if id.len() != 16 || !id.is_ascii() {
        return Err(not_sealed());
    }
    for (i, byte) in key_id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).map_err(|_| not_sealed())?;
    }
    let bytes = STANDARD_NO_PAD.decode(body).map_err(|_| not_sealed())?;
    if bytes.len() < NONCE_LEN + 16 {
        return Err(unsealable(parameter, "the sealed value is truncated"));
    }
    Ok(Parsed {
        class,
        id: KeyId(key_id),
        bytes,
    })
}

/// `Some(plain)`, or `None` when the key it was sealed with is gone.
fn open_value(
    key: Option<&SubjectKey>,
    message_id: &MessageId,
    parameter: &str,
    parsed: &Parsed,
) -> Result<Option<Vec<u8>>, Error> {
    let key = match key {
        Some(key) if key.id() == parsed.id => key,
        // No key, or a newer one: the key it was sealed with is gone.
        _ => return Ok(None),
    };
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.secret()));
    let (nonce, body) = parsed.bytes.split_at(NONCE_LEN);
    let aad = aad(message_id, parameter);
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: &aad,
            },
        )
        .map(Some)
        .map_err(|_| {
            unsealable(
                parameter,
                "authentication failed (the value was altered, or sealed for another event)",
            )
        })
}

/// Seals the `personal` parameters present in `fields` with `subject`'s keys from `keys`
/// (created when missing): a parameter without a TTL with the subject's own key, one with a
/// TTL with the key of its time bucket (see [`KeyClass`]), by the clock `now_ms`. Returns the
/// names sealed, for the entry's `personal` field.
///
/// ```
/// use backbone_core::personal::{open_all, seal_fields, MemoryKeyStore, PersonalParameter, Sealed};
/// use backbone_core::{Fields, MessageId};
/// use backbone_core::metadata::now_millis;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), backbone_core::Error> {
/// let keys = MemoryKeyStore::new();
/// let id = MessageId::new();
/// let email = PersonalParameter { name: "email", ttl_secs: None };
/// let mut fields = Fields::new();
/// fields.push("email", br#""ada@example.com""#.to_vec());
/// fields.push("plan", br#""pro""#.to_vec());
/// let sealed = seal_fields(&keys, "customer-7", &id, &[email], &mut fields, now_millis()).await?;
/// assert_eq!(sealed, ["email"]);
/// assert!(fields.get("email").unwrap().starts_with(b"v1.s."));
///
/// let personal = ["email".to_owned()];
/// let mut read = fields.clone();
/// let opened = open_all(&keys, vec![Sealed { subject: "customer-7", message_id: &id, personal: &personal, fields: &mut read }]).await?;
/// assert!(opened[0].is_ok());
/// assert_eq!(read.get("email"), Some(&br#""ada@example.com""#[..]));
///
/// use backbone_core::personal::KeyStore;
/// keys.forget("customer-7").await?;
/// let mut forgotten = fields.clone();
/// open_all(&keys, vec![Sealed { subject: "customer-7", message_id: &id, personal: &personal, fields: &mut forgotten }]).await?;
/// assert!(forgotten.is_forgotten("email"));
/// assert_eq!(forgotten.get("plan"), Some(&br#""pro""#[..]));
/// # Ok(())
/// # }
/// ```
pub async fn seal_fields(
    keys: &dyn KeyStore,
    subject: &str,
    message_id: &MessageId,
    personal: &[PersonalParameter],
    fields: &mut Fields,
    now_ms: u64,
) -> Result<Vec<&'static str>, Error> {
    let mut sealed = Vec::new();
    let mut got: Vec<(KeyClass, SubjectKey)> = Vec::new();
    for param in personal {
        let Some(plain) = fields.get(param.name) else {
            continue;
        };
        let plain = plain.to_vec();
        let class = match param.ttl_secs {
            None => KeyClass::Subject,
            Some(ttl) => KeyClass::expiring(Duration::from_secs(ttl), now_ms),
        };
        let key = match got.iter().find(|(c, _)| *c == class) {
            Some((_, key)) => key.clone(),
            None => {
                let key = keys.sealing_key(subject, class).await?;
                got.push((class, key.clone()));
                key
            }
        };
        fields.set(
            param.name,
            seal_value(&key, class, message_id, param.name, &plain),
        );
        sealed.push(param.name);
    }
    Ok(sealed)
}

/// Seals an encoded event of `operation` for sending: its subject is its `#[subject]`
/// parameter's value (a JSON string as the string, any other value as its JSON text), else
/// `subject`; its personal parameters are sealed with that subject's keys from `keys`.
/// Returns the subject and the names sealed (for the envelope). Fails with
/// [`Error::NoSubject`] when the operation has personal parameters but no subject, and with
/// [`Error::Config`] when it has some but there is no key store.
pub async fn seal_event(
    keys: Option<&dyn KeyStore>,
    operation: &Operation,
    subject: Option<&str>,
    message_id: &MessageId,
    fields: &mut Fields,
) -> Result<(Option<String>, Vec<&'static str>), Error> {
    let subject = match operation.subject {
        Some(param) => subject_of(param, fields),
        None => subject.map(str::to_owned),
    };
    if let Some(subject) = &subject {
        validate_subject(subject)?;
    }
    if operation.personal.is_empty() {
        return Ok((subject, Vec::new()));
    }
    let Some(named) = subject.as_deref() else {
        return Err(Error::NoSubject {
            operation: operation.name.to_owned(),
        });
    };
    let keys = keys.ok_or_else(|| {
        Error::Config(format!(
            "operation `{}` has personal parameters, and there is no key store to seal them",
            operation.name
        ))
    })?;
    let sealed = seal_fields(
        keys,
        named,
        message_id,
        operation.personal,
        fields,
        crate::metadata::now_millis(),
    )
    .await?;
    Ok((subject, sealed))
}

/// The data subject named by the `#[subject]` parameter `param`: its JSON string, or its JSON
/// text for any other value (`42` for a number); none when it is `null` or missing.
fn subject_of(param: &str, fields: &Fields) -> Option<String> {
    let bytes = fields.get(param)?;
    match serde_json::from_slice::<serde_json::Value>(bytes).ok()? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// One received event whose `personal` parameters in `fields` are sealed for `subject`.
#[derive(Debug)]
pub struct Sealed<'a> {
    /// The event's data subject (entry field `subject`).
    pub subject: &'a str,
    /// The event's message id (part of each value's associated data).
    pub message_id: &'a MessageId,
    /// The sealed parameters (entry field `personal`).
    pub personal: &'a [String],
    /// The parameters; opened in place.
    pub fields: &'a mut Fields,
}

/// Opens the sealed parameters of a batch of events with one
/// [`KeyStore::opening_keys`] call: each becomes its plain JSON again, or is marked forgotten
/// ([`Fields::is_forgotten`]) when the key it was sealed with is gone (forgotten, expired).
/// Each event's result says whether its values opened; a value that is not a sealed value,
/// or does not authenticate, is [`Error::Unsealable`] (a bad event). The outer error is the
/// key store's.
pub async fn open_all(
    keys: &dyn KeyStore,
    events: Vec<Sealed<'_>>,
) -> Result<Vec<Result<(), Error>>, Error> {
    // Parse every sealed value first, to ask for each key once.
    let mut parsed: Vec<Result<Vec<(usize, Parsed)>, Error>> = Vec::with_capacity(events.len());
    let mut names: Vec<(&str, KeyClass)> = Vec::new();
    for event in &events {
        let mut values = Vec::new();
        let result = event.personal.iter().enumerate().try_for_each(|(i, name)| {
            if let Some(sealed) = event.fields.get(name) {
                let p = parse(name, sealed)?;
                if !names.contains(&(event.subject, p.class)) {
                    names.push((event.subject, p.class));
                }
                values.push((i, p));
            }
            Ok(())
        });
        parsed.push(result.map(|()| values));
    }
    let found = if names.is_empty() {
        Vec::new()
    } else {
        keys.opening_keys(&names).await?
    };
    let key_of = |subject: &str, class: KeyClass| {
        let at = names.iter().position(|n| *n == (subject, class))?;
        found.get(at)?.as_ref()
    };
    let mut results = Vec::with_capacity(events.len());
    for (event, values) in events.into_iter().zip(parsed) {
        let result = values.and_then(|values| {
            for (i, p) in values {
                let name = &event.personal[i];
                let key = key_of(event.subject, p.class);
                match open_value(key, event.message_id, name, &p)? {
                    Some(plain) => event.fields.set(name, plain),
                    None => event.fields.forget(name),
                }
            }
            Ok(())
        });
        results.push(result);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(
        key: &SubjectKey,
        id: &MessageId,
        param: &str,
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>, Error> {
        open_value(Some(key), id, param, &parse(param, sealed)?)
    }

    #[test]
    fn a_sealed_value_opens_only_for_its_event_and_parameter() {
        let key = SubjectKey::generate();
        let id = MessageId::new();
        let sealed = seal_value(&key, KeyClass::Subject, &id, "email", b"\"a@b\"");
        assert!(matches!(opened(&key, &id, "email", &sealed), Ok(Some(p)) if p == b"\"a@b\""));
        let moved = opened(&key, &MessageId::new(), "email", &sealed).expect_err("another event");
        assert!(
            moved.to_string().contains("authentication failed"),
            "{moved}"
        );
        assert!(
            opened(&key, &id, "name", &sealed).is_err(),
            "another parameter"
        );
    }

    #[test]
    fn altered_or_foreign_values_are_errors_and_other_keys_mean_forgotten() {
        let key = SubjectKey::generate();
        let id = MessageId::new();
        let class = KeyClass::Expiring {
            ttl_secs: 60,
            bucket: 7,
        };
        let mut sealed = seal_value(&key, class, &id, "email", b"1");
        assert!(sealed.starts_with(b"v1.t60-7."));
        let other = SubjectKey::generate();
        assert!(matches!(opened(&other, &id, "email", &sealed), Ok(None)));
        let last = sealed.len() - 1;
        sealed[last] = if sealed[last] == b'A' { b'B' } else { b'A' };
        assert!(opened(&key, &id, "email", &sealed).is_err());
        for junk in [
            &b"\"clear\""[..],
            b"v1.s.xyz.abc",
            b"v1.q.0011223344556677.AAAA",
            b"v2.s.0011223344556677.AAAA",
        ] {
            let err = opened(&key, &id, "email", junk).expect_err("junk");
            assert!(err.to_string().contains("not a sealed value"), "{err}");
        }
    }
}
