//! Scenario 10: personal (sealed) parameters. The same order as scenario 1 with its `user`
//! parameter `#[personal]`, sent for 1000 data subjects (`with_subject`), so each send seals it
//! with AES-256-GCM and a subject's key (from the default `RedisKeyStore`, cached for sealing),
//! and each read fetches the batch's keys and opens it. Rounds alternate as in scenario 9:
//! the framework in the hash layout, the framework with the sealed parameter, and the raw
//! HSET + XADD pipeline; then the framework's consumer reading each of them.

use std::time::Duration;

use backbone_core::events_contract;
use backbone_redis::RedisProducerBuilder;
use serde_json::json;

use crate::common::{drive, now_ns, order, Ctx, Product, Res, User};
use crate::compare::{self, rounds, Versus, HASH, VARIANT};
use crate::inline::Variant;
use crate::report::Row;

/// `ShipmentTracking::order_placed` with a personal `user`: the same operation, so the
/// hash-layout contract's consumer reads these entries (the channel opens the sealed value
/// before decoding).
#[events_contract]
pub trait PersonalShipment {
    async fn order_placed(&self, #[personal] user: User, product: Product, time: u64);
}

/// The number of data subjects the orders spread over.
const SUBJECTS: u64 = 1000;

/// The framework producing `n` orders with a sealed `user`, driven as scenario 1 drives it.
pub async fn produce_personal(ctx: &Ctx, uri: &str, n: u64) -> Res<Duration> {
    let producer = RedisProducerBuilder::new()
        .url(&ctx.url)
        .environment(&ctx.env)
        .uri(uri)
        .build_personal_shipment_producer()
        .await?;
    drive(n, ctx.opts.tasks, ctx.opts.in_flight, move |i| {
        let producer = producer.with_subject(format!("customer-{}", i % SUBJECTS));
        async move {
            let (user, product) = order(i);
            producer.order_placed(user, product, now_ns()).await?;
            Res::Ok(())
        }
    })
    .await
}

pub async fn run(ctx: &Ctx) -> Res<(Vec<Row>, serde_json::Value)> {
    let n = ctx.opts.events;
    let rounds = rounds(ctx, &Variant::Personal, n).await?;
    let (p, c) = (rounds.produce_rates(), rounds.consume_rates());
    let rows = rounds.rows(
        "personal",
        Versus::Hash,
        [
            format!("10 produce personal vs hash layout ({n} ev, {SUBJECTS} subjects)"),
            format!(
                "10 consume personal vs hash layout (batch {})",
                ctx.opts.batch
            ),
        ],
    );
    let figures = json!({
        "events": n,
        "subjects": SUBJECTS,
        "produce_events_per_s": compare::rates_json("personal", p),
        "consume_events_per_s": compare::rates_json("personal", c),
        "produce_personal_over_hash": p[VARIANT] / p[HASH],
        "consume_personal_over_hash": c[VARIANT] / c[HASH],
        "rounds": rounds.json("personal"),
    });
    Ok((rows, figures))
}
