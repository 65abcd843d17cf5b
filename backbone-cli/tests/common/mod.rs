//! What the `backbone` command's tests share: a contract to produce with, a handler that
//! dead-letters, the command with only the flags' settings, and reading its output.

#![allow(dead_code)] // each test file uses its own part

use std::time::Duration;

use assert_cmd::Command;
use backbone_core::{
    async_trait, events_contract, ConsumerContext, HandlerResult, MessageId, RetryPolicy,
};
use backbone_redis::testing::shared;
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder};
use serde_json::Value;

#[events_contract]
pub trait Orders {
    async fn placed(&self, order: u64, item: String);
}

/// A handler that fails every event (so that they are dead-lettered).
pub struct Failing;

#[async_trait]
impl OrdersConsumer for Failing {
    async fn placed(&self, _: &ConsumerContext, order: u64, _: String) -> HandlerResult {
        Err(format!("order {order} fails on purpose").into())
    }
}

/// The fixture's Redis URL.
pub async fn url() -> String {
    shared().await.unwrap().url().to_owned()
}

/// `backbone --url <url> <args>`, with `REDIS_*` and `BACKBONE_OBJECTS` cleared so only the
/// flags count.
pub fn backbone(url: &str) -> Command {
    let mut cmd = Command::cargo_bin("backbone").unwrap();
    cmd.env_remove("REDIS_URL")
        .env_remove("REDIS_CLUSTER")
        .env_remove("BACKBONE_OBJECTS")
        .arg("--url")
        .arg(url);
    cmd
}

/// The JSON lines of a successful run.
pub fn json_lines(cmd: &mut Command) -> Vec<Value> {
    let output = cmd.arg("--json").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Runs and expects exit code `code` with `needle` in stderr.
pub fn fails(cmd: &mut Command, code: i32, needle: &str) {
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(needle), "{stderr} lacks {needle:?}");
}

/// Produces `n` `placed` events (orders 0..n) on `uri`; their message ids.
pub async fn produce(url: &str, uri: &str, n: u64) -> Vec<String> {
    let producer = RedisProducerBuilder::new()
        .url(url)
        .uri(uri)
        .build_orders_producer()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for order in 0..n {
        ids.push(
            producer
                .placed(order, format!("item-{order}"))
                .await
                .unwrap()
                .to_string(),
        );
    }
    ids
}

/// A plain connection to the fixture, for setting up and inspecting.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Creates group `g` at `0` on the stream `key` and has its consumer `worker-1` read `count`
/// entries without acknowledging them.
pub async fn deliver_unacked(raw: &mut redis::aio::MultiplexedConnection, key: &str, count: usize) {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("g")
        .arg("0")
        .query_async(raw)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("worker-1")
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(key)
        .arg(">")
        .query_async(raw)
        .await
        .unwrap();
}

/// Produces `n` events on `uri` and has group `group` dead-letter every one (a [`Failing`]
/// handler, one delivery each); returns once `backbone dead list` shows all `n`.
pub async fn dead_letters(url: &str, uri: &str, group: &str, n: u64) {
    produce(url, uri, n).await;
    let consumer = RedisConsumerBuilder::new()
        .url(url)
        .uri(uri)
        .group(group)
        .block(Duration::from_millis(100))
        .retry(RetryPolicy {
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
            max_deliveries: 1,
        })
        .subscribe_orders_consumer(Failing)
        .await
        .unwrap();
    listed_dead_letters(url, uri, group, n).await;
    consumer.shutdown().await.unwrap();
}

/// What `backbone dead list` shows of `group` on `uri` once it shows `n` dead letters; fails
/// after 20 s.
pub async fn listed_dead_letters(url: &str, uri: &str, group: &str, n: u64) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed = json_lines(backbone(url).args(["dead", "list", uri, group]));
        if listed.len() as u64 == n {
            return listed;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A UUIDv7 message id created `ago` before now (as the workspace tests' `created_ago`).
pub fn created_ago(ago: Duration, n: u8) -> MessageId {
    let ms = backbone_core::metadata::now_millis() - ago.as_millis() as u64;
    let hex = format!("{ms:012x}");
    format!("{}-{}-7000-8000-0000000000{n:02x}", &hex[..8], &hex[8..])
        .parse()
        .unwrap()
}
