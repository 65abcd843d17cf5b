//! The shipment-tracking flow in one process.
//!
//! A producer places orders; a `transit` consumer group moves each order along
//! (order_placed → packing → on_delivery → on_received) by producing the next event; a
//! `reporter` group prints every step. Exits when every order was received.
//!
//! ```text
//! cargo run --example shipment_tracking            # 5 orders
//! cargo run --example shipment_tracking -- 100     # 100 orders
//! ```
//! Uses `$REDIS_URL` if set, else starts a local `redis-server`, else the in-memory channel.

mod shipment;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use backbone_core::{async_trait, ConsumerContext, HandlerResult};
use shipment::*;
use tokio::sync::Notify;

/// Counts this run's received orders (a Redis kept from earlier runs may hold others).
struct Progress {
    emails: HashSet<String>,
    received: AtomicU64,
    all_received: Notify,
}

impl Progress {
    fn new(emails: HashSet<String>) -> Arc<Self> {
        Arc::new(Progress {
            emails,
            received: AtomicU64::new(0),
            all_received: Notify::new(),
        })
    }

    fn received(&self, email: &str) {
        if self.emails.contains(email)
            && self.received.fetch_add(1, Ordering::SeqCst) + 1 == self.emails.len() as u64
        {
            self.all_received.notify_one();
        }
    }
}

/// Advances each order by producing its next event.
struct Transit {
    producer: ShipmentTrackingProducer,
    progress: Arc<Progress>,
}

#[async_trait]
impl ShipmentTrackingConsumer for Transit {
    async fn order_placed(
        &self,
        _: &ConsumerContext,
        user: User,
        product: Product,
        _: u64,
    ) -> HandlerResult {
        self.producer.packing(user.email, product.id, now()).await?;
        Ok(())
    }
    async fn packing(
        &self,
        _: &ConsumerContext,
        email: String,
        product_id: u64,
        _: u64,
    ) -> HandlerResult {
        self.producer.on_delivery(email, product_id, now()).await?;
        Ok(())
    }
    async fn on_delivery(
        &self,
        _: &ConsumerContext,
        email: String,
        product_id: u64,
        _: u64,
    ) -> HandlerResult {
        self.producer.on_received(email, product_id, now()).await?;
        Ok(())
    }
    async fn on_received(
        &self,
        _: &ConsumerContext,
        email: String,
        _: u64,
        _: u64,
    ) -> HandlerResult {
        self.progress.received(&email);
        Ok(())
    }
}

/// Prints every step.
struct Reporter {
    progress: Arc<Progress>,
}

#[async_trait]
impl ShipmentTrackingConsumer for Reporter {
    async fn order_placed(
        &self,
        ctx: &ConsumerContext,
        user: User,
        product: Product,
        _: u64,
    ) -> HandlerResult {
        println!(
            "{:<22} {} ordered {} ({})",
            "order placed",
            user.name,
            product.name,
            ctx.metadata().message_id
        );
        Ok(())
    }
    async fn packing(
        &self,
        _: &ConsumerContext,
        email: String,
        product_id: u64,
        _: u64,
    ) -> HandlerResult {
        println!("{:<22} product {product_id} for {email}", "packing");
        Ok(())
    }
    async fn on_delivery(
        &self,
        _: &ConsumerContext,
        email: String,
        product_id: u64,
        _: u64,
    ) -> HandlerResult {
        println!("{:<22} product {product_id} for {email}", "on delivery");
        Ok(())
    }
    async fn on_received(
        &self,
        _: &ConsumerContext,
        email: String,
        product_id: u64,
        _: u64,
    ) -> HandlerResult {
        println!("{:<22} product {product_id} by {email}", "received");
        self.progress.received(&email);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let orders = count_arg("orders")?.unwrap_or(5);
    if orders == 0 {
        return Err("the number of orders must be at least 1".into());
    }
    let channel = Channel::choose().await;
    let producer = channel.producer().await?;
    let run = now();
    let placed: Vec<(User, Product)> = (0..orders).map(|i| order(run, i)).collect();
    let emails: HashSet<String> = placed.iter().map(|(user, _)| user.email.clone()).collect();
    let (transit_progress, reporter_progress) =
        (Progress::new(emails.clone()), Progress::new(emails));
    let transit = Transit {
        producer: producer.clone(),
        progress: transit_progress.clone(),
    };
    let reporter = Reporter {
        progress: reporter_progress.clone(),
    };
    let transit = channel
        .subscribe("transit", "transit-1", None, transit)
        .await?;
    let reporter = channel
        .subscribe("reporter", "reporter-1", None, reporter)
        .await?;

    for (user, product) in placed {
        producer.order_placed(user, product, now()).await?;
    }
    transit_progress.all_received.notified().await;
    reporter_progress.all_received.notified().await;
    transit.shutdown().await?;
    reporter.shutdown().await?;
    println!("all {orders} orders received");
    Ok(())
}
