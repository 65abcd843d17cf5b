use backbone_core::events_contract;

#[events_contract]
pub trait Generic<T> {
    async fn created(&self, value: T);
}

#[events_contract]
pub trait WithWhere
where
    Self: Sized,
{
    async fn created(&self, id: u64);
}

#[events_contract]
pub trait WithSupertraits: Clone + Send {
    async fn created(&self, id: u64);
}

#[events_contract]
pub unsafe trait Unsafe {
    async fn created(&self, id: u64);
}

#[events_contract]
pub auto trait Auto {}

/// Docs are fine; other attributes are not.
#[events_contract]
#[must_use]
#[event(name = "x")]
pub trait Attributes {
    async fn created(&self, id: u64);
}

fn main() {}
