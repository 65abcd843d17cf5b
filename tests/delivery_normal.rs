//! Delivery scenarios 1–3, 6, 8–12 and 14 of `delivery-scenarios.md`, each written once
//! against a [`Channel`] and run on real Redis and on the in-memory channel (`conformance!`:
//! `<scenario>::redis`, `<scenario>::memory`), with the same assertions: normal delivery and
//! ordering. Events sent before any consumer arrive intact (1); many
//! producers and consumers in one group (2, 9); parallel streams (3); consumers started and shut
//! down at once (6); order within one consumer (8); isolated streams (10); cancelling right after
//! start (11); a new group gets earlier events (12); two groups each get everything (14);
//! with `concurrency(4)`, the events of one ordering key one at a time and in order (17).
//!
//! Every test has its own stream names. "Received all" means the set of received message ids
//! equals the set sent; failures list the missing and extra ids. Where a scenario allows
//! duplicates (restarts, kills, churn) the received set must still cover what was sent and hold
//! nothing else. Shared settings and helpers: `common/delivery.rs`, `common/channel.rs`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone_core::{async_trait, ConsumerContext, ConsumerLifetime, HandlerResult, MessageId};
use backbone_redis::testing::unique_name;
use common::channel::{Channel, Consumer};
use common::delivery::*;
use common::*;
use tokio::sync::mpsc;
use tokio::time::Instant;

conformance!(
    s01_events_sent_before_any_consumer_arrive_intact,
    s02_fifty_producers_twenty_consumers_one_group,
    s03_twenty_streams_in_parallel,
    s06_concurrent_start_and_shutdown_then_a_new_consumer,
    s08_one_consumer_keeps_the_order,
    s09_ten_thousand_events_from_twenty_producers,
    s10_streams_are_isolated,
    s11_cancel_right_after_start,
    s12_a_new_group_receives_earlier_events,
    s14_two_groups_each_receive_everything,
    s17_ordering_keys_with_concurrency_four,
);

/// 1. Published before any consumer exists; a consumer started afterwards receives all, with
///    payloads and metadata intact; after shutdown its lifetime completes.
async fn s01_events_sent_before_any_consumer_arrive_intact<C: Channel>(c: C) {
    let uri = unique_name("s01");
    let env = "s01env";
    let p = c.producer(Some(env), &uri).await;
    let before = backbone_core::metadata::now_millis();
    let sent = send(&p, 0..100).await;
    let after = backbone_core::metadata::now_millis();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = c
        .subscribe(
            Consumer::new(&uri, "g", "c").environment(env),
            recorder("c", &tx),
        )
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
    let left = c.pending(Some(env), &uri, "g").await;
    assert_eq!(left, 0, "still pending after shutdown");
}

/// 2. 5,000 events from 50 concurrent producers; 20 consumers of one group together receive
///    every one, once.
async fn s02_fifty_producers_twenty_consumers_one_group<C: Channel>(c: C) {
    let uri = unique_name("s02");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut lifetimes = Vec::new();
    for i in 0..20 {
        let name = format!("c-{i}");
        lifetimes.push(
            c.subscribe(
                Consumer::new(&uri, "g", &name).batch_size(10),
                recorder(&name, &tx),
            )
            .await
            .unwrap(),
        );
    }
    let mut tasks = Vec::new();
    for t in 0..50u64 {
        let p = c.producer(None, &uri).await;
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
async fn s03_twenty_streams_in_parallel<C: Channel>(c: C) {
    let mut tasks = Vec::new();
    for s in 0..20 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let uri = unique_name(&format!("s03-{s}"));
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut lifetimes = Vec::new();
            for i in 0..2 {
                let name = format!("c-{i}");
                lifetimes.push(
                    c.subscribe(
                        Consumer::new(&uri, "g", &name).batch_size(20),
                        recorder(&name, &tx),
                    )
                    .await
                    .unwrap(),
                );
            }
            let sent = send(&c.producer(None, &uri).await, 0..100).await;
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

/// 6. 10 consumers started and shut down concurrently; then 50 events all reach a new
///    consumer.
async fn s06_concurrent_start_and_shutdown_then_a_new_consumer<C: Channel>(c: C) {
    let uri = unique_name("s06");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let starts = (0..10).map(|i| {
        let name = format!("c-{i}");
        c.subscribe(Consumer::new(&uri, "g", &name), recorder(&name, &tx))
    });
    let lifetimes: Vec<ConsumerLifetime> = futures::future::join_all(starts)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    stop_all("s06 first ten", lifetimes).await;

    let sent = send(&c.producer(None, &uri).await, 0..50).await;
    let (tx, mut rx_new) = mpsc::unbounded_channel();
    let fresh = c
        .subscribe(Consumer::new(&uri, "g", "new"), recorder("new", &tx))
        .await
        .unwrap();
    let seen = gather(&mut rx_new, &sent, WAIT, SETTLE).await;
    assert_exactly_once(&sent, &ids(&seen));
    let early: Vec<Seen> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert!(early.is_empty(), "the first ten handled {early:?}");
    stop("s06 new", fresh).await;
}

/// 8. Within one stream and one consumer, order is kept, also while events arrive during
///    consumption.
async fn s08_one_consumer_keeps_the_order<C: Channel>(c: C) {
    let uri = unique_name("s08");
    let p = c.producer(None, &uri).await;
    let mut sent = send(&p, 0..100).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = c
        .subscribe(
            Consumer::new(&uri, "g", "c").batch_size(7),
            recorder("c", &tx),
        )
        .await
        .unwrap();
    sent.extend(send(&p, 100..300).await);
    let seen = gather(&mut rx, &sent, WAIT, SETTLE).await;
    assert_exactly_once(&sent, &ids(&seen));
    assert_eq!(ids(&seen), sent, "delivery order differs from send order");
    stop("s08", lifetime).await;
}

/// 9. 10,000 events from 20 concurrent producers, all received.
async fn s09_ten_thousand_events_from_twenty_producers<C: Channel>(c: C) {
    let uri = unique_name("s09");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut lifetimes = Vec::new();
    for i in 0..4 {
        let name = format!("c-{i}");
        lifetimes.push(
            c.subscribe(Consumer::new(&uri, "g", &name), recorder(&name, &tx))
                .await
                .unwrap(),
        );
    }
    let mut tasks = Vec::new();
    for t in 0..20u64 {
        let p = c.producer(None, &uri).await;
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
async fn s10_streams_are_isolated<C: Channel>(c: C) {
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
        let mut spec = Consumer::new(uri, "g", "c");
        if let Some(env) = env {
            spec = spec.environment(env);
        }
        producers.push(c.producer(env, uri).await);
        let (tx, rx) = mpsc::unbounded_channel();
        let lifetime = c.subscribe(spec, recorder("c", &tx)).await.unwrap();
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
async fn s11_cancel_right_after_start<C: Channel>(c: C) {
    let uri = unique_name("s11");
    let p = c.producer(None, &uri).await;
    let mut sent = send(&p, 0..30).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..3 {
        let name = format!("cancelled-{i}");
        let lifetime = c
            .subscribe(
                Consumer::new(&uri, "g", &name)
                    .block(Duration::from_secs(5))
                    .claim_min_idle(CLAIM),
                recorder(&name, &tx),
            )
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
        c.subscribe(
            Consumer::new(&uri, "g", "dropped").claim_min_idle(CLAIM),
            recorder("dropped", &tx),
        )
        .await
        .unwrap(),
    );
    sent.extend(send(&p, 30..60).await);

    let fresh = c
        .subscribe(
            Consumer::new(&uri, "g", "new").claim_min_idle(CLAIM),
            recorder("new", &tx),
        )
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
async fn s12_a_new_group_receives_earlier_events<C: Channel>(c: C) {
    let uri = unique_name("s12");
    let p = c.producer(None, &uri).await;
    let (tx_a, mut rx_a) = mpsc::unbounded_channel();
    let first = c
        .subscribe(Consumer::new(&uri, "first", "a"), recorder("a", &tx_a))
        .await
        .unwrap();
    let mut sent = send(&p, 0..40).await;
    let seen_a = gather(&mut rx_a, &sent, WAIT, Duration::ZERO).await;
    assert_exactly_once(&sent, &ids(&seen_a));

    let (tx_b, mut rx_b) = mpsc::unbounded_channel();
    let late = c
        .subscribe(Consumer::new(&uri, "late", "b"), recorder("b", &tx_b))
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

/// 14. Two groups on one stream each receive every event, with two consumers each and events
///     sent while they run.
async fn s14_two_groups_each_receive_everything<C: Channel>(c: C) {
    let uri = unique_name("s14");
    let mut groups = Vec::new();
    for group in ["audit", "billing"] {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut lifetimes = Vec::new();
        for i in 0..2 {
            let name = format!("{group}-{i}");
            lifetimes.push(
                c.subscribe(
                    Consumer::new(&uri, group, &name).batch_size(10),
                    recorder(&name, &tx),
                )
                .await
                .unwrap(),
            );
        }
        groups.push((group, lifetimes, rx));
    }
    let sent = send(&c.producer(None, &uri).await, 0..200).await;
    for (group, lifetimes, mut rx) in groups {
        let seen = gather(&mut rx, &sent, WAIT, SETTLE).await;
        assert_exactly_once(&sent, &ids(&seen));
        stop_all(group, lifetimes).await;
    }
}

/// Per ordering key: the ticks in the order their handlers ended, and the keys busy now; counts
/// the times a key was already busy when one of its events started, and the most keys busy at
/// once.
#[derive(Clone, Default)]
struct PerKey {
    state: Arc<Mutex<PerKeyState>>,
}

#[derive(Default)]
struct PerKeyState {
    busy: HashSet<String>,
    order: HashMap<String, Vec<u64>>,
    overlaps: usize,
    most_busy: usize,
}

struct KeyedRecorder(PerKey, mpsc::UnboundedSender<Seen>);

#[async_trait]
impl TicksConsumer for KeyedRecorder {
    async fn tick(&self, ctx: &ConsumerContext, n: u64) -> HandlerResult {
        let key = ctx.metadata().key.clone().ok_or("an event without a key")?;
        {
            let mut st = self.0.state.lock().unwrap();
            if !st.busy.insert(key.clone()) {
                st.overlaps += 1;
            }
            st.most_busy = st.most_busy.max(st.busy.len());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        {
            let mut st = self.0.state.lock().unwrap();
            st.busy.remove(&key);
            st.order.entry(key).or_default().push(n);
        }
        let meta = ctx.metadata().clone();
        self.1.send(Seen {
            consumer: "c".into(),
            n,
            meta,
        })?;
        Ok(())
    }
}

/// 17. 200 events of 3 ordering keys (fewer than the handlers that may run at once), handled by
///     one consumer with `concurrency(4)`: each once, never two of one key at once, each key's in
///     the order sent, and several keys at once.
async fn s17_ordering_keys_with_concurrency_four<C: Channel>(c: C) {
    let uri = unique_name("s17");
    let p = c.producer(None, &uri).await;
    let keyed: Vec<TicksProducer> = (0..3).map(|k| p.with_key(format!("k{k}"))).collect();
    let mut sent = Vec::new();
    for n in 0..200u64 {
        sent.push(keyed[(n % 3) as usize].tick(n).await.unwrap());
    }
    let watch = PerKey::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let spec = Consumer::new(&uri, "g", "c").batch_size(50).concurrency(4);
    let handler = KeyedRecorder(watch.clone(), tx);
    let lifetime = c.subscribe(spec, handler).await.unwrap();
    let seen = gather(&mut rx, &sent, WAIT, SETTLE).await;
    stop("s17", lifetime).await;
    assert_exactly_once(&sent, &ids(&seen));
    let st = watch.state.lock().unwrap();
    assert_eq!(st.overlaps, 0, "two events of one key ran at once");
    for (key, order) in &st.order {
        let k: u64 = key[1..].parse().unwrap();
        let want: Vec<u64> = (0..200).filter(|n| n % 3 == k).collect();
        assert_eq!(order, &want, "the order of key {key}");
    }
    assert!(
        st.most_busy >= 2,
        "concurrency(4) with 3 keys: {} key(s) busy at once at most",
        st.most_busy
    );
}
