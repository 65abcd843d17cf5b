//! Shared by the delivery-scenario tests (`delivery_*.rs`): the fast consumer settings,
//! starting and stopping consumers, gathering deliveries, and reading what is pending.

use std::collections::HashSet;
use std::time::Duration;

use backbone_core::{ConsumerLifetime, MessageId, RetryPolicy};
use backbone_redis::RedisConsumerBuilder;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use super::{Seen, TickRecorder, TicksConsumerBuilderExt};

/// `XREADGROUP` BLOCK of every consumer here: short, for prompt shutdowns.
pub const BLOCK: Duration = Duration::from_millis(150);
/// `claim_min_idle` where a scenario relies on claiming.
pub const CLAIM: Duration = Duration::from_millis(800);
/// `claim_min_idle` where nothing should be claimed: far above any handler's time.
pub const NO_CLAIM: Duration = Duration::from_secs(30);
/// Fast retries; enough deliveries for "fails twice, then succeeds".
pub const RETRY: RetryPolicy = RetryPolicy {
    base_delay: Duration::from_millis(20),
    max_delay: Duration::from_millis(200),
    max_deliveries: 5,
};
/// How long a `shutdown()` may take here.
pub const SHUTDOWN: Duration = Duration::from_secs(10);
/// How long to keep listening for extra or duplicated deliveries once all arrived.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Logs to the test's captured output; `RUST_LOG=backbone_redis=debug` shows the worker.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A consumer with the fast settings above; no claiming expected (`NO_CLAIM`).
pub fn consumer(url: &str, uri: &str, group: &str, name: &str) -> RedisConsumerBuilder {
    consumer_with(
        backbone_redis::settings::RedisSettings::new()
            .url(url)
            .uri(uri),
        group,
        name,
    )
}

/// [`consumer`] with `settings` (a cluster's, a partitioned stream's, …).
pub fn consumer_with(
    settings: backbone_redis::settings::RedisSettings,
    group: &str,
    name: &str,
) -> RedisConsumerBuilder {
    RedisConsumerBuilder::new()
        .settings(settings)
        .group(group)
        .name(name)
        .block(BLOCK)
        .retry(RETRY)
        .claim_min_idle(NO_CLAIM)
        .shutdown_grace(Duration::from_secs(5))
}

pub fn recorder(label: &str, tx: &UnboundedSender<Seen>) -> TickRecorder {
    TickRecorder::new(label, tx.clone())
}

/// Starts one [`consumer_with`] per name in `group`, each recording to `tx`.
pub async fn start_group(
    settings: &backbone_redis::settings::RedisSettings,
    group: &str,
    names: &[&str],
    tx: &UnboundedSender<Seen>,
) -> Vec<(String, ConsumerLifetime)> {
    let mut lifetimes = Vec::new();
    for name in names {
        let lifetime = consumer_with(settings.clone(), group, name)
            .subscribe_ticks_consumer(recorder(name, tx))
            .await
            .unwrap();
        lifetimes.push((name.to_string(), lifetime));
    }
    lifetimes
}

/// Shuts `lifetime` down, requiring `Ok` within [`SHUTDOWN`].
pub async fn stop(what: &str, lifetime: ConsumerLifetime) {
    match tokio::time::timeout(SHUTDOWN, lifetime.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{what}: shutdown returned an error: {e}"),
        Err(_) => panic!("{what}: shutdown took longer than {SHUTDOWN:?}"),
    }
}

/// Shuts every lifetime down at once.
pub async fn stop_all(what: &str, lifetimes: Vec<ConsumerLifetime>) {
    let stops = lifetimes
        .into_iter()
        .enumerate()
        .map(|(i, l)| async move { stop(&format!("{what} #{i}"), l).await });
    futures::future::join_all(stops).await;
}

/// Receives until every id of `sent` has arrived or `within` has passed, then listens
/// `settle` longer for extras and duplicates. Never panics: the caller's assertion reports
/// missing and extra ids.
pub async fn gather(
    rx: &mut UnboundedReceiver<Seen>,
    sent: &[MessageId],
    within: Duration,
    settle: Duration,
) -> Vec<Seen> {
    let mut want: HashSet<MessageId> = sent.iter().copied().collect();
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    while !want.is_empty() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(seen)) => {
                want.remove(&seen.meta.message_id);
                got.push(seen);
            }
            Ok(None) | Err(_) => return got,
        }
    }
    let until = Instant::now() + settle;
    while let Ok(Some(seen)) = tokio::time::timeout_at(until, rx.recv()).await {
        got.push(seen);
    }
    got
}

/// At least once: every id of `sent` was received, nothing else was; duplicates allowed.
pub fn assert_at_least_once(sent: &[MessageId], received: &[MessageId]) {
    let sent_set: HashSet<_> = sent.iter().collect();
    let got: HashSet<_> = received.iter().collect();
    let missing: Vec<_> = sent.iter().filter(|id| !got.contains(id)).collect();
    let extra: Vec<_> = got.iter().filter(|id| !sent_set.contains(*id)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "sent {}, received {} ({} distinct): missing {} {missing:?}, extra {} {extra:?}",
        sent.len(),
        received.len(),
        got.len(),
        missing.len(),
        extra.len()
    );
}

pub fn events_key(uri: &str) -> String {
    format!("bb:{{{uri}}}:events")
}

/// `XPENDING <stream> <group> - + 10000`: `(stream id, consumer, idle ms, deliveries)`.
pub async fn pending(url: &str, uri: &str, group: &str) -> Vec<(String, String, u64, u64)> {
    let mut raw = super::inspect(url).await;
    redis::cmd("XPENDING")
        .arg(events_key(uri))
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(10_000)
        .query_async(&mut raw)
        .await
        .unwrap()
}

/// Waits (at most `within`) until the group has nothing pending; returns what is left.
pub async fn await_nothing_pending(
    url: &str,
    uri: &str,
    group: &str,
    within: Duration,
) -> Vec<(String, String, u64, u64)> {
    let deadline = Instant::now() + within;
    loop {
        let left = pending(url, uri, group).await;
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
