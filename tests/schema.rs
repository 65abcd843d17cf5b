//! Schemas (feature `schema`, on for the tests): a JSON Schema per operation and version, an
//! AsyncAPI 3.0 document validated against the official AsyncAPI 3.0 JSON Schema (vendored in
//! `tests/fixtures/`), and the compatibility check, rule by rule.

use backbone_core::schema::{self, asyncapi, compat};
use backbone_core::{events_contract, StreamAddress};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A parameter type with nesting.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Address {
    pub street: String,
    pub zip: Option<u32>,
}

#[events_contract(schema)]
pub trait Parcels {
    /// The warehouse packs a parcel.
    #[event(name = "packing", version = 0, upcast = packing_v0)]
    async fn packing_v0(&self, product_id: u64);
    #[event(name = "packing", version = 1)]
    async fn packing(&self, product_id: u64, to: Address, note: Option<String>);
    #[event(deprecated = "send `packing` v1")]
    async fn packed(&self, product_id: u64);
    async fn ping(&self);
}

fn packing_v0(product_id: u64) -> Result<ParcelsEvent, std::convert::Infallible> {
    Ok(ParcelsEvent::Packing {
        product_id,
        to: Address {
            street: "?".into(),
            zip: None,
        },
        note: None,
    })
}

#[test]
fn each_operation_and_version_has_a_json_schema() {
    let ops = schema::operation_schemas::<Parcels>();
    let names: Vec<String> = ops
        .iter()
        .map(|o| format!("{} v{}", o.name, o.version))
        .collect();
    assert_eq!(names, ["packing v0", "packing v1", "packed v0", "ping v0"]);
    let v1 = &ops[1].schema;
    assert_eq!(v1["type"], "object");
    assert_eq!(
        v1["required"],
        json!(["product_id", "to"]),
        "an Option is not required"
    );
    assert_eq!(v1["properties"]["product_id"]["type"], "integer");
    assert_eq!(
        v1["properties"]["to"]["properties"]["street"]["type"], "string",
        "nested types are inlined"
    );
    assert_eq!(ops[0].description, Some("The warehouse packs a parcel."));
    assert_eq!(ops[0].upcast, Some("packing_v0"));
    assert_eq!(ops[2].schema["deprecated"], true);
    assert_eq!(ops[3].schema["properties"], json!({}));
}

#[events_contract(schema)]
pub trait Members {
    async fn joined(&self, #[subject] member: String, #[personal] email: String, plan: String);
}

#[test]
fn a_personal_parameter_is_a_sealed_string_with_its_plain_schema_beside() {
    let ops = schema::operation_schemas::<Members>();
    let email = &ops[0].schema["properties"]["email"];
    assert_eq!(email["type"], "string");
    assert!(
        email["pattern"].as_str().unwrap().starts_with("^v1"),
        "{email}"
    );
    assert_eq!(email["x-backbone-personal"]["type"], "string");
    assert_eq!(ops[0].schema["properties"]["plan"]["type"], "string");
    let doc = asyncapi::document::<Members>(&StreamAddress::new(None, "members").unwrap());
    let found = errors(&asyncapi_validator(), &doc);
    assert!(found.is_empty(), "{found:#?}");
    let headers = &doc["components"]["messages"]["joined.v0"]["headers"]["properties"];
    assert_eq!(headers["subject"]["type"], "string");
}

fn asyncapi_validator() -> jsonschema::Validator {
    let text = include_str!("fixtures/asyncapi-3.0.0.schema.json");
    let schema: Value = serde_json::from_str(text).unwrap();
    jsonschema::draft7::new(&schema).expect("the official AsyncAPI 3.0 schema compiles")
}

fn errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn the_asyncapi_document_validates_against_the_official_schema() {
    let validator = asyncapi_validator();
    let address = StreamAddress::new(Some("prod"), "parcels").unwrap();
    let doc = asyncapi::document::<Parcels>(&address);
    let found = errors(&validator, &doc);
    assert!(found.is_empty(), "{found:#?}\n{doc:#}");

    let channel = &doc["channels"]["prod_parcels"];
    assert_eq!(channel["address"], "bb:{prod:parcels}:events");
    let messages = &doc["components"]["messages"];
    for id in ["packing.v0", "packing.v1", "packed.v0", "ping.v0"] {
        assert!(channel["messages"].get(id).is_some(), "{id} in the channel");
        assert!(messages.get(id).is_some(), "{id} in the components");
    }
    assert_eq!(messages["packed.v0"]["payload"]["deprecated"], true);
    assert_eq!(
        messages["packed.v0"]["x-backbone-deprecated"],
        "send `packing` v1"
    );
    assert_eq!(
        messages["packing.v1"]["headers"]["properties"]["operation"]["const"],
        "packing"
    );
    assert_eq!(
        messages["packing.v0"]["summary"],
        "The warehouse packs a parcel."
    );

    // The validator does reject what is not AsyncAPI 3.0.
    let mut broken = doc.clone();
    broken["asyncapi"] = json!("2.6.0");
    broken["channels"]["prod_parcels"]["messages"]["packing.v0"] = json!(42);
    assert!(
        errors(&validator, &broken).len() >= 2,
        "the validator validates"
    );
}

/// The saved form of a contract, as a compatibility check writes it.
fn saved<C: schema::ContractSchema>() -> Value {
    schema::contract_document::<C>()
}

/// The breaking and the safe changes, as texts.
type Changes = (Vec<String>, Vec<String>);

fn compare<Old: schema::ContractSchema, New: schema::ContractSchema>() -> Changes {
    let changes = compat::compare(&saved::<Old>(), &saved::<New>());
    let (breaking, safe): (Vec<_>, Vec<_>) = changes.into_iter().partition(|c| c.breaking);
    let text = |v: Vec<compat::Change>| v.into_iter().map(|c| c.what).collect::<Vec<_>>();
    (text(breaking), text(safe))
}

/// The contract as it was, and its changes, each in a module of its own (one contract name).
mod before {
    use super::*;
    #[events_contract(schema)]
    pub trait Orders {
        async fn placed(&self, order: u64, total: u64, note: Option<String>);
        #[event(deprecated = "send `placed`")]
        async fn created(&self, order: u64);
        async fn cancelled(&self, order: u64);
    }
}

mod safe {
    use super::*;
    #[events_contract(schema)]
    pub trait Orders {
        /// Docs change nothing.
        async fn placed(
            &self,
            order: u64,
            total: u64,
            note: Option<String>,
            coupon: Option<String>,
        );
        #[event(deprecated = "cancellations are refunds now")]
        async fn cancelled(&self, order: u64);
        async fn refunded(&self, order: u64, amount: u64);
        #[event(name = "placed", version = 1)]
        async fn placed_v1(&self, order: u64, total: u64, currency: String);
    }
}

mod removed_undeprecated {
    use super::*;
    #[events_contract(schema)]
    pub trait Orders {
        async fn placed(&self, order: u64, total: u64, note: Option<String>);
        #[event(deprecated = "send `placed`")]
        async fn created(&self, order: u64);
    }
}

mod parameter_removed {
    use super::*;
    #[events_contract(schema)]
    pub trait Orders {
        async fn placed(&self, order: u64, note: Option<String>);
        #[event(deprecated = "send `placed`")]
        async fn created(&self, order: u64);
        async fn cancelled(&self, order: u64);
    }
}

mod type_changed {
    use super::*;
    #[events_contract(schema)]
    pub trait Orders {
        async fn placed(&self, order: String, total: u64, note: Option<String>);
        #[event(deprecated = "send `placed`")]
        async fn created(&self, order: u64);
        async fn cancelled(&self, order: u64);
    }
}

mod required_added {
    use super::*;
    #[events_contract(schema)]
    pub trait Orders {
        async fn placed(&self, order: u64, total: u64, note: Option<String>, currency: String);
        #[event(deprecated = "send `placed`")]
        async fn created(&self, order: u64);
        async fn cancelled(&self, order: u64);
    }
}

mod became_required {
    use super::*;
    #[events_contract(schema)]
    pub trait Orders {
        async fn placed(&self, order: u64, total: u64, note: String);
        #[event(deprecated = "send `placed`")]
        async fn created(&self, order: u64);
        async fn cancelled(&self, order: u64);
    }
}

#[test]
fn safe_changes_pass() {
    let (breaking, safe) = compare::<before::Orders, safe::Orders>();
    assert!(breaking.is_empty(), "{breaking:#?}");
    assert_eq!(
        safe,
        [
            "new optional parameter `coupon` of operation `placed` v0",
            "operation `created` v0 was removed (it was deprecated)",
            "operation `cancelled` v0 is now deprecated",
            "new operation `refunded` v0",
            "new operation `placed` v1",
        ]
    );
    let (breaking, safe) = compare::<before::Orders, before::Orders>();
    assert!(breaking.is_empty() && safe.is_empty());
}

#[test]
fn each_breaking_rule_fails() {
    let cases: [(&str, Changes); 5] = [
        (
            "operation `cancelled` v0 was removed without first being deprecated: events of it \
             in the stream can no longer be read",
            compare::<before::Orders, removed_undeprecated::Orders>(),
        ),
        (
            "parameter `total` of operation `placed` v0 was removed: readers of the old contract \
             miss it in new events",
            compare::<before::Orders, parameter_removed::Orders>(),
        ),
        (
            "parameter `order` of operation `placed` v0 changed type: \
             {\"format\":\"uint64\",\"minimum\":0,\"type\":\"integer\"} became {\"type\":\"string\"}",
            compare::<before::Orders, type_changed::Orders>(),
        ),
        (
            "new parameter `currency` of operation `placed` v0 is not optional: events written \
             before lack it (make it an `Option`, or add a new version and an upcaster)",
            compare::<before::Orders, required_added::Orders>(),
        ),
        (
            "parameter `note` of operation `placed` v0 changed type: \
             {\"type\":[\"string\",\"null\"]} became {\"type\":\"string\"}",
            compare::<before::Orders, became_required::Orders>(),
        ),
    ];
    for (expected, (breaking, _)) in cases {
        assert_eq!(breaking, [expected]);
    }
}

#[test]
fn the_check_writes_the_file_first_then_fails_on_a_breaking_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schemas/orders.json");
    let first = compat::check::<before::Orders>(&path).unwrap();
    assert!(first.written && first.changes.is_empty());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"contract\": \"Orders\""), "{text}");
    // A safe change passes and updates the file; a breaking one fails and leaves it.
    compat::assert_compatible::<safe::Orders>(&path);
    assert!(std::fs::read_to_string(&path).unwrap().contains("refunded"));
    let failed = std::panic::catch_unwind(|| {
        compat::assert_compatible::<removed_undeprecated::Orders>(&path);
    })
    .unwrap_err();
    let message = failed.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("contract Orders breaks readers of"),
        "{message}"
    );
    assert!(
        message.contains("operation `refunded` v0 was removed without first being deprecated"),
        "{message}"
    );
    assert!(std::fs::read_to_string(&path).unwrap().contains("refunded"));
}

#[path = "../examples/shipment/mod.rs"]
mod shipment;

#[test]
fn the_shipment_example_document_validates() {
    let address = StreamAddress::new(Some(shipment::ENVIRONMENT), shipment::URI).unwrap();
    let doc = asyncapi::document::<shipment::ShipmentTracking>(&address);
    let found = errors(&asyncapi_validator(), &doc);
    assert!(found.is_empty(), "{found:#?}");
    assert_eq!(doc["components"]["messages"].as_object().unwrap().len(), 4);
}
