//! Opening the personal parameters of a batch: one [`KeyStore::opening_keys`] call for the
//! subjects of every job that has sealed parameters, then each sealed value becomes its
//! plaintext again, or is marked forgotten. A value that cannot be opened makes its job a bad
//! event (dead-lettered with the reason); the key store failing fails the fetch (tried again).

use std::collections::HashMap;

use backbone_core::personal::{open_fields, KeyStore};
use backbone_core::Error;

use super::job::{Job, Payload};
use crate::entry::RawEntry;

/// Opens every job's sealed parameters; on a key store error the entries come back with it.
pub(super) async fn open(
    keys: &dyn KeyStore,
    mut jobs: Vec<Job>,
) -> Result<Vec<Job>, (Error, Vec<RawEntry>)> {
    let mut subjects: Vec<String> = Vec::new();
    for job in &jobs {
        if let (Ok(header), Payload::Fields(_)) = (&job.header, &job.payload) {
            if let (Some(subject), false) = (&header.subject, header.personal.is_empty()) {
                if !subjects.contains(subject) {
                    subjects.push(subject.clone());
                }
            }
        }
    }
    if subjects.is_empty() {
        return Ok(jobs);
    }
    let names: Vec<&str> = subjects.iter().map(String::as_str).collect();
    let found = match keys.opening_keys(&names).await {
        Ok(found) => found,
        Err(e) => return Err((e, jobs.into_iter().map(|job| job.entry).collect())),
    };
    let by_subject: HashMap<&str, _> = names.into_iter().zip(found).collect();
    for job in &mut jobs {
        let (Ok(header), Payload::Fields(fields)) = (&job.header, &mut job.payload) else {
            continue;
        };
        let Some(subject) = &header.subject else {
            continue;
        };
        let key = by_subject.get(subject.as_str()).and_then(Option::as_ref);
        if let Err(e) = open_fields(key, &header.message_id, &header.personal, fields) {
            job.header = Err(e);
        }
    }
    Ok(jobs)
}
