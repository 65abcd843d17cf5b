//! Failure paths over real Redis: bad options, an unreachable server, and entries a consumer
//! cannot use, which must never stop it.

mod common;

use std::time::Duration;

use backbone_core::{Error, MessageId, UnknownPolicy};
use backbone_redis::testing::{shared, unique_name, RedisServer, ServerOptions};
use backbone_redis::{DeadLetters, RedisConsumerBuilder, RedisProducerBuilder};
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

/// Writes, with raw commands, one entry for each way an entry can be unusable; returns the
/// stream key and, per entry, the text its dead letter's reason must contain.
async fn write_bad_entries(url: &str, uri: &str) -> (String, Vec<String>) {
    let stream = format!("bb:{{{uri}}}:events");
    let mut raw = raw(url).await;
    let id = MessageId::new().to_string();
    let bad_payload = format!("bb:{{{uri}}}:payload:bad");
    let gone = format!("bb:{{{uri}}}:payload:gone");
    let not_a_hash = format!("bb:{{{uri}}}:payload:string");
    let _: () = raw.set(&not_a_hash, "not a hash").await.unwrap();
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
    let cases: Vec<(Vec<(String, String)>, String)> = vec![
        (
            vec![("foo".into(), "bar".into())],
            "field `message_id` is missing".into(),
        ),
        (
            meta("tick", "not-a-number"),
            "field `version` = \"not-a-number\"".into(),
        ),
        (
            vec![
                ("message_id".into(), "xyz".into()),
                ("operation".into(), "tick".into()),
            ],
            "field `message_id` = \"xyz\"".into(),
        ),
        (
            with_payload(meta("nope", "0"), &bad_payload),
            "has no operation `nope` version 0".into(),
        ),
        (
            with_payload(meta("tick", "9"), &bad_payload),
            "has no operation `tick` version 9".into(),
        ),
        (
            with_payload(meta("tick", "0"), &gone),
            format!("payload `{gone}` is missing"),
        ),
        (
            with_payload(meta("tick", "0"), &bad_payload),
            "cannot decode parameter `n` of operation `tick`: invalid type: string".into(),
        ),
        (
            meta("tick", "0"),
            "cannot decode parameter `n` of operation `tick`: the field is missing".into(),
        ),
        (
            with_payload(meta("tick", "0"), &not_a_hash),
            format!("payload `{not_a_hash}` cannot be read: \"WRONGTYPE\""),
        ),
    ];
    let mut reasons = Vec::new();
    for (fields, reason) in cases {
        let _: String = raw.xadd(&stream, "*", &fields).await.unwrap();
        reasons.push(reason);
    }
    // A field name that is not UTF-8 fails neither the read nor its batch.
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg(&b"\xff\xfe"[..])
        .arg("x")
        .query_async(&mut raw)
        .await
        .unwrap();
    reasons.push("field `message_id` is missing".into());
    (stream, reasons)
}

#[tokio::test]
async fn unusable_entries_are_dead_lettered_with_a_reason_and_the_consumer_goes_on() {
    let redis = shared().await.unwrap();
    let uri = unique_name("bad-entries");
    let (stream, reasons) = write_bad_entries(redis.url(), &uri).await;
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_ticks_producer()
        .await
        .unwrap();
    let sent = send(&producer, 0..5).await;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    assert_exactly_once(&sent, &ids(&collect(&mut rx, 5, WAIT).await));
    let dead = DeadLetters::connect(redis.url(), None, &uri, "default")
        .await
        .unwrap();
    wait_dead_letters(&dead, reasons.len() as u64).await;
    let letters = dead.list(None, 100).await.unwrap();
    assert_eq!(letters.len(), reasons.len());
    for (letter, reason) in letters.iter().zip(&reasons) {
        assert!(
            letter.reason.contains(reason.as_str()),
            "reason {:?} lacks {reason:?}",
            letter.reason
        );
        assert_eq!(letter.group, "default");
        assert_eq!(letter.deliveries, 1, "bad input is not retried: {letter:?}");
    }
    assert!(!lifetime.is_finished(), "the consumer keeps running");
    lifetime.shutdown().await.unwrap(); // flushes the batched acknowledgements
    let mut raw = raw(redis.url()).await;
    let pending: redis::streams::StreamPendingReply =
        raw.xpending(&stream, "default").await.unwrap();
    assert_eq!(pending.count(), 0, "dead letters are acknowledged");
}

#[tokio::test]
async fn unknown_operations_can_be_skipped() {
    let redis = shared().await.unwrap();
    let uri = unique_name("skip-unknown");
    let (stream, _) = write_bad_entries(redis.url(), &uri).await;
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_ticks_producer()
        .await
        .unwrap();
    let sent = send(&producer, 0..3).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .on_unknown(UnknownPolicy::Skip)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    assert_exactly_once(&sent, &ids(&collect(&mut rx, 3, WAIT).await));
    let dead = DeadLetters::connect(redis.url(), None, &uri, "default")
        .await
        .unwrap();
    wait_dead_letters(&dead, 8).await;
    let reasons: Vec<String> = dead
        .list(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.reason)
        .collect();
    assert!(
        reasons.iter().all(|r| !r.contains("has no operation")),
        "unknown operations were skipped: {reasons:?}"
    );
    lifetime.shutdown().await.unwrap(); // flushes the batched acknowledgements
    let mut raw = raw(redis.url()).await;
    let pending: redis::streams::StreamPendingReply =
        raw.xpending(&stream, "default").await.unwrap();
    assert_eq!(pending.count(), 0, "skipped entries are acknowledged");
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

#[tokio::test]
async fn a_stream_deleted_under_a_running_consumer_ends_it_with_an_error() {
    let redis = shared().await.unwrap();
    let uri = unique_name("deleted");
    let (tx, _rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .block(Duration::from_millis(200))
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let mut raw = raw(redis.url()).await;
    let deleted: i64 = raw.del(format!("bb:{{{uri}}}:events")).await.unwrap();
    assert_eq!(deleted, 1);
    let err = tokio::time::timeout(WAIT, lifetime.completion())
        .await
        .expect("the consumer stops on its own")
        .unwrap_err();
    assert!(err.to_string().contains("NOGROUP"), "{err}");
}

#[tokio::test]
async fn an_authentication_failure_ends_the_consumer_with_an_error() {
    // An own server: the test changes its password.
    let server = RedisServer::spawn(ServerOptions::default()).unwrap();
    let uri = unique_name("auth");
    let (tx, _rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(server.url())
        .uri(&uri)
        .block(Duration::from_millis(200))
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let mut raw = raw(server.url()).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret")
        .query_async(&mut raw)
        .await
        .unwrap();
    // Drop every connection, so the consumer must reconnect and authenticate.
    let _: Result<i64, _> = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut raw)
        .await;
    let err = tokio::time::timeout(WAIT, lifetime.completion())
        .await
        .expect("the consumer stops on its own")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("NOAUTH") || text.contains("WRONGPASS") || text.contains("uthentication"),
        "{text}"
    );
}

/// `calls` of `cmdstat_<command>` in `INFO commandstats`.
async fn calls(raw: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(raw)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

#[tokio::test]
async fn an_entry_naming_a_key_outside_its_streams_payloads_is_dead_lettered_unread() {
    // An own server: the test counts the HGETALLs it receives.
    let server = RedisServer::spawn(ServerOptions::default()).unwrap();
    let uri = unique_name("foreign-payload");
    let stream = keys(&uri).stream().to_owned();
    let mut raw = raw(server.url()).await;
    // Hashes a handler would accept, were they read: outside the stream, and another stream's.
    let foreign = "foreign:secret".to_owned();
    let other = format!("bb:{{{}}}:payload:x", unique_name("other"));
    for key in [&foreign, &other] {
        let _: () = raw.hset(key, "n", "42").await.unwrap();
    }
    for key in [&foreign, &other] {
        let fields = [
            ("message_id", MessageId::new().to_string()),
            ("operation", "tick".into()),
            ("version", "0".into()),
            ("produced_at", "1".into()),
            ("payload", key.clone()),
        ];
        let _: String = raw.xadd(&stream, "*", &fields).await.unwrap();
    }
    let sent = send(&producer(server.url(), &uri).await, 0..3).await;
    let hgetall_before = calls(&mut raw, "hgetall").await;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(server.url())
        .uri(&uri)
        .block(Duration::from_millis(100))
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let seen = collect(&mut rx, 3, WAIT).await;
    assert_exactly_once(&sent, &ids(&seen));
    assert!(
        seen.iter().all(|s| s.n != 42),
        "a foreign hash reached the handler"
    );
    let dead = DeadLetters::connect(server.url(), None, &uri, "default")
        .await
        .unwrap();
    wait_dead_letters(&dead, 2).await;
    let letters = dead.list(None, 100).await.unwrap();
    assert_eq!(letters.len(), 2);
    for (letter, key) in letters.iter().zip([&foreign, &other]) {
        let named = format!("field `payload` = {key:?} is not a payload key of this stream");
        assert!(letter.reason.contains(&named), "{:?}", letter.reason);
        assert_eq!(letter.deliveries, 1, "bad input is not retried");
    }
    assert_quiet(&mut rx, Duration::from_millis(200)).await;
    assert!(!lifetime.is_finished(), "the consumer keeps running");
    lifetime.shutdown().await.unwrap();
    assert_eq!(
        calls(&mut raw, "hgetall").await - hgetall_before,
        3,
        "one HGETALL per good event, none for the foreign keys"
    );
    let pending: redis::streams::StreamPendingReply =
        raw.xpending(&stream, "default").await.unwrap();
    assert_eq!(pending.count(), 0, "dead letters are acknowledged");
}
