//! Scenario 7: produce and consume on a 3-master Redis Cluster of its own (no replicas,
//! `backbone_redis::testing::RedisCluster`), over 1 partition and over 6 (a uri whose 6
//! partitions sit 2 per master). Produce: K tasks × D in flight, unkeyed; the framework's
//! producer round-robins the partitions and coalesces sends into one EVALSHA per batch; raw:
//! one EVALSHA of the same publish script per event, on partition `i % P`, over redis-rs's
//! async cluster client. Consume: a pre-filled stream; the framework's consumer (one reader,
//! fetcher, claimer and worker per partition) against a raw loop per partition
//! (XREADGROUP on a cluster connection of its own, a pipeline of HGETALLs, one XACK per batch).
//! Redis CPU is `used_cpu_user` + `used_cpu_sys` summed over the masters; client CPU is this
//! process's (all threads).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backbone_core::StreamAddress;
use backbone_redis::layout::Layout;
use backbone_redis::settings::RedisSettings;
use backbone_redis::testing::{unique_name, RedisCluster};
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder};
use redis::aio::MultiplexedConnection;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Script, Value};
use serde_json::json;

use crate::common::NoOp;
use crate::common::{
    client_us, cpu_us, create_group, drive, fill_on, measured_by, now_ns, order, per_run,
};
use crate::common::{rate, raw_consume_on, raw_script_publish, server_cpu, split, Ctx, Res, Run};
use crate::common::{ShipmentTrackingConsumerBuilderExt, ShipmentTrackingProducerBuilderExt};
use crate::report::{eps, Row};
use crate::scripts;

const MASTERS: usize = 3;
const PARTITIONS: [u16; 2] = [1, 6];

/// The cluster under test and what the runs use of it.
struct Bench<'a> {
    ctx: &'a Ctx,
    fixture: RedisCluster,
    client: ClusterClient,
    masters: Vec<MultiplexedConnection>,
}

impl Bench<'_> {
    fn settings(&self, uri: &str, partitions: u16) -> RedisSettings {
        self.fixture
            .settings()
            .environment(&self.ctx.env)
            .uri(uri)
            .partitions(partitions)
    }

    fn layout(&self, uri: &str, partitions: u16) -> Res<Layout> {
        let address = StreamAddress::new(Some(&self.ctx.env), uri)?;
        Ok(Layout::new(&address, partitions)?)
    }

    async fn conn(&self) -> Res<ClusterConnection> {
        Ok(self.client.get_async_connection().await?)
    }

    /// Redis CPU seconds so far, summed over the masters.
    async fn cpu(&self) -> Res<f64> {
        let mut sum = 0.0;
        for master in &self.masters {
            sum += server_cpu(&mut master.clone()).await?;
        }
        Ok(sum)
    }

    async fn measured(&self, events: u64, work: impl Future<Output = Res<Duration>>) -> Res<Run> {
        measured_by(|| self.cpu(), events, work).await
    }

    async fn flush(&self) -> Res<()> {
        for master in &self.masters {
            redis::cmd("FLUSHALL")
                .arg("SYNC")
                .query_async::<()>(&mut master.clone())
                .await?;
        }
        Ok(())
    }

    /// A fresh uri whose partitions spread evenly over the masters (any uri for one).
    fn spread_uri(&self, prefix: &str, partitions: u16) -> Res<String> {
        for _ in 0..10_000 {
            let uri = unique_name(prefix);
            let mut per_master = std::collections::HashMap::new();
            for keys in self.layout(&uri, partitions)?.partitions() {
                let owner = self.fixture.master_for_key(keys.stream())?;
                *per_master.entry(owner).or_insert(0usize) += 1;
            }
            let even = usize::from(partitions).div_ceil(MASTERS);
            if per_master.values().all(|&n| n <= even) {
                return Ok(uri);
            }
        }
        Err("no uri spreads its partitions evenly".into())
    }

    async fn produce(&self, framework: bool, uri: &str, partitions: u16, n: u64) -> Res<Duration> {
        let (tasks, depth) = (self.ctx.opts.tasks, self.ctx.opts.in_flight);
        if framework {
            let producer = RedisProducerBuilder::new()
                .settings(self.settings(uri, partitions))
                .build_shipment_tracking_producer()
                .await?;
            return drive(n, tasks, depth, move |i| {
                let producer = producer.clone();
                async move {
                    let (user, product) = order(i);
                    producer.order_placed(user, product, now_ns()).await?;
                    Res::Ok(())
                }
            })
            .await;
        }
        let conn = self.conn().await?;
        let layout = Arc::new(self.layout(uri, partitions)?);
        let script = Script::new(scripts::PUBLISH);
        drive(n, tasks, depth, move |i| {
            let (mut conn, layout, script) = (conn.clone(), layout.clone(), script.clone());
            async move {
                let keys = layout.partition((i % u64::from(layout.count())) as u16);
                raw_script_publish(&mut conn, &script, keys, i).await
            }
        })
        .await
    }

    /// Fills the partitions of `uri` with `n` events in all (split evenly).
    async fn fill(&self, uri: &str, partitions: u16, n: u64) -> Res<()> {
        let conn = self.conn().await?;
        let layout = self.layout(uri, partitions)?;
        let counts = split(n, u64::from(partitions));
        for (keys, (_, count)) in layout.partitions().iter().zip(counts) {
            fill_on(conn.clone(), keys, count).await?;
        }
        Ok(())
    }

    /// The framework's consumer reads the `n` events of `uri` as `group`; the time from
    /// subscribing until every event was handled and acknowledged.
    async fn consume_framework(&self, uri: &str, partitions: u16, n: u64) -> Res<Duration> {
        let started = Instant::now();
        let (handler, done) = NoOp::counting(n);
        let lifetime = RedisConsumerBuilder::new()
            .settings(self.settings(uri, partitions))
            .group("fw")
            .name("bench")
            .batch_size(self.ctx.opts.batch)
            .subscribe_shipment_tracking_consumer(handler)
            .await?;
        tokio::time::timeout(limit(n), done.notified())
            .await
            .map_err(|_| format!("the framework consumer did not handle {n} events in time"))?;
        let layout = self.layout(uri, partitions)?;
        let mut conn = self.conn().await?;
        while pending(&mut conn, &layout, "fw").await? > 0 {
            if started.elapsed() > limit(n) {
                return Err("the framework consumer left entries pending".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = started.elapsed();
        lifetime.shutdown().await?;
        Ok(took)
    }

    /// One raw loop per partition, each with a reading cluster connection of its own; the
    /// same clock (connections and groups included).
    async fn consume_raw(&self, uri: &str, partitions: u16, n: u64) -> Res<Duration> {
        let started = Instant::now();
        let deadline = started + limit(n);
        let layout = self.layout(uri, partitions)?;
        let counts = split(n, u64::from(partitions));
        let commands = self.conn().await?;
        let batch = self.ctx.opts.batch;
        let mut loops = Vec::new();
        for (keys, (_, count)) in layout.partitions().iter().zip(counts) {
            let (mut reader, mut commands) = (self.conn().await?, commands.clone());
            let stream = keys.stream().to_owned();
            loops.push(tokio::spawn(async move {
                let mut fields = 0usize;
                let handle = |hash: Vec<(String, Vec<u8>)>| fields += hash.len();
                let (r, c) = (&mut reader, &mut commands);
                raw_consume_on(r, c, &stream, "raw", batch, count, deadline, handle).await?;
                if fields != 3 * count as usize {
                    return Err(format!("raw: {fields} fields for {count} events").into());
                }
                Res::Ok(())
            }));
        }
        for handle in loops {
            handle.await??;
        }
        let took = started.elapsed();
        match pending(&mut self.conn().await?, &layout, "raw").await? {
            0 => Ok(took),
            left => Err(format!("raw: {left} entries left pending").into()),
        }
    }
}

/// How long a consume run may take before it counts as failed.
fn limit(n: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(n)
}

/// Entries `group` read and did not acknowledge, over every partition.
async fn pending(conn: &mut ClusterConnection, layout: &Layout, group: &str) -> Res<i64> {
    let mut sum = 0;
    for keys in layout.partitions() {
        create_group(conn, keys.stream(), group, "0").await?;
        let reply: Vec<Value> = redis::cmd("XPENDING")
            .arg(keys.stream())
            .arg(group)
            .query_async(conn)
            .await?;
        if let Some(Value::Int(n)) = reply.first() {
            sum += n;
        }
    }
    Ok(sum)
}

/// Framework and raw runs of one case, alternated, on fresh uris.
#[derive(Default)]
struct Case {
    fw: Vec<Run>,
    raw: Vec<Run>,
}

pub async fn run(ctx: &Ctx) -> Res<(Vec<Row>, serde_json::Value)> {
    let started = Instant::now();
    let fixture = tokio::task::spawn_blocking(|| RedisCluster::start(MASTERS, 0)).await??;
    let client = ClusterClientBuilder::new(fixture.seed_urls())
        .response_timeout(Duration::from_secs(60))
        .build()?;
    let mut masters = Vec::new();
    for url in fixture.master_urls()? {
        masters.push(
            redis::Client::open(url)?
                .get_multiplexed_async_connection()
                .await?,
        );
    }
    eprintln!("  a {MASTERS}-master cluster in {:.1?}", started.elapsed());
    let bench = Bench {
        ctx,
        fixture,
        client,
        masters,
    };
    let n = ctx.opts.events;
    let mut rows = Vec::new();
    let mut figures = serde_json::Map::new();
    for partitions in PARTITIONS {
        let (mut produce, mut consume) = (Case::default(), Case::default());
        for framework in [true, false] {
            let uri = bench.spread_uri("warmup", partitions)?;
            bench
                .produce(framework, &uri, partitions, n.min(2_000))
                .await?;
        }
        let uri = bench.spread_uri("warmup", partitions)?;
        bench.fill(&uri, partitions, n.min(2_000)).await?;
        bench
            .consume_framework(&uri, partitions, n.min(2_000))
            .await?;
        bench.consume_raw(&uri, partitions, n.min(2_000)).await?;
        bench.flush().await?;
        for round in 0..ctx.opts.rounds {
            for framework in [round % 2 == 0, round % 2 == 1] {
                let uri = bench.spread_uri("produce", partitions)?;
                let run = bench
                    .measured(n, bench.produce(framework, &uri, partitions, n))
                    .await?;
                match framework {
                    true => produce.fw.push(run),
                    false => produce.raw.push(run),
                }
            }
            bench.flush().await?;
            let uri = bench.spread_uri("consume", partitions)?;
            bench.fill(&uri, partitions, n).await?;
            for framework in [round % 2 == 0, round % 2 == 1] {
                if framework {
                    let work = bench.consume_framework(&uri, partitions, n);
                    consume.fw.push(bench.measured(n, work).await?);
                } else {
                    let work = bench.consume_raw(&uri, partitions, n);
                    consume.raw.push(bench.measured(n, work).await?);
                }
            }
            bench.flush().await?;
        }
        let noun = if partitions == 1 {
            "partition"
        } else {
            "partitions"
        };
        for (what, case) in [("produce", &produce), ("consume", &consume)] {
            let (f, r) = (rate(&case.fw), rate(&case.raw));
            let (fc, rc) = (cpu_us(&case.fw), cpu_us(&case.raw));
            rows.push(
                Row::new(
                    format!("7 cluster {what}, {partitions} {noun} ({n} ev, {MASTERS} masters)"),
                    eps(f),
                    eps(r),
                )
                .ratio(f / r),
            );
            rows.push(
                Row::new(
                    format!("  cluster {what} x{partitions}: Redis CPU per event (us)"),
                    format!("{fc:.1} us"),
                    format!("{rc:.1} us"),
                )
                .ratio(fc / rc),
            );
            let (fk, rk) = (client_us(&case.fw), client_us(&case.raw));
            rows.push(
                Row::new(
                    format!("  cluster {what} x{partitions}: client CPU per event (us)"),
                    format!("{fk:.1} us"),
                    format!("{rk:.1} us"),
                )
                .ratio(fk / rk),
            );
            figures.insert(
                format!("{what}_{partitions}_partitions"),
                json!({
                    "events": n,
                    "partitions": partitions,
                    "masters": MASTERS,
                    "framework_events_per_s": f,
                    "raw_events_per_s": r,
                    "ratio": f / r,
                    "framework_redis_cpu_us_per_event": fc,
                    "raw_redis_cpu_us_per_event": rc,
                    "framework_client_cpu_us_per_event": fk,
                    "raw_client_cpu_us_per_event": rk,
                    "rounds": { "framework": per_run(&case.fw), "raw": per_run(&case.raw) },
                }),
            );
        }
    }
    Ok((rows, serde_json::Value::Object(figures)))
}
