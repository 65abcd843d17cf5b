//! Shared by the cluster tests that disturb a cluster under load (`cluster_failover.rs`,
//! `cluster_resharding.rs`): concurrent senders that log every send's outcome and time,
//! consumers with the fast settings, and a few `redis-cli`-like reads of one node.

#![allow(dead_code)]
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backbone_core::{ConsumerLifetime, MessageId};
use tokio::time::Instant;

use crate::common::*;

/// One send's outcome and when it started and ended.
#[derive(Debug)]
pub struct Sent {
    pub n: u64,
    pub started: Instant,
    pub ended: Instant,
    pub result: Result<MessageId, String>,
}

/// Every send of a load run.
#[derive(Debug, Default)]
pub struct SendLog {
    pub sends: Vec<Sent>,
}

impl SendLog {
    pub fn ok(&self) -> Vec<MessageId> {
        let ok = self.sends.iter().filter_map(|s| s.result.as_ref().ok());
        ok.copied().collect()
    }

    pub fn failures(&self) -> Vec<&Sent> {
        self.sends.iter().filter(|s| s.result.is_err()).collect()
    }

    /// The longest a send took.
    pub fn slowest(&self) -> Duration {
        let took = self.sends.iter().map(|s| s.ended - s.started);
        took.max().unwrap_or_default()
    }

    /// Sends that took longer than `over` (retried, or waited for a redirect).
    pub fn slower_than(&self, over: Duration) -> usize {
        let slow = self.sends.iter().filter(|s| s.ended - s.started > over);
        slow.count()
    }

    /// The first send that started at or after `at` and succeeded: when it ended.
    pub fn first_ok_started_after(&self, at: Instant) -> Option<Instant> {
        let after = self
            .sends
            .iter()
            .filter(|s| s.started >= at && s.result.is_ok());
        after.map(|s| s.ended).min()
    }

    /// The first send that ended `Ok` at or after `at`: when it ended.
    pub fn first_ok_after(&self, at: Instant) -> Option<Instant> {
        let after = self
            .sends
            .iter()
            .filter(|s| s.ended >= at && s.result.is_ok());
        after.map(|s| s.ended).min()
    }

    /// A summary for assertion messages: counts and the first few errors.
    pub fn summary(&self) -> String {
        let failures = self.failures();
        let errors: Vec<&str> = failures
            .iter()
            .take(3)
            .filter_map(|s| s.result.as_ref().err().map(String::as_str))
            .collect();
        format!(
            "{} sends: {} ok, {} failed (first errors: {errors:?}); slowest {:.2?}, {} took over 1 s",
            self.sends.len(),
            self.sends.len() - failures.len(),
            failures.len(),
            self.slowest(),
            self.slower_than(Duration::from_secs(1)),
        )
    }
}

/// `tasks` senders, each sending `per_task` ticks one after the other with `pause` between;
/// `acked` counts the sends that returned `Ok` so far.
pub async fn send_load(
    producer: TicksProducer,
    tasks: u64,
    per_task: u64,
    pause: Duration,
    acked: Arc<AtomicUsize>,
) -> SendLog {
    let mut handles = Vec::new();
    for task in 0..tasks {
        let producer = producer.clone();
        let acked = acked.clone();
        handles.push(tokio::spawn(async move {
            let mut sends = Vec::new();
            for k in 0..per_task {
                let n = task * per_task + k;
                let started = Instant::now();
                let result = producer.tick(n).await.map_err(|e| e.to_string());
                if result.is_ok() {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                let ended = Instant::now();
                sends.push(Sent {
                    n,
                    started,
                    ended,
                    result,
                });
                tokio::time::sleep(pause).await;
            }
            sends
        }));
    }
    let mut log = SendLog::default();
    for handle in handles {
        log.sends.extend(handle.await.unwrap());
    }
    log
}

/// Waits until `acked` reaches `n`; fails after `within`.
pub async fn wait_acked(acked: &AtomicUsize, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while acked.load(Ordering::Relaxed) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} sends acknowledged after {within:?}",
            acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Panics naming every consumer of `lifetimes` that has stopped.
pub fn assert_running(lifetimes: &[(String, ConsumerLifetime)]) {
    let stopped: Vec<&str> = lifetimes
        .iter()
        .filter(|(_, l)| l.is_finished())
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(stopped.is_empty(), "consumers stopped: {stopped:?}");
}

/// Every id of `ok` was received; what else was received is at most one id per failed send
/// (a send that failed may have been written).
pub fn assert_delivered(ok: &[MessageId], failed: usize, received: &[MessageId], log: &str) {
    let sent: HashSet<_> = ok.iter().collect();
    let got: HashSet<_> = received.iter().collect();
    let missing: Vec<_> = ok.iter().filter(|id| !got.contains(id)).collect();
    let extra = got.iter().filter(|id| !sent.contains(*id)).count();
    assert!(
        missing.is_empty() && extra <= failed,
        "{} acknowledged, {} received ({} distinct): missing {} {missing:?}; {extra} not \
         acknowledged (at most {failed} failed sends may have been written); {log}",
        ok.len(),
        received.len(),
        got.len(),
        missing.len(),
    );
}

/// A `field:value` of `INFO section` on the node at `url`, e.g. `errorstat_NOSCRIPT`.
pub async fn info_field(url: &str, section: &str, name: &str) -> Option<String> {
    let mut raw = raw(url).await;
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(&mut raw)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// The message ids in `stream` as the node at `url` holds it (which must serve its slot).
pub async fn stream_ids_on(url: &str, stream: &str) -> Vec<MessageId> {
    message_ids(&mut raw(url).await, stream).await
}
