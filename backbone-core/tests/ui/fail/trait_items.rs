use backbone_core::events_contract;

#[events_contract]
pub trait Items {
    const LIMIT: u32;
    type Payload;
    nothing!();
    async fn created(&self, id: u64);
}

fn main() {}
