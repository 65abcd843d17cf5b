//! Scenario 9: the inline storage (`#[events_contract(storage = "inline")]`: the parameters as
//! `param.<name>` entry fields, no payload hash, idempotent through the producer's sequence
//! record). In each round, alternating: the framework producing the same orders in the hash
//! layout and inline, and the raw HSET + XADD pipeline of scenario 1; then the framework's
//! consumer reading each of the two framework streams, and the raw loop reading the raw stream
//! (HGETALL per entry). Then Redis memory per event of the framework's two layouts (scenario
//! 6's count: `MEMORY USAGE` of every key under the stream's tag, over XLEN).

use std::time::Duration;

use backbone_core::events_contract;
use backbone_redis::RedisProducerBuilder;
use serde_json::json;

use crate::common::{drive, now_ns, order, Ctx, Product, Res, User};
use crate::compare::{self, rounds, Sides, Versus, HASH, RAW, VARIANT};
use crate::consume;
use crate::produce::{produce, Writer};
use crate::report::Row;

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

/// What side 1 of a round sends: scenario 9 inline, scenario 10 personal (sealed); sides 0
/// and 2 are scenario 1's framework and raw HSET + XADD pipeline, read by scenario 2's
/// framework consumer and raw loop (HGETALL per entry).
#[derive(Clone, Copy)]
pub enum Variant {
    Inline,
    Personal,
}

impl Sides for Variant {
    fn name(&self) -> &'static str {
        match self {
            Variant::Inline => "inline",
            Variant::Personal => "personal",
        }
    }

    async fn write(&self, ctx: &Ctx, side: usize, uri: &str, n: u64) -> Res<Duration> {
        match (side, self) {
            (HASH, _) => produce(ctx, Writer::Framework, uri, n).await,
            (VARIANT, Variant::Inline) => produce_inline(ctx, uri, n).await,
            (VARIANT, Variant::Personal) => crate::personal::produce_personal(ctx, uri, n).await,
            _ => produce(ctx, Writer::RawPipeline, uri, n).await,
        }
    }

    async fn read(&self, ctx: &Ctx, side: usize, uri: &str, n: u64) -> Res<Duration> {
        match side {
            RAW => consume::raw(ctx, uri, "raw", n).await,
            _ => consume::framework(ctx, uri, "fw", n).await,
        }
    }
}

pub async fn run(ctx: &Ctx) -> Res<(Vec<Row>, serde_json::Value)> {
    let n = ctx.opts.events;
    let rounds = rounds(ctx, &Variant::Inline, n).await?;
    let (p, c) = (rounds.produce_rates(), rounds.consume_rates());

    let m = n.min(10_000);
    let (hash, inline, memory) = compare::memory(ctx, &Variant::Inline, m).await?;

    let produce_ratio = p[VARIANT] / p[RAW];
    let mut rows = rounds.rows(
        "inline",
        Versus::Raw,
        [
            format!(
                "9 produce inline ({n} ev, {} tasks x {} in flight)",
                ctx.opts.tasks, ctx.opts.in_flight
            ),
            format!("9 consume inline ({n} ev, batch {})", ctx.opts.batch),
        ],
    );
    rows[0] = rows[0].clone().target(">= 1.00", produce_ratio >= 1.0);
    rows.push(
        compare::memory_row(
            format!("9 memory/event inline vs hash layout ({m} ev, framework)"),
            (hash, inline),
        )
        .target("<= 0.50", memory <= 0.5),
    );
    let figures = json!({
        "events": n,
        "memory_events": m,
        "produce_events_per_s": compare::rates_json("inline", p),
        "consume_events_per_s": compare::rates_json("inline", c),
        "produce_inline_over_raw": produce_ratio,
        "produce_inline_over_hash": p[VARIANT] / p[HASH],
        "consume_inline_over_raw": c[VARIANT] / c[RAW],
        "consume_inline_over_hash": c[VARIANT] / c[HASH],
        "memory": { "hash": hash.json(), "inline": inline.json(), "inline_over_hash": memory },
        "targets": {
            "produce_inline_over_raw": 1.0,
            "memory_inline_over_hash": 0.5,
        },
        "met": produce_ratio >= 1.0 && memory <= 0.5,
        "rounds": rounds.json("inline"),
    });
    Ok((rows, figures))
}
