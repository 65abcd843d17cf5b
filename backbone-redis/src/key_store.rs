//! [`RedisKeyStore`]: the default [`KeyStore`] of Redis producers, consumers and event stores.
//!
//! A data subject's own key is one Redis string, `bbkeys:{<subject>}` (40 bytes: the key's
//! id, then its AES-256 secret); its expiring keys (for `#[personal(ttl = "...")]`
//! parameters) are `bbkeys:{<subject>}:t<ttl>-<bucket>`, each with its expiry, recorded in the
//! set `bbkeys:{<subject>}:expiring` so that `forget` finds them. Every key of a subject shares
//! the hash tag `{<subject>}` (one Cluster slot), outside the `bb:` prefix of streams so that
//! an ACL can grant it apart (see [`acl::key_store_keys`](crate::acl::key_store_keys)).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backbone_core::personal::{KeyClass, KeyStore, SubjectKey};
use backbone_core::Error;
use redis::Value;

use crate::connection::{redis_error, Connection};
use crate::lua::EXPIRING_KEY;

/// The prefix of the key store's keys unless [`RedisKeyStore::prefix`] says otherwise.
pub const DEFAULT_PREFIX: &str = "bbkeys:";

/// How long a producer reuses a subject's key before asking Redis again, unless
/// [`RedisKeyStore::sealing_cache`] says otherwise.
pub const DEFAULT_SEALING_CACHE: Duration = Duration::from_secs(10);

/// Subjects' keys in Redis: `SET <key> <bytes> NX GET` creates a subject's own key (or
/// returns the one there), a script creates an expiring one, `GET` reads, `DEL` forgets.
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
    cache: Arc<Mutex<Cache>>,
}

/// Keys for sealing, by subject and class, with when they were fetched.
type Cache = HashMap<(String, KeyClass), (SubjectKey, Instant)>;

/// The most keys a sealing cache holds before it is emptied.
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

    /// The Redis key holding `subject`'s key of `class`.
    ///
    /// ```no_run
    /// # fn f(keys: backbone_redis::RedisKeyStore) {
    /// use backbone_core::personal::KeyClass;
    /// assert_eq!(keys.key_of("c-7", KeyClass::Subject), "bbkeys:{c-7}");
    /// let class = KeyClass::Expiring { ttl_secs: 60, bucket: 9 };
    /// assert_eq!(keys.key_of("c-7", class), "bbkeys:{c-7}:t60-9");
    /// # }
    /// ```
    pub fn key_of(&self, subject: &str, class: KeyClass) -> String {
        match class {
            KeyClass::Subject => format!("{}{{{subject}}}", self.prefix),
            expiring => format!("{}{{{subject}}}:{expiring}", self.prefix),
        }
    }

    /// The set of `subject`'s expiring keys.
    fn index_of(&self, subject: &str) -> String {
        format!("{}{{{subject}}}:expiring", self.prefix)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn parse(&self, name: &str, bytes: &[u8]) -> Result<SubjectKey, Error> {
        SubjectKey::from_bytes(bytes).ok_or_else(|| {
            Error::channel(
                format!("key store: {name}"),
                format!(
                    "it holds {} bytes, not a subject key ({} bytes)",
                    bytes.len(),
                    SubjectKey::LEN
                ),
            )
        })
    }

    /// Gets or creates the key `name` of `class`: the key there, or `fresh`, stored.
    async fn get_or_create(
        &self,
        subject: &str,
        class: KeyClass,
        fresh: &SubjectKey,
    ) -> Result<Option<Vec<u8>>, Error> {
        let name = self.key_of(subject, class);
        let mut connection = self.connection.clone();
        let reply: Value = match class.expires_at_ms() {
            // Redis 7.0: SET … NX GET answers nil when it set the key, else the key there.
            None => redis::cmd("SET")
                .arg(&name)
                .arg(&fresh.to_bytes()[..])
                .arg("NX")
                .arg("GET")
                .query_async(&mut connection)
                .await
                .map_err(|e| redis_error(format!("key store: SET {name} NX GET"), e))?,
            Some(at) => EXPIRING_KEY
                .key(&name)
                .key(self.index_of(subject))
                .arg(&fresh.to_bytes()[..])
                .arg(at)
                .invoke_async(&mut connection)
                .await
                .map_err(|e| redis_error(format!("key store: create {name}"), e))?,
        };
        match reply {
            Value::Nil | Value::Okay | Value::Boolean(false) => Ok(None),
            Value::Int(0) => Ok(None),
            Value::BulkString(bytes) => Ok(Some(bytes)),
            other => Err(Error::channel(
                format!("key store: {name}"),
                format!("unexpected reply {other:?}"),
            )),
        }
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
    async fn sealing_key(&self, subject: &str, class: KeyClass) -> Result<SubjectKey, Error> {
        let cached = (subject.to_owned(), class);
        if let Some((key, at)) = self.cache().get(&cached) {
            if at.elapsed() < self.cache_for {
                return Ok(key.clone());
            }
        }
        let fresh = SubjectKey::generate();
        let key = match self.get_or_create(subject, class, &fresh).await? {
            None => fresh,
            Some(bytes) => self.parse(&self.key_of(subject, class), &bytes)?,
        };
        if !self.cache_for.is_zero() {
            let mut cache = self.cache();
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(cached, (key.clone(), Instant::now()));
        }
        Ok(key)
    }

    async fn opening_keys(
        &self,
        names: &[(&str, KeyClass)],
    ) -> Result<Vec<Option<SubjectKey>>, Error> {
        // One GET per key, sent together (each subject's keys may be on another node of a
        // cluster, so no pipeline and no MGET).
        let reads = names.iter().map(|(subject, class)| {
            let name = self.key_of(subject, *class);
            let mut connection = self.connection.clone();
            async move {
                let reply: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&name)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| redis_error(format!("key store: GET {name}"), e))?;
                reply.map(|bytes| self.parse(&name, &bytes)).transpose()
            }
        });
        futures::future::try_join_all(reads).await
    }

    async fn forget(&self, subject: &str) -> Result<bool, Error> {
        self.cache().retain(|(s, _), _| s != subject);
        let main = self.key_of(subject, KeyClass::Subject);
        let index = self.index_of(subject);
        let mut connection = self.connection.clone();
        let mut deleted: u64 = redis::cmd("DEL")
            .arg(&main)
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error(format!("key store: DEL {main}"), e))?;
        // The expiring keys: those the index names, and only keys of this subject, whatever
        // the index holds. Again while a sender adds one meanwhile (it adds to the index
        // before it writes the key).
        let own = format!("{}{{{subject}}}:t", self.prefix);
        for _ in 0..10 {
            let members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(&index)
                .query_async(&mut connection)
                .await
                .map_err(|e| redis_error(format!("key store: SMEMBERS {index}"), e))?;
            if members.is_empty() {
                break;
            }
            let keys: Vec<&String> = members.iter().filter(|m| m.starts_with(&own)).collect();
            if !keys.is_empty() {
                let n: u64 = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| redis_error(format!("key store: DEL {}", keys[0]), e))?;
                deleted += n;
            }
            let _: u64 = redis::cmd("SREM")
                .arg(&index)
                .arg(&members)
                .query_async(&mut connection)
                .await
                .map_err(|e| redis_error(format!("key store: SREM {index}"), e))?;
        }
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
