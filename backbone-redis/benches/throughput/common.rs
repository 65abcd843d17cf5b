//! What every scenario shares: the bench's contract, the run's context (options, Redis,
//! connections), the raw layout writers and readers, and small statistics.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use backbone_core::{
    async_trait, events_contract, ConsumerContext, HandlerResult, MessageId, StreamAddress,
};
use backbone_redis::keys::StreamKeys;
use futures::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Script, ScriptInvocation, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::options::Options;

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The operation every scenario sends, and its parameters' names (as the macro names them).
pub const OPERATION: &str = "order_placed";
pub const PARAMS: [&str; 3] = ["user", "product", "time"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Product {
    pub id: u64,
    pub name: String,
    pub price_cents: u64,
}

/// The shipment contract of the examples (two of its operations).
#[events_contract]
pub trait ShipmentTracking {
    async fn order_placed(&self, user: User, product: Product, time: u64);
    async fn packing(&self, email: String, product_id: u64, time: u64);
}

/// The `i`-th order: about 150 bytes of JSON over three parameters.
pub fn order(i: u64) -> (User, Product) {
    let names = ["Ada", "Grace", "Linus", "Barbara", "Ken"];
    let products = ["keyboard", "monitor", "cable", "lamp", "chair"];
    let name = names[(i % 5) as usize];
    let user = User {
        name: name.to_owned(),
        email: format!("{}.{i}@example.com", name.to_lowercase()),
    };
    let product = Product {
        id: 1000 + i,
        name: products[(i % 5) as usize].to_owned(),
        price_cents: 1999 + 100 * (i % 1000),
    };
    (user, product)
}

/// Nanoseconds since the bench started, monotonic: the `time` parameter of latency events.
pub fn now_ns() -> u64 {
    static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);
    ORIGIN.elapsed().as_nanos() as u64
}

/// A handler that does nothing (it still gets decoded parameters, as every handler does);
/// [`NoOp::counting`] also says when it has handled a given number of events.
#[derive(Default)]
pub struct NoOp {
    countdown: Option<(AtomicI64, Arc<Notify>)>,
}

impl NoOp {
    /// A no-op handler that notifies the returned `Notify` at its `n`-th event.
    pub fn counting(n: u64) -> (NoOp, Arc<Notify>) {
        let done = Arc::new(Notify::new());
        let countdown = Some((AtomicI64::new(n as i64), done.clone()));
        (NoOp { countdown }, done)
    }
}

#[async_trait]
impl ShipmentTrackingConsumer for NoOp {
    async fn order_placed(
        &self,
        _: &ConsumerContext,
        _: User,
        _: Product,
        _: u64,
    ) -> HandlerResult {
        if let Some((left, done)) = &self.countdown {
            if left.fetch_sub(1, Ordering::SeqCst) == 1 {
                done.notify_one();
            }
        }
        Ok(())
    }
    async fn packing(&self, _: &ConsumerContext, _: String, _: u64, _: u64) -> HandlerResult {
        Ok(())
    }
}

/// The run: options, the Redis under test, and this run's environment (every key of the run is
/// under `bb:{<env>:...}`).
pub struct Ctx {
    pub opts: Options,
    pub url: String,
    pub client: Client,
    pub env: String,
    /// The server was started for this run: it may be flushed between scenarios.
    pub owned_server: bool,
}

impl Ctx {
    pub fn keys(&self, uri: &str) -> StreamKeys {
        StreamKeys::new(&StreamAddress::new(Some(&self.env), uri).expect("valid names"))
    }

    /// A multiplexed connection (redis-rs's default response timeout, 500 ms, is too short
    /// for big pipelines on a busy machine).
    pub async fn conn(&self) -> Res<MultiplexedConnection> {
        let config =
            AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(60)));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// Removes every key of the run: FLUSHALL on a server we started, else SCAN + UNLINK of
    /// `bb:{<env>:*`.
    pub async fn cleanup(&self) -> Res<()> {
        let mut conn = self.conn().await?;
        if self.owned_server {
            redis::cmd("FLUSHALL")
                .arg("SYNC")
                .query_async::<()>(&mut conn)
                .await?;
            return Ok(());
        }
        let keys = scan(&mut conn, &format!("bb:{{{}:*", self.env)).await?;
        for chunk in keys.chunks(1000) {
            redis::cmd("UNLINK")
                .arg(chunk)
                .query_async::<i64>(&mut conn)
                .await?;
        }
        Ok(())
    }
}

/// Every key matching `pattern`.
pub async fn scan(conn: &mut MultiplexedConnection, pattern: &str) -> Res<Vec<String>> {
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// The parameters of order `i` as the framework encodes them: one JSON value per name.
pub fn raw_fields(i: u64, time: u64) -> Res<[Vec<u8>; 3]> {
    let (user, product) = order(i);
    Ok([
        serde_json::to_vec(&user)?,
        serde_json::to_vec(&product)?,
        serde_json::to_vec(&time)?,
    ])
}

/// Adds to `pipe` what the framework's publish script writes for order `i`: the payload hash,
/// then the stream entry naming it (`message_id`, `operation`, `version`, `produced_at`,
/// `payload`). The XADD's reply (the entry id) is the only one not ignored.
pub fn raw_publish(pipe: &mut redis::Pipeline, keys: &StreamKeys, i: u64, time: u64) -> Res<()> {
    let id = MessageId::new();
    let hash = keys.payload(&id);
    let [user, product, time] = raw_fields(i, time)?;
    pipe.cmd("HSET")
        .arg(&hash)
        .arg(PARAMS[0])
        .arg(user)
        .arg(PARAMS[1])
        .arg(product)
        .arg(PARAMS[2])
        .arg(time)
        .ignore();
    let mut entry = redis::cmd("XADD");
    xadd(&mut entry, keys.stream(), &id, OPERATION)
        .arg("payload")
        .arg(&hash);
    pipe.add_command(entry);
    Ok(())
}

/// The arguments of the `XADD` of event `id` of `operation` (version 0) up to its metadata:
/// `<stream> * message_id <id> operation <operation> version 0 produced_at <now, ms>`, as the
/// publish script writes them.
pub fn xadd<'a>(
    cmd: &'a mut redis::Cmd,
    stream: &str,
    id: &MessageId,
    operation: &str,
) -> &'a mut redis::Cmd {
    cmd.arg(stream)
        .arg("*")
        .arg("message_id")
        .arg(id.to_string())
        .arg("operation")
        .arg(operation)
        .arg("version")
        .arg(0)
        .arg("produced_at")
        .arg(backbone_core::metadata::now_millis())
}

/// The raw EVALSHA of the publish script (`scripts::PUBLISH`) for order `i` alone, on the
/// keys of one stream (or partition), in the hash layout: no TTL, one event (sequence number
/// 0, so the sequence record `KEYS[2]` is not touched and the floor not used), no further
/// entry fields.
pub fn publish_call<'a>(
    script: &'a Script,
    keys: &StreamKeys,
    i: u64,
) -> Res<ScriptInvocation<'a>> {
    let id = MessageId::new();
    let [user, product, time] = raw_fields(i, now_ns())?;
    let mut call = script.key(keys.stream());
    call.key(keys.sequence("raw"))
        .key(keys.payload(&id))
        .arg(0)
        .arg(1)
        .arg(1)
        .arg(id.to_string())
        .arg(OPERATION)
        .arg(0)
        .arg(backbone_core::metadata::now_millis())
        .arg(0)
        .arg(0)
        .arg(3);
    for (name, value) in PARAMS.iter().zip([user, product, time]) {
        call.arg(name).arg(value);
    }
    Ok(call)
}

/// Sends [`publish_call`] on `conn`; an error unless the script wrote the event.
pub async fn raw_script_publish<C: ConnectionLike + Send>(
    conn: &mut C,
    script: &Script,
    keys: &StreamKeys,
    i: u64,
) -> Res<()> {
    let ids: Vec<Option<String>> = publish_call(script, keys, i)?.invoke_async(conn).await?;
    if !matches!(ids.as_slice(), [Some(_)]) {
        return Err("the raw publish script wrote nothing".into());
    }
    Ok(())
}

/// Runs `send(i)` for every `i` of `0..n`, from `tasks` tasks each keeping `depth` sends in
/// flight; returns the time taken.
pub async fn drive<F, Fut>(n: u64, tasks: u64, depth: usize, send: F) -> Res<Duration>
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Res<()>> + Send,
{
    let started = Instant::now();
    let handles: Vec<_> = split(n, tasks)
        .into_iter()
        .map(|(from, count)| {
            let send = send.clone();
            tokio::spawn(async move {
                let sends = futures::stream::iter(from..from + count).map(&send);
                let mut sends = sends.buffer_unordered(depth);
                while let Some(sent) = sends.next().await {
                    sent?;
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

/// Pre-fills a stream with `n` events in the framework's layout: pipelines of 500 events, four
/// at a time, each built on its own task.
pub async fn fill(ctx: &Ctx, keys: &StreamKeys, n: u64) -> Res<()> {
    fill_on(ctx.conn().await?, keys, n).await
}

/// [`fill`] on any connection (a cluster's too: every key of one stream shares a hash tag).
pub async fn fill_on<C>(conn: C, keys: &StreamKeys, n: u64) -> Res<()>
where
    C: ConnectionLike + Clone + Send + 'static,
{
    const CHUNK: u64 = 500;
    let chunks = (0..n.div_ceil(CHUNK)).map(|c| {
        let (mut conn, keys) = (conn.clone(), keys.clone());
        tokio::spawn(async move {
            let mut pipe = redis::pipe();
            for i in c * CHUNK..((c + 1) * CHUNK).min(n) {
                raw_publish(&mut pipe, &keys, i, 0)?;
            }
            pipe.query_async::<Vec<String>>(&mut conn).await?;
            Res::Ok(())
        })
    });
    let mut running = futures::stream::iter(chunks).buffer_unordered(4);
    while let Some(done) = running.next().await {
        done??;
    }
    Ok(())
}

/// `XGROUP CREATE <stream> <group> <start> MKSTREAM`; an existing group is fine.
pub async fn create_group<C: ConnectionLike + Send>(
    conn: &mut C,
    stream: &str,
    group: &str,
    start: &str,
) -> Res<()> {
    let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
        _ => Ok(()),
    }
}

/// How many entries `group` has read and not acknowledged.
pub async fn pending(ctx: &Ctx, stream: &str, group: &str) -> Res<i64> {
    let mut conn = ctx.conn().await?;
    let reply: Vec<Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(&mut conn)
        .await?;
    Ok(match reply.first() {
        Some(Value::Int(n)) => *n,
        _ => -1,
    })
}

/// The raw consumer loop: `XREADGROUP COUNT batch BLOCK` (on a connection of its own), one
/// pipeline of `HGETALL`s, the handler on each payload's fields, one `XACK` per batch; until
/// `n` events were handled. Returns the events handled.
pub async fn raw_consume(
    ctx: &Ctx,
    stream: &str,
    group: &str,
    n: u64,
    deadline: Instant,
    handle: impl FnMut(Vec<(String, Vec<u8>)>),
) -> Res<u64> {
    let mut reader = ctx.conn().await?;
    let mut commands = ctx.conn().await?;
    let batch = ctx.opts.batch;
    raw_consume_on(
        &mut reader,
        &mut commands,
        stream,
        group,
        batch,
        n,
        deadline,
        handle,
    )
    .await
}

/// [`raw_consume`] on given connections: `reader` for the blocking reads only.
#[allow(clippy::too_many_arguments)]
pub async fn raw_consume_on<C: ConnectionLike + Send>(
    reader: &mut C,
    commands: &mut C,
    stream: &str,
    group: &str,
    batch: usize,
    n: u64,
    deadline: Instant,
    mut handle: impl FnMut(Vec<(String, Vec<u8>)>),
) -> Res<u64> {
    create_group(commands, stream, group, "0").await?;
    let mut handled = 0u64;
    while handled < n {
        if Instant::now() > deadline {
            return Err(format!("raw consumer: {handled} of {n} events by the deadline").into());
        }
        let count = (n - handled).min(batch as u64);
        let entries: Vec<(String, Option<String>)> = read_group(reader, stream, group, count)
            .await?
            .into_iter()
            .map(|(id, fields)| {
                let payload = fields.into_iter().find(|(k, _)| k == "payload");
                (
                    id,
                    payload.map(|(_, v)| String::from_utf8_lossy(&v).into_owned()),
                )
            })
            .collect();
        if entries.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        for (_, payload) in &entries {
            pipe.cmd("HGETALL")
                .arg(payload.as_deref().unwrap_or_default());
        }
        let hashes: Vec<Vec<(String, Vec<u8>)>> = pipe.query_async(commands).await?;
        hashes.into_iter().for_each(&mut handle);
        let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
        redis::cmd("XACK")
            .arg(stream)
            .arg(group)
            .arg(&ids)
            .query_async::<i64>(commands)
            .await?;
        handled += entries.len() as u64;
    }
    Ok(handled)
}

/// One entry as `XREADGROUP` answers it: its id and its fields.
pub type ReadEntry = (String, Vec<(String, Vec<u8>)>);

/// One `XREADGROUP GROUP <group> raw COUNT <count> BLOCK 1000 STREAMS <stream> >`: each
/// entry's id and fields (none when the block timed out).
pub async fn read_group<C: ConnectionLike + Send>(
    reader: &mut C,
    stream: &str,
    group: &str,
    count: u64,
) -> Res<Vec<ReadEntry>> {
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg("raw")
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(1000)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(reader)
        .await?;
    parse_read(reply)
}

/// An `XREADGROUP` reply for one stream: each entry's id and its fields.
fn parse_read(reply: Value) -> Res<Vec<ReadEntry>> {
    let streams: Vec<Value> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().map(|(_, v)| v).collect(),
        other => return Err(format!("unexpected XREADGROUP reply {other:?}").into()),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(entries) = stream else {
            return Err("unexpected entry list".into());
        };
        for entry in entries {
            let Value::Array(mut parts) = entry else {
                return Err("unexpected entry".into());
            };
            let fields = parts.pop().unwrap_or(Value::Nil);
            let id: String = redis::from_redis_value(parts.pop().unwrap_or(Value::Nil))?;
            let fields: Vec<(String, Vec<u8>)> = match fields {
                Value::Nil => Vec::new(),
                fields => redis::from_redis_value(fields)?,
            };
            out.push((id, fields));
        }
    }
    Ok(out)
}

/// Splits `n` into `parts` nearly equal counts, as (first index, count).
pub fn split(n: u64, parts: u64) -> Vec<(u64, u64)> {
    let parts = parts.max(1);
    (0..parts)
        .map(|p| {
            let from = n * p / parts;
            (from, n * (p + 1) / parts - from)
        })
        .filter(|(_, count)| *count > 0)
        .collect()
}

/// One timed run: events, wall time, and the Redis server's CPU time (user + sys, from
/// `INFO cpu`) over the run; the CPU figure is robust to a busy client machine, and exact only
/// when nothing else uses that Redis.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub events: u64,
    pub took: Duration,
    pub redis_cpu: Duration,
    /// CPU time of this process (all threads) during the run.
    pub client_cpu: Duration,
}

/// Runs `work` (which returns its own timing) between two readings of Redis's CPU time.
pub async fn measured(
    ctx: &Ctx,
    events: u64,
    work: impl std::future::Future<Output = Res<Duration>>,
) -> Res<Run> {
    measured_by(|| redis_cpu(ctx), events, work).await
}

/// [`measured`] with Redis's CPU seconds read by `read_cpu` (e.g. summed over a cluster's
/// masters).
pub async fn measured_by<F, Fut>(
    read_cpu: F,
    events: u64,
    work: impl std::future::Future<Output = Res<Duration>>,
) -> Res<Run>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Res<f64>>,
{
    let before = read_cpu().await?;
    let client_before = client_cpu();
    let took = work.await?;
    let client_cpu = client_cpu().saturating_sub(client_before);
    let after = read_cpu().await?;
    Ok(Run {
        events,
        took,
        redis_cpu: Duration::from_secs_f64((after - before).max(0.0)),
        client_cpu,
    })
}

/// This process's CPU time so far (all threads, user + sys).
fn client_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// The Redis server's CPU seconds so far (all threads, user + sys).
pub async fn redis_cpu(ctx: &Ctx) -> Res<f64> {
    server_cpu(&mut ctx.conn().await?).await
}

/// `used_cpu_user` + `used_cpu_sys` of `INFO cpu` of the server behind `conn`.
pub async fn server_cpu(conn: &mut MultiplexedConnection) -> Res<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok(field("used_cpu_user") + field("used_cpu_sys"))
}

/// Events per second over several runs: total events / total time.
pub fn rate(runs: &[Run]) -> f64 {
    let events: u64 = runs.iter().map(|r| r.events).sum();
    let secs: f64 = runs.iter().map(|r| r.took.as_secs_f64()).sum();
    events as f64 / secs.max(1e-9)
}

/// Redis CPU microseconds per event over several runs.
pub fn cpu_us(runs: &[Run]) -> f64 {
    let events: u64 = runs.iter().map(|r| r.events).sum();
    let cpu: f64 = runs.iter().map(|r| r.redis_cpu.as_secs_f64()).sum();
    cpu * 1e6 / events.max(1) as f64
}

/// This process's CPU microseconds per event over several runs.
pub fn client_us(runs: &[Run]) -> f64 {
    let events: u64 = runs.iter().map(|r| r.events).sum();
    let cpu: f64 = runs.iter().map(|r| r.client_cpu.as_secs_f64()).sum();
    cpu * 1e6 / events.max(1) as f64
}

/// Per-run figures for the JSON object.
pub fn per_run(runs: &[Run]) -> serde_json::Value {
    let runs: Vec<_> = runs
        .iter()
        .map(|r| {
            serde_json::json!({
                "events_per_s": rate(&[*r]),
                "redis_cpu_us_per_event": cpu_us(&[*r]),
                "client_cpu_us_per_event": client_us(&[*r]),
            })
        })
        .collect();
    serde_json::json!(runs)
}

/// The `q` quantile (0..=1) of sorted samples, nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
