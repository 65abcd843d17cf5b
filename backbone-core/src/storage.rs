//! Where an event's parameters live: [`Storage`], chosen per contract
//! (`#[events_contract(storage = "inline")]`) and per operation (`#[event(storage = "hash")]`).
//!
//! Every entry records its own layout (a `payload` field naming a hash, or `param.<name>`
//! fields), so a consumer reads either without being configured to match; see
//! `docs/wire-format.md`.

use std::fmt;

/// The layout of an event's parameters in the channel.
///
/// ```
/// use backbone_core::storage::Storage;
///
/// assert_eq!(Storage::default(), Storage::Hash);
/// assert_eq!("inline".parse::<Storage>().unwrap(), Storage::Inline);
/// assert_eq!(Storage::Inline.to_string(), "inline");
/// let err = "s3".parse::<Storage>().unwrap_err();
/// assert_eq!("object".parse::<Storage>().unwrap(), Storage::Object);
/// assert!(err.contains("expected `hash`, `inline` or `object`"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Storage {
    /// One Redis hash per event (`bb:<tag>:payload:<message_id>`), one field per parameter;
    /// the stream entry names it. The default.
    #[default]
    Hash,
    /// The parameters are fields of the stream entry itself (`param.<name>`): no second key,
    /// about half the memory per event. Sends stay idempotent through a producer id and a
    /// per-producer sequence instead of the payload hash.
    Inline,
    /// As [`Inline`](Storage::Inline), except that each parameter larger than the threshold
    /// goes to an object store (S3, GCS, Azure, local files; see [`objects`](crate::objects))
    /// and its entry field holds a reference to it (size and SHA-256). The entry's `objects`
    /// field names those parameters.
    Object,
}

impl Storage {
    /// Whether the parameters are fields of the stream entry (`inline`, `object`): no payload
    /// hash, sends numbered per producer.
    pub fn is_inline(self) -> bool {
        matches!(self, Storage::Inline | Storage::Object)
    }

    /// The name used in attributes and documents: `hash`, `inline` or `object`.
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::Hash => "hash",
            Storage::Inline => "inline",
            Storage::Object => "object",
        }
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Storage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hash" => Ok(Storage::Hash),
            "inline" => Ok(Storage::Inline),
            "object" => Ok(Storage::Object),
            other => Err(format!(
                "unknown storage {other:?}: expected `hash`, `inline` or `object`"
            )),
        }
    }
}
