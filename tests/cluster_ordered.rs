//! Ordered groups over a real 3-master cluster: three consumer processes share a 6-partition
//! contract, one is SIGKILLed mid-run, and every key's events are still handled in order with
//! nothing lost. The consumers are this test binary run again as `ordered_child`.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use backbone_core::{async_trait, ConsumerContext, HandlerResult};
use backbone_redis::settings::RedisSettings;
use backbone_redis::testing::{unique_name, RedisCluster};
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder};
use common::*;
use redis::AsyncCommands;
use tokio::time::Instant;

const PARTITIONS: u16 = 6;
const KEYS: u64 = 20;
const PER_KEY: u64 = 60;

fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(3, 0).expect("a 3-master cluster"))
}

fn settings(url: &str, uri: &str) -> RedisSettings {
    RedisSettings::new()
        .url(url)
        .cluster(true)
        .uri(uri)
        .partitions(PARTITIONS)
}

/// Records each tick as `<key> <n> <consumer>` on a list, after a short pause (so that a
/// consumer is killed with events in hand).
struct Recorder {
    connection: backbone_redis::connection::Connection,
    results: String,
    name: String,
}

#[async_trait]
impl TicksConsumer for Recorder {
    async fn tick(&self, ctx: &ConsumerContext, n: u64) -> HandlerResult {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let key = ctx.metadata().key.clone().unwrap_or_default();
        let mut connection = self.connection.clone();
        let _: () = connection
            .rpush(&self.results, format!("{key} {n} {}", self.name))
            .await?;
        Ok(())
    }
}

/// A consumer process: does nothing unless started by the test below with `BB_ORDERED_CHILD`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_child() {
    let Ok(spec) = std::env::var("BB_ORDERED_CHILD") else {
        return;
    };
    let [url, uri, name, results]: [&str; 4] = spec
        .split(' ')
        .collect::<Vec<_>>()
        .try_into()
        .expect("url uri name results");
    let connection = settings(url, uri).open_connection("test").await.unwrap();
    let recorder = Recorder {
        connection,
        results: results.to_owned(),
        name: name.to_owned(),
    };
    let lifetime = RedisConsumerBuilder::new()
        .settings(settings(url, uri))
        .group("ordered")
        .name(name)
        .ordered(true)
        .lease_ttl(Duration::from_millis(1000))
        .block(Duration::from_millis(200))
        .concurrency(4)
        .subscribe_ticks_consumer(recorder)
        .await
        .unwrap();
    eprintln!("child {name} consuming");
    // Runs until killed; an error ending it fails the child (the parent sees it exit).
    lifetime.completion().await.unwrap();
    panic!("the consumer ended on its own");
}

fn spawn_child(url: &str, uri: &str, name: &str, results: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "ordered_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BB_ORDERED_CHILD", format!("{url} {uri} {name} {results}"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a consumer process")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_across_processes_when_one_is_killed() {
    let (url, uri) = tokio::task::spawn_blocking(|| {
        let cluster = cluster();
        (cluster.url(), spread_uri(cluster, "ordered", PARTITIONS))
    })
    .await
    .unwrap();
    let results = format!("results:{{{uri}}}");
    let producer = RedisProducerBuilder::new()
        .settings(settings(&url, &uri))
        .build_ticks_producer()
        .await
        .unwrap();
    let mut children: Vec<Child> = ["c0", "c1", "c2"]
        .iter()
        .map(|name| spawn_child(&url, &uri, name, &results))
        .collect();
    let keyed: Vec<TicksProducer> = (0..KEYS)
        .map(|k| producer.with_key(format!("k{k}")))
        .collect();
    for n in 0..PER_KEY {
        for (k, p) in keyed.iter().enumerate() {
            p.tick(n)
                .await
                .unwrap_or_else(|e| panic!("send k{k} {n}: {e}"));
        }
        if n == PER_KEY / 3 {
            children[1].kill().unwrap(); // SIGKILL, events in hand
            children[1].wait().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    let mut raw = settings(&url, &uri).open_connection("test").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records: Vec<String> = raw.lrange(&results, 0, -1).await.unwrap();
        let distinct: HashSet<(&str, &str)> = records
            .iter()
            .filter_map(|r| {
                let mut parts = r.split(' ');
                Some((parts.next()?, parts.next()?))
            })
            .collect();
        if distinct.len() as u64 == KEYS * PER_KEY || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let survivors_alive = [0, 2].map(|i| children[i].try_wait().unwrap().is_none());
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(
        survivors_alive,
        [true, true],
        "a surviving consumer process ended"
    );

    // Per key: every n arrived, and first arrivals came in send order (a redelivery after the
    // kill may repeat an event, never reorder them).
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut by_consumer: BTreeMap<String, usize> = BTreeMap::new();
    for record in &records {
        let parts: Vec<&str> = record.split(' ').collect();
        by_key
            .entry(parts[0].to_owned())
            .or_default()
            .push(parts[1].parse().unwrap());
        *by_consumer.entry(parts[2].to_owned()).or_default() += 1;
    }
    assert_eq!(by_key.len() as u64, KEYS, "keys seen: {:?}", by_key.keys());
    let mut duplicates = 0;
    for (key, seen) in &by_key {
        let mut firsts = Vec::new();
        let mut got = HashSet::new();
        for &n in seen {
            if got.insert(n) {
                firsts.push(n);
            } else {
                duplicates += 1;
            }
        }
        assert_eq!(
            firsts,
            (0..PER_KEY).collect::<Vec<_>>(),
            "key {key}: first arrivals out of order or missing: {seen:?}"
        );
    }
    eprintln!(
        "{} records, {duplicates} redeliveries, per consumer {by_consumer:?}",
        records.len()
    );
    assert!(by_consumer.len() >= 2, "{by_consumer:?}");
}

/// Records `(consumer, key, n)`.
#[derive(Clone)]
struct Local {
    name: &'static str,
    tx: tokio::sync::mpsc::UnboundedSender<(&'static str, String, u64)>,
}

#[async_trait]
impl TicksConsumer for Local {
    async fn tick(&self, ctx: &ConsumerContext, n: u64) -> HandlerResult {
        let key = ctx.metadata().key.clone().unwrap_or_default();
        self.tx.send((self.name, key, n))?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_when_members_join_and_leave() {
    let url = tokio::task::spawn_blocking(|| cluster().url())
        .await
        .unwrap();
    let uri = unique_name("rebalance");
    let on = settings(&url, &uri);
    let producer = RedisProducerBuilder::new()
        .settings(on.clone())
        .build_ticks_producer()
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let member = |name: &'static str| {
        RedisConsumerBuilder::new()
            .settings(on.clone())
            .group("g")
            .name(name)
            .ordered(true)
            .lease_ttl(Duration::from_millis(600))
            .block(Duration::from_millis(100))
            .subscribe_ticks_consumer(Local {
                name,
                tx: tx.clone(),
            })
    };
    let keyed: Vec<TicksProducer> = (0..12)
        .map(|k| producer.with_key(format!("k{k}")))
        .collect();
    let mut next = 0u64;
    // Sends a round of one event per key and returns who handled which partitions.
    let round = |next: &mut u64| {
        let n = *next;
        *next += 1;
        let keyed = &keyed;
        async move {
            for p in keyed {
                p.tick(n).await.unwrap();
            }
        }
    };
    let layout = on.layout().unwrap();
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let owners = |records: &[(&'static str, String, u64)]| {
        let mut owners: BTreeMap<&'static str, HashSet<u16>> = BTreeMap::new();
        for (name, key, _) in records {
            owners.entry(name).or_default().insert(layout.for_key(key));
        }
        owners
    };
    let phase = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<_>, count: usize| {
        let mut got = Vec::new();
        while let Ok((name, key, n)) = rx.try_recv() {
            got.push((name, key, n));
        }
        assert!(got.len() <= count);
        got
    };

    let a = member("a").await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    round(&mut next).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alone = phase(&mut rx, 12);
    assert_eq!(alone.len(), 12, "{alone:?}");
    assert_eq!(owners(&alone).keys().copied().collect::<Vec<_>>(), ["a"]);

    let b = member("b").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // b joins; a hands partitions over
    round(&mut next).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let both = phase(&mut rx, 12);
    assert_eq!(both.len(), 12, "{both:?}");
    let split = owners(&both);
    assert_eq!(split.len(), 2, "after b joined: {split:?}");
    assert!(split["a"].is_disjoint(&split["b"]), "{split:?}");

    a.shutdown().await.unwrap(); // a leaves: b takes everything
    tokio::time::sleep(Duration::from_millis(1500)).await;
    round(&mut next).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = phase(&mut rx, 12);
    assert_eq!(after.len(), 12, "{after:?}");
    assert_eq!(owners(&after).keys().copied().collect::<Vec<_>>(), ["b"]);
    b.shutdown().await.unwrap();

    for (_, key, n) in alone.iter().chain(&both).chain(&after) {
        seen.entry(key.clone()).or_default().push(*n);
    }
    for (key, ns) in &seen {
        assert_eq!(ns, &[0, 1, 2], "key {key}");
    }
}
