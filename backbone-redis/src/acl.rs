//! The least a Redis ACL user needs for each role, as `ACL SETUSER` rules: what a producer, a
//! consumer (claiming and dead-lettering included), an event store and an admin (trimming,
//! dead-letter replay and purge) send, and the commands their Lua scripts call (Redis checks
//! those against the caller's ACL too). Tests run every role with a user holding exactly its
//! rule.
//!
//! Each rule starts with `-@all` and allows commands only; the keys come from [`rule`], which
//! adds a key pattern: `~bb:*` for every backbone stream, or `~bb:{prod:orders}:*` for one
//! (environment `prod`, uri `orders`) — every key of a stream starts with `bb:{<env>:<uri>}:`.
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

/// A producer: `PING` (before a retried send), the publish script (`EVALSHA`, `SCRIPT LOAD`
/// after a restart) and what it calls. A producer built with `max_len` trims in the background
/// and needs [`ADMIN`]'s trim commands too; a [durable](crate::RedisProducerBuilder::durable)
/// one needs `+wait` too.
pub const PRODUCER: &str = "-@all +client|setname +ping +evalsha +script|load \
     +type +hset +exists +xadd +del +set +pexpire";

/// A consumer: creating its group, reading, acknowledging, claiming (`XAUTOCLAIM`, `XCLAIM`),
/// delivery counts (`XPENDING`), payloads (`HGETALL`), the dead-letter script (`TYPE`, `TIME`,
/// `XADD` to the group's dead-letter stream) and, with `remove_idle_consumers`, `XINFO
/// CONSUMERS` and `XGROUP DELCONSUMER`.
pub const CONSUMER: &str = "-@all +client|setname +xgroup|create +xreadgroup \
     +xack +xautoclaim +xclaim +xpending +hgetall +evalsha +script|load +type +time +xadd \
     +xinfo|consumers +xgroup|delconsumer";

/// An event store: the append script (expected version, idempotency record, payloads, both
/// streams, counters), reads, snapshots, projections' checkpoints and statistics. Consumers of
/// the store's stream need [`CONSUMER`]. (`stats` reads its three figures in one `MULTI`.)
pub const EVENT_STORE: &str = "-@all +client|setname +evalsha +script|load +multi +exec \
     +get +set +type +hset +hget +hmget +hgetall +hincrby +del +xadd +xrange +xrevrange +xlen +time";

/// An admin: safe trimming (`StreamAdmin::trim`, `trim_before`: the plan's reads and the trim
/// script) and dead letters (`DeadLetters` list, get, replay, purge).
pub const ADMIN: &str = "-@all +client|setname +evalsha +script|load +type \
     +exists +del +xlen +xrange +xrevrange +xinfo|groups +xpending +xtrim +xdel +xadd";

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
