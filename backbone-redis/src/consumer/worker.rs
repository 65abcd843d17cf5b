//! The consumer's scheduler. It keeps up to two read requests outstanding while less than a
//! batch is queued (so the next batches are read and fetched while handlers run) and the bytes
//! held stay under `max_buffered_bytes` (see `budget.rs`), runs up to
//! `concurrency` jobs at once, inside its own task when that is 1 (never two with the same
//! ordering key, and those in order), holds failed jobs until their retry is due while other
//! events flow, acknowledges successes in batches (sending each `XACK` without waiting for
//! it), and on shutdown lets jobs in flight finish within the grace period.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use backbone_core::Error;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use super::job::{self, Job, Outcome, Shared};
use super::messages::Incoming;
use crate::connection::redis_error;

/// Read requests the worker keeps outstanding: while the fetcher fetches one batch's payloads,
/// the reader already reads the next.
pub(super) const READS_AHEAD: usize = 2;

/// How often acknowledgements waiting for a batch are flushed anyway.
const ACK_INTERVAL: Duration = Duration::from_millis(50);

pub(super) struct Worker {
    pub shared: Arc<Shared>,
    pub batch_size: usize,
    pub concurrency: usize,
    pub max_messages: Option<u64>,
    pub shutdown_grace: Duration,
    pub requests: mpsc::Sender<usize>,
    pub incoming: mpsc::Receiver<Incoming>,
    /// Stops the reader, the fetcher and the claimer.
    pub tasks_stop: CancellationToken,
}

#[derive(Default)]
struct State {
    /// Jobs ready to run, in arrival order.
    queue: VecDeque<Job>,
    /// Ids of every job queued, running or waiting for a retry (entries may arrive twice).
    known: HashSet<String>,
    /// Ordering keys held by a running or retry-waiting job, and that job's id.
    keys: HashMap<String, String>,
    /// Successes to `XACK`.
    acks: Vec<String>,
    /// `XACK`s sent and not answered yet.
    acking: JoinSet<()>,
    handled: u64,
    /// The read requests not answered yet, oldest first.
    reads: VecDeque<Read>,
}

/// A read request not answered yet.
struct Read {
    /// Entries asked for.
    count: usize,
    /// Bytes reserved for them in the budget until they arrive.
    reserved: usize,
}

impl Worker {
    pub(super) async fn run(mut self, stop: CancellationToken) -> Result<(), Error> {
        let mut st = State::default();
        let mut running = Running::new(self.concurrency);
        let mut retries: DelayQueue<Job> = DelayQueue::new();
        let mut ack_tick = tokio::time::interval(ACK_INTERVAL);
        let mut stopping: Option<Instant> = None; // the grace deadline, once stopping
        loop {
            if stopping.is_none() && self.max_reached(&st) {
                stopping = Some(Instant::now() + self.shutdown_grace);
            }
            if stopping.is_none() {
                self.start_jobs(&mut st, &mut running);
                self.request_read(&mut st, running.len());
            } else {
                self.tasks_stop.cancel();
                if running.is_empty() {
                    break;
                }
            }
            if st.acks.len() >= self.batch_size {
                self.flush(&mut st);
            }
            let deadline = stopping.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                Some(done) = running.join_next(), if !running.is_empty() => match done {
                    Ok((job, outcome)) => self.settle(&mut st, &mut retries, job, outcome),
                    Err(lost) => {
                        tracing::error!(stream = self.shared.keys.stream(), entry = lost.id,
                            error = lost.why, "a job was lost; its entry stays pending, to be claimed again");
                        self.release(&mut st, &lost.id, lost.key.as_deref(), lost.size);
                    }
                },
                Some(expired) = retries.next(), if !retries.is_empty() && stopping.is_none() => {
                    st.queue.push_front(expired.into_inner());
                }
                incoming = self.incoming.recv(), if stopping.is_none() => match incoming {
                    Some(Incoming::Read(jobs)) => {
                        if let Some(read) = st.reads.pop_front() {
                            self.shared.budget.unreserve(read.reserved);
                        }
                        self.enqueue(&mut st, jobs);
                    }
                    Some(Incoming::Claimed(jobs)) => {
                        // The claimer counted them as held; `enqueue` counts those kept.
                        self.shared.budget.release(jobs.iter().map(|job| job.size).sum());
                        self.enqueue(&mut st, jobs);
                    }
                    None => {
                        self.ended_unexpectedly("the fetcher and the claimer");
                        stopping = Some(Instant::now() + self.shutdown_grace);
                    }
                },
                _ = self.shared.fatal.raised(), if stopping.is_none() => {
                    stopping = Some(Instant::now() + self.shutdown_grace);
                }
                _ = stop.cancelled(), if stopping.is_none() => {
                    stopping = Some(Instant::now() + self.shutdown_grace);
                }
                _ = tokio::time::sleep_until(deadline), if stopping.is_some() => {
                    tracing::warn!(stream = self.shared.keys.stream(), unfinished = running.len(),
                        "shutdown grace period over; unfinished events stay pending");
                    running.abort_all();
                    break;
                }
                _ = ack_tick.tick(), if !st.acks.is_empty() => self.flush(&mut st),
            }
        }
        self.tasks_stop.cancel();
        self.finish_acks(&mut st).await;
        match self.shared.fatal.take() {
            Some(e) => {
                tracing::error!(stream = self.shared.keys.stream(), group = %self.shared.group,
                    error = %e, "consumer stopped");
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// The reader, the fetcher and the claimer end only when stopped or after raising an error;
    /// if they ended some other way (a panic), that ends the consumer too, with an error.
    fn ended_unexpectedly(&self, tasks: &str) {
        if !self.shared.fatal.is_raised() {
            self.shared.fatal.raise(Error::channel(
                format!("consume {}", self.shared.keys.stream()),
                format!("{tasks} ended unexpectedly"),
            ));
        }
    }

    fn max_reached(&self, st: &State) -> bool {
        self.max_messages.is_some_and(|max| st.handled >= max)
    }

    /// Asks the reader for more while less than a batch is queued, keeping up to
    /// [`READS_AHEAD`] requests outstanding, never for more than the byte budget has room for
    /// (reserving it until the entries arrive; one entry at a time until a size per entry is
    /// known), and never for more than `max_messages` allows.
    fn request_read(&self, st: &mut State, running: usize) {
        let budget = &self.shared.budget;
        while st.reads.len() < READS_AHEAD && st.queue.len() < self.batch_size {
            if !budget.observed() && !st.reads.is_empty() {
                return;
            }
            let count = match budget.entries(self.batch_size) {
                0 => return,
                room => room,
            };
            let count = match self.max_messages {
                Some(max) => {
                    let requested: usize = st.reads.iter().map(|read| read.count).sum();
                    let expected = st.handled + (st.queue.len() + running + requested) as u64;
                    match max.saturating_sub(expected) {
                        0 => return,
                        open => (open as usize).min(count),
                    }
                }
                None => count,
            };
            match self.requests.try_send(count) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => return,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.ended_unexpectedly("the reader");
                    return;
                }
            }
            let reserved = budget.estimate(count);
            budget.reserve(reserved);
            st.reads.push_back(Read { count, reserved });
        }
    }

    /// Queues the jobs not known yet, counting their bytes as held.
    fn enqueue(&self, st: &mut State, jobs: Vec<Job>) {
        for job in jobs {
            if st.known.insert(job.id().to_owned()) {
                self.shared.budget.hold(job.size);
                self.shared.health.hold();
                st.queue.push_back(job);
            }
        }
    }

    /// Forgets a job that is done here: its id, its hold on its ordering key, its bytes.
    fn release(&self, st: &mut State, id: &str, key: Option<&str>, size: usize) {
        if let Some(key) = key {
            if st.keys.get(key).is_some_and(|holder| holder == id) {
                st.keys.remove(key);
            }
        }
        if st.known.remove(id) {
            self.shared.health.release();
        }
        self.shared.budget.release(size);
    }

    /// Starts queued jobs while there is room, skipping those whose key is busy.
    fn start_jobs(&self, st: &mut State, running: &mut Running) {
        while running.len() < self.concurrency {
            if let Some(max) = self.max_messages {
                if st.handled + running.len() as u64 >= max {
                    return;
                }
            }
            let position = st.queue.iter().position(|job| match job.key() {
                None => true,
                Some(key) => st.keys.get(key).is_none_or(|holder| holder == job.id()),
            });
            let Some(job) = position.and_then(|i| st.queue.remove(i)) else {
                return;
            };
            if let Some(key) = job.key() {
                st.keys.insert(key.to_owned(), job.id().to_owned());
            }
            running.start(self.shared.clone(), job);
        }
    }

    fn settle(
        &self,
        st: &mut State,
        retries: &mut DelayQueue<Job>,
        mut job: Job,
        outcome: Outcome,
    ) {
        match outcome {
            Outcome::Retry(delay) => {
                // The job keeps its ordering key and its place in `known` while it waits.
                job.retry_after = Some(delay);
                retries.insert(job, delay);
                return;
            }
            Outcome::Handled { .. } => st.handled += 1,
            Outcome::Skipped | Outcome::Settled => {}
        }
        self.release(st, job.id(), job.key(), job.size);
        if matches!(outcome, Outcome::Handled { ack: true } | Outcome::Skipped) {
            st.acks.push(std::mem::take(&mut job.entry.id));
        }
    }

    /// Sends one `XACK` of every success so far without waiting for it (the worker goes on
    /// handling events meanwhile); [`finish_acks`](Self::finish_acks) waits for them. On
    /// failure the entries stay pending and are delivered again: a duplicate, never a loss; a
    /// refused `XACK` (or lost authentication) is raised and ends the consumer.
    fn flush(&self, st: &mut State) {
        while st.acking.try_join_next().is_some() {}
        if st.acks.is_empty() {
            return;
        }
        let acks = std::mem::take(&mut st.acks);
        let shared = self.shared.clone();
        st.acking.spawn(async move {
            let result: Result<i64, _> = redis::cmd("XACK")
                .arg(shared.keys.stream())
                .arg(&shared.group)
                .arg(&acks)
                .query_async(&mut shared.commands.clone())
                .await;
            if let Err(e) = result {
                let e = redis_error(format!("XACK on {}", shared.keys.stream()), e);
                if let Some(e) = shared.fatal.raise_if_fatal(e) {
                    tracing::error!(error = %e, count = acks.len(), "acknowledgement failed; the entries will be delivered again");
                }
            }
        });
    }

    /// Sends what is left to acknowledge and waits for every `XACK` sent.
    async fn finish_acks(&self, st: &mut State) {
        self.flush(st);
        while st.acking.join_next().await.is_some() {}
    }
}

/// The jobs in flight. With `concurrency` 1 they are polled inside the worker's own task (no
/// task per event); otherwise each runs on its own Tokio task, so handlers run in parallel.
enum Running {
    Inline(FuturesUnordered<BoxFuture<'static, Finished>>),
    Spawned(JoinSet<Finished>),
}

/// A job's end: its outcome, or what the worker must forget about a job that was lost.
type Finished = Result<(Job, Outcome), Lost>;

/// A job that ended without an outcome (it panicked outside the handler, or its task was
/// cancelled): its entry stays pending.
struct Lost {
    id: String,
    key: Option<String>,
    size: usize,
    why: String,
}

impl Running {
    fn new(concurrency: usize) -> Self {
        match concurrency {
            1 => Running::Inline(FuturesUnordered::new()),
            _ => Running::Spawned(JoinSet::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Running::Inline(jobs) => jobs.len(),
            Running::Spawned(jobs) => jobs.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn start(&mut self, shared: Arc<Shared>, job: Job) {
        let lost = Lost {
            id: job.id().to_owned(),
            key: job.key().map(str::to_owned),
            size: job.size,
            why: "the job panicked".to_owned(),
        };
        // `job::run` catches a handler's panic; this catches any other.
        let run = AssertUnwindSafe(job::run(shared, job))
            .catch_unwind()
            .map(|done| done.map_err(|_| lost));
        match self {
            Running::Inline(jobs) => jobs.push(Box::pin(run)),
            Running::Spawned(jobs) => {
                jobs.spawn(run);
            }
        }
    }

    /// The next job to finish, or what is known of it if it was lost.
    async fn join_next(&mut self) -> Option<Finished> {
        match self {
            Running::Inline(jobs) => jobs.next().await,
            Running::Spawned(jobs) => Some(jobs.join_next().await?.unwrap_or_else(|e| {
                Err(Lost {
                    id: String::new(),
                    key: None,
                    size: 0,
                    why: e.to_string(),
                })
            })),
        }
    }

    /// Drops (cancels) every job in flight.
    fn abort_all(&mut self) {
        match self {
            Running::Inline(jobs) => *jobs = FuturesUnordered::new(),
            Running::Spawned(jobs) => jobs.abort_all(),
        }
    }
}
