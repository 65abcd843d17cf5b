//! A contract's slot migrated to another master of a real 3-master Redis Cluster while a
//! producer sends and a group consumes (`RedisCluster::migrate_slot`: `ASK` and `TRYAGAIN`
//! during the move, `MOVED` after it).

mod cluster_load;
mod common;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use backbone_redis::testing::{unique_name, RedisCluster};
use backbone_redis::RedisProducerBuilder;
use cluster_load::*;
use common::delivery::*;
use common::*;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_while_producing_and_consuming_loses_and_stalls_nothing() {
    init_tracing();
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .unwrap()
        .unwrap();
    let cluster = Arc::new(cluster);
    let uri = unique_name("reshard");
    let stream = keys(&uri).stream().to_owned();
    let slot = RedisCluster::key_slot(&stream);
    let masters = cluster.master_urls().unwrap();
    let owner = cluster.master_for_slot(slot).unwrap().unwrap();
    let first = masters.iter().position(|m| *m == owner).unwrap();
    // To each other master in turn, then back.
    let hops = [(first + 1) % 3, (first + 2) % 3, first];
    let settings = cluster.settings().uri(&uri);
    let producer = RedisProducerBuilder::new()
        .settings(settings.clone())
        .send_timeout(Duration::from_secs(10))
        .build_ticks_producer()
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetimes = start_group(&settings, "g", &["a", "b"], &tx).await;

    // 4 senders × 500 ticks, 5 ms apart; the slot moves once 500, 1000 and 1500 are
    // acknowledged.
    let acked = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(send_load(
        producer.clone(),
        4,
        500,
        Duration::from_millis(5),
        acked.clone(),
    ));
    let mut migrations = Vec::new();
    for (k, to) in hops.into_iter().enumerate() {
        wait_acked(&acked, 500 * (k + 1), Duration::from_secs(30)).await;
        let migrating_at = Instant::now();
        let c = cluster.clone();
        let moved = tokio::task::spawn_blocking(move || c.migrate_slot(slot, to))
            .await
            .unwrap()
            .unwrap();
        let migrated_at = Instant::now();
        assert_eq!(
            cluster.master_for_slot(slot).unwrap().as_ref(),
            Some(&masters[to])
        );
        assert_running(&lifetimes);
        migrations.push((to, moved, migrating_at, migrated_at));
    }
    let migrated_at = migrations.last().unwrap().3;
    let to = first;
    let log = load.await.unwrap();
    let finished_at = Instant::now();

    // Everything acknowledged arrives within 20 s of the last send.
    let ok = log.ok();
    let failed = log.failures().len();
    let seen = gather(&mut rx, &ok, Duration::from_secs(20), SETTLE).await;
    let delivered_at = Instant::now();
    let summary = log.summary();
    for (to, moved, migrating_at, migrated_at) in &migrations {
        let spanning = log.sends.iter();
        let spanning = spanning.filter(|s| s.started < *migrated_at && s.ended > *migrating_at);
        eprintln!(
            "resharding: slot {slot} to {}: {moved} keys in {:.2?}; {} sends spanned it",
            masters[*to],
            *migrated_at - *migrating_at,
            spanning.count(),
        );
    }
    eprintln!(
        "resharding: load done {:.2?} after the last migration, all delivered {:.2?} later \
         ({} deliveries); {summary}",
        finished_at - migrated_at,
        delivered_at - finished_at,
        seen.len(),
    );
    assert_delivered(&ok, failed, &ids(&seen), &summary);
    assert_eq!(failed, 0, "every send should succeed: {summary}");
    assert!(
        log.first_ok_started_after(migrated_at).is_some(),
        "no send after the migration succeeded: {summary}"
    );
    // The new master holds the stream, every entry once.
    let on_target = stream_ids_on(&masters[to], &stream).await;
    assert_exactly_once(&ok, &on_target);
    assert_running(&lifetimes);
    let lifetimes = lifetimes.into_iter().map(|(_, l)| l).collect();
    stop_all(&uri, lifetimes).await;
}
