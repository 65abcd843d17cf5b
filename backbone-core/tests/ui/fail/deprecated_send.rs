#![deny(deprecated)]

use backbone_core::events_contract;
use backbone_core::memory::InMemoryBroker;

#[events_contract]
pub trait Parcels {
    #[event(deprecated = "send `packing` v1 instead")]
    async fn packing(&self, product_id: u64);
}

async fn send(producer: ParcelsProducer) {
    // A deprecated operation still sends, with a warning (an error under deny).
    let _ = producer.packing(1).await;
}

fn main() {
    let _ = InMemoryBroker::new();
    let _ = send;
}
