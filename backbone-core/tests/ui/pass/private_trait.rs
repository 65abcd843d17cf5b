//! Private and crate-visible contracts compile without warnings (such as dead code), even
//! when only one side of the contract is used.
#![deny(warnings)]

use backbone_core::events_contract;

#[events_contract]
trait Internal {
    async fn tick(&self, count: u32);
}

mod inner {
    use backbone_core::events_contract;

    /// Visible to the crate only.
    #[events_contract]
    pub(crate) trait Audit {
        async fn logged(&self, line: String);
    }
}

fn main() {
    let _ = InternalEvent::Tick { count: 1 };
    let _ = inner::AuditEvent::Logged { line: "x".into() };
}
