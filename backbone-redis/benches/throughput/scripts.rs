//! The raw baselines' Lua: the very `.lua` files the framework runs (`src/lua/`), each with the
//! `require_commands.lua` and `require_stream.lua` preludes the framework prepends, loaded with
//! `include_str!`. The baselines send them with plain redis-rs calls: no framework code runs.

/// `publish.lua`. KEYS: stream, the producer's sequence record, then one marker (payload
/// hash) per hash-layout event. ARGV: payload TTL ms ('0' for none), event count m, the
/// producer's floor, then per event: message id, operation, version, produced_at, sequence
/// number ('0' in the hash layout), a count k and k name/value pairs of further entry fields
/// (ordering key, correlation...), field count n, n name/value pairs.
pub const PUBLISH: &str = concat!(
    include_str!("../../src/lua/require_commands.lua"),
    include_str!("../../src/lua/require_stream.lua"),
    include_str!("../../src/lua/publish.lua")
);

/// `append.lua`. KEYS: stream, aggregate stream, stats hash, [idempotency record], one payload
/// hash per event. ARGV: expected kind (any | none | exact), expected version, idempotency
/// (0 | 1), its TTL (s), aggregate id, produced_at, event count m, the events' fingerprint (''
/// without idempotency), then per event: message id, operation, version, a count k and k
/// name/value pairs of further entry fields, field count n, n name/value pairs.
pub const APPEND: &str = concat!(
    include_str!("../../src/lua/require_commands.lua"),
    include_str!("../../src/lua/require_stream.lua"),
    include_str!("../../src/lua/append.lua")
);
