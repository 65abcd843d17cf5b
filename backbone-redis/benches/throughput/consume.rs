//! Scenario 2: one consumer, batch B, ack on success, a no-op handler, over a stream pre-filled
//! with N events; the framework and the raw loop read the same stream, each with its own group.
//! Scenario 5: the same, reading the newest M entries of a 10k-entry and of a long stream.

use std::future::Future;
use std::time::{Duration, Instant};

use backbone_core::ConsumerLifetime;
use backbone_redis::testing::unique_name;
use backbone_redis::RedisConsumerBuilder;
use redis::Value;
use serde_json::json;

use crate::common::{
    client_us, cpu_us, create_group, fill, measured, pending, per_run, rate, raw_consume, Ctx,
    NoOp, Res, Run, ShipmentTrackingConsumerBuilderExt,
};
use crate::report::{eps, Row};

/// How long a consume run may take before it counts as failed.
pub fn limit(n: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(n)
}

/// The framework's consumer reads `n` events as `group` (created before if it exists); returns
/// the time from subscribing to completion (its last XACK included).
pub async fn framework(ctx: &Ctx, uri: &str, group: &str, n: u64) -> Res<Duration> {
    framework_with(ctx, uri, group, n, |builder| {
        builder.subscribe_shipment_tracking_consumer(NoOp::default())
    })
    .await
}

/// [`framework`] with the consumer that `subscribe` makes of the run's builder (URL,
/// environment, `uri`, `group`, batch size, `n` messages).
pub async fn framework_with<F, Fut>(
    ctx: &Ctx,
    uri: &str,
    group: &str,
    n: u64,
    subscribe: F,
) -> Res<Duration>
where
    F: FnOnce(RedisConsumerBuilder) -> Fut,
    Fut: Future<Output = Result<ConsumerLifetime, backbone_core::Error>>,
{
    let started = Instant::now();
    let builder = RedisConsumerBuilder::new()
        .url(&ctx.url)
        .environment(&ctx.env)
        .uri(uri)
        .group(group)
        .name("bench")
        .batch_size(ctx.opts.batch)
        .max_messages(n);
    let lifetime = subscribe(builder).await?;
    tokio::time::timeout(limit(n), lifetime.completion())
        .await
        .map_err(|_| format!("the framework consumer did not handle {n} events in time"))??;
    let took = started.elapsed();
    check_acked(ctx, uri, group).await?;
    Ok(took)
}

/// The raw loop reads `n` events as `group`; the same clock (connections and group included).
pub async fn raw(ctx: &Ctx, uri: &str, group: &str, n: u64) -> Res<Duration> {
    let stream = ctx.keys(uri).stream().to_owned();
    let started = Instant::now();
    let deadline = started + limit(n);
    let mut fields = 0usize;
    raw_consume(ctx, &stream, group, n, deadline, |hash| {
        fields += hash.len()
    })
    .await?;
    let took = started.elapsed();
    if fields != 3 * n as usize {
        return Err(format!("the raw consumer got {fields} fields for {n} events").into());
    }
    check_acked(ctx, uri, group).await?;
    Ok(took)
}

pub async fn check_acked(ctx: &Ctx, uri: &str, group: &str) -> Res<()> {
    match pending(ctx, ctx.keys(uri).stream(), group).await? {
        0 => Ok(()),
        n => Err(format!("group {group}: {n} entries left pending").into()),
    }
}

pub async fn run(ctx: &Ctx) -> Res<(Vec<Row>, serde_json::Value)> {
    let n = ctx.opts.events;
    let warm = unique_name("warmup");
    fill(ctx, &ctx.keys(&warm), n.min(2_000)).await?;
    framework(ctx, &warm, "fw", n.min(2_000)).await?;
    raw(ctx, &warm, "raw", n.min(2_000)).await?;
    ctx.cleanup().await?;
    let (mut fw, mut rw) = (Vec::new(), Vec::new());
    for round in 0..ctx.opts.rounds {
        let uri = unique_name("consume");
        fill(ctx, &ctx.keys(&uri), n).await?;
        for side in [round % 2, 1 - round % 2] {
            match side {
                0 => fw.push(measured(ctx, n, framework(ctx, &uri, "fw", n)).await?),
                _ => rw.push(measured(ctx, n, raw(ctx, &uri, "raw", n)).await?),
            }
        }
        ctx.cleanup().await?;
    }
    let (f, r) = (rate(&fw), rate(&rw));
    let ratio = f / r;
    let rows = vec![
        Row::new(
            format!("2 consume ({n} ev, batch {})", ctx.opts.batch),
            eps(f),
            eps(r),
        )
        .ratio(ratio)
        .target(">= 1.00", ratio >= 1.0),
        Row::new(
            "  consume: Redis CPU per event (us)",
            format!("{:.1} us", cpu_us(&fw)),
            format!("{:.1} us", cpu_us(&rw)),
        )
        .ratio(cpu_us(&fw) / cpu_us(&rw)),
        Row::new(
            "  consume: client CPU per event (us)",
            format!("{:.1} us", client_us(&fw)),
            format!("{:.1} us", client_us(&rw)),
        )
        .ratio(client_us(&fw) / client_us(&rw)),
    ];
    let figures = json!({
        "events": n,
        "batch": ctx.opts.batch,
        "framework_events_per_s": f,
        "raw_events_per_s": r,
        "ratio": ratio,
        "target_ratio": 1.0,
        "met": ratio >= 1.0,
        "framework_redis_cpu_us_per_event": cpu_us(&fw),
        "raw_redis_cpu_us_per_event": cpu_us(&rw),
        "framework_client_cpu_us_per_event": client_us(&fw),
        "raw_client_cpu_us_per_event": client_us(&rw),
        "rounds": { "framework": per_run(&fw), "raw": per_run(&rw) },
    });
    Ok((rows, figures))
}

/// The id after which the newest `m` entries of `stream` start ("0" when it has no more).
async fn start_of_newest(ctx: &Ctx, stream: &str, m: u64) -> Res<String> {
    let mut conn = ctx.conn().await?;
    let reply: Vec<Value> = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(m + 1)
        .query_async(&mut conn)
        .await?;
    if reply.len() as u64 <= m {
        return Ok("0".into());
    }
    match reply.into_iter().last() {
        Some(Value::Array(mut parts)) if !parts.is_empty() => {
            Ok(redis::from_redis_value(parts.swap_remove(0))?)
        }
        other => Err(format!("unexpected XREVRANGE entry {other:?}").into()),
    }
}

pub async fn run_long(ctx: &Ctx) -> Res<(Vec<Row>, serde_json::Value)> {
    let (short_len, long_len) = (ctx.opts.short_len, ctx.opts.long_len);
    let m = ctx.opts.events.min(short_len);
    let mut streams = Vec::new();
    for len in [short_len, long_len] {
        let uri = unique_name("long");
        let started = Instant::now();
        fill(ctx, &ctx.keys(&uri), len).await?;
        eprintln!("  filled a {len}-entry stream in {:.1?}", started.elapsed());
        let start = start_of_newest(ctx, ctx.keys(&uri).stream(), m).await?;
        streams.push((uri, start));
    }
    // runs[stream][0 framework, 1 raw]
    let mut runs: [[Vec<Run>; 2]; 2] = Default::default();
    // Short runs (one 10k stream's worth) vary by about 15% each: many of them, pooled.
    let rounds = 4 * ctx.opts.rounds;
    for round in 0..rounds {
        // Short and long alternate, and so do framework and raw.
        let mut plan = vec![(0, 0), (1, 0), (1, 1), (0, 1)];
        if round % 2 == 1 {
            plan.reverse();
        }
        for (s, side) in plan {
            let (uri, start) = &streams[s];
            let group = format!("g{round}-{side}");
            let mut conn = ctx.conn().await?;
            create_group(&mut conn, ctx.keys(uri).stream(), &group, start).await?;
            let run = match side {
                0 => measured(ctx, m, framework(ctx, uri, &group, m)).await?,
                _ => measured(ctx, m, raw(ctx, uri, &group, m)).await?,
            };
            runs[s][side].push(run);
        }
    }
    ctx.cleanup().await?;
    let r = |s: usize, side: usize| rate(&runs[s][side]);
    let (fw_short, fw_long, raw_short, raw_long) = (r(0, 0), r(1, 0), r(0, 1), r(1, 1));
    let (fw_growth, raw_growth) = (fw_long / fw_short, raw_long / raw_short);
    let long_name = if long_len >= 1_000_000 && long_len % 1_000_000 == 0 {
        format!("{}M", long_len / 1_000_000)
    } else {
        format!("{}k", long_len / 1_000)
    };
    let quick_note = if ctx.opts.quick { ", --quick" } else { "" };
    let rows = vec![
        Row::new(
            format!("5 consume newest {m} of a 10k stream"),
            eps(fw_short),
            eps(raw_short),
        )
        .ratio(fw_short / raw_short),
        Row::new(
            format!("5 consume newest {m} of a {long_name} stream{quick_note}"),
            eps(fw_long),
            eps(raw_long),
        )
        .ratio(fw_long / raw_long),
        Row::new(
            format!("5 {long_name}/10k consume (framework | raw)"),
            format!("{fw_growth:.2}"),
            format!("{raw_growth:.2}"),
        )
        .target("fw >= 0.90", fw_growth >= 0.9),
    ];
    let figures = json!({
        "short_len": short_len,
        "long_len": long_len,
        "long_len_reduced_by_quick": ctx.opts.quick,
        "consumed_per_run": m,
        "runs_per_case": rounds,
        "framework_short_events_per_s": fw_short,
        "framework_long_events_per_s": fw_long,
        "raw_short_events_per_s": raw_short,
        "raw_long_events_per_s": raw_long,
        "framework_long_over_short": fw_growth,
        "raw_long_over_short": raw_growth,
        "ratio_short": fw_short / raw_short,
        "ratio_long": fw_long / raw_long,
        "target_long_over_short": 0.9,
        "met": fw_growth >= 0.9,
        "framework_short_redis_cpu_us_per_event": cpu_us(&runs[0][0]),
        "framework_long_redis_cpu_us_per_event": cpu_us(&runs[1][0]),
        "raw_short_redis_cpu_us_per_event": cpu_us(&runs[0][1]),
        "raw_long_redis_cpu_us_per_event": cpu_us(&runs[1][1]),
        "rounds": {
            "framework_short": per_run(&runs[0][0]),
            "framework_long": per_run(&runs[1][0]),
            "raw_short": per_run(&runs[0][1]),
            "raw_long": per_run(&runs[1][1]),
        },
    });
    Ok((rows, figures))
}
