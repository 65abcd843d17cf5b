//! Coalescing concurrent sends: every [`RedisPublisher`](super::RedisPublisher) hands its
//! events to one batching task, which writes whatever is queued with one run of the publish
//! script, keeping at most [`MAX_IN_FLIGHT`] runs in flight. A lone send goes out at once, as a
//! batch of one; under load, the sends that queue up while earlier runs are in flight share the
//! next run, so Redis pays the script's fixed cost once per batch instead of once per event.
//!
//! A durable publisher ([`Durability`]) sends each run as one pipeline, `[EVALSHA publish…,
//! WAIT replicas timeout]`, on one connection (on a cluster, the master of the stream's slot:
//! redis-rs routes the pipeline by the EVALSHA's key), so the WAIT covers exactly that run's
//! writes; an event is answered `Ok` only when WAIT counted enough replicas.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::connection::Connection;
use crate::entry::envelope_fields;
use crate::lua::PUBLISH;
use backbone_core::OutgoingEvent;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use redis::aio::ConnectionLike;
use redis::{ErrorKind, FromRedisValue, RedisResult, ServerErrorKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Failure, Outcome, SENT_TTL_MS};
use crate::keys::StreamKeys;

/// Events written by one run of the publish script, at most.
const MAX_BATCH: usize = 128;
/// Runs of the publish script in flight at once, per publisher.
const MAX_IN_FLIGHT: usize = 4;
/// Sends that may wait for the batching task before `publish` itself waits.
const QUEUE: usize = 4 * MAX_BATCH;

// `publish.lua` writes the sent-records' TTL literally (checked by a test below).
const _: () = assert!(
    SENT_TTL_MS == 600_000,
    "update publish.lua with SENT_TTL_MS"
);

/// One send waiting for its batch: `Ok(true)` written now, `Ok(false)` written before.
pub(super) struct Submission {
    pub event: Arc<OutgoingEvent>,
    /// Past it the sender has given up; the event is left out of any batch not yet sent.
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<bool, Failure>>,
}

/// `WAIT replicas timeout` after every run of the publish script
/// ([`RedisProducerBuilder::durable`](super::RedisProducerBuilder::durable)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Durability {
    /// At least 1.
    pub replicas: usize,
    /// Longer than zero (`WAIT n 0` would block for ever).
    pub timeout: Duration,
}

/// The sending end of a publisher's batching task; the task ends when every clone is dropped.
#[derive(Debug, Clone)]
pub(super) struct Batcher {
    queue: mpsc::Sender<Submission>,
}

impl Batcher {
    /// Starts the batching task of one publisher on the current Tokio runtime.
    pub fn start(
        keys: StreamKeys,
        connection: Connection,
        payload_ttl_ms: u64,
        durability: Option<Durability>,
    ) -> Self {
        let (queue, submissions) = mpsc::channel(QUEUE);
        let task = Task {
            payload_prefix: keys.payload_prefix(),
            sent_prefix: keys.sent_prefix(),
            keys,
            connection,
            payload_ttl_ms,
            durability,
        };
        tokio::spawn(task.run(submissions));
        Batcher { queue }
    }

    /// Queues one event and waits for its batch's answer (the caller bounds the wait).
    pub async fn submit(
        &self,
        event: Arc<OutgoingEvent>,
        deadline: Instant,
    ) -> Result<bool, Failure> {
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            event,
            deadline,
            reply,
        };
        if self.queue.send(submission).await.is_err() {
            return Err(stopped(Outcome::NotSent));
        }
        // No answer at all: the task ended while the batch may have been in flight.
        answer
            .await
            .unwrap_or_else(|_| Err(stopped(Outcome::Unknown)))
    }
}

fn stopped(outcome: Outcome) -> Failure {
    Failure {
        error: "the publisher's batching task has stopped (was its Tokio runtime shut down?)"
            .into(),
        cut: false,
        transient: false,
        outcome,
    }
}

struct Task {
    keys: StreamKeys,
    payload_prefix: String,
    sent_prefix: String,
    connection: Connection,
    payload_ttl_ms: u64,
    durability: Option<Durability>,
}

impl Task {
    async fn run(self, mut submissions: mpsc::Receiver<Submission>) {
        let mut in_flight = FuturesUnordered::new();
        let mut open = true;
        while open || !in_flight.is_empty() {
            tokio::select! {
                first = submissions.recv(), if open && in_flight.len() < MAX_IN_FLIGHT => {
                    let Some(first) = first else {
                        open = false;
                        continue;
                    };
                    let mut batch = Vec::with_capacity(MAX_BATCH.min(submissions.len() + 1));
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match submissions.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    in_flight.push(self.write(batch));
                }
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            }
        }
    }

    /// One run of the publish script for the live submissions of `batch`; answers each.
    async fn write(&self, batch: Vec<Submission>) {
        let now = Instant::now();
        let batch: Vec<Submission> = batch
            .into_iter()
            .filter(|s| s.deadline > now && !s.reply.is_closed())
            .collect();
        if batch.is_empty() {
            return;
        }
        // EVALSHA built in place: one buffer for every argument, no copy per argument.
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(PUBLISH.get_hash())
            .arg(1 + batch.len())
            .arg(self.keys.stream());
        let mut text = String::with_capacity(self.payload_prefix.len() + 36);
        for Submission { event, .. } in &batch {
            text.clear();
            match event.fields.is_empty() {
                true => text.push_str(&self.sent_prefix),
                false => text.push_str(&self.payload_prefix),
            }
            let _ = write!(text, "{}", event.message_id);
            cmd.arg(text.as_str());
        }
        cmd.arg(self.payload_ttl_ms).arg(batch.len());
        for Submission { event, .. } in &batch {
            text.clear();
            let _ = write!(text, "{}", event.message_id);
            cmd.arg(text.as_str())
                .arg(event.operation)
                .arg(event.version)
                .arg(event.produced_at);
            let extra = envelope_fields(&event.message_id, event.key.as_deref(), &event.envelope);
            cmd.arg(extra.len());
            for (name, value) in &extra {
                cmd.arg(name.as_ref()).arg(value.as_ref());
            }
            cmd.arg(event.fields.len());
            for (name, value) in event.fields.iter() {
                cmd.arg(name).arg(value);
            }
        }
        match self.send(cmd).await {
            Ok((replies, replicated)) if replies.len() == batch.len() => {
                for (submission, reply) in batch.into_iter().zip(replies) {
                    let answer = match (answer(reply), &replicated) {
                        (Ok(_), Err(failure)) => Err(failure.clone()),
                        (answer, _) => answer,
                    };
                    let _ = submission.reply.send(answer);
                }
            }
            result => {
                let failure = match result {
                    Err(e) => Failure::from_redis(&e),
                    Ok((replies, _)) => unexpected(format!(
                        "{} replies for {} events",
                        replies.len(),
                        batch.len()
                    )),
                };
                for submission in batch {
                    let _ = submission.reply.send(Err(failure.clone()));
                }
            }
        }
    }

    /// Sends the EVALSHA (with its WAIT when durable); if Redis lacks the script (a restart,
    /// a promoted replica, `SCRIPT FLUSH`), loads it and sends it again. Answers the script's
    /// replies and whether WAIT confirmed them (always `Ok` when not durable).
    async fn send(&self, cmd: redis::Cmd) -> RedisResult<(Vec<Value>, Result<(), Failure>)> {
        let mut connection = self.connection.clone();
        let Some(durability) = self.durability else {
            let replies = match cmd.query_async(&mut connection).await {
                Err(e) if is_noscript(&e) => {
                    PUBLISH.prepare_invoke().load_async(&mut connection).await?;
                    cmd.query_async(&mut connection).await?
                }
                result => result?,
            };
            return Ok((replies, Ok(())));
        };
        let timeout_ms = durability.timeout.as_millis().max(1) as u64;
        let mut pipeline = redis::pipe();
        pipeline.add_command(cmd);
        pipeline
            .cmd("WAIT")
            .arg(durability.replicas)
            .arg(timeout_ms);
        let (script, wait) = match durable_run(&mut connection, &pipeline).await {
            Err(e) if is_noscript(&e) => {
                PUBLISH.prepare_invoke().load_async(&mut connection).await?;
                durable_run(&mut connection, &pipeline).await?
            }
            result => result?,
        };
        let replicated = match wait {
            Ok(confirmed) if confirmed >= durability.replicas as i64 => Ok(()),
            Ok(confirmed) => Err(Failure {
                error: format!(
                    "WAIT: {confirmed} of {} replicas confirmed the write within {timeout_ms} ms",
                    durability.replicas
                ),
                cut: false,
                transient: true,
                outcome: Outcome::Unknown,
            }),
            Err(e) => Err(Failure {
                error: format!("WAIT after the publish script: {e}"),
                outcome: Outcome::Unknown,
                ..Failure::from_redis(&e)
            }),
        };
        Ok((script, replicated))
    }
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// Sends `[EVALSHA…, WAIT…]`: the script's replies (an error if the script did not run), and
/// WAIT's count of replicas (an error if WAIT failed).
async fn durable_run(
    connection: &mut Connection,
    pipeline: &redis::Pipeline,
) -> RedisResult<(Vec<Value>, RedisResult<i64>)> {
    let mut replies = connection.req_packed_commands(pipeline, 0, 2).await?;
    let (Some(wait), Some(script), None) = (replies.pop(), replies.pop(), replies.pop()) else {
        let what = "a pipeline of EVALSHA and WAIT did not get two replies";
        return Err((ErrorKind::Client, what).into());
    };
    let script = Vec::<Value>::from_redis_value(script.extract_error()?)?;
    let wait = wait
        .extract_error()
        .and_then(|v| Ok(i64::from_redis_value(v)?));
    Ok((script, wait))
}

/// One event's reply from the publish script.
fn answer(reply: Value) -> Result<bool, Failure> {
    match reply {
        Value::BulkString(_) | Value::SimpleString(_) => Ok(true),
        Value::Nil | Value::Boolean(false) => Ok(false),
        Value::Array(parts) => match parts.as_slice() {
            [_, Value::BulkString(text)] => Err(Failure {
                error: format!("publish script: {}", String::from_utf8_lossy(text)),
                cut: false,
                transient: false,
                outcome: Outcome::NotWritten,
            }),
            _ => Err(unexpected(format!("{parts:?}"))),
        },
        other => Err(unexpected(format!("{other:?}"))),
    }
}

/// A reply the publish script cannot give: whether the event was written is unknown.
fn unexpected(what: String) -> Failure {
    Failure {
        error: format!("unexpected reply from the publish script: {what}"),
        cut: false,
        transient: false,
        outcome: Outcome::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::SENT_TTL_MS;
    use crate::lua::PUBLISH_SOURCE;

    #[test]
    fn the_publish_script_keeps_sent_records_for_sent_ttl_ms() {
        let set = format!("redis.call('SET', marker, id, 'PX', {SENT_TTL_MS})");
        assert!(PUBLISH_SOURCE.contains(&set), "publish.lua lacks {set}");
        let refresh = format!("redis.call('PEXPIRE', marker, {SENT_TTL_MS})");
        assert!(
            PUBLISH_SOURCE.contains(&refresh),
            "publish.lua lacks {refresh}"
        );
    }
}
