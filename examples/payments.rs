//! A payment on backbone's event store: requested, authorized, captured, refunded, with the
//! outstanding amount read from the aggregate's reduction after each step; a retried capture
//! with the same idempotency key (replayed, not captured twice); and two concurrent refunds
//! from the same reduction (one wins, the other gets a version conflict, reloads and retries).
//!
//! `cargo run --example payments`. Uses `$REDIS_URL`, else a `redis-server` of its own (or a
//! `redis:7` container). The event store has no in-memory implementation, so without Redis the
//! example says why and exits successfully without running.

use std::time::Duration;

use backbone_core::store::{
    Aggregate, AppendOptions, AppendResult, CachingPolicy, ExpectedVersion, Reduction,
};
use backbone_core::{events_contract, Error};
use backbone_redis::store::{EventStore, EventStoreBuilder};
use backbone_redis::testing::{unique_name, TestRedis};
use serde::{Deserialize, Serialize};

/// A card payment's life. Amounts are in cents.
#[events_contract]
pub trait Payments {
    /// The customer asked to pay `amount`.
    async fn requested(&self, amount: u64);
    /// The bank reserved `amount` on the card.
    async fn authorized(&self, amount: u64);
    /// `amount` of the reservation was taken.
    async fn captured(&self, amount: u64);
    /// `amount` of what was taken went back to the customer.
    async fn refunded(&self, amount: u64);
}

/// The payment folded from its events.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Payment {
    requested: u64,
    authorized: u64,
    captured: u64,
    refunded: u64,
}

impl Aggregate for Payment {
    type Event = PaymentsEvent;
    const NAME: &'static str = "payment-v1";
    fn apply(&mut self, event: &PaymentsEvent) {
        match event {
            PaymentsEvent::Requested { amount } => self.requested += amount,
            PaymentsEvent::Authorized { amount } => self.authorized += amount,
            PaymentsEvent::Captured { amount } => self.captured += amount,
            PaymentsEvent::Refunded { amount } => self.refunded += amount,
        }
    }
}

impl Payment {
    /// Requested but not captured yet.
    fn outstanding(&self) -> u64 {
        self.requested.saturating_sub(self.captured)
    }

    /// Captured, net of refunds.
    fn collected(&self) -> u64 {
        self.captured.saturating_sub(self.refunded)
    }

    /// Whether `event` may happen now; why not otherwise.
    fn check(&self, event: &PaymentsEvent) -> Result<(), String> {
        let ok = match event {
            PaymentsEvent::Requested { .. } => self.requested == 0,
            PaymentsEvent::Authorized { amount } => self.authorized + amount <= self.requested,
            PaymentsEvent::Captured { amount } => self.captured + amount <= self.authorized,
            PaymentsEvent::Refunded { amount } => *amount <= self.collected(),
        };
        ok.then_some(())
            .ok_or_else(|| format!("{event:?} is not allowed in {self:?}"))
    }
}

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn show(step: &str, reduction: &Reduction<Payment>) {
    let p = &reduction.state;
    println!(
        "  v{} {step:<28} outstanding {:>6}   collected {:>6}",
        reduction.version,
        money(p.outstanding()),
        money(p.collected())
    );
}

/// Loads the payment, checks `event` against it and appends it expecting the version loaded.
async fn act(
    store: &EventStore<PaymentsEvent>,
    id: &str,
    event: PaymentsEvent,
    options: AppendOptions,
) -> Result<AppendResult, Box<dyn std::error::Error>> {
    let payment = store.load::<Payment>(id).await?;
    payment.state.check(&event)?;
    let expected = ExpectedVersion::from(&payment);
    Ok(store.append(id, expected, &[event], options).await?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let redis = match TestRedis::start().await {
        Ok(redis) => redis,
        Err(e) => {
            println!(
                "payments: not run. The event store lives in Redis and has no in-memory \
                 implementation, and no Redis could be had: {e}"
            );
            return Ok(());
        }
    };
    eprintln!("store: Redis at {} ({:?})", redis.url(), redis.source());
    let store = EventStoreBuilder::new()
        .url(redis.url())
        .environment("dev")
        .uri("payments.example")
        .caching(CachingPolicy::EveryEvents(2))
        .build::<PaymentsEvent>()
        .await?;
    let id = unique_name("payment");
    println!("payment {id}");

    // The happy path, one command at a time.
    let capture_key = format!("{id}-capture-1");
    let steps = [
        (
            "requested 100.00",
            PaymentsEvent::Requested { amount: 10_000 },
            None,
        ),
        (
            "authorized 100.00",
            PaymentsEvent::Authorized { amount: 10_000 },
            None,
        ),
        (
            "captured 60.00",
            PaymentsEvent::Captured { amount: 6_000 },
            Some(&capture_key),
        ),
        (
            "refunded 10.00",
            PaymentsEvent::Refunded { amount: 1_000 },
            None,
        ),
    ];
    for (step, event, key) in steps {
        let options = key.map(AppendOptions::idempotent).unwrap_or_default();
        act(&store, &id, event, options).await?;
        show(step, &store.load::<Payment>(&id).await?);
    }

    // The capture's response was lost; the client resends the very same request.
    let before = store.load::<Payment>(&id).await?;
    let retry = store
        .append(
            &id,
            ExpectedVersion::Exact(2),
            &[PaymentsEvent::Captured { amount: 6_000 }],
            AppendOptions::idempotent(&capture_key),
        )
        .await?;
    println!(
        "retried capture (key {capture_key}): replayed: {}, version {} as first appended",
        retry.replayed, retry.version
    );
    let after = store.load::<Payment>(&id).await?;
    assert!(retry.replayed && after == before, "captured twice");
    show("after the retry (unchanged)", &after);

    // Two clerks refund 5.00 from the same reduction at once: one append wins.
    let seen = store.load::<Payment>(&id).await?;
    let refund = [PaymentsEvent::Refunded { amount: 500 }];
    let clerk = |name: &'static str| {
        let (store, id, refund) = (store.clone(), id.clone(), refund.clone());
        let expected = ExpectedVersion::from(&seen);
        async move {
            let result = store
                .append(&id, expected, &refund, AppendOptions::default())
                .await;
            (name, result)
        }
    };
    let (a, b) = tokio::join!(clerk("clerk A"), clerk("clerk B"));
    for (name, result) in [a, b] {
        match result {
            Ok(r) => println!("{name}: refunded 5.00 at version {}", r.version),
            Err(e @ Error::WrongExpectedVersion { .. }) => {
                println!("{name}: {e}");
                let result = act(&store, &id, refund[0].clone(), AppendOptions::default()).await?;
                println!(
                    "{name}: reloaded, checked, refunded 5.00 at version {}",
                    result.version
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    let last = store.load::<Payment>(&id).await?;
    show("after both refunds", &last);
    assert_eq!((last.version, last.state.refunded), (6, 2_000));

    // Loads wrote snapshots in the background (every 2 events): the next load starts there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut snapshot = store.snapshot::<Payment>(&id).await?;
    while snapshot.is_none_or(|(v, _)| v < last.version) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        snapshot = store.snapshot::<Payment>(&id).await?;
    }
    match snapshot {
        Some((version, _)) => println!("snapshot cached at version {version}"),
        None => println!("no snapshot cached yet"),
    }
    Ok(())
}
