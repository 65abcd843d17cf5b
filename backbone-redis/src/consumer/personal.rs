//! Opening the personal parameters of a batch: one [`open_all`] (one key store call) for
//! every job with sealed parameters, then each sealed value is its plaintext again, or is
//! marked forgotten. A value that cannot be opened makes its job a bad event (dead-lettered
//! with the reason); the key store failing fails the fetch (tried again, or fatal for NOPERM).

use backbone_core::personal::{open_all, KeyStore};
use backbone_core::Error;

use super::job::{Job, Payload};
use crate::entry::RawEntry;

/// Opens every job's sealed parameters; on a key store error the entries come back with it.
pub(super) async fn open(
    keys: &dyn KeyStore,
    mut jobs: Vec<Job>,
) -> Result<Vec<Job>, (Error, Vec<RawEntry>)> {
    let mut at = Vec::new();
    let mut sealed = Vec::new();
    for (i, job) in jobs.iter_mut().enumerate() {
        let (Ok(header), Payload::Fields(fields)) = (&job.header, &mut job.payload) else {
            continue;
        };
        if let Some(one) = header.sealed(fields) {
            at.push(i);
            sealed.push(one);
        }
    }
    if sealed.is_empty() {
        return Ok(jobs);
    }
    let results = match open_all(keys, sealed).await {
        Ok(results) => results,
        Err(e) => return Err((e, jobs.into_iter().map(|job| job.entry).collect())),
    };
    for (i, result) in at.into_iter().zip(results) {
        if let Err(e) = result {
            jobs[i].header = Err(e);
        }
    }
    Ok(jobs)
}
