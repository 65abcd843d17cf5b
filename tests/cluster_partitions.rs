//! Partitioned contracts: keyed events go to the partition of their key, unkeyed ones round
//! robin, partitions spread over a real 3-master cluster, every consumer reads every partition,
//! a different partition count is refused, and a partitioned event store keeps its versions
//! under 8 concurrent writers.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;
use std::time::Duration;

use backbone_core::partition::partition_for;
use backbone_core::store::{AppendOptions, ExpectedVersion};
use backbone_core::{Error, StreamAddress};
use backbone_redis::settings::RedisSettings;
use backbone_redis::store::EventStoreBuilder;
use backbone_redis::testing::{shared, unique_name, RedisCluster};
use backbone_redis::{DeadLetters, RedisConsumerBuilder, RedisProducerBuilder, StreamAdmin};
use common::delivery::*;
use common::*;
use redis::AsyncCommands;
use tokio::sync::mpsc;

const PARTITIONS: u16 = 6;

fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(3, 0).expect("a 3-master cluster"))
}

/// A uri whose `PARTITIONS` partitions are served by all 3 masters, and its settings.
async fn spread_uri(prefix: &str) -> (String, RedisSettings) {
    let prefix = prefix.to_owned();
    tokio::task::spawn_blocking(move || {
        let cluster = cluster();
        let uri = common::spread_uri(cluster, &prefix, PARTITIONS);
        let settings = cluster.settings().uri(&uri).partitions(PARTITIONS);
        (uri, settings)
    })
    .await
    .unwrap()
}

async fn cluster_raw() -> backbone_redis::connection::Connection {
    let settings = tokio::task::spawn_blocking(|| cluster().settings())
        .await
        .unwrap();
    settings.open_connection("test").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_events_stay_in_their_partition_and_every_partition_is_read() {
    init_tracing();
    let (uri, settings) = spread_uri("parts").await;
    let producer = RedisProducerBuilder::new()
        .settings(settings.clone())
        .build_ticks_producer()
        .await
        .unwrap();
    let mut sent = Vec::new();
    let mut key_of = HashMap::new();
    for n in 0..300u64 {
        let key = format!("k{}", n % 30);
        let id = producer.with_key(&key).tick(n).await.unwrap();
        key_of.insert(id, key);
        sent.push(id);
    }
    for n in 300..360u64 {
        sent.push(producer.tick(n).await.unwrap());
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut lifetimes = Vec::new();
    for name in ["a", "b"] {
        let lifetime = RedisConsumerBuilder::new()
            .settings(settings.clone())
            .group("g")
            .name(name)
            .block(BLOCK)
            .claim_min_idle(NO_CLAIM)
            .subscribe_ticks_consumer(recorder(name, &tx))
            .await
            .unwrap();
        lifetimes.push(lifetime);
    }
    let seen = gather(&mut rx, &sent, Duration::from_secs(30), SETTLE).await;
    assert_exactly_once(&sent, &ids(&seen));
    for s in &seen {
        if let Some(key) = key_of.get(&s.meta.message_id) {
            assert_eq!(s.meta.key.as_deref(), Some(key.as_str()));
        }
    }
    stop_all(&uri, lifetimes).await;

    // Where each event went: keyed ones in their key's partition, unkeyed ones 10 per partition.
    let layout = settings.layout().unwrap();
    let mut raw = cluster_raw().await;
    let mut unkeyed_per_partition = BTreeMap::new();
    for (p, keys) in layout.partitions().iter().enumerate() {
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(keys.stream())
            .arg("-")
            .arg("+")
            .query_async(&mut raw)
            .await
            .unwrap();
        let mut unkeyed = 0;
        for (_, fields) in entries {
            match fields.get("key").filter(|k| !k.is_empty()) {
                Some(key) => assert_eq!(
                    usize::from(partition_for(key, PARTITIONS)),
                    p,
                    "key {key} in partition {p}"
                ),
                None => unkeyed += 1,
            }
        }
        unkeyed_per_partition.insert(p, unkeyed);
    }
    assert!(
        unkeyed_per_partition.values().all(|&n| n == 10),
        "unkeyed events per partition: {unkeyed_per_partition:?}"
    );
    let recorded: String = raw.get(layout.count_key()).await.unwrap();
    assert_eq!(recorded, PARTITIONS.to_string());

    // Dead letters and trimming are per partition; the single-stream handles refuse.
    let err = DeadLetters::open(&settings, "g").await.unwrap_err();
    assert!(err.to_string().contains("open_partitions"), "{err}");
    let dead = DeadLetters::open_partitions(&settings, "g").await.unwrap();
    assert_eq!(dead.len(), usize::from(PARTITIONS));
    assert!(StreamAdmin::open(&settings).await.is_err());
    let admins = StreamAdmin::open_partitions(&settings).await.unwrap();
    let mut total = 0;
    for admin in &admins {
        total += admin.len().await.unwrap();
    }
    assert_eq!(total, 360);
}

fn refused<T>(result: Result<T, Error>) -> Error {
    match result {
        Err(e) => e,
        Ok(_) => panic!("expected a refusal"),
    }
}

#[tokio::test]
async fn a_different_partition_count_is_refused_with_both_numbers() {
    let redis = shared().await.unwrap();
    let uri = unique_name("count");
    let at = |n: u16| {
        RedisSettings::new()
            .url(redis.url())
            .uri(&uri)
            .partitions(n)
    };
    RedisProducerBuilder::new()
        .settings(at(4))
        .build_ticks_producer()
        .await
        .unwrap();
    let expect_refusal = |e: Error, configured: u16| {
        let text = e.to_string();
        assert!(
            text.contains("has 4 partition(s)")
                && text.contains(&format!("configured with {configured}")),
            "{text}"
        );
    };
    let (tx, _rx) = mpsc::unbounded_channel();
    let consumer = RedisConsumerBuilder::new()
        .settings(at(2))
        .subscribe_ticks_consumer(recorder("c", &tx))
        .await;
    expect_refusal(refused(consumer), 2);
    let producer = RedisProducerBuilder::new()
        .settings(at(1))
        .build_ticks_producer()
        .await;
    expect_refusal(refused(producer), 1);
    let store = EventStoreBuilder::new()
        .settings(at(3))
        .build::<TicksEvent>()
        .await;
    expect_refusal(refused(store), 3);
    // max_messages counts one stream: refused with partitions.
    let consumer = RedisConsumerBuilder::new()
        .settings(at(4))
        .max_messages(10)
        .subscribe_ticks_consumer(recorder("c", &tx))
        .await;
    assert!(refused(consumer).to_string().contains("max_messages"));
    assert!(RedisSettings::new()
        .uri("x")
        .partitions(0)
        .layout()
        .is_err());
    assert!(StreamAddress::new(None, "orders#3").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_store_keeps_versions_with_eight_writers() {
    init_tracing();
    let (_, settings) = spread_uri("pstore").await;
    let store = EventStoreBuilder::new()
        .settings(settings)
        .build::<TicksEvent>()
        .await
        .unwrap();
    let aggregates: Vec<String> = (0..6).map(|i| format!("acct-{i}")).collect();
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let store = store.clone();
        let aggregates = aggregates.clone();
        writers.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for i in 0..30u64 {
                let aggregate = &aggregates[((w + i) % 6) as usize];
                loop {
                    let version = store.version(aggregate).await.unwrap();
                    let expected = match version {
                        0 => ExpectedVersion::NoStream,
                        v => ExpectedVersion::Exact(v),
                    };
                    let event = [TicksEvent::Tick { n: w * 1000 + i }];
                    match store
                        .append(aggregate, expected, &event, AppendOptions::default())
                        .await
                    {
                        Ok(result) => {
                            assert_eq!(result.version, version + 1);
                            break;
                        }
                        Err(Error::WrongExpectedVersion { .. }) => conflicts += 1,
                        Err(e) => panic!("append failed: {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for writer in writers {
        conflicts += writer.await.unwrap();
    }
    let mut total = 0;
    let mut partitions = HashSet::new();
    for aggregate in &aggregates {
        let version = store.version(aggregate).await.unwrap();
        let page = store.read(aggregate, 1, 1000).await.unwrap();
        let versions: Vec<u64> = page
            .events
            .iter()
            .filter_map(|e| e.aggregate_version)
            .collect();
        assert_eq!(versions, (1..=version).collect::<Vec<_>>(), "{aggregate}");
        total += version;
        partitions.insert(store.keys_for(aggregate).stream().to_owned());
    }
    assert_eq!(total, 240, "{conflicts} conflicts were retried");
    assert!(
        partitions.len() > 1,
        "the aggregates landed in one partition"
    );
    let stats = store.stats(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(stats.appended, 240);
    assert_eq!(stats.in_window, 240);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_reused_across_partitions_is_refused() {
    let (_, settings) = spread_uri("pidem").await;
    let store = EventStoreBuilder::new()
        .settings(settings)
        .build::<TicksEvent>()
        .await
        .unwrap();
    // Two aggregates in different partitions.
    let first = "acct-a".to_owned();
    let other = (0..100)
        .map(|i| format!("acct-{i}"))
        .find(|a| store.keys_for(a) != store.keys_for(&first))
        .expect("an aggregate in another partition");
    let options = || AppendOptions::idempotent("pay-1");
    let event = [TicksEvent::Tick { n: 1 }];
    store
        .append(&first, ExpectedVersion::Any, &event, options())
        .await
        .unwrap();
    let replay = store
        .append(&first, ExpectedVersion::Any, &event, options())
        .await
        .unwrap();
    assert!(replay.replayed);
    match store
        .append(&other, ExpectedVersion::Any, &event, options())
        .await
    {
        Err(Error::IdempotencyKeyReused {
            original_aggregate, ..
        }) => assert_eq!(original_aggregate, first),
        other => panic!("expected IdempotencyKeyReused, got {other:?}"),
    }
    assert_eq!(store.version(&other).await.unwrap(), 0);
}

/// Creates ACL user `name` with `rules` on every node of the cluster; the seeds with it.
async fn cluster_user(name: &str, password: &str, rules: &[String]) -> String {
    let seeds = tokio::task::spawn_blocking(|| cluster().seed_urls())
        .await
        .unwrap();
    for seed in &seeds {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg(name)
            .arg("reset")
            .arg("on")
            .arg(format!(">{password}"));
        for rule in rules {
            for part in rule.split(' ') {
                cmd.arg(part);
            }
        }
        let _: () = cmd.query_async(&mut raw(seed).await).await.unwrap();
    }
    seeds
        .iter()
        .map(|s| s.replacen("://", &format!("://{name}:{password}@"), 1))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_rules_and_cluster_client_suffice_on_a_cluster() {
    use backbone_redis::acl;
    let (uri, _) = spread_uri("pacl").await;
    let keys = acl::stream_patterns(&uri, PARTITIONS);
    let producer_rule = [
        acl::rule(acl::PRODUCER, &keys),
        acl::CLUSTER_CLIENT.to_owned(),
    ];
    let consumer_rule = [
        acl::rule(acl::CONSUMER, &keys),
        acl::ORDERED_GROUP.to_owned(),
        acl::CLUSTER_CLIENT.to_owned(),
    ];
    let producer_url = cluster_user("p-user", "Pw-producer-1", &producer_rule).await;
    let consumer_url = cluster_user("c-user", "Pw-consumer-1", &consumer_rule).await;
    let on = |url: &str| {
        RedisSettings::new()
            .url(url)
            .cluster(true)
            .uri(&uri)
            .partitions(PARTITIONS)
    };
    let producer = RedisProducerBuilder::new()
        .settings(on(&producer_url))
        .build_ticks_producer()
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .settings(on(&consumer_url))
        .group("g")
        .name("acl")
        .ordered(true)
        .lease_ttl(Duration::from_millis(500))
        .block(BLOCK)
        .subscribe_ticks_consumer(recorder("acl", &tx))
        .await
        .unwrap();
    let mut sent = Vec::new();
    for n in 0..60u64 {
        sent.push(
            producer
                .with_key(format!("k{}", n % 12))
                .tick(n)
                .await
                .unwrap(),
        );
    }
    let seen = gather(&mut rx, &sent, Duration::from_secs(20), SETTLE).await;
    assert_exactly_once(&sent, &ids(&seen));
    stop("acl", lifetime).await;
    // Without the cluster's own commands, a cluster connection is refused.
    let bare = cluster_user("bare-user", "Pw-bare-1", &[acl::rule(acl::PRODUCER, &keys)]).await;
    let refused = RedisProducerBuilder::new()
        .settings(on(&bare))
        .build_ticks_producer()
        .await;
    let text = match refused {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a user without +cluster|slots connected to the cluster"),
    };
    eprintln!("a user without the cluster commands: {text}");
    assert!(
        text.contains("cluster|slots") && !text.contains("Pw-bare-1"),
        "{text}"
    );
}
