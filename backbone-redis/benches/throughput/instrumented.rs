//! Scenario 8: what backbone's tracing and metrics middlewares cost once an application
//! installs a subscriber and a recorder. Produce (as scenario 1) and consume (as scenario 2)
//! run three ways, alternated in each round: the framework with nothing listening, the
//! framework with a `tracing` fmt subscriber at INFO writing to a sink (as a service logs;
//! backbone's spans are DEBUG: `BENCH_TRACE_LEVEL=debug` builds and formats every one of them)
//! and a Prometheus recorder recording every metric, and the raw baseline. `BENCH_LISTEN=
//! tracing` or `metrics` installs only one of them. Both
//! stay installed for the whole process; a switch turns them on and off between runs (a
//! reloadable level filter, a recorder that hands out no-op handles while off), and each run
//! uses fresh streams so the metric handles are made in the run's own mode.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use backbone_redis::testing::unique_name;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use serde_json::json;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{reload, Layer, Registry};

use crate::common::{fill, measured, per_run, rate, Ctx, Res, Run};
use crate::consume;
use crate::produce::{self, Writer};
use crate::report::{eps, Row};

/// The instrumentation cost allowed: the instrumented framework keeps this share of the plain
/// one's throughput.
const TARGET: f64 = 0.95;

/// The installed subscriber and recorder, and their switch.
struct Listening {
    filter: reload::Handle<LevelFilter, Registry>,
    on: Arc<AtomicBool>,
    prometheus: PrometheusHandle,
}

static LISTENING: OnceLock<Listening> = OnceLock::new();

/// Installs the subscriber and the recorder (once), both off.
fn listening() -> Res<&'static Listening> {
    if let Some(l) = LISTENING.get() {
        return Ok(l);
    }
    let (filter, handle) = reload::Layer::new(LevelFilter::OFF);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(filter);
    tracing::subscriber::set_global_default(Registry::default().with(fmt))?;
    let recorder = PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let on = Arc::new(AtomicBool::new(false));
    metrics::set_global_recorder(Switch {
        on: on.clone(),
        inner: recorder,
    })
    .map_err(|e| format!("installing the recorder: {e}"))?;
    Ok(LISTENING.get_or_init(|| Listening {
        filter: handle,
        on,
        prometheus,
    }))
}

impl Listening {
    /// Turns both on or off; `$BENCH_LISTEN` (`tracing` or `metrics`) keeps the other off, to
    /// tell their costs apart.
    fn set(&self, on: bool) -> Res<()> {
        let only = std::env::var("BENCH_LISTEN").unwrap_or_default();
        let tracing = on && only != "metrics";
        // INFO, as a service logs (backbone's spans are DEBUG); BENCH_TRACE_LEVEL=debug builds
        // and formats them too.
        let level = match (tracing, std::env::var("BENCH_TRACE_LEVEL").as_deref()) {
            (false, _) => LevelFilter::OFF,
            (true, Ok("debug")) => LevelFilter::DEBUG,
            (true, _) => LevelFilter::INFO,
        };
        self.filter.modify(|f| *f = level)?;
        self.on.store(on && only != "tracing", Ordering::SeqCst);
        Ok(())
    }
}

/// A recorder that records through `inner` while `on`, and hands out no-op handles otherwise.
struct Switch {
    on: Arc<AtomicBool>,
    inner: PrometheusRecorder,
}

impl Recorder for Switch {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description)
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description)
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description)
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        match self.on.load(Ordering::SeqCst) {
            true => self.inner.register_counter(key, metadata),
            false => Counter::noop(),
        }
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        match self.on.load(Ordering::SeqCst) {
            true => self.inner.register_gauge(key, metadata),
            false => Gauge::noop(),
        }
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        match self.on.load(Ordering::SeqCst) {
            true => self.inner.register_histogram(key, metadata),
            false => Histogram::noop(),
        }
    }
}

/// One side of a round.
#[derive(Clone, Copy)]
enum Side {
    Plain,
    Instrumented,
    Raw,
}

pub async fn run(ctx: &Ctx) -> Res<(Vec<Row>, serde_json::Value)> {
    let listening = listening()?;
    let n = ctx.opts.events;
    let sides = [Side::Plain, Side::Instrumented, Side::Raw];
    let mut produced: [Vec<Run>; 3] = Default::default();
    let mut consumed: [Vec<Run>; 3] = Default::default();
    for round in 0..ctx.opts.rounds {
        let mut order: Vec<usize> = (0..sides.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for &s in &order {
            listening.set(matches!(sides[s], Side::Instrumented))?;
            let writer = match sides[s] {
                Side::Raw => Writer::RawPipeline,
                _ => Writer::Framework,
            };
            let uri = unique_name("instrumented-produce");
            produced[s].push(measured(ctx, n, produce::produce(ctx, writer, &uri, n)).await?);
        }
        ctx.cleanup().await?;
        let uri = unique_name("instrumented-consume");
        fill(ctx, &ctx.keys(&uri), n).await?;
        for &s in &order {
            listening.set(matches!(sides[s], Side::Instrumented))?;
            let group = format!("g{s}");
            let run = match sides[s] {
                Side::Raw => measured(ctx, n, consume::raw(ctx, &uri, &group, n)).await?,
                _ => measured(ctx, n, consume::framework(ctx, &uri, &group, n)).await?,
            };
            consumed[s].push(run);
        }
        listening.set(false)?;
        ctx.cleanup().await?;
    }
    let scraped = listening.prometheus.render();
    let recorded = ["backbone_sent_total", "backbone_handled_total"]
        .iter()
        .all(|name| scraped.contains(name));
    if !recorded && std::env::var("BENCH_LISTEN").map_or(true, |v| v != "tracing") {
        return Err("the instrumented runs recorded no backbone metrics".into());
    }
    let figures = |name: &str, runs: &[Vec<Run>; 3]| {
        let [plain, inst, raw] = [rate(&runs[0]), rate(&runs[1]), rate(&runs[2])];
        let cost = inst / plain;
        let rows = vec![
            Row::new(
                format!("8 {name}, subscriber + recorder installed ({n} ev)"),
                eps(inst),
                eps(raw),
            )
            .ratio(inst / raw),
            Row::new(format!("  {name}, nothing installed"), eps(plain), eps(raw))
                .ratio(plain / raw),
            Row::new(
                format!("  {name}: installed / nothing installed"),
                eps(inst),
                eps(plain),
            )
            .ratio(cost)
            .target(format!(">= {TARGET:.2}"), cost >= TARGET),
        ];
        let json = json!({
            "plain_events_per_s": plain,
            "instrumented_events_per_s": inst,
            "raw_events_per_s": raw,
            "ratio_plain": plain / raw,
            "ratio_instrumented": inst / raw,
            "instrumented_over_plain": cost,
            "target": TARGET,
            "met": cost >= TARGET,
            "rounds": {
                "plain": per_run(&runs[0]),
                "instrumented": per_run(&runs[1]),
                "raw": per_run(&runs[2]),
            },
        });
        (rows, json)
    };
    let (mut rows, produce_json) = figures("produce", &produced);
    let (mut consume_rows, consume_json) = figures("consume", &consumed);
    rows.append(&mut consume_rows);
    Ok((
        rows,
        json!({ "events": n, "produce": produce_json, "consume": consume_json }),
    ))
}
