//! The Redis producer: [`RedisProducerBuilder`] and the publish script that writes an event's
//! payload hash and its stream entry in one atomic step.

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use backbone_core::{
    Error, MessageId, OutgoingEvent, Producer, ProducerBuilder, Publish, StreamAddress,
};
use redis::aio::ConnectionManager;
use redis::Script;

use crate::connection::{client, command_connection, default_url, redis_error};
use crate::entry::{KEY, MESSAGE_ID, OPERATION, PAYLOAD, PRODUCED_AT, VERSION};
use crate::keys::StreamKeys;

/// KEYS[1] stream, KEYS[2] payload hash.
/// ARGV: message id, operation, version, produced_at, ordering key ('' for none), field count
/// n, then n name/value pairs.
/// Every check comes before the first write: neither Lua nor MULTI rolls back.
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'stream' and kind ~= 'none' then
  return redis.error_reply('backbone: ' .. KEYS[1] .. ' holds a ' .. kind .. ', not a stream')
end
local entry = {{'{MESSAGE_ID}', ARGV[1], '{OPERATION}', ARGV[2], '{VERSION}', ARGV[3],
  '{PRODUCED_AT}', ARGV[4]}}
if ARGV[5] ~= '' then
  table.insert(entry, '{KEY}')
  table.insert(entry, ARGV[5])
end
local n = tonumber(ARGV[6])
if n > 0 then
  redis.call('HSET', KEYS[2], unpack(ARGV, 7, 6 + 2 * n))
  table.insert(entry, '{PAYLOAD}')
  table.insert(entry, KEYS[2])
end
return redis.call('XADD', KEYS[1], '*', unpack(entry))
"#
    ))
});

/// Builds producers that write to a Redis stream.
///
/// ```no_run
/// use backbone_core::{events_contract, Error};
/// use backbone_redis::RedisProducerBuilder;
///
/// #[events_contract]
/// pub trait Greetings {
///     async fn hello(&self, name: String);
/// }
///
/// # async fn run() -> Result<(), Error> {
/// let producer = RedisProducerBuilder::new()
///     .url("redis://127.0.0.1:6379")
///     .environment("prod")
///     .uri("greetings")
///     .build_greetings_producer()
///     .await?;
/// let id = producer.hello("Ada".into()).await?;
/// println!("sent {id}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct RedisProducerBuilder {
    url: Option<String>,
    environment: Option<String>,
    uri: Option<String>,
    max_len: Option<u64>,
    payload_ttl: Option<std::time::Duration>,
}

impl RedisProducerBuilder {
    /// A builder with no options set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The Redis URL (default: [`default_url`]).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The environment (optional); part of the stream's keys.
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// The stream's uri (required).
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = Some(uri.into());
        self
    }

    /// Keep the stream at about `n` entries (`XADD ... MAXLEN ~ n`), never trimming entries
    /// still pending in a group.
    pub fn max_len(mut self, n: u64) -> Self {
        self.max_len = Some(n);
        self
    }

    /// Let payload hashes expire this long after they are written.
    pub fn payload_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.payload_ttl = Some(ttl);
        self
    }
}

impl ProducerBuilder for RedisProducerBuilder {
    async fn build_producer(self) -> Result<Producer, Error> {
        let address =
            StreamAddress::from_options(self.environment.as_deref(), self.uri.as_deref())?;
        let url = self.url.unwrap_or_else(default_url);
        let connection = command_connection(&client(&url)?).await?;
        Ok(Producer::new(Arc::new(RedisPublisher {
            keys: StreamKeys::new(&address),
            connection,
        })))
    }
}

struct RedisPublisher {
    keys: StreamKeys,
    connection: ConnectionManager,
}

#[async_trait]
impl Publish for RedisPublisher {
    async fn publish(&self, event: OutgoingEvent) -> Result<MessageId, Error> {
        let payload = self.keys.payload(&event.message_id);
        let mut invocation = PUBLISH.key(self.keys.stream());
        invocation
            .key(&payload)
            .arg(event.message_id.to_string())
            .arg(event.operation)
            .arg(event.version)
            .arg(event.produced_at)
            .arg(event.key.as_deref().unwrap_or(""))
            .arg(event.fields.len());
        for (name, value) in event.fields.iter() {
            invocation.arg(name).arg(value);
        }
        let mut connection = self.connection.clone();
        let _stream_id: String = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| {
                redis_error(
                    format!("publish {} to {}", event.operation, self.keys.stream()),
                    e,
                )
            })?;
        Ok(event.message_id)
    }
}
