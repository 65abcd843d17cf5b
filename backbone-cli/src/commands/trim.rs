//! `backbone trim <uri> --max-len N | --before ID`: safe trimming of every partition, with
//! what it removed (entries, payloads, objects through `--objects`) and what held it back,
//! with a progress bar over the partitions.

use backbone_core::objects::ObjectStorage;
use backbone_redis::StreamAdmin;
use serde_json::Value;

use super::objects::without_store;
use super::{confirm, object, Stream};
use crate::error::Failure;
use crate::output::Output;
use crate::progress::Progress;

pub async fn run(
    stream: &Stream,
    max_len: Option<u64>,
    before: Option<&str>,
    objects: Option<ObjectStorage>,
    yes: bool,
    out: &Output,
) -> Result<(), Failure> {
    let what = match (max_len, before) {
        (Some(n), _) => format!("to about {n} entries per partition"),
        (None, Some(id)) => format!("before {id}"),
        (None, None) => return Err(Failure::Usage("give --max-len N or --before ID".into())),
    };
    confirm(&format!("trim {} {what}?", stream.layout.address()), yes)?;
    let has_store = objects.is_some();
    let mut rows = Vec::new();
    let admins = admins(stream, objects).await?;
    let progress = Progress::new(out, admins.len() as u64, "trimming partitions");
    for (p, admin) in admins.iter().enumerate() {
        let report = match (max_len, before) {
            (Some(n), _) => admin
                .trim(n)
                .await
                .map_err(|e| without_store(e, has_store))?,
            (None, Some(id)) => admin.trim_before(id).await.map_err(|e| {
                match without_store(e, has_store) {
                    // A malformed `--before`.
                    Failure::Backbone(backbone_core::Error::Config(why)) => Failure::Usage(why),
                    other => other,
                }
            })?,
            (None, None) => unreachable!("checked above"),
        };
        rows.push(object([
            ("partition", Value::from(p)),
            ("removed_entries", Value::from(report.entries)),
            ("removed_payloads", Value::from(report.payloads)),
            ("removed_objects", Value::from(report.objects)),
            (
                "held_back_by",
                report.held_back_by.map_or(Value::Null, Value::from),
            ),
            ("length", Value::from(admin.len().await?)),
        ]));
        progress.inc(1);
    }
    progress.done();
    out.rows(
        &[
            "partition",
            "removed_entries",
            "removed_payloads",
            "removed_objects",
            "held_back_by",
            "length",
        ],
        &rows,
    );
    Ok(())
}

/// An admin for each partition of `stream`, deleting objects from `objects` when given.
pub async fn admins(
    stream: &Stream,
    objects: Option<ObjectStorage>,
) -> Result<Vec<StreamAdmin>, Failure> {
    let admins = StreamAdmin::open_partitions(&stream.settings).await?;
    Ok(match objects {
        None => admins,
        Some(objects) => admins
            .into_iter()
            .map(|admin| admin.object_store(objects.clone()))
            .collect(),
    })
}
