use backbone_core::events_contract;

#[events_contract]
pub trait Duplicates {
    async fn delivered(&self, id: u64);
    #[event(name = "delivered")]
    async fn on_delivery(&self, id: u64);
    #[event(name = "packed", version = 1)]
    async fn packed_v1(&self, id: u64);
    #[event(version = 1)]
    async fn packed(&self, id: u64);
    async fn shipped_v2(&self, id: u64);
    #[event(name = "shipped_v2_again")]
    async fn shipped_v_2(&self, id: u64);
}

fn main() {}
