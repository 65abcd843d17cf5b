//! `backbone aggregate <uri> <id>`: an event-store aggregate's events (in its partition) and
//! its version.

use serde_json::Value;

use super::show::{entry_document, Fields};
use super::Stream;
use crate::error::{redis, Failure};
use crate::output::Output;

pub async fn run(stream: &Stream, aggregate_id: &str, out: &Output) -> Result<(), Failure> {
    let keys = stream.layout.partition(stream.layout.for_key(aggregate_id));
    let key = keys.aggregate(aggregate_id);
    let mut rows = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let page: Vec<(String, Fields)> = ::redis::cmd("XRANGE")
            .arg(&key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(500)
            .query_async(&mut stream.conn())
            .await
            .map_err(|e| redis(format!("XRANGE {key}"), e))?;
        let done = page.len() < 500;
        for (id, fields) in &page {
            let mut doc = entry_document(stream, keys, id, fields).await?;
            let version = id.split_once('-').map_or(id.as_str(), |(_, v)| v);
            doc.insert(
                "version".into(),
                Value::from(version.parse::<u64>().unwrap_or(0)),
            );
            rows.push(doc);
        }
        match (done, page.last()) {
            (false, Some((last, _))) => start = format!("({last}"),
            _ => break,
        }
    }
    if rows.is_empty() {
        return Err(Failure::NotFound(format!(
            "aggregate {aggregate_id} of {} (no key {key})",
            stream.layout.address()
        )));
    }
    out.note(&format!("aggregate {aggregate_id}: version {}", rows.len()));
    out.rows(&["version", "operation", "position", "parameters"], &rows);
    Ok(())
}
