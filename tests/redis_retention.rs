//! Retention over real Redis: safe trimming never removes what a group still needs nor the
//! payload of a dead letter; `max_len` trims in the background; `payload_ttl` expires payloads.

mod common;

use std::time::Duration;

use backbone_core::{MessageId, StreamAddress};
use backbone_redis::keys::StreamKeys;
use backbone_redis::testing::{shared, unique_name};
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder, StreamAdmin, TrimReport};
use common::*;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamRangeReply;
use redis::AsyncCommands;
use tokio::sync::mpsc;

fn keys(uri: &str) -> StreamKeys {
    StreamKeys::new(&StreamAddress::new(None, uri).unwrap())
}

/// (stream id, message id) of every entry, oldest first.
async fn entries(raw: &mut MultiplexedConnection, uri: &str) -> Vec<(String, MessageId)> {
    let range: StreamRangeReply = raw.xrange_all(keys(uri).stream()).await.unwrap();
    let message_id = |e: &redis::streams::StreamId| {
        let id: String = e.get("message_id").unwrap();
        id.parse().unwrap()
    };
    range
        .ids
        .iter()
        .map(|e| (e.id.clone(), message_id(e)))
        .collect()
}

/// Creates `group` at 0, reads `count` new entries as consumer `c` and acks the first `ack`.
async fn read(raw: &mut MultiplexedConnection, uri: &str, group: &str, count: usize, ack: usize) {
    let stream = keys(uri).stream().to_owned();
    let _: Result<(), _> = raw.xgroup_create(&stream, group, "0").await;
    let options = redis::streams::StreamReadOptions::default()
        .group(group, "c")
        .count(count);
    let reply: redis::streams::StreamReadReply = raw
        .xread_options(&[&stream], &[">"], &options)
        .await
        .unwrap();
    let ids: Vec<String> = reply.keys[0].ids.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), count);
    if ack > 0 {
        let _: i64 = raw.xack(&stream, group, &ids[..ack]).await.unwrap();
    }
}

async fn exists(raw: &mut MultiplexedConnection, key: &str) -> bool {
    raw.exists(key).await.unwrap()
}

#[tokio::test]
async fn trimming_keeps_what_groups_need_and_what_dead_letters_refer_to() {
    let redis = shared().await.unwrap();
    let uri = unique_name("trim-groups");
    let keys = keys(&uri);
    let sent = send(&producer(redis.url(), &uri).await, 0..10).await;
    let mut raw = raw(redis.url()).await;
    read(&mut raw, &uri, "fast", 10, 6).await; // 6..9 pending
    read(&mut raw, &uri, "slow", 3, 3).await; // 3..9 unread
                                              // A dead letter of "fast" refers to entry 1's payload.
    let dead: Vec<(&str, String)> = vec![
        ("message_id", sent[1].to_string()),
        ("payload", keys.payload(&sent[1])),
        ("dead.reason", "test".into()),
    ];
    let _: String = raw
        .xadd(keys.dead_letters("fast"), "*", &dead)
        .await
        .unwrap();
    // ... and holds it, as the dead-letter script records.
    let _: i64 = raw
        .hincr(keys.holds(), sent[1].to_string(), 1)
        .await
        .unwrap();
    let admin = StreamAdmin::connect(redis.url(), None, &uri).await.unwrap();

    let report = admin.trim(0).await.unwrap();
    let expected = TrimReport {
        entries: 3,
        payloads: 2,
        objects: 0,
        held_back_by: Some("slow".into()),
    };
    assert_eq!(report, expected);
    let left: Vec<MessageId> = entries(&mut raw, &uri)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_exactly_once(&sent[3..], &left);
    assert!(!exists(&mut raw, &keys.payload(&sent[0])).await);
    assert!(
        exists(&mut raw, &keys.payload(&sent[1])).await,
        "a dead letter's payload stays"
    );
    assert!(!exists(&mut raw, &keys.payload(&sent[2])).await);
    for id in &sent[3..] {
        assert!(exists(&mut raw, &keys.payload(id)).await);
    }

    read(&mut raw, &uri, "slow", 7, 7).await;
    let report = admin.trim(0).await.unwrap();
    let expected = TrimReport {
        entries: 3,
        payloads: 3,
        objects: 0,
        held_back_by: Some("fast".into()),
    };
    assert_eq!(report, expected, "entries pending in fast stay");
    assert_eq!(admin.len().await.unwrap(), 4);

    let pending: Vec<String> = entries(&mut raw, &uri)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    let _: i64 = raw.xack(keys.stream(), "fast", &pending).await.unwrap();
    let report = admin.trim(0).await.unwrap();
    let expected = TrimReport {
        entries: 4,
        payloads: 4,
        objects: 0,
        held_back_by: None,
    };
    assert_eq!(report, expected);
    assert_eq!(admin.len().await.unwrap(), 0);
    let hashes: Vec<String> = raw.keys(format!("bb:{{{uri}}}:payload:*")).await.unwrap();
    assert_eq!(hashes, vec![keys.payload(&sent[1])]);
    assert_eq!(admin.trim(0).await.unwrap(), TrimReport::default());
}

#[tokio::test]
async fn trim_keeps_the_newest_and_trim_before_drops_the_older() {
    let redis = shared().await.unwrap();
    let uri = unique_name("trim-len");
    let keys = keys(&uri);
    let sent = send(&producer(redis.url(), &uri).await, 0..2500).await;
    let mut raw = raw(redis.url()).await;
    let admin = StreamAdmin::connect(redis.url(), None, &uri).await.unwrap();

    // More than one step of 1000 entries.
    let report = admin.trim(20).await.unwrap();
    let expected = TrimReport {
        entries: 2480,
        payloads: 2480,
        objects: 0,
        held_back_by: None,
    };
    assert_eq!(report, expected);
    let left = entries(&mut raw, &uri).await;
    let ids: Vec<MessageId> = left.iter().map(|e| e.1).collect();
    assert_exactly_once(&sent[2480..], &ids);
    assert!(!exists(&mut raw, &keys.payload(&sent[2479])).await);
    assert!(exists(&mut raw, &keys.payload(&sent[2480])).await);
    assert_eq!(admin.trim(20).await.unwrap(), TrimReport::default());

    let report = admin.trim_before(&left[5].0).await.unwrap();
    assert_eq!((report.entries, report.payloads), (5, 5));
    assert_eq!(admin.len().await.unwrap(), 15);
    let ms = left[5].0.split('-').next().unwrap();
    let older_ms = (ms.parse::<u64>().unwrap() - 1).to_string();
    assert_eq!(
        admin.trim_before(&older_ms).await.unwrap(),
        TrimReport::default()
    );

    // A group that has read nothing holds everything back.
    let _: () = raw.xgroup_create(keys.stream(), "late", "0").await.unwrap();
    let held = TrimReport {
        held_back_by: Some("late".into()),
        ..Default::default()
    };
    assert_eq!(admin.trim(0).await.unwrap(), held);
    assert_eq!(admin.trim_before(&left[19].0).await.unwrap(), held);
    assert_eq!(admin.len().await.unwrap(), 15);
}

#[tokio::test]
async fn max_len_trims_in_the_background() {
    let redis = shared().await.unwrap();
    let uri = unique_name("max-len");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .max_len(100)
        .build_ticks_producer()
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let mut sent = send(&producer, 0..1000).await;
    let mut seen = collect(&mut rx, 1000, WAIT).await;
    let admin = StreamAdmin::connect(redis.url(), None, &uri).await.unwrap();
    let mut raw = raw(redis.url()).await;
    // The last trims may have run while the consumer lagged: a few more sends start new ones.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = 1000;
    loop {
        let len = admin.len().await.unwrap();
        let hashes: Vec<String> = raw.keys(format!("bb:{{{uri}}}:payload:*")).await.unwrap();
        if len <= 200 && hashes.len() as u64 == len {
            assert!(len >= 100, "keeps at least max_len: {len}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {len} entries and {} payloads",
            hashes.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        sent.extend(send(&producer, n..n + 10).await);
        seen.extend(collect(&mut rx, 10, WAIT).await);
        n += 10;
    }
    assert_exactly_once(&sent, &ids(&seen));
    lifetime.shutdown().await.unwrap();
}

#[tokio::test]
async fn payload_ttl_expires_payload_hashes() {
    let redis = shared().await.unwrap();
    let uri = unique_name("ttl");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .payload_ttl(Duration::from_secs(60))
        .build_ticks_producer()
        .await
        .unwrap();
    let id = producer.tick(1).await.unwrap();
    let mut raw = raw(redis.url()).await;
    let ttl: i64 = raw.pttl(keys(&uri).payload(&id)).await.unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "PTTL {ttl}");
}

#[tokio::test]
async fn bad_input_is_a_clear_error() {
    let redis = shared().await.unwrap();
    let uri = unique_name("trim-bad");
    let admin = StreamAdmin::connect(redis.url(), None, &uri).await.unwrap();
    for bad in ["garbage", "", "1-", "-1", "1-2-3", "1.5"] {
        let err = admin.trim_before(bad).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "invalid configuration: invalid stream id {bad:?}: expected <ms>-<seq> or <ms>, \
                 e.g. 1700000000000-0"
            )
        );
    }
    assert_eq!(admin.len().await.unwrap(), 0);
    assert_eq!(admin.trim(0).await.unwrap(), TrimReport::default());
    assert_eq!(admin.trim_before("0").await.unwrap(), TrimReport::default());

    for (environment, uri) in [(None, "has space"), (Some("a:b"), "x"), (None, "{x}")] {
        let err = StreamAdmin::connect(redis.url(), environment, uri)
            .await
            .unwrap_err();
        let mut builder = RedisProducerBuilder::new().url(redis.url()).uri(uri);
        if let Some(environment) = environment {
            builder = builder.environment(environment);
        }
        let expected = builder.build_ticks_producer().await.unwrap_err();
        assert!(matches!(err, backbone_core::Error::Config(_)), "{err:?}");
        assert_eq!(err.to_string(), expected.to_string());
    }
    let err = StreamAdmin::connect("http://nope", None, "x")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid configuration: invalid Redis URL \"http://nope\""),
        "{err}"
    );
}

#[tokio::test]
async fn a_replayed_event_keeps_its_payload_until_its_last_reference_goes() {
    let redis = shared().await.unwrap();
    let uri = unique_name("trim-replayed");
    let keys = keys(&uri);
    let sent = send(&producer(redis.url(), &uri).await, 0..3).await;
    // Tick 1 fails once and is dead-lettered; the other ticks are handled.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let failing = TickRecorder {
        fail: |n| n == 1,
        ..TickRecorder::new("c", tx.clone())
    };
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .group("g")
        .retry(quick_retry(1))
        .subscribe_ticks_consumer(failing)
        .await
        .unwrap();
    let dead = backbone_redis::DeadLetters::connect(redis.url(), None, &uri, "g")
        .await
        .unwrap();
    wait_dead_letters(&dead, 1).await;
    collect(&mut rx, 2, WAIT).await;
    lifetime.shutdown().await.unwrap();
    let mut raw = raw(redis.url()).await;
    let held: Option<u64> = raw.hget(keys.holds(), sent[1].to_string()).await.unwrap();
    assert_eq!(held, Some(1), "the dead letter holds the payload");

    // Replay it, then trim the three original entries: the replayed entry keeps the payload.
    let letter = dead.list(None, 1).await.unwrap().remove(0);
    dead.replay(&letter.id).await.unwrap();
    let admin = StreamAdmin::connect(redis.url(), None, &uri).await.unwrap();
    let report = admin.trim(1).await.unwrap();
    let expected = TrimReport {
        entries: 3,
        payloads: 2,
        objects: 0,
        held_back_by: None,
    };
    assert_eq!(report, expected);
    assert!(exists(&mut raw, &keys.payload(&sent[1])).await);
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .group("g")
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let seen = collect(&mut rx, 1, WAIT).await;
    assert_eq!((seen[0].n, seen[0].meta.message_id), (1, sent[1]));
    lifetime.shutdown().await.unwrap();

    // Its last entry trimmed, nothing holds the payload any more.
    let report = admin.trim(0).await.unwrap();
    assert_eq!((report.entries, report.payloads), (1, 1));
    assert!(!exists(&mut raw, &keys.payload(&sent[1])).await);
    let holds: u64 = raw.hlen(keys.holds()).await.unwrap();
    assert_eq!(holds, 0);
}

#[tokio::test]
async fn purging_the_last_reference_releases_the_payload() {
    let redis = shared().await.unwrap();
    let uri = unique_name("purge-release");
    let keys = keys(&uri);
    let sent = send(&producer(redis.url(), &uri).await, 0..2).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Two groups give up on tick 0: two dead letters hold its payload.
    let mut lifetimes = Vec::new();
    for group in ["a", "b"] {
        let failing = TickRecorder {
            fail: |n| n == 0,
            ..TickRecorder::new(group, tx.clone())
        };
        let lifetime = RedisConsumerBuilder::new()
            .url(redis.url())
            .uri(&uri)
            .group(group)
            .retry(quick_retry(1))
            .subscribe_ticks_consumer(failing)
            .await
            .unwrap();
        lifetimes.push(lifetime);
    }
    let open =
        |group: &'static str| backbone_redis::DeadLetters::connect(redis.url(), None, &uri, group);
    let (a, b) = (open("a").await.unwrap(), open("b").await.unwrap());
    wait_dead_letters(&a, 1).await;
    wait_dead_letters(&b, 1).await;
    collect(&mut rx, 2, WAIT).await;
    for lifetime in lifetimes {
        lifetime.shutdown().await.unwrap();
    }
    let mut raw = raw(redis.url()).await;
    let admin = StreamAdmin::connect(redis.url(), None, &uri).await.unwrap();
    let report = admin.trim(0).await.unwrap();
    assert_eq!(
        (report.entries, report.payloads),
        (2, 1),
        "tick 0's payload is held"
    );
    assert_eq!(a.purge_all().await.unwrap(), 1);
    assert!(
        exists(&mut raw, &keys.payload(&sent[0])).await,
        "b still holds it"
    );
    assert_eq!(b.purge_all().await.unwrap(), 1);
    assert!(!exists(&mut raw, &keys.payload(&sent[0])).await);
    let holds: u64 = raw.hlen(keys.holds()).await.unwrap();
    assert_eq!(holds, 0);
}
