//! The Redis key layout of one stream: every key shares one `{hash tag}`, so a stream, its
//! payload hashes and (later) its dead letters live in one Redis Cluster slot and can be written
//! by one script.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `bb:{<env>:<uri>}:events` | stream | one entry per event: `message_id`, `operation`, `version`, `produced_at`, `payload` |
//! | `bb:{<env>:<uri>}:payload:<message_id>` | hash | one field per parameter: name → JSON |
//! | `bb:{<env>:<uri>}:sent:<message_id>` | string | for operations without parameters only: the stream id of a sent event, 10 minutes; makes a resend idempotent (for the others the payload hash is the marker) |
//! | `bb:{<env>:<uri>}:seq:<producer_id>` | string | for inline events only: the last sequence number a producer wrote to this stream, 10 minutes after its last write; makes a resend idempotent |
//! | `bb:{<env>:<uri>}:dead:<group>` | stream | the group's dead letters |
//! | `bb:{<env>:<uri>}:holds` | hash | message id → how many references to the event's payload (its hash or its objects) there are besides the first: one per dead letter and per replayed entry; trimming and purging release the payload only at 0 |
//! | `bb:{<env>:<uri>}:agg:<aggregate>` | stream | the event store: one aggregate's events, entry ids `0-<version>` |
//! | `bb:{<env>:<uri>}:idem:<key>` | string | an append under its idempotency key, for the idempotency TTL: `<first> <last> <positions> <sha1 of the events> <aggregate>`; the same key with another aggregate or other events is refused (`Error::IdempotencyKeyReused`) |
//! | `bb:{<env>:<uri>}:snap:<name>:<aggregate>` | hash | a snapshot: `version`, `position` (of that event), `state` (JSON), `at` |
//! | `bb:{<env>:<uri>}:proj:<name>` | hash | a projection's checkpoint: `position`, `state` (JSON), `at` |
//! | `bb:{<env>:<uri>}:stats` | hash | the store's counters: `appended` |
//! | `bb:{<env>:<uri>#<p>}:lease:<group>` | string | ordered groups: the member owning partition `p`, with a TTL |
//! | `bb:{<env>:<uri>}:members:<group>` | sorted set | ordered groups: member ids scored by when their membership expires (ms) |
//! | `bb:{<env>:<uri>}:partitions` | string | the stream's partition count, written by the first producer, consumer or store to start |
//!
//! Without an environment the tag is `{<uri>}`. A stream of `n > 1` partitions (see
//! [`Layout`](crate::layout::Layout)) has these keys once per partition `p` in `0..n`, under
//! the tag `{<env>:<uri>#<p>}`, so that partitions spread over a cluster's masters; its
//! partition count is recorded in `bb:{<env>:<uri>}:partitions` (a string, the count).

use backbone_core::{MessageId, StreamAddress};

/// The keys of one (environment, uri).
///
/// ```
/// use backbone_core::{MessageId, StreamAddress};
/// use backbone_redis::keys::StreamKeys;
///
/// let keys = StreamKeys::new(&StreamAddress::new(Some("prod"), "orders").unwrap());
/// assert_eq!(keys.stream(), "bb:{prod:orders}:events");
/// let id: MessageId = "0190b3a0-0000-7000-8000-000000000000".parse().unwrap();
/// assert_eq!(keys.payload(&id), "bb:{prod:orders}:payload:0190b3a0-0000-7000-8000-000000000000");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKeys {
    prefix: String,
    stream: String,
}

impl StreamKeys {
    /// The keys of `address`.
    pub fn new(address: &StreamAddress) -> Self {
        let prefix = format!("bb:{{{address}}}");
        let stream = format!("{prefix}:events");
        StreamKeys { prefix, stream }
    }

    /// The keys of partition `index` of a stream of `count` partitions: with one partition,
    /// the same as [`new`](Self::new).
    ///
    /// ```
    /// use backbone_core::StreamAddress;
    /// use backbone_redis::keys::StreamKeys;
    ///
    /// let orders = StreamAddress::new(Some("prod"), "orders").unwrap();
    /// assert_eq!(StreamKeys::partition(&orders, 2, 6).stream(), "bb:{prod:orders#2}:events");
    /// assert_eq!(StreamKeys::partition(&orders, 0, 1), StreamKeys::new(&orders));
    /// ```
    pub fn partition(address: &StreamAddress, index: u16, count: u16) -> Self {
        if count <= 1 {
            return Self::new(address);
        }
        let prefix = format!("bb:{{{address}#{index}}}");
        let stream = format!("{prefix}:events");
        StreamKeys { prefix, stream }
    }

    /// The stream holding the events' metadata.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The hash holding the parameters of event `id`.
    pub fn payload(&self, id: &MessageId) -> String {
        format!("{}:payload:{id}", self.prefix)
    }

    /// The prefix of every payload hash (`<prefix>:payload:`), for scans and scripts.
    pub fn payload_prefix(&self) -> String {
        format!("{}:payload:", self.prefix)
    }

    /// The short-lived record that event `id` was sent (its stream id), checked by the publish
    /// script so that a retried send writes nothing twice.
    pub fn sent(&self, id: &MessageId) -> String {
        format!("{}:sent:{id}", self.prefix)
    }

    /// The prefix of every sent-record (`<prefix>:sent:`).
    pub(crate) fn sent_prefix(&self) -> String {
        format!("{}:sent:", self.prefix)
    }

    /// The record of the last sequence number producer `producer_id` wrote to this stream
    /// (inline events, see [`Storage::Inline`](backbone_core::storage::Storage::Inline)): the
    /// publish script's idempotency check for them; internal, 10 minutes after the last write.
    ///
    /// ```
    /// use backbone_core::StreamAddress;
    /// use backbone_redis::keys::StreamKeys;
    ///
    /// let keys = StreamKeys::new(&StreamAddress::new(Some("prod"), "orders").unwrap());
    /// let producer = "019b76da-a800-7000-8000-000000000001";
    /// assert_eq!(keys.sequence(producer), format!("bb:{{prod:orders}}:seq:{producer}"));
    /// ```
    pub fn sequence(&self, producer_id: &str) -> String {
        format!("{}:seq:{producer_id}", self.prefix)
    }

    /// The count of extra references to each event's payload (see the table above): written
    /// by dead-lettering, read and decremented by trimming and purging, which release a payload
    /// hash or an event's objects only when no dead letter or replayed entry still needs them.
    ///
    /// ```
    /// use backbone_core::StreamAddress;
    /// use backbone_redis::keys::StreamKeys;
    ///
    /// let keys = StreamKeys::new(&StreamAddress::new(Some("prod"), "orders").unwrap());
    /// assert_eq!(keys.holds(), "bb:{prod:orders}:holds");
    /// ```
    pub fn holds(&self) -> String {
        format!("{}:holds", self.prefix)
    }

    /// The event-store stream of one aggregate.
    pub fn aggregate(&self, aggregate_id: &str) -> String {
        format!("{}:agg:{aggregate_id}", self.prefix)
    }

    /// The record of an append made with idempotency key `key`.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.prefix)
    }

    /// The snapshot of aggregate state `name` for one aggregate.
    pub fn snapshot(&self, name: &str, aggregate_id: &str) -> String {
        format!("{}:snap:{name}:{aggregate_id}", self.prefix)
    }

    /// The checkpoint of projection `name`.
    pub fn projection(&self, name: &str) -> String {
        format!("{}:proj:{name}", self.prefix)
    }

    /// The record of a stream's partition count (kept in the unpartitioned tag).
    pub fn partition_count(&self) -> String {
        format!("{}:partitions", self.prefix)
    }

    /// The lease of this partition in ordered group `group`: its owner, while it lives.
    pub fn lease(&self, group: &str) -> String {
        format!("{}:lease:{group}", self.prefix)
    }

    /// The members of ordered group `group` (kept in the unpartitioned tag): a sorted set of
    /// member ids scored by when each one's membership expires (ms).
    pub fn members(&self, group: &str) -> String {
        format!("{}:members:{group}", self.prefix)
    }

    /// The event store's counters.
    pub fn store_stats(&self) -> String {
        format!("{}:stats", self.prefix)
    }

    /// The dead-letter stream of `group`.
    ///
    /// ```
    /// use backbone_core::StreamAddress;
    /// use backbone_redis::keys::StreamKeys;
    ///
    /// let keys = StreamKeys::new(&StreamAddress::new(None, "orders").unwrap());
    /// assert_eq!(keys.dead_letters("billing"), "bb:{orders}:dead:billing");
    /// ```
    pub fn dead_letters(&self, group: &str) -> String {
        format!("{}:dead:{group}", self.prefix)
    }
}
