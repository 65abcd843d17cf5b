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

use crate::common::{drive, now_ns, order, per_run, rate, Ctx, Product, Res, User};
use crate::inline::{cpu_rows, rounds, Variant};
use crate::report::{eps, Row};

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
    let (produced, consumed) = rounds(ctx, Variant::Personal).await?;
    let p = [0, 1, 2].map(|i| rate(&produced[i]));
    let c = [0, 1, 2].map(|i| rate(&consumed[i]));
    let mut rows = vec![
        Row::new(
            format!("10 produce personal vs hash layout ({n} ev, {SUBJECTS} subjects)"),
            eps(p[1]),
            eps(p[0]),
        )
        .ratio(p[1] / p[0]),
        Row::new(
            "  produce personal (framework vs raw)",
            eps(p[1]),
            eps(p[2]),
        )
        .ratio(p[1] / p[2]),
    ];
    rows.extend(cpu_rows("produce", Variant::Personal, &produced));
    rows.extend([
        Row::new(
            format!(
                "10 consume personal vs hash layout (batch {})",
                ctx.opts.batch
            ),
            eps(c[1]),
            eps(c[0]),
        )
        .ratio(c[1] / c[0]),
        Row::new(
            "  consume personal (framework vs raw)",
            eps(c[1]),
            eps(c[2]),
        )
        .ratio(c[1] / c[2]),
    ]);
    rows.extend(cpu_rows("consume", Variant::Personal, &consumed));
    let figures = json!({
        "events": n,
        "subjects": SUBJECTS,
        "produce_events_per_s": { "hash": p[0], "personal": p[1], "raw": p[2] },
        "consume_events_per_s": { "hash": c[0], "personal": c[1], "raw": c[2] },
        "produce_personal_over_hash": p[1] / p[0],
        "consume_personal_over_hash": c[1] / c[0],
        "rounds": {
            "produce_hash": per_run(&produced[0]),
            "produce_personal": per_run(&produced[1]),
            "produce_raw": per_run(&produced[2]),
            "consume_hash": per_run(&consumed[0]),
            "consume_personal": per_run(&consumed[1]),
            "consume_raw": per_run(&consumed[2]),
        },
    });
    Ok((rows, figures))
}
