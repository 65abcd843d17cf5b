//! The delivery scenarios of `delivery-scenarios.md` (1–16), one test each, against real Redis.
//!
//! Every test has its own stream names. "Received all" means the set of received message ids
//! equals the set sent; failures list the missing and extra ids. Where a scenario allows
//! duplicates (restarts, kills, churn) the received set must still cover what was sent and hold
//! nothing else.
//!
//! Scenario 15 runs a consumer in a child process: the test re-executes this test binary with
//! `--exact s15_child_consumer --ignored` and `S15_CHILD_URL` set; the ignored test
//! `s15_child_consumer` does nothing without that variable.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone_core::{
    async_trait, ConsumerContext, ConsumerLifetime, HandlerError, HandlerResult, MessageId,
    RetryPolicy,
};
use backbone_redis::testing::{shared, unique_name, RedisServer, ServerOptions};
use backbone_redis::{DeadLetters, RedisConsumerBuilder, RedisProducerBuilder};
use common::*;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// Settings and helpers
// ---------------------------------------------------------------------------------------------

/// `XREADGROUP` BLOCK of every consumer here: short, for prompt shutdowns.
const BLOCK: Duration = Duration::from_millis(150);
/// `claim_min_idle` where a scenario relies on claiming.
const CLAIM: Duration = Duration::from_millis(800);
/// `claim_min_idle` where nothing should be claimed: far above any handler's time.
const NO_CLAIM: Duration = Duration::from_secs(30);
/// Fast retries; enough deliveries for "fails twice, then succeeds".
const RETRY: RetryPolicy = RetryPolicy {
    base_delay: Duration::from_millis(20),
    max_delay: Duration::from_millis(200),
    max_deliveries: 5,
};
/// How long a `shutdown()` may take here.
const SHUTDOWN: Duration = Duration::from_secs(10);
/// How long to keep listening for extra or duplicated deliveries once all arrived.
const SETTLE: Duration = Duration::from_millis(500);

/// Logs to the test's captured output; `RUST_LOG=backbone_redis=debug` shows the worker.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A consumer with the fast settings above; no claiming expected (`NO_CLAIM`).
fn consumer(url: &str, uri: &str, group: &str, name: &str) -> RedisConsumerBuilder {
    RedisConsumerBuilder::new()
        .url(url)
        .uri(uri)
        .group(group)
        .name(name)
        .block(BLOCK)
        .retry(RETRY)
        .claim_min_idle(NO_CLAIM)
        .shutdown_grace(Duration::from_secs(5))
}

fn recorder(label: &str, tx: &UnboundedSender<Seen>) -> TickRecorder {
    TickRecorder::new(label, tx.clone())
}

/// Shuts `lifetime` down, requiring `Ok` within [`SHUTDOWN`].
async fn stop(what: &str, lifetime: ConsumerLifetime) {
    match tokio::time::timeout(SHUTDOWN, lifetime.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{what}: shutdown returned an error: {e}"),
        Err(_) => panic!("{what}: shutdown took longer than {SHUTDOWN:?}"),
    }
}

/// Shuts every lifetime down at once.
async fn stop_all(what: &str, lifetimes: Vec<ConsumerLifetime>) {
    let stops = lifetimes
        .into_iter()
        .enumerate()
        .map(|(i, l)| async move { stop(&format!("{what} #{i}"), l).await });
    futures::future::join_all(stops).await;
}

/// Receives until every id of `sent` has arrived or `within` has passed, then listens
/// `settle` longer for extras and duplicates. Never panics: the caller's assertion reports
/// missing and extra ids.
async fn gather(
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

/// Everything already in `rx`.
fn drain(rx: &mut UnboundedReceiver<Seen>, into: &mut Vec<Seen>) {
    while let Ok(seen) = rx.try_recv() {
        into.push(seen);
    }
}

/// At least once: every id of `sent` was received, nothing else was; duplicates allowed.
fn assert_at_least_once(sent: &[MessageId], received: &[MessageId]) {
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

fn events_key(uri: &str) -> String {
    format!("bb:{{{uri}}}:events")
}

fn dead_key(uri: &str, group: &str) -> String {
    format!("bb:{{{uri}}}:dead:{group}")
}

/// `XPENDING <stream> <group> - + 10000`: `(stream id, consumer, idle ms, deliveries)`.
async fn pending(url: &str, uri: &str, group: &str) -> Vec<(String, String, u64, u64)> {
    let mut raw = raw(url).await;
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
async fn await_nothing_pending(
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

/// `XRANGE <key> - +`: every entry with its fields.
async fn stream_entries(url: &str, key: &str) -> Vec<(String, HashMap<String, String>)> {
    let mut raw = raw(url).await;
    redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(&mut raw)
        .await
        .unwrap()
}

/// Counts every attempt per message id; fails the first `failures` attempts of each event, then
/// records it like a [`TickRecorder`].
#[derive(Clone)]
struct FailFirst {
    label: String,
    failures: u32,
    attempts: Arc<Mutex<HashMap<MessageId, u32>>>,
    tx: UnboundedSender<Seen>,
}

#[async_trait]
impl TicksConsumer for FailFirst {
    async fn tick(&self, ctx: &ConsumerContext, n: u64) -> HandlerResult {
        let id = ctx.metadata().message_id;
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let count = attempts.entry(id).or_insert(0);
            *count += 1;
            *count
        };
        if attempt <= self.failures {
            return Err(format!("tick {n}: attempt {attempt} fails on purpose").into());
        }
        self.tx.send(Seen {
            consumer: self.label.clone(),
            n,
            meta: ctx.metadata().clone(),
        })?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// 1–16
// ---------------------------------------------------------------------------------------------

/// 1. Published before any consumer exists; a consumer started afterwards receives all, with
///    payloads and metadata intact; after shutdown its lifetime completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s01_events_sent_before_any_consumer_arrive_intact() {
    init_tracing();
    let redis = shared().await.unwrap();
    let uri = unique_name("s01");
    let env = "s01env";
    let p = RedisProducerBuilder::new()
        .url(redis.url())
        .environment(env)
        .uri(&uri)
        .build_ticks_producer()
        .await
        .unwrap();
    let before = backbone_core::metadata::now_millis();
    let sent = send(&p, 0..100).await;
    let after = backbone_core::metadata::now_millis();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = consumer(redis.url(), &uri, "g", "c")
        .environment(env)
        .subscribe_ticks_consumer(recorder("c", &tx))
        .await
        .unwrap();
    let seen = gather(&mut rx, &sent, WAIT, SETTLE).await;
    assert_exactly_once(&sent, &ids(&seen));

    let index: HashMap<MessageId, u64> = sent.iter().zip(0u64..).map(|(id, n)| (*id, n)).collect();
    let mut stream_ids = HashSet::new();
    for s in &seen {
        let m = &s.meta;
        assert_eq!(
            Some(s.n),
            index.get(&m.message_id).copied(),
            "payload of {m:?}"
        );
        assert_eq!(m.operation, "tick", "{m:?}");
        assert_eq!(m.version, 0, "{m:?}");
        assert_eq!(m.environment.as_deref(), Some(env), "{m:?}");
        assert_eq!(m.uri, uri, "{m:?}");
        assert!(
            (before..=after).contains(&m.produced_at),
            "produced_at {} outside [{before}, {after}]: {m:?}",
            m.produced_at
        );
        assert_eq!(m.delivery_count, 1, "first delivery: {m:?}");
        assert_eq!(m.key, None, "{m:?}");
        assert!(
            stream_ids.insert(m.stream_id.clone()),
            "stream id twice: {m:?}"
        );
    }
    stop("s01 consumer", lifetime).await;
    let left = pending(redis.url(), &format!("{env}:{uri}"), "g").await;
    assert!(left.is_empty(), "still pending after shutdown: {left:?}");
}

/// 2. 5,000 events from 50 concurrent producers; 20 consumers of one group together receive
///    every one, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s02_fifty_producers_twenty_consumers_one_group() {
    init_tracing();
    let redis = shared().await.unwrap();
    let uri = unique_name("s02");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut lifetimes = Vec::new();
    for i in 0..20 {
        let name = format!("c-{i}");
        lifetimes.push(
            consumer(redis.url(), &uri, "g", &name)
                .batch_size(10)
                .subscribe_ticks_consumer(recorder(&name, &tx))
                .await
                .unwrap(),
        );
    }
    let mut tasks = Vec::new();
    for t in 0..50u64 {
        let p = producer(redis.url(), &uri).await;
        tasks.push(tokio::spawn(async move {
            send(&p, t * 100..t * 100 + 100).await
        }));
    }
    let mut sent = Vec::new();
    for task in tasks {
        sent.extend(task.await.unwrap());
    }
    let seen = gather(&mut rx, &sent, Duration::from_secs(60), SETTLE).await;
    assert_exactly_once(&sent, &ids(&seen));
    let consumers: HashSet<&str> = seen.iter().map(|s| s.consumer.as_str()).collect();
    assert!(
        consumers.len() > 1,
        "one consumer got everything: {consumers:?}"
    );
    stop_all("s02", lifetimes).await;
}

/// 3. 20 streams × 100 events in parallel; each stream's consumers get exactly that stream's
///    events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s03_twenty_streams_in_parallel() {
    init_tracing();
    let redis = shared().await.unwrap();
    let mut tasks = Vec::new();
    for s in 0..20 {
        let url = redis.url().to_owned();
        tasks.push(tokio::spawn(async move {
            let uri = unique_name(&format!("s03-{s}"));
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut lifetimes = Vec::new();
            for i in 0..2 {
                let name = format!("c-{i}");
                lifetimes.push(
                    consumer(&url, &uri, "g", &name)
                        .batch_size(20)
                        .subscribe_ticks_consumer(recorder(&name, &tx))
                        .await
                        .unwrap(),
                );
            }
            let sent = send(&producer(&url, &uri).await, 0..100).await;
            let seen = gather(&mut rx, &sent, Duration::from_secs(60), SETTLE).await;
            stop_all(&uri, lifetimes).await;
            (uri, sent, seen)
        }));
    }
    for task in tasks {
        let (uri, sent, seen) = task.await.unwrap();
        assert_exactly_once(&sent, &ids(&seen));
        let foreign: Vec<_> = seen.iter().filter(|s| s.meta.uri != uri).collect();
        assert!(foreign.is_empty(), "{uri} received {foreign:?}");
    }
}

/// 4. The handler fails the first 2 deliveries of each event; every event still ends up
///    handled (retried by the consumer after its backoff), once, and nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s04_fails_twice_then_succeeds() {
    init_tracing();
    let redis = shared().await.unwrap();
    let uri = unique_name("s04");
    let sent = send(&producer(redis.url(), &uri).await, 0..50).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let attempts = Arc::new(Mutex::new(HashMap::new()));
    let mut lifetimes = Vec::new();
    for i in 0..2 {
        let handler = FailFirst {
            label: format!("c-{i}"),
            failures: 2,
            attempts: attempts.clone(),
            tx: tx.clone(),
        };
        lifetimes.push(
            consumer(redis.url(), &uri, "g", &format!("c-{i}"))
                .batch_size(10)
                .subscribe_ticks_consumer(handler)
                .await
                .unwrap(),
        );
    }
    let seen = gather(&mut rx, &sent, Duration::from_secs(30), SETTLE).await;
    assert_exactly_once(&sent, &ids(&seen));
    {
        let attempts = attempts.lock().unwrap();
        let wrong: Vec<_> = sent
            .iter()
            .filter_map(|id| {
                let n = attempts.get(id).copied().unwrap_or(0);
                (n != 3).then_some((*id, n))
            })
            .collect();
        assert!(wrong.is_empty(), "(id, attempts) other than 3: {wrong:?}");
    }
    let counts: Vec<_> = seen
        .iter()
        .filter(|s| s.meta.delivery_count != 3)
        .map(|s| (s.meta.message_id, s.meta.delivery_count))
        .collect();
    assert!(
        counts.is_empty(),
        "the successful (third) delivery should say delivery_count 3: {counts:?}"
    );
    let left = await_nothing_pending(redis.url(), &uri, "g", Duration::from_secs(5)).await;
    assert!(left.is_empty(), "still pending: {left:?}");
    let dead = stream_entries(redis.url(), &dead_key(&uri, "g")).await;
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
    stop_all("s04", lifetimes).await;
}

/// 5. 5,000 events read by consumers that are repeatedly started and shut down; the union of
///    what they handled equals what was sent (duplicates allowed, losses not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s05_churning_consumers_lose_nothing() {
    init_tracing();
    let redis = shared().await.unwrap();
    let uri = unique_name("s05");
    let senders: Vec<_> = (0..2u64)
        .map(|t| {
            let url = redis.url().to_owned();
            let uri = uri.clone();
            tokio::spawn(async move {
                let p = producer(&url, &uri).await;
                let mut sent = Vec::new();
                for chunk in 0..25u64 {
                    let from = t * 2500 + chunk * 100;
                    sent.extend(send(&p, from..from + 100).await);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                sent
            })
        })
        .collect();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut received = Vec::new();
    let mut sent: Option<Vec<MessageId>> = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut rounds = 0u64;
    let mut senders = Some(senders);
    loop {
        rounds += 1;
        let mut lifetimes = Vec::new();
        for i in 0..4 {
            let name = format!("c-{i}");
            lifetimes.push(
                consumer(redis.url(), &uri, "g", &name)
                    .batch_size(20)
                    .claim_min_idle(CLAIM)
                    .subscribe_ticks_consumer(recorder(&name, &tx))
                    .await
                    .unwrap(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100 + (rounds * 37) % 200)).await;
        stop_all(&format!("s05 round {rounds}"), lifetimes).await;
        drain(&mut rx, &mut received);
        if sent.is_none() && senders.as_ref().unwrap().iter().all(|t| t.is_finished()) {
            let mut all = Vec::new();
            for task in senders.take().unwrap() {
                all.extend(task.await.unwrap());
            }
            sent = Some(all);
        }
        if let Some(sent) = &sent {
            let got: HashSet<MessageId> = received.iter().map(|s| s.meta.message_id).collect();
            if sent.iter().all(|id| got.contains(id)) || Instant::now() >= deadline {
                break;
            }
        } else {
            assert!(Instant::now() < deadline, "the producers did not finish");
        }
    }
    let sent = sent.unwrap();
    eprintln!(
        "s05: {rounds} rounds, {} deliveries of {} events",
        received.len(),
        sent.len()
    );
    assert_at_least_once(&sent, &ids(&received));
    assert!(rounds >= 2, "the consumers were never restarted");
}

/// 6. 10 consumers started and shut down concurrently; then 50 events all reach a new
///    consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s06_concurrent_start_and_shutdown_then_a_new_consumer() {
    init_tracing();
    let redis = shared().await.unwrap();
    let uri = unique_name("s06");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let starts = (0..10).map(|i| {
        let name = format!("c-{i}");
        consumer(redis.url(), &uri, "g", &name).subscribe_ticks_consumer(recorder(&name, &tx))
    });
    let lifetimes: Vec<ConsumerLifetime> = futures::future::join_all(starts)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    stop_all("s06 first ten", lifetimes).await;

    let sent = send(&producer(redis.url(), &uri).await, 0..50).await;
    let (tx, mut rx_new) = mpsc::unbounded_channel();
    let fresh = consumer(redis.url(), &uri, "g", "new")
        .subscribe_ticks_consumer(recorder("new", &tx))
        .await
        .unwrap();
    let seen = gather(&mut rx_new, &sent, WAIT, SETTLE).await;
    assert_exactly_once(&sent, &ids(&seen));
    let early: Vec<Seen> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert!(early.is_empty(), "the first ten handled {early:?}");
    stop("s06 new", fresh).await;
}

/// 7. Consumers that fail every delivery and then shut down; a healthy consumer (another name)
///    later handles all events, claiming what the failing ones left pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s07_failing_consumers_leave_everything_to_a_healthy_one() {
    init_tracing();
    let redis = shared().await.unwrap();
    let uri = unique_name("s07");
    let sent = send(&producer(redis.url(), &uri).await, 0..40).await;
    // Enough deliveries that nothing is dead-lettered while the failing consumers run.
    let patient = RetryPolicy {
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        max_deliveries: 10_000,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel();
    let mut failing = Vec::new();
    for i in 0..2 {
        let name = format!("failing-{i}");
        let handler = TickRecorder {
            label: name.clone(),
            tx: tx.clone(),
            fail: |_| true,
            failures: Some(fail_tx.clone()),
        };
        failing.push(
            consumer(redis.url(), &uri, "g", &name)
                .batch_size(10)
                .retry(patient)
                .claim_min_idle(CLAIM)
                .subscribe_ticks_consumer(handler)
                .await
                .unwrap(),
        );
    }
    let failed = gather(&mut fail_rx, &sent, WAIT, Duration::ZERO).await;
    assert_at_least_once(&sent, &ids(&failed));
    stop_all("s07 failing", failing).await;
    assert!(
        rx.try_recv().is_err(),
        "a failing consumer recorded a success"
    );
    let left = pending(redis.url(), &uri, "g").await;
    assert_eq!(
        left.len(),
        sent.len(),
        "pending after the failing consumers: {left:?}"
    );

    let (tx, mut rx) = mpsc::unbounded_channel();
    let healthy = consumer(redis.url(), &uri, "g", "healthy")
        .retry(patient)
        .claim_min_idle(CLAIM)
        .subscribe_ticks_consumer(recorder("healthy", &tx))
        .await
        .unwrap();
    let seen = gather(&mut rx, &sent, WAIT, SETTLE).await;
    assert_exactly_once(&sent, &ids(&seen));
    let left = await_nothing_pending(redis.url(), &uri, "g", Duration::from_secs(5)).await;
    assert!(left.is_empty(), "still pending: {left:?}");
    stop("s07 healthy", healthy).await;
}

/// 8. Within one stream and one consumer, order is kept, also while events arrive during
///    consumption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s08_one_consumer_keeps_the_order() {
    init_tracing();
    let redis = shared().await.unwrap();
    let uri = unique_name("s08");
    let p = producer(redis.url(), &uri).await;
    let mut sent = send(&p, 0..100).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = consumer(redis.url(), &uri, "g", "c")
        .batch_size(7)
        .subscribe_ticks_consumer(recorder("c", &tx))
        .await
        .unwrap();
    sent.extend(send(&p, 100..300).await);
    let seen = gather(&mut rx, &sent, WAIT, SETTLE).await;
    assert_exactly_once(&sent, &ids(&seen));
    assert_eq!(ids(&seen), sent, "delivery order differs from send order");
    stop("s08", lifetime).await;
}

/// 9. 10,000 events from 20 concurrent producers, all received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s09_ten_thousand_events_from_twenty_producers() {
    init_tracing();
    let redis = shared().await.unwrap();
    let uri = unique_name("s09");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut lifetimes = Vec::new();
    for i in 0..4 {
        let name = format!("c-{i}");
        lifetimes.push(
            consumer(redis.url(), &uri, "g", &name)
                .subscribe_ticks_consumer(recorder(&name, &tx))
                .await
                .unwrap(),
        );
    }
    let mut tasks = Vec::new();
    for t in 0..20u64 {
        let p = producer(redis.url(), &uri).await;
        tasks.push(tokio::spawn(async move {
            send(&p, t * 500..t * 500 + 500).await
        }));
    }
    let mut sent = Vec::new();
    for task in tasks {
        sent.extend(task.await.unwrap());
    }
    let seen = gather(&mut rx, &sent, Duration::from_secs(60), SETTLE).await;
    assert_exactly_once(&sent, &ids(&seen));
    stop_all("s09", lifetimes).await;
}

/// 10. Streams are isolated: a consumer of one never sees another's events, also for one uri
///     in different environments and for the same group name everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10_streams_are_isolated() {
    init_tracing();
    let redis = shared().await.unwrap();
    let uri = unique_name("s10");
    let other_uri = unique_name("s10-other");
    let addresses: [(Option<&str>, &str); 4] = [
        (None, uri.as_str()),
        (Some("blue"), uri.as_str()),
        (Some("green"), uri.as_str()),
        (None, other_uri.as_str()),
    ];
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for (env, uri) in addresses {
        let mut pb = RedisProducerBuilder::new().url(redis.url()).uri(uri);
        let mut cb = consumer(redis.url(), uri, "g", "c");
        if let Some(env) = env {
            pb = pb.environment(env);
            cb = cb.environment(env);
        }
        producers.push(pb.build_ticks_producer().await.unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        let lifetime = cb
            .subscribe_ticks_consumer(recorder("c", &tx))
            .await
            .unwrap();
        consumers.push((lifetime, rx));
    }
    let mut sent = vec![Vec::new(); addresses.len()];
    for round in 0..25u64 {
        for (i, p) in producers.iter().enumerate() {
            sent[i].push(p.tick(round).await.unwrap());
        }
    }
    for (i, (lifetime, mut rx)) in consumers.into_iter().enumerate() {
        let (env, uri) = addresses[i];
        let seen = gather(&mut rx, &sent[i], WAIT, SETTLE).await;
        assert_exactly_once(&sent[i], &ids(&seen));
        let foreign: Vec<_> = seen
            .iter()
            .filter(|s| s.meta.uri != uri || s.meta.environment.as_deref() != env)
            .collect();
        assert!(foreign.is_empty(), "{env:?}/{uri} received {foreign:?}");
        stop(&format!("s10 {env:?}/{uri}"), lifetime).await;
    }
}

/// 11. Cancelling a consumer right after start: its lifetime completes promptly (well before
///     its 5 s BLOCK ends); a new consumer still gets all, events sent before and after. What a
///     cancelled consumer handled before it stopped counts, but nothing may arrive twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s11_cancel_right_after_start() {
    init_tracing();
    let redis = shared().await.unwrap();
    let uri = unique_name("s11");
    let p = producer(redis.url(), &uri).await;
    let mut sent = send(&p, 0..30).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..3 {
        let name = format!("cancelled-{i}");
        let lifetime = consumer(redis.url(), &uri, "g", &name)
            .block(Duration::from_secs(5))
            .claim_min_idle(CLAIM)
            .subscribe_ticks_consumer(recorder(&name, &tx))
            .await
            .unwrap();
        let started = Instant::now();
        match tokio::time::timeout(Duration::from_secs(2), lifetime.shutdown()).await {
            Ok(result) => result.unwrap(),
            Err(_) => panic!("{name}: shutdown right after start took more than 2 s"),
        }
        eprintln!("s11: {name} shut down in {:?}", started.elapsed());
    }
    // Dropping the lifetime cancels too.
    drop(
        consumer(redis.url(), &uri, "g", "dropped")
            .claim_min_idle(CLAIM)
            .subscribe_ticks_consumer(recorder("dropped", &tx))
            .await
            .unwrap(),
    );
    sent.extend(send(&p, 30..60).await);

    let fresh = consumer(redis.url(), &uri, "g", "new")
        .claim_min_idle(CLAIM)
        .subscribe_ticks_consumer(recorder("new", &tx))
        .await
        .unwrap();
    let seen = gather(&mut rx, &sent, WAIT, SETTLE).await;
    let early = seen.iter().filter(|s| s.consumer != "new").count();
    eprintln!("s11: the cancelled consumers handled {early} events before stopping");
    assert_exactly_once(&sent, &ids(&seen));
    stop("s11 new", fresh).await;
}

/// 12. A consumer added later receives the events published before it joined its (new) group,
///     and those that follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s12_a_new_group_receives_earlier_events() {
    init_tracing();
    let redis = shared().await.unwrap();
    let uri = unique_name("s12");
    let p = producer(redis.url(), &uri).await;
    let (tx_a, mut rx_a) = mpsc::unbounded_channel();
    let first = consumer(redis.url(), &uri, "first", "a")
        .subscribe_ticks_consumer(recorder("a", &tx_a))
        .await
        .unwrap();
    let mut sent = send(&p, 0..40).await;
    let seen_a = gather(&mut rx_a, &sent, WAIT, Duration::ZERO).await;
    assert_exactly_once(&sent, &ids(&seen_a));

    let (tx_b, mut rx_b) = mpsc::unbounded_channel();
    let late = consumer(redis.url(), &uri, "late", "b")
        .subscribe_ticks_consumer(recorder("b", &tx_b))
        .await
        .unwrap();
    let later = send(&p, 40..50).await;
    sent.extend(&later);
    let seen_b = gather(&mut rx_b, &sent, WAIT, SETTLE).await;
    assert_exactly_once(&sent, &ids(&seen_b));
    let seen_a = gather(&mut rx_a, &later, WAIT, SETTLE).await;
    assert_exactly_once(&later, &ids(&seen_a));
    stop("s12 first", first).await;
    stop("s12 late", late).await;
}

/// 13. Redis (AOF on) restarted twice while 10,000 events flow from 5 producers to 3
///     consumers: every event whose send returned `Ok` is handled; a send that returned `Err`
///     may or may not be; nothing else arrives and no event is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s13_redis_restarted_twice_while_events_flow() {
    init_tracing();
    let server = tokio::task::spawn_blocking(|| {
        RedisServer::spawn(ServerOptions {
            appendonly: true,
            ..Default::default()
        })
    })
    .await
    .unwrap()
    .expect("spawn a redis-server with AOF");
    let url = server.url().to_owned();
    let uri = unique_name("s13");

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut lifetimes = Vec::new();
    for i in 0..3 {
        let name = format!("c-{i}");
        lifetimes.push(
            consumer(&url, &uri, "g", &name)
                .batch_size(50)
                .claim_min_idle(Duration::from_secs(1))
                .subscribe_ticks_consumer(recorder(&name, &tx))
                .await
                .unwrap(),
        );
    }

    const PRODUCERS: u64 = 5;
    const PER_PRODUCER: u64 = 2_000;
    let attempted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..PRODUCERS {
        let p = producer(&url, &uri).await;
        let attempted = attempted.clone();
        tasks.push(tokio::spawn(async move {
            // Paced (at most ~2,500 events/s in all) so that both restarts happen mid-flow.
            let mut pace = tokio::time::interval(Duration::from_millis(2));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut ok, mut failed) = (Vec::new(), Vec::new());
            for n in t * PER_PRODUCER..(t + 1) * PER_PRODUCER {
                pace.tick().await;
                match tokio::time::timeout(Duration::from_secs(30), p.tick(n)).await {
                    Ok(Ok(id)) => ok.push((n, id)),
                    Ok(Err(e)) => failed.push((n, e.to_string())),
                    Err(_) => failed.push((n, "send hung for 30 s".to_owned())),
                }
                attempted.fetch_add(1, Ordering::Relaxed);
            }
            (ok, failed)
        }));
    }

    let total = (PRODUCERS * PER_PRODUCER) as usize;
    let mut server = Some(server);
    for (restart, at) in [(1, total / 5), (2, total * 3 / 5)] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while attempted.load(Ordering::Relaxed) < at {
            assert!(
                Instant::now() < deadline,
                "the producers stalled before restart {restart}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut s = server.take().unwrap();
        let began = std::time::Instant::now();
        s = tokio::task::spawn_blocking(move || {
            s.stop().expect("stop redis-server");
            std::thread::sleep(Duration::from_millis(300));
            s.start().expect("start redis-server again");
            s
        })
        .await
        .unwrap();
        server = Some(s);
        eprintln!(
            "s13: restart {restart} after {at} sends took {:?}; {} sends attempted by then",
            began.elapsed(),
            attempted.load(Ordering::Relaxed)
        );
    }

    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for task in tasks {
        let (o, f) = task.await.unwrap();
        ok.extend(o);
        failed.extend(f);
    }
    eprintln!(
        "s13: {} sends returned Ok, {} returned Err: {failed:?}",
        ok.len(),
        failed.len()
    );
    let sent: Vec<MessageId> = ok.iter().map(|(_, id)| *id).collect();
    let mut seen = gather(
        &mut rx,
        &sent,
        Duration::from_secs(90),
        Duration::from_secs(1),
    )
    .await;
    drain(&mut rx, &mut seen);

    // Every Ok send handled; beyond those only events whose send returned Err.
    let failed_ns: HashSet<u64> = failed.iter().map(|(n, _)| *n).collect();
    let ok_ids: HashSet<MessageId> = sent.iter().copied().collect();
    let received: Vec<MessageId> = seen
        .iter()
        .filter(|s| ok_ids.contains(&s.meta.message_id) || !failed_ns.contains(&s.n))
        .map(|s| s.meta.message_id)
        .collect();
    let failed_but_delivered: HashSet<u64> = seen
        .iter()
        .filter(|s| !ok_ids.contains(&s.meta.message_id) && failed_ns.contains(&s.n))
        .map(|s| s.n)
        .collect();
    eprintln!(
        "s13: {} deliveries of {} distinct events; {} of the failed sends were delivered anyway",
        seen.len(),
        seen.iter()
            .map(|s| s.meta.message_id)
            .collect::<HashSet<_>>()
            .len(),
        failed_but_delivered.len()
    );
    assert_at_least_once(&sent, &received);

    // No event written twice: one stream entry per message id, one message id per send.
    let mut entries: HashMap<MessageId, HashSet<&str>> = HashMap::new();
    let mut per_n: HashMap<u64, HashSet<MessageId>> = HashMap::new();
    for s in &seen {
        entries
            .entry(s.meta.message_id)
            .or_default()
            .insert(&s.meta.stream_id);
        per_n.entry(s.n).or_default().insert(s.meta.message_id);
    }
    let twice: Vec<_> = entries.iter().filter(|(_, e)| e.len() > 1).collect();
    assert!(twice.is_empty(), "events written more than once: {twice:?}");
    let twice: Vec<_> = per_n.iter().filter(|(_, e)| e.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "ticks delivered under several ids: {twice:?}"
    );

    for (i, lifetime) in lifetimes.iter().enumerate() {
        assert!(
            !lifetime.is_finished(),
            "consumer c-{i} ended during the restarts"
        );
    }
    stop_all("s13", lifetimes).await;
    drop(server);
}

/// 14. Two groups on one stream each receive every event, with two consumers each and events
///     sent while they run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s14_two_groups_each_receive_everything() {
    init_tracing();
    let redis = shared().await.unwrap();
    let uri = unique_name("s14");
    let mut groups = Vec::new();
    for group in ["audit", "billing"] {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut lifetimes = Vec::new();
        for i in 0..2 {
            let name = format!("{group}-{i}");
            lifetimes.push(
                consumer(redis.url(), &uri, group, &name)
                    .batch_size(10)
                    .subscribe_ticks_consumer(recorder(&name, &tx))
                    .await
                    .unwrap(),
            );
        }
        groups.push((group, lifetimes, rx));
    }
    let sent = send(&producer(redis.url(), &uri).await, 0..200).await;
    for (group, lifetimes, mut rx) in groups {
        let seen = gather(&mut rx, &sent, WAIT, SETTLE).await;
        assert_exactly_once(&sent, &ids(&seen));
        stop_all(group, lifetimes).await;
    }
}

const S15_URL: &str = "S15_CHILD_URL";
const S15_URI: &str = "S15_CHILD_URI";
/// Lines the child prints start with this.
const S15_MARK: &str = "S15CHILD";
/// The child handles this many events, then hangs in the next one.
const S15_HANDLED: u64 = 5;

/// Kills the child process (SIGKILL) on drop, whatever happens to the test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// 15. A consumer killed mid-batch (process killed, not shut down): another consumer of the
///     group claims its pending events after the idle time; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s15_a_killed_consumer_s_batch_is_claimed() {
    init_tracing();
    let redis = shared().await.unwrap();
    let uri = unique_name("s15");
    let sent = send(&producer(redis.url(), &uri).await, 0..20).await;

    let exe = std::env::current_exe().unwrap();
    let mut child = KillOnDrop(
        Command::new(exe)
            .args(["--exact", "s15_child_consumer", "--nocapture", "--ignored"])
            .env(S15_URL, redis.url())
            .env(S15_URI, &uri)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("re-run this test binary as the child consumer"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (line_tx, mut line_rx) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });

    // Wait until the child hangs in its handler, in the middle of its batch.
    let mut child_handled = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let hanging: MessageId = loop {
        let line = match tokio::time::timeout_at(deadline, line_rx.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("the child ended before it started handling"),
            Err(_) => panic!("the child did not start handling within 60 s"),
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [S15_MARK, "handled", id] => child_handled.push(id.parse::<MessageId>().unwrap()),
            [S15_MARK, "hanging", id] => break id.parse().unwrap(),
            _ => {}
        }
    };
    child.0.kill().expect("SIGKILL the child");
    let status = child.0.wait().unwrap();
    let killed_at = Instant::now();
    eprintln!("s15: child killed ({status}) after handling {child_handled:?}");
    assert_eq!(child_handled.len() as u64, S15_HANDLED, "{child_handled:?}");

    let held = pending(redis.url(), &uri, "g").await;
    let by_child = held.iter().filter(|(_, c, _, _)| c == "doomed").count();
    assert!(
        by_child as u64 >= 20 - S15_HANDLED,
        "the killed child should hold the rest of its batch pending: {held:?}"
    );

    let (tx, mut rx) = mpsc::unbounded_channel();
    let rescuer = consumer(redis.url(), &uri, "g", "rescuer")
        .claim_min_idle(Duration::from_secs(1))
        .subscribe_ticks_consumer(recorder("rescuer", &tx))
        .await
        .unwrap();
    let unfinished: Vec<MessageId> = sent
        .iter()
        .filter(|id| !child_handled.contains(id))
        .copied()
        .collect();
    assert!(unfinished.contains(&hanging));
    let seen = gather(&mut rx, &unfinished, WAIT, SETTLE).await;
    let took = killed_at.elapsed();
    eprintln!("s15: the rescuer had every unfinished event {took:?} after the kill");
    let mut received = child_handled.clone();
    received.extend(ids(&seen));
    assert_at_least_once(&sent, &received);
    // claim_min_idle 1 s: claimed within about twice that.
    assert!(
        took <= Duration::from_secs(4),
        "claiming took {took:?} with claim_min_idle 1 s"
    );
    let left = await_nothing_pending(redis.url(), &uri, "g", Duration::from_secs(5)).await;
    assert!(left.is_empty(), "still pending: {left:?}");
    stop("s15 rescuer", rescuer).await;
}

/// The child consumer of s15: handles a few events, then hangs in a handler until killed.
struct HangingHandler;

#[async_trait]
impl TicksConsumer for HangingHandler {
    async fn tick(&self, ctx: &ConsumerContext, n: u64) -> HandlerResult {
        let id = ctx.metadata().message_id;
        let what = if n < S15_HANDLED {
            "handled"
        } else {
            "hanging"
        };
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{S15_MARK} {what} {id}")?;
            out.flush()?;
        }
        if n < S15_HANDLED {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(120)).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of s15; does nothing unless s15 runs it"]
async fn s15_child_consumer() {
    let (Ok(url), Ok(uri)) = (std::env::var(S15_URL), std::env::var(S15_URI)) else {
        return;
    };
    let parent = std::os::unix::process::parent_id();
    let lifetime = consumer(&url, &uri, "g", "doomed")
        .batch_size(50)
        .claim_min_idle(Duration::from_secs(1))
        .subscribe_ticks_consumer(HangingHandler)
        .await
        .unwrap();
    // Until killed; end on our own if the parent test is gone or after 2 minutes.
    for _ in 0..1200 {
        if std::os::unix::process::parent_id() != parent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(lifetime);
    std::process::exit(1);
}

/// Fails every delivery: tick 2 fatally, the others with a retryable error.
struct Poison(UnboundedSender<(MessageId, u64, u32)>);

#[async_trait]
impl TicksConsumer for Poison {
    async fn tick(&self, ctx: &ConsumerContext, n: u64) -> HandlerResult {
        let m = ctx.metadata();
        self.0.send((m.message_id, n, m.delivery_count))?;
        if n == 2 {
            return Err(HandlerError::fatal(format!("tick {n} is poison")));
        }
        Err(format!("tick {n} fails on purpose").into())
    }
}

/// 16. An event that always fails reaches the dead-letter stream after the configured
///     deliveries (a fatal failure after one), with the reason, atomically with its XACK; it
///     can be listed and replayed into the stream, where a healthy consumer handles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s16_dead_letters_listed_and_replayed() {
    init_tracing();
    let redis = shared().await.unwrap();
    let uri = unique_name("s16");
    let sent = send(&producer(redis.url(), &uri).await, 0..3).await;
    let policy = RetryPolicy {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_deliveries: 3,
    };
    let (tx, mut attempts_rx) = mpsc::unbounded_channel();
    let failing = consumer(redis.url(), &uri, "g", "failing")
        .retry(policy)
        .subscribe_ticks_consumer(Poison(tx))
        .await
        .unwrap();

    let dead = DeadLetters::connect(redis.url(), None, &uri, "g")
        .await
        .unwrap();
    assert_eq!(dead.key(), dead_key(&uri, "g"));
    let deadline = Instant::now() + WAIT;
    while dead.len().await.unwrap() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(SETTLE).await;
    stop("s16 failing", failing).await;
    let mut attempts: HashMap<MessageId, Vec<u32>> = HashMap::new();
    while let Ok((id, _, count)) = attempts_rx.try_recv() {
        attempts.entry(id).or_default().push(count);
    }

    // Listed, with the reason and the deliveries; acked in the group.
    let listed = dead.list(None, 100).await.unwrap();
    assert_eq!(
        listed.len(),
        3,
        "dead letters: {listed:?}; attempts: {attempts:?}"
    );
    let listed_ids: Vec<MessageId> = listed.iter().filter_map(|l| l.message_id).collect();
    assert_exactly_once(&sent, &listed_ids);
    for (n, id) in sent.iter().enumerate() {
        let want: Vec<u32> = if n == 2 { vec![1] } else { vec![1, 2, 3] };
        assert_eq!(
            attempts.get(id),
            Some(&want),
            "delivery counts of tick {n} ({id})"
        );
        let letter = listed.iter().find(|l| l.message_id == Some(*id)).unwrap();
        let (reason, deliveries) = if n == 2 {
            ("tick 2 is poison".to_owned(), 1)
        } else {
            (format!("tick {n} fails on purpose"), 3)
        };
        assert!(
            letter.reason.contains(&reason),
            "the reason of tick {n} should contain {reason:?}: {letter:?}"
        );
        assert_eq!(letter.deliveries, deliveries, "tick {n}: {letter:?}");
        assert_eq!(letter.operation.as_deref(), Some("tick"), "{letter:?}");
        assert_eq!(letter.group, "g", "{letter:?}");
        assert_eq!(letter.consumer, "failing", "{letter:?}");
        assert!(letter.can_replay(), "{letter:?}");
    }
    let raw_letters = stream_entries(redis.url(), &dead_key(&uri, "g")).await;
    for (_, fields) in &raw_letters {
        for field in ["dead.reason", "dead.deliveries", "message_id", "payload"] {
            assert!(fields.contains_key(field), "no {field} in {fields:?}");
        }
    }
    let left = pending(redis.url(), &uri, "g").await;
    assert!(left.is_empty(), "dead letters must be acked: {left:?}");

    // Nothing is delivered until replayed; then a healthy consumer handles each once.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let healthy = consumer(redis.url(), &uri, "g", "healthy")
        .retry(policy)
        .subscribe_ticks_consumer(recorder("healthy", &tx))
        .await
        .unwrap();
    assert_quiet(&mut rx, Duration::from_millis(300)).await;
    let one = dead.replay(&listed[0].id).await.unwrap();
    assert!(!one.is_empty());
    assert_eq!(dead.replay_all().await.unwrap(), 2);
    assert_eq!(
        dead.len().await.unwrap(),
        0,
        "replayed dead letters are removed"
    );
    let seen = gather(&mut rx, &sent, WAIT, SETTLE).await;
    assert_exactly_once(&sent, &ids(&seen));
    let by_id: HashMap<MessageId, u64> = seen.iter().map(|s| (s.meta.message_id, s.n)).collect();
    for (n, id) in sent.iter().enumerate() {
        assert_eq!(
            by_id.get(id),
            Some(&(n as u64)),
            "payload of the replayed {id}"
        );
    }
    let replayed = seen
        .iter()
        .find(|s| s.meta.message_id == listed[0].message_id.unwrap());
    assert_eq!(
        replayed.map(|s| s.meta.stream_id.as_str()),
        Some(one.as_str())
    );
    let left = await_nothing_pending(redis.url(), &uri, "g", Duration::from_secs(5)).await;
    assert!(left.is_empty(), "still pending: {left:?}");
    stop("s16 healthy", healthy).await;
}
