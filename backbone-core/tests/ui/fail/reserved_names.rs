use backbone_core::events_contract;

#[events_contract]
pub trait Reserved {
    async fn new(&self, id: u64);
    async fn producer(&self, id: u64);
    async fn with_key(&self, id: u64);
    async fn with_header(&self, id: u64);
    async fn caused_by(&self, id: u64);
    async fn fallback(&self, id: u64);
    async fn foo_bar(&self, id: u64);
    #[event(name = "foo_bar_2")]
    async fn foo__bar(&self, id: u64);
}

fn main() {}
