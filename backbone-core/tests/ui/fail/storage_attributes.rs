use backbone_core::events_contract;

#[events_contract(storage = "s3")]
pub trait Customers {
    #[event(storage = 1)]
    async fn a(&self, #[subject] customer: String, #[personal] email: String);
    #[event(storage = "inline", storage = "hash")]
    async fn b(&self, #[personal] #[subject] email: String);
    async fn c(&self, #[subject] first: String, #[subject] second: String);
    async fn d(&self, #[personal(ttl = 3)] email: String, #[secret] pin: u32);
    async fn with_subject(&self, #[personal] #[personal] email: String);
    async fn e(&self, #[personal(ttl = "0d")] a: String, #[personal(keep = "1d")] b: String);
    async fn f(&self, #[personal(ttl = "12w")] a: String, #[subject(x)] s: String);
}

fn main() {}
