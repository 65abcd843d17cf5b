//! Sealing and opening personal parameters: AES-256-GCM with the subject's key, a random
//! 96-bit nonce per value, the event's message id and the parameter's name as associated data
//! (a ciphertext moved to another event or parameter does not open).
//!
//! A sealed value is text: `v1.<key id, 16 hex digits>.<base64 of nonce ‖ ciphertext ‖ tag>`.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;

use super::{KeyId, KeyStore, SubjectKey};
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

/// Seals one value with `key`.
fn seal_value(key: &SubjectKey, message_id: &MessageId, parameter: &str, plain: &[u8]) -> Vec<u8> {
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
    format!("{VERSION}.{}.{}", key.id(), STANDARD_NO_PAD.encode(bytes)).into_bytes()
}

/// What a sealed value opens to.
enum Opened {
    Plain(Vec<u8>),
    Forgotten,
}

fn unsealable(parameter: &str, reason: impl Into<String>) -> Error {
    Error::Unsealable {
        parameter: parameter.to_owned(),
        reason: reason.into(),
    }
}

/// The key id a sealed value names, and its nonce and ciphertext.
fn parse(parameter: &str, sealed: &[u8]) -> Result<(KeyId, Vec<u8>), Error> {
    let not_sealed = || {
        unsealable(
            parameter,
            "the value is not a sealed value (`v1.<key id>.<base64>`)",
        )
    };
    let text = std::str::from_utf8(sealed).map_err(|_| not_sealed())?;
    let mut parts = text.splitn(3, '.');
    let (Some(VERSION), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(not_sealed());
    };
    let mut key_id = [0u8; 8];
    if id.len() != 16 {
        return Err(not_sealed());
    }
    for (i, byte) in key_id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).map_err(|_| not_sealed())?;
    }
    let bytes = STANDARD_NO_PAD.decode(body).map_err(|_| not_sealed())?;
    if bytes.len() < NONCE_LEN + 16 {
        return Err(unsealable(parameter, "the sealed value is truncated"));
    }
    Ok((KeyId(key_id), bytes))
}

fn open_value(
    key: Option<&SubjectKey>,
    message_id: &MessageId,
    parameter: &str,
    sealed: &[u8],
) -> Result<Opened, Error> {
    let (id, bytes) = parse(parameter, sealed)?;
    let key = match key {
        Some(key) if key.id() == id => key,
        // No key, or a newer one: the key it was sealed with is gone.
        _ => return Ok(Opened::Forgotten),
    };
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.secret()));
    let (nonce, body) = bytes.split_at(NONCE_LEN);
    let aad = aad(message_id, parameter);
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: &aad,
            },
        )
        .map(Opened::Plain)
        .map_err(|_| {
            unsealable(
                parameter,
                "authentication failed (the value was altered, or sealed for another event)",
            )
        })
}

/// Seals the `personal` parameters present in `fields` with `subject`'s key from `keys`
/// (created when it has none); returns the names sealed, for the entry's `personal` field.
///
/// ```
/// use backbone_core::personal::{open_fields, seal_fields, KeyStore, MemoryKeyStore};
/// use backbone_core::{Fields, MessageId};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), backbone_core::Error> {
/// let keys = MemoryKeyStore::new();
/// let id = MessageId::new();
/// let mut fields = Fields::new();
/// fields.push("email", br#""ada@example.com""#.to_vec());
/// fields.push("plan", br#""pro""#.to_vec());
/// let sealed = seal_fields(&keys, "customer-7", &id, &["email"], &mut fields).await?;
/// assert_eq!(sealed, ["email"]);
/// assert!(fields.get("email").unwrap().starts_with(b"v1."));
///
/// let mut read = fields.clone();
/// let key = keys.opening_keys(&["customer-7"]).await?.remove(0);
/// open_fields(key.as_ref(), &id, &["email"], &mut read)?;
/// assert_eq!(read.get("email"), Some(&br#""ada@example.com""#[..]));
///
/// keys.forget("customer-7").await?;
/// let mut forgotten = fields.clone();
/// open_fields(None, &id, &["email"], &mut forgotten)?;
/// assert!(forgotten.is_forgotten("email"));
/// assert_eq!(forgotten.get("plan"), Some(&br#""pro""#[..]));
/// # Ok(())
/// # }
/// ```
pub async fn seal_fields(
    keys: &dyn KeyStore,
    subject: &str,
    message_id: &MessageId,
    personal: &[&'static str],
    fields: &mut Fields,
) -> Result<Vec<&'static str>, Error> {
    let present: Vec<&'static str> = personal
        .iter()
        .copied()
        .filter(|name| fields.get(name).is_some())
        .collect();
    if present.is_empty() {
        return Ok(present);
    }
    let key = keys.sealing_key(subject).await?;
    for name in &present {
        if let Some(plain) = fields.get(name) {
            let sealed = seal_value(&key, message_id, name, plain);
            fields.set(*name, sealed);
        }
    }
    Ok(present)
}

/// Seals an encoded event of `operation` for sending: its subject is its `#[subject]`
/// parameter's value (a JSON string as the string, any other value as its JSON text), else
/// `subject`; its personal parameters are sealed with that subject's key from `keys`. Returns
/// the subject and the names sealed (for the envelope). Fails with [`Error::NoSubject`] when
/// the operation has personal parameters but no subject, and with [`Error::Config`] when it
/// has some but there is no key store.
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
    let sealed = seal_fields(keys, named, message_id, operation.personal, fields).await?;
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

/// Opens the `personal` parameters of `fields` with `key` (the subject's current key, `None`
/// when it has none): each becomes its plain JSON again, or is marked forgotten
/// ([`Fields::is_forgotten`]) when the key it was sealed with is gone. A value that is not a
/// sealed value, or does not authenticate, is [`Error::Unsealable`].
pub fn open_fields<S: AsRef<str>>(
    key: Option<&SubjectKey>,
    message_id: &MessageId,
    personal: &[S],
    fields: &mut Fields,
) -> Result<(), Error> {
    for name in personal {
        let name = name.as_ref();
        let Some(sealed) = fields.get(name) else {
            continue;
        };
        match open_value(key, message_id, name, sealed)? {
            Opened::Plain(plain) => fields.set(name, plain),
            Opened::Forgotten => fields.forget(name),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_for_its_event_and_parameter() {
        let key = SubjectKey::generate();
        let id = MessageId::new();
        let sealed = seal_value(&key, &id, "email", b"\"a@b\"");
        let opened = |id: &MessageId, param: &str| open_value(Some(&key), id, param, &sealed);
        assert!(matches!(opened(&id, "email"), Ok(Opened::Plain(p)) if p == b"\"a@b\""));
        let moved = opened(&MessageId::new(), "email")
            .err()
            .expect("another event");
        assert!(
            moved.to_string().contains("authentication failed"),
            "{moved}"
        );
        assert!(opened(&id, "name").is_err(), "another parameter");
    }

    #[test]
    fn altered_or_foreign_values_are_errors_and_other_keys_mean_forgotten() {
        let key = SubjectKey::generate();
        let id = MessageId::new();
        let mut sealed = seal_value(&key, &id, "email", b"1");
        let other = SubjectKey::generate();
        assert!(matches!(
            open_value(Some(&other), &id, "email", &sealed),
            Ok(Opened::Forgotten)
        ));
        let last = sealed.len() - 1;
        sealed[last] = if sealed[last] == b'A' { b'B' } else { b'A' };
        assert!(open_value(Some(&key), &id, "email", &sealed).is_err());
        for junk in [
            &b"\"clear\""[..],
            b"v1.xyz.abc",
            b"v2.0011223344556677.AAAA",
        ] {
            let err = open_value(Some(&key), &id, "email", junk)
                .err()
                .expect("junk");
            assert!(err.to_string().contains("not a sealed value"), "{err}");
        }
    }
}
