//! The in-memory consumer's scheduling, as the Redis worker's: it runs up to `concurrency`
//! handlers at once, each on its own Tokio task, never two events with the same ordering key
//! (and those in order); a failed event waits for its retry holding its key while other events
//! flow; every `claim_min_idle / 2` it claims what other consumers left idle (`claims.rs`); on
//! shutdown it stops reading and lets the handlers in flight finish within `shutdown_grace`.
//! What it did not finish stays pending, for a restart or another consumer to claim.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::task::{Id, JoinSet};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::claims;
use super::consumer::MemoryConsumer;
use super::retry::{Outcome, Retries};
use super::{lock, Pending, StreamState};
use crate::metadata::now_millis;
use crate::middleware::{ReadKind, ReadRequest};
use crate::{Error, OutgoingEvent};

/// How many entries a consumer reads ahead while every queued one waits for its key (the
/// Redis consumer's default `batch_size`).
const READ_AHEAD: usize = 100;

/// An entry taken for delivery: its index in the log, the event, its delivery count.
pub(super) struct Job {
    pub index: usize,
    pub event: Arc<OutgoingEvent>,
    pub deliveries: u32,
}

impl Job {
    fn key(&self) -> Option<&str> {
        self.event.key.as_deref()
    }
}

/// What the consumer holds: entries queued, running or waiting for a retry.
#[derive(Default)]
struct Schedule {
    /// Ready to run, in arrival order.
    queue: VecDeque<Job>,
    /// Every entry queued, running or waiting for a retry.
    known: HashSet<usize>,
    /// Ordering keys held by a running or retry-waiting entry, and that entry.
    keys: HashMap<String, usize>,
    retries: Retries<Job>,
    /// Entries whose handler runs, by task.
    running: HashMap<Id, (usize, Option<String>)>,
    /// Entries this consumer left pending in an earlier life: read first.
    own: VecDeque<usize>,
    handled: u64,
}

impl Schedule {
    /// Queues `job` unless it is known already.
    fn enqueue(&mut self, job: Job) {
        if self.known.insert(job.index) {
            self.queue.push_back(job);
        }
    }

    /// Forgets an entry done here, and its hold on its key.
    fn release(&mut self, index: usize, key: Option<&str>) {
        if let Some(key) = key {
            if self.keys.get(key) == Some(&index) {
                self.keys.remove(key);
            }
        }
        self.known.remove(&index);
    }

    /// The first queued job whose key is free (or held by itself).
    fn next_ready(&mut self) -> Option<Job> {
        let keys = &self.keys;
        let ready = self.queue.iter().position(|job| match job.key() {
            None => true,
            Some(key) => keys.get(key).is_none_or(|holder| *holder == job.index),
        });
        self.queue.remove(ready?)
    }

    fn held(&self) -> usize {
        self.queue.len() + self.running.len() + self.retries.len()
    }
}

impl MemoryConsumer {
    pub(super) async fn run(self: Arc<Self>, stop: CancellationToken) -> Result<(), Error> {
        let mut appended = self.stream.appended.subscribe();
        let mut st = Schedule {
            own: self.own_pending(),
            ..Schedule::default()
        };
        let mut tasks: JoinSet<(Job, Outcome)> = JoinSet::new();
        let every = claims::period(self.claim_min_idle);
        let mut claim_at = Instant::now() + every;
        let mut stopping: Option<Instant> = None; // the grace deadline, once stopping
        let mut why = None;
        loop {
            if stopping.is_none() {
                why = match self.max_messages.filter(|max| st.handled >= *max) {
                    Some(max) => Some(format!("handled max_messages ({max})")),
                    None => stop.is_cancelled().then(|| "shut down".to_owned()),
                };
                if why.is_some() {
                    stopping = Some(Instant::now() + self.shutdown_grace);
                }
            }
            if stopping.is_none() {
                appended.borrow_and_update();
                while let Some(job) = st.retries.due() {
                    // Delivered again, first, if it is still pending here.
                    match self.again(&job) {
                        Some(job) => st.queue.push_front(job),
                        None => st.release(job.index, job.key()),
                    }
                }
                if Instant::now() >= claim_at {
                    claim_at = Instant::now() + every;
                    let room = self.room(&st, tasks.len()).unwrap_or(usize::MAX);
                    if room > 0 {
                        for job in self.claim(room).await {
                            st.enqueue(job);
                        }
                    }
                }
                self.fill(&mut st, &mut tasks).await;
            } else if tasks.is_empty() {
                break;
            }
            self.probe.held.store(st.held(), Ordering::Relaxed);
            let deadline = stopping.unwrap_or(claim_at);
            tokio::select! {
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => match done {
                    Ok((id, (job, outcome))) => {
                        st.running.remove(&id);
                        self.settle(&mut st, job, outcome);
                    }
                    Err(lost) => {
                        if let Some((index, key)) = st.running.remove(&lost.id()) {
                            tracing::error!(entry = index, error = %lost,
                                "a handler's task was lost; its entry stays pending");
                            st.release(index, key.as_deref());
                        }
                    }
                },
                _ = stop.cancelled(), if stopping.is_none() => {}
                _ = appended.changed(), if stopping.is_none() => {}
                _ = st.retries.next_due(), if stopping.is_none() => {}
                _ = sleep_until(deadline) => if stopping.is_some() {
                    tracing::warn!(stream = %self.address, unfinished = tasks.len(),
                        "shutdown grace period over; unfinished events stay pending");
                    tasks.abort_all();
                    break;
                },
            }
        }
        // What is queued or waits for a retry stays pending, to be claimed or redelivered.
        self.probe.held.store(0, Ordering::Relaxed);
        *lock(&self.probe.stopped) = why;
        Ok(())
    }

    /// How many more entries `max_messages` lets this consumer take (beyond those queued and
    /// running), if it has one.
    fn room(&self, st: &Schedule, running: usize) -> Option<usize> {
        let max = self.max_messages?;
        let expected = st.handled + (st.queue.len() + running) as u64;
        Some(max.saturating_sub(expected) as usize)
    }

    /// Starts queued jobs while there is room, reading more while every queued one waits for
    /// its key (at most [`READ_AHEAD`] queued).
    async fn fill(self: &Arc<Self>, st: &mut Schedule, tasks: &mut JoinSet<(Job, Outcome)>) {
        loop {
            let max = self.max_messages.unwrap_or(u64::MAX);
            while tasks.len() < self.concurrency && st.handled + (tasks.len() as u64) < max {
                let Some(job) = st.next_ready() else { break };
                self.start(st, tasks, job);
            }
            let full = tasks.len() >= self.concurrency || st.queue.len() >= READ_AHEAD;
            if full || self.room(st, tasks.len()) == Some(0) {
                return;
            }
            match self.read(&mut st.own).await {
                Some(job) => st.enqueue(job),
                None => return,
            }
        }
    }

    /// Runs `job`'s handler on its own task, holding its key, if it is still pending here
    /// (another consumer may have claimed it while it was queued).
    fn start(self: &Arc<Self>, st: &mut Schedule, tasks: &mut JoinSet<(Job, Outcome)>, job: Job) {
        if !self.owns(job.index) {
            st.release(job.index, job.key());
            return;
        }
        let key = job.key().map(str::to_owned);
        if let Some(key) = &key {
            st.keys.insert(key.clone(), job.index);
        }
        let consumer = self.clone();
        let index = job.index;
        let task = tasks.spawn(async move {
            let outcome = consumer
                .deliver(job.index, &job.event, job.deliveries)
                .await;
            (job, outcome)
        });
        st.running.insert(task.id(), (index, key));
    }

    fn settle(&self, st: &mut Schedule, job: Job, outcome: Outcome) {
        match outcome {
            // It keeps its key and its place in `known` while it waits.
            Outcome::Retry(delay) => return st.retries.add(job, delay),
            Outcome::Handled => st.handled += 1,
            Outcome::Skipped | Outcome::Bury(_) => {}
        }
        st.release(job.index, job.key());
    }

    /// The entries pending for this consumer's name, left by an earlier life.
    fn own_pending(&self) -> VecDeque<usize> {
        let state = lock(&self.stream.state);
        let group = state.groups.get(&self.group);
        let mine = group.into_iter().flat_map(|g| g.pending.iter());
        mine.filter(|(_, p)| p.consumer == self.name)
            .map(|(i, _)| *i)
            .collect()
    }

    /// Whether entry `index` is pending for this consumer.
    fn owns(&self, index: usize) -> bool {
        let state = lock(&self.stream.state);
        let group = state.groups.get(&self.group);
        group
            .and_then(|g| g.pending.get(&index))
            .is_some_and(|p| p.consumer == self.name)
    }

    /// [`next`](Self::next) inside the middlewares' read hooks: a read of at most one entry.
    async fn read(&self, own: &mut VecDeque<usize>) -> Option<Job> {
        let kind = match own.is_empty() {
            true => ReadKind::New,
            false => ReadKind::Own,
        };
        self.probe
            .last_read_ms
            .store(now_millis(), Ordering::Relaxed);
        let mut taken = None;
        let read = async {
            taken = self.next(own);
            Ok(usize::from(taken.is_some()))
        };
        let request = ReadRequest { kind, count: 1 };
        // A middleware may refuse the read; the consumer then waits for the next append.
        if let Err(e) = (self.middlewares)
            .read(&self.info, request, Box::pin(read))
            .await
        {
            tracing::warn!(error = %e, "a middleware refused the read");
        }
        taken
    }

    /// Takes the next entry for this consumer: its own pending ones first, then new ones.
    fn next(&self, own: &mut VecDeque<usize>) -> Option<Job> {
        let mut state = lock(&self.stream.state);
        while let Some(index) = own.pop_front() {
            if let Some(job) = self.redeliver(&mut state, index) {
                return Some(job);
            }
        }
        let StreamState { entries, groups } = &mut *state;
        let group = groups.entry(self.group.clone()).or_default();
        let index = group.next;
        let event = entries.get(index)?.clone();
        group.next += 1;
        let pending = Pending {
            consumer: self.name.clone(),
            deliveries: 1,
            delivered: Instant::now(),
        };
        group.pending.insert(index, pending);
        Some(Job {
            index,
            event,
            deliveries: 1,
        })
    }

    /// Delivers again an entry whose retry is due, if it is still pending here.
    fn again(&self, job: &Job) -> Option<Job> {
        self.redeliver(&mut lock(&self.stream.state), job.index)
    }

    /// Counts one more delivery of `index`, now, if it is pending for this consumer.
    fn redeliver(&self, state: &mut StreamState, index: usize) -> Option<Job> {
        let pending = state.groups.get_mut(&self.group)?.pending.get_mut(&index);
        let pending = pending.filter(|p| p.consumer == self.name)?;
        pending.deliveries += 1;
        pending.delivered = Instant::now();
        Some(Job {
            index,
            event: state.entries[index].clone(),
            deliveries: pending.deliveries,
        })
    }
}
