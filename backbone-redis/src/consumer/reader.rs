//! The two tasks that bring entries to a consumer's worker:
//! - the reader: on demand, reads this consumer's pending entries (after a start or a
//!   reconnect), then new ones with a blocking `XREADGROUP` on its own connection;
//! - the claimer: every `claim_min_idle / 2`, takes over entries other consumers left idle
//!   (`XAUTOCLAIM`) and, if asked, removes consumers long idle with nothing pending.

use std::sync::Arc;
use std::time::Duration;

use crate::connection::Connection;
use backbone_core::Error;
use redis::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fetch;
use super::job::{Job, Shared};
use crate::connection::redis_error;
use crate::entry::{parse_entry, parse_read_reply, RawEntry};
use crate::retry::Backoff;

/// Entries read, on their way to the fetcher.
pub(super) struct Batch {
    pub entries: Vec<RawEntry>,
    /// Read again from this consumer's pending entries: fetch their delivery counts too.
    pub counts: bool,
}

/// What the tasks send the worker.
pub(super) enum Incoming {
    /// The answer to a read request.
    Read(Vec<Job>),
    /// Entries claimed from other consumers.
    Claimed(Vec<Job>),
    /// The consumer cannot go on.
    Fatal(Error),
}

/// Errors after which retrying cannot help (see [`crate::retry::ErrorClass::Fatal`]).
pub(super) fn is_fatal(e: &Error) -> bool {
    crate::retry::classify(e).is_fatal()
}

pub(super) struct Reader {
    pub shared: Arc<Shared>,
    /// A connection of its own (a blocking read stalls its connection); it connects again by
    /// itself on the command after a failure.
    pub connection: Connection,
    pub block: Duration,
}

impl Reader {
    /// Serves read requests (each carries the number of entries wanted) until stopped: each
    /// non-empty batch goes to the [fetcher](fetch::fetcher), which fetches its payloads while
    /// this task already reads the next batch.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<usize>,
        batches: mpsc::Sender<Batch>,
        out: mpsc::Sender<Incoming>,
        stop: CancellationToken,
    ) {
        // `Some(cursor)`: re-reading own pending entries after `cursor`; `None`: reading new ones.
        let mut pending: Option<String> = Some("0-0".into());
        let mut backoff = Backoff::read();
        loop {
            let count = tokio::select! {
                _ = stop.cancelled() => return,
                request = requests.recv() => match request { Some(n) => n, None => return },
            };
            loop {
                let result = tokio::select! {
                    biased;
                    result = self.read(pending.as_deref(), count) => result,
                    _ = stop.cancelled() => return,
                };
                match result {
                    Ok(entries) if entries.is_empty() => pending = None,
                    Ok(entries) => {
                        backoff = Backoff::read();
                        let counts = pending.is_some();
                        if let (Some(cursor), Some(last)) = (pending.as_mut(), entries.last()) {
                            *cursor = last.id.clone();
                        }
                        let _ = batches.send(Batch { entries, counts }).await;
                        break;
                    }
                    Err(e) => {
                        if self.recover(e, &out, &stop, &mut backoff).await.is_err() {
                            return;
                        }
                        pending = Some("0-0".into());
                    }
                }
            }
        }
    }

    async fn read(&mut self, after: Option<&str>, count: usize) -> Result<Vec<RawEntry>, Error> {
        let shared = &self.shared;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&shared.group)
            .arg(&shared.name)
            .arg("COUNT")
            .arg(count);
        if after.is_none() {
            cmd.arg("BLOCK").arg(self.block.as_millis() as u64);
        }
        cmd.arg("STREAMS")
            .arg(shared.keys.stream())
            .arg(after.unwrap_or(">"));
        let context = || format!("XREADGROUP on {}", shared.keys.stream());
        let reply: Value = cmd
            .query_async(&mut self.connection)
            .await
            .map_err(|e| redis_error(context(), e))?;
        parse_read_reply(reply)
            .map_err(|reason| Error::channel(context(), format!("unexpected reply: {reason}")))
    }

    /// Backs off after an error (the next read connects again if the connection broke); sends
    /// fatal ones to the worker.
    async fn recover(
        &mut self,
        e: Error,
        out: &mpsc::Sender<Incoming>,
        stop: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), ()> {
        if is_fatal(&e) {
            let _ = out.send(Incoming::Fatal(e)).await;
            return Err(());
        }
        let delay = backoff.next();
        tracing::warn!(stream = self.shared.keys.stream(), consumer = %self.shared.name, error = %e,
            retry_in_ms = delay.as_millis() as u64, "read failed; reconnecting");
        tokio::select! {
            _ = stop.cancelled() => return Err(()),
            _ = tokio::time::sleep(delay) => {}
        }
        Ok(())
    }
}

/// Claims idle entries of other consumers, every `claim_min_idle / 2`.
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
            tracing::warn!(stream = shared.keys.stream(), error = %e, "claiming failed; will try again");
        }
        if let Some(idle) = remove_idle {
            if let Err(e) = remove_idle_consumers(&shared, &mut conn, idle).await {
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
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(shared.keys.stream())
            .arg(&shared.group)
            .arg(&shared.name)
            .arg(shared.claim_min_idle.as_millis() as u64)
            .arg(&cursor)
            .arg("COUNT")
            .arg(batch_size)
            .query_async(conn)
            .await
            .map_err(|e| redis_error(format!("XAUTOCLAIM on {}", shared.keys.stream()), e))?;
        let Value::Array(mut parts) = reply else {
            return Err(Error::channel("XAUTOCLAIM", "unexpected reply"));
        };
        let deleted = if parts.len() >= 3 {
            fetch::ids(parts.remove(2))
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
        cursor = parts
            .into_iter()
            .next()
            .and_then(crate::entry::bytes_to_string)
            .unwrap_or_else(|| "0-0".into());
        if !entries.is_empty() {
            tracing::info!(
                stream = shared.keys.stream(),
                count = entries.len(),
                "claimed idle entries"
            );
            let jobs = fetch::jobs(conn, &shared.keys, &shared.group, entries, true)
                .await
                .map_err(|(e, _)| e)?;
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
        let name = get("name").and_then(crate::entry::bytes_to_string);
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
