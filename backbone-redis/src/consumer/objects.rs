//! Fetching the parameters a batch keeps in an object store
//! ([`Storage::Object`](backbone_core::storage::Storage::Object)), before their personal
//! parameters are opened (an object holds the sealed value). An object that is missing or is
//! not the one referred to makes its job a bad event (dead-lettered with the reason), as does
//! an entry with objects when the consumer has no object store; the store failing fails the
//! fetch (tried again).

use backbone_core::objects::ObjectStorage;
use backbone_core::Error;
use futures::future::join_all;

use super::job::{Job, Payload};
use crate::entry::RawEntry;

/// Replaces every job's object references with the objects, all jobs at once; on a store
/// error the entries come back with it.
pub(super) async fn fetch(
    objects: Option<&ObjectStorage>,
    stream: &str,
    mut jobs: Vec<Job>,
) -> Result<Vec<Job>, (Error, Vec<RawEntry>)> {
    let mut without_store = Vec::new();
    let fetches: Vec<_> = jobs
        .iter_mut()
        .enumerate()
        .filter_map(|(i, job)| {
            let Job {
                header, payload, ..
            } = job;
            let (Ok(header), Payload::Fields(fields)) = (&*header, payload) else {
                return None;
            };
            if header.objects.is_empty() {
                return None;
            }
            let Some(objects) = objects else {
                without_store.push((i, header.objects[0].clone()));
                return None;
            };
            Some(async move {
                let names = &header.objects;
                (
                    i,
                    objects
                        .fetch(stream, &header.message_id, names, fields)
                        .await,
                )
            })
        })
        .collect();
    let results = join_all(fetches).await;
    let mut failed = None;
    for (i, result) in results {
        match result {
            Ok(()) => {}
            Err(e) if e.is_bad_event() => jobs[i].header = Err(e),
            Err(e) => failed = Some(e),
        }
    }
    for (i, parameter) in without_store {
        jobs[i].header = Err(Error::BadObject {
            parameter,
            reason: "the entry keeps it in an object store, and this consumer has none \
                     (RedisConsumerBuilder::object_store)"
                .into(),
        });
    }
    match failed {
        Some(e) => Err((e, jobs.into_iter().map(|job| job.entry).collect())),
        None => Ok(jobs),
    }
}
