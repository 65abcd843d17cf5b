//! The bound, in bytes, on what a consumer holds read but not yet handled
//! ([`max_buffered_bytes`](super::RedisConsumerBuilder::max_buffered_bytes)): the jobs the worker
//! holds (queued, running, waiting for a retry), each counted as its entry's and its payload's
//! bytes, plus what the reads outstanding are expected to bring (reserved when a read is
//! requested). Reads ask for as many entries as the room left holds at the observed bytes per
//! entry, at most `batch_size`, and for none while the bound is reached; with nothing held or
//! reserved, always for at least one, so that a bound smaller than one entry still lets events
//! through one at a time. Claims count what is held but not what is reserved: a read blocked on
//! an idle stream must not keep a dead consumer's entries from being claimed, so a claim made
//! while reads are outstanding may take the consumer past the bound, by at most what those
//! reads bring.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Shared by the worker (reads), the fetcher and the claimer (observations, claims).
#[derive(Debug)]
pub(super) struct Budget {
    max: usize,
    /// Bytes of the jobs held.
    held: AtomicUsize,
    /// Bytes expected from the reads outstanding.
    reserved: AtomicUsize,
    /// The observed bytes per entry (entry and payload); 0 until a first batch is fetched.
    per_entry: AtomicUsize,
}

impl Budget {
    pub fn new(max: usize) -> Self {
        Budget {
            max,
            held: AtomicUsize::new(0),
            reserved: AtomicUsize::new(0),
            per_entry: AtomicUsize::new(0),
        }
    }

    /// How many entries a read may ask for now: what the room left (held and reserved bytes
    /// counted) holds at the observed size, at most `batch_size`; 0 while the bound is reached,
    /// but at least 1 when nothing is held or reserved; 1 until a size was observed (the worker
    /// then keeps one such read at a time, see [`observed`](Self::observed)).
    pub fn entries(&self, batch_size: usize) -> usize {
        let used = self.held.load(Ordering::Relaxed) + self.reserved.load(Ordering::Relaxed);
        self.room(used, batch_size)
    }

    /// How many entries a claim may take now: like [`entries`](Self::entries), counting the
    /// bytes held but not those reserved for reads.
    pub fn claimable(&self, batch_size: usize) -> usize {
        self.room(self.held.load(Ordering::Relaxed), batch_size)
    }

    fn room(&self, used: usize, batch_size: usize) -> usize {
        let per_entry = self.per_entry.load(Ordering::Relaxed);
        if per_entry == 0 {
            return 1;
        }
        match (self.max.saturating_sub(used) / per_entry).min(batch_size) {
            0 if used == 0 => 1,
            n => n,
        }
    }

    /// Whether a size per entry was observed yet.
    pub fn observed(&self) -> bool {
        self.per_entry.load(Ordering::Relaxed) > 0
    }

    /// The bytes `entries` entries are expected to take.
    pub fn estimate(&self, entries: usize) -> usize {
        entries.saturating_mul(self.per_entry.load(Ordering::Relaxed))
    }

    /// Counts `bytes` as held.
    pub fn hold(&self, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::Relaxed);
    }

    /// No longer counts `bytes` as held.
    pub fn release(&self, bytes: usize) {
        sub(&self.held, bytes);
    }

    /// Reserves `bytes` for a read requested.
    pub fn reserve(&self, bytes: usize) {
        self.reserved.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Gives back what was reserved for a read answered.
    pub fn unreserve(&self, bytes: usize) {
        sub(&self.reserved, bytes);
    }

    /// Learns from a batch of `entries` entries taking `bytes`: a larger average is adopted at
    /// once, a smaller one gradually, so that the estimate errs on the large side.
    pub fn observe(&self, bytes: usize, entries: usize) {
        if entries == 0 {
            return;
        }
        let average = (bytes / entries).max(1);
        let _ = self
            .per_entry
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(match old {
                    old if average >= old => average,
                    old => (old / 4)
                        .saturating_mul(3)
                        .saturating_add(average / 4)
                        .max(1),
                })
            });
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// `counter -= bytes`, never below zero.
fn sub(counter: &AtomicUsize, bytes: usize) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        Some(n.saturating_sub(bytes))
    });
}

#[cfg(test)]
mod tests {
    use super::Budget;

    #[test]
    fn one_entry_until_a_size_is_observed() {
        let budget = Budget::new(1000);
        assert!(!budget.observed());
        assert_eq!(budget.entries(100), 1);
        assert_eq!(budget.estimate(5), 0);
    }

    #[test]
    fn reads_shrink_to_the_room_left_and_stop_when_full() {
        let budget = Budget::new(1000);
        budget.observe(1000, 10); // 100 bytes per entry
        assert_eq!(budget.entries(100), 10);
        assert_eq!(budget.entries(4), 4, "never more than batch_size");
        budget.hold(budget.estimate(7));
        assert_eq!(budget.held(), 700);
        assert_eq!(budget.entries(100), 3);
        budget.reserve(300);
        assert_eq!(budget.entries(100), 0, "full");
        budget.unreserve(300);
        budget.release(700);
        assert_eq!(budget.held(), 0);
        budget.release(1);
        assert_eq!(budget.held(), 0, "never below zero");
    }

    #[test]
    fn claims_count_what_is_held_not_what_is_reserved() {
        let budget = Budget::new(1000);
        budget.observe(100, 1);
        budget.reserve(1000);
        assert_eq!(budget.entries(100), 0, "reads wait");
        assert_eq!(
            budget.claimable(100),
            10,
            "claims do not wait for blocked reads"
        );
        budget.hold(1000);
        assert_eq!(budget.claimable(100), 0);
    }

    #[test]
    fn at_least_one_entry_when_nothing_is_held() {
        let budget = Budget::new(10);
        budget.observe(1_000_000, 1);
        assert_eq!(budget.entries(100), 1);
        assert_eq!(budget.claimable(100), 1);
        budget.reserve(1_000_000);
        assert_eq!(budget.entries(100), 0);
        assert_eq!(budget.claimable(100), 1, "nothing held");
        budget.hold(1_000_000);
        assert_eq!(budget.claimable(100), 0);
    }

    #[test]
    fn larger_sizes_are_adopted_at_once_smaller_ones_gradually() {
        let budget = Budget::new(1 << 20);
        budget.observe(100, 1);
        budget.observe(4000, 2);
        assert_eq!(budget.estimate(1), 2000);
        budget.observe(0, 1);
        assert_eq!(budget.estimate(1), 1500);
    }
}
