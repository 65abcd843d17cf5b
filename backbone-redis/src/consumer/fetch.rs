//! Turning entries into [`Job`]s: one pipeline fetches every payload hash of a batch (only keys
//! of the stream's own payload prefix are ever read; inline entries carry their parameters
//! and need none) and, for entries read again (pending or
//! claimed), their delivery counts. The [`fetcher`] task does
//! this for the reader's batches, so that the next `XREADGROUP` overlaps this round trip.

use std::sync::Arc;
use std::time::Instant;

use crate::connection::Connection;
use backbone_core::{Error, Fields};
use redis::Value;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::job::{Job, Payload, Shared};
use super::messages::{Batch, Incoming};
use crate::connection::redis_error;
use crate::entry::{field_pairs, EntryHeader, RawEntry};
use crate::keys::StreamKeys;
use crate::retry::Backoff;

/// Fetches payloads (and, when `counts`, delivery counts from `XPENDING`) in one round trip.
/// On failure the entries come back with the error, for a retry.
pub(super) async fn jobs(
    conn: &mut Connection,
    keys: &StreamKeys,
    group: &str,
    batch: Vec<RawEntry>,
    counts: bool,
) -> Result<Vec<Job>, (Error, Vec<RawEntry>)> {
    let prefix = keys.payload_prefix();
    let headers: Vec<_> = batch
        .iter()
        .map(|entry| confined(entry.header(), &entry.id, &prefix))
        .collect();
    // One HGETALL per entry that names a payload, in entry order, so that each reply moves
    // into its own job (two entries naming one hash, an event and its replay, each get theirs).
    let mut pipe = redis::pipe();
    // Errors come back as replies, so that one bad payload key cannot fail the whole batch.
    pipe.ignore_errors();
    let mut hashes = 0;
    for key in headers.iter().filter_map(payload_of) {
        pipe.cmd("HGETALL").arg(key);
        hashes += 1;
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
    let mut replies: Vec<Value> = if hashes == 0 && !counts {
        Vec::new()
    } else {
        // A payload key holding another type (WRONGTYPE) is that entry's problem, dead-lettered
        // with the reason; any other error reply fails the fetch, which is tried again.
        let result = pipe
            .query_async::<Vec<Value>>(conn)
            .await
            .and_then(|replies| {
                let failed = replies.iter().find_map(|reply| match reply {
                    Value::ServerError(e) if e.code() != "WRONGTYPE" => Some(e.clone()),
                    _ => None,
                });
                match failed {
                    Some(e) => Err(e.into()),
                    None => Ok(replies),
                }
            });
        match result {
            Ok(replies) => replies,
            Err(e) => {
                let e = redis_error(format!("fetch payloads of {}", keys.stream()), e);
                return Err((e, batch));
            }
        }
    };
    let pending: Vec<u32> = if counts {
        replies
            .split_off(hashes.min(replies.len()))
            .into_iter()
            .map(delivery_count)
            .collect()
    } else {
        Vec::new()
    };
    let mut payloads = replies.into_iter();
    let now = Instant::now();
    Ok(batch
        .into_iter()
        .zip(headers)
        .enumerate()
        .map(|(i, (entry, header))| {
            let payload = parameters(&entry, &header, &mut payloads);
            Job {
                size: size(&entry, &payload),
                entry,
                header,
                payload,
                deliveries: pending.get(i).copied().unwrap_or(1).max(1),
                since: now,
                retry_after: None,
            }
        })
        .collect())
}

/// [`jobs`], with their objects fetched (see [`super::objects`]) and their personal
/// parameters opened (see [`super::personal`]).
pub(super) async fn opened(
    shared: &Shared,
    conn: &mut Connection,
    entries: Vec<RawEntry>,
    counts: bool,
) -> Result<Vec<Job>, (Error, Vec<RawEntry>)> {
    let jobs = jobs(conn, &shared.keys, &shared.group, entries, counts).await?;
    let jobs = super::objects::fetch(shared.objects.as_ref(), shared.keys.stream(), jobs).await?;
    super::personal::open(&*shared.key_store, jobs).await
}

/// Turns the reader's batches into jobs for the worker, in order, until stopped. A failed
/// fetch is tried again (the entries stay pending meanwhile) after 50 ms doubling to 5 s; an
/// error retrying cannot help ends the consumer.
pub(super) async fn fetcher(
    shared: Arc<Shared>,
    mut batches: mpsc::Receiver<Batch>,
    out: mpsc::Sender<Incoming>,
    stop: CancellationToken,
) {
    let mut conn = shared.commands.clone();
    loop {
        let batch = tokio::select! {
            _ = stop.cancelled() => return,
            batch = batches.recv() => match batch { Some(batch) => batch, None => return },
        };
        let mut backoff = Backoff::fetch();
        let mut entries = batch.entries;
        let jobs = loop {
            let fetched = tokio::select! {
                biased;
                fetched = opened(&shared, &mut conn, entries, batch.counts) => fetched,
                _ = stop.cancelled() => return,
            };
            let e = match fetched {
                Ok(jobs) => break jobs,
                Err((e, back)) => {
                    entries = back;
                    e
                }
            };
            let Some(e) = shared.fatal.raise_if_fatal(e) else {
                return;
            };
            let delay = backoff.next();
            tracing::warn!(stream = shared.keys.stream(), error = %e,
                retry_in_ms = delay.as_millis() as u64, "fetching payloads failed; will try again");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        };
        let bytes = jobs.iter().map(|job| job.size).sum();
        shared.budget.observe(bytes, jobs.len());
        if out.send(Incoming::Read(jobs)).await.is_err() {
            return;
        }
    }
}

/// The bytes a job holds: its entry's id, field names and values, and its payload's.
fn size(entry: &RawEntry, payload: &Payload) -> usize {
    let fields = entry.fields.iter().flatten();
    let entry_bytes: usize = fields.map(|(name, value)| name.len() + value.len()).sum();
    let payload_bytes = match payload {
        Payload::None => 0,
        Payload::Fields(fields) => fields.iter().map(|(n, v)| n.len() + v.len()).sum(),
        Payload::Unreadable(why) => why.len(),
    };
    entry.id.len() + entry_bytes + payload_bytes
}

/// An entry's parameters, the one place they are put together: an inline entry's
/// `param.<name>` fields (no hash is read for it); else, when the entry names a payload hash,
/// that hash's fields (the next reply of `hashes`: one per such entry, in entry order); else
/// none.
fn parameters(
    entry: &RawEntry,
    header: &Result<EntryHeader, Error>,
    hashes: &mut impl Iterator<Item = Value>,
) -> Payload {
    match header {
        Ok(header) if header.inline => Payload::Fields(entry.params()),
        _ => match payload_of(header) {
            None => Payload::None,
            Some(_) => parse_hash(hashes.next()),
        },
    }
}

/// An entry may only name a payload hash of its own stream (a key starting with `prefix`, see
/// [`StreamKeys::payload_prefix`]): an entry naming any other key is malformed, dead-lettered
/// with a reason naming the field and the key, and that key is never read, so an entry cannot
/// hand a handler the contents of a key that is not this stream's.
fn confined(
    header: Result<EntryHeader, Error>,
    id: &str,
    prefix: &str,
) -> Result<EntryHeader, Error> {
    let header = header?;
    match header.payload.as_deref() {
        Some(key) if !key.starts_with(prefix) => Err(Error::malformed(
            id,
            format!(
                "field `payload` = {key:?} is not a payload key of this stream \
                 (those start with {prefix:?}); it was not read"
            ),
        )),
        _ => Ok(header),
    }
}

/// The payload hash an entry names, if it is well formed and names one.
fn payload_of(header: &Result<EntryHeader, Error>) -> Option<&str> {
    header.as_ref().ok()?.payload.as_deref()
}

/// An `HGETALL` reply (RESP2 flat array or RESP3 map), moved into [`Fields`]; an error reply
/// makes the payload unreadable; anything else, or no reply, is an empty hash: the payload is
/// missing. A field name that is not UTF-8 is kept with its bytes replaced, so decoding names it.
fn parse_hash(reply: Option<Value>) -> Payload {
    match reply {
        Some(Value::ServerError(e)) => Payload::Unreadable(e.to_string()),
        Some(reply) => Payload::Fields(field_pairs(reply).map(Fields::from).unwrap_or_default()),
        None => Payload::Fields(Fields::new()),
    }
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
