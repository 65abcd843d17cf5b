//! Many writers on one stream, without locks: several gateway tasks append orders to one
//! contract's stream at once, each order to its own aggregate (`order-<gateway>-<n>`).
//!
//! - **Conditional append**: an order is placed with `ExpectedVersion::NoStream`, so placing
//!   the same order twice fails with a version conflict; a cancellation expects version 1.
//! - **Idempotency**: every append carries a key; a gateway retries some appends with the same
//!   key (as after a timeout) and gets the first append's result back, marked as a replay,
//!   with nothing written twice.
//! - **Statistics**: a consumer group computes global totals from the events as they arrive;
//!   at the end they are printed next to the store's `window(..)` over the whole run and its
//!   `stats(..)`, and the example fails unless all three agree.
//!
//! ```text
//! cargo run --example gateways            # 4 gateways × 50 orders
//! cargo run --example gateways -- 8 200   # 8 gateways × 200 orders
//! ```
//! Uses `$REDIS_URL` if set, else starts a local `redis-server` (or a container); without
//! Redis it says why and exits.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backbone_core::store::{AppendOptions, ExpectedVersion, WindowStats};
use backbone_core::{async_trait, events_contract, ConsumerContext, Error, HandlerResult};
use backbone_redis::store::{EventStore, EventStoreBuilder};
use backbone_redis::testing::{unique_name, TestRedis};
use backbone_redis::RedisConsumerBuilder;
use tokio::sync::Notify;

/// Orders, as the gateways see them.
#[events_contract]
pub trait Orders {
    /// A gateway accepted an order.
    async fn order_placed(&self, gateway: String, amount_cents: u64);
    /// The customer cancelled it; the amount is refunded.
    async fn order_cancelled(&self, gateway: String, amount_cents: u64);
}

/// What one gateway did.
#[derive(Debug, Default)]
struct GatewayReport {
    placed: u64,
    cancelled: u64,
    replays: u64,
    conflicts: u64,
    /// The smallest and largest ms of the stream ids it wrote.
    first_ms: u64,
    last_ms: u64,
}

impl GatewayReport {
    fn wrote(&mut self, positions: &[String]) {
        for position in positions {
            let ms: u64 = position.split('-').next().unwrap().parse().unwrap();
            if self.first_ms == 0 || ms < self.first_ms {
                self.first_ms = ms;
            }
            self.last_ms = self.last_ms.max(ms);
        }
    }
}

/// One gateway: places `orders` orders, retrying some, double-placing some, cancelling some.
/// Each gateway has a store (and a connection) of its own, as separate processes would.
async fn gateway(
    url: String,
    uri: String,
    name: String,
    orders: u64,
) -> Result<GatewayReport, Error> {
    let store: EventStore<OrdersEvent> = EventStoreBuilder::new().url(url).uri(uri).build().await?;
    let mut report = GatewayReport::default();
    let seed = name.bytes().map(u64::from).sum::<u64>();
    for n in 0..orders {
        let aggregate = format!("order-{name}-{n}");
        let amount_cents = (seed * 7919 + n * 104_729) % 9000 + 1000;
        let order = [OrdersEvent::OrderPlaced {
            gateway: name.clone(),
            amount_cents,
        }];
        let key = AppendOptions::idempotent(format!("place-{name}-{n}"));
        let placed = store
            .append(&aggregate, ExpectedVersion::NoStream, &order, key.clone())
            .await?;
        assert!(!placed.replayed);
        report.placed += 1;
        report.wrote(&placed.positions);
        if n % 5 == 0 {
            // The reply was "lost": retry with the same key. Replayed, not duplicated.
            let retry = store
                .append(&aggregate, ExpectedVersion::NoStream, &order, key)
                .await?;
            assert!(retry.replayed && retry.positions == placed.positions);
            report.replays += 1;
        }
        if n % 7 == 0 {
            // A second placement of the same order under another key: the condition refuses it.
            let again = AppendOptions::idempotent(format!("place-again-{name}-{n}"));
            match store
                .append(&aggregate, ExpectedVersion::NoStream, &order, again)
                .await
            {
                Err(Error::WrongExpectedVersion { actual: 1, .. }) => report.conflicts += 1,
                other => panic!("a double placement must conflict, got {other:?}"),
            }
        }
        if n % 10 == 3 {
            let cancel = [OrdersEvent::OrderCancelled {
                gateway: name.clone(),
                amount_cents,
            }];
            let key = AppendOptions::idempotent(format!("cancel-{name}-{n}"));
            let result = store
                .append(&aggregate, ExpectedVersion::Exact(1), &cancel, key)
                .await?;
            report.cancelled += 1;
            report.wrote(&result.positions);
        }
        if n % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(report)
}

/// Global totals, as the consumer group computes them.
#[derive(Debug, Default)]
struct Totals {
    seen: HashSet<backbone_core::MessageId>,
    placed: WindowStats,
    net: WindowStats,
    cancelled: u64,
    per_gateway: BTreeMap<String, u64>,
}

/// The consumer: folds every event once (delivery is at least once, so it skips message ids
/// it has seen) and wakes `main` when `expected` events arrived.
struct Statistics {
    totals: Arc<Mutex<Totals>>,
    expected: Arc<Mutex<Option<u64>>>,
    done: Arc<Notify>,
}

impl Statistics {
    fn fold(&self, ctx: &ConsumerContext, f: impl FnOnce(&mut Totals)) -> HandlerResult {
        let mut totals = self.totals.lock().unwrap();
        if totals.seen.insert(ctx.metadata().message_id) {
            f(&mut totals);
        }
        if Some(totals.seen.len() as u64) == *self.expected.lock().unwrap() {
            self.done.notify_one();
        }
        Ok(())
    }
}

#[async_trait]
impl OrdersConsumer for Statistics {
    async fn order_placed(
        &self,
        ctx: &ConsumerContext,
        gateway: String,
        amount_cents: u64,
    ) -> HandlerResult {
        self.fold(ctx, |t| {
            t.placed.add(amount_cents as f64);
            t.net.add(amount_cents as f64);
            *t.per_gateway.entry(gateway).or_default() += 1;
        })
    }
    async fn order_cancelled(
        &self,
        ctx: &ConsumerContext,
        _: String,
        amount_cents: u64,
    ) -> HandlerResult {
        self.fold(ctx, |t| {
            t.cancelled += 1;
            t.net.add(-(amount_cents as f64));
        })
    }
}

fn show(stats: &WindowStats) -> String {
    let cents = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.2}", v / 100.0));
    format!(
        "count {:>5}  sum {:>11.2}  avg {:>8}  min {:>8}  max {:>8}",
        stats.count,
        stats.sum / 100.0,
        cents(stats.avg),
        cents(stats.min),
        cents(stats.max)
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let gateways = args.next().transpose()?.unwrap_or(4).max(1);
    let orders = args.next().transpose()?.unwrap_or(50).max(1);
    let redis = match TestRedis::start().await {
        Ok(redis) => redis,
        Err(e) => {
            println!("gateways needs Redis, and none could be had: {e}");
            return Ok(());
        }
    };
    let url = redis.url().to_owned();
    let uri = unique_name("gateways"); // a fresh stream: a kept Redis may hold earlier runs
    println!("Redis at {url} ({:?}), stream uri {uri}", redis.source());

    let totals = Arc::new(Mutex::new(Totals::default()));
    let expected = Arc::new(Mutex::new(None));
    let done = Arc::new(Notify::new());
    let consumer = RedisConsumerBuilder::new()
        .url(&url)
        .uri(&uri)
        .group("statistics")
        .name("statistics-1")
        .subscribe_orders_consumer(Statistics {
            totals: totals.clone(),
            expected: expected.clone(),
            done: done.clone(),
        })
        .await?;

    let started = Instant::now();
    let tasks: Vec<_> = (0..gateways)
        .map(|g| tokio::spawn(gateway(url.clone(), uri.clone(), format!("gw{g}"), orders)))
        .collect();
    let mut all = GatewayReport {
        first_ms: u64::MAX,
        ..Default::default()
    };
    for (g, task) in tasks.into_iter().enumerate() {
        let r = task.await??;
        println!(
            "gateway gw{g}: {} placed, {} cancelled, {} retries replayed, {} double placements refused",
            r.placed, r.cancelled, r.replays, r.conflicts
        );
        all.placed += r.placed;
        all.cancelled += r.cancelled;
        all.replays += r.replays;
        all.conflicts += r.conflicts;
        all.first_ms = all.first_ms.min(r.first_ms);
        all.last_ms = all.last_ms.max(r.last_ms);
    }
    let written = all.placed + all.cancelled;
    println!(
        "{gateways} gateways wrote {written} events in {:?}, over {} ms of stream time",
        started.elapsed(),
        all.last_ms - all.first_ms + 1
    );

    // Wait for the consumer to have folded every event, then stop it.
    let notified = done.notified();
    *expected.lock().unwrap() = Some(written);
    if (totals.lock().unwrap().seen.len() as u64) < written {
        tokio::time::timeout(Duration::from_secs(30), notified)
            .await
            .map_err(|_| "the consumer did not see every event within 30 s")?;
    }
    consumer.shutdown().await?;
    let totals = std::mem::take(&mut *totals.lock().unwrap());

    // The same figures from the store: a time window over the whole run, and its stats.
    let store: EventStore<OrdersEvent> =
        EventStoreBuilder::new().url(&url).uri(&uri).build().await?;
    let (from, to) = (all.first_ms, all.last_ms);
    let placed = store
        .window(from, to, |e| match &e.event {
            OrdersEvent::OrderPlaced { amount_cents, .. } => Some(*amount_cents as f64),
            OrdersEvent::OrderCancelled { .. } => None,
        })
        .await?;
    let net = store
        .window(from, to, |e| match &e.event {
            OrdersEvent::OrderPlaced { amount_cents, .. } => Some(*amount_cents as f64),
            OrdersEvent::OrderCancelled { amount_cents, .. } => Some(-(*amount_cents as f64)),
        })
        .await?;
    let in_run = store.count_between(from, to).await?;
    let run_secs = (to - from + 1) as f64 / 1000.0;
    let stats = store.stats(Duration::from_secs(60)).await?;

    println!();
    println!("orders placed (amounts in currency units)");
    println!("  consumer  {}", show(&totals.placed));
    println!("  window    {}", show(&placed));
    println!("net of cancellations ({} cancelled)", totals.cancelled);
    println!("  consumer  {}", show(&totals.net));
    println!("  window    {}", show(&net));
    println!("orders per gateway (consumer): {:?}", totals.per_gateway);
    println!(
        "entries in the run's window: {in_run} ({:.0}/s)",
        in_run as f64 / run_secs
    );
    println!(
        "stats: {} appended via the store, {} in the stream, {} in the last {:?} ({:.1}/s)",
        stats.appended, stats.stream_length, stats.in_window, stats.window, stats.rate_per_sec
    );

    // Amounts are whole cents, so sums are exact whatever the order of addition.
    let mut disagreements = Vec::new();
    if totals.placed != placed || totals.net != net {
        disagreements.push("the consumer's totals differ from the window's".to_owned());
    }
    if totals.placed.count != all.placed || totals.cancelled != all.cancelled {
        disagreements.push("the consumer's counts differ from what the gateways wrote".to_owned());
    }
    if in_run != written {
        disagreements.push(format!(
            "{in_run} entries in the run's window, not {written}"
        ));
    }
    if (stats.appended, stats.stream_length) != (written, written) {
        disagreements.push(format!(
            "stats count {stats:?}, the gateways wrote {written}"
        ));
    }
    if started.elapsed() < Duration::from_secs(50) && stats.in_window != written {
        disagreements.push(format!(
            "{} in the last minute, not {written}",
            stats.in_window
        ));
    }
    if disagreements.is_empty() {
        println!("consumer, window and stats agree");
        Ok(())
    } else {
        Err(disagreements.join("; ").into())
    }
}
