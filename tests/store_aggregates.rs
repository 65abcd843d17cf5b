//! Aggregates over real Redis: `load` (with snapshots) always equals `load_uncached` (a full
//! replay), snapshots are written in the background per caching policy, corrupted and stale
//! snapshots are logged and ignored, racing loads never move a snapshot backwards, and a
//! reduction serves as an append's expected version.

mod common;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone_core::events_contract;
use backbone_core::store::{
    Aggregate, AppendOptions, CachingPolicy, ExpectedVersion, Reduction, SnapshotInfo,
};
use backbone_core::Error;
use backbone_redis::store::{EventStore, EventStoreBuilder};
use backbone_redis::testing::{shared, unique_name};
use common::raw;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

/// A payment's life.
#[events_contract]
pub trait Payment {
    async fn requested(&self, amount: u64);
    async fn authorized(&self, amount: u64);
    async fn captured(&self, amount: u64);
    async fn refunded(&self, amount: u64);
}

/// Totals plus an order-sensitive digest of every event: any event lost, repeated or reordered
/// by a snapshot shows.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Ledger {
    requested: u64,
    authorized: u64,
    captured: u64,
    refunded: u64,
    events: u64,
    digest: u64,
}

impl Aggregate for Ledger {
    type Event = PaymentEvent;
    const NAME: &'static str = "ledger-v1";
    fn apply(&mut self, event: &PaymentEvent) {
        let (code, amount) = match event {
            PaymentEvent::Requested { amount } => (1, amount),
            PaymentEvent::Authorized { amount } => (2, amount),
            PaymentEvent::Captured { amount } => (3, amount),
            PaymentEvent::Refunded { amount } => (4, amount),
        };
        let total = match code {
            1 => &mut self.requested,
            2 => &mut self.authorized,
            3 => &mut self.captured,
            _ => &mut self.refunded,
        };
        *total += amount;
        self.events += 1;
        self.digest = self.digest.wrapping_mul(1_000_003) ^ (code * 1_000_000_007 + amount);
    }
}

async fn store(uri: &str, caching: CachingPolicy) -> EventStore<PaymentEvent> {
    let redis = shared().await.unwrap();
    EventStoreBuilder::new()
        .url(redis.url())
        .uri(uri)
        .caching(caching)
        .build::<PaymentEvent>()
        .await
        .unwrap()
}

/// xorshift64*: reproducible "random" histories without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    fn event(&mut self) -> PaymentEvent {
        let amount = self.below(100_000);
        match self.below(4) {
            0 => PaymentEvent::Requested { amount },
            1 => PaymentEvent::Authorized { amount },
            2 => PaymentEvent::Captured { amount },
            _ => PaymentEvent::Refunded { amount },
        }
    }
}

fn events(n: u64, first: u64) -> Vec<PaymentEvent> {
    (first..first + n)
        .map(|amount| PaymentEvent::Requested { amount })
        .collect()
}

async fn append(store: &EventStore<PaymentEvent>, id: &str, events: &[PaymentEvent]) {
    let options = AppendOptions::default();
    store
        .append(id, ExpectedVersion::Any, events, options)
        .await
        .unwrap();
}

/// Asserts that `load` equals `load_uncached` and is at `version`; returns it.
async fn load_checked(
    store: &EventStore<PaymentEvent>,
    id: &str,
    version: u64,
) -> Reduction<Ledger> {
    let cached = store.load::<Ledger>(id).await.unwrap();
    let replayed = store.load_uncached::<Ledger>(id).await.unwrap();
    assert_eq!(cached, replayed, "load and load_uncached of {id} differ");
    assert_eq!(cached.version, version, "{id}");
    assert_eq!(cached.state.events, version, "{id}");
    cached
}

/// Polls (20 ms, at most 10 s) until the snapshot's version satisfies `ok`.
async fn wait_snapshot(
    store: &EventStore<PaymentEvent>,
    id: &str,
    ok: impl Fn(Option<u64>) -> bool,
) -> Option<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let version = store.snapshot::<Ledger>(id).await.unwrap().map(|s| s.0);
        if ok(version) {
            return version;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "snapshot of {id} still at {version:?} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Log lines written on this thread while the guard lives (tests using it run on a
/// current-thread runtime, so spawned tasks log here too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Polls (at most 10 s) until the logs contain `needle`.
    async fn wait_for(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.text().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line with {needle:?} in:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_new_aggregate_loads_as_the_default_at_version_0() {
    let store = store(&unique_name("agg-new"), CachingPolicy::EveryEvents(1)).await;
    let reduction = store.load::<Ledger>("nobody").await.unwrap();
    assert_eq!(reduction, Reduction::default());
    assert_eq!(
        store.load_uncached::<Ledger>("nobody").await.unwrap(),
        reduction
    );
    assert_eq!(store.snapshot::<Ledger>("nobody").await.unwrap(), None);
}

#[tokio::test]
async fn reduce_with_cache_equals_reduce_without() {
    // EveryEvents(10), recording what each load saw.
    let seen = Arc::new(Mutex::new(Vec::<SnapshotInfo>::new()));
    let record = seen.clone();
    let policy = CachingPolicy::custom(move |info| {
        record.lock().unwrap().push(*info);
        CachingPolicy::EveryEvents(10).wants_snapshot(info)
    });
    let store = store(&unique_name("agg-equal"), policy).await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut used, mut written) = (0, 0);
    for a in 0..7 {
        let id = format!("payment-{a}");
        let total = match a {
            0 => 0,
            1 => 350,
            _ => rng.below(351),
        };
        load_checked(&store, &id, 0).await;
        let mut version = 0;
        while version < total {
            let n = (1 + rng.below(60)).min(total - version);
            let batch: Vec<_> = (0..n).map(|_| rng.event()).collect();
            let expected = ExpectedVersion::Exact(version);
            let result = store.append(&id, expected, &batch, AppendOptions::default());
            version = result.await.unwrap().version;
            for _ in 0..=rng.below(2) {
                // Every snapshot write asked for has landed (waited for below).
                let before = store.snapshot::<Ledger>(&id).await.unwrap().map(|s| s.0);
                seen.lock().unwrap().clear();
                load_checked(&store, &id, version).await;
                let info = seen.lock().unwrap().pop();
                let Some(info) = info else {
                    // The policy is not asked when no event was applied on top of the snapshot.
                    assert_eq!(
                        before,
                        Some(version),
                        "{id}: nothing applied, yet no snapshot"
                    );
                    continue;
                };
                let base = info.version - info.events_since_snapshot;
                assert_eq!(info.version, version);
                match before {
                    Some(snapshot) => {
                        assert!(snapshot > 0 && snapshot <= version, "{id}: {snapshot}");
                        assert_eq!(base, snapshot, "{id}: the load did not start from it");
                        assert!(info.snapshot_age.is_some());
                        used += 1;
                    }
                    None => assert_eq!((base, info.snapshot_age), (0, None), "{id}"),
                }
                if CachingPolicy::EveryEvents(10).wants_snapshot(&info) {
                    wait_snapshot(&store, &id, |v| v == Some(version)).await;
                    written += 1;
                }
            }
        }
    }
    assert!(
        used >= 20 && written >= 20,
        "{used} loads used a snapshot, {written} written"
    );
}

#[tokio::test]
async fn every_events_writes_a_snapshot_in_the_background() {
    let store = store(&unique_name("agg-every"), CachingPolicy::EveryEvents(5)).await;
    append(&store, "p", &events(4, 0)).await;
    load_checked(&store, "p", 4).await; // 4 applied: below 5
    append(&store, "p", &events(1, 4)).await;
    load_checked(&store, "p", 5).await; // 5 applied on top of nothing
    wait_snapshot(&store, "p", |v| v == Some(5)).await;
    append(&store, "p", &events(3, 5)).await;
    load_checked(&store, "p", 8).await; // 3 on top of the snapshot at 5
    append(&store, "p", &events(2, 8)).await;
    load_checked(&store, "p", 10).await;
    wait_snapshot(&store, "p", |v| v == Some(10)).await;
}

#[tokio::test]
async fn max_age_writes_a_snapshot_when_the_one_used_is_old() {
    let max_age = Duration::from_millis(300);
    let store = store(&unique_name("agg-age"), CachingPolicy::MaxAge(max_age)).await;
    append(&store, "p", &events(2, 0)).await;
    load_checked(&store, "p", 2).await; // no snapshot yet: write one
    wait_snapshot(&store, "p", |v| v == Some(2)).await;
    append(&store, "p", &events(1, 2)).await;
    load_checked(&store, "p", 3).await; // the snapshot is fresh: keep it
    tokio::time::sleep(max_age + Duration::from_millis(100)).await;
    let (version, age) = store.snapshot::<Ledger>("p").await.unwrap().unwrap();
    assert_eq!(version, 2, "a fresh snapshot was replaced");
    assert!(age >= max_age, "{age:?}");
    append(&store, "p", &events(1, 3)).await;
    load_checked(&store, "p", 4).await; // now it is old
    wait_snapshot(&store, "p", |v| v == Some(4)).await;
}

#[tokio::test]
async fn a_custom_policy_decides() {
    let policy = CachingPolicy::custom(|info| info.version % 4 == 0);
    let store = store(&unique_name("agg-custom"), policy).await;
    append(&store, "p", &events(3, 0)).await;
    load_checked(&store, "p", 3).await;
    append(&store, "p", &events(1, 3)).await;
    load_checked(&store, "p", 4).await;
    wait_snapshot(&store, "p", |v| v == Some(4)).await;
    append(&store, "p", &events(3, 4)).await;
    load_checked(&store, "p", 7).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.snapshot::<Ledger>("p").await.unwrap().unwrap().0, 4);
}

#[tokio::test]
async fn never_writes_no_snapshot() {
    let store = store(&unique_name("agg-never"), CachingPolicy::Never).await;
    append(&store, "p", &events(50, 0)).await;
    for _ in 0..3 {
        load_checked(&store, "p", 50).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.snapshot::<Ledger>("p").await.unwrap(), None);
}

#[tokio::test]
async fn a_corrupted_snapshot_is_logged_ignored_and_replaced() {
    let redis = shared().await.unwrap();
    let mut conn = raw(redis.url()).await;
    let store = store(&unique_name("agg-corrupt"), CachingPolicy::EveryEvents(1)).await;
    let key = store.keys().snapshot(Ledger::NAME, "p");
    append(&store, "p", &events(20, 0)).await;
    load_checked(&store, "p", 20).await;
    wait_snapshot(&store, "p", |v| v == Some(20)).await;
    let (logs, _guard) = Logs::capture();

    // A state that is not JSON: warned about (naming the key), ignored, then replaced.
    let _: () = conn.hset(&key, "state", "{not json").await.unwrap();
    load_checked(&store, "p", 20).await;
    let text = logs.text();
    assert!(text.contains("WARN") && text.contains(&key), "{text}");
    assert!(
        text.contains("does not decode") && text.contains("state"),
        "{text}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while conn.hget::<_, _, String>(&key, "state").await.unwrap() == "{not json" {
        assert!(tokio::time::Instant::now() < deadline, "never replaced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = logs.text().len();
    load_checked(&store, "p", 20).await;
    assert_eq!(logs.text().len(), before, "a repaired snapshot still warns");

    // A version that is not a number: `snapshot` says so; a load warns, replays and repairs.
    let _: () = conn.hset(&key, "version", "seven").await.unwrap();
    let err = store.snapshot::<Ledger>("p").await.unwrap_err();
    assert!(
        err.to_string().contains(&key) && err.to_string().contains("seven"),
        "{err}"
    );
    load_checked(&store, "p", 20).await;
    assert!(
        logs.text()[before..].contains("not a number"),
        "{}",
        logs.text()
    );
    wait_snapshot(&store, "p", |v| v == Some(20)).await;

    // Not a hash at all: the read and the write are both warned about; the load still works.
    let _: () = conn.del(&key).await.unwrap();
    let _: () = conn.set(&key, "not a hash").await.unwrap();
    load_checked(&store, "p", 20).await;
    logs.wait_for("cannot read the snapshot").await;
    logs.wait_for("cannot write the snapshot").await;
    assert_eq!(conn.get::<_, String>(&key).await.unwrap(), "not a hash");
}

#[tokio::test]
async fn a_snapshot_of_a_deleted_stream_is_logged_and_ignored() {
    let redis = shared().await.unwrap();
    let mut conn = raw(redis.url()).await;
    let store = store(&unique_name("agg-stale"), CachingPolicy::EveryEvents(1)).await;
    let (key, stream) = (
        store.keys().snapshot(Ledger::NAME, "p"),
        store.keys().aggregate("p"),
    );
    append(&store, "p", &events(30, 0)).await;
    load_checked(&store, "p", 30).await;
    wait_snapshot(&store, "p", |v| v == Some(30)).await;
    let (logs, _guard) = Logs::capture();

    // The stream is gone: the snapshot (version 30) is ahead of it. Ignored, then deleted.
    let _: () = conn.del(&stream).await.unwrap();
    assert_eq!(load_checked(&store, "p", 0).await, Reduction::default());
    let text = logs.text();
    assert!(
        text.contains(&key) && text.contains("no event 30"),
        "{text}"
    );
    wait_snapshot(&store, "p", |v| v.is_none()).await;

    // A new history, snapshotted at 5; deleted; a third history of 8 events. Its event 5 is
    // not the snapshot's: ignored, replaced.
    append(&store, "p", &events(5, 1000)).await;
    load_checked(&store, "p", 5).await;
    wait_snapshot(&store, "p", |v| v == Some(5)).await;
    let _: () = conn.del(&stream).await.unwrap();
    append(&store, "p", &events(8, 2000)).await;
    let reduction = load_checked(&store, "p", 8).await;
    assert_eq!(reduction.state.requested, (2000..2008).sum::<u64>());
    assert!(logs.text().contains("position"), "{}", logs.text());
    wait_snapshot(&store, "p", |v| v == Some(8)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_loads_never_move_a_snapshot_backwards() {
    let store = store(&unique_name("agg-race"), CachingPolicy::EveryEvents(1)).await;
    let appender = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0..150 {
                append(&store, "p", &events(1, n)).await;
            }
        })
    };
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let (mut last, deadline) = (0, tokio::time::Instant::now() + common::WAIT);
                while last < 150 {
                    assert!(tokio::time::Instant::now() < deadline, "stuck at {last}");
                    let reduction = store.load::<Ledger>("p").await.unwrap();
                    assert!(reduction.version >= last);
                    assert_eq!(reduction.state.events, reduction.version);
                    last = reduction.version;
                }
            })
        })
        .collect();
    let mut highest = 0;
    while !appender.is_finished() || loaders.iter().any(|l| !l.is_finished()) {
        if let Some((version, _)) = store.snapshot::<Ledger>("p").await.unwrap() {
            assert!(
                version >= highest,
                "snapshot moved back from {highest} to {version}"
            );
            highest = version;
        }
    }
    appender.await.unwrap();
    for loader in loaders {
        loader.await.unwrap();
    }
    load_checked(&store, "p", 150).await;
    wait_snapshot(&store, "p", |v| v == Some(150)).await;
}

#[tokio::test]
async fn a_reduction_is_an_expected_version() {
    let store = store(&unique_name("agg-expected"), CachingPolicy::EveryEvents(1)).await;
    let none = AppendOptions::default;
    let request = [PaymentEvent::Requested { amount: 10_000 }];
    let fresh = store.load::<Ledger>("p").await.unwrap();
    let expected = ExpectedVersion::from(&fresh);
    store.append("p", expected, &request, none()).await.unwrap();

    // Nothing changed since the load: the append succeeds.
    let mine = store.load::<Ledger>("p").await.unwrap();
    let theirs = store.load::<Ledger>("p").await.unwrap();
    let capture = [PaymentEvent::Captured { amount: 6_000 }];
    let result = store
        .append("p", ExpectedVersion::from(&theirs), &capture, none())
        .await
        .unwrap();
    assert_eq!((result.first_version, result.version), (2, 2));

    // Someone appended since: a conflict with both versions.
    let refund = [PaymentEvent::Refunded { amount: 1_000 }];
    let err = store
        .append("p", ExpectedVersion::from(&mine), &refund, none())
        .await
        .unwrap_err();
    let message = err.to_string();
    match err {
        Error::WrongExpectedVersion {
            expected, actual, ..
        } => assert_eq!((expected.as_str(), actual), ("version 1", 2)),
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert!(
        message.contains("version 1") && message.contains('2'),
        "{message}"
    );

    // Reload and retry.
    let mine = load_checked(&store, "p", 2).await;
    let result = store
        .append("p", ExpectedVersion::from(&mine), &refund, none())
        .await
        .unwrap();
    assert_eq!(result.version, 3);
    let state = load_checked(&store, "p", 3).await.state;
    assert_eq!(
        (state.requested, state.captured, state.refunded),
        (10_000, 6_000, 1_000)
    );
}
