//! Connecting to Redis: the default URL, the command connection (reconnecting, multiplexed) and
//! the dedicated connection of a blocking reader.

use std::time::Duration;

use backbone_core::Error;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};

/// The connection every non-blocking command goes through.
pub(crate) type Connection = ConnectionManager;
use redis::{AsyncConnectionConfig, Client};

/// The URL used when a builder is given none: `$REDIS_URL`, else `redis://127.0.0.1:6379`.
///
/// ```
/// let url = backbone_redis::connection::default_url();
/// assert!(url.starts_with("redis"));
/// ```
pub fn default_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// How long a non-blocking command may take before it fails (redis-rs's default is 500 ms,
/// too short for a batch of large payloads).
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn client(url: &str) -> Result<Client, Error> {
    Client::open(url).map_err(|e| Error::Config(format!("invalid Redis URL {url:?}: {e}")))
}

/// A multiplexed connection that reconnects with backoff: for producers and for a consumer's
/// non-blocking commands. The first connection is tried 4 times over about 1.5 s, so an
/// unreachable Redis is reported promptly.
pub(crate) async fn command_connection(client: &Client) -> Result<ConnectionManager, Error> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2));
    client
        .get_connection_manager_with_config(config)
        .await
        .map_err(|e| {
            redis_error(
                format!("connect to {}", client.get_connection_info().addr()),
                e,
            )
        })
}

/// A connection of its own for `XREADGROUP ... BLOCK`, whose response timeout outlasts `block`:
/// a blocking read stalls every other command on its connection.
pub(crate) async fn reader_connection(
    client: &Client,
    block: Duration,
) -> Result<MultiplexedConnection, Error> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(block + COMMAND_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| {
            redis_error(
                format!("connect to {}", client.get_connection_info().addr()),
                e,
            )
        })
}

/// Wraps a redis-rs error with what we were doing.
pub(crate) fn redis_error(context: impl Into<String>, e: redis::RedisError) -> Error {
    Error::channel(context, e)
}
