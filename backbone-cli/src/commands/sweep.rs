//! `backbone objects sweep <uri> --orphans-older-than D | --expire D`: on every partition,
//! deletes the objects nothing refers to any more and those past a retention, from the store
//! `--objects` names, with a progress bar over the partitions.

use std::time::Duration;

use backbone_core::objects::ObjectStorage;
use serde_json::Value;

use super::{confirm, object, trim, Stream};
use crate::error::Failure;
use crate::output::Output;
use crate::progress::Progress;

pub async fn run(
    stream: &Stream,
    objects: ObjectStorage,
    orphans_older_than: Option<Duration>,
    expire: Option<Duration>,
    yes: bool,
    out: &Output,
) -> Result<(), Failure> {
    let mut what = Vec::new();
    if let Some(age) = orphans_older_than {
        what.push(format!(
            "the orphaned objects older than {}",
            humantime::format_duration(age)
        ));
    }
    if let Some(ttl) = expire {
        what.push(format!(
            "every object older than {}",
            humantime::format_duration(ttl)
        ));
    }
    let address = stream.layout.address();
    confirm(&format!("delete {} of {address}?", what.join(" and ")), yes)?;
    let usage = |e| match e {
        backbone_core::Error::Config(why) => Failure::Usage(why),
        other => Failure::Backbone(other),
    };
    let admins = trim::admins(stream, Some(objects)).await?;
    let progress = Progress::new(out, admins.len() as u64, "sweeping partitions");
    let mut rows = Vec::new();
    for (p, admin) in admins.iter().enumerate() {
        // Expired first: they are no orphans to look for any more.
        let expired = match expire {
            Some(ttl) => Value::from(admin.expire_objects(ttl).await.map_err(usage)?),
            None => Value::Null,
        };
        let orphans = match orphans_older_than {
            Some(age) => Value::from(admin.delete_orphan_objects(age).await.map_err(usage)?),
            None => Value::Null,
        };
        rows.push(object([
            ("partition", Value::from(p)),
            ("deleted_orphans", orphans),
            ("deleted_expired", expired),
        ]));
        progress.inc(1);
    }
    progress.done();
    out.rows(&["partition", "deleted_orphans", "deleted_expired"], &rows);
    Ok(())
}
