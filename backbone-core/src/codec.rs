//! The JSON codec: each parameter travels as one JSON value, in its own field.
//!
//! [`Fields`] holds an event's encoded parameters (name → JSON bytes). Generated code calls
//! [`encode`] and [`decode`]; channels only move [`Fields`] around.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::personal::Personal;
use crate::Error;

/// An event's parameters, each encoded on its own: `(parameter name, JSON bytes)`.
///
/// ```
/// use backbone_core::Fields;
///
/// let mut fields = Fields::new();
/// fields.push("email", br#""ada@example.com""#.to_vec());
/// assert_eq!(fields.get("email"), Some(&br#""ada@example.com""#[..]));
/// assert_eq!(fields.get("time"), None);
/// assert_eq!(fields.len(), 1);
/// ```
///
/// A personal parameter whose subject was forgotten has no value, and is marked instead
/// ([`Fields::forget`], [`Fields::is_forgotten`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    values: Vec<(String, Vec<u8>)>,
    forgotten: Vec<String>,
}

impl Fields {
    /// No fields.
    pub fn new() -> Self {
        Fields::default()
    }

    /// Room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Fields {
            values: Vec::with_capacity(n),
            forgotten: Vec::new(),
        }
    }

    /// Adds one field.
    pub fn push(&mut self, name: impl Into<String>, value: Vec<u8>) {
        self.values.push((name.into(), value));
    }

    /// Sets the field called `name` (replacing its value, or adding it).
    pub fn set(&mut self, name: &str, value: Vec<u8>) {
        match self.values.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.values.push((name.to_owned(), value)),
        }
    }

    /// Removes the value of `name` and marks it forgotten: its subject's key is gone.
    ///
    /// ```
    /// use backbone_core::Fields;
    ///
    /// let mut fields = Fields::new();
    /// fields.push("email", b"v1.sealed".to_vec());
    /// fields.forget("email");
    /// assert_eq!(fields.get("email"), None);
    /// assert!(fields.is_forgotten("email"));
    /// assert_eq!(fields.forgotten().collect::<Vec<_>>(), ["email"]);
    /// ```
    pub fn forget(&mut self, name: &str) {
        self.values.retain(|(n, _)| n != name);
        if !self.is_forgotten(name) {
            self.forgotten.push(name.to_owned());
        }
    }

    /// Whether `name` is a personal parameter whose subject was forgotten.
    pub fn is_forgotten(&self, name: &str) -> bool {
        self.forgotten.iter().any(|n| n == name)
    }

    /// The forgotten parameters.
    pub fn forgotten(&self) -> impl Iterator<Item = &str> {
        self.forgotten.iter().map(String::as_str)
    }

    /// The value of the field called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The number of fields with a value.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when no field has a value.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The fields with a value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.values.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }
}

impl From<Vec<(String, Vec<u8>)>> for Fields {
    fn from(values: Vec<(String, Vec<u8>)>) -> Self {
        Fields {
            values,
            forgotten: Vec::new(),
        }
    }
}

impl FromIterator<(String, Vec<u8>)> for Fields {
    fn from_iter<I: IntoIterator<Item = (String, Vec<u8>)>>(iter: I) -> Self {
        Fields::from(iter.into_iter().collect::<Vec<_>>())
    }
}

/// Encodes one parameter as JSON; errors name the operation and the parameter.
///
/// ```
/// let json = backbone_core::codec::encode("packing", "product_id", &42u64).unwrap();
/// assert_eq!(json, b"42");
/// ```
pub fn encode<T: Serialize + ?Sized>(
    operation: &str,
    parameter: &str,
    value: &T,
) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|source| Error::Encode {
        operation: operation.to_owned(),
        parameter: parameter.to_owned(),
        source,
    })
}

/// Decodes one parameter from `fields`; errors name the operation, the parameter and the
/// problem. A missing field decodes as JSON `null`, so an `Option` parameter reads as `None`;
/// for any other type a missing field is an error.
///
/// ```
/// use backbone_core::{codec, Fields};
///
/// let mut fields = Fields::new();
/// fields.push("time", b"\"soon\"".to_vec());
/// let err = codec::decode::<u64>("packing", "time", &fields).unwrap_err();
/// assert!(err.to_string().starts_with("cannot decode parameter `time` of operation `packing`"));
/// let missing = codec::decode::<u64>("packing", "product_id", &fields).unwrap_err();
/// assert!(missing.to_string().contains("missing"));
/// let none: Option<u64> = codec::decode("packing", "product_id", &fields).unwrap();
/// assert_eq!(none, None);
/// ```
pub fn decode<T: DeserializeOwned>(
    operation: &str,
    parameter: &str,
    fields: &Fields,
) -> Result<T, Error> {
    match fields.get(parameter) {
        Some(bytes) => {
            serde_json::from_slice(bytes).map_err(|e| Error::decode(operation, parameter, e))
        }
        None => serde_json::from_slice(b"null")
            .map_err(|_| Error::decode(operation, parameter, "the field is missing")),
    }
}

/// Encodes one personal parameter (see [`personal`](crate::personal)); a forgotten value
/// cannot be sent again.
///
/// ```
/// use backbone_core::{codec, personal::Personal};
///
/// assert_eq!(codec::encode_personal("registered", "email", &Personal::from(7u8)).unwrap(), b"7");
/// let err = codec::encode_personal::<u8>("registered", "email", &Personal::Forgotten).unwrap_err();
/// assert!(err.to_string().contains("forgotten"), "{err}");
/// ```
pub fn encode_personal<T: Serialize>(
    operation: &str,
    parameter: &str,
    value: &Personal<T>,
) -> Result<Vec<u8>, Error> {
    match value {
        Personal::Known(value) => encode(operation, parameter, value),
        Personal::Forgotten => Err(Error::Encode {
            operation: operation.to_owned(),
            parameter: parameter.to_owned(),
            source: serde::ser::Error::custom(
                "the value is forgotten (its subject's key was deleted): it cannot be sent",
            ),
        }),
    }
}

/// Decodes one personal parameter: [`Personal::Forgotten`] when `fields` marks it forgotten,
/// else like [`decode`], except that an error never quotes the value (it is personal data).
///
/// ```
/// use backbone_core::{codec, personal::Personal, Fields};
///
/// let mut fields = Fields::new();
/// fields.push("email", br#""ada@example.com""#.to_vec());
/// let email: Personal<String> = codec::decode_personal("registered", "email", &fields).unwrap();
/// assert_eq!(email.known().map(String::as_str), Some("ada@example.com"));
/// let err = codec::decode_personal::<u64>("registered", "email", &fields).unwrap_err();
/// assert!(!err.to_string().contains("ada@"), "{err}");
/// fields.forget("email");
/// let gone: Personal<String> = codec::decode_personal("registered", "email", &fields).unwrap();
/// assert!(gone.is_forgotten());
/// ```
pub fn decode_personal<T: DeserializeOwned>(
    operation: &str,
    parameter: &str,
    fields: &Fields,
) -> Result<Personal<T>, Error> {
    if fields.is_forgotten(parameter) {
        return Ok(Personal::Forgotten);
    }
    let bytes = fields.get(parameter).unwrap_or(b"null");
    serde_json::from_slice(bytes)
        .map(Personal::Known)
        .map_err(|e| {
            let why = match fields.get(parameter) {
                None => "the field is missing".to_owned(),
                Some(_) => format!(
                    "the personal value does not decode as {} ({:?} error at column {}; the \
                     value is not shown)",
                    std::any::type_name::<T>(),
                    e.classify(),
                    e.column()
                ),
            };
            Error::decode(operation, parameter, why)
        })
}
