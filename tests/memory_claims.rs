//! Claiming and the shutdown grace on the in-memory channel, as on Redis: a stopped consumer's
//! pending events are claimed by another consumer of the group once idle for `claim_min_idle`
//! since their last delivery, counting a delivery; a live consumer's are not taken while its
//! handler runs within that time; on shutdown a consumer stops reading, lets its handlers in
//! flight finish within `shutdown_grace`, and leaves what did not finish pending. Every test runs
//! under a paused clock: the idle times and the grace take no real time.

mod common;

use std::time::Duration;

use backbone_core::memory::InMemoryBroker;
use backbone_core::{async_trait, ConsumerContext, ConsumerLifetime, HandlerResult, RetryPolicy};
use common::*;
use tokio::sync::mpsc;
use tokio::time::Instant;

const IDLE: Duration = Duration::from_secs(30);

/// Retries every second, and never gives up while a test runs.
const PATIENT: RetryPolicy = RetryPolicy {
    base_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(1),
    max_deliveries: 1_000,
};

/// One delivery: who, which tick, the delivery count, when it started and whether the handler
/// finished it.
#[derive(Debug, Clone)]
struct Delivery {
    consumer: &'static str,
    n: u64,
    count: u32,
    at: Instant,
    finished: bool,
}

/// Reports each delivery when it starts, then takes `takes` and fails or succeeds; reports
/// again when it finished.
struct Worker {
    name: &'static str,
    takes: Duration,
    fails: bool,
    tx: mpsc::UnboundedSender<Delivery>,
}

#[async_trait]
impl TicksConsumer for Worker {
    async fn tick(&self, ctx: &ConsumerContext, n: u64) -> HandlerResult {
        let mut delivery = Delivery {
            consumer: self.name,
            n,
            count: ctx.metadata().delivery_count,
            at: Instant::now(),
            finished: false,
        };
        self.tx.send(delivery.clone())?;
        tokio::time::sleep(self.takes).await;
        if self.fails {
            return Err(format!("tick {n} fails on purpose").into());
        }
        delivery.finished = true;
        self.tx.send(delivery)?;
        Ok(())
    }
}

fn worker(
    name: &'static str,
    takes: Duration,
    fails: bool,
) -> (Worker, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = Worker {
        name,
        takes,
        fails,
        tx,
    };
    (worker, rx)
}

/// `worker` in group `g` of `uri`, handling up to `concurrency` events at once.
async fn subscribe(
    broker: &InMemoryBroker,
    uri: &str,
    worker: Worker,
    concurrency: usize,
) -> ConsumerLifetime {
    broker
        .consumer_builder()
        .concurrency(concurrency)
        .uri(uri)
        .group("g")
        .name(worker.name)
        .retry(PATIENT)
        .claim_min_idle(IDLE)
        .shutdown_grace(Duration::from_secs(5))
        .subscribe_ticks_consumer(worker)
        .await
        .unwrap()
}

async fn producer(broker: &InMemoryBroker, uri: &str) -> TicksProducer {
    let builder = broker.producer_builder().uri(uri);
    builder.build_ticks_producer().await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_stopped_consumers_events_are_claimed_once_idle_for_claim_min_idle() {
    let broker = InMemoryBroker::new();
    let producer = producer(&broker, "claims").await;
    for n in 0..5 {
        producer.tick(n).await.unwrap();
    }
    let (failing, mut failed) = worker("failing", Duration::ZERO, true);
    let failing = subscribe(&broker, "claims", failing, 1).await;

    // The failing consumer takes every event and retries each every second; the healthy one,
    // started meanwhile, claims none of them while they are retried.
    let mut last = std::collections::HashMap::new();
    let mut healthy = None;
    while last.len() < 5 || last.values().any(|d: &Delivery| d.count < 40) {
        let d = failed.recv().await.unwrap();
        last.insert(d.n, d);
        if last.len() == 5 && healthy.is_none() {
            let (w, rx) = worker("healthy", Duration::ZERO, false);
            healthy = Some((subscribe(&broker, "claims", w, 1).await, rx));
        }
    }
    let (healthy, mut handled) = healthy.unwrap();
    assert!(handled.try_recv().is_err(), "claimed from a live consumer");
    failing.shutdown().await.unwrap();
    while let Ok(d) = failed.try_recv() {
        last.insert(d.n, d);
    }
    assert_eq!(broker.pending(None, "claims", "g"), 5);
    let stopped = Instant::now();

    // Nothing was claimed while the failing consumer retried; now each is claimed once idle.
    let mut claimed = Vec::new();
    while claimed.len() < 10 {
        claimed.push(handled.recv().await.unwrap());
    }
    for n in 0..5 {
        let starts: Vec<_> = claimed.iter().filter(|d| d.n == n && !d.finished).collect();
        assert_eq!(starts.len(), 1, "tick {n}: {claimed:?}");
        let (start, before) = (starts[0], &last[&n]);
        assert_eq!(start.count, before.count + 1, "a claim counts a delivery");
        let idle = start.at - before.at;
        assert!(
            idle >= IDLE && idle <= IDLE + IDLE / 2,
            "tick {n} claimed after {idle:?} idle (claims run every claim_min_idle / 2)"
        );
        assert!(start.at > stopped);
    }
    assert!(claimed.iter().all(|d| d.consumer == "healthy"));
    healthy.shutdown().await.unwrap();
    assert_eq!(broker.pending(None, "claims", "g"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_live_consumers_event_is_not_claimed_within_claim_min_idle() {
    let broker = InMemoryBroker::new();
    let producer = producer(&broker, "live").await;
    let (slow, mut slow_rx) = worker("slow", Duration::from_secs(20), false);
    let slow = subscribe(&broker, "live", slow, 1).await;
    producer.tick(1).await.unwrap();
    assert!(!slow_rx.recv().await.unwrap().finished);
    let (other, mut other_rx) = worker("other", Duration::ZERO, false);
    let other = subscribe(&broker, "live", other, 1).await;
    // The slow handler takes 20 s, less than claim_min_idle: it finishes, and nobody claims.
    let done = slow_rx.recv().await.unwrap();
    assert!(done.finished && done.consumer == "slow", "{done:?}");
    tokio::time::sleep(IDLE * 2).await;
    assert!(
        other_rx.try_recv().is_err(),
        "the other consumer claimed it"
    );
    assert_eq!(broker.pending(None, "live", "g"), 0);
    slow.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}

/// Tick 1 on `uri`, and a consumer `w` whose handler takes `takes`, once its handler started:
/// the consumer, its deliveries to come, and that first start.
async fn busy(
    broker: &InMemoryBroker,
    uri: &str,
    takes: Duration,
    concurrency: usize,
) -> (
    ConsumerLifetime,
    mpsc::UnboundedReceiver<Delivery>,
    Delivery,
) {
    producer(broker, uri).await.tick(1).await.unwrap();
    let (w, mut rx) = worker("w", takes, false);
    let lifetime = subscribe(broker, uri, w, concurrency).await;
    let started = rx.recv().await.unwrap();
    assert!(!started.finished && started.n == 1, "{started:?}");
    (lifetime, rx, started)
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_handler_in_flight_finish_within_the_grace() {
    let broker = InMemoryBroker::new();
    let (lifetime, mut rx, _) = busy(&broker, "grace", Duration::from_secs(2), 1).await;
    let asked = Instant::now();
    lifetime.shutdown().await.unwrap();
    assert_eq!(
        asked.elapsed(),
        Duration::from_secs(2),
        "waited for the handler"
    );
    assert!(rx.recv().await.unwrap().finished);
    assert_eq!(broker.pending(None, "grace", "g"), 0, "acknowledged");
}

#[tokio::test(start_paused = true)]
async fn after_the_grace_an_unfinished_event_stays_pending_for_another_consumer() {
    let broker = InMemoryBroker::new();
    // Room for two handlers: only stopping keeps it from reading tick 2.
    let hour = Duration::from_secs(3600);
    let (stuck, mut stuck_rx, started) = busy(&broker, "unfinished", hour, 2).await;
    let producer = producer(&broker, "unfinished").await;
    let asked = Instant::now();
    let shutdown = tokio::spawn(stuck.shutdown());
    tokio::time::sleep(Duration::from_millis(1)).await;
    producer.tick(2).await.unwrap();
    shutdown.await.unwrap().unwrap();
    assert_eq!(
        asked.elapsed(),
        Duration::from_secs(5),
        "the grace, then stopped"
    );
    assert!(stuck_rx.try_recv().is_err(), "the stuck handler finished");
    assert_eq!(
        broker.pending(None, "unfinished", "g"),
        1,
        "tick 1 stays pending"
    );

    let (next, mut next_rx) = worker("next", Duration::ZERO, false);
    let next = subscribe(&broker, "unfinished", next, 1).await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(next_rx.recv().await.unwrap());
    }
    let claimed = seen.iter().find(|d| d.n == 1).unwrap();
    assert_eq!(claimed.count, 2, "{seen:?}");
    assert!(claimed.at - started.at >= IDLE, "{seen:?}");
    let read = seen.iter().find(|d| d.n == 2).unwrap();
    assert_eq!(
        read.count, 1,
        "tick 2 was never read by the stopping consumer"
    );
    next.shutdown().await.unwrap();
    assert_eq!(broker.pending(None, "unfinished", "g"), 0);
}
