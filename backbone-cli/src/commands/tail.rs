//! `backbone tail <uri>`: events as they arrive (or from the start), with their decoded
//! parameters, on every partition; read with `XREAD`, so no group is touched.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::show::{entry_document, Fields};
use super::Stream;
use crate::error::{redis, Failure};
use crate::output::Output;

/// An `XREAD` reply: per stream, its entries (nil when nothing came within the block).
type ReadReply = Option<Vec<(String, Vec<(String, Fields)>)>>;

/// How long one `XREAD` blocks.
const BLOCK: Duration = Duration::from_millis(500);

pub async fn run(
    stream: &Stream,
    from_start: bool,
    count: Option<u64>,
    out: &Output,
) -> Result<(), Failure> {
    let (tx, mut rx) = mpsc::channel::<Result<(usize, String, Fields), Failure>>(256);
    for (p, keys) in stream.layout.partitions().iter().enumerate() {
        // A connection of its own per partition: a blocking read stalls its connection.
        let mut connection = stream.settings.open_connection("cli-tail").await?;
        let key = keys.stream().to_owned();
        let tx = tx.clone();
        let mut after = if from_start {
            "0-0".to_owned()
        } else {
            "$".to_owned()
        };
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
    out.note(&format!(
        "tailing {} ({} partition(s)); Ctrl-C to stop",
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
