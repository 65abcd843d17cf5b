//! [`RedisKeyStore`]: the default [`KeyStore`] of Redis producers, consumers and event stores.
//! Each data subject's key is one Redis string, `bbkeys:<subject>` (40 bytes: the key's id,
//! then its AES-256 secret), outside the `bb:` prefix of streams so that an ACL can grant it
//! apart (see [`acl::key_store_keys`](crate::acl::key_store_keys)).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backbone_core::personal::{KeyStore, SubjectKey};
use backbone_core::Error;
use redis::Value;

use crate::connection::{redis_error, Connection};

/// The prefix of the key store's keys unless [`RedisKeyStore::prefix`] says otherwise.
pub const DEFAULT_PREFIX: &str = "bbkeys:";

/// How long a producer reuses a subject's key before asking Redis again, unless
/// [`RedisKeyStore::sealing_cache`] says otherwise.
pub const DEFAULT_SEALING_CACHE: Duration = Duration::from_secs(10);

/// Subjects' keys in Redis: `SET <prefix><subject> <key> NX GET` creates one (or returns the
/// one there), `GET` reads, `DEL` forgets.
///
/// Keys for reading are never cached, so a forget is seen by the next read everywhere. Keys
/// for sealing are cached for [`DEFAULT_SEALING_CACHE`] per store: another process that
/// forgets a subject may see, within that time, a few more of its events sealed with the
/// deleted key; they read as forgotten too. A forget through this store clears its own cache.
///
/// ```no_run
/// use backbone_core::personal::KeyStore;
/// use backbone_redis::{RedisKeyStore, RedisSettings};
///
/// # async fn run() -> Result<(), backbone_core::Error> {
/// let connection = RedisSettings::new().url("redis://127.0.0.1:6379").open_connection("keys").await?;
/// let keys = RedisKeyStore::new(connection);
/// keys.forget("customer-7").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisKeyStore {
    connection: Connection,
    prefix: Arc<str>,
    cache_for: Duration,
    cache: Arc<Mutex<HashMap<String, (SubjectKey, Instant)>>>,
}

/// The most subjects a sealing cache holds before it is emptied.
const CACHE_CAPACITY: usize = 10_000;

impl RedisKeyStore {
    /// Keys under [`DEFAULT_PREFIX`] on `connection`.
    pub fn new(connection: Connection) -> Self {
        RedisKeyStore {
            connection,
            prefix: Arc::from(DEFAULT_PREFIX),
            cache_for: DEFAULT_SEALING_CACHE,
            cache: Arc::default(),
        }
    }

    /// Keys under `prefix` instead (e.g. `myapp:keys:`). Every producer, consumer and store
    /// of the events must use the same.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self
    }

    /// How long a key for sealing is reused before Redis is asked again (zero: every send
    /// asks).
    pub fn sealing_cache(mut self, duration: Duration) -> Self {
        self.cache_for = duration;
        self
    }

    /// The Redis key holding `subject`'s key.
    pub fn key_of(&self, subject: &str) -> String {
        format!("{}{subject}", self.prefix)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (SubjectKey, Instant)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn parse(&self, subject: &str, bytes: &[u8]) -> Result<SubjectKey, Error> {
        SubjectKey::from_bytes(bytes).ok_or_else(|| {
            Error::channel(
                format!("key store: {}", self.key_of(subject)),
                format!(
                    "it holds {} bytes, not a subject key ({} bytes)",
                    bytes.len(),
                    SubjectKey::LEN
                ),
            )
        })
    }
}

impl std::fmt::Debug for RedisKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKeyStore")
            .field("prefix", &self.prefix)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl KeyStore for RedisKeyStore {
    async fn sealing_key(&self, subject: &str) -> Result<SubjectKey, Error> {
        if let Some((key, at)) = self.cache().get(subject) {
            if at.elapsed() < self.cache_for {
                return Ok(key.clone());
            }
        }
        let fresh = SubjectKey::generate();
        let name = self.key_of(subject);
        // Redis 7.0: SET … NX GET answers nil when it set the key, else the key there.
        let reply: Value = redis::cmd("SET")
            .arg(&name)
            .arg(&fresh.to_bytes()[..])
            .arg("NX")
            .arg("GET")
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| redis_error(format!("key store: SET {name} NX GET"), e))?;
        let key = match reply {
            Value::Nil | Value::Okay => fresh,
            Value::BulkString(bytes) => self.parse(subject, &bytes)?,
            other => {
                return Err(Error::channel(
                    format!("key store: SET {name} NX GET"),
                    format!("unexpected reply {other:?}"),
                ))
            }
        };
        if !self.cache_for.is_zero() {
            let mut cache = self.cache();
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(subject.to_owned(), (key.clone(), Instant::now()));
        }
        Ok(key)
    }

    async fn opening_keys(&self, subjects: &[&str]) -> Result<Vec<Option<SubjectKey>>, Error> {
        // One GET per subject, sent together (each subject's key may be on another node of
        // a cluster, so no pipeline and no MGET).
        let reads = subjects.iter().map(|subject| {
            let name = self.key_of(subject);
            let mut connection = self.connection.clone();
            async move {
                let reply: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&name)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| redis_error(format!("key store: GET {name}"), e))?;
                reply.map(|bytes| self.parse(subject, &bytes)).transpose()
            }
        });
        futures::future::try_join_all(reads).await
    }

    async fn forget(&self, subject: &str) -> Result<bool, Error> {
        let name = self.key_of(subject);
        self.cache().remove(subject);
        let deleted: u64 = redis::cmd("DEL")
            .arg(&name)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| redis_error(format!("key store: DEL {name}"), e))?;
        Ok(deleted > 0)
    }
}

/// A builder's key store: the one given, else a [`RedisKeyStore`] on the builder's own
/// connection.
#[derive(Clone, Default)]
pub(crate) struct KeyStoreSetting(Option<Arc<dyn KeyStore>>);

impl KeyStoreSetting {
    pub(crate) fn set(&mut self, keys: Arc<dyn KeyStore>) {
        self.0 = Some(keys);
    }

    /// The key store to use on `connection`.
    pub(crate) fn resolve(&self, connection: &Connection) -> Arc<dyn KeyStore> {
        match &self.0 {
            Some(keys) => keys.clone(),
            None => Arc::new(RedisKeyStore::new(connection.clone())),
        }
    }
}

impl std::fmt::Debug for KeyStoreSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "KeyStore(given)",
            None => "KeyStore(Redis, default)",
        })
    }
}
