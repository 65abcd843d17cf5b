//! The consumer's scheduling over real Redis: concurrency with ordering keys, retries that do
//! not hold up other events, fatal failures, panicking handlers, the shutdown grace period and
//! the removal of idle consumers.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone_core::{async_trait, ConsumerContext, HandlerError, HandlerResult, RetryPolicy};
use backbone_redis::testing::{shared, unique_name};
use backbone_redis::{DeadLetters, RedisConsumerBuilder, RedisProducerBuilder};
use common::*;
use redis::AsyncCommands;
use tokio::sync::mpsc;

fn consumer(url: &str, uri: &str) -> RedisConsumerBuilder {
    RedisConsumerBuilder::new()
        .url(url)
        .uri(uri)
        .name("c-1")
        .block(Duration::from_millis(100))
        .retry(RetryPolicy {
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            max_deliveries: 3,
        })
}

/// Tracks, per ordering key, how many handlers run at once and the order of ticks.
#[derive(Default)]
struct KeyWatch {
    running: Mutex<HashMap<String, usize>>,
    order: Mutex<HashMap<String, Vec<u64>>>,
    overlaps: AtomicUsize,
    now: AtomicUsize,
    peak: AtomicUsize,
}

struct Watcher(Arc<KeyWatch>, mpsc::UnboundedSender<u64>);

#[async_trait]
impl TicksConsumer for Watcher {
    async fn tick(&self, ctx: &ConsumerContext, n: u64) -> HandlerResult {
        let key = ctx.metadata().key.clone().unwrap_or_default();
        let w = &self.0;
        {
            let mut running = w.running.lock().unwrap();
            let count = running.entry(key.clone()).or_default();
            *count += 1;
            if *count > 1 && !key.is_empty() {
                w.overlaps.fetch_add(1, Ordering::SeqCst);
            }
        }
        let now = w.now.fetch_add(1, Ordering::SeqCst) + 1;
        w.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(3)).await;
        w.now.fetch_sub(1, Ordering::SeqCst);
        *w.running.lock().unwrap().get_mut(&key).unwrap() -= 1;
        w.order.lock().unwrap().entry(key).or_default().push(n);
        self.1.send(n)?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_events_never_overlap_and_keep_their_order() {
    let redis = shared().await.unwrap();
    let uri = unique_name("keys");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_ticks_producer()
        .await
        .unwrap();
    let keyed: Vec<TicksProducer> = (0..4).map(|k| producer.with_key(format!("k{k}"))).collect();
    for n in 0..200u64 {
        if n % 5 == 4 {
            producer.tick(n).await.unwrap(); // no key
        } else {
            keyed[(n % 4) as usize].tick(n).await.unwrap();
        }
    }
    let watch = Arc::new(KeyWatch::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = consumer(redis.url(), &uri)
        .concurrency(8)
        .batch_size(50)
        .subscribe_ticks_consumer(Watcher(watch.clone(), tx))
        .await
        .unwrap();
    let mut got = collect(&mut rx, 200, WAIT).await;
    lifetime.shutdown().await.unwrap();
    got.sort();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
    assert_eq!(
        watch.overlaps.load(Ordering::SeqCst),
        0,
        "two events of one key ran at once"
    );
    for (key, order) in watch
        .order
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.is_empty())
    {
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "key {key} out of order: {order:?}"
        );
    }
    assert!(
        watch.peak.load(Ordering::SeqCst) > 1,
        "concurrency(8) never ran two handlers at once"
    );
}

#[tokio::test]
async fn a_failing_event_waits_for_its_retry_while_others_flow() {
    let redis = shared().await.unwrap();
    let uri = unique_name("retry-flow");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_ticks_producer()
        .await
        .unwrap();
    let sent = send(&producer, 0..20).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel();
    // Tick 0 fails on its first two deliveries (TickRecorder::fail cannot count, so count here).
    let attempts = Arc::new(AtomicUsize::new(0));
    struct FlakyFirst(TickRecorder, Arc<AtomicUsize>);
    #[async_trait]
    impl TicksConsumer for FlakyFirst {
        async fn tick(&self, ctx: &ConsumerContext, n: u64) -> HandlerResult {
            if n == 0 && self.1.fetch_add(1, Ordering::SeqCst) < 2 {
                self.0.failures.as_ref().unwrap().send(Seen {
                    consumer: "c".into(),
                    n,
                    meta: ctx.metadata().clone(),
                })?;
                return Err("not yet".into());
            }
            self.0.tick(ctx, n).await
        }
    }
    let recorder = TickRecorder {
        failures: Some(fail_tx),
        ..TickRecorder::new("c", tx)
    };
    let lifetime = consumer(redis.url(), &uri)
        .retry(RetryPolicy {
            base_delay: Duration::from_millis(300),
            max_delay: Duration::from_millis(300),
            max_deliveries: 5,
        })
        .subscribe_ticks_consumer(FlakyFirst(recorder, attempts.clone()))
        .await
        .unwrap();
    let seen = collect(&mut rx, 20, WAIT).await;
    lifetime.shutdown().await.unwrap();
    assert_exactly_once(&sent, &ids(&seen));
    assert_eq!(
        seen.last().unwrap().n,
        0,
        "tick 0 came last, after its retries; the others did not wait"
    );
    assert_eq!(seen.last().unwrap().meta.delivery_count, 3);
    let failures = collect(&mut fail_rx, 2, WAIT).await;
    assert_eq!(
        failures
            .iter()
            .map(|s| s.meta.delivery_count)
            .collect::<Vec<_>>(),
        [1, 2]
    );
}

struct Failing {
    fatal: bool,
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl TicksConsumer for Failing {
    async fn tick(&self, _ctx: &ConsumerContext, n: u64) -> HandlerResult {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if n == 1 {
            panic!("tick {n} is cursed");
        }
        if self.fatal {
            return Err(HandlerError::fatal(format!("tick {n} can never work")));
        }
        Err(format!("tick {n} failed").into())
    }
}

#[tokio::test]
async fn fatal_failures_skip_retries_and_panics_are_retried_then_dead_lettered() {
    let redis = shared().await.unwrap();
    let uri = unique_name("fatal");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_ticks_producer()
        .await
        .unwrap();
    send(&producer, 0..2).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let lifetime = consumer(redis.url(), &uri)
        .subscribe_ticks_consumer(Failing {
            fatal: true,
            calls: calls.clone(),
        })
        .await
        .unwrap();
    let dead = DeadLetters::connect(redis.url(), None, &uri, "default")
        .await
        .unwrap();
    wait_dead_letters(&dead, 2).await;
    assert!(
        !lifetime.is_finished(),
        "a panicking handler does not stop the consumer"
    );
    lifetime.shutdown().await.unwrap();
    let letters = dead.list(None, 10).await.unwrap();
    let by_tick = |id: usize| &letters[id];
    assert_eq!(by_tick(0).deliveries, 1, "fatal: no retry");
    assert!(
        by_tick(0).reason.contains("(fatal): tick 0 can never work"),
        "{}",
        by_tick(0).reason
    );
    assert_eq!(
        by_tick(1).deliveries,
        3,
        "a panic is retried up to max_deliveries"
    );
    assert!(
        by_tick(1)
            .reason
            .contains("the handler panicked: tick 1 is cursed"),
        "{}",
        by_tick(1).reason
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

/// Takes `delay` per tick and reports when it starts.
struct Slow(
    Duration,
    mpsc::UnboundedSender<u64>,
    mpsc::UnboundedSender<u64>,
);

#[async_trait]
impl TicksConsumer for Slow {
    async fn tick(&self, _ctx: &ConsumerContext, n: u64) -> HandlerResult {
        self.1.send(n)?;
        tokio::time::sleep(self.0).await;
        self.2.send(n)?;
        Ok(())
    }
}

#[tokio::test]
async fn shutdown_lets_handlers_in_flight_finish_and_acks_them() {
    let redis = shared().await.unwrap();
    let uri = unique_name("grace");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_ticks_producer()
        .await
        .unwrap();
    send(&producer, 0..10).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let lifetime = consumer(redis.url(), &uri)
        .concurrency(2)
        .shutdown_grace(Duration::from_secs(5))
        .subscribe_ticks_consumer(Slow(Duration::from_millis(500), started_tx, done_tx))
        .await
        .unwrap();
    collect(&mut started, 2, WAIT).await;
    lifetime.shutdown().await.unwrap();
    let finished = collect(&mut done, 2, Duration::from_millis(10)).await;
    assert_eq!(
        finished.len(),
        2,
        "both handlers in flight finished before shutdown returned"
    );
    let mut raw = raw(redis.url()).await;
    let pending: redis::streams::StreamPendingReply = raw
        .xpending(format!("bb:{{{uri}}}:events"), "default")
        .await
        .unwrap();
    // Ten were read, two handled and acknowledged, the rest stay pending for a restart or a claim.
    assert_eq!(pending.count(), 8);

    // With a grace period shorter than the handler, shutdown returns and the event stays pending.
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (done_tx, _done) = mpsc::unbounded_channel();
    let lifetime = consumer(redis.url(), &uri)
        .shutdown_grace(Duration::from_millis(50))
        .subscribe_ticks_consumer(Slow(Duration::from_secs(30), started_tx, done_tx))
        .await
        .unwrap();
    collect(&mut started, 1, WAIT).await;
    tokio::time::timeout(Duration::from_secs(5), lifetime.shutdown())
        .await
        .expect("grace is honoured")
        .unwrap();
    let pending: redis::streams::StreamPendingReply = raw
        .xpending(format!("bb:{{{uri}}}:events"), "default")
        .await
        .unwrap();
    assert_eq!(pending.count(), 8);
}

#[tokio::test]
async fn idle_consumers_with_nothing_pending_are_removed() {
    let redis = shared().await.unwrap();
    let uri = unique_name("idle-consumers");
    let stream = format!("bb:{{{uri}}}:events");
    let mut raw = raw(redis.url()).await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("default")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&stream)
        .arg("default")
        .arg("ghost")
        .query_async(&mut raw)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let lifetime = consumer(redis.url(), &uri)
        .claim_min_idle(Duration::from_millis(100))
        .remove_idle_consumers(Duration::from_millis(200))
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let consumers: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&stream)
            .arg("default")
            .query_async(&mut raw)
            .await
            .unwrap();
        let names = format!("{consumers:?}");
        if !names.contains("ghost") {
            assert!(names.contains("c-1"), "the live consumer stays: {names}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ghost was not removed: {names}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lifetime.shutdown().await.unwrap();
}
