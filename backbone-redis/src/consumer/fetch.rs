//! Turning entries into [`Job`]s: one pipeline fetches every payload hash of a batch and, for
//! entries read again (pending or claimed), their delivery counts.

use std::collections::HashMap;
use std::time::Instant;

use backbone_core::{Error, Fields};
use redis::aio::ConnectionManager;
use redis::Value;

use super::job::Job;
use crate::connection::redis_error;
use crate::entry::{bytes_to_string, RawEntry};
use crate::keys::StreamKeys;

/// Fetches payloads (and, when `counts`, delivery counts from `XPENDING`) in one round trip.
pub(super) async fn jobs(
    conn: &mut ConnectionManager,
    keys: &StreamKeys,
    group: &str,
    batch: Vec<RawEntry>,
    counts: bool,
) -> Result<Vec<Job>, Error> {
    let headers: Vec<_> = batch.iter().map(RawEntry::header).collect();
    let payload_keys: Vec<&str> = headers
        .iter()
        .filter_map(|h| h.as_ref().ok()?.payload.as_deref())
        .collect();
    let mut pipe = redis::pipe();
    for key in &payload_keys {
        pipe.cmd("HGETALL").arg(*key);
    }
    if counts {
        for entry in &batch {
            pipe.cmd("XPENDING")
                .arg(keys.stream())
                .arg(group)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1);
        }
    }
    let mut replies: Vec<Value> = if payload_keys.is_empty() && !counts {
        Vec::new()
    } else {
        pipe.query_async(conn)
            .await
            .map_err(|e| redis_error(format!("fetch payloads of {}", keys.stream()), e))?
    };
    let pending: Vec<u32> = if counts {
        replies
            .split_off(payload_keys.len())
            .into_iter()
            .map(delivery_count)
            .collect()
    } else {
        Vec::new()
    };
    // Looked up, not moved out: two entries may name one hash (an event and its replay).
    let payloads: HashMap<String, Fields> = payload_keys
        .into_iter()
        .zip(replies)
        .map(|(key, reply)| (key.to_owned(), parse_hash(reply)))
        .collect();
    let now = Instant::now();
    Ok(batch
        .into_iter()
        .zip(headers)
        .enumerate()
        .map(|(i, (entry, header))| {
            let fields = match &header {
                Ok(h) => h
                    .payload
                    .as_ref()
                    .map(|k| payloads.get(k).cloned().unwrap_or_default()),
                Err(_) => None,
            };
            Job {
                entry,
                header,
                fields,
                deliveries: pending.get(i).copied().unwrap_or(1).max(1),
                since: now,
                retry_after: None,
            }
        })
        .collect())
}

fn parse_hash(reply: Value) -> Fields {
    let pairs: Vec<(String, Vec<u8>)> = redis::from_redis_value(reply).unwrap_or_default();
    Fields::from(pairs)
}

/// One `XPENDING <s> <g> <id> <id> 1` row: `[[id, consumer, idle, deliveries]]`.
fn delivery_count(reply: Value) -> u32 {
    let Value::Array(rows) = reply else { return 1 };
    let Some(Value::Array(cols)) = rows.into_iter().next() else {
        return 1;
    };
    match cols.get(3) {
        Some(Value::Int(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        _ => 1,
    }
}

/// Ids from an `XAUTOCLAIM` reply's list of deleted entries.
pub(super) fn ids(reply: Value) -> Vec<String> {
    match reply {
        Value::Array(items) => items.into_iter().filter_map(bytes_to_string).collect(),
        _ => Vec::new(),
    }
}
