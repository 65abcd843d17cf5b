//! [`Single`]: a multiplexed connection to one server that names itself (`CLIENT SETNAME`)
//! every time it connects, and connects again on its next command after the old one broke.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};

/// Cheap to clone; clones share the connection.
#[derive(Clone)]
pub(super) struct Single {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: AsyncConnectionConfig,
    name: String,
    /// The live connection and its generation (bumped by every reconnect).
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// The last generation handed out.
    generation: AtomicU64,
    /// Held while connecting, so that concurrent commands wait for one new connection.
    connecting: tokio::sync::Mutex<()>,
}

impl Single {
    /// A connection that connects on its first command.
    pub(super) fn new(client: Client, config: AsyncConnectionConfig, name: String) -> Single {
        Single {
            inner: Arc::new(Inner {
                client,
                config,
                name,
                current: Mutex::new(None),
                generation: AtomicU64::new(0),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Connects now unless connected.
    pub(super) async fn connect(&self) -> Result<(), RedisError> {
        self.live().await.map(drop)
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
            .client
            .get_multiplexed_async_connection_with_config(&inner.config)
            .await?;
        super::set_name(&mut connection, &inner.name).await?;
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

impl ConnectionLike for Single {
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
            .client
            .get_connection_info()
            .redis_settings()
            .db()
    }
}
