use backbone_core::events_contract;

#[events_contract]
pub trait Parcels {
    #[event(deprecated = "")]
    async fn a(&self, product_id: u64);
    #[event(deprecated = 3)]
    async fn b(&self, product_id: u64);
    #[event(upcast = "b_to_c")]
    async fn c(&self, product_id: u64);
    #[event(upcast = f, upcast = g)]
    async fn d(&self, product_id: u64);
    #[event(renamed = "x")]
    async fn e(&self, product_id: u64);
}

fn main() {}
