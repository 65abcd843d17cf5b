//! Scenario 9: the inline storage (`#[events_contract(storage = "inline")]`: the parameters as
//! `param.<name>` entry fields, no payload hash, idempotent through the producer's sequence
//! record). In each round, alternating: the framework producing the same orders in the hash
//! layout and inline, and the raw HSET + XADD pipeline of scenario 1; then the framework's
//! consumer reading each of the two framework streams, and the raw loop reading the raw stream
//! (HGETALL per entry). Then Redis memory per event of the framework's two layouts (scenario
//! 6's count: `MEMORY USAGE` of every key under the stream's tag, over XLEN).

use std::time::Duration;

use backbone_core::events_contract;
use backbone_redis::testing::unique_name;
use backbone_redis::RedisProducerBuilder;
use serde_json::json;

use crate::common::{
    client_us, cpu_us, drive, measured, now_ns, order, per_run, rate, Ctx, Product, Res, Run, User,
};
use crate::consume;
use crate::memory::usage;
use crate::produce::{produce, Writer};
use crate::report::{bytes, eps, Row};

/// `ShipmentTracking::order_placed`, inline: the same operation, so the hash-layout contract's
/// consumer reads these entries.
#[events_contract(storage = "inline")]
pub trait InlineShipment {
    async fn order_placed(&self, user: User, product: Product, time: u64);
}

/// The framework producing `n` orders inline, driven as scenario 1 drives it.
async fn produce_inline(ctx: &Ctx, uri: &str, n: u64) -> Res<Duration> {
    let producer = RedisProducerBuilder::new()
        .url(&ctx.url)
        .environment(&ctx.env)
        .uri(uri)
        .build_inline_shipment_producer()
        .await?;
    drive(n, ctx.opts.tasks, ctx.opts.in_flight, move |i| {
        let producer = producer.clone();
        async move {
            let (user, product) = order(i);
            producer.order_placed(user, product, now_ns()).await?;
            Res::Ok(())
        }
    })
    .await
}

/// What side 1 of a round sends: scenario 9 inline, scenario 10 personal (sealed).
#[derive(Clone, Copy)]
pub enum Variant {
    Inline,
    Personal,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Inline => "inline",
            Variant::Personal => "personal",
        }
    }
}

/// Which side of a round: 0 framework hash, 1 framework `variant`, 2 raw.
async fn write(ctx: &Ctx, variant: Variant, side: usize, uri: &str, n: u64) -> Res<Duration> {
    match (side, variant) {
        (0, _) => produce(ctx, Writer::Framework, uri, n).await,
        (1, Variant::Inline) => produce_inline(ctx, uri, n).await,
        (1, Variant::Personal) => crate::personal::produce_personal(ctx, uri, n).await,
        _ => produce(ctx, Writer::RawPipeline, uri, n).await,
    }
}

async fn read(ctx: &Ctx, side: usize, uri: &str, n: u64) -> Res<Duration> {
    match side {
        0 | 1 => consume::framework(ctx, uri, "fw", n).await,
        _ => consume::raw(ctx, uri, "raw", n).await,
    }
}

pub fn cpu_rows(what: &str, variant: Variant, runs: &[Vec<Run>; 3]) -> Vec<Row> {
    let us = |f: fn(&[Run]) -> f64, i: usize| f(&runs[i]);
    let v = variant.name();
    vec![
        Row::new(
            format!("  {what} {v}: Redis CPU per event (us)"),
            format!("{:.1} us", us(cpu_us, 1)),
            format!("{:.1} us", us(cpu_us, 2)),
        )
        .ratio(us(cpu_us, 1) / us(cpu_us, 2)),
        Row::new(
            format!("  {what} {v}: client CPU per event (us)"),
            format!("{:.1} us", us(client_us, 1)),
            format!("{:.1} us", us(client_us, 2)),
        )
        .ratio(us(client_us, 1) / us(client_us, 2)),
    ]
}

/// Warms up, then alternates the three sides' produce and consume runs for each round:
/// `[framework hash, framework variant, raw]` produced and consumed.
pub async fn rounds(ctx: &Ctx, variant: Variant) -> Res<([Vec<Run>; 3], [Vec<Run>; 3])> {
    let n = ctx.opts.events;
    for side in 0..3 {
        let uri = unique_name("warmup");
        write(ctx, variant, side, &uri, n.min(2_000)).await?;
        read(ctx, side, &uri, n.min(2_000)).await?;
    }
    ctx.cleanup().await?;
    // [framework hash, framework inline, raw]
    let mut produced: [Vec<Run>; 3] = Default::default();
    let mut consumed: [Vec<Run>; 3] = Default::default();
    for round in 0..ctx.opts.rounds {
        let mut order = vec![0, 1, 2];
        if round % 2 == 1 {
            order.reverse();
        }
        let uris = [0, 1, 2].map(|_| unique_name("inline"));
        for &side in &order {
            produced[side].push(measured(ctx, n, write(ctx, variant, side, &uris[side], n)).await?);
        }
        for &side in &order {
            consumed[side].push(measured(ctx, n, read(ctx, side, &uris[side], n)).await?);
        }
        ctx.cleanup().await?;
    }
    Ok((produced, consumed))
}

pub async fn run(ctx: &Ctx) -> Res<(Vec<Row>, serde_json::Value)> {
    let n = ctx.opts.events;
    let (produced, consumed) = rounds(ctx, Variant::Inline).await?;
    let p = [0, 1, 2].map(|i| rate(&produced[i]));
    let c = [0, 1, 2].map(|i| rate(&consumed[i]));

    // Memory: names of equal length, as in scenario 6.
    let m = n.min(10_000);
    let (hash_uri, inline_uri) = ("mem.fh", "mem.fi");
    produce(ctx, Writer::Framework, hash_uri, m).await?;
    produce_inline(ctx, inline_uri, m).await?;
    let hash = usage(ctx, &ctx.keys(hash_uri)).await?;
    let inline = usage(ctx, &ctx.keys(inline_uri)).await?;
    ctx.cleanup().await?;
    if inline.entries != m as i64 || inline.keys != 2 {
        let (keys, entries) = (inline.keys, inline.entries);
        return Err(format!("inline layout: {keys} keys for {entries} entries").into());
    }
    let memory = inline.per_event() / hash.per_event();

    let produce_ratio = p[1] / p[2];
    let mut rows = vec![
        Row::new(
            format!(
                "9 produce inline ({n} ev, {} tasks x {} in flight)",
                ctx.opts.tasks, ctx.opts.in_flight
            ),
            eps(p[1]),
            eps(p[2]),
        )
        .ratio(produce_ratio)
        .target(">= 1.00", produce_ratio >= 1.0),
        Row::new(
            "  produce inline vs hash layout (framework)",
            eps(p[1]),
            eps(p[0]),
        )
        .ratio(p[1] / p[0]),
        Row::new("  produce hash layout (framework)", eps(p[0]), eps(p[2])).ratio(p[0] / p[2]),
    ];
    rows.extend(cpu_rows("produce", Variant::Inline, &produced));
    rows.extend([
        Row::new(
            format!("9 consume inline ({n} ev, batch {})", ctx.opts.batch),
            eps(c[1]),
            eps(c[2]),
        )
        .ratio(c[1] / c[2]),
        Row::new(
            "  consume inline vs hash layout (framework)",
            eps(c[1]),
            eps(c[0]),
        )
        .ratio(c[1] / c[0]),
        Row::new("  consume hash layout (framework)", eps(c[0]), eps(c[2])).ratio(c[0] / c[2]),
    ]);
    rows.extend(cpu_rows("consume", Variant::Inline, &consumed));
    rows.push(
        Row::new(
            format!("9 memory/event inline vs hash layout ({m} ev, framework)"),
            bytes(inline.per_event()),
            bytes(hash.per_event()),
        )
        .ratio(memory)
        .target("<= 0.50", memory <= 0.5),
    );
    let figures = json!({
        "events": n,
        "memory_events": m,
        "produce_events_per_s": { "hash": p[0], "inline": p[1], "raw": p[2] },
        "consume_events_per_s": { "hash": c[0], "inline": c[1], "raw": c[2] },
        "produce_inline_over_raw": produce_ratio,
        "produce_inline_over_hash": p[1] / p[0],
        "consume_inline_over_raw": c[1] / c[2],
        "consume_inline_over_hash": c[1] / c[0],
        "memory": { "hash": hash.json(), "inline": inline.json(), "inline_over_hash": memory },
        "targets": {
            "produce_inline_over_raw": 1.0,
            "memory_inline_over_hash": 0.5,
        },
        "met": produce_ratio >= 1.0 && memory <= 0.5,
        "rounds": {
            "produce_hash": per_run(&produced[0]),
            "produce_inline": per_run(&produced[1]),
            "produce_raw": per_run(&produced[2]),
            "consume_hash": per_run(&consumed[0]),
            "consume_inline": per_run(&consumed[1]),
            "consume_raw": per_run(&consumed[2]),
        },
    });
    Ok((rows, figures))
}
