//! Failure paths over real Redis: bad options, an unreachable server, and entries a consumer
//! cannot use, which must never stop it.

mod common;

use std::time::Duration;

use backbone_core::{Error, MessageId};
use backbone_redis::testing::{shared, unique_name};
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder};
use common::*;
use redis::AsyncCommands;
use tokio::sync::mpsc;

#[tokio::test]
async fn bad_options_name_what_is_wrong() {
    let redis = shared().await.unwrap();
    let err = RedisProducerBuilder::new()
        .url(redis.url())
        .uri("has space")
        .build_ticks_producer()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: uri \"has space\" contains whitespace at byte 3"
    );
    let err = RedisProducerBuilder::new()
        .url(redis.url())
        .build_ticks_producer()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: uri is required: call .uri(\"...\")"
    );
    let err = RedisProducerBuilder::new()
        .url(redis.url())
        .environment("a:b")
        .uri("x")
        .build_ticks_producer()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: environment \"a:b\" contains `:` at byte 1"
    );
    let err = RedisProducerBuilder::new()
        .url("http://nope")
        .uri("x")
        .build_ticks_producer()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid configuration: invalid Redis URL \"http://nope\""),
        "{err}"
    );

    let (tx, _rx) = mpsc::unbounded_channel();
    let err = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri("x")
        .group("{tag}")
        .subscribe_ticks_consumer(TickRecorder::new("c", tx.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: group \"{tag}\" contains `{` at byte 0"
    );
    let err = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri("x")
        .batch_size(0)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: batch_size must be at least 1"
    );
    let err = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri("x")
        .block(Duration::ZERO)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("block must be longer than zero"),
        "{err}"
    );
}

/// A loopback port nobody listens on.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("redis://127.0.0.1:{port}/")
}

#[tokio::test]
async fn an_unreachable_redis_is_a_typed_error_saying_where() {
    let url = dead_url();
    let err = RedisProducerBuilder::new()
        .url(&url)
        .uri("x")
        .build_ticks_producer()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Channel { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("connect to 127.0.0.1:"),
        "{err}"
    );
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = RedisConsumerBuilder::new()
        .url(&url)
        .uri("x")
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Channel { .. }), "{err:?}");
}

#[tokio::test]
async fn sending_to_a_key_of_another_type_fails_before_writing_anything() {
    let redis = shared().await.unwrap();
    let uri = unique_name("wrongtype");
    let mut raw = raw(redis.url()).await;
    let stream = format!("bb:{{{uri}}}:events");
    let _: () = raw.set(&stream, "not a stream").await.unwrap();
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_ticks_producer()
        .await
        .unwrap();
    let err = producer.tick(1).await.unwrap_err();
    assert!(
        err.to_string().contains("holds a string, not a stream"),
        "{err}"
    );
    let payloads: Vec<String> = raw.keys(format!("bb:{{{uri}}}:payload:*")).await.unwrap();
    assert!(
        payloads.is_empty(),
        "no payload hash left behind: {payloads:?}"
    );
}

#[tokio::test]
async fn entries_a_consumer_cannot_use_do_not_stop_it() {
    let redis = shared().await.unwrap();
    let uri = unique_name("bad-entries");
    let stream = format!("bb:{{{uri}}}:events");
    let mut raw = raw(redis.url()).await;
    let id = MessageId::new().to_string();
    let bad_payload = format!("bb:{{{uri}}}:payload:bad");
    let _: () = raw
        .hset(&bad_payload, "n", "\"not a number\"")
        .await
        .unwrap();
    let meta = |op: &str, version: &str| {
        vec![
            ("message_id".to_owned(), id.clone()),
            ("operation".to_owned(), op.to_owned()),
            ("version".to_owned(), version.to_owned()),
            ("produced_at".to_owned(), "1".to_owned()),
        ]
    };
    let with_payload = |mut fields: Vec<(String, String)>, key: &str| {
        fields.push(("payload".to_owned(), key.to_owned()));
        fields
    };
    let bad_entries: Vec<Vec<(String, String)>> = vec![
        vec![("foo".into(), "bar".into())], // no metadata at all
        meta("tick", "not-a-number"),       // malformed version
        vec![
            ("message_id".into(), "xyz".into()),
            ("operation".into(), "tick".into()),
        ], // bad id
        with_payload(meta("nope", "0"), &bad_payload), // unknown operation
        with_payload(meta("tick", "9"), &bad_payload), // unknown version
        with_payload(meta("tick", "0"), &format!("bb:{{{uri}}}:payload:gone")), // missing hash
        with_payload(meta("tick", "0"), &bad_payload), // undecodable parameter
        meta("tick", "0"),                  // parameter missing
    ];
    for fields in &bad_entries {
        let _: String = raw.xadd(&stream, "*", fields).await.unwrap();
    }
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_ticks_producer()
        .await
        .unwrap();
    let mut sent = Vec::new();
    for n in 0..5 {
        sent.push(producer.tick(n).await.unwrap());
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let seen = collect(&mut rx, 5, WAIT).await;
    assert_exactly_once(
        &sent,
        &seen.iter().map(|s| s.meta.message_id).collect::<Vec<_>>(),
    );
    assert_quiet(&mut rx, Duration::from_millis(300)).await;
    assert!(!lifetime.is_finished(), "the consumer keeps running");
    // Until dead letters exist, unusable entries stay pending: nothing is dropped silently.
    let pending: redis::streams::StreamPendingReply =
        raw.xpending(&stream, "default").await.unwrap();
    assert_eq!(pending.count(), bad_entries.len());
    lifetime.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_group_destroyed_under_a_running_consumer_ends_it_with_an_error() {
    let redis = shared().await.unwrap();
    let uri = unique_name("destroyed");
    let (tx, _rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .group("doomed")
        .block(Duration::from_millis(200))
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let mut raw = raw(redis.url()).await;
    let destroyed: i64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(format!("bb:{{{uri}}}:events"))
        .arg("doomed")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(destroyed, 1);
    let err = tokio::time::timeout(WAIT, lifetime.completion())
        .await
        .expect("the consumer stops on its own")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("XREADGROUP on bb:{") && text.contains("NOGROUP"),
        "{text}"
    );
}
