//! Round trips over real Redis: every kind of parameter, the metadata, and the key layout.

mod common;

use std::collections::BTreeMap;

use backbone_core::metadata::now_millis;
use backbone_redis::testing::{shared, unique_name};
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder};
use common::*;
use redis::AsyncCommands;
use tokio::sync::mpsc;

#[tokio::test]
async fn every_parameter_kind_round_trips() {
    let redis = shared().await.unwrap();
    let uri = unique_name("kinds");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_kinds_producer()
        .await
        .unwrap();
    let sent = kinds_cases();
    let mut ids = Vec::new();
    for event in &sent {
        ids.push(producer.producer().send(event).await.unwrap());
    }

    assert_kinds_consumed(redis.url(), &uri, &ids, &sent).await;
}

#[tokio::test]
async fn each_parameter_is_one_field_of_the_payload_hash() {
    let redis = shared().await.unwrap();
    let uri = unique_name("layout");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .environment("test")
        .uri(&uri)
        .build_kinds_producer()
        .await
        .unwrap();
    let id = producer.integers(-1, 2, 3, 4).await.unwrap();
    producer.unit().await.unwrap();

    let mut raw = raw(redis.url()).await;
    let payload = format!("bb:{{test:{uri}}}:payload:{id}");
    let hash: BTreeMap<String, String> = raw.hgetall(&payload).await.unwrap();
    let expected: BTreeMap<String, String> = [("a", "-1"), ("b", "2"), ("c", "3"), ("d", "4")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(hash, expected);

    let stream = format!("bb:{{test:{uri}}}:events");
    let entries: redis::streams::StreamRangeReply = raw.xrange_all(&stream).await.unwrap();
    assert_eq!(entries.ids.len(), 2);
    let first = &entries.ids[0];
    let field = |name: &str| {
        first
            .get::<String>(name)
            .unwrap_or_else(|| panic!("field {name}"))
    };
    assert_eq!(field("message_id"), id.to_string());
    assert_eq!(field("operation"), "integers");
    assert_eq!(field("version"), "0");
    assert_eq!(field("payload"), payload);
    assert!(field("produced_at").parse::<u64>().is_ok());
    // An operation without parameters writes no hash and names none.
    assert!(entries.ids[1].get::<String>("payload").is_none());
    assert_eq!(entries.ids[1].get::<String>("operation").unwrap(), "unit");
}

#[tokio::test]
async fn metadata_is_what_the_producer_sent() {
    let redis = shared().await.unwrap();
    let uri = unique_name("meta");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .environment("staging")
        .uri(&uri)
        .build_kinds_producer()
        .await
        .unwrap();
    let before = now_millis();
    let id = producer.versioned(41).await.unwrap();
    let after = now_millis();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .environment("staging")
        .uri(&uri)
        .subscribe_kinds_consumer(KindsRecorder(tx))
        .await
        .unwrap();
    let (meta, event) = collect(&mut rx, 1, WAIT).await.remove(0);
    lifetime.shutdown().await.unwrap();

    let mut raw = raw(redis.url()).await;
    let stream = format!("bb:{{staging:{uri}}}:events");
    let entries: redis::streams::StreamRangeReply = raw.xrange_all(&stream).await.unwrap();
    assert_eq!(meta.message_id, id);
    assert_eq!(meta.operation, "versioned");
    assert_eq!(meta.version, 2);
    assert_eq!(meta.environment.as_deref(), Some("staging"));
    assert_eq!(meta.uri, uri);
    assert_eq!(meta.stream_id, entries.ids[0].id);
    assert!(
        before <= meta.produced_at && meta.produced_at <= after,
        "{before} <= {} <= {after}",
        meta.produced_at
    );
    assert_eq!(meta.delivery_count, 1);
    assert!(matches!(event, KindsEvent::Versioned { n: 41 }));
    // Acknowledged on success: nothing left pending.
    let pending: redis::streams::StreamPendingReply =
        raw.xpending(&stream, "default").await.unwrap();
    assert_eq!(pending.count(), 0);
}

/// Regression: `-1.5e-300` was received as `-1.4999999999999998e-300` (serde_json without
/// `float_roundtrip`). Every value must come back bit for bit.
#[tokio::test]
async fn floats_round_trip_bit_for_bit() {
    let floats = FLOATS;
    let redis = shared().await.unwrap();
    let uri = unique_name("floats");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_kinds_producer()
        .await
        .unwrap();
    for f in floats {
        producer.float_bool(f, true).await.unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
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
