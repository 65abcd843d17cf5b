//! Durable sends (`RedisProducerBuilder::durable`) over a real 3-master Redis Cluster with one
//! replica per master, whose stream's master is killed: under load while a group consumes,
//! and right after acknowledged sends. Each test has its own cluster (each kills a node).

mod cluster_load;
mod common;

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone_redis::testing::{unique_name, RedisCluster};
use backbone_redis::RedisProducerBuilder;
use cluster_load::*;
use common::delivery::*;
use common::*;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A blocking fixture call, off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// A 3-master cluster with one replica each, a fresh uri, its stream and the index (in
/// `master_urls`) of the master that serves it.
async fn start() -> (Arc<Mutex<RedisCluster>>, String, String, usize) {
    let cluster = blocking(|| RedisCluster::start(3, 1)).await.unwrap();
    let uri = unique_name("failover");
    let stream = keys(&uri).stream().to_owned();
    let owner = cluster.master_for_key(&stream).unwrap().unwrap();
    let masters = cluster.master_urls().unwrap();
    let index = masters.iter().position(|m| *m == owner).unwrap();
    (Arc::new(Mutex::new(cluster)), uri, stream, index)
}

/// Kills master `index`, waits for its replica to take over, starts the killed node again
/// (it rejoins as the new master's replica: WAIT 1 can succeed again) and waits for a
/// healthy cluster. Returns when the promotion and the rejoin were seen healthy.
async fn fail_over(cluster: &Arc<Mutex<RedisCluster>>, index: usize) -> (Instant, Instant) {
    let c = cluster.clone();
    blocking(move || {
        let mut cluster = c.lock().unwrap();
        let killed = cluster.kill_master(index).unwrap();
        cluster.wait_healthy(Duration::from_secs(30)).unwrap();
        let promoted = Instant::now();
        cluster.restart_node(killed).unwrap();
        cluster.wait_healthy(Duration::from_secs(30)).unwrap();
        (promoted, Instant::now())
    })
    .await
}

fn durable_producer(settings: backbone_redis::settings::RedisSettings) -> RedisProducerBuilder {
    RedisProducerBuilder::new()
        .settings(settings)
        .durable(1, Duration::from_millis(500))
        .send_timeout(Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_sends_under_load_survive_a_failover_of_their_master() {
    init_tracing();
    let (cluster, uri, stream, index) = start().await;
    let settings = cluster.lock().unwrap().settings().uri(&uri);
    let producer = durable_producer(settings.clone())
        .build_ticks_producer()
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetimes = start_group(&settings, "g", &["a", "b"], &tx).await;

    // 4 senders × 500 ticks, 5 ms apart; the master is killed once 600 are acknowledged.
    let acked = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let load = tokio::spawn(send_load(
        producer.clone(),
        4,
        500,
        Duration::from_millis(5),
        acked.clone(),
    ));
    wait_acked(&acked, 600, Duration::from_secs(30)).await;
    let killed_at = Instant::now();
    let (promoted_at, rejoined_at) = fail_over(&cluster, index).await;
    let log = load.await.unwrap();
    let finished_at = Instant::now();
    assert_running(&lifetimes);

    let ok = log.ok();
    let failed = log.failures().len();
    let seen = gather(&mut rx, &ok, Duration::from_secs(30), SETTLE).await;
    let delivered_at = Instant::now();
    let summary = log.summary();
    let recovered = log.first_ok_started_after(killed_at).map(|t| t - killed_at);
    eprintln!(
        "failover under load: killed after {:.2?}; promoted {:.2?} and rejoined {:.2?} after \
         the kill; first Ok of a send started after the kill {recovered:.2?} after the kill, first Ok of a send started after \
         the rejoin {:.2?} after it; load done {:.2?} after the kill, all delivered {:.2?} \
         later ({} deliveries); {summary}",
        killed_at - started,
        promoted_at - killed_at,
        rejoined_at - killed_at,
        log.first_ok_started_after(rejoined_at)
            .map(|t| t - rejoined_at),
        finished_at - killed_at,
        delivered_at - finished_at,
        seen.len(),
    );
    assert_delivered(&ok, failed, &ids(&seen), &summary);
    assert!(
        failed * 10 < log.sends.len(),
        "most sends should succeed within the 30 s send_timeout: {summary}"
    );
    for failure in log.failures() {
        let error = failure.result.as_ref().unwrap_err();
        assert!(
            error.contains(&stream),
            "an error names the stream: {error}"
        );
    }
    // Sends kept succeeding once the new master had its replica again.
    assert!(
        log.first_ok_started_after(rejoined_at).is_some(),
        "no send started after the rejoin succeeded: {summary}"
    );
    // The promoted replica had no publish script: its NOSCRIPT was recovered.
    let new_master = cluster.lock().unwrap().master_for_key(&stream).unwrap();
    let new_master = new_master.unwrap();
    let noscript = info_field(&new_master, "errorstats", "errorstat_NOSCRIPT").await;
    assert!(
        noscript.is_some(),
        "the new master {new_master} never answered NOSCRIPT (expected a reload)"
    );
    eprintln!("new master {new_master}: errorstat_NOSCRIPT {noscript:?}");
    assert_running(&lifetimes);
    let lifetimes = lifetimes.into_iter().map(|(_, l)| l).collect();
    stop_all(&uri, lifetimes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_durable_sends_survive_killing_their_master_at_once() {
    init_tracing();
    let (cluster, uri, stream, index) = start().await;
    let settings = cluster.lock().unwrap().settings().uri(&uri);
    let producer = durable_producer(settings.clone())
        .build_ticks_producer()
        .await
        .unwrap();
    // 300 concurrent sends (coalesced into a few runs of the script, each with its WAIT),
    // and the master killed as soon as the last is acknowledged.
    let sends = (0..300).map(|n| producer.tick(n));
    let acknowledged: Vec<_> = futures::future::join_all(sends)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let c = cluster.clone();
    let killed = blocking(move || c.lock().unwrap().kill_master(index).unwrap()).await;
    let c = cluster.clone();
    blocking(move || c.lock().unwrap().wait_healthy(Duration::from_secs(30)))
        .await
        .unwrap();
    let new_master = cluster.lock().unwrap().master_for_key(&stream).unwrap();
    let new_master = new_master.unwrap();
    let on_new_master = stream_ids_on(&new_master, &stream).await;
    assert_exactly_once(&acknowledged, &on_new_master);

    // With the old master back as its replica, the new master takes durable sends: the first
    // finds no script there (NOSCRIPT), loads it and sends again.
    let c = cluster.clone();
    blocking(move || {
        let mut cluster = c.lock().unwrap();
        cluster.restart_node(killed)?;
        cluster.wait_healthy(Duration::from_secs(30))
    })
    .await
    .unwrap();
    let more = send(&producer, 300..350).await;
    let noscript = info_field(&new_master, "errorstats", "errorstat_NOSCRIPT").await;
    assert!(noscript.is_some(), "{new_master} never answered NOSCRIPT");
    let all: Vec<_> = acknowledged.into_iter().chain(more).collect();
    assert_exactly_once(&all, &stream_ids_on(&new_master, &stream).await);
}

#[tokio::test]
async fn durable_options_are_checked() {
    let build = |replicas, timeout| async move {
        RedisProducerBuilder::new()
            .url("redis://127.0.0.1:1")
            .uri("checked")
            .send_timeout(Duration::from_secs(2))
            .durable(replicas, timeout)
            .build_publisher()
            .await
    };
    for (replicas, timeout) in [(0, 500), (1, 0), (1, 2000), (1, 3000)] {
        let timeout = Duration::from_millis(timeout);
        match build(replicas, timeout).await {
            Err(backbone_core::Error::Config(text)) => {
                assert!(text.contains("durable("), "{text}")
            }
            other => panic!("durable({replicas}, {timeout:?}): {other:?}"),
        }
    }
}
