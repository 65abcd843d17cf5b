//! The compatibility check: a contract against the schema saved earlier (the first run writes
//! it). A change is **breaking** when it breaks a reader of old events or an old reader of new
//! events:
//!
//! - an operation removed without first being deprecated;
//! - a required parameter removed (old readers miss it in new events);
//! - a parameter whose schema changed (doc comments aside);
//! - a new parameter that is not optional, in an existing operation and version (events
//!   written before lack it; add a new version with an upcaster instead).
//!
//! Anything else is safe: new operations and versions, new optional parameters, deprecations,
//! upcasters, removing an operation deprecated before. Safe changes update the saved file
//! (commit it); `BACKBONE_SCHEMA=overwrite` accepts breaking ones too.
//!
//! ```no_run
//! use backbone_core::events_contract;
//!
//! #[events_contract(schema)]
//! pub trait Parcels {
//!     async fn packing(&self, product_id: u64);
//! }
//!
//! #[test]
//! fn parcels_stays_compatible() {
//!     backbone_core::schema::compat::assert_compatible::<Parcels>("schemas/parcels.json");
//! }
//! ```

use std::fmt;
use std::path::Path;

use serde_json::Value;

use super::{contract_document, ContractSchema};

/// One difference between the saved contract and the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Whether it breaks readers.
    pub breaking: bool,
    /// What changed, naming the operation, version and parameter.
    pub what: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.breaking { "breaking" } else { "safe" };
        write!(f, "{kind}: {}", self.what)
    }
}

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Every change, breaking or not.
    pub changes: Vec<Change>,
    /// Whether the saved file was written (first run, safe changes, or overwrite).
    pub written: bool,
}

impl Report {
    /// The breaking changes.
    pub fn breaking(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.breaking)
    }
}

/// Compares two saved forms ([`contract_document`]): `old` (saved) and `new` (current).
pub fn compare(old: &Value, new: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    let ops = |doc: &Value| doc["operations"].as_array().cloned().unwrap_or_default();
    let key = |op: &Value| {
        (
            op["name"].as_str().unwrap_or("").to_owned(),
            op["version"].as_u64().unwrap_or(0),
        )
    };
    let (old_ops, new_ops) = (ops(old), ops(new));
    let mut breaking = |what: String| {
        changes.push(Change {
            breaking: true,
            what,
        })
    };
    let mut safe = Vec::new();
    for old_op in &old_ops {
        let (name, version) = key(old_op);
        let here = format!("operation `{name}` v{version}");
        let Some(new_op) = new_ops.iter().find(|n| key(n) == (name.clone(), version)) else {
            match old_op["deprecated"].is_string() {
                true => safe.push(format!("{here} was removed (it was deprecated)")),
                false => breaking(format!(
                    "{here} was removed without first being deprecated: events of it in the \
                     stream can no longer be read"
                )),
            }
            continue;
        };
        let props = |op: &Value| {
            op["schema"]["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default()
        };
        let required = |op: &Value, p: &str| {
            op["schema"]["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|v| v == p))
        };
        let (old_props, new_props) = (props(old_op), props(new_op));
        for (param, old_schema) in &old_props {
            match new_props.get(param) {
                None if required(old_op, param) => breaking(format!(
                    "parameter `{param}` of {here} was removed: readers of the old contract \
                     miss it in new events"
                )),
                None => safe.push(format!(
                    "optional parameter `{param}` of {here} was removed"
                )),
                Some(new_schema) if strip(old_schema) != strip(new_schema) => breaking(format!(
                    "parameter `{param}` of {here} changed type: {} became {}",
                    summary(old_schema),
                    summary(new_schema)
                )),
                Some(_) if required(old_op, param) != required(new_op, param) => breaking(format!(
                    "parameter `{param}` of {here} became {}",
                    if required(new_op, param) {
                        "required"
                    } else {
                        "optional"
                    }
                )),
                Some(_) => {}
            }
        }
        for param in new_props.keys().filter(|p| !old_props.contains_key(*p)) {
            match required(new_op, param) {
                true => breaking(format!(
                    "new parameter `{param}` of {here} is not optional: events written before \
                     lack it (make it an `Option`, or add a new version and an upcaster)"
                )),
                false => safe.push(format!("new optional parameter `{param}` of {here}")),
            }
        }
        if new_op["deprecated"].is_string() && !old_op["deprecated"].is_string() {
            safe.push(format!("{here} is now deprecated"));
        }
        if new_op["upcast"].is_string() && !old_op["upcast"].is_string() {
            safe.push(format!("{here} now has an upcaster"));
        }
    }
    for new_op in &new_ops {
        let (name, version) = key(new_op);
        if !old_ops.iter().any(|o| key(o) == (name.clone(), version)) {
            safe.push(format!("new operation `{name}` v{version}"));
        }
    }
    changes.extend(safe.into_iter().map(|what| Change {
        breaking: false,
        what,
    }));
    changes
}

/// A schema without its words (descriptions, titles, examples), which do not change readers.
fn strip(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "description" | "title" | "examples"))
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
        other => other.clone(),
    }
}

/// A short text of a schema, for messages.
fn summary(schema: &Value) -> String {
    let text = strip(schema).to_string();
    match text.chars().count() > 120 {
        true => format!("{}…", text.chars().take(117).collect::<String>()),
        false => text,
    }
}

/// Checks contract `C` against the schema saved at `path`: writes it on the first run (or
/// with `BACKBONE_SCHEMA=overwrite`), updates it after safe changes, and leaves it as it is
/// when a change breaks readers.
pub fn check<C: ContractSchema>(path: impl AsRef<Path>) -> std::io::Result<Report> {
    let path = path.as_ref();
    let current = contract_document::<C>();
    let overwrite = std::env::var("BACKBONE_SCHEMA").is_ok_and(|v| v == "overwrite");
    let write = |doc: &Value| -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(doc).map_err(std::io::Error::other)? + "\n";
        std::fs::write(path, text)
    };
    let saved = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str::<Value>(&text).map_err(|e| {
            std::io::Error::other(format!(
                "{}: not a saved contract schema: {e}",
                path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write(&current)?;
            return Ok(Report {
                changes: Vec::new(),
                written: true,
            });
        }
        Err(e) => return Err(e),
    };
    let changes = compare(&saved, &current);
    let breaks = changes.iter().any(|c| c.breaking);
    let written = (overwrite || !breaks) && saved != current;
    if written {
        write(&current)?;
    }
    Ok(Report { changes, written })
}

/// [`check`], panicking with every breaking change (for a test).
pub fn assert_compatible<C: ContractSchema>(path: impl AsRef<Path>) {
    let path = path.as_ref();
    let report = check::<C>(path)
        .unwrap_or_else(|e| panic!("cannot check {} against {}: {e}", C::NAME, path.display()));
    let breaking: Vec<String> = report
        .breaking()
        .map(|c| format!("  - {}", c.what))
        .collect();
    if !breaking.is_empty() && std::env::var("BACKBONE_SCHEMA").map_or(true, |v| v != "overwrite") {
        panic!(
            "contract {} breaks readers of {} ({} change(s)):\n{}\n(run with \
             BACKBONE_SCHEMA=overwrite to accept them)",
            C::NAME,
            path.display(),
            breaking.len(),
            breaking.join("\n")
        );
    }
}
