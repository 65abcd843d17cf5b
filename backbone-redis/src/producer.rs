//! The Redis producer: [`RedisProducerBuilder`] and [`RedisPublisher`], whose publish script
//! writes an event's payload hash and its stream entry in one atomic step, at most once per
//! message id, so that a send can be retried after a transient failure.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use backbone_core::{
    Error, MessageId, OutgoingEvent, Producer, ProducerBuilder, Publish, StreamAddress,
};
use redis::aio::ConnectionManager;
use redis::{RedisError, Script, ScriptInvocation};
use tokio::time::Instant;

use crate::connection::{client, command_connection, default_url};
use crate::entry::{KEY, MESSAGE_ID, OPERATION, PAYLOAD, PRODUCED_AT, VERSION};
use crate::keys::StreamKeys;
use crate::lua::require_stream;
use crate::retention::StreamAdmin;

/// How long the sent-record of an operation without parameters lives (ms).
const SENT_TTL_MS: u64 = 10 * 60 * 1000;
/// The default of [`RedisProducerBuilder::send_timeout`].
const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// KEYS[1] stream, KEYS[2] the event's marker: its payload hash when the operation has
/// parameters, else its sent-record (`StreamKeys::sent`).
/// ARGV: message id, operation, version, produced_at, ordering key ('' for none), payload TTL
/// in ms ('0' for none), field count n, then n name/value pairs.
/// Returns the new entry's id, or nil when the marker exists: the event was written before (a
/// retried send), and nothing is written. The marker is checked first, then the stream's type,
/// and every check comes before the first write: neither Lua nor MULTI rolls back. So an error
/// reply from this script proves the event was not written.
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    let stream_check = require_stream("KEYS[1]");
    Script::new(&format!(
        r#"
if redis.call('EXISTS', KEYS[2]) == 1 then
  return false
end
{stream_check}local entry = {{'{MESSAGE_ID}', ARGV[1], '{OPERATION}', ARGV[2], '{VERSION}', ARGV[3],
  '{PRODUCED_AT}', ARGV[4]}}
if ARGV[5] ~= '' then
  table.insert(entry, '{KEY}')
  table.insert(entry, ARGV[5])
end
local n = tonumber(ARGV[7])
if n > 0 then
  redis.call('HSET', KEYS[2], unpack(ARGV, 8, 7 + 2 * n))
  if ARGV[6] ~= '0' then
    redis.call('PEXPIRE', KEYS[2], ARGV[6])
  end
  table.insert(entry, '{PAYLOAD}')
  table.insert(entry, KEYS[2])
end
local id = redis.call('XADD', KEYS[1], '*', unpack(entry))
if n == 0 then
  redis.call('SET', KEYS[2], id, 'PX', {SENT_TTL_MS})
end
return id
"#
    ))
});

/// Builds producers that write to a Redis stream.
///
/// Defaults: url [`default_url`], `send_timeout` 5 s, no `max_len`, no `payload_ttl`.
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
    payload_ttl: Option<Duration>,
    send_timeout: Option<Duration>,
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

    /// Keep the stream at about `n` entries: every `max(n / 10, 1)` sends, this producer starts
    /// a [safe trim](StreamAdmin::trim) in the background (one at a time), which never removes
    /// an entry a group has pending or has not read yet, and deletes the payload hashes of the
    /// entries it removes (except those a dead letter refers to). A send never waits for a trim
    /// and never fails because of one; a failed trim is logged (`tracing::warn!`).
    pub fn max_len(mut self, n: u64) -> Self {
        self.max_len = Some(n);
        self
    }

    /// Let payload hashes expire this long after they are written. Must be longer than
    /// [`send_timeout`](Self::send_timeout): a retried send knows the event was written by its
    /// payload hash. Past it, consumers find the payload missing.
    pub fn payload_ttl(mut self, ttl: Duration) -> Self {
        self.payload_ttl = Some(ttl);
        self
    }

    /// How long one send may take in all, retries included (default 5 s; must be longer than
    /// zero). A send that fails on a transient error (connection refused or dropped, I/O, a
    /// timeout, `LOADING`, `TRYAGAIN`, `BUSY`) is retried with the same message id, after 50 ms
    /// doubling to 1 s, while the time left allows; a retry never writes the event twice.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = Some(timeout);
        self
    }

    /// Checks the options, connects and returns the [`RedisPublisher`] that
    /// [`build_producer`](ProducerBuilder::build_producer) wraps: use it to send
    /// [`OutgoingEvent`]s directly.
    ///
    /// ```no_run
    /// use backbone_core::{metadata::now_millis, Error, Fields, MessageId, OutgoingEvent, Publish};
    /// use backbone_redis::RedisProducerBuilder;
    ///
    /// # async fn run() -> Result<(), Error> {
    /// let publisher = RedisProducerBuilder::new().uri("greetings").build_publisher().await?;
    /// let mut fields = Fields::new();
    /// fields.push("name", br#""Ada""#.to_vec());
    /// let event = OutgoingEvent {
    ///     message_id: MessageId::new(),
    ///     operation: "hello",
    ///     version: 0,
    ///     produced_at: now_millis(),
    ///     key: None,
    ///     fields,
    /// };
    /// let id = publisher.publish(event.clone()).await?;
    /// assert_eq!(publisher.publish(event).await?, id); // written once
    /// # Ok(())
    /// # }
    /// ```
    pub async fn build_publisher(self) -> Result<RedisPublisher, Error> {
        let address =
            StreamAddress::from_options(self.environment.as_deref(), self.uri.as_deref())?;
        let send_timeout = self.send_timeout.unwrap_or(DEFAULT_SEND_TIMEOUT);
        if send_timeout.is_zero() {
            return Err(Error::Config(
                "send_timeout must be longer than zero".into(),
            ));
        }
        if let Some(ttl) = self.payload_ttl.filter(|ttl| *ttl <= send_timeout) {
            return Err(Error::Config(format!(
                "payload_ttl ({ttl:?}) must be longer than send_timeout ({send_timeout:?}): \
                 a retried send finds the payload hash to know the event was written"
            )));
        }
        let url = self.url.unwrap_or_else(default_url);
        let connection = command_connection(&client(&url)?).await?;
        let keys = StreamKeys::new(&address);
        let trimmer = self.max_len.map(|max_len| {
            Arc::new(Trimmer {
                admin: StreamAdmin::new(keys.clone(), connection.clone()),
                max_len,
                every: (max_len / 10).max(1),
                sends: AtomicU64::new(0),
                running: Arc::new(AtomicBool::new(false)),
            })
        });
        Ok(RedisPublisher {
            keys,
            connection,
            send_timeout,
            payload_ttl_ms: self
                .payload_ttl
                .map_or(0, |ttl| ttl.as_millis().max(1) as u64),
            trimmer,
        })
    }
}

impl ProducerBuilder for RedisProducerBuilder {
    async fn build_producer(self) -> Result<Producer, Error> {
        Ok(Producer::new(Arc::new(self.build_publisher().await?)))
    }
}

/// Writes events to one Redis stream: the channel under every Redis [`Producer`]. Built by
/// [`RedisProducerBuilder::build_publisher`]; cheap to clone.
///
/// [`publish`](Publish::publish) returns `Ok` once the event is in the stream, written exactly
/// once however often it is retried (by itself or by the caller with the same
/// [`OutgoingEvent`]), as long as the event's marker lives: its payload hash, or for an
/// operation without parameters a record kept 10 minutes. An `Err` says what failed and
/// whether the event may nevertheless have been written.
///
/// ```no_run
/// # async fn run() -> Result<(), backbone_core::Error> {
/// let publisher = backbone_redis::RedisProducerBuilder::new()
///     .uri("greetings")
///     .build_publisher()
///     .await?;
/// println!("writing to {}", publisher.keys().stream());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RedisPublisher {
    keys: StreamKeys,
    connection: ConnectionManager,
    send_timeout: Duration,
    payload_ttl_ms: u64,
    trimmer: Option<Arc<Trimmer>>,
}

/// Whether a failed attempt may have written the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The script was never run (refused connection, rejected by the server).
    NotSent,
    /// The script ran and failed in its checks: the marker did not exist, nothing was written.
    NotWritten,
    /// The script may have run: the connection broke or no answer came in time.
    Unknown,
}

struct Failure {
    error: String,
    /// No answer came before the deadline: `error` says to what.
    cut: bool,
    transient: bool,
    outcome: Outcome,
}

impl Failure {
    fn from_redis(e: &RedisError) -> Self {
        let io = e.is_io_error() || e.is_timeout() || e.is_connection_dropped();
        let (transient, outcome) = if e.is_connection_refusal() {
            (true, Outcome::NotSent)
        } else if io {
            (true, Outcome::Unknown)
        } else if e.code().is_some_and(|code| code.starts_with("backbone")) {
            (false, Outcome::NotWritten)
        } else {
            let transient = matches!(e.code(), Some("LOADING" | "TRYAGAIN" | "BUSY"));
            (transient, Outcome::NotSent)
        };
        Failure {
            error: e.to_string(),
            cut: false,
            transient,
            outcome,
        }
    }
}

impl RedisPublisher {
    /// The keys of the stream this publisher writes.
    ///
    /// ```no_run
    /// # let publisher: backbone_redis::RedisPublisher = todo!();
    /// assert!(publisher.keys().stream().ends_with(":events"));
    /// ```
    pub fn keys(&self) -> &StreamKeys {
        &self.keys
    }

    fn invocation(&self, event: &OutgoingEvent) -> ScriptInvocation<'static> {
        let marker = match event.fields.is_empty() {
            true => self.keys.sent(&event.message_id),
            false => self.keys.payload(&event.message_id),
        };
        let mut invocation = PUBLISH.key(self.keys.stream());
        invocation
            .key(marker)
            .arg(event.message_id.to_string())
            .arg(event.operation)
            .arg(event.version)
            .arg(event.produced_at)
            .arg(event.key.as_deref().unwrap_or(""))
            .arg(self.payload_ttl_ms)
            .arg(event.fields.len());
        for (name, value) in event.fields.iter() {
            invocation.arg(name).arg(value);
        }
        invocation
    }

    /// One try: `Ok(true)` written now, `Ok(false)` written before. A retry (`probe`) first
    /// checks with `PING` that Redis answers, so that running out of time while Redis is away
    /// is known not to have sent the script.
    async fn attempt(
        &self,
        invocation: &ScriptInvocation<'_>,
        probe: bool,
        deadline: Instant,
    ) -> Result<bool, Failure> {
        let mut connection = self.connection.clone();
        let late = |what: &str, outcome| Failure {
            error: format!("no answer to {what} before the send_timeout"),
            cut: true,
            transient: true,
            outcome,
        };
        if probe {
            let ping = redis::cmd("PING");
            let ping = ping.query_async::<()>(&mut connection);
            match tokio::time::timeout_at(deadline, ping).await {
                Err(_) => return Err(late("PING", Outcome::NotSent)),
                Ok(Err(e)) => {
                    let failure = Failure::from_redis(&e);
                    return Err(Failure {
                        outcome: Outcome::NotSent,
                        ..failure
                    });
                }
                Ok(Ok(())) => {}
            }
        }
        let run = invocation.invoke_async::<Option<String>>(&mut connection);
        match tokio::time::timeout_at(deadline, run).await {
            Err(_) => Err(late("the publish script", Outcome::Unknown)),
            Ok(Ok(written)) => Ok(written.is_some()),
            Ok(Err(e)) => Err(Failure::from_redis(&e)),
        }
    }

    fn failed(
        &self,
        event: &OutgoingEvent,
        attempts: u32,
        started: Instant,
        failure: Failure,
        last_error: Option<String>,
        unknown: Option<u32>,
    ) -> Error {
        let context = format!(
            "publish {} (message {}) to {}",
            event.operation,
            event.message_id,
            self.keys.stream()
        );
        let mut text = match last_error {
            Some(last) if failure.cut => format!("{last}; then {}", failure.error),
            _ => failure.error,
        };
        if failure.transient {
            text += &format!(
                "; gave up after {attempts} attempt{} in {:.2?} (send_timeout {:?})",
                if attempts == 1 { "" } else { "s" },
                started.elapsed(),
                self.send_timeout
            );
        }
        text += &match unknown {
            None => "; the event was not written".to_owned(),
            Some(n) if n == attempts => "; the event may or may not have been written: the \
                 outcome of the last attempt is unknown"
                .to_owned(),
            Some(n) => format!(
                "; the event may or may not have been written: the outcome of attempt {n} is \
                 unknown"
            ),
        };
        Error::channel(context, text)
    }
}

#[async_trait]
impl Publish for RedisPublisher {
    async fn publish(&self, event: OutgoingEvent) -> Result<MessageId, Error> {
        let invocation = self.invocation(&event);
        let started = Instant::now();
        let deadline = started + self.send_timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut unknown = None;
        let mut last_error = None;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failure = match self.attempt(&invocation, attempts > 1, deadline).await {
                Ok(written) => {
                    if written {
                        if let Some(trimmer) = &self.trimmer {
                            trimmer.on_send();
                        }
                    }
                    return Ok(event.message_id);
                }
                Err(failure) => failure,
            };
            match failure.outcome {
                Outcome::Unknown => unknown = Some(attempts),
                Outcome::NotWritten => unknown = None,
                Outcome::NotSent => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !failure.transient || backoff >= left {
                let error = self.failed(&event, attempts, started, failure, last_error, unknown);
                return Err(error);
            }
            tracing::debug!(stream = self.keys.stream(), message_id = %event.message_id,
                attempt = attempts, error = failure.error, "send failed; retrying");
            if !failure.cut {
                last_error = Some(failure.error);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// The background trim of a producer with `max_len`.
#[derive(Debug)]
struct Trimmer {
    admin: StreamAdmin,
    max_len: u64,
    every: u64,
    sends: AtomicU64,
    running: Arc<AtomicBool>,
}

/// Clears the running flag when the trim task ends, even by a panic.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Trimmer {
    /// Counts a send; every `every` sends, starts a trim unless one is running.
    fn on_send(self: &Arc<Self>) {
        let sends = self.sends.fetch_add(1, Ordering::Relaxed) + 1;
        if !sends.is_multiple_of(self.every) || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let running = Running(self.running.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                stream = self.admin.keys().stream(),
                "no Tokio runtime: cannot trim in the background"
            );
            return;
        };
        let this = self.clone();
        runtime.spawn(async move {
            let _running = running;
            let stream = this.admin.keys().stream();
            match this.admin.trim(this.max_len).await {
                Ok(report) => tracing::debug!(stream, max_len = this.max_len, ?report, "trimmed"),
                Err(e) => tracing::warn!(stream, max_len = this.max_len, error = %e,
                    "background trim failed"),
            }
        });
    }
}
