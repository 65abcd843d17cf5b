//! Operations without parameters, and a contract without operations.
#![deny(warnings)]

use backbone_core::{
    async_trait, events_contract, ConsumerContext, Contract, ContractEvent, HandlerResult,
};

#[events_contract]
pub trait Heartbeat {
    async fn ping(&self);
    async fn pong(&self);
}

#[events_contract]
pub trait Nothing {}

struct Monitor;

#[async_trait]
impl HeartbeatConsumer for Monitor {
    async fn ping(&self, _ctx: &ConsumerContext) -> HandlerResult {
        Ok(())
    }

    async fn pong(&self, _ctx: &ConsumerContext) -> HandlerResult {
        Ok(())
    }
}

struct Idle;

#[async_trait]
impl NothingConsumer for Idle {}

fn main() {
    let _ = (Monitor, Idle);
    assert!(HeartbeatEvent::Pong {}.encode().unwrap().is_empty());
    assert!(HeartbeatEvent::decode("ping", 0, &Default::default()).is_ok());
    assert!(Nothing::OPERATIONS.is_empty());
    assert!(NothingEvent::decode("ping", 0, &Default::default()).is_err());
}
