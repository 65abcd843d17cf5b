//! `backbone streams`: every backbone stream on the server (`SCAN … TYPE stream`), or on
//! every master of a cluster (`--cluster`), each listed once.

use std::collections::BTreeSet;

use backbone_redis::connection::Connection;
use serde_json::Value;

use super::masters::{is_tls, master_settings, masters};
use super::{json, object, pairs, settings, text};
use crate::args::Global;
use crate::error::{redis, Failure};
use crate::output::Output;

/// Lists every backbone stream of the server, or of every master of the cluster.
pub async fn run(g: &Global, out: &Output) -> Result<(), Failure> {
    let settings = settings(g);
    let mut connection = settings.open_connection("cli").await?;
    let keys: BTreeSet<String> = if settings.is_cluster() {
        // SCAN sees one node's keys: scan every master, through a connection of its own. A key
        // seen on two masters (a slot migrating meanwhile) is listed once; XINFO below goes
        // through the cluster connection, to whoever serves the key now.
        let mut keys = BTreeSet::new();
        for master in masters(&mut connection, is_tls(g)).await? {
            let mut node = master_settings(g, &settings, &master)?
                .open_connection("cli")
                .await?;
            keys.extend(scan(&mut node).await?);
        }
        keys
    } else {
        scan(&mut connection).await?.into_iter().collect()
    };
    let mut rows = Vec::new();
    for key in keys {
        let Some(tag) = key
            .strip_prefix("bb:{")
            .and_then(|k| k.strip_suffix("}:events"))
        else {
            continue;
        };
        let (tag, partition) = match tag.rsplit_once('#') {
            Some((t, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => {
                (t, Value::from(p.parse::<u64>().unwrap_or(0)))
            }
            _ => (tag, Value::Null),
        };
        let (environment, uri) = match tag.split_once(':') {
            Some((e, u)) => (Value::from(e), u),
            None => (Value::Null, tag),
        };
        if let Some(wanted) = &g.environment {
            if environment.as_str() != Some(wanted.as_str()) {
                continue;
            }
        }
        let info = ::redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&key)
            .query_async::<::redis::Value>(&mut connection)
            .await
            .map_err(|e| redis(format!("XINFO STREAM {key}"), e))?;
        let mut row = object([
            ("environment", environment),
            ("uri", Value::from(uri)),
            ("partition", partition),
            ("key", Value::from(key.as_str())),
            ("length", Value::Null),
            ("groups", Value::Null),
            ("first", Value::Null),
            ("last", Value::Null),
        ]);
        for (name, value) in pairs(info) {
            match name.as_str() {
                "length" => {
                    row.insert("length".into(), json(value));
                }
                "groups" => {
                    row.insert("groups".into(), json(value));
                }
                "first-entry" | "last-entry" => {
                    let id = match value {
                        ::redis::Value::Array(mut parts) if !parts.is_empty() => {
                            Value::from(text(parts.swap_remove(0)))
                        }
                        _ => Value::Null,
                    };
                    let column = if name == "first-entry" {
                        "first"
                    } else {
                        "last"
                    };
                    row.insert(column.into(), id);
                }
                _ => {}
            }
        }
        rows.push(row);
    }
    if rows.is_empty() {
        out.note("no backbone streams");
        return Ok(());
    }
    let columns = [
        "environment",
        "uri",
        "partition",
        "length",
        "groups",
        "first",
        "last",
    ];
    out.rows(&columns, &rows);
    Ok(())
}

/// Every `bb:*:events` key of type stream.
async fn scan(connection: &mut Connection) -> Result<Vec<String>, Failure> {
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("bb:{*}:events")
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg("stream")
            .query_async(connection)
            .await
            .map_err(|e| redis("SCAN for backbone streams", e))?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}
