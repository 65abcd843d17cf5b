//! Every generated public item is documented, with or without docs on the trait.
#![deny(missing_docs, warnings)]

use backbone_core::events_contract;

#[events_contract]
pub trait Undocumented {
    async fn created(&self, id: u64, name: String);
    #[event(version = 2)]
    async fn deleted(&self);
}

/// Documented contract.
#[events_contract]
pub trait Documented {
    /// Something was created.
    ///
    /// With a second paragraph.
    async fn created(&self, id: u64);
}

fn main() {}
