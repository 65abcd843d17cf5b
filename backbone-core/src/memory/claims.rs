//! Claiming on the in-memory channel, as `XAUTOCLAIM` does on Redis: every
//! `claim_min_idle / 2` a running consumer takes over the entries of its group pending for
//! another consumer since their last delivery at least `claim_min_idle` ago, counting one more
//! delivery of each. Idle time is `tokio::time`'s, so a paused clock skips it.

use std::time::Duration;

use tokio::time::Instant;

use super::consumer::MemoryConsumer;
use super::worker::Job;
use super::{lock, StreamState};
use crate::middleware::{ReadKind, ReadRequest};

/// How often a consumer claims: every `claim_min_idle / 2`, at least every 10 ms (the Redis
/// claimer's period).
pub(super) fn period(claim_min_idle: Duration) -> Duration {
    (claim_min_idle / 2).max(Duration::from_millis(10))
}

/// Gives `name` at most `room` entries of `group` pending for other consumers and idle at
/// least `min_idle`, oldest first: each now pending for `name`, delivered once more, now.
pub(super) fn claim(
    state: &mut StreamState,
    group: &str,
    name: &str,
    min_idle: Duration,
    room: usize,
) -> Vec<Job> {
    let StreamState { entries, groups } = state;
    let Some(group) = groups.get_mut(group) else {
        return Vec::new();
    };
    let now = Instant::now();
    let idle = (group.pending.iter_mut())
        .filter(|(_, p)| p.consumer != name && now.duration_since(p.delivered) >= min_idle);
    idle.take(room)
        .map(|(index, pending)| {
            pending.consumer = name.to_owned();
            pending.deliveries += 1;
            pending.delivered = now;
            Job {
                index: *index,
                event: entries[*index].clone(),
                deliveries: pending.deliveries,
            }
        })
        .collect()
}

impl MemoryConsumer {
    /// One claim round, inside the middlewares' read hooks (a read of kind
    /// [`ReadKind::Claim`]): at most `room` entries.
    pub(super) async fn claim(&self, room: usize) -> Vec<Job> {
        let mut claimed = Vec::new();
        let read = async {
            let mut state = lock(&self.stream.state);
            claimed = claim(
                &mut state,
                &self.group,
                &self.name,
                self.claim_min_idle,
                room,
            );
            Ok(claimed.len())
        };
        let request = ReadRequest {
            kind: ReadKind::Claim,
            count: room,
        };
        if let Err(e) = (self.middlewares)
            .read(&self.info, request, Box::pin(read))
            .await
        {
            tracing::warn!(error = %e, "a middleware refused the claim");
        }
        if !claimed.is_empty() {
            tracing::info!(stream = %self.address, group = %self.group, count = claimed.len(),
                "claimed idle entries");
        }
        claimed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Group, Pending};
    use crate::{Fields, OutgoingEvent};

    fn pending(consumer: &str, deliveries: u32, idle: Duration) -> Pending {
        Pending {
            consumer: consumer.to_owned(),
            deliveries,
            delivered: Instant::now() - idle,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_other_consumers_entries_idle_long_enough_are_claimed() {
        tokio::time::advance(Duration::from_secs(60)).await;
        let event = || std::sync::Arc::new(OutgoingEvent::new("tick", 1, Fields::new()));
        let mut state = StreamState {
            entries: (0..4).map(|_| event()).collect(),
            ..StreamState::default()
        };
        let mut group = Group::default();
        let secs = Duration::from_secs;
        group.pending.insert(0, pending("dead", 1, secs(31)));
        group.pending.insert(1, pending("dead", 2, secs(29)));
        group.pending.insert(2, pending("me", 1, secs(40)));
        group.pending.insert(3, pending("other", 3, secs(30)));
        state.groups.insert("g".into(), group);

        let claimed = claim(&mut state, "g", "me", secs(30), 10);
        let got: Vec<_> = claimed.iter().map(|j| (j.index, j.deliveries)).collect();
        assert_eq!(got, [(0, 2), (3, 4)]);
        let group = &state.groups["g"];
        assert_eq!(group.pending[&0].consumer, "me");
        assert_eq!(group.pending[&0].delivered, Instant::now());
        assert_eq!(group.pending[&1].consumer, "dead");
        // Entries 0 and 3 were claimed just now: not idle any more.
        let theirs = claim(&mut state, "g", "other", secs(30), 10);
        assert_eq!(theirs.iter().map(|j| j.index).collect::<Vec<_>>(), [2]);
        assert_eq!(claim(&mut state, "g", "me", secs(1), 0).len(), 0);
        assert_eq!(period(secs(30)), secs(15));
        assert_eq!(period(Duration::ZERO), Duration::from_millis(10));
    }
}
