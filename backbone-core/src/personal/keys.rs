//! Subject keys and where they are kept: [`SubjectKey`], the [`KeyStore`] trait and the
//! in-memory [`MemoryKeyStore`]. The Redis key store is `backbone_redis::RedisKeyStore`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

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

/// Where subjects' keys are kept. backbone's channels ask it for a key when they seal or open
/// a personal parameter and never keep a key for reading, so [`forget`](KeyStore::forget)
/// takes effect on the next read. Implement it to keep keys in a KMS or a vault.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The subject's key for encrypting: the one it has, else a new one, stored first. A
    /// subject forgotten before gets a new key: its new events are readable, its old ones
    /// stay forgotten.
    async fn sealing_key(&self, subject: &str) -> Result<SubjectKey, Error>;

    /// The keys of `subjects`, in order, for decrypting: `None` for a subject that has none
    /// (forgotten, or never had personal data).
    async fn opening_keys(&self, subjects: &[&str]) -> Result<Vec<Option<SubjectKey>>, Error>;

    /// Deletes the subject's key, so that every personal parameter sealed with it reads as
    /// forgotten from now on. True when there was a key.
    async fn forget(&self, subject: &str) -> Result<bool, Error>;
}

/// A [`KeyStore`] in process memory: the in-memory channel's, and for tests. Clones share the
/// keys.
///
/// ```
/// use backbone_core::personal::{KeyStore, MemoryKeyStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), backbone_core::Error> {
/// let keys = MemoryKeyStore::new();
/// let key = keys.sealing_key("customer-7").await?;
/// assert_eq!(keys.opening_keys(&["customer-7"]).await?, vec![Some(key)]);
/// assert!(keys.forget("customer-7").await?);
/// assert_eq!(keys.opening_keys(&["customer-7"]).await?, vec![None]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryKeyStore {
    keys: Arc<Mutex<HashMap<String, SubjectKey>>>,
}

impl MemoryKeyStore {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, SubjectKey>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
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
    async fn sealing_key(&self, subject: &str) -> Result<SubjectKey, Error> {
        Ok(self
            .keys()
            .entry(subject.to_owned())
            .or_insert_with(SubjectKey::generate)
            .clone())
    }

    async fn opening_keys(&self, subjects: &[&str]) -> Result<Vec<Option<SubjectKey>>, Error> {
        let keys = self.keys();
        Ok(subjects.iter().map(|s| keys.get(*s).cloned()).collect())
    }

    async fn forget(&self, subject: &str) -> Result<bool, Error> {
        Ok(self.keys().remove(subject).is_some())
    }
}
