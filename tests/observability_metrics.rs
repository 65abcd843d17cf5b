//! The metrics of `backbone_core::observe` (the table in `backbone-core/src/observe/mod.rs`),
//! checked two ways:
//! - the `observability` example serves them over HTTP from a Prometheus exporter, with the
//!   right labels, and its counters grow ([`example_serves_metrics_that_grow`]);
//! - a `DebuggingRecorder` installed once for this binary ([`recorded`]) sees every counter,
//!   histogram and gauge move where the table says, on Redis and on the in-memory channel.
//!
//! The recorder is global (producers and consumers run in spawned tasks, and look their
//! metrics up when built), so every test uses its own stream names and reads only metrics
//! labelled with them.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use backbone_core::memory::InMemoryBroker;
use backbone_core::observe::names;
use backbone_core::{async_trait, ConsumerContext, HandlerResult};
use backbone_redis::testing::{shared, unique_name};
use backbone_redis::{DeadLetters, RedisConsumerBuilder};
use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use redis::AsyncCommands;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

// The recorder of this binary

/// The global `DebuggingRecorder`. A snapshot *consumes* what it reads (counters and gauges
/// are swapped to 0, histograms drained), and tests running at once all take snapshots, so
/// what each snapshot read is kept here, by [`series`]: counters summed, histogram values
/// appended, gauge reads listed with their time (a read of 0 may only mean "not set since").
struct Recorded {
    snapshotter: Snapshotter,
    kept: Mutex<HashMap<String, Seen>>,
}

/// Installs the recorder on first use; call it before building producers and consumers.
fn recorded() -> &'static Recorded {
    static RECORDED: OnceLock<Recorded> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::set_global_recorder(recorder).expect("the only recorder of this binary");
        let kept = Mutex::default();
        Recorded { snapshotter, kept }
    })
}

/// One metric, as read by every snapshot so far.
#[derive(Debug, Clone)]
enum Seen {
    /// The sum of the increments.
    Counter(u64),
    /// Every read, with its time.
    Gauge(Vec<(Instant, f64)>),
    /// Every value recorded.
    Histogram(Vec<f64>),
}

/// `name{k="v",…}`, the labels sorted: how metrics are keyed here.
fn series<K: ToString, V: ToString>(name: &str, labels: impl Iterator<Item = (K, V)>) -> String {
    let mut labels: Vec<_> = labels
        .map(|(k, v)| format!("{}={:?}", k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

/// How long a gauge set every 100 ms must read 0 to count as 0.
const SETTLED: Duration = Duration::from_millis(600);

impl Recorded {
    /// Every metric so far, after a new snapshot.
    fn all(&self) -> MutexGuard<'_, HashMap<String, Seen>> {
        let mut kept = self.kept.lock().unwrap();
        let now = Instant::now();
        for (ck, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = ck.key();
            let series = series(key.name(), key.labels().map(|l| (l.key(), l.value())));
            let seen = kept.entry(series).or_insert_with(|| match &value {
                DebugValue::Counter(_) => Seen::Counter(0),
                DebugValue::Gauge(_) => Seen::Gauge(Vec::new()),
                DebugValue::Histogram(_) => Seen::Histogram(Vec::new()),
            });
            match (seen, value) {
                (Seen::Counter(sum), DebugValue::Counter(n)) => *sum += n,
                (Seen::Gauge(reads), DebugValue::Gauge(g)) => reads.push((now, g.into_inner())),
                (Seen::Histogram(all), DebugValue::Histogram(values)) => {
                    all.extend(values.into_iter().map(|v| v.into_inner()))
                }
                (seen, value) => panic!("{seen:?} then {value:?}"),
            }
        }
        kept
    }

    /// The metric called `name` whose labels are exactly `labels` (in any order).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<Seen> {
        self.all()
            .get(&series(name, labels.iter().copied()))
            .cloned()
    }

    /// The counter `name` with `labels`, 0 if it was never registered.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.get(name, labels) {
            None => 0,
            Some(Seen::Counter(n)) => n,
            Some(other) => panic!("{name}: not a counter: {other:?}"),
        }
    }

    /// Every read of gauge `name` with `labels`.
    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(Instant, f64)> {
        match self.get(name, labels) {
            None => Vec::new(),
            Some(Seen::Gauge(reads)) => reads,
            Some(other) => panic!("{name}: not a gauge: {other:?}"),
        }
    }

    /// Whether some read of gauge `name` satisfied `ok`.
    fn gauge_was(&self, name: &str, labels: &[(&str, &str)], ok: impl Fn(f64) -> bool) -> bool {
        self.gauge(name, labels).iter().any(|(_, g)| ok(*g))
    }

    /// Whether gauge `name` has read 0 for the last [`SETTLED`] (many times its interval).
    fn gauge_settled_at_zero(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        let (reads, since) = (self.gauge(name, labels), Instant::now() - SETTLED);
        reads.first().is_some_and(|(first, _)| *first < since)
            && reads.iter().all(|(at, g)| *at < since || *g == 0.0)
    }

    /// The values of histogram `name` with `labels`.
    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.get(name, labels) {
            None => Vec::new(),
            Some(Seen::Histogram(values)) => values,
            Some(other) => panic!("{name}: not a histogram: {other:?}"),
        }
    }

    /// Every metric labelled with `destination`, one per line (gauges: their last reads).
    fn dump(&self, destination: &str) -> String {
        let label = format!("destination={destination:?}");
        let all = self.all();
        let mut lines: Vec<String> = (all.iter().filter(|(series, _)| series.contains(&label)))
            .map(|(series, seen)| match seen {
                Seen::Gauge(reads) => {
                    let last: Vec<f64> = reads.iter().rev().take(10).map(|(_, g)| *g).collect();
                    format!("{series} = gauge, last reads (newest first) {last:?}")
                }
                seen => format!("{series} = {seen:?}"),
            })
            .collect();
        lines.sort();
        lines.join("\n")
    }
}

/// Waits until `ok` holds, polling; fails after [`WAIT`] with `destination`'s metrics.
async fn eventually(what: &str, destination: &str, ok: impl Fn(&Recorded) -> bool) {
    let (r, deadline) = (recorded(), Instant::now() + WAIT);
    while !ok(r) {
        let dump = || r.dump(destination);
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?}:\n{}",
            dump()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The labels of a producer's tick metrics.
fn sending(destination: &str) -> [(&'static str, &str); 2] {
    [("destination", destination), ("operation", "tick")]
}

/// The labels of group `g`'s metrics.
fn in_group(destination: &str) -> [(&'static str, &str); 2] {
    [("destination", destination), ("group", "g")]
}

/// The labels of group `g`'s tick metrics.
fn handling(destination: &str) -> [(&'static str, &str); 3] {
    let [d, g] = in_group(destination);
    [d, g, ("operation", "tick")]
}

/// `handler_errors` of `kind`, of group `g`'s ticks.
fn handler_errors(r: &Recorded, destination: &str, kind: &str) -> u64 {
    let [d, g, o] = handling(destination);
    r.counter(names::HANDLER_ERRORS, &[d, g, o, ("kind", kind)])
}

/// A consumer of `uri` in group `g`, fast: short block, 3 quick deliveries, group gauges
/// every 100 ms, nothing claimed unless a test says so.
fn fast_consumer(url: &str, uri: &str, name: &str) -> RedisConsumerBuilder {
    RedisConsumerBuilder::new()
        .url(url)
        .uri(uri)
        .group("g")
        .name(name)
        .block(Duration::from_millis(150))
        .retry(quick_retry(3))
        .claim_min_idle(Duration::from_secs(30))
        .group_metrics_interval(Duration::from_millis(100))
}

/// Lets a tick through once a permit is added: holds deliveries pending.
struct Gate {
    open: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<u64>,
}

#[async_trait]
impl TicksConsumer for Gate {
    async fn tick(&self, _: &ConsumerContext, n: u64) -> HandlerResult {
        self.open.acquire().await?.forget();
        self.tx.send(n)?;
        Ok(())
    }
}

// DebuggingRecorder: Redis and the in-memory channel

/// sent, send_duration, handled, handler_duration, end_to_end_latency, and the three group
/// gauges: held deliveries show as pending and lag, then both drop to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sends_handles_and_group_gauges_are_recorded() {
    let (r, redis) = (recorded(), shared().await.unwrap());
    let uri = unique_name("obs-flow");
    send(&producer(redis.url(), &uri).await, 0..10).await;
    let (sending, group, handling) = (sending(&uri), in_group(&uri), handling(&uri));
    assert_eq!(r.counter(names::SENT, &sending), 10, "{}", r.dump(&uri));
    let durations = r.histogram(names::SEND_DURATION, &sending);
    assert_eq!(durations.len(), 10, "one send duration per send");
    let plausible = durations.iter().all(|d| (0.0..10.0).contains(d));
    assert!(plausible, "{durations:?}");

    let (open, (tx, mut rx)) = (Arc::new(Semaphore::new(0)), mpsc::unbounded_channel());
    let consumer = fast_consumer(redis.url(), &uri, "c-1")
        .batch_size(1)
        .subscribe_ticks_consumer(Gate {
            open: open.clone(),
            tx,
        })
        .await
        .unwrap();
    eventually("pending and lag while the handler is held", &uri, |r| {
        r.gauge_was(names::GROUP_PENDING, &group, |g| g >= 1.0)
            && r.gauge_was(names::GROUP_LAG, &group, |g| g >= 1.0)
            && r.gauge_was(names::GROUP_CONSUMERS, &group, |g| g == 1.0)
    })
    .await;
    assert_eq!(r.counter(names::HANDLED, &handling), 0);

    open.add_permits(10);
    collect(&mut rx, 10, WAIT).await;
    eventually("10 handled, nothing pending, no lag", &uri, |r| {
        r.counter(names::HANDLED, &handling) == 10
            && r.gauge_settled_at_zero(names::GROUP_PENDING, &group)
            && r.gauge_settled_at_zero(names::GROUP_LAG, &group)
    })
    .await;
    assert_eq!(r.histogram(names::HANDLER_DURATION, &handling).len(), 10);
    let latencies = r.histogram(names::END_TO_END_LATENCY, &handling);
    assert_eq!(latencies.len(), 10, "one latency per success");
    let plausible = latencies.iter().all(|l| (0.0..60.0).contains(l));
    assert!(plausible, "{latencies:?}");
    let errors = handler_errors(r, &uri, "handler") + handler_errors(r, &uri, "bad_event");
    assert_eq!(errors, 0);
    for name in [names::RETRIES, names::DEAD_LETTERED, names::CLAIMED] {
        assert_eq!(r.counter(name, &group), 0, "{name}");
    }
    consumer.shutdown().await.unwrap();
}

/// A send the channel refuses (the stream's key holds a string) counts in send_errors with
/// `error_type` `channel`, and not in sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_send_errors_are_counted_by_error_type() {
    let (r, redis) = (recorded(), shared().await.unwrap());
    let uri = unique_name("obs-send-error");
    let mut raw = raw(redis.url()).await;
    let _: () = raw.set(keys(&uri).stream(), "not a stream").await.unwrap();
    let producer = producer(redis.url(), &uri).await;
    for n in 0..2 {
        let err = producer.tick(n).await.unwrap_err();
        assert_eq!(err.kind(), "channel", "{err}");
    }
    let [d, o] = sending(&uri);
    let errors = r.counter(names::SEND_ERRORS, &[d, o, ("error_type", "channel")]);
    assert_eq!(errors, 2, "{}", r.dump(&uri));
    assert_eq!(r.counter(names::SENT, &sending(&uri)), 0);
    assert_eq!(r.histogram(names::SEND_DURATION, &sending(&uri)).len(), 2);
}

/// Failing handlers count in handler_errors (`kind` `handler`), each failure but the last in
/// retries, and the last in dead_lettered; an entry that cannot be decoded counts in
/// handler_errors (`kind` `bad_event`) and dead_lettered, never in retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_handler_errors_retries_and_dead_letters_are_counted() {
    let (r, redis) = (recorded(), shared().await.unwrap());
    let uri = unique_name("obs-failures");
    send(&producer(redis.url(), &uri).await, 0..4).await;
    // A tick whose `n` is not a number: decoded in the handler chain, so a bad event there.
    let mut raw = raw(redis.url()).await;
    let payload = format!("{}bad", keys(&uri).payload_prefix());
    let _: () = raw.hset(&payload, "n", "\"not a number\"").await.unwrap();
    let fields = [
        ("message_id", backbone_core::MessageId::new().to_string()),
        ("operation", "tick".to_owned()),
        ("version", "0".to_owned()),
        ("produced_at", "1".to_owned()),
        ("payload", payload),
    ];
    let _: String = raw.xadd(keys(&uri).stream(), "*", &fields).await.unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let recorder = TickRecorder {
        fail: |n| n < 2, // ticks 0 and 1 fail all 3 deliveries
        ..TickRecorder::new("c", tx)
    };
    let consumer = fast_consumer(redis.url(), &uri, "c-1")
        .subscribe_ticks_consumer(recorder)
        .await
        .unwrap();
    collect(&mut rx, 2, WAIT).await;
    let dead = DeadLetters::connect(redis.url(), None, &uri, "g")
        .await
        .unwrap();
    wait_dead_letters(&dead, 3).await;

    let (group, handling) = (in_group(&uri), handling(&uri));
    eventually("every delivery counted", &uri, |r| {
        r.counter(names::DEAD_LETTERED, &group) == 3 && r.counter(names::HANDLED, &handling) == 2
    })
    .await;
    assert_eq!(
        handler_errors(r, &uri, "handler"),
        6,
        "2 ticks × 3 deliveries"
    );
    assert_eq!(handler_errors(r, &uri, "bad_event"), 1);
    assert_eq!(r.counter(names::RETRIES, &group), 4, "2 ticks × 2 retries");
    let timed = r.histogram(names::HANDLER_DURATION, &handling).len();
    assert_eq!(timed, 2 + 6 + 1, "every handler call is timed");
    let latencies = r.histogram(names::END_TO_END_LATENCY, &handling).len();
    assert_eq!(latencies, 2, "successes only");
    consumer.shutdown().await.unwrap();
}

/// Entries a stalled consumer holds are claimed by another after `claim_min_idle`: claimed
/// counts them, and they are handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_claims_are_counted() {
    let (r, redis) = (recorded(), shared().await.unwrap());
    let uri = unique_name("obs-claims");
    send(&producer(redis.url(), &uri).await, 0..5).await;

    // A consumer that read everything, then stopped (its grace over) without acknowledging.
    let (open, (tx, _rx)) = (Arc::new(Semaphore::new(0)), mpsc::unbounded_channel());
    let stalled = fast_consumer(redis.url(), &uri, "stalled")
        .batch_size(10)
        .shutdown_grace(Duration::from_millis(100))
        .subscribe_ticks_consumer(Gate { open, tx })
        .await
        .unwrap();
    let (mut inspect, deadline) = (raw(redis.url()).await, Instant::now() + WAIT);
    loop {
        let pending: redis::streams::StreamPendingReply =
            inspect.xpending(keys(&uri).stream(), "g").await.unwrap();
        if pending.count() == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "never read all 5");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stalled.shutdown().await; // its grace ends before the handler lets go

    let (group, handling) = (in_group(&uri), handling(&uri));
    assert_eq!(r.counter(names::CLAIMED, &group), 0);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let healthy = fast_consumer(redis.url(), &uri, "healthy")
        .claim_min_idle(Duration::from_millis(300))
        .subscribe_ticks_consumer(TickRecorder::new("healthy", tx))
        .await
        .unwrap();
    collect(&mut rx, 5, WAIT).await;
    // The handler reports a tick before it returns, and so before the middleware counts it.
    eventually("5 claimed and handled", &uri, |r| {
        r.counter(names::CLAIMED, &group) == 5 && r.counter(names::HANDLED, &handling) == 5
    })
    .await;
    healthy.shutdown().await.unwrap();
}

/// The in-memory channel records sent, handled and their histograms too; `destination` is
/// `<environment>:<uri>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_sends_and_handles_are_recorded() {
    let (r, broker) = (recorded(), InMemoryBroker::new());
    let uri = unique_name("obs-memory");
    let destination = format!("test:{uri}");
    let producer = broker.producer_builder().environment("test").uri(&uri);
    let producer = producer.build_ticks_producer().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = (broker
        .consumer_builder()
        .environment("test")
        .uri(&uri)
        .group("g"))
    .subscribe_ticks_consumer(TickRecorder::new("m", tx))
    .await
    .unwrap();
    send(&producer, 0..5).await;
    collect(&mut rx, 5, WAIT).await;
    let (sending, handling) = (sending(&destination), handling(&destination));
    assert_eq!(
        r.counter(names::SENT, &sending),
        5,
        "{}",
        r.dump(&destination)
    );
    assert_eq!(r.histogram(names::SEND_DURATION, &sending).len(), 5);
    eventually("5 handled", &destination, |r| {
        r.counter(names::HANDLED, &handling) == 5
    })
    .await;
    assert_eq!(r.histogram(names::HANDLER_DURATION, &handling).len(), 5);
    assert_eq!(r.histogram(names::END_TO_END_LATENCY, &handling).len(), 5);
    consumer.shutdown().await.unwrap();
}

// The `observability` example, scraped over HTTP

/// The example's binary, next to this test's: `target/<profile>/examples/observability`.
/// Built first (`cargo build --example observability`, a no-op when it is up to date), since
/// `cargo test --test observability_metrics` builds no examples.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = (profile_dir.join("examples"))
        .join(format!("observability{}", std::env::consts::EXE_SUFFIX));
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("no profile directory above {}", exe.display()),
    };
    let mut cargo = std::process::Command::new(env!("CARGO"));
    // What cargo set for running this test (the package's variables, the library path) would
    // change the fingerprints: both builds would then redo each other's work every time.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if (name.starts_with("CARGO_") && name != "CARGO_HOME") || name == "LD_LIBRARY_PATH" {
            cargo.env_remove(&*name);
        }
    }
    let built = cargo
        .args([
            "build",
            "--quiet",
            "--example",
            "observability",
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap())
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&built.stderr);
    assert!(
        built.status.success() || bin.exists(),
        "cargo build failed:\n{stderr}"
    );
    bin
}

/// The example's process: killed on drop (a failed assertion included); its stderr is kept.
struct Example {
    child: tokio::process::Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Example {
    fn log_tail(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `GET /metrics` over a plain TCP connection: the body.
async fn scrape(addr: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    stream.write_all(request).await?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body.to_owned())
}

/// The value of the sample `name{…}` having (at least) `labels`, in a scrape's `body`.
fn value(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let prefix = format!("{name}{{");
    let has = |line: &str| {
        labels
            .iter()
            .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
    };
    let line = body.lines().find(|l| l.starts_with(&prefix) && has(l))?;
    line.rsplit_once(' ')?.1.parse().ok()
}

/// The example serves every `backbone_*` metric with its labels; sent and handled grow
/// between two scrapes; it stops cleanly on Ctrl-C (SIGINT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_serves_metrics_that_grow() {
    let redis = shared().await.unwrap();
    let uri = unique_name("obs-example");
    let child = tokio::process::Command::new(example_binary())
        .env("REDIS_URL", redis.url())
        .env("RUN_SECONDS", "120")
        .env("OBS_URI", &uri)
        .env("RUST_LOG", "info")
        .env_remove("METRICS_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the observability example");
    let mut example = Example {
        child,
        stderr: Arc::default(),
    };
    let mut stderr = BufReader::new(example.child.stderr.take().unwrap()).lines();
    let kept = example.stderr.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            kept.lock().unwrap().push(line);
        }
    });
    let mut stdout = BufReader::new(example.child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, stdout.next_line())
        .await
        .expect("an address");
    let first = first
        .unwrap()
        .unwrap_or_else(|| panic!("no stdout:\n{}", example.log_tail()));
    let addr = (first.strip_prefix("metrics on http://"))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("first line {first:?}"))
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });

    let d = ("destination", &*format!("dev:{uri}"));
    let (g, placed, packing) = (("group", "observer"), "order_placed", "packing");
    let order = [d, ("operation", placed)];
    let handled = [d, g, ("operation", placed)];
    let packed = [d, g, ("operation", packing)];
    let group = [d, g];
    let expected: [(&str, &[(&str, &str)]); 13] = [
        ("backbone_sent_total", &order),
        ("backbone_sent_total", &[d, ("operation", packing)]),
        ("backbone_handled_total", &handled),
        ("backbone_handled_total", &packed),
        ("backbone_handler_duration_seconds_count", &handled),
        ("backbone_handler_duration_seconds_bucket", &packed),
        ("backbone_end_to_end_latency_seconds_count", &handled),
        (
            "backbone_handler_errors_total",
            &[d, g, ("operation", packing), ("kind", "handler")],
        ),
        ("backbone_retries_total", &group),
        ("backbone_dead_lettered_total", &group),
        ("backbone_group_pending", &group),
        ("backbone_group_lag", &group),
        ("backbone_group_consumers", &group),
    ];
    let missing = |body: &str| -> Vec<String> {
        (expected.iter())
            .filter(|(name, labels)| value(body, name, labels).is_none())
            .map(|(name, labels)| format!("{name} {labels:?}"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let body = scrape(&addr).await.unwrap_or_default();
        let absent = missing(&body);
        if absent.is_empty() {
            break body;
        }
        let (late, log) = (Instant::now() >= deadline, example.log_tail());
        assert!(!late, "never scraped {absent:?}:\n{body}\nstderr:\n{log}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = scrape(&addr).await.unwrap();
    assert!(missing(&second).is_empty(), "{second}");
    for (name, labels) in [
        ("backbone_sent_total", &order[..]),
        ("backbone_handled_total", &handled),
    ] {
        let (before, after) = (value(&first, name, labels), value(&second, name, labels));
        assert!(
            after > before,
            "{name} {labels:?}: {before:?} then {after:?}"
        );
    }
    assert_eq!(
        value(&second, "backbone_group_consumers", &group),
        Some(1.0)
    );
    let shown = second
        .lines()
        .filter(|l| l.contains(d.1) && !l.contains("_bucket"));
    println!("{}", shown.collect::<Vec<_>>().join("\n"));

    // Ctrl-C: the example stops its consumer and exits with success.
    let pid = example.child.id().expect("still running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status();
    assert!(kill.unwrap().success());
    let exit = tokio::time::timeout(Duration::from_secs(20), example.child.wait()).await;
    let status = exit.unwrap_or_else(|_| panic!("no exit after SIGINT:\n{}", example.log_tail()));
    let (status, log) = (status.unwrap(), example.log_tail());
    assert!(status.success(), "{status}; stderr:\n{log}");
}
