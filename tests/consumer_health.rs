//! A consumer's health over real Redis: connected and reading, the events it holds, a lost
//! connection, and why it stopped.

mod common;

use std::sync::Arc;
use std::time::Duration;

use backbone_core::{async_trait, ConsumerContext, HandlerResult};
use backbone_redis::testing::{unique_name, RedisServer, ServerOptions};
use backbone_redis::RedisConsumerBuilder;
use common::*;
use tokio::sync::Semaphore;

/// Handles a tick only when a permit is given.
#[derive(Clone)]
struct Gate(Arc<Semaphore>);

#[async_trait]
impl TicksConsumer for Gate {
    async fn tick(&self, _: &ConsumerContext, _: u64) -> HandlerResult {
        self.0.acquire().await?.forget();
        Ok(())
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_reading_holding_disconnection_and_the_reason_it_stopped() {
    let mut server = tokio::task::spawn_blocking(|| RedisServer::spawn(ServerOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let url = server.url().to_owned();
    let uri = unique_name("health");
    let gate = Arc::new(Semaphore::new(0));
    let lifetime = RedisConsumerBuilder::new()
        .url(&url)
        .uri(&uri)
        .group("g")
        .block(Duration::from_millis(100))
        .subscribe_ticks_consumer(Gate(gate.clone()))
        .await
        .unwrap();
    eventually("connected and read", || {
        let h = lifetime.health();
        h.connected && h.last_read_ms.is_some() && h.stopped.is_none() && h.is_ready()
    })
    .await;

    // Three events read, one in the handler: all three held until handled.
    let producer = producer(&url, &uri).await;
    send(&producer, 0..3).await;
    eventually("3 events held", || lifetime.health().held == 3).await;
    gate.add_permits(3);
    eventually("nothing held", || lifetime.health().held == 0).await;

    // Redis goes away: not connected, not stopped (it will reconnect).
    let server = tokio::task::spawn_blocking(move || {
        server.stop().unwrap();
        server
    })
    .await
    .unwrap();
    eventually("disconnected", || !lifetime.health().connected).await;
    assert!(
        lifetime.health().stopped.is_none(),
        "{:?}",
        lifetime.health()
    );
    drop(lifetime);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_consumer_says_why() {
    let redis = backbone_redis::testing::shared().await.unwrap();
    let uri = unique_name("health-stop");
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .group("g")
        .block(Duration::from_millis(100))
        .subscribe_ticks_consumer(Gate(Arc::new(Semaphore::new(10))))
        .await
        .unwrap();
    eventually("read", || lifetime.health().is_ready()).await;
    let mut raw = raw(redis.url()).await;
    let _: () = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(keys(&uri).stream())
        .arg("g")
        .query_async(&mut raw)
        .await
        .unwrap();
    eventually("stopped", || lifetime.health().stopped.is_some()).await;
    let health = lifetime.health();
    assert!(!health.connected && !health.is_ready());
    assert!(
        health.stopped.as_deref().unwrap().contains("NOGROUP"),
        "{health:?}"
    );
    assert!(lifetime.completion().await.is_err());
}

#[tokio::test]
async fn the_in_memory_consumer_reports_its_health_too() {
    let broker = backbone_core::memory::InMemoryBroker::new();
    let gate = Gate(Arc::new(Semaphore::new(0)));
    let producer = broker
        .producer_builder()
        .uri("health")
        .build_ticks_producer()
        .await
        .unwrap();
    let lifetime = broker
        .consumer_builder()
        .uri("health")
        .max_messages(1)
        .subscribe_ticks_consumer(gate.clone())
        .await
        .unwrap();
    eventually("a first read", || lifetime.health().last_read_ms.is_some()).await;
    let idle = lifetime.health();
    assert!(idle.is_ready() && idle.held == 0, "{idle:?}");
    producer.tick(1).await.unwrap();
    eventually("the event held", || lifetime.health().held == 1).await;
    gate.0.add_permits(1);
    eventually("stopped", || lifetime.health().stopped.is_some()).await;
    let done = lifetime.health();
    assert_eq!(done.stopped.as_deref(), Some("handled max_messages (1)"));
    assert!(!done.is_ready() && done.held == 0, "{done:?}");
    lifetime.completion().await.unwrap();
}
