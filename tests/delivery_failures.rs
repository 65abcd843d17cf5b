//! Delivery scenarios 4, 7 and 16 of `delivery-scenarios.md`: failing handlers, retries and
//! dead letters, written once against a [`Channel`] and run on Redis and in memory
//! (`conformance!`). A handler that fails twice, then succeeds (4); consumers
//! that fail everything leave it to a healthy one (7); an event that always fails is
//! dead-lettered with its reason, listed and replayed (16).
//!
//! Every test has its own stream names. "Received all" means the set of received message ids
//! equals the set sent; failures list the missing and extra ids. Where a scenario allows
//! duplicates (restarts, kills, churn) the received set must still cover what was sent and hold
//! nothing else. Shared settings and helpers: `common/delivery.rs`.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone_core::{
    async_trait, ConsumerContext, HandlerError, HandlerResult, MessageId, RetryPolicy,
};
use backbone_redis::testing::unique_name;
use common::channel::{Channel, Consumer};
use common::delivery::*;
use common::*;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// Helpers of these scenarios only
// ---------------------------------------------------------------------------------------------

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
// Scenarios
// ---------------------------------------------------------------------------------------------

conformance!(
    s04_fails_twice_then_succeeds,
    s07_failing_consumers_leave_everything_to_a_healthy_one,
    s16_dead_letters_listed_and_replayed
);

/// 4. The handler fails the first 2 deliveries of each event; every event still ends up
///    handled (retried by the consumer after its backoff), once, and nothing is dead-lettered.
async fn s04_fails_twice_then_succeeds<C: Channel>(c: C) {
    let uri = unique_name("s04");
    let sent = send(&c.producer(None, &uri).await, 0..50).await;
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
        let spec = Consumer::new(&uri, "g", &format!("c-{i}")).batch_size(10);
        lifetimes.push(c.subscribe(spec, handler).await.unwrap());
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
    let left = c
        .await_nothing_pending(&uri, "g", Duration::from_secs(5))
        .await;
    assert_eq!(left, 0, "still pending");
    let dead = c
        .dead_letters(&uri, "g")
        .await
        .list(None, 100)
        .await
        .unwrap();
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
    stop_all("s04", lifetimes).await;
}

/// 7. Consumers that fail every delivery and then shut down; a healthy consumer (another name)
///    later handles all events, claiming what the failing ones left pending.
async fn s07_failing_consumers_leave_everything_to_a_healthy_one<C: Channel>(c: C) {
    let uri = unique_name("s07");
    let sent = send(&c.producer(None, &uri).await, 0..40).await;
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
        let spec = Consumer::new(&uri, "g", &name)
            .batch_size(10)
            .retry(patient)
            .claim_min_idle(CLAIM);
        failing.push(c.subscribe(spec, handler).await.unwrap());
    }
    let failed = gather(&mut fail_rx, &sent, WAIT, Duration::ZERO).await;
    assert_at_least_once(&sent, &ids(&failed));
    stop_all("s07 failing", failing).await;
    assert!(
        rx.try_recv().is_err(),
        "a failing consumer recorded a success"
    );
    let left = c.pending(None, &uri, "g").await;
    assert_eq!(left, sent.len(), "pending after the failing consumers");

    let (tx, mut rx) = mpsc::unbounded_channel();
    let spec = Consumer::new(&uri, "g", "healthy")
        .retry(patient)
        .claim_min_idle(CLAIM);
    let healthy = c.subscribe(spec, recorder("healthy", &tx)).await.unwrap();
    let seen = gather(&mut rx, &sent, WAIT, SETTLE).await;
    assert_exactly_once(&sent, &ids(&seen));
    let left = c
        .await_nothing_pending(&uri, "g", Duration::from_secs(5))
        .await;
    assert_eq!(left, 0, "still pending");
    stop("s07 healthy", healthy).await;
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
async fn s16_dead_letters_listed_and_replayed<C: Channel>(c: C) {
    let uri = unique_name("s16");
    let sent = send(&c.producer(None, &uri).await, 0..3).await;
    let policy = RetryPolicy {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_deliveries: 3,
    };
    let (tx, mut attempts_rx) = mpsc::unbounded_channel();
    let spec = Consumer::new(&uri, "g", "failing").retry(policy);
    let failing = c.subscribe(spec, Poison(tx)).await.unwrap();

    let dead = c.dead_letters(&uri, "g").await;
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
    let left = c.pending(None, &uri, "g").await;
    assert_eq!(left, 0, "dead letters must be acked");

    // Nothing is delivered until replayed; then a healthy consumer handles each once.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let spec = Consumer::new(&uri, "g", "healthy").retry(policy);
    let healthy = c.subscribe(spec, recorder("healthy", &tx)).await.unwrap();
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
    let left = c
        .await_nothing_pending(&uri, "g", Duration::from_secs(5))
        .await;
    assert_eq!(left, 0, "still pending");
    stop("s16 healthy", healthy).await;
}
