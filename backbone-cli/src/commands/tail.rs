//! `backbone tail <uri>`: events as they arrive (or from the start, or from what a group has
//! not been delivered yet), with their decoded parameters, on every partition; read with
//! `XREAD`, so no group is touched (`--group` only reads the group's last-delivered-id).

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::show::{entry_document, Fields};
use super::{pairs, text, Stream};
use crate::error::{redis, Failure};
use crate::output::Output;

/// An `XREAD` reply: per stream, its entries (nil when nothing came within the block).
type ReadReply = Option<Vec<(String, Vec<(String, Fields)>)>>;

/// How long one `XREAD` blocks.
const BLOCK: Duration = Duration::from_millis(500);

/// Where tailing starts, on every partition.
pub enum Start {
    /// At the first entry.
    First,
    /// After the last entry now (only what arrives from now on).
    Now,
    /// After the last entry delivered to this group (its last-delivered-id).
    Undelivered(String),
}

/// Prints the events of every partition from `start` on, as they come, until `count` were
/// shown (or forever).
pub async fn run(
    stream: &Stream,
    start: Start,
    count: Option<u64>,
    out: &Output,
) -> Result<(), Failure> {
    // Every partition's starting point first, so that an unknown group fails before any output.
    let mut starts = Vec::new();
    for keys in stream.layout.partitions() {
        starts.push(match &start {
            Start::First => "0-0".to_owned(),
            Start::Now => "$".to_owned(),
            Start::Undelivered(group) => last_delivered(stream, keys.stream(), group).await?,
        });
    }
    let (tx, mut rx) = mpsc::channel::<Result<(usize, String, Fields), Failure>>(256);
    for (p, (keys, mut after)) in stream.layout.partitions().iter().zip(starts).enumerate() {
        // A connection of its own per partition: a blocking read stalls its connection.
        let mut connection = stream.settings.open_connection("cli-tail").await?;
        let key = keys.stream().to_owned();
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                let reply: Result<ReadReply, _> = ::redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(100)
                    .arg("BLOCK")
                    .arg(BLOCK.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(&key)
                    .arg(&after)
                    .query_async(&mut connection)
                    .await;
                let entries = match reply {
                    Ok(reply) => reply.unwrap_or_default().into_iter().flat_map(|(_, e)| e),
                    Err(e) => {
                        let _ = tx.send(Err(redis(format!("XREAD {key}"), e))).await;
                        return;
                    }
                };
                for (id, fields) in entries {
                    after = id.clone();
                    if tx.send(Ok((p, id, fields))).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    let from = match &start {
        Start::Undelivered(group) => format!(", from what group {group} has not been delivered"),
        _ => String::new(),
    };
    out.note(&format!(
        "tailing {} ({} partition(s)){from}; Ctrl-C to stop",
        stream.layout.address(),
        stream.layout.count()
    ));
    let mut shown = 0u64;
    while count.is_none_or(|n| shown < n) {
        let Some(next) = rx.recv().await else { break };
        let (p, id, fields) = next?;
        let keys = stream.layout.partition(p as u16);
        let mut doc = entry_document(stream, keys, &id, &fields).await?;
        doc.insert("partition".into(), Value::from(p));
        if out.is_json() {
            out.document(&doc);
        } else {
            println!(
                "[{p}] {id} {} {}",
                doc.get("operation").and_then(Value::as_str).unwrap_or("-"),
                doc.get("parameters").cloned().unwrap_or(Value::Null)
            );
        }
        shown += 1;
    }
    Ok(())
}

/// The last-delivered-id of `group` on stream `key` (`XINFO GROUPS`; never `XREADGROUP`,
/// which would take entries from the group's consumers). `NotFound` naming the group when the
/// stream has no such group.
async fn last_delivered(stream: &Stream, key: &str, group: &str) -> Result<String, Failure> {
    let not_found = || Failure::NotFound(format!("group {group} on {key}"));
    let groups = match super::groups::xinfo_groups(stream, key).await {
        Ok(groups) => groups,
        // A partition that was never written to has no key, hence no group.
        Err(Failure::Backbone(e)) if e.to_string().contains("no such key") => {
            return Err(not_found())
        }
        Err(other) => return Err(other),
    };
    for info in groups {
        let fields = pairs(info);
        let named = fields
            .iter()
            .any(|(name, value)| name == "name" && text(value.clone()) == group);
        if !named {
            continue;
        }
        return fields
            .into_iter()
            .find(|(name, _)| name == "last-delivered-id")
            .map(|(_, id)| text(id))
            .ok_or_else(|| {
                Failure::Backbone(backbone_core::Error::channel(
                    format!("XINFO GROUPS {key}"),
                    format!("group {group} has no last-delivered-id"),
                ))
            });
    }
    Err(not_found())
}
