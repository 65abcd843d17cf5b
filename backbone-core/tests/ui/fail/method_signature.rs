use backbone_core::events_contract;

#[events_contract]
pub trait Signatures {
    fn not_async(&self, id: u64);
    async fn generic<T>(&self, value: T);
    async fn with_body(&self, id: u64) {
        let _ = id;
    }
    async fn returns(&self, id: u64) -> Result<(), String>;
    async fn where_clause(&self, id: u64)
    where
        Self: Sized;
}

fn main() {}
