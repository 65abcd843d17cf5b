//! `backbone pending <uri> <group>`: the entries a group holds, by whom, for how long, how
//! often delivered.

use serde_json::Value;

use super::{object, Stream};
use crate::error::{redis, Failure};
use crate::output::Output;

pub async fn run(stream: &Stream, group: &str, out: &Output) -> Result<(), Failure> {
    let mut rows = Vec::new();
    for (p, keys) in stream.layout.partitions().iter().enumerate() {
        let key = keys.stream();
        let entries: Result<Vec<(String, String, u64, u64)>, _> = ::redis::cmd("XPENDING")
            .arg(key)
            .arg(group)
            .arg("-")
            .arg("+")
            .arg(10_000)
            .query_async(&mut stream.conn())
            .await;
        let entries = match entries {
            Err(e) if e.code() == Some("NOGROUP") => {
                return Err(Failure::NotFound(format!("group {group} on {key}")))
            }
            other => other.map_err(|e| redis(format!("XPENDING {key} {group}"), e))?,
        };
        for (id, consumer, idle, deliveries) in entries {
            rows.push(object([
                ("partition", Value::from(p)),
                ("stream_id", Value::from(id)),
                ("consumer", Value::from(consumer)),
                ("idle_ms", Value::from(idle)),
                ("deliveries", Value::from(deliveries)),
            ]));
        }
    }
    if rows.is_empty() {
        out.note(&format!("nothing pending in group {group}"));
        return Ok(());
    }
    out.rows(
        &[
            "partition",
            "stream_id",
            "consumer",
            "idle_ms",
            "deliveries",
        ],
        &rows,
    );
    Ok(())
}
