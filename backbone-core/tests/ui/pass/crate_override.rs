//! `crate = "..."` points the generated code at backbone-core through another path.

use backbone_core as renamed_core;
use backbone_core::{events_contract, Contract};

#[events_contract(crate = "::backbone_core")]
pub trait Explicit {
    async fn hello(&self, name: String);
}

#[events_contract(crate = "renamed_core")]
pub trait Renamed {
    async fn hello(&self, name: String);
}

mod nested {
    pub mod api {
        pub use backbone_core as core;
    }
}

#[events_contract(crate = "crate::nested::api::core")]
pub trait Nested {
    async fn hello(&self, name: String);
}

fn main() {
    assert_eq!(Explicit::NAME, "Explicit");
    assert_eq!(Renamed::NAME, "Renamed");
    assert_eq!(Nested::OPERATIONS[0].parameters, ["name"]);
}
