//! The least a Redis ACL user needs for each role, as `ACL SETUSER` rules: what a producer, a
//! consumer (claiming and dead-lettering included), an event store and an admin (trimming,
//! dead-letter replay and purge) send, and the commands their Lua scripts call (Redis checks
//! those against the caller's ACL too). Tests run every role with a user holding exactly its
//! rule.
//!
//! Each rule starts with `-@all` and allows commands only; the keys come from [`rule`], which
//! adds a key pattern: `~bb:*` for every backbone stream, or `~bb:{prod:orders}:*` for one
//! (environment `prod`, uri `orders`) — every key of a stream starts with `bb:{<env>:<uri>}:`;
//! a partitioned stream also needs its partitions' keys, `~bb:{prod:orders#*}:*`
//! ([`stream_patterns`]). On a Redis Cluster, every role also needs [`CLUSTER_CLIENT`].
//!
//! ```
//! use backbone_redis::acl;
//!
//! let rule = acl::rule(acl::PRODUCER, "bb:{prod:orders}:*");
//! assert!(rule.starts_with("-@all +client|setname"));
//! assert!(rule.ends_with(" ~bb:{prod:orders}:*"));
//! // ACL SETUSER orders-producer on >password <rule>
//! ```

/// Every role: naming the connection (`CLIENT SETNAME`). (redis-rs also sends `CLIENT SETINFO`, new in Redis 7.2, and ignores its answer.)
const CLIENT: &str = "-@all +client|setname";

/// A producer: the partition count (`SET … NX`, `GET`), `PING` (before a retried send), the publish script (`EVALSHA`, `SCRIPT LOAD`
/// after a restart) and what it calls (for inline events, `GET` and `SET` of its sequence
/// record). A producer built with `max_len` trims in the background
/// and needs [`ADMIN`]'s trim commands too; a [durable](crate::RedisProducerBuilder::durable)
/// one needs `+wait` too.
pub const PRODUCER: &str = "-@all +client|setname +ping +evalsha +script|load \
     +type +hset +exists +xadd +del +set +pexpire +get";

/// A consumer: recording and checking the partition count (`SET … NX`, `GET`), creating its group, reading, acknowledging, claiming (`XAUTOCLAIM`, `XCLAIM`),
/// delivery counts (`XPENDING`), payloads (`HGETALL`), the dead-letter script (`TYPE`, `TIME`,
/// `XADD` to the group's dead-letter stream, `HINCRBY` of the stream's holds), the group's gauges (`XINFO GROUPS`, every
/// [`group_metrics_interval`](crate::RedisConsumerBuilder::group_metrics_interval)) and, with
/// `remove_idle_consumers`, `XINFO CONSUMERS` and `XGROUP DELCONSUMER`.
pub const CONSUMER: &str = "-@all +client|setname +xgroup|create +xreadgroup \
     +xack +xautoclaim +xclaim +xpending +hgetall +evalsha +script|load +type +time +xadd \
     +xinfo|groups +xinfo|consumers +xgroup|delconsumer +set +get +hincrby";

/// An event store: the append script (expected version, idempotency record, payloads, both
/// streams, counters), reads, snapshots, projections' checkpoints and statistics. Consumers of
/// the store's stream need [`CONSUMER`]. (`stats` reads its three figures in one `MULTI`.)
pub const EVENT_STORE: &str = "-@all +client|setname +evalsha +script|load +multi +exec \
     +get +set +type +hset +hget +hmget +hgetall +hincrby +del +xadd +xrange +xrevrange +xlen +time";

/// An admin: safe trimming (`StreamAdmin::trim`, `trim_before`: the plan's reads and the trim
/// script) and dead letters (`DeadLetters` list, get, replay, purge); both release payloads
/// through the stream's holds (`HGET`, `HINCRBY`, `HDEL`), which the object sweeps read
/// (`HMGET`).
pub const ADMIN: &str = "-@all +client|setname +evalsha +script|load +type \
     +exists +del +xlen +xrange +xrevrange +xinfo|groups +xpending +xtrim +xdel +xadd \
     +hget +hmget +hincrby +hdel";

/// What a consumer of an ordered group (`RedisConsumerBuilder::ordered`) needs besides
/// [`CONSUMER`]: the membership (`members.lua`: a sorted set) and the partitions' leases
/// (`lease.lua`). Append it to the consumer's rule.
///
/// ```
/// let rule = backbone_redis::acl::rule(backbone_redis::acl::CONSUMER, "bb:*");
/// let ordered = format!("{rule} {}", backbone_redis::acl::ORDERED_GROUP);
/// ```
pub const ORDERED_GROUP: &str = "+zadd +zrem +zremrangebyscore +zrange +pexpire +del";

/// Forgetting data subjects (`RedisKeyStore::forget`): `DEL` on the key store's keys, and the
/// index of each subject's expiring keys (`SMEMBERS`, `SREM`); give it
/// [`key_store_keys`]`(prefix, true)`.
pub const FORGETTER: &str = "-@all +client|setname +del +smembers +srem";

/// What a producer or an event store needs besides its role to seal parameters with a TTL
/// (`#[personal(ttl = "...")]`): the script that creates an expiring key records it in the
/// subject's index (`SADD`) and keeps the index alive as long as its keys (`PEXPIRETIME`,
/// `PEXPIREAT`). Append it to the rule, with [`key_store_keys`]`(prefix, true)`.
pub const PERSONAL_TTL: &str = "+sadd +pexpiretime +pexpireat";

/// The key pattern of a [`RedisKeyStore`](crate::RedisKeyStore)'s keys under `prefix`
/// (`bbkeys:` by default), to append to a rule: producers and event stores seal personal
/// parameters and may create keys (`SET … NX GET`: read and write, `%RW~`), consumers only
/// read them (`%R~`). Their roles already hold the commands (`+set +get`, `+get`).
///
/// ```
/// use backbone_redis::acl;
///
/// let producer = format!("{} {}", acl::rule(acl::PRODUCER, "bb:*"), acl::key_store_keys("bbkeys:", true));
/// assert!(producer.ends_with(" ~bb:* %RW~bbkeys:*"));
/// assert_eq!(acl::key_store_keys("bbkeys:", false), "%R~bbkeys:*");
/// ```
pub fn key_store_keys(prefix: &str, sealing: bool) -> String {
    let access = if sealing { "RW" } else { "R" };
    format!("%{access}~{prefix}*")
}

/// What redis-rs's cluster client sends besides a role's commands: `CLUSTER SLOTS` (the slot
/// map) and `ASKING` (during a slot migration). Append it to a role's rule on a cluster.
///
/// ```
/// let rule = backbone_redis::acl::rule(backbone_redis::acl::PRODUCER, "bb:*");
/// let on_a_cluster = format!("{rule} {}", backbone_redis::acl::CLUSTER_CLIENT);
/// ```
pub const CLUSTER_CLIENT: &str = "+cluster|slots +asking";

/// The key patterns of one stream of `partitions` partitions, for [`rule`]: `bb:{<address>}:*`,
/// and `bb:{<address>#*}:*` when partitioned.
///
/// ```
/// use backbone_redis::acl;
///
/// assert_eq!(acl::stream_patterns("prod:orders", 1), "bb:{prod:orders}:*");
/// assert_eq!(acl::stream_patterns("prod:orders", 6), "bb:{prod:orders}:* ~bb:{prod:orders#*}:*");
/// ```
pub fn stream_patterns(address: &str, partitions: u16) -> String {
    if partitions <= 1 {
        format!("bb:{{{address}}}:*")
    } else {
        format!("bb:{{{address}}}:* ~bb:{{{address}#*}}:*")
    }
}

/// `commands` (one of the role constants) with access to the keys matching `key_pattern`.
///
/// ```
/// let rule = backbone_redis::acl::rule(backbone_redis::acl::CONSUMER, "bb:*");
/// assert!(rule.contains("+xreadgroup") && rule.ends_with(" ~bb:*"));
/// ```
pub fn rule(commands: &str, key_pattern: &str) -> String {
    debug_assert!(commands.starts_with(CLIENT));
    format!("{commands} ~{key_pattern}")
}
