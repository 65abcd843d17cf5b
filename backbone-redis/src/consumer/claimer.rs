//! The claimer: every `claim_min_idle / 2`, takes over entries other consumers of the group
//! left idle (`XAUTOCLAIM`) and, if asked, removes consumers long idle with nothing pending
//! (`XINFO CONSUMERS`, `XGROUP DELCONSUMER`).

use std::sync::Arc;
use std::time::Duration;

use backbone_core::middleware::{ReadKind, ReadRequest};
use backbone_core::Error;
use redis::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fetch;
use super::job::Shared;
use super::messages::Incoming;
use crate::connection::{redis_error, Connection};
use crate::entry::{bytes_to_string, parse_entry, RawEntry};

/// Claims idle entries of other consumers, every `claim_min_idle / 2`. A failed round is tried
/// again at the next one; an error retrying cannot fix (a refused `XAUTOCLAIM`, `XINFO` or
/// `XGROUP DELCONSUMER`, lost authentication) is raised and ends the consumer, since entries a
/// dead consumer left would otherwise never be claimed.
pub(super) async fn claimer(
    shared: Arc<Shared>,
    batch_size: usize,
    remove_idle: Option<Duration>,
    out: mpsc::Sender<Incoming>,
    stop: CancellationToken,
) {
    let every = (shared.claim_min_idle / 2).max(Duration::from_millis(10));
    let mut conn = shared.commands.clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = claim_round(&shared, &mut conn, batch_size, &out, &stop).await {
            let Some(e) = shared.fatal.raise_if_fatal(e) else {
                return;
            };
            tracing::warn!(stream = shared.keys.stream(), error = %e, "claiming failed; will try again");
        }
        if let Some(idle) = remove_idle {
            if let Err(e) = remove_idle_consumers(&shared, &mut conn, idle).await {
                let Some(e) = shared.fatal.raise_if_fatal(e) else {
                    return;
                };
                tracing::warn!(stream = shared.keys.stream(), error = %e, "removing idle consumers failed");
            }
        }
    }
}

/// One walk over the group's pending entries list.
async fn claim_round(
    shared: &Shared,
    conn: &mut Connection,
    batch_size: usize,
    out: &mpsc::Sender<Incoming>,
    stop: &CancellationToken,
) -> Result<(), Error> {
    let mut cursor = "0-0".to_owned();
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        // No more than the room left under `max_buffered_bytes` holds; the rest next time.
        let count = shared.budget.claimable(batch_size);
        if count == 0 {
            return Ok(());
        }
        let mut claimed = (Vec::new(), "0-0".to_owned());
        let read = async {
            claimed = autoclaim(shared, conn, &cursor, count).await?;
            Ok(claimed.0.len())
        };
        let request = ReadRequest {
            kind: ReadKind::Claim,
            count,
        };
        shared
            .middlewares
            .read(&shared.info, request, Box::pin(read))
            .await?;
        let entries;
        (entries, cursor) = claimed;
        if !entries.is_empty() {
            tracing::info!(
                stream = shared.keys.stream(),
                count = entries.len(),
                "claimed idle entries"
            );
            let jobs = fetch::opened(shared, conn, entries, true)
                .await
                .map_err(|(e, _)| e)?;
            // Held from now on: the worker releases these bytes when it takes the jobs.
            let bytes = jobs.iter().map(|job| job.size).sum();
            shared.budget.observe(bytes, jobs.len());
            shared.budget.hold(bytes);
            if out.send(Incoming::Claimed(jobs)).await.is_err() {
                return Ok(());
            }
        }
        if cursor == "0-0" {
            return Ok(());
        }
    }
}

/// `XGROUP DELCONSUMER` for other consumers idle longer than `idle` with nothing pending.
async fn remove_idle_consumers(
    shared: &Shared,
    conn: &mut Connection,
    idle: Duration,
) -> Result<(), Error> {
    let consumers: Vec<Vec<(String, Value)>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(shared.keys.stream())
        .arg(&shared.group)
        .query_async(conn)
        .await
        .map_err(|e| redis_error(format!("XINFO CONSUMERS on {}", shared.keys.stream()), e))?;
    for info in consumers {
        let get = |k: &str| info.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let name = get("name").and_then(bytes_to_string);
        let pending = matches!(get("pending"), Some(Value::Int(0)));
        let idle_ms = match get("idle") {
            Some(Value::Int(ms)) => ms as u128,
            _ => 0,
        };
        if let Some(name) = name {
            if name != shared.name && pending && idle_ms > idle.as_millis() {
                let _: i64 = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(shared.keys.stream())
                    .arg(&shared.group)
                    .arg(&name)
                    .query_async(conn)
                    .await
                    .map_err(|e| redis_error(format!("XGROUP DELCONSUMER {name}"), e))?;
                tracing::info!(stream = shared.keys.stream(), consumer = %name, "removed idle consumer");
            }
        }
    }
    Ok(())
}

/// One `XAUTOCLAIM` from `cursor`: the entries claimed and the next cursor. Entries deleted
/// while pending are logged: they are lost.
async fn autoclaim(
    shared: &Shared,
    conn: &mut Connection,
    cursor: &str,
    count: usize,
) -> Result<(Vec<RawEntry>, String), Error> {
    let reply: Value = redis::cmd("XAUTOCLAIM")
        .arg(shared.keys.stream())
        .arg(&shared.group)
        .arg(&shared.name)
        .arg(shared.claim_min_idle.as_millis() as u64)
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await
        .map_err(|e| redis_error(format!("XAUTOCLAIM on {}", shared.keys.stream()), e))?;
    let Value::Array(mut parts) = reply else {
        return Err(Error::channel("XAUTOCLAIM", "unexpected reply"));
    };
    let deleted = if parts.len() >= 3 {
        ids(parts.remove(2))
    } else {
        Vec::new()
    };
    if !deleted.is_empty() {
        tracing::error!(stream = shared.keys.stream(), group = %shared.group, ids = ?deleted,
                "pending entries were deleted or trimmed before anyone handled them; they are lost");
    }
    let entries = match parts.get_mut(1).map(std::mem::take) {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(parse_entry)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|r| Error::channel("XAUTOCLAIM", r))?,
        _ => Vec::new(),
    };
    let cursor = parts
        .into_iter()
        .next()
        .and_then(bytes_to_string)
        .unwrap_or_else(|| "0-0".into());
    Ok((entries, cursor))
}

/// Ids from an `XAUTOCLAIM` reply's list of deleted entries.
fn ids(reply: Value) -> Vec<String> {
    match reply {
        Value::Array(items) => items.into_iter().filter_map(bytes_to_string).collect(),
        _ => Vec::new(),
    }
}
