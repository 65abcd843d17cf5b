//! Errors that retrying cannot fix end a running consumer: `completion()` returns the `Err`,
//! naming the refused command. Each test runs a Redis of its own with an ACL user `u` that may
//! do everything the consumer needs on backbone's keys except ONE thing (or whose password is
//! rotated, or who is disabled, under a running consumer). Events are written by the default
//! user. No error text and no log line may contain the password.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backbone_core::{async_trait, AckMode, ConsumerContext, HandlerResult, RetryPolicy};
use backbone_redis::testing::{unique_name, RedisServer, ServerOptions};
use backbone_redis::RedisConsumerBuilder;
use common::*;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

const PASSWORD: &str = "pw-Zq81fK3";
const NEW_PASSWORD: &str = "rotated-Xv92mL";

/// Every log line of this test binary, to check that none names a password.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buffer
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        eprint!("{}", String::from_utf8_lossy(buf)); // shown for a failing test
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A server of the test's own with user `u` (password [`PASSWORD`]) allowed everything on
/// `bb:*` keys but `minus` (e.g. `["-xack"]`); returns the server, an admin connection (the
/// default user) and `u`'s url.
async fn server_with_user(minus: &[&str]) -> (RedisServer, MultiplexedConnection, String) {
    logs();
    let server = RedisServer::spawn(ServerOptions::default()).unwrap();
    let mut admin = raw(server.url()).await;
    let mut acl = redis::cmd("ACL");
    acl.arg("SETUSER")
        .arg("u")
        .arg("on")
        .arg(format!(">{PASSWORD}"))
        .arg("~bb:*")
        .arg("+@all");
    for rule in minus {
        acl.arg(*rule);
    }
    let _: () = acl.query_async(&mut admin).await.unwrap();
    let url = format!("redis://u:{PASSWORD}@127.0.0.1:{}/", server.port());
    (server, admin, url)
}

fn consumer(url: &str, uri: &str) -> RedisConsumerBuilder {
    RedisConsumerBuilder::new()
        .url(url)
        .uri(uri)
        .name("c-1")
        .block(Duration::from_millis(100))
        .shutdown_grace(Duration::from_secs(2))
        .retry(RetryPolicy {
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            max_deliveries: 3,
        })
}

/// Waits (at most [`WAIT`]) for the consumer to stop on its own; returns its error's text,
/// checked to name no password, in the error and in the logs.
async fn stopped_with_error(lifetime: backbone_core::ConsumerLifetime) -> String {
    let result = tokio::time::timeout(WAIT, lifetime.completion())
        .await
        .expect("the consumer stops on its own");
    let text = result
        .expect_err("the consumer stops with an error")
        .to_string();
    for secret in [PASSWORD, NEW_PASSWORD] {
        assert!(!text.contains(secret), "the error names a password: {text}");
        let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
        assert!(!logs.contains(secret), "a log line names a password");
    }
    text
}

/// Whether `text` carries Redis's NOPERM refusal (redis-rs shows the code as `NoPerm`).
fn refused(text: &str) -> bool {
    text.to_uppercase().contains("NOPERM")
}

/// Asserts `text` carries Redis's refusal of `command`, and our own context naming it.
fn assert_refused(text: &str, command: &str) {
    assert!(refused(text), "{text}");
    assert!(
        text.contains(command),
        "our context names {command}: {text}"
    );
    let lower = command.to_lowercase();
    assert!(
        text.contains(&format!("'{lower}'")),
        "Redis's text names '{lower}': {text}"
    );
}

#[tokio::test]
async fn a_refused_xack_ends_the_consumer() {
    let (server, _admin, url) = server_with_user(&["-xack"]).await;
    let uri = unique_name("fatal-xack");
    let sent = send(&producer(server.url(), &uri).await, 0..3).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = consumer(&url, &uri)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let text = stopped_with_error(lifetime).await;
    assert_refused(&text, "XACK");
    let mut seen = Vec::new();
    while let Ok(s) = rx.try_recv() {
        seen.push(s.meta.message_id);
    }
    assert!(!seen.is_empty(), "events were handled before the XACK");
    assert!(seen.len() <= sent.len(), "each handled once: {seen:?}");
}

/// Acks by hand under [`AckMode::Manual`] and reports what `ctx.ack()` returned.
struct ManualAcker(mpsc::UnboundedSender<Result<(), String>>);

#[async_trait]
impl TicksConsumer for ManualAcker {
    async fn tick(&self, ctx: &ConsumerContext, _n: u64) -> HandlerResult {
        let acked = ctx.ack().await.map_err(|e| e.to_string());
        self.0.send(acked.clone())?;
        acked?;
        Ok(())
    }
}

#[tokio::test]
async fn a_refused_ack_from_the_handler_ends_the_consumer() {
    let (server, _admin, url) = server_with_user(&["-xack"]).await;
    let uri = unique_name("fatal-ctx-ack");
    send(&producer(server.url(), &uri).await, 0..1).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = consumer(&url, &uri)
        .ack(AckMode::Manual)
        .subscribe_ticks_consumer(ManualAcker(tx))
        .await
        .unwrap();
    let acked = collect(&mut rx, 1, WAIT).await.remove(0);
    assert_refused(&acked.expect_err("ctx.ack() fails"), "XACK");
    let text = stopped_with_error(lifetime).await;
    assert_refused(&text, "XACK");
}

#[tokio::test]
async fn a_refused_xautoclaim_ends_the_consumer() {
    let (_server, _admin, url) = server_with_user(&["-xautoclaim"]).await;
    let uri = unique_name("fatal-xautoclaim");
    let (tx, _rx) = mpsc::unbounded_channel();
    let lifetime = consumer(&url, &uri)
        .claim_min_idle(Duration::from_millis(100))
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let text = stopped_with_error(lifetime).await;
    assert_refused(&text, "XAUTOCLAIM");
}

#[tokio::test]
async fn a_refused_xclaim_of_a_retried_event_ends_the_consumer() {
    let (server, _admin, url) = server_with_user(&["-xclaim"]).await;
    let uri = unique_name("fatal-xclaim");
    send(&producer(server.url(), &uri).await, 0..1).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let (failures_tx, mut failures) = mpsc::unbounded_channel();
    let mut recorder = TickRecorder::new("c", tx);
    recorder.fail = |_| true;
    recorder.failures = Some(failures_tx);
    let lifetime = consumer(&url, &uri)
        .subscribe_ticks_consumer(recorder)
        .await
        .unwrap();
    collect(&mut failures, 1, WAIT).await;
    let text = stopped_with_error(lifetime).await;
    assert_refused(&text, "XCLAIM");
    assert!(
        failures.try_recv().is_err(),
        "not delivered again without a claim"
    );
}

#[tokio::test]
async fn a_refused_dead_letter_script_ends_the_consumer() {
    let (_server, mut admin, url) = server_with_user(&["-evalsha", "-eval"]).await;
    let uri = unique_name("fatal-bury");
    let _: String = redis::cmd("XADD")
        .arg(keys(&uri).stream())
        .arg("*")
        .arg("foo")
        .arg("bar")
        .query_async(&mut admin)
        .await
        .unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let lifetime = consumer(&url, &uri)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let text = stopped_with_error(lifetime).await;
    assert!(text.contains("dead-letter"), "{text}");
    assert!(refused(&text) && text.contains("'evalsha'"), "{text}");
}

#[tokio::test]
async fn a_refused_payload_fetch_ends_the_consumer() {
    let (server, _admin, url) = server_with_user(&["-hgetall"]).await;
    let uri = unique_name("fatal-fetch");
    send(&producer(server.url(), &uri).await, 0..1).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let lifetime = consumer(&url, &uri)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let text = stopped_with_error(lifetime).await;
    assert!(text.contains("fetch payloads of"), "{text}");
    assert!(refused(&text) && text.contains("'hgetall'"), "{text}");
}

#[tokio::test]
async fn a_refused_xinfo_of_remove_idle_consumers_ends_the_consumer() {
    let (_server, _admin, url) = server_with_user(&["-xinfo"]).await;
    let uri = unique_name("fatal-xinfo");
    let (tx, _rx) = mpsc::unbounded_channel();
    let lifetime = consumer(&url, &uri)
        .claim_min_idle(Duration::from_millis(100))
        .remove_idle_consumers(Duration::from_secs(60))
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let text = stopped_with_error(lifetime).await;
    assert!(text.contains("XINFO CONSUMERS"), "{text}");
    assert!(
        refused(&text) && text.contains("'xinfo|consumers'"),
        "{text}"
    );
}

#[tokio::test]
async fn a_refused_xgroup_delconsumer_ends_the_consumer() {
    let (_server, mut admin, url) = server_with_user(&["-xgroup|delconsumer"]).await;
    let uri = unique_name("fatal-delconsumer");
    let stream = keys(&uri).stream().to_owned();
    for args in [
        &["CREATE", &stream, "default", "0", "MKSTREAM"][..],
        &["CREATECONSUMER", &stream, "default", "old"][..],
    ] {
        let _: redis::Value = redis::cmd("XGROUP")
            .arg(args)
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await; // "old" is idle longer than 1 ms
    let (tx, _rx) = mpsc::unbounded_channel();
    let lifetime = consumer(&url, &uri)
        .claim_min_idle(Duration::from_millis(100))
        .remove_idle_consumers(Duration::from_millis(1))
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let text = stopped_with_error(lifetime).await;
    assert!(text.contains("XGROUP DELCONSUMER old"), "{text}");
    assert!(
        refused(&text) && text.contains("'xgroup|delconsumer'"),
        "{text}"
    );
}

/// Starts a consumer as `u`, checks it handles an event, applies `change` to `u` and kills
/// `u`'s connections: the consumer must stop with an authentication error.
async fn lose_authentication(change: &[&str]) -> String {
    let (server, mut admin, url) = server_with_user(&[]).await;
    let uri = unique_name("fatal-auth");
    let producer = producer(server.url(), &uri).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = consumer(&url, &uri)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let sent = send(&producer, 0..1).await;
    assert_exactly_once(&sent, &ids(&collect(&mut rx, 1, WAIT).await));
    let mut acl = redis::cmd("ACL");
    acl.arg("SETUSER").arg("u");
    for rule in change {
        acl.arg(*rule);
    }
    let _: () = acl.query_async(&mut admin).await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg("u")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        killed >= 2,
        "the reader's and the commands' connections: {killed}"
    );
    let text = stopped_with_error(lifetime).await;
    assert!(
        text.contains("WRONGPASS") || text.contains("uthentication"),
        "{text}"
    );
    text
}

#[tokio::test]
async fn a_rotated_password_ends_the_consumer() {
    let rotated = format!(">{NEW_PASSWORD}");
    lose_authentication(&["resetpass", &rotated]).await;
}

#[tokio::test]
async fn a_disabled_user_ends_the_consumer() {
    lose_authentication(&["off"]).await;
}
