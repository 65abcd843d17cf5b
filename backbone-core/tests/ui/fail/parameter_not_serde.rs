use backbone_core::events_contract;

#[derive(Debug, Clone)]
pub struct NotSerde {
    pub id: u64,
}

#[events_contract]
pub trait Orders {
    async fn placed(&self, item: NotSerde);
}

fn main() {}
