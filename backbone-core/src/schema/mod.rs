//! Schemas of contracts (feature `schema`): a JSON Schema per operation and version, an
//! [AsyncAPI 3.0](asyncapi) document per channel, and a [compatibility check](compat) against a
//! schema saved earlier.
//!
//! A contract asks for it with `#[events_contract(schema)]`, and its parameter types derive
//! [`schemars::JsonSchema`]; the macro then implements [`ContractSchema`] for it. (Per contract
//! rather than for every contract once the feature is on: features unify across a build, and
//! one dependency turning it on must not break the contracts of others.)
//!
//! ```
//! use backbone_core::{events_contract, schema};
//!
//! #[events_contract(schema)]
//! pub trait Parcels {
//!     async fn packing(&self, product_id: u64, email: Option<String>);
//! }
//!
//! let ops = schema::operation_schemas::<Parcels>();
//! assert_eq!(ops[0].name, "packing");
//! assert_eq!(ops[0].schema["required"], serde_json::json!(["product_id"]));
//! ```

pub mod asyncapi;
pub mod compat;

pub use schemars;
pub use schemars::{Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::Contract;

/// One parameter's schema, as the generated [`ContractSchema`] impl gives it.
#[derive(Debug, Clone)]
pub struct ParameterSchema {
    /// The parameter's name (its field in the payload).
    pub name: &'static str,
    /// Whether an event must carry it (every parameter but `Option`s).
    pub required: bool,
    /// Its JSON Schema.
    pub schema: Schema,
}

/// The schema of a `#[personal]` parameter on the wire: a sealed value (see
/// [`personal`](crate::personal)) whose plaintext is the JSON of `plain`, kept under
/// `x-backbone-personal` for reference.
///
/// ```
/// let plain = schemars::json_schema!({ "type": "string" });
/// let sealed = backbone_core::schema::personal_schema(plain);
/// assert_eq!(sealed.as_value()["type"], "string");
/// assert_eq!(sealed.as_value()["x-backbone-personal"]["type"], "string");
/// ```
pub fn personal_schema(plain: Schema) -> Schema {
    let value = json!({
        "type": "string",
        "pattern": "^v1\\.[0-9a-f]{16}\\.[A-Za-z0-9+/]+$",
        "description": "personal data, sealed with the data subject's key \
            (v1.<key id>.<base64 of nonce, AES-256-GCM ciphertext and tag>); \
            x-backbone-personal is the schema of its plaintext",
        "x-backbone-personal": plain.to_value(),
    });
    Schema::try_from(value).expect("an object is a schema")
}

/// What `#[events_contract]` implements for a contract when the `schema` feature is on.
pub trait ContractSchema: Contract {
    /// The parameters of each operation, in the order of [`Contract::OPERATIONS`].
    fn parameter_schemas(generator: &mut SchemaGenerator) -> Vec<Vec<ParameterSchema>>;

    /// The doc comment of each operation, in the same order.
    fn descriptions() -> &'static [Option<&'static str>];
}

/// One operation's JSON Schema (draft 07): an object with one property per parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationSchema {
    /// The operation's name.
    pub name: &'static str,
    /// Its version.
    pub version: u32,
    /// Why it is deprecated, if it is.
    pub deprecated: Option<&'static str>,
    /// Its upcaster, if it has one.
    pub upcast: Option<&'static str>,
    /// Its doc comment.
    pub description: Option<&'static str>,
    /// The payload's schema.
    pub schema: Value,
}

/// A generator that inlines every subschema (each operation's schema stands alone).
fn generator() -> SchemaGenerator {
    schemars::generate::SchemaSettings::draft07()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
}

/// The JSON Schema of every operation and version of `C`, in declaration order.
pub fn operation_schemas<C: ContractSchema>() -> Vec<OperationSchema> {
    let mut generator = generator();
    let params = C::parameter_schemas(&mut generator);
    let descriptions = C::descriptions();
    C::OPERATIONS
        .iter()
        .zip(params)
        .enumerate()
        .map(|(i, (op, params))| {
            let mut properties = Map::new();
            let mut required = Vec::new();
            for p in params {
                if p.required {
                    required.push(Value::from(p.name));
                }
                properties.insert(p.name.to_owned(), p.schema.to_value());
            }
            let mut schema = json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "title": format!("{}.{} v{}", C::NAME, op.name, op.version),
                "type": "object",
                "properties": properties,
                "required": required,
            });
            if let Some(why) = op.deprecated {
                schema["deprecated"] = Value::Bool(true);
                schema["description"] = Value::from(format!("Deprecated: {why}"));
            }
            OperationSchema {
                name: op.name,
                version: op.version,
                deprecated: op.deprecated,
                upcast: op.upcast,
                description: descriptions.get(i).copied().flatten(),
                schema,
            }
        })
        .collect()
}

/// The contract as a compatibility check saves it: its name, and each operation with its
/// version, deprecation, upcaster and schema.
pub fn contract_document<C: ContractSchema>() -> Value {
    let operations: Vec<Value> = operation_schemas::<C>()
        .into_iter()
        .map(|op| {
            json!({
                "name": op.name,
                "version": op.version,
                "deprecated": op.deprecated,
                "upcast": op.upcast,
                "schema": op.schema,
            })
        })
        .collect();
    json!({ "contract": C::NAME, "operations": operations })
}
