//! The lmax shop on backbone's event store: top-ups, stock and orders. A checkpointed
//! projection folds every event into balances and stock; the command side reads it to check an
//! order (balance, stock) and records the decision as an event, `ordered` or `order_rejected`.
//! The projection saves its state and position together every 5 events (or 30 s); after a clean
//! stop and after a crash it resumes from its checkpoint and replays only what came after.
//!
//! `cargo run --example shop`: uses `$REDIS_URL`, else a `redis-server` of its own, else a
//! `redis:7` container; with none of these it says why and exits.

use std::collections::BTreeMap;
use std::time::Duration;

use backbone_core::events_contract;
use backbone_core::store::{AppendOptions, CheckpointPolicy, ExpectedVersion, Projection};
use backbone_core::{Error, Metadata};
use backbone_redis::store::{EventStore, EventStoreBuilder};
use backbone_redis::testing::{unique_name, TestRedis};
use serde::{Deserialize, Serialize};

/// What happens in the shop.
#[events_contract]
pub trait Shop {
    /// A customer added money to their balance.
    async fn topped_up(&self, customer: String, cents: u64);
    /// Items arrived in stock, at a price.
    async fn stocked(&self, item: String, quantity: u64, price_cents: u64);
    /// An order passed the checks: the balance pays for it, the stock holds it.
    async fn ordered(&self, customer: String, item: String, quantity: u64, cents: u64);
    /// An order failed a check.
    async fn order_rejected(&self, customer: String, item: String, quantity: u64, reason: String);
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Stock {
    quantity: u64,
    price_cents: u64,
}

/// Balances and stock: the projection the command side checks orders against.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ShopView {
    balances: BTreeMap<String, u64>,
    stock: BTreeMap<String, Stock>,
    orders: u64,
    rejected: u64,
}

impl Projection for ShopView {
    type Event = ShopEvent;
    const NAME: &'static str = "shop-view-v1";
    fn apply(&mut self, event: &ShopEvent, _: &Metadata) {
        match event {
            ShopEvent::ToppedUp { customer, cents } => {
                *self.balances.entry(customer.clone()).or_default() += cents;
            }
            ShopEvent::Stocked {
                item,
                quantity,
                price_cents,
            } => {
                let stock = self.stock.entry(item.clone()).or_default();
                stock.quantity += quantity;
                stock.price_cents = *price_cents;
            }
            ShopEvent::Ordered {
                customer,
                item,
                quantity,
                cents,
            } => {
                *self.balances.entry(customer.clone()).or_default() -= cents;
                self.stock.entry(item.clone()).or_default().quantity -= quantity;
                self.orders += 1;
            }
            ShopEvent::OrderRejected { .. } => self.rejected += 1,
        }
    }
}

/// A command; orders are checked against the view.
enum Command {
    TopUp(&'static str, u64),
    Stock(&'static str, u64, u64),
    Order(&'static str, &'static str, u64),
}

/// The command side: decides the event from the view, appends it to the customer's (or the
/// item's) aggregate. Checks run one at a time here: two command processes could both pass a
/// check on the same stock, so a real shop serializes its orders (one process, or one queue).
async fn execute(
    store: &EventStore<ShopEvent>,
    view: &ShopView,
    command: Command,
) -> Result<ShopEvent, Error> {
    let (aggregate, event) = match command {
        Command::TopUp(customer, cents) => (
            format!("customer-{customer}"),
            ShopEvent::ToppedUp {
                customer: customer.into(),
                cents,
            },
        ),
        Command::Stock(item, quantity, price_cents) => (
            format!("item-{item}"),
            ShopEvent::Stocked {
                item: item.into(),
                quantity,
                price_cents,
            },
        ),
        Command::Order(customer, item, quantity) => (
            format!("customer-{customer}"),
            decide(view, customer, item, quantity),
        ),
    };
    store
        .append(
            &aggregate,
            ExpectedVersion::Any,
            std::slice::from_ref(&event),
            AppendOptions::default(),
        )
        .await?;
    Ok(event)
}

fn decide(view: &ShopView, customer: &str, item: &str, quantity: u64) -> ShopEvent {
    let balance = view.balances.get(customer).copied().unwrap_or(0);
    let stock = view.stock.get(item).cloned().unwrap_or_default();
    let cents = stock.price_cents * quantity;
    let reason = if stock.quantity < quantity {
        Some(format!("only {} in stock", stock.quantity))
    } else if balance < cents {
        Some(format!("balance {} < {}", money(balance), money(cents)))
    } else {
        None
    };
    let (customer, item) = (customer.to_owned(), item.to_owned());
    match reason {
        None => ShopEvent::Ordered {
            customer,
            item,
            quantity,
            cents,
        },
        Some(reason) => ShopEvent::OrderRejected {
            customer,
            item,
            quantity,
            reason,
        },
    }
}

fn money(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

fn describe(event: &ShopEvent) -> String {
    match event {
        ShopEvent::ToppedUp { customer, cents } => format!("{customer} tops up {}", money(*cents)),
        ShopEvent::Stocked {
            item,
            quantity,
            price_cents,
        } => {
            format!("{quantity} {item} in stock at {}", money(*price_cents))
        }
        ShopEvent::Ordered {
            customer,
            item,
            quantity,
            cents,
        } => {
            format!("{customer} orders {quantity} {item}: ok, {}", money(*cents))
        }
        ShopEvent::OrderRejected {
            customer,
            item,
            quantity,
            reason,
        } => {
            format!("{customer} orders {quantity} {item}: REJECTED, {reason}")
        }
    }
}

fn summary(view: &ShopView) -> String {
    let balances: Vec<_> = view
        .balances
        .iter()
        .map(|(c, b)| format!("{c} {}", money(*b)))
        .collect();
    let stock: Vec<_> = view
        .stock
        .iter()
        .map(|(i, s)| format!("{i} {}", s.quantity))
        .collect();
    format!(
        "balances [{}], stock [{}], {} orders, {} rejected",
        balances.join(", "),
        stock.join(", "),
        view.orders,
        view.rejected
    )
}

/// The brute-force fold of the whole stream, to check the projection against.
async fn full_replay(store: &EventStore<ShopEvent>) -> Result<(ShopView, u64), Error> {
    let (mut view, mut count, mut after) = (ShopView::default(), 0, None::<String>);
    loop {
        let page = store
            .read_between(0, u64::MAX, after.as_deref(), 100)
            .await?;
        for stored in &page.events {
            view.apply(&stored.event, &stored.metadata);
            count += 1;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok((view, count)),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let redis = match TestRedis::start().await {
        Ok(redis) => redis,
        Err(e) => {
            println!("no Redis could be had, so no shop today: {e}");
            return Ok(());
        }
    };
    println!("Redis at {} ({:?})", redis.url(), redis.source());
    let store = EventStoreBuilder::new()
        .url(redis.url())
        .environment("example")
        .uri(unique_name("shop")) // a fresh shop on every run
        .build::<ShopEvent>()
        .await?;
    let policy = CheckpointPolicy {
        every_events: 5,
        every: Duration::from_secs(30),
    };

    println!("\n-- the shop opens (no checkpoint yet)");
    let view = store.project::<ShopView>(policy).await?;
    let commands = vec![
        Command::TopUp("alice", 5000),
        Command::TopUp("bob", 1000),
        Command::Stock("apple", 10, 120),
        Command::Stock("laptop", 1, 99900),
        Command::Order("alice", "apple", 3),
        Command::Order("bob", "laptop", 1),
        Command::TopUp("alice", 100000),
        Command::Order("alice", "laptop", 1),
        Command::Order("bob", "laptop", 1),
        Command::Order("bob", "apple", 20),
        Command::Order("bob", "apple", 5),
    ];
    let mut checkpoints = 0;
    for command in commands {
        view.caught_up().await?; // the checks see every event so far
        let event = execute(&store, &view.state(), command).await?;
        println!("{}", describe(&event));
        view.caught_up().await?;
        let progress = view.progress();
        if progress.checkpoints > checkpoints {
            checkpoints = progress.checkpoints;
            println!(
                "   [checkpoint: {} events, position {}]",
                progress.events,
                progress.saved.unwrap_or_default()
            );
        }
    }
    println!("view: {}", summary(&view.state()));
    view.shutdown().await?;
    let saved = store
        .checkpoint::<ShopView>()
        .await?
        .expect("shutdown saves a checkpoint");
    println!(
        "stopped cleanly; final checkpoint: {} events, position {}",
        saved.events, saved.position
    );

    println!("\n-- while the projection is down, another process appends 2 events");
    // Top-ups and stock need no view.
    for command in [
        Command::TopUp("carol", 3000),
        Command::Stock("apple", 20, 120),
    ] {
        println!(
            "{}",
            describe(&execute(&store, &ShopView::default(), command).await?)
        );
    }

    println!("\n-- restart");
    let view = store.project::<ShopView>(policy).await?;
    let restored = view.progress();
    view.caught_up().await?;
    println!(
        "restored the checkpoint at {} ({} events); replayed {} new events",
        restored.position.unwrap_or_default(),
        restored.events,
        view.progress().applied
    );
    for command in [
        Command::Order("carol", "apple", 10),
        Command::Order("carol", "apple", 30),
    ] {
        view.caught_up().await?;
        let event = execute(&store, &view.state(), command).await?;
        println!("{}", describe(&event));
    }
    view.caught_up().await?;
    let progress = view.progress();
    view.abort(); // a crash: no final checkpoint
    let saved = store.checkpoint::<ShopView>().await?.expect("a checkpoint");
    println!(
        "CRASH after {} events; the checkpoint holds {} (position {})",
        progress.events, saved.events, saved.position
    );

    println!("\n-- restart after the crash");
    let view = store.project::<ShopView>(policy).await?;
    view.caught_up().await?;
    let progress = view.progress();
    println!(
        "resumed from {}; replayed {} events (only those after the checkpoint), now at {}",
        saved.position, progress.applied, progress.events
    );
    let state = view.state();
    println!("view: {}", summary(&state));
    let (replayed, count) = full_replay(&store).await?;
    println!(
        "equals a full replay of all {count} events: {}",
        state == replayed
    );
    view.shutdown().await?;
    if state != replayed || progress.applied != progress.events - saved.events {
        return Err(Error::Stopped(format!(
            "projection `{}` stopped: it diverged from a full replay",
            ShopView::NAME
        )));
    }
    Ok(())
}
