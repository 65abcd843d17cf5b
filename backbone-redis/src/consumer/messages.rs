//! What the consumer's tasks send each other: the reader's [`Batch`]es to the fetcher, and
//! jobs (read or claimed) to the worker as [`Incoming`]. (The error that ends the consumer
//! takes another way, `fatal.rs`.)

use super::job::Job;
use crate::entry::RawEntry;

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
}
