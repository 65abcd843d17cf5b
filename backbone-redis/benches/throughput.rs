//! `cargo bench -p backbone-redis --bench throughput [-- --quick] [-- --json]`
//!
//! The framework against raw redis-rs sending the same Redis commands, in one run, on
//! `$REDIS_URL` or a `redis-server` of its own (`backbone_redis::testing::TestRedis`):
//! produce throughput (1), consume throughput (2), end-to-end latency at fixed offered rates
//! (3), event-store append with an expected version (4), consume from a 10k-entry vs a
//! 1M-entry stream (5), Redis memory per event (6), produce and consume on a 3-master Redis
//! Cluster of its own over 1 and 6 partitions, Redis CPU summed over the masters (7), produce
//! and consume with a `tracing` subscriber and a `metrics` recorder installed against the same
//! with nothing listening (8), the inline storage against the hash layout and raw: produce,
//! consume and memory per event (9), personal (sealed) parameters against the hash layout
//! (10), and object storage (a 256 KiB parameter in a local-file object store) against the
//! hash layout and raw: produce, consume and Redis memory per event (11). Each
//! scenario alternates framework and raw runs on fresh streams so drift hits both, and reports
//! events/s (or ms, bytes) for both and the ratio framework/raw. See `--help`.

#[path = "throughput/append.rs"]
mod append;
#[path = "throughput/cluster.rs"]
mod cluster;
#[path = "throughput/common.rs"]
mod common;
#[path = "throughput/compare.rs"]
mod compare;
#[path = "throughput/consume.rs"]
mod consume;
#[path = "throughput/inline.rs"]
mod inline;
#[path = "throughput/instrumented.rs"]
mod instrumented;
#[path = "throughput/latency.rs"]
mod latency;
#[path = "throughput/memory.rs"]
mod memory;
#[path = "throughput/objects.rs"]
mod objects;
#[path = "throughput/options.rs"]
mod options;
#[path = "throughput/personal.rs"]
mod personal;
#[path = "throughput/produce.rs"]
mod produce;
#[path = "throughput/report.rs"]
mod report;
#[path = "throughput/scripts.rs"]
mod scripts;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Instant;

use backbone_redis::testing::{RedisSource, TestRedis};
use serde_json::json;

use common::{Ctx, Res};
use options::{Options, USAGE};
use report::Row;

type Scenario =
    for<'a> fn(&'a Ctx) -> Pin<Box<dyn Future<Output = Res<(Vec<Row>, serde_json::Value)>> + 'a>>;

fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    match runtime.block_on(run(opts)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("throughput: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every scenario; `Ok(false)` when one of them failed (the others still report).
async fn run(opts: Options) -> Res<bool> {
    let redis = TestRedis::start().await?;
    let ctx = Ctx {
        url: redis.url().to_owned(),
        client: redis::Client::open(redis.url())?,
        env: run_name(),
        owned_server: redis.source() != RedisSource::Env,
        opts,
    };
    let machine = machine(&ctx, redis.source()).await?;
    eprintln!("machine: {}", machine_line(&machine));
    if ctx.opts.quick {
        eprintln!(
            "--quick: {} events per run, {} rounds, {} s latency runs, a {}-entry long stream \
             instead of 1M",
            ctx.opts.events, ctx.opts.rounds, ctx.opts.duration_s, ctx.opts.long_len
        );
    }
    let scenarios: [(&str, Scenario); 11] = [
        ("produce", |c| Box::pin(produce::run(c))),
        ("consume", |c| Box::pin(consume::run(c))),
        ("latency", |c| Box::pin(latency::run(c))),
        ("append", |c| Box::pin(append::run(c))),
        ("long_stream", |c| Box::pin(consume::run_long(c))),
        ("memory", |c| Box::pin(memory::run(c))),
        ("cluster", |c| Box::pin(cluster::run(c))),
        ("instrumented", |c| Box::pin(instrumented::run(c))),
        ("inline", |c| Box::pin(inline::run(c))),
        ("personal", |c| Box::pin(personal::run(c))),
        ("object", |c| Box::pin(objects::run(c))),
    ];
    assert_eq!(scenarios.map(|(name, _)| name), options::SCENARIOS);
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut figures = serde_json::Map::new();
    let mut failed = false;
    for (name, scenario) in scenarios {
        if !ctx.opts.only.is_empty() && !ctx.opts.only.iter().any(|o| o == name) {
            continue;
        }
        eprintln!("[{:>5.1}s] {name} ...", started.elapsed().as_secs_f64());
        match scenario(&ctx).await {
            Ok((mut r, f)) => {
                rows.append(&mut r);
                figures.insert(name.to_owned(), f);
            }
            Err(e) => {
                eprintln!("  {name} failed: {e}");
                failed = true;
                rows.push(Row::new(format!("{name}: FAILED"), "-".into(), "-".into()));
                figures.insert(name.to_owned(), json!({ "error": e.to_string() }));
            }
        }
        let _ = ctx.cleanup().await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("[{elapsed:>5.1}s] done");
    let targets_met = !failed && rows.iter().all(|r| r.met != Some(false));
    if ctx.opts.json {
        let out = json!({
            "machine": machine,
            "options": ctx.opts,
            "scenarios": figures,
            "table": rows,
            "targets_met": targets_met,
            "failed": failed,
            "seconds": elapsed,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("machine: {}", machine_line(&machine));
        if ctx.opts.quick {
            println!(
                "--quick run: fewer events and rounds; scenario 5's long stream has {} entries, \
                 not 1M",
                ctx.opts.long_len
            );
        }
        println!();
        print!("{}", report::table(&rows));
        println!();
        println!(
            "ratio = framework / raw (for latency: lower is better); every target met: {}",
            if targets_met { "yes" } else { "NO" }
        );
    }
    Ok(!failed)
}

async fn machine(ctx: &Ctx, source: RedisSource) -> Res<serde_json::Value> {
    let mut conn = ctx.conn().await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_owned())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
    });
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    Ok(json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "loadavg": load,
        "os": std::env::consts::OS,
        "redis_version": field("redis_version"),
        "redis_mode": field("redis_mode"),
        "redis_source": format!("{source:?}"),
        "redis_url": ctx.url,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    }))
}

fn machine_line(m: &serde_json::Value) -> String {
    let s = |k: &str| m[k].as_str().unwrap_or("?").to_owned();
    format!(
        "{} cores ({}), load {}, Redis {} ({} at {}), {} build",
        m["nproc"],
        s("cpu"),
        s("loadavg"),
        s("redis_version"),
        s("redis_source"),
        s("redis_url"),
        s("build")
    )
}

/// This run's environment, short (it is in every key) and unlikely to be another run's.
fn run_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("bench{}-{}", std::process::id(), nanos % 100_000)
}
