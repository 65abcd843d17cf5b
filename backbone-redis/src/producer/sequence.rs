//! The sequence numbers of one publisher's inline events on one stream: what makes their sends
//! idempotent without a marker key per event, as Kafka's idempotent producer does.
//!
//! Each [`RedisPublisher`](super::RedisPublisher) has a producer id (a UUID v7), and per stream
//! key a [`Sequencer`]: an inline event gets the next number (from 1) when it first enters a
//! batch, and keeps it for every later attempt (the publisher's own retries, and a caller
//! sending the same [`OutgoingEvent`](backbone_core::OutgoingEvent) again while the sequencer
//! remembers its message id). The publish script keeps `bb:<tag>:seq:<producer_id>`, the
//! highest number up to which the producer's inline events are **all** written, and moves it
//! one step at a time: an event at or below it was written before; the next one is written;
//! one further on is refused (`retry`), because an earlier one is not written yet.
//!
//! Why contiguous: batches overlap (up to 4 in flight), and a failed batch's events are sent
//! again in a later batch, after batches that came after them. With a plain "highest number
//! written", a later batch landing first would make the earlier batch's retry look written
//! before, and lose it. With the contiguous record the later batch's events are refused and
//! retried until the earlier ones are written.
//!
//! So that an event whose sender gave up cannot hold the others back for ever, the publisher
//! passes its **floor** with each batch: the lowest number still pending (assigned, not yet
//! answered written, not given up). Every number below it is settled, so the script treats the
//! record as at least `floor - 1`. A number is given up when its send returns an error, or
//! when its deadline passes; its message id is forgotten then, so that sending the event again
//! gets a new number: it is written again (even if the failed send did write it, which the
//! error then said it may have: at least once, never lost).

use std::collections::{BTreeMap, HashMap, VecDeque};

use backbone_core::MessageId;
use tokio::time::Instant;

/// How many message ids of written inline events a sequencer remembers, so that the same
/// event sent again is answered "written before" (beyond them, it is written again).
pub(super) const REMEMBERED: usize = 8192;

/// The sequence numbers of one publisher on one stream.
#[derive(Debug, Default)]
pub(super) struct Sequencer {
    /// The last number given out (0: none yet).
    last: u64,
    /// Every message id with a number: pending ones, and the last [`REMEMBERED`] written.
    ids: HashMap<MessageId, u64>,
    /// The numbers not settled yet: their message id and the latest deadline of their senders.
    pending: BTreeMap<u64, (MessageId, Instant)>,
    /// Message ids of written events, oldest first, at most [`REMEMBERED`].
    written: VecDeque<(MessageId, u64)>,
}

impl Sequencer {
    /// The number of the inline event `id`, sent until `deadline`: its own if it has one, else
    /// the next.
    pub fn assign(&mut self, id: MessageId, deadline: Instant) -> u64 {
        if let Some(&seq) = self.ids.get(&id) {
            if let Some((_, until)) = self.pending.get_mut(&seq) {
                *until = (*until).max(deadline);
            }
            return seq;
        }
        self.last += 1;
        let seq = self.last;
        self.ids.insert(id, seq);
        self.pending.insert(seq, (id, deadline));
        seq
    }

    /// The lowest number not settled, after giving up those whose deadline passed by `now`
    /// (their senders have returned an error, or are about to): every number below it is
    /// settled.
    pub fn floor(&mut self, now: Instant) -> u64 {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            self.forget(seq);
        }
        self.pending
            .first_key_value()
            .map_or(self.last + 1, |(seq, _)| *seq)
    }

    /// Number `seq` is written (now or before): settled, its message id remembered.
    pub fn written(&mut self, seq: u64) {
        let Some((id, _)) = self.pending.remove(&seq) else {
            return; // settled already (a copy of the event was answered first)
        };
        self.written.push_back((id, seq));
        while self.written.len() > REMEMBERED {
            if let Some((old, old_seq)) = self.written.pop_front() {
                if self.ids.get(&old) == Some(&old_seq) {
                    self.ids.remove(&old);
                }
            }
        }
    }

    /// The send of `id` with `deadline` returned an error: unless another send of the same
    /// event lasts longer, its number is given up and its message id forgotten.
    pub fn give_up(&mut self, id: &MessageId, deadline: Instant) {
        let Some(&seq) = self.ids.get(id) else { return };
        match self.pending.get(&seq) {
            Some((_, until)) if *until <= deadline => self.forget(seq),
            _ => {}
        }
    }

    fn forget(&mut self, seq: u64) {
        if let Some((id, _)) = self.pending.remove(&seq) {
            if self.ids.get(&id) == Some(&seq) {
                self.ids.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn numbers_are_kept_across_attempts_and_the_floor_is_the_oldest_pending() {
        let mut s = Sequencer::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let (a, b, c) = (MessageId::new(), MessageId::new(), MessageId::new());
        assert_eq!(s.assign(a, later), 1);
        assert_eq!(s.assign(b, later), 2);
        assert_eq!(s.assign(a, later), 1, "a retry keeps its number");
        assert_eq!(s.floor(now), 1);
        s.written(2);
        assert_eq!(s.floor(now), 1, "1 is still pending");
        s.written(1);
        assert_eq!(s.floor(now), 3);
        assert_eq!(
            s.assign(a, later),
            1,
            "a written event sent again keeps its number"
        );
        assert_eq!(s.floor(now), 3);
        assert_eq!(s.assign(c, later), 3);
        s.give_up(&c, later);
        assert_eq!(s.floor(now), 4, "given up");
        assert_eq!(
            s.assign(c, later),
            4,
            "sent again after an error: a new number"
        );
        assert_eq!(s.floor(later), 5, "its deadline passed");
    }

    #[test]
    fn a_copy_sent_longer_keeps_the_number() {
        let mut s = Sequencer::default();
        let now = Instant::now();
        let id = MessageId::new();
        assert_eq!(s.assign(id, now + Duration::from_secs(1)), 1);
        assert_eq!(s.assign(id, now + Duration::from_secs(9)), 1);
        s.give_up(&id, now + Duration::from_secs(1));
        assert_eq!(s.floor(now), 1, "the second sender still goes on");
        assert_eq!(s.assign(id, now + Duration::from_secs(9)), 1);
    }

    #[test]
    fn remembers_a_bounded_number_of_written_ids() {
        let mut s = Sequencer::default();
        let later = Instant::now() + Duration::from_secs(5);
        let first = MessageId::new();
        s.assign(first, later);
        s.written(1);
        for _ in 0..REMEMBERED {
            let seq = s.assign(MessageId::new(), later);
            s.written(seq);
        }
        assert!(s.ids.len() <= REMEMBERED);
        assert_eq!(s.assign(first, later), REMEMBERED as u64 + 2, "forgotten");
    }
}
