use backbone_core::events_contract;

#[events_contract]
pub trait Receivers {
    async fn no_receiver(id: u64);
    async fn by_value(self, id: u64);
    async fn by_mut_ref(&mut self, id: u64);
    async fn boxed(self: Box<Self>, id: u64);
    async fn empty();
}

fn main() {}
