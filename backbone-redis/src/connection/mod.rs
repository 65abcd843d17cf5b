//! The connections backbone opens, and the only place that opens them. A [`Connection`]
//! reaches one server (a multiplexed connection that names itself with `CLIENT SETNAME` and
//! connects again after it broke) or a Redis Cluster (redis-rs's cluster client: each command
//! goes to the master of its slot, following `MOVED`, `ASK` and failovers). Where to connect
//! and how comes from [`RedisSettings`](crate::settings::RedisSettings).

use std::sync::Arc;
use std::time::Duration;

use backbone_core::Error;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::retry::{classify_redis, Backoff};

mod cluster;
mod single;

pub(crate) use cluster::ClusterSeeds;
use single::Single;

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

/// How a [`Connection`] reaches Redis: the target, the timeouts. Built by
/// [`RedisSettings`](crate::settings::RedisSettings).
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub target: Target,
    pub connection_timeout: Duration,
    pub response_timeout: Duration,
    /// Where: `host:port`, the socket's path or the cluster's seeds, never a credential; for
    /// errors and logs.
    pub address: String,
}

/// One server, or a cluster.
#[derive(Clone)]
pub(crate) enum Target {
    Single(Client),
    Cluster(ClusterSeeds),
}

/// A connection to one server or to a cluster, for commands of your own (tools such as the
/// `backbone` CLI): it implements redis-rs's `ConnectionLike`, so `query_async` and
/// `AsyncCommands` work on it. Open one with
/// [`RedisSettings::open_connection`](crate::settings::RedisSettings::open_connection). Cheap to
/// clone; clones share the connection.
#[derive(Clone)]
pub struct Connection {
    kind: Kind,
    about: Arc<About>,
}

#[derive(Clone)]
enum Kind {
    Single(Single),
    Cluster(ClusterConnection),
}

/// What `Debug`, errors and logs say of a connection.
struct About {
    address: String,
    name: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("to", &self.about.address)
            .field("name", &self.about.name)
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
        let response_timeout = endpoint.response_timeout + extra_response_time;
        let about = Arc::new(About {
            address: endpoint.address.clone(),
            name: name.clone(),
        });
        let error = |e: RedisError| redis_error(format!("connect to {}", about.address), e);
        let mut backoff = Backoff::connect();
        let mut tries = 1;
        loop {
            let attempt = match &endpoint.target {
                Target::Single(client) => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(endpoint.connection_timeout))
                        .set_response_timeout(Some(response_timeout));
                    let single = Single::new(client.clone(), config, name.clone());
                    single.connect().await.map(|()| Kind::Single(single))
                }
                Target::Cluster(seeds) => {
                    let client = seeds
                        .client(endpoint.connection_timeout, response_timeout)
                        .map_err(error)?;
                    cluster::open(&client, &name).await.map(Kind::Cluster)
                }
            };
            match attempt {
                Ok(kind) => return Ok(Connection { kind, about }),
                Err(e) if tries < 4 && classify_redis(&e).is_transient() => {
                    tries += 1;
                    tokio::time::sleep(backoff.next()).await;
                }
                Err(e) => return Err(error(e)),
            }
        }
    }
}

/// Names a new connection (`CLIENT SETNAME`).
async fn set_name(connection: &mut impl ConnectionLike, name: &str) -> Result<(), RedisError> {
    let named = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(name)
        .query_async::<()>(connection)
        .await;
    named_result(named, name)
}

/// A refused `CLIENT SETNAME` leaves the connection unnamed (with a warning); other errors fail
/// the connection.
fn named_result(named: Result<(), RedisError>, name: &str) -> Result<(), RedisError> {
    match named {
        Err(e) if e.code() == Some("NOPERM") => {
            tracing::warn!(
                client = %name,
                "the ACL user may not run CLIENT SETNAME (+client|setname); the connection stays unnamed"
            );
            Ok(())
        }
        other => other,
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.kind {
            Kind::Single(single) => single.req_packed_command(cmd),
            Kind::Cluster(cluster) => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.kind {
            Kind::Single(single) => single.req_packed_commands(pipeline, offset, count),
            Kind::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.kind {
            Kind::Single(single) => single.get_db(),
            Kind::Cluster(cluster) => cluster.get_db(),
        }
    }
}
