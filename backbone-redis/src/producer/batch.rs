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
//!
//! Inline events ([`Storage::Inline`](backbone_core::storage::Storage::Inline), and `object`) get their sequence number ([`Sequencer`]) when a batch
//! is formed, in the order batches are sent, and go in increasing order within their batch;
//! the batch carries the sequencer's floor (see [`super::sequence`] for why that is sound when
//! batches overlap and retries come after later batches).

use std::fmt::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::connection::Connection;
use crate::entry::{envelope_fields, PARAM_PREFIX};
use crate::lua::PUBLISH;
use backbone_core::OutgoingEvent;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use redis::aio::ConnectionLike;
use redis::{ErrorKind, FromRedisValue, RedisResult, ServerErrorKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::sequence::Sequencer;
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
    /// The inline events' sequence numbers, shared with the task.
    sequencer: Arc<Mutex<Sequencer>>,
}

impl Batcher {
    /// Starts the batching task of one publisher (`producer_id`) on the current Tokio runtime.
    pub fn start(
        keys: StreamKeys,
        connection: Connection,
        payload_ttl_ms: u64,
        durability: Option<Durability>,
        producer_id: &str,
    ) -> Self {
        let (queue, submissions) = mpsc::channel(QUEUE);
        let sequencer = Arc::new(Mutex::new(Sequencer::default()));
        let task = Task {
            payload_prefix: keys.payload_prefix(),
            sent_prefix: keys.sent_prefix(),
            sequence_key: keys.sequence(producer_id),
            keys,
            connection,
            payload_ttl_ms,
            durability,
            sequencer: sequencer.clone(),
        };
        tokio::spawn(task.run(submissions));
        Batcher { queue, sequencer }
    }

    /// The send of `event` (until `deadline`) returned an error: an inline event's sequence
    /// number is given up (unless another send of it lasts longer), so that it holds no later
    /// event back, and sending the event again gives it a new one.
    pub fn give_up(&self, event: &OutgoingEvent, deadline: Instant) {
        if event.storage.is_inline() {
            lock(&self.sequencer).give_up(&event.message_id, deadline);
        }
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

/// The sequencer, whose state stays consistent even if a holder panicked (it never does).
fn lock(sequencer: &Mutex<Sequencer>) -> MutexGuard<'_, Sequencer> {
    sequencer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Task {
    keys: StreamKeys,
    payload_prefix: String,
    sent_prefix: String,
    /// `bb:<tag>:seq:<producer_id>`.
    sequence_key: String,
    connection: Connection,
    payload_ttl_ms: u64,
    durability: Option<Durability>,
    sequencer: Arc<Mutex<Sequencer>>,
}

/// One batch ready to go: its live submissions, each with its sequence number (0 in the hash
/// layout), and the EVALSHA writing them.
struct Prepared {
    batch: Vec<(u64, Submission)>,
    cmd: redis::Cmd,
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
                    if let Some(prepared) = self.prepare(batch) {
                        in_flight.push(self.write(prepared));
                    }
                }
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            }
        }
    }

    /// The live submissions of `batch`, their inline events numbered (in the order batches
    /// are formed, so in the order they are sent) and put in increasing order, and the run of
    /// the publish script writing them; `None` when none is live.
    fn prepare(&self, batch: Vec<Submission>) -> Option<Prepared> {
        let now = Instant::now();
        let live = batch
            .into_iter()
            .filter(|s| s.deadline > now && !s.reply.is_closed());
        let (mut batch, floor) = {
            let mut sequencer = lock(&self.sequencer);
            let batch: Vec<(u64, Submission)> = live
                .map(|s| match s.event.storage.is_inline() {
                    true => (sequencer.assign(s.event.message_id, s.deadline), s),
                    false => (0, s),
                })
                .collect();
            (batch, sequencer.floor(now))
        };
        if batch.is_empty() {
            return None;
        }
        // Stable: the hash-layout events keep their order, ahead of the inline ones.
        batch.sort_by_key(|(seq, _)| *seq);
        Some(Prepared {
            cmd: self.command(&batch, floor),
            batch,
        })
    }

    /// The EVALSHA of `publish.lua` for `batch` (see the script for its arguments), built in
    /// place: one buffer for every argument, no copy per argument.
    fn command(&self, batch: &[(u64, Submission)], floor: u64) -> redis::Cmd {
        let hashed = batch.iter().filter(|(seq, _)| *seq == 0).count();
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(PUBLISH.get_hash())
            .arg(2 + hashed)
            .arg(self.keys.stream())
            .arg(&self.sequence_key);
        let mut text = String::with_capacity(self.payload_prefix.len() + 36);
        // The markers of the hash-layout events, in batch order; inline events have none.
        for (_, Submission { event, .. }) in batch.iter().filter(|(seq, _)| *seq == 0) {
            text.clear();
            match event.fields.is_empty() {
                true => text.push_str(&self.sent_prefix),
                false => text.push_str(&self.payload_prefix),
            }
            let _ = write!(text, "{}", event.message_id);
            cmd.arg(text.as_str());
        }
        cmd.arg(self.payload_ttl_ms).arg(batch.len()).arg(floor);
        for (seq, Submission { event, .. }) in batch {
            text.clear();
            let _ = write!(text, "{}", event.message_id);
            cmd.arg(text.as_str())
                .arg(event.operation)
                .arg(event.version)
                .arg(event.produced_at)
                .arg(*seq);
            let extra = envelope_fields(&event.message_id, event.key.as_deref(), &event.envelope);
            let inline = *seq > 0;
            let params = if inline { event.fields.len() } else { 0 };
            cmd.arg(extra.len() + params);
            for (name, value) in &extra {
                cmd.arg(name.as_ref()).arg(value.as_ref());
            }
            if inline {
                for (name, value) in event.fields.iter() {
                    text.clear();
                    text.push_str(PARAM_PREFIX);
                    text.push_str(name);
                    cmd.arg(text.as_str()).arg(value);
                }
                cmd.arg(0);
            } else {
                cmd.arg(event.fields.len());
                for (name, value) in event.fields.iter() {
                    cmd.arg(name).arg(value);
                }
            }
        }
        cmd
    }

    /// One run of the publish script for a prepared batch; answers each submission.
    async fn write(&self, Prepared { batch, cmd }: Prepared) {
        match self.send(cmd).await {
            Ok((replies, replicated)) if replies.len() == batch.len() => {
                let answers: Vec<_> = replies
                    .into_iter()
                    .map(|reply| match (answer(reply), &replicated) {
                        (Ok(_), Err(failure)) => Err(failure.clone()),
                        (answer, _) => answer,
                    })
                    .collect();
                {
                    let mut sequencer = lock(&self.sequencer);
                    for ((seq, _), answer) in batch.iter().zip(&answers) {
                        if *seq > 0 && answer.is_ok() {
                            sequencer.written(*seq);
                        }
                    }
                }
                for ((_, submission), answer) in batch.into_iter().zip(answers) {
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
                for (_, submission) in batch {
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
            [Value::BulkString(status), Value::BulkString(text)] if status == b"retry" => {
                Err(Failure {
                    error: format!("publish script: {}", String::from_utf8_lossy(text)),
                    cut: false,
                    transient: true,
                    outcome: Outcome::NotWritten,
                })
            }
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
        let sequence = format!("'PX', {SENT_TTL_MS})\nend\nreturn replies");
        assert!(
            PUBLISH_SOURCE.contains(&sequence),
            "publish.lua lacks the sequence record's {sequence}"
        );
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod redis_tests;
