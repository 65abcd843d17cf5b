//! Failures on the in-memory channel behave as on Redis: a failed handler is retried after the
//! policy's backoff without holding up other events, then dead-lettered with Redis's reason and
//! delivery count; a fatal failure, a bad event and an unknown operation are
//! dead-lettered at once (or the unknown one skipped); an event waiting for its retry holds back
//! the later events of its ordering key only; dead letters are listed, read, replayed and purged. Every test runs under a paused clock: the backoffs take no real time.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone_core::dead_letters::DeadLetterStore;
use backbone_core::memory::InMemoryBroker;
use backbone_core::middleware::{ChannelInfo, Settled};
use backbone_core::{
    async_trait, events_contract, ConsumerContext, HandlerError, HandlerResult, Middleware,
    RetryPolicy, UnknownPolicy,
};
use common::*;
use tokio::sync::mpsc;

/// Real backoffs: 1 s doubling to 1 min, 5 deliveries (15 s of virtual waiting in all).
const SLOW: RetryPolicy = RetryPolicy {
    base_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(60),
    max_deliveries: 5,
};

async fn ticks(broker: &InMemoryBroker, uri: &str) -> TicksProducer {
    let producer = broker.producer_builder().uri(uri);
    producer.build_ticks_producer().await.unwrap()
}

/// Sends each tick; ends how `outcome(n, delivery)` says, and records the ticks it handled.
#[derive(Clone)]
struct Scripted {
    tx: mpsc::UnboundedSender<Seen>,
    outcome: fn(u64, u32) -> HandlerResult,
}

#[async_trait]
impl TicksConsumer for Scripted {
    async fn tick(&self, ctx: &ConsumerContext, n: u64) -> HandlerResult {
        (self.outcome)(n, ctx.metadata().delivery_count)?;
        let meta = ctx.metadata().clone();
        let consumer = "scripted".to_owned();
        self.tx.send(Seen { consumer, n, meta })?;
        Ok(())
    }
}

/// The name of every settlement, in order.
#[derive(Clone, Default)]
struct Settlements(Arc<Mutex<Vec<String>>>);

impl Middleware for Settlements {
    fn settled(&self, _: &ChannelInfo, settled: &Settled<'_>) {
        let n = settled.metadata.map_or(0, |m| m.delivery_count);
        let name = settled.outcome.name();
        self.0.lock().unwrap().push(format!("{name} {n}"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_event_is_retried_while_the_others_flow_then_succeeds() {
    let broker = InMemoryBroker::new();
    let sent = send(&ticks(&broker, "retried").await, 0..5).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = Scripted {
        tx,
        outcome: |n, delivery| match (n, delivery) {
            (0, 1) => Err("not yet".into()),
            (0, 2) => panic!("a panic is retried too"),
            _ => Ok(()),
        },
    };
    let settlements = Settlements::default();
    let lifetime = broker
        .consumer_builder()
        .uri("retried")
        .retry(SLOW)
        .max_messages(5)
        .middleware(settlements.clone())
        .subscribe_ticks_consumer(handler)
        .await
        .unwrap();
    let seen = collect(&mut rx, 5, WAIT).await;
    lifetime.completion().await.unwrap();
    // Tick 0 waited for its retries; the others were not held up behind it.
    assert_eq!(
        seen.iter().map(|s| s.n).collect::<Vec<_>>(),
        [1, 2, 3, 4, 0]
    );
    assert_eq!(seen[4].meta.message_id, sent[0]);
    assert_eq!(seen[4].meta.delivery_count, 3);
    let settled = settlements.0.lock().unwrap().clone();
    assert_eq!(settled[0], "retry 1");
    assert_eq!(settled[5], "retry 2");
    assert_eq!(settled[6], "ack 3");
    assert_eq!(broker.pending(None, "retried", "default"), 0);
    let dead = broker.dead_letters(None, "retried", "default").unwrap();
    assert!(dead.is_empty().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_key_whose_event_waits_for_a_retry_holds_back_its_later_events_only() {
    let broker = InMemoryBroker::new();
    let producer = ticks(&broker, "keyed-retry").await;
    let (a, b) = (producer.with_key("a"), producer.with_key("b"));
    for n in 0..6 {
        let keyed = if n % 2 == 0 { &a } else { &b };
        keyed.tick(n).await.unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = Scripted {
        tx,
        outcome: |n, delivery| match (n, delivery) {
            (0, 1) => Err("not yet".into()),
            _ => Ok(()),
        },
    };
    let lifetime = broker
        .consumer_builder()
        .uri("keyed-retry")
        .retry(SLOW)
        .concurrency(4)
        .max_messages(6)
        .subscribe_ticks_consumer(handler)
        .await
        .unwrap();
    let seen = collect(&mut rx, 6, WAIT).await;
    lifetime.completion().await.unwrap();
    // Key b flows while tick 0 (key a) waits its 1 s; key a's later ticks wait behind it.
    let order: Vec<u64> = seen.iter().map(|s| s.n).collect();
    assert_eq!(&order[..3], [1, 3, 5], "{order:?}");
    assert_eq!(&order[3..], [0, 2, 4], "{order:?}");
    assert_eq!(seen[3].meta.delivery_count, 2);
}

#[tokio::test(start_paused = true)]
async fn an_event_failing_every_delivery_is_dead_lettered_with_the_reason() {
    let broker = InMemoryBroker::new();
    let sent = send(&ticks(&broker, "exhausted").await, 0..4).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel();
    let recorder = TickRecorder {
        fail: |n| n == 2,
        failures: Some(fail_tx),
        ..TickRecorder::new("c", tx)
    };
    let settlements = Settlements::default();
    let lifetime = broker
        .consumer_builder()
        .uri("exhausted")
        .group("g")
        .name("c-1")
        .retry(SLOW)
        .middleware(settlements.clone())
        .subscribe_ticks_consumer(recorder)
        .await
        .unwrap();
    // While it waits for its retry, the failed event counts as held.
    let mut failures = collect(&mut fail_rx, 1, WAIT).await;
    for waited in 0.. {
        match lifetime.health().held {
            1 => break,
            held => assert!(waited < 100, "{held} held"),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(collect(&mut rx, 3, WAIT).await.len(), 3);
    let dead = broker.dead_letters(None, "exhausted", "g").unwrap();
    let letters = memory_dead_letters(&dead, 1).await;
    failures.extend(collect(&mut fail_rx, 4, WAIT).await);
    let counts: Vec<u32> = failures.iter().map(|s| s.meta.delivery_count).collect();
    assert_eq!(counts, [1, 2, 3, 4, 5]);
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(
        letter.reason,
        "the handler failed 5 times; last error: tick 2 fails on purpose"
    );
    assert_eq!(letter.deliveries, 5);
    assert_eq!(
        (letter.group.as_str(), letter.consumer.as_str()),
        ("g", "c-1")
    );
    assert_eq!(letter.message_id, Some(sent[2]));
    assert_eq!(letter.operation.as_deref(), Some("tick"));
    assert_eq!(letter.version, Some(0));
    assert_eq!(letter.stream_id, "2");
    assert!(letter.dead_at > 0 && letter.can_replay(), "{letter:?}");
    assert_eq!(dead.get(&letter.id).await.unwrap().as_ref(), Some(letter));
    assert_eq!(broker.pending(None, "exhausted", "g"), 0);
    let mut settled = settlements.0.lock().unwrap().clone();
    settled.retain(|s| !s.starts_with("ack"));
    assert_eq!(
        settled,
        ["retry 1", "retry 2", "retry 3", "retry 4", "dead_letter 5"]
    );
    assert_quiet(&mut fail_rx, Duration::from_secs(120)).await;
    lifetime.shutdown().await.unwrap();
}

/// [`Ticks`]'s operation with a parameter that is not a number.
#[events_contract]
pub trait Mistyped {
    async fn tick(&self, n: String);
}

/// [`Ticks`] and an operation `Ticks` lacks.
#[events_contract]
pub trait TicksAndTocks {
    async fn tick(&self, n: u64);
    async fn tock(&self, n: u64);
}

#[tokio::test(start_paused = true)]
async fn bad_events_and_fatal_failures_are_dead_lettered_at_once_and_the_consumer_goes_on() {
    let broker = InMemoryBroker::new();
    let mistyped = broker.producer_builder().uri("bad");
    let mistyped = mistyped.build_mistyped_producer().await.unwrap();
    let undecodable = mistyped.tick("seven".into()).await.unwrap();
    let producer = ticks(&broker, "bad").await;
    let fatal = producer.tick(13).await.unwrap();
    let good = producer.tick(1).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = Scripted {
        tx,
        outcome: |n, _| match n {
            13 => Err(HandlerError::fatal("unlucky")),
            _ => Ok(()),
        },
    };
    let lifetime = broker
        .consumer_builder()
        .uri("bad")
        .retry(SLOW)
        .max_messages(1)
        .subscribe_ticks_consumer(handler)
        .await
        .unwrap();
    let seen = collect(&mut rx, 1, WAIT).await;
    lifetime.completion().await.unwrap();
    assert_eq!(seen[0].meta.message_id, good, "the consumer went on");
    let dead = broker.dead_letters(None, "bad", "default").unwrap();
    let letters = dead.list(None, 10).await.unwrap();
    assert_eq!(buried(&letters), [(Some(undecodable), 1), (Some(fatal), 1)]);
    assert!(
        letters[0]
            .reason
            .starts_with("cannot decode parameter `n` of operation `tick`"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[1].reason, "the handler failed (fatal): unlucky");
    assert_eq!(broker.pending(None, "bad", "default"), 0);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_operation_is_dead_lettered_or_skipped_as_the_policy_says() {
    let broker = InMemoryBroker::new();
    let both = broker.producer_builder().uri("mixed");
    let both = both.build_ticks_and_tocks_producer().await.unwrap();
    let tock = both.tock(1).await.unwrap();
    let tick = both.tick(2).await.unwrap();
    for (group, policy) in [
        ("strict", UnknownPolicy::DeadLetter),
        ("lenient", UnknownPolicy::Skip),
    ] {
        let (tx, mut rx) = mpsc::unbounded_channel();
        broker
            .consumer_builder()
            .uri("mixed")
            .group(group)
            .on_unknown(policy)
            .max_messages(1)
            .subscribe_ticks_consumer(TickRecorder::new(group, tx))
            .await
            .unwrap()
            .completion()
            .await
            .unwrap();
        let seen = collect(&mut rx, 1, WAIT).await;
        assert_eq!(seen[0].meta.message_id, tick, "{group}");
        assert_eq!(broker.pending(None, "mixed", group), 0, "{group}");
    }
    let strict = broker.dead_letters(None, "mixed", "strict").unwrap();
    let letters = strict.list(None, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].message_id, Some(tock));
    assert_eq!(letters[0].operation.as_deref(), Some("tock"));
    assert_eq!(
        letters[0].reason,
        "contract `Ticks` has no operation `tock` version 0"
    );
    let lenient = broker.dead_letters(None, "mixed", "lenient").unwrap();
    assert!(lenient.is_empty().await.unwrap());
}

/// Dead-letters ticks 0..4 in groups `ops` and `audit` (one delivery each); returns their ids.
async fn four_dead_in_two_groups(broker: &InMemoryBroker) -> Vec<backbone_core::MessageId> {
    let sent = send(&ticks(broker, "letters").await, 0..4).await;
    for group in ["ops", "audit"] {
        let (tx, _rx) = mpsc::unbounded_channel();
        let lifetime = broker
            .consumer_builder()
            .uri("letters")
            .group(group)
            .retry(quick_retry(1))
            .subscribe_ticks_consumer(TickRecorder {
                fail: |_| true,
                ..TickRecorder::new(group, tx)
            })
            .await
            .unwrap();
        let dead = broker.dead_letters(None, "letters", group).unwrap();
        memory_dead_letters(&dead, 4).await;
        lifetime.shutdown().await.unwrap();
    }
    sent
}

#[tokio::test(start_paused = true)]
async fn dead_letters_are_paged_read_replayed_and_purged() {
    let broker = InMemoryBroker::new();
    let sent = four_dead_in_two_groups(&broker).await;
    let ops = broker.dead_letters(None, "letters", "ops").unwrap();
    assert_eq!(ops.len().await.unwrap(), 4);
    let first = ops.list(None, 2).await.unwrap();
    let rest = ops.list(Some(&first[1].id), 10).await.unwrap();
    let ids = |page: &[backbone_core::dead_letters::DeadLetterEntry]| {
        page.iter()
            .map(|l| l.message_id.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!([ids(&first), ids(&rest)].concat(), sent);
    assert!(ops.list(Some(&rest[1].id), 10).await.unwrap().is_empty());
    assert_eq!(
        first[0].reason,
        "the handler failed 1 times; last error: tick 0 fails on purpose"
    );
    assert_eq!(ops.get("99").await.unwrap(), None);
    assert!(ops.get("not-an-id").await.is_err());

    // A consumer that succeeds receives what is replayed, as a new entry, from delivery 1.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = broker
        .consumer_builder()
        .uri("letters")
        .group("ops")
        .subscribe_ticks_consumer(TickRecorder::new("b", tx))
        .await
        .unwrap();
    assert_eq!(ops.replay(&first[1].id).await.unwrap(), "4");
    let seen = collect(&mut rx, 1, WAIT).await;
    assert_eq!((seen[0].n, seen[0].meta.message_id), (1, sent[1]));
    assert_eq!(seen[0].meta.stream_id, "4");
    assert_eq!(seen[0].meta.delivery_count, 1);
    assert!(ops.purge(&first[0].id).await.unwrap());
    assert!(!ops.purge(&first[0].id).await.unwrap());
    let err = ops.replay(&first[0].id).await.unwrap_err();
    assert!(err.to_string().contains("no such dead letter"), "{err}");
    // Through the trait, as code written for any channel would.
    let store: &dyn DeadLetterStore = &ops;
    assert_eq!(store.replay_all().await.unwrap(), 2);
    let seen = collect(&mut rx, 2, WAIT).await;
    assert_eq!(seen.iter().map(|s| s.n).collect::<Vec<_>>(), [2, 3]);
    assert!(store.is_empty().await.unwrap());
    assert_eq!(store.replay_all().await.unwrap(), 0);
    lifetime.shutdown().await.unwrap();
    assert_eq!(broker.len(None, "letters"), 7, "4 sent, 3 replayed");

    let audit = broker.dead_letters(None, "letters", "audit").unwrap();
    assert_eq!(audit.purge_all().await.unwrap(), 4);
    assert!(audit.is_empty().await.unwrap());
    assert_eq!(audit.purge_all().await.unwrap(), 0);
}
