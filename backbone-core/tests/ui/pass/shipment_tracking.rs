//! The full example: serde-derived parameter types, versions, renames, a zero-parameter
//! operation, and a consumer implementation.

use backbone_core::{
    async_trait, events_contract, ConsumerContext, Contract, ContractEvent, HandlerResult,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub email: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Product {
    pub id: u64,
    pub name: String,
}

/// Tracks shipments.
#[events_contract]
pub trait ShipmentTracking {
    /// An order was placed.
    async fn order_placed(&self, user: User, product: Product, time: u64);
    #[event(version = 1)]
    async fn packing(&self, email: String, product_id: u64, time: u64);
    #[event(name = "delivered")]
    async fn on_delivery(&self, email: String, product_id: u64, time: u64);
    async fn ping(&self);
}

struct Warehouse;

#[async_trait]
impl ShipmentTrackingConsumer for Warehouse {
    async fn order_placed(
        &self,
        ctx: &ConsumerContext,
        user: User,
        product: Product,
        time: u64,
    ) -> HandlerResult {
        println!(
            "{} ordered {} at {time} ({})",
            user.email,
            product.name,
            ctx.metadata().message_id
        );
        Ok(())
    }

    async fn packing(
        &self,
        _ctx: &ConsumerContext,
        _email: String,
        _product_id: u64,
        _time: u64,
    ) -> HandlerResult {
        Ok(())
    }

    async fn on_delivery(
        &self,
        _ctx: &ConsumerContext,
        _email: String,
        _product_id: u64,
        _time: u64,
    ) -> HandlerResult {
        Ok(())
    }

    async fn ping(&self, _ctx: &ConsumerContext) -> HandlerResult {
        Ok(())
    }
}

fn assert_consumer<H: ShipmentTrackingConsumer>(_: &H) {}

fn main() {
    assert_consumer(&Warehouse);
    let names: Vec<_> = ShipmentTracking::OPERATIONS
        .iter()
        .map(|op| (op.name, op.version))
        .collect();
    assert_eq!(
        names,
        [
            ("order_placed", 0),
            ("packing", 1),
            ("delivered", 0),
            ("ping", 0)
        ]
    );
    assert_eq!(ShipmentTrackingEvent::Ping {}.operation().name, "ping");
    let _: fn(backbone_core::Producer) -> ShipmentTrackingProducer = ShipmentTrackingProducer::new;
}
