//! One operation name in several versions, raw identifiers, keyword-like names, lint
//! attributes, several `#[event]` attributes, and many parameters.
#![deny(warnings)]

use backbone_core::{events_contract, ContractEvent};

#[events_contract]
#[allow(clippy::large_enum_variant)]
pub trait Catalog {
    async fn priced(&self, sku: String, cents: u64);
    #[event(name = "priced", version = 1)]
    async fn priced_v1(&self, sku: String, cents: u64, currency: String);
    #[event(name = "priced")]
    #[event(version = 2)]
    #[allow(unused)]
    async fn priced_v2(&self, r#type: String, r#match: Option<u32>);
    async fn r#move(&self, from: String, to: String);
    #[event(version = 4294967295)]
    async fn bulk(
        &self,
        a: u8,
        b: u16,
        c: u32,
        d: u64,
        e: Vec<String>,
        f: std::collections::BTreeMap<String, u32>,
        g: (u8, bool),
        h: [u8; 4],
        i: std::borrow::Cow<'static, str>,
    );
}

fn main() {
    let ops: Vec<_> = CatalogEvent::OPERATIONS
        .iter()
        .map(|op| (op.name, op.version))
        .collect();
    assert_eq!(
        ops,
        [
            ("priced", 0),
            ("priced", 1),
            ("priced", 2),
            ("move", 0),
            ("bulk", u32::MAX)
        ]
    );
    assert_eq!(CatalogEvent::OPERATIONS[2].parameters, ["type", "match"]);
    let event = CatalogEvent::Move {
        from: "a".into(),
        to: "b".into(),
    };
    assert_eq!(event.operation().name, "move");
    let fields = event.encode().unwrap();
    assert!(CatalogEvent::decode("move", 0, &fields).is_ok());
}
