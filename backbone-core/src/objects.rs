//! Large parameters in an object store ([`Storage::Object`](crate::storage::Storage::Object)),
//! through the [`object_store`] crate (S3, GCS, Azure, local files, memory).
//!
//! An event of such an operation is written like an inline one, except that each parameter
//! whose encoded value (after sealing, for a `#[personal]` one) is larger than the threshold
//! is put in the store, at a path derived from the stream and the message id:
//!
//! ```text
//! <root>/<stream>/<message id>/<parameter>
//! ```
//!
//! and its field holds a reference instead: `obj.v1.<size in bytes>.<SHA-256, hex>`. The
//! entry's `objects` field names those parameters (comma-separated). A reader derives the path
//! itself from its own stream, never from the entry, and checks size and digest: an object
//! that is missing or not the one referred to makes the event bad ([`Error::BadObject`],
//! dead-lettered with the reason); the store failing is [`Error::Channel`].
//!
//! The objects' lifetime follows the entry: a trim deletes those of the entries it removes,
//! except while a dead letter or a replayed entry refers to them; purging the last such dead
//! letter deletes them (see `backbone_redis::StreamAdmin`, which also deletes orphans and
//! expires objects past a retention).
//!
//! ```
//! use backbone_core::objects::ObjectStorage;
//! use backbone_core::{Fields, MessageId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), backbone_core::Error> {
//! let objects = ObjectStorage::in_memory().threshold(16);
//! let id = MessageId::new();
//! let mut fields = Fields::new();
//! fields.push("note", b"\"short\"".to_vec());
//! fields.push("scan", format!("\"{}\"", "x".repeat(100)).into_bytes());
//! let moved = objects.offload("orders", &id, &mut fields).await?;
//! assert_eq!(moved, ["scan"]);
//! assert!(fields.get("scan").unwrap().starts_with(b"obj.v1.102."));
//!
//! objects.fetch("orders", &id, &moved, &mut fields).await?;
//! assert_eq!(fields.get("scan").unwrap().len(), 102);
//! assert_eq!(objects.delete("orders", &id).await?, 1);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
pub use object_store;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use crate::{Error, Fields, MessageId};

/// Parameters larger than this many bytes go to the store, unless
/// [`ObjectStorage::threshold`] says otherwise: 64 KiB.
pub const DEFAULT_THRESHOLD: usize = 64 * 1024;

/// Separates the parameter names in the entry field `objects`.
pub const OBJECTS_FIELD_SEPARATOR: char = ',';

/// The start of a reference held by a parameter's field.
const REFERENCE: &str = "obj.v1.";

/// An object store, where in it backbone keeps objects (`root`), and the size above which a
/// parameter goes there. Cheap to clone.
#[derive(Clone)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    threshold: usize,
    root: Path,
}

impl fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the store itself: its description may name an endpoint or an account.
        f.debug_struct("ObjectStorage")
            .field("root", &self.root.as_ref())
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl ObjectStorage {
    /// Objects in `store` under `backbone/`, for parameters larger than
    /// [`DEFAULT_THRESHOLD`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use backbone_core::objects::{object_store::local::LocalFileSystem, ObjectStorage};
    ///
    /// let dir = std::env::temp_dir();
    /// let objects = ObjectStorage::new(Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap()));
    /// assert_eq!(objects.limit(), 64 * 1024);
    /// ```
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        ObjectStorage {
            store,
            threshold: DEFAULT_THRESHOLD,
            root: Path::from("backbone"),
        }
    }

    /// An [`InMemory`](object_store::memory::InMemory) store (for tests; the in-memory
    /// channel's default).
    pub fn in_memory() -> Self {
        Self::new(Arc::new(object_store::memory::InMemory::new()))
    }

    /// Parameters larger than `bytes` (encoded) go to the store; the others stay in the entry.
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// The threshold ([`threshold`](Self::threshold)).
    pub fn limit(&self) -> usize {
        self.threshold
    }

    /// Keeps the objects under `root` (a `/`-separated path, e.g. `services/orders`) instead
    /// of `backbone`.
    ///
    /// ```
    /// use backbone_core::objects::ObjectStorage;
    ///
    /// let err = ObjectStorage::in_memory().root("a/../b").unwrap_err();
    /// assert!(err.to_string().contains("invalid object store root \"a/../b\""), "{err}");
    /// ```
    pub fn root(mut self, root: &str) -> Result<Self, Error> {
        self.root = Path::parse(root)
            .map_err(|e| Error::Config(format!("invalid object store root {root:?}: {e}")))?;
        Ok(self)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Where the objects of `stream` live: `<root>/<stream>`.
    fn stream_prefix(&self, stream: &str) -> Path {
        self.root.clone().join(stream)
    }

    /// Where the objects of the event `message_id` in `stream` live.
    fn event_prefix(&self, stream: &str, message_id: &MessageId) -> Path {
        self.stream_prefix(stream)
            .join(message_id.to_string().as_str())
    }

    /// Where the object of `parameter` of the event `message_id` in `stream` lives. Every
    /// part is one path segment (a `/` or `..` in it is escaped), so the path stays under the
    /// stream's own prefix.
    ///
    /// ```
    /// use backbone_core::objects::ObjectStorage;
    /// use backbone_core::MessageId;
    ///
    /// let id = MessageId::new();
    /// let path = ObjectStorage::in_memory().path("bb:{orders}:stream", &id, "scan");
    /// assert_eq!(path.as_ref(), format!("backbone/bb:%7Borders%7D:stream/{id}/scan"));
    /// let escaped = ObjectStorage::in_memory().path("../x", &id, "a/b");
    /// assert_eq!(escaped.as_ref(), format!("backbone/..%2Fx/{id}/a%2Fb"));
    /// ```
    pub fn path(&self, stream: &str, message_id: &MessageId, parameter: &str) -> Path {
        self.event_prefix(stream, message_id).join(parameter)
    }

    /// Puts every parameter of `fields` larger than the threshold in the store and replaces
    /// its value with a reference; returns the names moved (for the entry's `objects` field).
    /// On an error, the objects put so far are deleted again.
    pub async fn offload(
        &self,
        stream: &str,
        message_id: &MessageId,
        fields: &mut Fields,
    ) -> Result<Vec<String>, Error> {
        let large: Vec<String> = fields
            .iter()
            .filter(|(_, value)| value.len() > self.threshold)
            .map(|(name, _)| name.to_owned())
            .collect();
        let mut moved = Vec::with_capacity(large.len());
        for name in large {
            let value = fields.get(&name).unwrap_or_default().to_vec();
            let reference = reference(&value);
            let path = self.path(stream, message_id, &name);
            if let Err(e) = self.store.put(&path, PutPayload::from(value)).await {
                let _ = self.delete(stream, message_id).await;
                return Err(Error::channel(format!("put object {path}"), e));
            }
            fields.set(&name, reference.into_bytes());
            moved.push(name);
        }
        Ok(moved)
    }

    /// Replaces the references of the parameters `names` in `fields` with their objects.
    /// [`Error::BadObject`] when a reference is malformed, an object is missing or is not
    /// the one referred to; [`Error::Channel`] when the store fails.
    pub async fn fetch(
        &self,
        stream: &str,
        message_id: &MessageId,
        names: &[String],
        fields: &mut Fields,
    ) -> Result<(), Error> {
        for name in names {
            let bad = |reason: String| Error::BadObject {
                parameter: name.clone(),
                reason,
            };
            let Some(field) = fields.get(name) else {
                let what = "the entry names it in `objects`, but has no such parameter field";
                return Err(bad(what.into()));
            };
            let (size, digest) = parse_reference(field).map_err(bad)?;
            let path = self.path(stream, message_id, name);
            let object = match self.store.get(&path).await {
                Ok(found) => found.bytes().await,
                Err(e) => Err(e),
            };
            let bytes = match object {
                Ok(bytes) => bytes,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(bad(format!(
                        "object {path} is missing (deleted by retention, or never written)"
                    )))
                }
                Err(e) => return Err(Error::channel(format!("get object {path}"), e)),
            };
            if bytes.len() as u64 != size || hex(&Sha256::digest(&bytes)) != digest {
                return Err(bad(format!(
                    "object {path} is not the one the entry refers to: {} bytes, expected \
                     {size} with SHA-256 {digest}",
                    bytes.len()
                )));
            }
            fields.set(name, bytes.to_vec());
        }
        Ok(())
    }

    /// The events of `stream` that have objects in the store (one listing of the objects under
    /// the stream's prefix, `<root>/<stream>/`), in order; a directory not named like a
    /// message id is left out.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use backbone_core::{objects::ObjectStorage, Fields, MessageId};
    ///
    /// let objects = ObjectStorage::in_memory().threshold(4);
    /// let (id, mut fields) = (MessageId::new(), Fields::new());
    /// fields.set("scan", b"\"a large scan\"".to_vec());
    /// objects.offload("bb:{orders}:events", &id, &mut fields).await.unwrap();
    /// assert_eq!(objects.events("bb:{orders}:events").await.unwrap(), [id]);
    /// assert!(objects.events("bb:{other}:events").await.unwrap().is_empty());
    /// # });
    /// ```
    pub async fn events(&self, stream: &str) -> Result<Vec<MessageId>, Error> {
        let prefix = self.stream_prefix(stream);
        let depth = prefix.parts().count();
        let listed: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| Error::channel(format!("list the objects under {prefix}"), e))?;
        let ids: std::collections::BTreeSet<MessageId> = listed
            .iter()
            .filter_map(|path| path.parts().nth(depth)?.as_ref().parse().ok())
            .collect();
        Ok(ids.into_iter().collect())
    }

    /// Deletes every object of the event `message_id` in `stream`: one listing of the event's
    /// prefix (`<root>/<stream>/<message id>/`), then the objects listed; returns how many it
    /// deleted (none is no error).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use backbone_core::{objects::ObjectStorage, Fields, MessageId};
    ///
    /// let objects = ObjectStorage::in_memory().threshold(4);
    /// let (id, mut fields) = (MessageId::new(), Fields::new());
    /// fields.set("scan", b"\"a large scan\"".to_vec());
    /// objects.offload("bb:{orders}:events", &id, &mut fields).await.unwrap();
    /// assert_eq!(objects.delete("bb:{orders}:events", &id).await.unwrap(), 1);
    /// assert_eq!(objects.delete("bb:{orders}:events", &id).await.unwrap(), 0);
    /// # });
    /// ```
    pub async fn delete(&self, stream: &str, message_id: &MessageId) -> Result<usize, Error> {
        let prefix = self.event_prefix(stream, message_id);
        let listed: Vec<Result<Path, object_store::Error>> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .collect()
            .await;
        let mut deleted = 0;
        let outcomes: Vec<_> = self
            .store
            .delete_stream(futures::stream::iter(listed).boxed())
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Ok(_) => deleted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::channel(format!("delete objects under {prefix}"), e)),
            }
        }
        Ok(deleted)
    }
}

/// The parameter names of an `objects` entry field, checked: each non-empty, of ASCII
/// letters, digits and `_` (a Rust parameter's name), and none twice.
///
/// ```
/// use backbone_core::objects::parse_names;
///
/// assert_eq!(parse_names("scan,photo").unwrap(), ["scan", "photo"]);
/// assert!(parse_names("scan,../x").unwrap_err().contains("\"../x\""));
/// ```
pub fn parse_names(field: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for name in field.split(OBJECTS_FIELD_SEPARATOR) {
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "{name:?} is not a parameter name (ASCII letters, digits, `_`)"
            ));
        }
        if names.iter().any(|n| n == name) {
            return Err(format!("{name:?} is named twice"));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// The reference to an object holding `value`.
fn reference(value: &[u8]) -> String {
    format!("{REFERENCE}{}.{}", value.len(), hex(&Sha256::digest(value)))
}

/// The size in bytes and the SHA-256 (64 lowercase hex digits) of the object a parameter's
/// field refers to, `obj.v1.<size>.<sha256>`; what is wrong with it otherwise (never the
/// field's value). For tools that show an entry without fetching its objects.
///
/// ```
/// use backbone_core::objects::parse_reference;
///
/// let digest = "ab".repeat(32);
/// let (size, sha256) = parse_reference(format!("obj.v1.70000.{digest}").as_bytes()).unwrap();
/// assert_eq!((size, sha256), (70000, digest));
/// assert!(parse_reference(b"\"inline\"").unwrap_err().contains("not a reference"));
/// ```
pub fn parse_reference(field: &[u8]) -> Result<(u64, String), String> {
    let malformed = || {
        format!(
            "its field is not a reference `{REFERENCE}<size>.<sha256>` ({} bytes)",
            field.len()
        )
    };
    let text = std::str::from_utf8(field).map_err(|_| malformed())?;
    let rest = text.strip_prefix(REFERENCE).ok_or_else(malformed)?;
    let (size, digest) = rest.split_once('.').ok_or_else(malformed)?;
    let size = size.parse().map_err(|_| malformed())?;
    let hex_digit = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if digest.len() != 64 || !digest.bytes().all(hex_digit) {
        return Err(malformed());
    }
    Ok((size, digest.to_owned()))
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(scan: usize) -> Fields {
        let mut fields = Fields::new();
        fields.push("note", b"\"n\"".to_vec());
        fields.push("scan", vec![b'7'; scan]);
        fields
    }

    #[tokio::test]
    async fn a_replaced_or_missing_object_is_a_bad_event() {
        let objects = ObjectStorage::in_memory().threshold(8);
        let id = MessageId::new();
        let mut fields = event(20);
        let moved = objects.offload("s", &id, &mut fields).await.unwrap();
        let path = objects.path("s", &id, "scan");
        objects
            .store()
            .put(&path, PutPayload::from(vec![b'8'; 20]))
            .await
            .unwrap();
        let err = objects
            .fetch("s", &id, &moved, &mut fields.clone())
            .await
            .unwrap_err();
        assert!(err.is_bad_event());
        assert!(err
            .to_string()
            .contains("is not the one the entry refers to"));
        assert_eq!(objects.delete("s", &id).await.unwrap(), 1);
        let err = objects
            .fetch("s", &id, &moved, &mut fields)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("is missing"), "{err}");
        // Another stream's reader derives another path: it never reads this stream's objects.
        let mut other = event(20);
        let moved = objects.offload("s", &id, &mut other).await.unwrap();
        let err = objects.fetch("t", &id, &moved, &mut other).await;
        assert!(err.unwrap_err().to_string().contains("backbone/t/"));
    }

    #[tokio::test]
    async fn small_parameters_stay_and_bad_references_are_named() {
        let objects = ObjectStorage::in_memory().threshold(8);
        let id = MessageId::new();
        let mut fields = event(8);
        assert!(objects
            .offload("s", &id, &mut fields)
            .await
            .unwrap()
            .is_empty());
        let names = vec!["note".to_owned()];
        let err = objects.fetch("s", &id, &names, &mut fields).await;
        let err = err.unwrap_err().to_string();
        assert!(
            err.contains("parameter `note`") && err.contains("not a reference"),
            "{err}"
        );
        assert!(parse_names("").is_err());
        assert!(parse_names("a,a").unwrap_err().contains("twice"));
    }
}
