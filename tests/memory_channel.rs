//! The in-memory channel keeps the consumer-group semantics of the Redis one.

mod common;

use std::time::Duration;

use backbone_core::memory::InMemoryBroker;
use backbone_core::AckMode;
use common::*;
use tokio::sync::mpsc;

#[tokio::test]
async fn each_group_gets_every_event_and_a_group_shares_them() {
    let broker = InMemoryBroker::new();
    let producer = broker
        .producer_builder()
        .environment("test")
        .uri("ticks")
        .build_ticks_producer()
        .await
        .unwrap();
    let early = send(&producer, 0..20).await;
    let (tx_a, mut rx_a) = mpsc::unbounded_channel();
    let (tx_b, mut rx_b) = mpsc::unbounded_channel();
    let mut lifetimes = vec![broker
        .consumer_builder()
        .environment("test")
        .uri("ticks")
        .group("a")
        .subscribe_ticks_consumer(TickRecorder::new("a", tx_a))
        .await
        .unwrap()];
    for i in 0..3 {
        lifetimes.push(
            broker
                .consumer_builder()
                .environment("test")
                .uri("ticks")
                .group("b")
                .name(format!("b-{i}"))
                .subscribe_ticks_consumer(TickRecorder::new(&format!("b-{i}"), tx_b.clone()))
                .await
                .unwrap(),
        );
    }
    let mut sent = early;
    sent.extend(send(&producer, 20..100).await);
    assert_exactly_once(&sent, &ids(&collect(&mut rx_a, 100, WAIT).await));
    let in_b = collect(&mut rx_b, 100, WAIT).await;
    assert_exactly_once(&sent, &ids(&in_b));
    assert_quiet(&mut rx_b, Duration::from_millis(100)).await;
    // Another environment is another stream.
    assert_eq!(broker.len(Some("test"), "ticks"), 100);
    assert_eq!(broker.len(None, "ticks"), 0);
    for lifetime in lifetimes {
        lifetime.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn order_is_kept_and_metadata_filled() {
    let broker = InMemoryBroker::new();
    let producer = broker
        .producer_builder()
        .uri("ticks")
        .build_ticks_producer()
        .await
        .unwrap();
    let sent = send(&producer, 0..50).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = broker
        .consumer_builder()
        .uri("ticks")
        .max_messages(50)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let seen = collect(&mut rx, 50, WAIT).await;
    assert_eq!(ids(&seen), sent);
    assert!(seen.iter().all(|s| s.meta.operation == "tick"
        && s.meta.uri == "ticks"
        && s.meta.delivery_count == 1));
    lifetime.completion().await.unwrap();
    assert_eq!(broker.pending(None, "ticks", "default"), 0);
}

#[tokio::test]
async fn failed_events_stay_pending_until_the_same_consumer_returns() {
    let broker = InMemoryBroker::new();
    let producer = broker
        .producer_builder()
        .uri("ticks")
        .build_ticks_producer()
        .await
        .unwrap();
    let sent = send(&producer, 0..10).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel();
    let failing = TickRecorder {
        label: "first".into(),
        tx,
        fail: |_| true,
        failures: Some(fail_tx),
    };
    // Its retries would come after the shutdown: the failed events wait pending for "w".
    let later = backbone_core::RetryPolicy {
        base_delay: Duration::from_secs(3600),
        ..backbone_core::RetryPolicy::default()
    };
    let first = broker
        .consumer_builder()
        .uri("ticks")
        .name("w")
        .retry(later)
        .subscribe_ticks_consumer(failing)
        .await
        .unwrap();
    collect(&mut fail_rx, 10, WAIT).await;
    first.shutdown().await.unwrap();
    assert_eq!(broker.pending(None, "ticks", "default"), 10);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let second = broker
        .consumer_builder()
        .uri("ticks")
        .name("w")
        .max_messages(10)
        .subscribe_ticks_consumer(TickRecorder::new("second", tx))
        .await
        .unwrap();
    let seen = collect(&mut rx, 10, WAIT).await;
    assert_exactly_once(&sent, &ids(&seen));
    assert!(seen.iter().all(|s| s.meta.delivery_count == 2));
    second.completion().await.unwrap();
    assert_eq!(broker.pending(None, "ticks", "default"), 0);
}

#[tokio::test]
async fn manual_ack_and_bad_names() {
    let broker = InMemoryBroker::new();
    let producer = broker
        .producer_builder()
        .uri("ticks")
        .build_ticks_producer()
        .await
        .unwrap();
    send(&producer, 0..4).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = broker
        .consumer_builder()
        .uri("ticks")
        .ack(AckMode::Manual)
        .max_messages(4)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    collect(&mut rx, 4, WAIT).await;
    lifetime.completion().await.unwrap();
    assert_eq!(
        broker.pending(None, "ticks", "default"),
        4,
        "nothing acked by hand"
    );

    let err = broker
        .producer_builder()
        .uri("")
        .build_ticks_producer()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: uri must not be empty"
    );
}

/// The in-memory channel encodes parameters as the Redis one does (JSON): every `f64` comes back
/// bit for bit.
#[tokio::test]
async fn floats_round_trip_bit_for_bit() {
    let floats = FLOATS;
    let broker = InMemoryBroker::new();
    let producer = broker
        .producer_builder()
        .uri("floats")
        .build_kinds_producer()
        .await
        .unwrap();
    for f in floats {
        producer.float_bool(f, false).await.unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = broker
        .consumer_builder()
        .uri("floats")
        .max_messages(floats.len() as u64)
        .subscribe_kinds_consumer(KindsRecorder(tx))
        .await
        .unwrap();
    let got = collect(&mut rx, floats.len(), WAIT).await;
    lifetime.completion().await.unwrap();
    for ((_, event), sent) in got.iter().zip(floats) {
        let KindsEvent::FloatBool { f, .. } = event else {
            panic!("unexpected {event:?}");
        };
        assert_eq!(f.to_bits(), sent.to_bits(), "sent {sent:e}, received {f:e}");
    }
}
