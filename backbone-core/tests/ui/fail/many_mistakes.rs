use backbone_core::events_contract;

// Every mistake is reported in one compilation.
#[events_contract(crate = "::backbone_core", debug)]
pub trait Orders<T>: Send {
    const MAX: u32;
    fn placed(&self, id: u64) -> u64;
    async fn paid(self, amount: &str, ctx: u64) {}
    #[event(version = "2", label = "x")]
    async fn shipped(&self, (a, b): (u32, u32), item: impl Clone);
    #[event(name = "paid")]
    async fn refunded(&self, id: u64);
}

fn main() {}
