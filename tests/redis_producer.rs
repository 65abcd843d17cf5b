//! The Redis producer over real Redis: a resent event is written once, a send survives a Redis
//! restart, and a send that cannot succeed within `send_timeout` says what failed.

mod common;

use std::time::{Duration, Instant};

use backbone_core::{Error, MessageId, OutgoingEvent, Publish};
use backbone_redis::testing::{shared, unique_name, RedisServer, ServerOptions};
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder};
use common::*;
use redis::AsyncCommands;
use tokio::sync::mpsc;

#[tokio::test]
async fn a_resent_event_with_parameters_is_written_once() {
    let redis = shared().await.unwrap();
    let uri = unique_name("resend");
    let publisher = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_publisher()
        .await
        .unwrap();
    let event = outgoing(&TicksEvent::Tick { n: 7 });
    let id = event.message_id;
    assert_eq!(publisher.publish(event.clone()).await.unwrap(), id);
    assert_eq!(
        publisher.publish(event).await.unwrap(),
        id,
        "the resend is Ok"
    );
    assert_exactly_once(&[id], &stream_ids(redis.url(), &uri).await);
    let mut raw = raw(redis.url()).await;
    let hashes: Vec<String> = raw.keys(format!("bb:{{{uri}}}:payload:*")).await.unwrap();
    assert_eq!(hashes, vec![keys(&uri).payload(&id)]);
    let records: Vec<String> = raw.keys(format!("bb:{{{uri}}}:sent:*")).await.unwrap();
    assert!(records.is_empty(), "no extra key per event: {records:?}");

    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let seen = collect(&mut rx, 1, WAIT).await;
    assert_quiet(&mut rx, Duration::from_millis(300)).await;
    assert_exactly_once(&[id], &ids(&seen));
    assert_eq!(seen[0].n, 7);
    lifetime.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_resent_event_without_parameters_is_written_once() {
    let redis = shared().await.unwrap();
    let uri = unique_name("resend-unit");
    let publisher = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_publisher()
        .await
        .unwrap();
    let event = outgoing(&KindsEvent::Unit {});
    assert!(event.fields.is_empty());
    let id = event.message_id;
    assert_eq!(publisher.publish(event.clone()).await.unwrap(), id);
    assert_eq!(
        publisher.publish(event).await.unwrap(),
        id,
        "the resend is Ok"
    );
    assert_exactly_once(&[id], &stream_ids(redis.url(), &uri).await);
    let mut raw = raw(redis.url()).await;
    let hashes: Vec<String> = raw.keys(format!("bb:{{{uri}}}:payload:*")).await.unwrap();
    assert!(hashes.is_empty(), "{hashes:?}");
    // The sent-record holds the entry's stream id, for 10 minutes.
    let record = keys(&uri).sent(&id);
    let stream_id: String = raw.get(&record).await.unwrap();
    let entries: redis::streams::StreamRangeReply =
        raw.xrange_all(keys(&uri).stream()).await.unwrap();
    assert_eq!(stream_id, entries.ids[0].id);
    let ttl: i64 = raw.pttl(&record).await.unwrap();
    assert!(ttl > 0 && ttl <= 600_000, "PTTL {ttl}");

    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .subscribe_kinds_consumer(KindsRecorder(tx))
        .await
        .unwrap();
    let seen = collect(&mut rx, 1, WAIT).await;
    assert_quiet(&mut rx, Duration::from_millis(300)).await;
    let received: Vec<MessageId> = seen.iter().map(|(meta, _)| meta.message_id).collect();
    assert_exactly_once(&[id], &received);
    assert!(matches!(seen[0].1, KindsEvent::Unit {}));
    lifetime.shutdown().await.unwrap();
}

/// Runs `f` on the server in a blocking task and gives the server back.
async fn blocking<T: Send + 'static>(
    mut server: RedisServer,
    f: impl FnOnce(&mut RedisServer) -> T + Send + 'static,
) -> (RedisServer, T) {
    tokio::task::spawn_blocking(move || {
        let out = f(&mut server);
        (server, out)
    })
    .await
    .unwrap()
}

async fn spawn_server() -> RedisServer {
    let options = ServerOptions {
        appendonly: true,
        ..Default::default()
    };
    tokio::task::spawn_blocking(move || RedisServer::spawn(options))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_send_while_redis_restarts_is_written_once() {
    let server = spawn_server().await;
    let url = server.url().to_owned();
    let uri = unique_name("restart");
    let publisher = RedisProducerBuilder::new()
        .url(&url)
        .uri(&uri)
        .build_publisher()
        .await
        .unwrap();
    let before = publisher
        .publish(outgoing(&TicksEvent::Tick { n: 1 }))
        .await
        .unwrap();

    let (server, stopped) = blocking(server, |s| s.stop()).await;
    stopped.unwrap();
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (server, started) = blocking(server, |s| s.start()).await;
        started.unwrap();
        server
    });
    let started = Instant::now();
    let during = publisher
        .publish(outgoing(&TicksEvent::Tick { n: 2 }))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "Redis was down"
    );
    let server = restart.await.unwrap();
    assert_exactly_once(&[before, during], &stream_ids(&url, &uri).await);
    drop(server);
}

#[tokio::test]
async fn a_send_while_redis_is_busy_is_retried() {
    let options = ServerOptions {
        extra_args: vec!["--busy-reply-threshold".into(), "100".into()],
        ..Default::default()
    };
    let server = tokio::task::spawn_blocking(move || RedisServer::spawn(options))
        .await
        .unwrap()
        .unwrap();
    let uri = unique_name("busy");
    let publisher = RedisProducerBuilder::new()
        .url(server.url())
        .uri(&uri)
        .build_publisher()
        .await
        .unwrap();
    // A script that keeps Redis busy for 800 ms: past 100 ms, other clients get BUSY.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(WAIT));
    let mut busy = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let spin = tokio::spawn(async move {
        let script = redis::Script::new(
            "local t = redis.call('TIME') local t0 = t[1] * 1000000 + t[2] \
             repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - t0 > 800000 return 1",
        );
        let done: i64 = script.invoke_async(&mut busy).await.unwrap();
        done
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let id = publisher
        .publish(outgoing(&TicksEvent::Tick { n: 1 }))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200), "it waited");
    assert_eq!(spin.await.unwrap(), 1);
    assert_exactly_once(&[id], &stream_ids(server.url(), &uri).await);
}

#[tokio::test]
async fn a_send_while_redis_stays_down_fails_after_send_timeout_saying_why() {
    let server = spawn_server().await;
    let url = server.url().to_owned();
    let uri = unique_name("down");
    let send_timeout = Duration::from_millis(1500);
    let publisher = RedisProducerBuilder::new()
        .url(&url)
        .uri(&uri)
        .send_timeout(send_timeout)
        .build_publisher()
        .await
        .unwrap();
    let (server, stopped) = blocking(server, |s| s.stop()).await;
    stopped.unwrap();

    // The first send finds the old connection broken: it cannot know whether Redis ran the
    // script before the connection closed, and must say so unless a later attempt found out.
    let first = outgoing(&TicksEvent::Tick { n: 1 });
    let err = publisher.publish(first.clone()).await.unwrap_err();
    let text = check_gave_up(&err, &first, &uri, send_timeout);
    assert!(
        text.ends_with("; the event was not written")
            || text.ends_with(
                "; the event may or may not have been written: the outcome of attempt 1 is unknown"
            ),
        "{text}"
    );
    // The next send never reaches Redis: it knows the event was not written.
    let started = Instant::now();
    let second = outgoing(&TicksEvent::Tick { n: 2 });
    let err = publisher.publish(second.clone()).await.unwrap_err();
    let elapsed = started.elapsed();
    let text = check_gave_up(&err, &second, &uri, send_timeout);
    assert!(text.ends_with("; the event was not written"), "{text}");
    assert!(
        elapsed >= send_timeout - Duration::from_millis(1000)
            && elapsed <= send_timeout + Duration::from_millis(500),
        "retried for about send_timeout: {elapsed:?}"
    );

    let (server, started) = blocking(server, |s| s.start()).await;
    started.unwrap();
    assert!(stream_ids(&url, &uri).await.is_empty());
    drop(server);
}

/// Checks the error of a send that gave up on a stopped Redis; returns its text.
fn check_gave_up(err: &Error, event: &OutgoingEvent, uri: &str, timeout: Duration) -> String {
    assert!(matches!(err, Error::Channel { .. }), "{err:?}");
    let text = err.to_string();
    let context = format!(
        "publish tick (message {}) to bb:{{{uri}}}:events: ",
        event.message_id
    );
    assert!(text.starts_with(&context), "{text}");
    assert!(
        text.contains("Connection refused"),
        "names what failed: {text}"
    );
    assert!(
        text.contains("; gave up after ") && text.contains(&format!("(send_timeout {timeout:?})")),
        "{text}"
    );
    text
}

#[tokio::test]
async fn a_permanent_error_fails_at_once() {
    let redis = shared().await.unwrap();
    let uri = unique_name("permanent");
    let mut raw = raw(redis.url()).await;
    let _: () = raw.set(keys(&uri).stream(), "not a stream").await.unwrap();
    let publisher = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .send_timeout(Duration::from_secs(10))
        .build_publisher()
        .await
        .unwrap();
    let started = Instant::now();
    let err = publisher
        .publish(outgoing(&TicksEvent::Tick { n: 1 }))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "no retries");
    let text = err.to_string();
    assert!(
        text.ends_with("holds a string, not a stream; the event was not written"),
        "{text}"
    );
}

#[tokio::test]
async fn timeouts_are_checked() {
    let redis = shared().await.unwrap();
    let err = RedisProducerBuilder::new()
        .url(redis.url())
        .uri("x")
        .send_timeout(Duration::ZERO)
        .build_publisher()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: send_timeout must be longer than zero"
    );
    let err = RedisProducerBuilder::new()
        .url(redis.url())
        .uri("x")
        .payload_ttl(Duration::from_secs(5))
        .build_ticks_producer()
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "invalid configuration: payload_ttl (5s) must be longer than send_timeout (5s)"
        ),
        "{err}"
    );
}
