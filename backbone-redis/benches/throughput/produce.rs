//! Scenario 1: N events from K tasks, each keeping D sends in flight on one multiplexed
//! connection. Framework: the generated `order_placed` (encode, then the publisher's batching
//! task writes the queued sends with one EVALSHA of the publish script per batch). Raw: the same
//! writes as one HSET + XADD pipeline per event (not atomic, no idempotency check); for
//! reference also a raw EVALSHA of the same script with one event per call, which shows what
//! coalescing sends gains.

use std::time::Duration;

use backbone_redis::testing::unique_name;
use backbone_redis::RedisProducerBuilder;
use redis::Script;
use serde_json::json;

use crate::common::ShipmentTrackingProducerBuilderExt;
use crate::common::{client_us, cpu_us, drive, measured, per_run, rate, Ctx, Res, Run};
use crate::common::{now_ns, order, raw_publish, raw_script_publish};
use crate::report::{eps, Row};
use crate::scripts;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    Framework,
    RawPipeline,
    RawScript,
}

/// Writes `n` events to `uri` the `writer`'s way; returns the time taken (connection set up
/// before the clock starts).
pub async fn produce(ctx: &Ctx, writer: Writer, uri: &str, n: u64) -> Res<Duration> {
    let (tasks, depth) = (ctx.opts.tasks, ctx.opts.in_flight);
    match writer {
        Writer::Framework => {
            let producer = RedisProducerBuilder::new()
                .url(&ctx.url)
                .environment(&ctx.env)
                .uri(uri)
                .build_shipment_tracking_producer()
                .await?;
            drive(n, tasks, depth, move |i| {
                let producer = producer.clone();
                async move {
                    let (user, product) = order(i);
                    producer.order_placed(user, product, now_ns()).await?;
                    Res::Ok(())
                }
            })
            .await
        }
        Writer::RawPipeline | Writer::RawScript => {
            let conn = ctx.conn().await?;
            let keys = ctx.keys(uri);
            let script = Script::new(scripts::PUBLISH);
            drive(n, tasks, depth, move |i| {
                let (mut conn, keys, script) = (conn.clone(), keys.clone(), script.clone());
                async move {
                    if writer == Writer::RawPipeline {
                        let mut pipe = redis::pipe();
                        raw_publish(&mut pipe, &keys, i, now_ns())?;
                        pipe.query_async::<(String,)>(&mut conn).await?;
                        return Ok(());
                    }
                    raw_script_publish(&mut conn, &script, &keys, i).await
                }
            })
            .await
        }
    }
}

pub async fn run(ctx: &Ctx) -> Res<(Vec<Row>, serde_json::Value)> {
    let n = ctx.opts.events;
    let writers = [Writer::Framework, Writer::RawPipeline, Writer::RawScript];
    for writer in writers {
        produce(ctx, writer, &unique_name("warmup"), n.min(2_000)).await?;
    }
    ctx.cleanup().await?;
    let mut runs: [Vec<Run>; 3] = Default::default();
    for round in 0..ctx.opts.rounds {
        let mut order: Vec<usize> = (0..writers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for w in order {
            let uri = unique_name("produce");
            runs[w].push(measured(ctx, n, produce(ctx, writers[w], &uri, n)).await?);
        }
        ctx.cleanup().await?;
    }
    let [fw, pipe, script] = [rate(&runs[0]), rate(&runs[1]), rate(&runs[2])];
    let ratio = fw / pipe;
    let what = format!(
        "1 produce ({n} ev, {} tasks x {} in flight)",
        ctx.opts.tasks, ctx.opts.in_flight
    );
    let rows = vec![
        Row::new(what, eps(fw), eps(pipe))
            .ratio(ratio)
            .target(">= 0.90", ratio >= 0.9),
        Row::new(
            "  produce vs raw EVALSHA, one event per call",
            eps(fw),
            eps(script),
        )
        .ratio(fw / script),
        Row::new(
            "  produce: Redis CPU per event (us)",
            format!("{:.1} us", cpu_us(&runs[0])),
            format!("{:.1} us", cpu_us(&runs[1])),
        )
        .ratio(cpu_us(&runs[0]) / cpu_us(&runs[1])),
        Row::new(
            "  produce: client CPU per event (us)",
            format!("{:.1} us", client_us(&runs[0])),
            format!("{:.1} us", client_us(&runs[1])),
        )
        .ratio(client_us(&runs[0]) / client_us(&runs[1])),
    ];
    let figures = json!({
        "events": n,
        "tasks": ctx.opts.tasks,
        "in_flight_per_task": ctx.opts.in_flight,
        "framework_events_per_s": fw,
        "raw_events_per_s": pipe,
        "ratio": ratio,
        "target_ratio": 0.9,
        "met": ratio >= 0.9,
        "raw_script_events_per_s": script,
        "ratio_vs_raw_script": fw / script,
        "framework_redis_cpu_us_per_event": cpu_us(&runs[0]),
        "raw_redis_cpu_us_per_event": cpu_us(&runs[1]),
        "framework_client_cpu_us_per_event": client_us(&runs[0]),
        "raw_client_cpu_us_per_event": client_us(&runs[1]),
        "raw_script_redis_cpu_us_per_event": cpu_us(&runs[2]),
        "rounds": {
            "framework": per_run(&runs[0]),
            "raw": per_run(&runs[1]),
            "raw_script": per_run(&runs[2]),
        },
    });
    Ok((rows, figures))
}
