//! Scenario 3: end-to-end latency at a fixed offered rate. A pacer sends every event that is
//! due (a token bucket refilled at each timer tick, ~1 ms), each send on a task of its own; the
//! event's `time` parameter is the monotonic clock (ns) read just before the send starts; the
//! consumer records now − time when its handler runs. Framework: the generated producer and a
//! consumer; raw: the HSET + XADD pipeline and the raw XREADGROUP loop (BLOCK, on its own
//! connection). Each side runs `--rounds` times, alternating, and the samples are pooled.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backbone_core::{async_trait, ConsumerContext, HandlerResult};
use backbone_redis::testing::unique_name;
use backbone_redis::RedisConsumerBuilder;
use serde_json::json;
use tokio::task::JoinSet;

use crate::common::{
    create_group, now_ns, order, quantile, raw_consume, raw_publish, Ctx, Product, Res,
    ShipmentTrackingConsumer, ShipmentTrackingConsumerBuilderExt,
    ShipmentTrackingProducerBuilderExt, User,
};
use crate::report::{ms, Row};

/// The target: p99 at most 2 ms at 1k events/s.
const TARGET_RATE: u64 = 1_000;
const TARGET_P99_NS: u64 = 2_000_000;

type Samples = Arc<Mutex<Vec<u64>>>;

struct Recorder(Samples);

#[async_trait]
impl ShipmentTrackingConsumer for Recorder {
    async fn order_placed(
        &self,
        _: &ConsumerContext,
        _: User,
        _: Product,
        time: u64,
    ) -> HandlerResult {
        let latency = now_ns().saturating_sub(time);
        self.0.lock().expect("samples").push(latency);
        Ok(())
    }
    async fn packing(&self, _: &ConsumerContext, _: String, _: u64, _: u64) -> HandlerResult {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub count: usize,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    /// The rate the pacer achieved (events / time from the first send to the last).
    pub achieved_rate: f64,
}

impl Latency {
    fn json(&self) -> serde_json::Value {
        json!({
            "count": self.count,
            "p50_ms": self.p50 as f64 / 1e6,
            "p99_ms": self.p99 as f64 / 1e6,
            "p999_ms": self.p999 as f64 / 1e6,
            "max_ms": self.max as f64 / 1e6,
            "achieved_rate": self.achieved_rate,
        })
    }
}

/// One run: `rate` events/s for `secs`, framework or raw; returns the latencies (ns) and the
/// achieved rate.
async fn measure(ctx: &Ctx, framework: bool, rate: u64, secs: f64) -> Res<(Vec<u64>, f64)> {
    let total = ((rate as f64 * secs) as u64).max(1);
    let uri = unique_name("latency");
    let keys = ctx.keys(&uri);
    let samples: Samples = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let wait = Duration::from_secs_f64(secs) + Duration::from_secs(30);
    // The consumer first, its group in place before the first event.
    let lifetime = if framework {
        let lifetime = RedisConsumerBuilder::new()
            .url(&ctx.url)
            .environment(&ctx.env)
            .uri(&uri)
            .group("lat")
            .name("bench")
            .batch_size(ctx.opts.batch)
            .max_messages(total)
            .subscribe_shipment_tracking_consumer(Recorder(samples.clone()))
            .await?;
        Some(lifetime)
    } else {
        create_group(&mut ctx.conn().await?, keys.stream(), "lat", "0").await?;
        None
    };
    let consume = async {
        match lifetime {
            Some(lifetime) => {
                let done = tokio::time::timeout(wait, lifetime.completion()).await;
                done.map_err(|_| "the framework consumer did not get every event in time")??;
            }
            None => {
                let samples = samples.clone();
                let record = move |fields: Vec<(String, Vec<u8>)>| {
                    let time = fields.iter().find(|(name, _)| name == "time");
                    let time = time.and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok());
                    if let Some(time) = time {
                        let latency = now_ns().saturating_sub(time);
                        samples.lock().expect("samples").push(latency);
                    }
                };
                let deadline = Instant::now() + wait;
                raw_consume(ctx, keys.stream(), "lat", total, deadline, record).await?;
            }
        }
        Res::Ok(())
    };
    let produce = async {
        tokio::time::sleep(Duration::from_millis(50)).await; // the first read is in place
        pace(ctx, framework, &uri, rate, total).await
    };
    let (consumed, achieved) = tokio::join!(consume, produce);
    let achieved = achieved?;
    consumed?;
    let samples = std::mem::take(&mut *samples.lock().expect("samples"));
    Ok((samples, achieved))
}

/// `rounds` alternated pairs of runs (framework first in even rounds when `fw_first`), each
/// `secs / rounds` long, so that a disturbance of the machine or of Redis (a rehash after the
/// previous scenario's cleanup, say) does not land on one side only; the samples are pooled.
async fn alternated(ctx: &Ctx, rate: u64, secs: f64, fw_first: bool) -> Res<(Latency, Latency)> {
    let rounds = ctx.opts.rounds.max(1);
    let each = secs / rounds as f64;
    let (mut fw, mut raw) = ((Vec::new(), 0.0), (Vec::new(), 0.0));
    for round in 0..rounds {
        let sides = match (round % 2 == 0) == fw_first {
            true => [true, false],
            false => [false, true],
        };
        for framework in sides {
            let (samples, achieved) = measure(ctx, framework, rate, each).await?;
            let side = if framework { &mut fw } else { &mut raw };
            side.0.extend(samples);
            side.1 += achieved / rounds as f64;
        }
        ctx.cleanup().await?;
    }
    Ok((summarize(fw.0, fw.1), summarize(raw.0, raw.1)))
}

/// Sends `total` events at `rate`; returns the achieved rate.
async fn pace(ctx: &Ctx, framework: bool, uri: &str, rate: u64, total: u64) -> Res<f64> {
    let producer = if framework {
        Some(
            backbone_redis::RedisProducerBuilder::new()
                .url(&ctx.url)
                .environment(&ctx.env)
                .uri(uri)
                .build_shipment_tracking_producer()
                .await?,
        )
    } else {
        None
    };
    let conn = ctx.conn().await?;
    let keys = ctx.keys(uri);
    let period = 1e9 / rate as f64;
    let mut sends: JoinSet<Res<()>> = JoinSet::new();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut last_send = started;
    while sent < total {
        let due = ((started.elapsed().as_nanos() as f64 / period) as u64 + 1).min(total);
        while sent < due {
            let i = sent;
            if let Some(producer) = &producer {
                let producer = producer.clone();
                sends.spawn(async move {
                    let (user, product) = order(i);
                    producer.order_placed(user, product, now_ns()).await?;
                    Ok(())
                });
            } else {
                let (mut conn, keys) = (conn.clone(), keys.clone());
                sends.spawn(async move {
                    let mut pipe = redis::pipe();
                    raw_publish(&mut pipe, &keys, i, now_ns())?;
                    pipe.query_async::<(String,)>(&mut conn).await?;
                    Ok(())
                });
            }
            sent += 1;
            last_send = Instant::now();
        }
        while let Some(done) = sends.try_join_next() {
            done??;
        }
        if sent < total {
            let next = started + Duration::from_nanos((sent as f64 * period) as u64);
            tokio::time::sleep_until(next.into()).await;
        }
    }
    while let Some(done) = sends.join_next().await {
        done??;
    }
    let span = last_send.duration_since(started).as_secs_f64();
    Ok(if span > 0.0 {
        (total - 1) as f64 / span
    } else {
        rate as f64
    })
}

fn summarize(mut v: Vec<u64>, achieved_rate: f64) -> Latency {
    v.sort_unstable();
    Latency {
        count: v.len(),
        p50: quantile(&v, 0.50),
        p99: quantile(&v, 0.99),
        p999: quantile(&v, 0.999),
        max: v.last().copied().unwrap_or(0),
        achieved_rate,
    }
}

pub async fn run(ctx: &Ctx) -> Res<(Vec<Row>, serde_json::Value)> {
    let secs = ctx.opts.duration_s;
    // Warm-up: connections, scripts, allocator.
    measure(ctx, true, 1_000, 0.2).await?;
    measure(ctx, false, 1_000, 0.2).await?;
    ctx.cleanup().await?;
    let mut rows = Vec::new();
    let mut figures = Vec::new();
    for (k, &rate) in ctx.opts.rates.iter().enumerate() {
        let (fw, raw) = alternated(ctx, rate, secs, k % 2 == 0).await?;
        let checked = rate == TARGET_RATE;
        let met = fw.p99 <= TARGET_P99_NS;
        for (name, f, r) in [
            ("p50", fw.p50, raw.p50),
            ("p99", fw.p99, raw.p99),
            ("p99.9", fw.p999, raw.p999),
        ] {
            let row = Row::new(format!("3 latency {name} @ {rate} ev/s"), ms(f), ms(r))
                .ratio(f as f64 / r.max(1) as f64);
            rows.push(match (checked, name) {
                (true, "p99") => row.target("fw <= 2 ms", met),
                _ => row,
            });
        }
        figures.push(json!({
            "offered_rate": rate,
            "seconds": secs,
            "framework": fw.json(),
            "raw": raw.json(),
            "ratio_p50": fw.p50 as f64 / raw.p50.max(1) as f64,
            "ratio_p99": fw.p99 as f64 / raw.p99.max(1) as f64,
            "ratio_p999": fw.p999 as f64 / raw.p999.max(1) as f64,
            "target_p99_ms": if checked { json!(2.0) } else { json!(null) },
            "met": if checked { json!(met) } else { json!(null) },
        }));
    }
    let achieved: Vec<String> = figures
        .iter()
        .map(|f| {
            format!(
                "{}: fw {:.0}, raw {:.0}",
                f["offered_rate"],
                f["framework"]["achieved_rate"].as_f64().unwrap_or(0.0),
                f["raw"]["achieved_rate"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    eprintln!("  achieved rates (ev/s): {}", achieved.join("; "));
    Ok((rows, json!(figures)))
}
