//! Scenario 4: event-store appends with an expected version. K tasks × D aggregates, each
//! aggregate appending one event at a time with `Exact(current)`. Framework: `EventStore::append`
//! (one EVALSHA of its script); raw: EVALSHA of the same script text (`src/lua/append.lua`).

use std::time::{Duration, Instant};

use backbone_core::metadata::now_millis;
use backbone_core::store::{AppendOptions, ExpectedVersion};
use backbone_core::MessageId;
use backbone_redis::store::EventStoreBuilder;
use backbone_redis::testing::unique_name;
use futures::StreamExt;
use redis::Script;
use serde_json::json;

use crate::common::{cpu_us, measured, per_run, rate, split, Ctx, Res};
use crate::common::{now_ns, order, raw_fields, ShipmentTrackingEvent};
use crate::common::{OPERATION, PARAMS};
use crate::report::{eps, Row};
use crate::scripts;

/// Appends `n` events in all to `uri`; returns the time taken (connected before the clock).
async fn append(ctx: &Ctx, framework: bool, uri: &str, n: u64) -> Res<Duration> {
    let (tasks, depth) = (ctx.opts.tasks, ctx.opts.in_flight as u64);
    let aggregates = split(n, tasks * depth);
    let store = EventStoreBuilder::new()
        .url(&ctx.url)
        .environment(&ctx.env)
        .uri(uri)
        .build::<ShipmentTrackingEvent>()
        .await?;
    let conn = ctx.conn().await?;
    let keys = ctx.keys(uri);
    let script = Script::new(scripts::APPEND);
    let started = Instant::now();
    let per_task = aggregates.chunks(depth as usize).map(<[_]>::to_vec);
    let handles: Vec<_> = per_task
        .map(|chains| {
            let (store, conn, keys, script) =
                (store.clone(), conn.clone(), keys.clone(), script.clone());
            tokio::spawn(async move {
                let (store, keys, script) = (&store, &keys, &script);
                let runs = futures::stream::iter(chains).map(|(first, count)| {
                    let mut conn = conn.clone();
                    async move {
                        let aggregate = format!("agg-{first}");
                        for v in 0..count {
                            let i = first + v;
                            if framework {
                                let (user, product) = order(i);
                                let time = now_ns();
                                let event = ShipmentTrackingEvent::OrderPlaced {
                                    user,
                                    product,
                                    time,
                                };
                                let expected = ExpectedVersion::Exact(v);
                                let options = AppendOptions::default();
                                store
                                    .append(&aggregate, expected, &[event], options)
                                    .await?;
                                continue;
                            }
                            let id = MessageId::new();
                            let mut call = script.key(keys.stream());
                            call.key(keys.aggregate(&aggregate))
                                .key(keys.store_stats())
                                .key(keys.payload(&id));
                            call.arg("exact")
                                .arg(v)
                                .arg(0)
                                .arg(24 * 3600)
                                .arg(&aggregate)
                                .arg(now_millis())
                                .arg(1)
                                .arg("")
                                .arg(id.to_string())
                                .arg(OPERATION)
                                .arg(0)
                                .arg(0)
                                .arg(3);
                            let fields = raw_fields(i, now_ns())?;
                            for (name, value) in PARAMS.iter().zip(fields) {
                                call.arg(name).arg(value);
                            }
                            let (status, text): (String, String) =
                                call.invoke_async(&mut conn).await?;
                            if status != "ok" {
                                return Err(format!("raw append: {status} {text}").into());
                            }
                        }
                        Res::Ok(())
                    }
                });
                let mut runs = runs.buffer_unordered(depth as usize);
                while let Some(done) = runs.next().await {
                    done?;
                }
                Res::Ok(())
            })
        })
        .collect();
    for handle in handles {
        handle.await??;
    }
    Ok(started.elapsed())
}

pub async fn run(ctx: &Ctx) -> Res<(Vec<Row>, serde_json::Value)> {
    let n = ctx.opts.events;
    append(ctx, true, &unique_name("warmup"), n.min(1_000)).await?;
    append(ctx, false, &unique_name("warmup"), n.min(1_000)).await?;
    ctx.cleanup().await?;
    let (mut fw, mut rw) = (Vec::new(), Vec::new());
    for round in 0..ctx.opts.rounds {
        for framework in [round % 2 == 0, round % 2 == 1] {
            let uri = unique_name("append");
            let run = measured(ctx, n, append(ctx, framework, &uri, n)).await?;
            match framework {
                true => fw.push(run),
                false => rw.push(run),
            }
        }
        ctx.cleanup().await?;
    }
    let (f, r) = (rate(&fw), rate(&rw));
    let ratio = f / r;
    let aggregates = ctx.opts.tasks * ctx.opts.in_flight as u64;
    let rows = vec![
        Row::new(
            format!("4 append Exact(v) ({n} ev, {aggregates} aggregates)"),
            eps(f),
            eps(r),
        )
        .ratio(ratio)
        .target(">= 0.80", ratio >= 0.8),
        Row::new(
            "  append: Redis CPU per event (us)",
            format!("{:.1} us", cpu_us(&fw)),
            format!("{:.1} us", cpu_us(&rw)),
        )
        .ratio(cpu_us(&fw) / cpu_us(&rw)),
    ];
    let figures = json!({
        "events": n,
        "aggregates": aggregates,
        "events_per_append": 1,
        "framework_events_per_s": f,
        "raw_events_per_s": r,
        "ratio": ratio,
        "target_ratio": 0.8,
        "met": ratio >= 0.8,
        "framework_redis_cpu_us_per_event": cpu_us(&fw),
        "raw_redis_cpu_us_per_event": cpu_us(&rw),
        "rounds": { "framework": per_run(&fw), "raw": per_run(&rw) },
    });
    Ok((rows, figures))
}
