//! `backbone groups <uri>`: per group of every partition, lag, pending, last delivered, and its
//! consumers with their idle times.

use serde_json::Value;

use super::{json, object, pairs, Stream};
use crate::error::{redis, Failure};
use crate::output::Output;

pub async fn run(stream: &Stream, out: &Output) -> Result<(), Failure> {
    let mut rows = Vec::new();
    let mut consumers_rows = Vec::new();
    for (p, keys) in stream.layout.partitions().iter().enumerate() {
        let key = keys.stream();
        let groups = xinfo_groups(stream, key).await?;
        for group in groups {
            let mut row = object([
                ("partition", Value::from(p)),
                ("group", Value::Null),
                ("consumers", Value::Null),
                ("pending", Value::Null),
                ("lag", Value::Null),
                ("last_delivered", Value::Null),
            ]);
            for (name, value) in pairs(group) {
                let column = match name.as_str() {
                    "name" => "group",
                    "consumers" => "consumers",
                    "pending" => "pending",
                    "lag" => "lag",
                    "last-delivered-id" => "last_delivered",
                    _ => continue,
                };
                row.insert(column.into(), json(value));
            }
            let name = row["group"].as_str().unwrap_or_default().to_owned();
            let consumers: Vec<::redis::Value> = ::redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(key)
                .arg(&name)
                .query_async(&mut stream.conn())
                .await
                .map_err(|e| redis(format!("XINFO CONSUMERS {key} {name}"), e))?;
            for consumer in consumers {
                let mut c = object([
                    ("partition", Value::from(p)),
                    ("group", Value::from(name.as_str())),
                    ("consumer", Value::Null),
                    ("pending", Value::Null),
                    ("idle_ms", Value::Null),
                ]);
                for (field, value) in pairs(consumer) {
                    let column = match field.as_str() {
                        "name" => "consumer",
                        "pending" => "pending",
                        "idle" => "idle_ms",
                        _ => continue,
                    };
                    c.insert(column.into(), json(value));
                }
                consumers_rows.push(c);
            }
            rows.push(row);
        }
    }
    if rows.is_empty() {
        out.note(&format!("no groups on {}", stream.layout.address()));
        return Ok(());
    }
    if out.is_json() {
        for row in &mut rows {
            let group = row["group"].clone();
            let partition = row["partition"].clone();
            let members: Vec<Value> = consumers_rows
                .iter()
                .filter(|c| c["group"] == group && c["partition"] == partition)
                .map(|c| Value::Object(c.clone()))
                .collect();
            row.insert("consumer_list".into(), Value::Array(members));
        }
        out.rows(&[], &rows);
        return Ok(());
    }
    out.rows(
        &[
            "partition",
            "group",
            "consumers",
            "pending",
            "lag",
            "last_delivered",
        ],
        &rows,
    );
    if !consumers_rows.is_empty() {
        println!();
        out.rows(
            &["partition", "group", "consumer", "pending", "idle_ms"],
            &consumers_rows,
        );
    }
    Ok(())
}

/// `XINFO GROUPS <key>`: one reply per group.
pub async fn xinfo_groups(stream: &Stream, key: &str) -> Result<Vec<::redis::Value>, Failure> {
    ::redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(&mut stream.conn())
        .await
        .map_err(|e| redis(format!("XINFO GROUPS {key}"), e))
}
