//! An [AsyncAPI 3.0](https://www.asyncapi.com/docs/reference/specification/v3.0.0) document of
//! a contract on one channel: the stream as the channel, one message per (operation, version),
//! the entry fields as the message headers, the parameters as the payload, deprecations marked.
//!
//! ```
//! use backbone_core::{events_contract, schema, StreamAddress};
//!
//! #[events_contract(schema)]
//! pub trait Parcels {
//!     #[event(deprecated = "send packing v1")]
//!     async fn packing(&self, product_id: u64);
//! }
//!
//! let address = StreamAddress::new(Some("prod"), "parcels").unwrap();
//! let doc = schema::asyncapi::document::<Parcels>(&address);
//! assert_eq!(doc["asyncapi"], "3.0.0");
//! assert_eq!(doc["channels"]["prod_parcels"]["address"], "bb:{prod:parcels}:events");
//! assert_eq!(doc["components"]["messages"]["packing.v0"]["payload"]["deprecated"], true);
//! ```

use serde_json::{json, Map, Value};

use super::{operation_schemas, ContractSchema};
use crate::StreamAddress;

/// The message id of an operation in the document: `<name>.v<version>`.
pub fn message_id(name: &str, version: u32) -> String {
    format!("{}.v{version}", sanitize(name))
}

/// Keys of AsyncAPI maps hold only letters, digits, `.`, `-` and `_`.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') => c,
            _ => '_',
        })
        .collect()
}

/// The entry fields of one operation's events (the wire format's), as a header schema.
fn headers(name: &str, version: u32) -> Value {
    json!({
        "type": "object",
        "properties": {
            "message_id": { "type": "string", "format": "uuid", "description": "The event's id (UUID, v7 recommended)." },
            "operation": { "type": "string", "const": name },
            "version": { "type": "string", "const": version.to_string(), "description": "The operation's version, in decimal." },
            "produced_at": { "type": "string", "pattern": "^[0-9]+$", "description": "Milliseconds since the Unix epoch, in decimal." },
            "payload": { "type": "string", "description": "The key of the payload hash (absent for operations without parameters)." },
            "key": { "type": "string", "description": "The ordering key." },
            "correlation_id": { "type": "string", "description": "The workflow; absent: the message id." },
            "causation_id": { "type": "string", "description": "The message id of the event whose handler sent this one." },
            "traceparent": { "type": "string", "description": "W3C trace context of the sending span." },
            "tracestate": { "type": "string" },
            "subject": { "type": "string", "description": "The data subject whose keys seal the personal parameters." },
            "personal": { "type": "string", "description": "The sealed parameters, comma-separated." },
            "aggregate": { "type": "string", "description": "Event-store events: the aggregate." },
            "aggregate_version": { "type": "string", "pattern": "^[0-9]+$" },
        },
        "patternProperties": {
            "^header\\.": { "type": "string", "description": "A user header." }
        },
        "required": ["message_id", "operation", "version", "produced_at"],
    })
}

/// The AsyncAPI 3.0 document of contract `C` on the stream at `address`.
pub fn document<C: ContractSchema>(address: &StreamAddress) -> Value {
    let channel = sanitize(&address.to_string());
    let tag = address.to_string();
    let mut channel_messages = Map::new();
    let mut messages = Map::new();
    let mut refs = Vec::new();
    for op in operation_schemas::<C>() {
        let id = message_id(op.name, op.version);
        let mut message = json!({
            "name": op.name,
            "title": format!("{} v{}", op.name, op.version),
            "contentType": "application/json",
            "headers": headers(op.name, op.version),
            "payload": op.schema,
            "correlationId": { "location": "$message.header#/correlation_id" },
            "x-backbone-version": op.version,
        });
        if let Some(text) = op.description {
            message["summary"] = Value::from(text.trim());
        }
        if let Some(why) = op.deprecated {
            message["x-backbone-deprecated"] = Value::from(why);
        }
        if let Some(upcaster) = op.upcast {
            message["x-backbone-upcast"] = Value::from(upcaster);
        }
        messages.insert(id.clone(), message);
        channel_messages.insert(
            id.clone(),
            json!({ "$ref": format!("#/components/messages/{id}") }),
        );
        refs.push(json!({ "$ref": format!("#/channels/{channel}/messages/{id}") }));
    }
    let channel_ref = json!({ "$ref": format!("#/channels/{channel}") });
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": C::NAME,
            "version": "1.0.0",
            "description": format!(
                "The backbone contract {} on the stream {tag}: each event is an entry of the \
                 stream (its headers) and a hash holding its parameters (its payload).",
                C::NAME
            ),
        },
        "defaultContentType": "application/json",
        "channels": {
            channel.clone(): {
                "address": format!("bb:{{{tag}}}:events"),
                "title": tag,
                "description": "A Redis stream; consumers read it through consumer groups.",
                "messages": channel_messages,
            }
        },
        "operations": {
            "send": {
                "action": "send",
                "channel": channel_ref,
                "summary": format!("Producers of {}.", C::NAME),
                "messages": refs,
            },
            "receive": {
                "action": "receive",
                "channel": channel_ref,
                "summary": format!("Consumers of {} (one group each).", C::NAME),
                "messages": refs,
            },
        },
        "components": { "messages": messages },
    })
}
