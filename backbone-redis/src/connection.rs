//! The connections backbone opens, and the only place that opens them: a `Connection` is a
//! multiplexed connection that names itself (`CLIENT SETNAME`) every time it connects and
//! connects again, on its next command, after the old one broke. Where to connect and how
//! comes from [`RedisSettings`](crate::settings::RedisSettings).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backbone_core::Error;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::retry::{classify_redis, Backoff};

/// The URL used when none is given: `$REDIS_URL`, else `redis://127.0.0.1:6379`.
///
/// ```
/// let url = backbone_redis::connection::default_url();
/// assert!(url.starts_with("redis"));
/// ```
pub fn default_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// Wraps a redis-rs error with what we were doing.
pub(crate) fn redis_error(context: impl Into<String>, e: RedisError) -> Error {
    Error::channel(context, e)
}

/// How a [`Connection`] reaches its server: the client, the timeouts and the name it gives
/// itself. Built by [`RedisSettings`](crate::settings::RedisSettings).
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub client: Client,
    pub connection_timeout: Duration,
    pub response_timeout: Duration,
    /// Where: `host:port` or the socket's path, never a credential; for errors and logs.
    pub address: String,
}

/// A multiplexed connection that reconnects itself: a command that finds the connection
/// broken (I/O error, dropped, timed out) fails, and the next command connects again. Every
/// new connection runs `CLIENT SETNAME <name>` first, so `CLIENT LIST` tells who is who.
/// Cheap to clone; clones share the connection.
#[derive(Clone)]
pub(crate) struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    config: AsyncConnectionConfig,
    name: String,
    /// The live connection and its generation (bumped by every reconnect).
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// The last generation handed out.
    generation: AtomicU64,
    /// Held while connecting, so that concurrent commands wait for one new connection.
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("to", &self.inner.endpoint.address)
            .field("name", &self.inner.name)
            .finish()
    }
}

impl Connection {
    /// Connects, trying 4 times over about 1.5 s while the error is transient, so that an
    /// unreachable Redis is reported promptly and a refusal (bad password, missing
    /// permission) at once. `extra_response_time` is added to the response timeout (a
    /// blocking reader's `block`).
    pub(crate) async fn open(
        endpoint: Endpoint,
        name: String,
        extra_response_time: Duration,
    ) -> Result<Connection, Error> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(endpoint.connection_timeout))
            .set_response_timeout(Some(endpoint.response_timeout + extra_response_time));
        let connection = Connection {
            inner: Arc::new(Inner {
                endpoint,
                config,
                name,
                current: Mutex::new(None),
                generation: AtomicU64::new(0),
                connecting: tokio::sync::Mutex::new(()),
            }),
        };
        let mut backoff = Backoff::connect();
        let mut tries = 1;
        loop {
            match connection.live().await {
                Ok(_) => return Ok(connection),
                Err(e) if tries < 4 && classify_redis(&e).is_transient() => {
                    tries += 1;
                    tokio::time::sleep(backoff.next()).await;
                }
                Err(e) => return Err(connection.error(e)),
            }
        }
    }

    /// The error of a failed connection attempt, naming where (credentials masked).
    fn error(&self, e: RedisError) -> Error {
        redis_error(format!("connect to {}", self.inner.endpoint.address), e)
    }

    /// The live connection, connecting first when there is none.
    async fn live(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let _connecting = self.inner.connecting.lock().await;
        if let Some(live) = self.current() {
            return Ok(live); // another command connected meanwhile
        }
        let inner = &self.inner;
        let mut connection = inner
            .endpoint
            .client
            .get_multiplexed_async_connection_with_config(&inner.config)
            .await?;
        let named: Result<(), RedisError> = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(&inner.name)
            .query_async(&mut connection)
            .await;
        match named {
            Err(e) if e.code() == Some("NOPERM") => tracing::warn!(
                client = %inner.name,
                "the ACL user may not run CLIENT SETNAME (+client|setname); the connection stays unnamed"
            ),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        let generation = inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let live = (generation, connection);
        *inner.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(live.clone());
        Ok(live)
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets connection `generation` after an error that broke it, so that the next
    /// command connects again.
    fn failed(&self, generation: u64, e: &RedisError) {
        if !e.is_unrecoverable_error() {
            return;
        }
        let mut current = self
            .inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut connection) = self.live().await?;
            let reply = connection.req_packed_command(cmd).await;
            if let Err(e) = &reply {
                self.failed(generation, e);
            }
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut connection) = self.live().await?;
            let replies = connection
                .req_packed_commands(pipeline, offset, count)
                .await;
            if let Err(e) = &replies {
                self.failed(generation, e);
            }
            replies
        })
    }

    fn get_db(&self) -> i64 {
        self.inner
            .endpoint
            .client
            .get_connection_info()
            .redis_settings()
            .db()
    }
}
