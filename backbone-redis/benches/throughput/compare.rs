//! What scenarios 9, 10 and 11 share: three sides sending the same events, the framework in
//! the hash layout (side 0), the framework with the scenario's variant (side 1: inline,
//! personal, object) and a raw baseline (side 2); rounds alternating their produce and consume
//! runs on fresh streams, and the rows comparing them.

use std::future::Future;
use std::time::Duration;

use backbone_redis::testing::unique_name;
use serde_json::json;

use crate::common::{client_us, cpu_us, measured, per_run, rate, Ctx, Res, Run};
use crate::memory::{usage, Usage};
use crate::report::{bytes, eps, Row};

/// Side 0 of a round: the framework in the hash layout.
pub const HASH: usize = 0;
/// Side 1: the framework with the scenario's variant.
pub const VARIANT: usize = 1;
/// Side 2: the raw baseline.
pub const RAW: usize = 2;

/// How a scenario's three sides write and read `n` events on `uri`, each returning its own
/// timing (connections set up before its clock starts, as scenario 1 and 2 do).
pub trait Sides {
    /// The variant's name in the rows: `inline`, `personal`, `object`.
    fn name(&self) -> &'static str;
    fn write(
        &self,
        ctx: &Ctx,
        side: usize,
        uri: &str,
        n: u64,
    ) -> impl Future<Output = Res<Duration>>;
    fn read(
        &self,
        ctx: &Ctx,
        side: usize,
        uri: &str,
        n: u64,
    ) -> impl Future<Output = Res<Duration>>;
}

/// The produce and consume runs of the three sides, indexed by side.
pub struct Rounds {
    pub produced: [Vec<Run>; 3],
    pub consumed: [Vec<Run>; 3],
}

impl Rounds {
    /// Events per second of each side's produce runs.
    pub fn produce_rates(&self) -> [f64; 3] {
        [0, 1, 2].map(|i| rate(&self.produced[i]))
    }

    /// Events per second of each side's consume runs.
    pub fn consume_rates(&self) -> [f64; 3] {
        [0, 1, 2].map(|i| rate(&self.consumed[i]))
    }

    /// [`rows`] of the produce runs, then of the consume runs, under their headlines.
    pub fn rows(&self, variant: &str, versus: Versus, headlines: [String; 2]) -> Vec<Row> {
        let [produce, consume] = headlines;
        let mut out = rows("produce", variant, produce, versus, &self.produced);
        out.extend(rows("consume", variant, consume, versus, &self.consumed));
        out
    }

    /// Every run's figures for the JSON object, named after the sides.
    pub fn json(&self, variant: &str) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (what, runs) in [("produce", &self.produced), ("consume", &self.consumed)] {
            for (side, name) in [(HASH, "hash"), (VARIANT, variant), (RAW, "raw")] {
                out.insert(format!("{what}_{name}"), per_run(&runs[side]));
            }
        }
        out.into()
    }
}

/// Warms up (a short write and read on each side), then alternates the three sides' produce
/// runs and then their consume runs for each round (reversed every other round), `n` events
/// each.
pub async fn rounds(ctx: &Ctx, sides: &impl Sides, n: u64) -> Res<Rounds> {
    for side in [HASH, VARIANT, RAW] {
        let uri = unique_name("warmup");
        sides.write(ctx, side, &uri, n.min(2_000)).await?;
        sides.read(ctx, side, &uri, n.min(2_000)).await?;
    }
    ctx.cleanup().await?;
    let mut produced: [Vec<Run>; 3] = Default::default();
    let mut consumed: [Vec<Run>; 3] = Default::default();
    for round in 0..ctx.opts.rounds {
        let mut order = vec![HASH, VARIANT, RAW];
        if round % 2 == 1 {
            order.reverse();
        }
        let uris = [0, 1, 2].map(|_| unique_name(sides.name()));
        for &side in &order {
            let run = measured(ctx, n, sides.write(ctx, side, &uris[side], n)).await?;
            produced[side].push(run);
        }
        for &side in &order {
            let run = measured(ctx, n, sides.read(ctx, side, &uris[side], n)).await?;
            consumed[side].push(run);
        }
        ctx.cleanup().await?;
    }
    Ok(Rounds { produced, consumed })
}

/// Which comparison a scenario's headline row makes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Versus {
    Raw,
    Hash,
}

/// The rows of one measure (`what`: produce, consume) of the three sides: the headline (the
/// variant against `versus`, named `headline`), the variant against the other side, the hash
/// layout against raw, then the variant's Redis and client CPU per event against raw's.
pub fn rows(
    what: &str,
    variant: &str,
    headline: String,
    versus: Versus,
    runs: &[Vec<Run>; 3],
) -> Vec<Row> {
    let r = [0, 1, 2].map(|i| rate(&runs[i]));
    let against_raw =
        Row::new(headline.clone(), eps(r[VARIANT]), eps(r[RAW])).ratio(r[VARIANT] / r[RAW]);
    let against_hash =
        Row::new(headline, eps(r[VARIANT]), eps(r[HASH])).ratio(r[VARIANT] / r[HASH]);
    let mut rows = match versus {
        Versus::Raw => vec![
            against_raw,
            Row {
                scenario: format!("  {what} {variant} vs hash layout (framework)"),
                ..against_hash
            },
        ],
        Versus::Hash => vec![
            against_hash,
            Row {
                scenario: format!("  {what} {variant} (framework vs raw)"),
                ..against_raw
            },
        ],
    };
    rows.push(
        Row::new(
            format!("  {what} hash layout (framework vs raw)"),
            eps(r[HASH]),
            eps(r[RAW]),
        )
        .ratio(r[HASH] / r[RAW]),
    );
    let us = |f: fn(&[Run]) -> f64, side: usize| f(&runs[side]);
    for (name, f) in [
        ("Redis", cpu_us as fn(&[Run]) -> f64),
        ("client", client_us),
    ] {
        rows.push(
            Row::new(
                format!("  {what} {variant}: {name} CPU per event (us)"),
                format!("{:.1} us", us(f, VARIANT)),
                format!("{:.1} us", us(f, RAW)),
            )
            .ratio(us(f, VARIANT) / us(f, RAW)),
        );
    }
    rows
}

/// The events per second of the three sides, for the JSON object.
pub fn rates_json(variant: &str, rates: [f64; 3]) -> serde_json::Value {
    json!({ "hash": rates[HASH], variant: rates[VARIANT], "raw": rates[RAW] })
}

/// Redis memory of the hash layout's and the variant's events (scenario 6's count, see
/// [`usage`]), each side having written `m` events to a fresh stream (names of equal length,
/// as in scenario 6), and the variant's bytes per event over the hash layout's; the keys are
/// removed after. An error unless the variant's layout holds the `m` entries in its stream
/// and no key but the producer's sequence record (inline, object).
pub async fn memory(ctx: &Ctx, sides: &impl Sides, m: u64) -> Res<(Usage, Usage, f64)> {
    let (hash_uri, variant_uri) = ("mem.fh", "mem.fv");
    sides.write(ctx, HASH, hash_uri, m).await?;
    sides.write(ctx, VARIANT, variant_uri, m).await?;
    let hash = usage(ctx, &ctx.keys(hash_uri)).await?;
    let variant = usage(ctx, &ctx.keys(variant_uri)).await?;
    ctx.cleanup().await?;
    if variant.entries != m as i64 || variant.keys != 2 {
        let (name, keys, entries) = (sides.name(), variant.keys, variant.entries);
        return Err(format!("{name} layout: {keys} keys for {entries} entries").into());
    }
    Ok((hash, variant, variant.per_event() / hash.per_event()))
}

/// The row of [`memory`]'s figures: the variant's bytes per event against the hash layout's.
pub fn memory_row(what: String, (hash, variant): (Usage, Usage)) -> Row {
    Row::new(what, bytes(variant.per_event()), bytes(hash.per_event()))
        .ratio(variant.per_event() / hash.per_event())
}
