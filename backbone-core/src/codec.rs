//! The JSON codec: each parameter travels as one JSON value, in its own field.
//!
//! [`Fields`] holds an event's encoded parameters (name → JSON bytes). Generated code calls
//! [`encode`] and [`decode`]; channels only move [`Fields`] around.

use serde::de::DeserializeOwned;
use serde::Serialize;

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Vec<(String, Vec<u8>)>);

impl Fields {
    /// No fields.
    pub fn new() -> Self {
        Fields(Vec::new())
    }

    /// Room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Fields(Vec::with_capacity(n))
    }

    /// Adds one field.
    pub fn push(&mut self, name: impl Into<String>, value: Vec<u8>) {
        self.0.push((name.into(), value));
    }

    /// The value of the field called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }
}

impl From<Vec<(String, Vec<u8>)>> for Fields {
    fn from(fields: Vec<(String, Vec<u8>)>) -> Self {
        Fields(fields)
    }
}

impl FromIterator<(String, Vec<u8>)> for Fields {
    fn from_iter<I: IntoIterator<Item = (String, Vec<u8>)>>(iter: I) -> Self {
        Fields(iter.into_iter().collect())
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
