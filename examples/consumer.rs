//! The consuming half of the two-process shipment example: prints every event it receives as
//! consumer `reporter-1` of group `reporter`, until Ctrl-C or, if given, that many events.
//!
//! ```text
//! cargo run --example consumer            # until Ctrl-C
//! cargo run --example consumer -- 10      # stop after 10 events
//! ```
//! Uses `$REDIS_URL`, else `redis://127.0.0.1:6379`, and the TLS variables for `rediss://`.
//! Restarted, it first handles what it left pending, then continues where the group stopped.

mod shipment;

use backbone_core::{async_trait, ConsumerContext, HandlerResult};
use backbone_redis::RedisConsumerBuilder;
use shipment::*;

struct Printer;

#[async_trait]
impl ShipmentTrackingConsumer for Printer {
    async fn order_placed(
        &self,
        ctx: &ConsumerContext,
        user: User,
        product: Product,
        time: u64,
    ) -> HandlerResult {
        println!(
            "[{}] {time}: {} ordered {} ({} cents)",
            ctx.metadata().stream_id,
            user.name,
            product.name,
            product.price_cents
        );
        Ok(())
    }
    async fn packing(
        &self,
        ctx: &ConsumerContext,
        email: String,
        product_id: u64,
        time: u64,
    ) -> HandlerResult {
        println!(
            "[{}] {time}: packing {product_id} for {email}",
            ctx.metadata().stream_id
        );
        Ok(())
    }
    async fn on_delivery(
        &self,
        ctx: &ConsumerContext,
        email: String,
        product_id: u64,
        time: u64,
    ) -> HandlerResult {
        println!(
            "[{}] {time}: {product_id} on its way to {email}",
            ctx.metadata().stream_id
        );
        Ok(())
    }
    async fn on_received(
        &self,
        ctx: &ConsumerContext,
        email: String,
        product_id: u64,
        time: u64,
    ) -> HandlerResult {
        println!(
            "[{}] {time}: {email} received {product_id}",
            ctx.metadata().stream_id
        );
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let max = count_arg("events")?;
    let mut builder = RedisConsumerBuilder::new()
        .environment(ENVIRONMENT)
        .uri(URI)
        .group("reporter")
        .name("reporter-1");
    if let Some(max) = max {
        builder = builder.max_messages(max);
    }
    let lifetime = builder
        .subscribe_shipment_tracking_consumer(Printer)
        .await?;
    eprintln!("consuming {ENVIRONMENT}/{URI} as reporter/reporter-1; Ctrl-C to stop");
    if max.is_some() {
        lifetime.completion().await?;
    } else {
        tokio::signal::ctrl_c().await?;
        lifetime.shutdown().await?;
    }
    Ok(())
}
