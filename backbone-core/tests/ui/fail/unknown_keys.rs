use backbone_core::events_contract;

#[events_contract(krate = "::backbone_core", retries = 3)]
pub trait Keys {
    #[event(version = 1, since = "2024")]
    async fn a(&self, id: u64);
    #[event(name = 5)]
    async fn b(&self, id: u64);
    #[event(version = "1")]
    async fn c(&self, id: u64);
    #[event(version = -1)]
    async fn d(&self, id: u64);
    #[event(version = 4294967296)]
    async fn e(&self, id: u64);
    #[event(name = "")]
    async fn f(&self, id: u64);
    #[event(name = "g", name = "h")]
    async fn g(&self, id: u64);
    #[event]
    async fn h(&self, id: u64);
    #[inline]
    async fn i(&self, id: u64);
}

#[events_contract(crate = "not a path")]
pub trait BadCratePath {}

#[events_contract(crate = backbone_core)]
pub trait UnquotedCratePath {}

fn main() {}
