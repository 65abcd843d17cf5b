//! Consumer groups over real Redis: fan-out between groups, sharing within a group, order,
//! start-up before the stream exists, recovery of pending entries, many producers, ack modes.

mod common;

use std::time::Duration;

use backbone_core::{async_trait, AckMode, ConsumerContext, HandlerResult, RetryPolicy};
use backbone_redis::testing::{shared, unique_name};
use backbone_redis::RedisConsumerBuilder;
use common::*;
use tokio::sync::mpsc;

fn consumer(url: &str, uri: &str, group: &str, name: &str) -> RedisConsumerBuilder {
    RedisConsumerBuilder::new()
        .url(url)
        .uri(uri)
        .group(group)
        .name(name)
        .block(Duration::from_millis(200))
}

#[tokio::test]
async fn two_groups_each_receive_every_event() {
    let redis = shared().await.unwrap();
    let uri = unique_name("fanout");
    let sent = send(&producer(redis.url(), &uri).await, 0..50).await;
    let (tx_a, mut rx_a) = mpsc::unbounded_channel();
    let (tx_b, mut rx_b) = mpsc::unbounded_channel();
    let a = consumer(redis.url(), &uri, "audit", "a-1")
        .subscribe_ticks_consumer(TickRecorder::new("a", tx_a))
        .await
        .unwrap();
    let b = consumer(redis.url(), &uri, "billing", "b-1")
        .subscribe_ticks_consumer(TickRecorder::new("b", tx_b))
        .await
        .unwrap();
    assert_exactly_once(&sent, &ids(&collect(&mut rx_a, 50, WAIT).await));
    assert_exactly_once(&sent, &ids(&collect(&mut rx_b, 50, WAIT).await));
    assert_quiet(&mut rx_a, Duration::from_millis(300)).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn consumers_of_one_group_split_the_events_without_duplicates() {
    let redis = shared().await.unwrap();
    let uri = unique_name("split");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut lifetimes = Vec::new();
    for i in 0..3 {
        lifetimes.push(
            consumer(redis.url(), &uri, "workers", &format!("w-{i}"))
                .batch_size(5)
                .subscribe_ticks_consumer(TickRecorder::new(&format!("w-{i}"), tx.clone()))
                .await
                .unwrap(),
        );
    }
    let sent = send(&producer(redis.url(), &uri).await, 0..300).await;
    let seen = collect(&mut rx, 300, WAIT).await;
    assert_quiet(&mut rx, Duration::from_millis(500)).await;
    assert_exactly_once(&sent, &ids(&seen));
    for lifetime in lifetimes {
        lifetime.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn one_consumer_sees_the_order_they_were_sent_in() {
    let redis = shared().await.unwrap();
    let uri = unique_name("order");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = consumer(redis.url(), &uri, "g", "c")
        .batch_size(7)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let sent = send(&producer(redis.url(), &uri).await, 0..200).await;
    let seen = collect(&mut rx, 200, WAIT).await;
    assert_eq!(ids(&seen), sent, "delivery order differs from send order");
    let numbers: Vec<u64> = seen.iter().map(|s| s.n).collect();
    assert_eq!(numbers, (0..200).collect::<Vec<_>>());
    lifetime.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_consumer_may_start_before_the_stream_exists() {
    let redis = shared().await.unwrap();
    let uri = unique_name("early");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = consumer(redis.url(), &uri, "g", "c")
        .max_messages(3)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = send(&producer(redis.url(), &uri).await, 0..3).await;
    assert_exactly_once(&sent, &ids(&collect(&mut rx, 3, WAIT).await));
    tokio::time::timeout(WAIT, lifetime.completion())
        .await
        .expect("completes after max_messages")
        .unwrap();
}

#[tokio::test]
async fn a_group_created_late_receives_earlier_events() {
    let redis = shared().await.unwrap();
    let uri = unique_name("late-group");
    let p = producer(redis.url(), &uri).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let first = consumer(redis.url(), &uri, "first", "f")
        .subscribe_ticks_consumer(TickRecorder::new("f", tx))
        .await
        .unwrap();
    let sent = send(&p, 0..10).await;
    collect(&mut rx, 10, WAIT).await;
    first.shutdown().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let late = consumer(redis.url(), &uri, "second", "s")
        .subscribe_ticks_consumer(TickRecorder::new("s", tx))
        .await
        .unwrap();
    assert_exactly_once(&sent, &ids(&collect(&mut rx, 10, WAIT).await));
    late.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restarted_consumer_handles_what_it_left_pending() {
    let redis = shared().await.unwrap();
    let uri = unique_name("restart");
    let sent = send(&producer(redis.url(), &uri).await, 0..20).await;

    // First life: every handler call fails and the retry is a minute away, so all 20 entries
    // stay pending under "worker-1" when it shuts down.
    let (tx, _rx) = mpsc::unbounded_channel();
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel();
    let failing = TickRecorder {
        label: "first".into(),
        tx,
        fail: |_| true,
        failures: Some(fail_tx),
    };
    let first = consumer(redis.url(), &uri, "g", "worker-1")
        .retry(RetryPolicy {
            base_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(60),
            ..RetryPolicy::default()
        })
        .subscribe_ticks_consumer(failing)
        .await
        .unwrap();
    collect(&mut fail_rx, 20, WAIT).await;
    first.shutdown().await.unwrap();
    let mut raw = raw(redis.url()).await;
    let stream = format!("bb:{{{uri}}}:events");
    let pending: redis::streams::StreamPendingReply =
        redis::AsyncCommands::xpending(&mut raw, &stream, "g")
            .await
            .unwrap();
    assert_eq!(pending.count(), 20, "failed entries stay pending");

    // Second life under the same name: the pending entries come first, delivered again.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let second = consumer(redis.url(), &uri, "g", "worker-1")
        .max_messages(20)
        .subscribe_ticks_consumer(TickRecorder::new("second", tx))
        .await
        .unwrap();
    let seen = collect(&mut rx, 20, WAIT).await;
    assert_exactly_once(&sent, &ids(&seen));
    assert!(
        seen.iter().all(|s| s.meta.delivery_count >= 2),
        "delivery counts: {:?}",
        seen.iter()
            .map(|s| s.meta.delivery_count)
            .collect::<Vec<_>>()
    );
    second.completion().await.unwrap();
    let pending: redis::streams::StreamPendingReply =
        redis::AsyncCommands::xpending(&mut raw, &stream, "g")
            .await
            .unwrap();
    assert_eq!(pending.count(), 0);
}

#[tokio::test]
async fn many_producer_tasks_at_once() {
    let redis = shared().await.unwrap();
    let uri = unique_name("many-producers");
    let shared_producer = producer(redis.url(), &uri).await;
    let mut tasks = Vec::new();
    for t in 0..20u64 {
        // Half the tasks share one producer (clones), half build their own.
        let p = if t.is_multiple_of(2) {
            shared_producer.clone()
        } else {
            producer(redis.url(), &uri).await
        };
        tasks.push(tokio::spawn(async move {
            send(&p, t * 1000..t * 1000 + 50).await
        }));
    }
    let mut sent = Vec::new();
    for task in tasks {
        sent.extend(task.await.unwrap());
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = consumer(redis.url(), &uri, "g", "c")
        .max_messages(1000)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    assert_exactly_once(&sent, &ids(&collect(&mut rx, 1000, WAIT).await));
    lifetime.completion().await.unwrap();
}

/// Acknowledges only even ticks, by hand.
struct EvenAcker(mpsc::UnboundedSender<u64>);

#[async_trait]
impl TicksConsumer for EvenAcker {
    async fn tick(&self, ctx: &ConsumerContext, n: u64) -> HandlerResult {
        if n.is_multiple_of(2) {
            ctx.ack().await?;
            ctx.ack().await?; // twice is harmless
        }
        self.0.send(n)?;
        Ok(())
    }
}

#[tokio::test]
async fn manual_ack_leaves_unacknowledged_entries_pending() {
    let redis = shared().await.unwrap();
    let uri = unique_name("manual");
    send(&producer(redis.url(), &uri).await, 0..10).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = consumer(redis.url(), &uri, "g", "c")
        .ack(AckMode::Manual)
        .max_messages(10)
        .subscribe_ticks_consumer(EvenAcker(tx))
        .await
        .unwrap();
    collect(&mut rx, 10, WAIT).await;
    lifetime.completion().await.unwrap();
    let mut raw = raw(redis.url()).await;
    let pending: redis::streams::StreamPendingCountReply = redis::AsyncCommands::xpending_count(
        &mut raw,
        format!("bb:{{{uri}}}:events"),
        "g",
        "-",
        "+",
        100,
    )
    .await
    .unwrap();
    assert_eq!(pending.ids.len(), 5, "the five odd ticks stay pending");
}

#[tokio::test]
async fn shutdown_is_prompt_even_while_blocked_reading() {
    let redis = shared().await.unwrap();
    let uri = unique_name("shutdown");
    let (tx, _rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .block(Duration::from_secs(5))
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!lifetime.is_finished());
    tokio::time::timeout(Duration::from_secs(2), lifetime.shutdown())
        .await
        .expect("shutdown does not wait for the 5 s BLOCK")
        .unwrap();
}
