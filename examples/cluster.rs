//! A partitioned contract on a Redis Cluster: 6 partitions spread over 3 masters, keyed
//! events, and an ordered group of 3 consumers in one process.
//!
//! ```text
//! cargo run --example cluster                       # starts a 3-master loopback cluster
//! REDIS_CLUSTER=1 REDIS_URL=redis://10.0.0.1:7000,redis://10.0.0.2:7000 \
//!     cargo run --example cluster                   # uses your cluster instead
//! ```
//!
//! Without `REDIS_CLUSTER=1` and `REDIS_URL`, it spawns its own cluster of 3 masters (no
//! replicas) with `backbone_redis::testing::RedisCluster`, which needs `redis-server` on the
//! `PATH` (the example gets the `testing` feature through the root package's dev-dependency).
//! It prints where each partition lives (partition → stream key → hash slot → master, from
//! `CLUSTER KEYSLOT` and `CLUSTER SLOTS`), sends 20 events for each of 12 keys (each key's
//! events one after another, the keys concurrently), lets the 3 consumers of the ordered group
//! `workers` (`ordered(true)`: each partition owned by one consumer at a time) share them, and
//! prints how many events each consumer handled, which partitions each one handled, and
//! whether per-key order held: in the partitions, within each consumer, and across the whole
//! group (what an ordered group promises). It exits 0, in a few seconds, unless an event is
//! missing or doubled or an order is broken.
//! The placement lookup uses plain redis-rs on the seed urls (no TLS).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backbone_core::{async_trait, ConsumerContext, HandlerResult};
use backbone_redis::settings::RedisSettings;
use backbone_redis::testing::RedisCluster;
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder};
use redis::Value;

const PARTITIONS: u16 = 6;
const KEYS: u64 = 12;
const PER_KEY: u64 = 20;
const CONSUMERS: [&str; 3] = ["c1", "c2", "c3"];

/// Steps of an order; `seq` counts each order's steps from 0.
#[backbone_core::events_contract]
pub trait OrderSteps {
    async fn step(&self, order: String, seq: u64);
}

/// One handled event: who handled it, its key, its sequence number and its stream id.
#[derive(Debug, Clone)]
struct Handled {
    consumer: &'static str,
    key: String,
    seq: u64,
    stream_id: (u64, u64),
}

struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<Handled>>>,
}

#[async_trait]
impl OrderStepsConsumer for Recorder {
    async fn step(&self, ctx: &ConsumerContext, order: String, seq: u64) -> HandlerResult {
        let meta = ctx.metadata();
        let (ms, n) = meta.stream_id.split_once('-').unwrap_or(("0", "0"));
        self.log.lock().expect("the log").push(Handled {
            consumer: self.name,
            key: meta.key.clone().unwrap_or(order),
            seq,
            stream_id: (ms.parse().unwrap_or(0), n.parse().unwrap_or(0)),
        });
        Ok(())
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> Res<()> {
    let external = std::env::var("REDIS_CLUSTER").is_ok_and(|v| v == "1")
        && std::env::var("REDIS_URL").is_ok_and(|v| !v.is_empty());
    let (_fixture, base, seeds) = if external {
        let url = std::env::var("REDIS_URL")?;
        let seeds: Vec<String> = url.split(',').map(|s| s.trim().to_owned()).collect();
        println!("using the cluster at REDIS_URL ({} seed(s))", seeds.len());
        (None, RedisSettings::from_env(), seeds)
    } else {
        let started = Instant::now();
        let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0)).await??;
        println!(
            "started a 3-master cluster in {:.1?}: {}",
            started.elapsed(),
            cluster.url()
        );
        let (settings, seeds) = (cluster.settings(), cluster.seed_urls());
        (Some(cluster), settings, seeds)
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let uri = format!("order-steps-{}-{}", std::process::id(), nanos % 1_000_000);
    let settings = base.environment("example").uri(&uri).partitions(PARTITIONS);
    let layout = settings.layout()?;

    let mut raw = redis::cluster::ClusterClient::new(seeds)?
        .get_async_connection()
        .await?;
    let slots: Vec<Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut raw)
        .await?;
    let ranges = slot_ranges(slots)?;
    println!("partitions of {uri}:");
    for (p, keys) in layout.partitions().iter().enumerate() {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(keys.stream())
            .query_async(&mut raw)
            .await?;
        let master = ranges
            .iter()
            .find(|(from, to, _)| (*from..=*to).contains(&slot))
            .map_or("?", |(_, _, at)| at.as_str());
        println!(
            "  partition {p} -> {} -> slot {slot:>5} -> {master}",
            keys.stream()
        );
    }

    let log = Arc::new(Mutex::new(Vec::new()));
    let mut consumers = Vec::new();
    for name in CONSUMERS {
        let recorder = Recorder {
            name,
            log: log.clone(),
        };
        let lifetime = RedisConsumerBuilder::new()
            .settings(settings.clone())
            .group("workers")
            .name(name)
            .ordered(true)
            .lease_ttl(Duration::from_secs(1))
            .block(Duration::from_millis(200))
            .subscribe_order_steps_consumer(recorder)
            .await?;
        consumers.push(lifetime);
    }
    // Let the members meet and deal the partitions out (within about one lease_ttl); events
    // sent earlier would be handled too, by whoever held their partition then.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let producer = RedisProducerBuilder::new()
        .settings(settings.clone())
        .build_order_steps_producer()
        .await?;
    let sends: Vec<_> = (0..KEYS)
        .map(|k| {
            let producer = producer.with_key(format!("order-{k}"));
            tokio::spawn(async move {
                for seq in 0..PER_KEY {
                    producer.step(format!("order-{k}"), seq).await?;
                }
                Ok::<_, backbone_core::Error>(())
            })
        })
        .collect();
    for send in sends {
        send.await??;
    }
    let total = (KEYS * PER_KEY) as usize;
    println!("sent {total} events: {PER_KEY} for each of {KEYS} keys");

    let deadline = Instant::now() + Duration::from_secs(20);
    while log.lock().expect("the log").len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // doubles would show up by now
    for lifetime in consumers {
        lifetime.shutdown().await?;
    }
    let log = log.lock().expect("the log").clone();
    report(&log, total, |key| layout.for_key(key))
}

/// Checks and prints what the consumers handled.
fn report(log: &[Handled], total: usize, partition: impl Fn(&str) -> u16) -> Res<()> {
    for name in CONSUMERS {
        let mine: Vec<_> = log.iter().filter(|h| h.consumer == name).collect();
        let mut keys: Vec<_> = mine.iter().map(|h| h.key.as_str()).collect();
        keys.sort();
        keys.dedup();
        let mut partitions: Vec<u16> = mine.iter().map(|h| partition(&h.key)).collect();
        partitions.sort();
        partitions.dedup();
        println!(
            "consumer {name}: handled {} events of {} keys, from partitions {partitions:?}",
            mine.len(),
            keys.len()
        );
    }
    let mut by_key: BTreeMap<&str, Vec<&Handled>> = BTreeMap::new();
    for h in log {
        by_key.entry(h.key.as_str()).or_default().push(h);
    }
    let mut failures = Vec::new();
    if log.len() != total {
        failures.push(format!("handled {} events, sent {total}", log.len()));
    }
    let mut group_out_of_order = Vec::new();
    for (key, handled) in &by_key {
        let arrival: Vec<u64> = handled.iter().map(|h| h.seq).collect();
        let mut in_stream = handled.clone();
        in_stream.sort_by_key(|h| h.stream_id);
        let stream_order: Vec<u64> = in_stream.iter().map(|h| h.seq).collect();
        if stream_order != (0..PER_KEY).collect::<Vec<_>>() {
            failures.push(format!("{key}: in its partition as {stream_order:?}"));
        }
        for name in CONSUMERS {
            let mine: Vec<u64> = handled
                .iter()
                .filter(|h| h.consumer == name)
                .map(|h| h.seq)
                .collect();
            if !mine.is_sorted() {
                failures.push(format!("{key}: consumer {name} handled {mine:?}"));
            }
        }
        if !arrival.is_sorted() {
            group_out_of_order.push(format!("{key} (partition {}): {arrival:?}", partition(key)));
        }
    }
    println!(
        "per-key order in the partitions (stream order = send order): {}",
        if failures.iter().any(|f| f.contains("partition as")) {
            "BROKEN"
        } else {
            "held"
        }
    );
    println!(
        "per-key order within each consumer: {}",
        if failures.iter().any(|f| f.contains("consumer")) {
            "BROKEN"
        } else {
            "held"
        }
    );
    if group_out_of_order.is_empty() {
        println!("per-key order across the group (handling order = send order): held");
    } else {
        println!(
            "per-key order across the group: BROKEN for {} key(s):",
            group_out_of_order.len()
        );
        for line in &group_out_of_order {
            println!("  {line}");
        }
        failures.push(format!(
            "{} key(s) out of order across the group",
            group_out_of_order.len()
        ));
    }
    if failures.is_empty() {
        return Ok(());
    }
    for f in &failures {
        eprintln!("FAILED: {f}");
    }
    Err(format!("{} check(s) failed", failures.len()).into())
}

/// `CLUSTER SLOTS` as (first slot, last slot, master `host:port`).
fn slot_ranges(reply: Vec<Value>) -> Res<Vec<(u16, u16, String)>> {
    let mut out = Vec::new();
    for range in reply {
        let Value::Array(parts) = range else {
            return Err("unexpected CLUSTER SLOTS entry".into());
        };
        let [from, to, master, ..] = parts.as_slice() else {
            return Err("short CLUSTER SLOTS entry".into());
        };
        let (from, to): (u16, u16) = (
            redis::from_redis_value(from.clone())?,
            redis::from_redis_value(to.clone())?,
        );
        let Value::Array(node) = master else {
            return Err("unexpected CLUSTER SLOTS node".into());
        };
        let host: String = redis::from_redis_value(node[0].clone())?;
        let port: u16 = redis::from_redis_value(node[1].clone())?;
        out.push((from, to, format!("{host}:{port}")));
    }
    Ok(out)
}
