use backbone_core::events_contract;

#[events_contract]
pub struct Orders {
    id: u64,
}

#[events_contract]
pub enum Payments {
    Paid,
}

#[events_contract]
pub async fn shipped(id: u64) {}

fn main() {}
