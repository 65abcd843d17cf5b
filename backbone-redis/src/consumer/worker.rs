//! The consumer's task: drain this consumer's own pending entries, then read new ones with a
//! blocking `XREADGROUP` on its own connection; for each batch fetch the payload hashes in one
//! round trip, call the handler per entry, and `XACK` the successes in one command.
//!
//! After a Redis error the worker backs off, reconnects its reader and starts over from its
//! pending entries, so nothing it was given is skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backbone_core::{
    AckMode, ConsumerContext, Error, EventHandler, Fields, HandleError, Metadata, StreamAddress,
};
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{Client, Value};
use tokio_util::sync::CancellationToken;

use super::RedisAcker;
use crate::connection::{reader_connection, redis_error};
use crate::entry::{bytes_to_string, parse_read_reply, EntryHeader, RawEntry};
use crate::keys::StreamKeys;

pub(super) struct Worker {
    pub client: Client,
    pub commands: ConnectionManager,
    pub reader: MultiplexedConnection,
    pub acker: Arc<RedisAcker>,
    pub keys: StreamKeys,
    pub address: StreamAddress,
    pub group: String,
    pub name: String,
    pub batch_size: usize,
    pub block: Duration,
    pub ack: AckMode,
    pub max_messages: Option<u64>,
    pub handler: Arc<dyn EventHandler>,
    pub handled: u64,
}

/// What `XREADGROUP` asks for.
#[derive(Clone, Copy)]
enum Read<'a> {
    /// This consumer's pending entries after this id (no BLOCK).
    Pending(&'a str),
    /// New entries (`>`), blocking.
    New,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Worker {
    pub(super) async fn run(mut self, stop: CancellationToken) -> Result<(), Error> {
        let mut failures = 0u32;
        loop {
            match self.session(&stop).await {
                Ok(()) => return Ok(()),
                Err(e) if is_fatal(&e) => {
                    tracing::error!(stream = self.keys.stream(), group = %self.group, error = %e, "consumer stopped");
                    return Err(e);
                }
                Err(e) => {
                    failures += 1;
                    let delay =
                        (Duration::from_millis(100) * 2u32.pow(failures.min(6))).min(MAX_BACKOFF);
                    tracing::warn!(
                        stream = self.keys.stream(), consumer = %self.name, error = %e,
                        retry_in_ms = delay.as_millis() as u64, "consumer error; will reconnect"
                    );
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    match reader_connection(&self.client, self.block).await {
                        Ok(reader) => {
                            self.reader = reader;
                            failures = 0;
                        }
                        Err(e) => tracing::warn!(error = %e, "reconnect failed"),
                    }
                }
            }
        }
    }

    fn done(&self, stop: &CancellationToken) -> bool {
        stop.is_cancelled() || self.max_messages.is_some_and(|max| self.handled >= max)
    }

    /// One connected stretch: pending entries first, then new ones, until stopped or an error.
    async fn session(&mut self, stop: &CancellationToken) -> Result<(), Error> {
        let mut cursor = "0-0".to_owned();
        loop {
            if self.done(stop) {
                return Ok(());
            }
            let batch = self.read(Read::Pending(&cursor)).await?;
            let Some(last) = batch.last() else { break };
            cursor = last.id.clone();
            self.process(batch, true, stop).await?;
        }
        loop {
            if self.done(stop) {
                return Ok(());
            }
            let batch = tokio::select! {
                biased;
                batch = self.read(Read::New) => batch?,
                _ = stop.cancelled() => return Ok(()),
            };
            self.process(batch, false, stop).await?;
        }
    }

    async fn read(&mut self, what: Read<'_>) -> Result<Vec<RawEntry>, Error> {
        let count = match self.max_messages {
            Some(max) => (max.saturating_sub(self.handled) as usize).clamp(1, self.batch_size),
            None => self.batch_size,
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count);
        let id = match what {
            Read::Pending(after) => after,
            Read::New => {
                cmd.arg("BLOCK").arg(self.block.as_millis() as u64);
                ">"
            }
        };
        cmd.arg("STREAMS").arg(self.keys.stream()).arg(id);
        let reply: Value = cmd
            .query_async(&mut self.reader)
            .await
            .map_err(|e| redis_error(format!("XREADGROUP on {}", self.keys.stream()), e))?;
        parse_read_reply(reply).map_err(|reason| {
            Error::channel(
                format!("XREADGROUP on {}", self.keys.stream()),
                format!("unexpected reply: {reason}"),
            )
        })
    }

    /// Handles one batch: fetches payloads (and, for pending entries, delivery counts) in one
    /// round trip, calls the handler entry by entry, acks the successes with one `XACK`.
    async fn process(
        &mut self,
        batch: Vec<RawEntry>,
        pending: bool,
        stop: &CancellationToken,
    ) -> Result<(), Error> {
        let headers: Vec<Result<EntryHeader, Error>> = batch.iter().map(RawEntry::header).collect();
        let (mut payloads, deliveries) = self.fetch(&batch, &headers, pending).await?;
        let mut acks = Vec::new();
        for (entry, header) in batch.iter().zip(headers) {
            if self.done(stop) {
                break;
            }
            let header = match header {
                Ok(header) => header,
                Err(e) => {
                    tracing::error!(stream = self.keys.stream(), error = %e, "bad entry left pending");
                    continue;
                }
            };
            let fields = match &header.payload {
                None => Fields::new(),
                Some(key) => match payloads.remove(key) {
                    Some(fields) if !fields.is_empty() => fields,
                    _ => {
                        let e = Error::MissingPayload {
                            entry: entry.id.clone(),
                            key: key.clone(),
                        };
                        tracing::error!(stream = self.keys.stream(), error = %e, "bad entry left pending");
                        continue;
                    }
                },
            };
            let delivery_count = if pending {
                deliveries.get(&entry.id).copied().unwrap_or(1)
            } else {
                1
            };
            let ctx = ConsumerContext::new(
                self.metadata(entry, header, delivery_count),
                self.acker.clone(),
            );
            match self.handler.handle(&ctx, &fields).await {
                Ok(()) => {
                    self.handled += 1;
                    if self.ack == AckMode::OnSuccess && !ctx.is_acked() {
                        acks.push(entry.id.as_str());
                    }
                }
                Err(HandleError::BadEvent(e)) => tracing::error!(
                    stream = self.keys.stream(), entry = %entry.id, contract = self.handler.contract(),
                    error = %e, "bad event left pending"
                ),
                Err(HandleError::Handler(e)) => tracing::warn!(
                    stream = self.keys.stream(), entry = %entry.id, contract = self.handler.contract(),
                    error = %e, "handler failed; entry left pending"
                ),
            }
        }
        if !acks.is_empty() {
            redis::cmd("XACK")
                .arg(self.keys.stream())
                .arg(&self.group)
                .arg(&acks)
                .query_async::<i64>(&mut self.commands)
                .await
                .map_err(|e| redis_error(format!("XACK on {}", self.keys.stream()), e))?;
        }
        Ok(())
    }

    /// One pipeline: `HGETALL` of every payload hash, plus `XPENDING` of the batch's range when
    /// re-reading pending entries (their delivery counts).
    async fn fetch(
        &mut self,
        batch: &[RawEntry],
        headers: &[Result<EntryHeader, Error>],
        pending: bool,
    ) -> Result<(HashMap<String, Fields>, HashMap<String, u32>), Error> {
        let keys: Vec<&str> = headers
            .iter()
            .filter_map(|h| h.as_ref().ok()?.payload.as_deref())
            .collect();
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("HGETALL").arg(*key);
        }
        if pending {
            if let (Some(first), Some(last)) = (batch.first(), batch.last()) {
                pipe.cmd("XPENDING")
                    .arg(self.keys.stream())
                    .arg(&self.group)
                    .arg(&first.id)
                    .arg(&last.id)
                    .arg(batch.len())
                    .arg(&self.name);
            }
        }
        if keys.is_empty() && !pending {
            return Ok(Default::default());
        }
        let mut replies: Vec<Value> = pipe
            .query_async(&mut self.commands)
            .await
            .map_err(|e| redis_error(format!("fetch payloads of {}", self.keys.stream()), e))?;
        let deliveries = if pending {
            parse_pending(replies.pop().unwrap_or_default())
        } else {
            HashMap::new()
        };
        let payloads = keys
            .into_iter()
            .zip(replies)
            .map(|(key, reply)| (key.to_owned(), parse_hash(reply)))
            .collect();
        Ok((payloads, deliveries))
    }

    fn metadata(&self, entry: &RawEntry, header: EntryHeader, delivery_count: u32) -> Metadata {
        Metadata {
            message_id: header.message_id,
            operation: header.operation,
            version: header.version,
            environment: self.address.environment().map(str::to_owned),
            uri: self.address.uri().to_owned(),
            produced_at: header.produced_at,
            stream_id: entry.id.clone(),
            delivery_count,
            key: header.key,
        }
    }
}

/// Errors after which retrying cannot help: the group or stream was deleted, or Redis refuses
/// our credentials.
fn is_fatal(e: &Error) -> bool {
    let Error::Channel { source, .. } = e else {
        return false;
    };
    let Some(e) = source.downcast_ref::<redis::RedisError>() else {
        return false;
    };
    matches!(
        e.code(),
        Some("NOGROUP" | "NOAUTH" | "WRONGPASS" | "NOPERM")
    )
}

fn parse_hash(reply: Value) -> Fields {
    let pairs: Vec<(String, Vec<u8>)> = redis::from_redis_value(reply).unwrap_or_default();
    Fields::from(pairs)
}

/// `XPENDING ... <consumer>` rows are `[id, consumer, idle, deliveries]`.
fn parse_pending(reply: Value) -> HashMap<String, u32> {
    let Value::Array(rows) = reply else {
        return HashMap::new();
    };
    rows.into_iter()
        .filter_map(|row| {
            let Value::Array(mut cols) = row else {
                return None;
            };
            if cols.len() != 4 {
                return None;
            }
            let count = match cols.pop()? {
                Value::Int(n) => u32::try_from(n).ok()?,
                _ => return None,
            };
            Some((bytes_to_string(cols.swap_remove(0))?, count))
        })
        .collect()
}
