//! How an entry's parameters kept in an object store are shown: as the reference their fields
//! hold (size and SHA-256), never fetched (the command has no object store).

use backbone_core::objects::{parse_names, parse_reference};
use backbone_redis::entry::OBJECTS;
use serde_json::{Map, Value};

/// How many hex digits of an object's SHA-256 people see.
const SHORT_DIGEST: usize = 12;

/// The parameters the entry document `doc` keeps in an object store (its `objects` field);
/// none when it has no such field or the field is malformed (they then show as they are).
pub fn names(doc: &Map<String, Value>) -> Vec<String> {
    let field = doc.get(OBJECTS).and_then(Value::as_str);
    field.and_then(|f| parse_names(f).ok()).unwrap_or_default()
}

/// Replaces each parameter of the entry document `doc` kept in an object store by the
/// reference its field holds: `{"object": {"size": 70000, "sha256": "…"}}` in JSON,
/// `<object 70000 bytes sha256:ab12cd34ef56…>` for people; a field that is no reference says
/// why.
pub fn describe(doc: &mut Map<String, Value>, json: bool) {
    let names = names(doc);
    let Some(Value::Object(parameters)) = doc.get_mut("parameters") else {
        return;
    };
    for name in names {
        let Some(value) = parameters.get_mut(&name) else {
            continue;
        };
        let field = match &*value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        *value = match parse_reference(field.as_bytes()) {
            Err(e) => Value::from(format!("(object: {e})")),
            Ok((size, sha256)) if json => {
                let reference =
                    super::object([("size", Value::from(size)), ("sha256", Value::from(sha256))]);
                Value::Object(super::object([("object", Value::Object(reference))]))
            }
            Ok((size, sha256)) => Value::from(format!(
                "<object {size} bytes sha256:{}…>",
                &sha256[..SHORT_DIGEST]
            )),
        };
    }
}
