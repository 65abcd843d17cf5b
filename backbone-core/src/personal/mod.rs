//! Personal data that can be forgotten (crypto-shredding).
//!
//! A contract marks parameters `#[personal]` and names the event's data subject with a
//! `#[subject]` parameter or [`Producer::with_subject`](crate::Producer::with_subject). The
//! producer encrypts each personal parameter with the subject's key (AES-256-GCM), held by a
//! [`KeyStore`]; the channel stores only the ciphertext. [`KeyStore::forget`] deletes the key:
//! from then on every read of those parameters (consumers, the event store, aggregates,
//! replayed dead letters, the CLI) yields [`Personal::Forgotten`], while the event, its other
//! parameters and its order stay.
//!
//! ```
//! use backbone_core::personal::Personal;
//! use backbone_core::{async_trait, events_contract, ConsumerContext, HandlerResult};
//!
//! #[events_contract]
//! pub trait Customers {
//!     async fn registered(&self, #[subject] customer: String, #[personal] email: String);
//! }
//!
//! struct Mailer;
//!
//! #[async_trait]
//! impl CustomersConsumer for Mailer {
//!     async fn registered(
//!         &self,
//!         _ctx: &ConsumerContext,
//!         customer: String,
//!         email: Personal<String>,
//!     ) -> HandlerResult {
//!         match email {
//!             Personal::Known(email) => println!("welcome mail for {customer} to {email}"),
//!             Personal::Forgotten => println!("{customer} asked to be forgotten"),
//!         }
//!         Ok(())
//!     }
//! }
//! ```
//!
//! What `forget` covers: every personal parameter backbone stores, wherever it is (stream
//! entries, payload hashes, dead letters, aggregate streams). What it cannot cover: copies the
//! application made after reading, such as aggregate snapshots and projection state holding a
//! [`Personal::Known`] value; drop those with the store's snapshot deletion.

mod keys;
mod seal;

pub use keys::{KeyClass, KeyId, KeyStore, MemoryKeyStore, SubjectKey};
pub use seal::{
    open_all, seal_event, seal_fields, validate_subject, Sealed, PERSONAL_FIELD_SEPARATOR,
};

/// A `#[personal]` parameter of an operation: its name, and its TTL (`#[personal(ttl =
/// "30d")]`) after which it reads as forgotten even if its subject is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonalParameter {
    /// The parameter's name.
    pub name: &'static str,
    /// Its TTL in seconds, if it has one.
    pub ttl_secs: Option<u64>,
}

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A personal parameter as a handler receives it: the value, or `Forgotten` when its
/// subject's key was deleted.
///
/// `Debug` never shows the value (`Known(<personal>)`), so logging an event does not log
/// personal data. Serialized (for a snapshot, say) a known value is the value itself and a
/// forgotten one is `null`; `null` reads back as `Forgotten`.
///
/// ```
/// use backbone_core::personal::Personal;
///
/// let email = Personal::from("ada@example.com".to_owned());
/// assert_eq!(email.known().map(String::as_str), Some("ada@example.com"));
/// assert_eq!(format!("{email:?}"), "Known(<personal>)");
/// assert!(Personal::<String>::Forgotten.is_forgotten());
/// assert_eq!(serde_json::to_string(&Personal::<u8>::Forgotten).unwrap(), "null");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Personal<T> {
    /// The value, decrypted.
    Known(T),
    /// The subject was forgotten: the value can never be read again.
    Forgotten,
}

impl<T> Personal<T> {
    /// The value, unless forgotten.
    pub fn known(&self) -> Option<&T> {
        match self {
            Personal::Known(value) => Some(value),
            Personal::Forgotten => None,
        }
    }

    /// The value, unless forgotten.
    pub fn into_known(self) -> Option<T> {
        match self {
            Personal::Known(value) => Some(value),
            Personal::Forgotten => None,
        }
    }

    /// Whether the subject was forgotten.
    pub fn is_forgotten(&self) -> bool {
        matches!(self, Personal::Forgotten)
    }

    /// The known value mapped by `f`; a forgotten one stays forgotten.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Personal<U> {
        match self {
            Personal::Known(value) => Personal::Known(f(value)),
            Personal::Forgotten => Personal::Forgotten,
        }
    }
}

impl<T> From<T> for Personal<T> {
    fn from(value: T) -> Self {
        Personal::Known(value)
    }
}

impl<T> std::fmt::Debug for Personal<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Personal::Known(_) => f.write_str("Known(<personal>)"),
            Personal::Forgotten => f.write_str("Forgotten"),
        }
    }
}

impl<T: Serialize> Serialize for Personal<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Personal::Known(value) => value.serialize(serializer),
            Personal::Forgotten => serializer.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Personal<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(deserializer)? {
            Some(value) => Personal::Known(value),
            None => Personal::Forgotten,
        })
    }
}

#[cfg(feature = "schema")]
impl<T: schemars::JsonSchema> schemars::JsonSchema for Personal<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}
