//! Subject keys and where they are kept: [`SubjectKey`], the [`KeyStore`] trait and the
//! in-memory [`MemoryKeyStore`]. The Redis key store is `backbone_redis::RedisKeyStore`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use async_trait::async_trait;

use crate::Error;

/// A key's identity: 8 random bytes, written (as 16 hex digits) into every ciphertext it
/// makes, so that a reader tells "sealed with a key that was deleted" (forgotten) from
/// "altered" (an error).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// One data subject's AES-256 key and its [`KeyId`]. `Debug` shows the id only.
///
/// ```
/// use backbone_core::personal::SubjectKey;
///
/// let key = SubjectKey::generate();
/// let bytes = key.to_bytes();
/// assert_eq!(SubjectKey::from_bytes(&bytes), Some(key.clone()));
/// assert!(!format!("{key:?}").contains(&format!("{:?}", &bytes[8..])));
/// assert_eq!(SubjectKey::from_bytes(b"short"), None);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectKey {
    id: KeyId,
    secret: [u8; 32],
}

impl SubjectKey {
    /// The length of [`SubjectKey::to_bytes`]: the id, then the secret.
    pub const LEN: usize = 40;

    /// A new random key (from the operating system's generator).
    pub fn generate() -> Self {
        let mut bytes = [0u8; Self::LEN];
        OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(&bytes).expect("40 bytes")
    }

    /// The key from its stored form (see [`SubjectKey::to_bytes`]); `None` when `bytes` is
    /// not [`SubjectKey::LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN {
            return None;
        }
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        id.copy_from_slice(&bytes[..8]);
        secret.copy_from_slice(&bytes[8..]);
        Some(SubjectKey {
            id: KeyId(id),
            secret,
        })
    }

    /// The stored form: the 8-byte id followed by the 32-byte secret.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut bytes = [0u8; Self::LEN];
        bytes[..8].copy_from_slice(&self.id.0);
        bytes[8..].copy_from_slice(&self.secret);
        bytes
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    pub(super) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Which of a subject's keys: its own (for personal parameters without a TTL), or one of the
/// keys that expire for parameters with `#[personal(ttl = "...")]`.
///
/// A parameter with TTL `t` is sealed with the key of the bucket its send falls in: buckets
/// are `t / 10` long (at least 1 s) by the sender's clock, and the bucket's key expires
/// `t` after the bucket ends. So the value is readable for at least `t` and at most
/// `t + t / 10` after it was sent, then reads as forgotten.
///
/// ```
/// use std::time::Duration;
/// use backbone_core::personal::KeyClass;
///
/// let class = KeyClass::expiring(Duration::from_secs(100), 1_000_000);
/// assert_eq!(class, KeyClass::Expiring { ttl_secs: 100, bucket: 100 });
/// assert_eq!(class.expires_at_ms(), Some(1_110_000)); // bucket 100 ends at 1_010_000, + 100 s
/// assert_eq!(class.to_string(), "t100-100");
/// assert_eq!("t100-100".parse::<KeyClass>(), Ok(class));
/// assert_eq!(KeyClass::Subject.to_string(), "s");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyClass {
    /// The subject's own key: lives until the subject is forgotten.
    Subject,
    /// The key of bucket `bucket` (of `ttl_secs / 10` seconds each, at least 1) for
    /// parameters with a TTL of `ttl_secs`.
    Expiring {
        /// The parameters' TTL, in seconds.
        ttl_secs: u64,
        /// The bucket: the send's time in ms since the epoch, divided by the bucket's length.
        bucket: u64,
    },
}

impl KeyClass {
    /// The class of a parameter with TTL `ttl` sent at `now_ms` (ms since the epoch).
    pub fn expiring(ttl: Duration, now_ms: u64) -> KeyClass {
        let ttl_secs = ttl.as_secs().max(1);
        KeyClass::Expiring {
            ttl_secs,
            bucket: now_ms / Self::bucket_ms(ttl_secs),
        }
    }

    fn bucket_ms(ttl_secs: u64) -> u64 {
        (ttl_secs * 1000 / 10).max(1000)
    }

    /// When this key expires, in ms since the epoch (`None`: never).
    pub fn expires_at_ms(&self) -> Option<u64> {
        match *self {
            KeyClass::Subject => None,
            KeyClass::Expiring { ttl_secs, bucket } => {
                Some((bucket + 1) * Self::bucket_ms(ttl_secs) + ttl_secs * 1000)
            }
        }
    }
}

impl fmt::Display for KeyClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyClass::Subject => f.write_str("s"),
            KeyClass::Expiring { ttl_secs, bucket } => write!(f, "t{ttl_secs}-{bucket}"),
        }
    }
}

impl std::str::FromStr for KeyClass {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "s" {
            return Ok(KeyClass::Subject);
        }
        let (ttl, bucket) = s
            .strip_prefix('t')
            .and_then(|r| r.split_once('-'))
            .ok_or(())?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(ttl) || !digits(bucket) {
            return Err(());
        }
        Ok(KeyClass::Expiring {
            ttl_secs: ttl.parse().map_err(|_| ())?,
            bucket: bucket.parse().map_err(|_| ())?,
        })
    }
}

/// Where subjects' keys are kept. backbone's channels ask it for a key when they seal or open
/// a personal parameter and never keep a key for reading, so [`forget`](KeyStore::forget)
/// takes effect on the next read. Implement it to keep keys in a KMS or a vault.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The subject's key of `class` for encrypting: the one it has, else a new one, stored
    /// first (an [`Expiring`](KeyClass::Expiring) one set to expire at
    /// [`KeyClass::expires_at_ms`]). A subject forgotten before gets a new key: its new events
    /// are readable, its old ones stay forgotten.
    async fn sealing_key(&self, subject: &str, class: KeyClass) -> Result<SubjectKey, Error>;

    /// The keys named, in order, for decrypting: `None` for a key that is not there
    /// (forgotten, expired, or never made).
    async fn opening_keys(
        &self,
        keys: &[(&str, KeyClass)],
    ) -> Result<Vec<Option<SubjectKey>>, Error>;

    /// Deletes every key of the subject, so that every personal parameter sealed with them
    /// reads as forgotten from now on. True when there was a key.
    async fn forget(&self, subject: &str) -> Result<bool, Error>;
}

/// A [`KeyStore`] in process memory: the in-memory channel's, and for tests. Clones share the
/// keys.
///
/// ```
/// use backbone_core::personal::{KeyClass, KeyStore, MemoryKeyStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), backbone_core::Error> {
/// let keys = MemoryKeyStore::new();
/// let key = keys.sealing_key("customer-7", KeyClass::Subject).await?;
/// let name = ("customer-7", KeyClass::Subject);
/// assert_eq!(keys.opening_keys(&[name]).await?, vec![Some(key)]);
/// assert!(keys.forget("customer-7").await?);
/// assert_eq!(keys.opening_keys(&[name]).await?, vec![None]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryKeyStore {
    keys: Arc<Mutex<Keys>>,
}

/// Each subject's keys, by class.
type Keys = HashMap<String, HashMap<KeyClass, SubjectKey>>;

impl MemoryKeyStore {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// The keys, without those expired by now.
    fn keys(&self) -> std::sync::MutexGuard<'_, Keys> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let now = crate::metadata::now_millis();
        for classes in keys.values_mut() {
            classes.retain(|class, _| class.expires_at_ms().is_none_or(|at| at > now));
        }
        keys.retain(|_, classes| !classes.is_empty());
        keys
    }
}

impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKeyStore")
            .field("subjects", &self.keys().len())
            .finish()
    }
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    async fn sealing_key(&self, subject: &str, class: KeyClass) -> Result<SubjectKey, Error> {
        Ok(self
            .keys()
            .entry(subject.to_owned())
            .or_default()
            .entry(class)
            .or_insert_with(SubjectKey::generate)
            .clone())
    }

    async fn opening_keys(
        &self,
        names: &[(&str, KeyClass)],
    ) -> Result<Vec<Option<SubjectKey>>, Error> {
        let keys = self.keys();
        Ok(names
            .iter()
            .map(|(subject, class)| keys.get(*subject)?.get(class).cloned())
            .collect())
    }

    async fn forget(&self, subject: &str) -> Result<bool, Error> {
        Ok(self.keys().remove(subject).is_some())
    }
}
