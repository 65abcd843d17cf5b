//! `backbone dead list|show|replay|purge <uri> <group> [id|--all]`: a group's dead letters,
//! on every partition of the stream; `--all` replays and purges show a progress bar to people.
//! A purge deletes the objects of the events whose last reference goes through `--objects`.

use backbone_redis::entry::PARAM_PREFIX;
use backbone_redis::{DeadLetterEntry, DeadLetters};
use serde_json::{Map, Value};

use super::objects::without_store;
use super::show::{present, put_fields};
use super::{confirm, field_json, pairs, text, Stream};
use crate::args::{Chosen, Dead, Global};
use crate::error::Failure;
use crate::output::Output;
use crate::progress::Progress;

/// How many dead letters one page of a listing reads.
const PAGE: usize = 500;

pub async fn run(g: &Global, action: &Dead, out: &Output) -> Result<(), Failure> {
    let (uri, group) = match action {
        Dead::List { uri, group }
        | Dead::Show { uri, group, .. }
        | Dead::Replay(Chosen { uri, group, .. })
        | Dead::Purge(Chosen { uri, group, .. }) => (uri, group),
    };
    let objects = match action {
        Dead::Purge(_) => super::objects::storage(g)?,
        _ => None,
    };
    let has_store = objects.is_some();
    let stream = Stream::find(g, uri).await?;
    require_group(&stream, group).await?;
    let mut partitions = DeadLetters::open_partitions(&stream.settings, group).await?;
    if let Some(objects) = objects {
        partitions = partitions
            .into_iter()
            .map(|dead| dead.object_store(objects.clone()))
            .collect();
    }
    match action {
        Dead::List { .. } => list(&partitions, out).await,
        Dead::Show { id, .. } => {
            for dead in &partitions {
                if let Some(entry) = dead.get(id).await? {
                    let mut doc = describe(dead, &entry, true);
                    inline_parameters(&stream, &entry, &mut doc).await?;
                    out.document(&doc);
                    return Ok(());
                }
            }
            Err(Failure::NotFound(format!(
                "dead letter {id} of group {group}"
            )))
        }
        Dead::Replay(Chosen { id, all, yes, .. }) => {
            let target = target(id.as_deref(), *all)?;
            confirm(&format!("replay {target} of group {group} on {uri}?"), *yes)?;
            match id {
                Some(id) => replay_one(&partitions, id, &target, group, out).await,
                None => replay_all(&partitions, out).await,
            }
        }
        Dead::Purge(Chosen { id, all, yes, .. }) => {
            let target = target(id.as_deref(), *all)?;
            confirm(
                &format!("delete {target} of group {group} on {uri}? This cannot be undone"),
                *yes,
            )?;
            let purged = match id {
                Some(id) => {
                    let mut purged = 0u64;
                    for dead in &partitions {
                        let gone = dead
                            .purge(id)
                            .await
                            .map_err(|e| without_store(e, has_store))?;
                        purged += u64::from(gone);
                    }
                    if purged == 0 {
                        return Err(Failure::NotFound(format!(
                            "dead letter {target} of group {group}"
                        )));
                    }
                    purged
                }
                None => purge_all(&partitions, out).await.map_err(|e| match e {
                    Failure::Backbone(e) => without_store(e, has_store),
                    other => other,
                })?,
            };
            let mut doc = Map::new();
            doc.insert("purged".into(), Value::from(purged));
            out.document(&doc);
            Ok(())
        }
    }
}

/// Replays dead letter `id`, from whichever partition holds it.
async fn replay_one(
    partitions: &[DeadLetters],
    id: &str,
    target: &str,
    group: &str,
    out: &Output,
) -> Result<(), Failure> {
    let mut replayed = Vec::new();
    for dead in partitions {
        if dead.get(id).await?.is_some() {
            replayed.push(dead.replay(id).await?);
        }
    }
    let Some(new_id) = replayed.first() else {
        return Err(Failure::NotFound(format!(
            "dead letter {target} of group {group}"
        )));
    };
    let mut doc = Map::new();
    doc.insert("replayed".into(), Value::from(replayed.len()));
    doc.insert("stream_id".into(), Value::from(new_id.as_str()));
    out.document(&doc);
    Ok(())
}

/// Replays every dead letter there is now, oldest first on each partition, one by one with a
/// progress bar. Skipped: those without original fields (they stay: purge them) and those
/// replayed or purged meanwhile by someone else. Entries dead-lettered again meanwhile wait for
/// the next replay.
async fn replay_all(partitions: &[DeadLetters], out: &Output) -> Result<(), Failure> {
    let mut chosen = Vec::new();
    for dead in partitions {
        let mut letters = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = dead.list(after.as_deref(), PAGE).await?;
            after = page.last().map(|e| e.id.clone());
            letters.extend(page.iter().map(|e| (e.id.clone(), e.can_replay())));
            if page.len() < PAGE {
                break;
            }
        }
        chosen.push(letters);
    }
    let total = chosen.iter().map(Vec::len).sum::<usize>() as u64;
    let progress = Progress::new(out, total, "replaying dead letters");
    let (mut replayed, mut skipped) = (0u64, 0u64);
    for (dead, letters) in partitions.iter().zip(chosen) {
        for (id, can_replay) in letters {
            if !can_replay {
                skipped += 1;
            } else {
                match dead.replay(&id).await {
                    Ok(_) => replayed += 1,
                    Err(_) if dead.get(&id).await?.is_none() => skipped += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            progress.inc(1);
        }
    }
    progress.done();
    let mut doc = Map::new();
    doc.insert("replayed".into(), Value::from(replayed));
    doc.insert("skipped".into(), Value::from(skipped));
    out.document(&doc);
    Ok(())
}

/// Deletes every dead letter of every partition (one atomic `XTRIM` each), with a progress bar
/// over the dead letters; returns how many.
async fn purge_all(partitions: &[DeadLetters], out: &Output) -> Result<u64, Failure> {
    let mut total = 0;
    for dead in partitions {
        total += dead.len().await?;
    }
    let progress = Progress::new(out, total, "purging dead letters");
    let mut purged = 0u64;
    for dead in partitions {
        let n = dead.purge_all().await?;
        purged += n;
        progress.inc(n);
    }
    progress.done();
    Ok(purged)
}

/// What a replay or purge acts on: one id, or `--all`.
fn target(id: Option<&str>, all: bool) -> Result<String, Failure> {
    match (id, all) {
        (Some(id), _) => Ok(format!("dead letter {id}")),
        (None, true) => Ok("every dead letter".into()),
        (None, false) => Err(Failure::Usage("give a dead letter's id or --all".into())),
    }
}

async fn list(partitions: &[DeadLetters], out: &Output) -> Result<(), Failure> {
    let mut rows = Vec::new();
    for dead in partitions {
        let mut after: Option<String> = None;
        loop {
            let page = dead.list(after.as_deref(), PAGE).await?;
            let done = page.len() < PAGE;
            after = page.last().map(|e| e.id.clone());
            rows.extend(page.iter().map(|entry| describe(dead, entry, false)));
            if done {
                break;
            }
        }
    }
    if rows.is_empty() {
        out.note("no dead letters");
        return Ok(());
    }
    let columns = [
        "id",
        "stream_id",
        "operation",
        "consumer",
        "deliveries",
        "reason",
    ];
    out.rows(&columns, &rows);
    Ok(())
}

fn describe(dead: &DeadLetters, entry: &DeadLetterEntry, whole: bool) -> Map<String, Value> {
    let mut doc = Map::new();
    doc.insert("dead_letters".into(), Value::from(dead.key()));
    doc.insert("id".into(), Value::from(entry.id.as_str()));
    doc.insert("stream_id".into(), Value::from(entry.stream_id.as_str()));
    doc.insert(
        "message_id".into(),
        entry
            .message_id
            .map_or(Value::Null, |m| Value::from(m.to_string())),
    );
    doc.insert(
        "operation".into(),
        entry.operation.clone().map_or(Value::Null, Value::from),
    );
    doc.insert(
        "version".into(),
        entry.version.map_or(Value::Null, Value::from),
    );
    doc.insert("group".into(), Value::from(entry.group.as_str()));
    doc.insert("consumer".into(), Value::from(entry.consumer.as_str()));
    doc.insert("deliveries".into(), Value::from(entry.deliveries));
    doc.insert("reason".into(), Value::from(entry.reason.as_str()));
    doc.insert("dead_at".into(), Value::from(entry.dead_at));
    if whole {
        let fields: Map<String, Value> = entry
            .fields
            .iter()
            .map(|(name, value)| (name.clone(), field_json(value)))
            .collect();
        doc.insert("fields".into(), Value::Object(fields));
    }
    doc
}

/// Decodes the parameters of an inline dead letter (`param.<name>` original fields) as `show`
/// decodes an inline entry's: they leave the dead letter's `fields` for its `parameters`,
/// personal ones sealed, forgotten or opened, those in an object store as their references.
/// A dead letter with a payload hash, or without its original fields, stays as it is.
async fn inline_parameters(
    stream: &Stream,
    entry: &DeadLetterEntry,
    doc: &mut Map<String, Value>,
) -> Result<(), Failure> {
    let mut original = Map::new();
    if entry.fields.is_empty() || put_fields(&entry.fields, &mut original).is_some() {
        return Ok(());
    }
    present(stream, &mut original).await?;
    if let Some(Value::Object(fields)) = doc.get_mut("fields") {
        fields.retain(|name, _| !name.starts_with(PARAM_PREFIX));
    }
    if let Some(parameters) = original.remove("parameters") {
        doc.insert("parameters".into(), parameters);
    }
    Ok(())
}

/// `NotFound` unless `group` exists on the stream's first partition.
async fn require_group(stream: &Stream, group: &str) -> Result<(), Failure> {
    let key = stream.layout.partition(0).stream();
    let groups = super::groups::xinfo_groups(stream, key).await?;
    let found = groups.into_iter().any(|g| {
        pairs(g)
            .into_iter()
            .any(|(name, value)| name == "name" && text(value) == group)
    });
    if found {
        Ok(())
    } else {
        Err(Failure::NotFound(format!("group {group} on {key}")))
    }
}
