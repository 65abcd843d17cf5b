//! backbone's Lua scripts, one `.lua` file each in this directory, and the one place that loads
//! them (`include_str!`). Each file starts with a comment giving its `KEYS`, `ARGV` and reply.
//!
//! Every script checks, before its first write, that the caller's ACL user may run each command
//! it calls (`require_commands.lua`, prepended to all of them: a refusal half-way would leave a
//! half-done write, and Redis 7.0 does not name the refused command). Scripts that write
//! streams also check the type of every stream they write: the file `require_stream.lua`
//! defines `require_stream(key)`, and [`with_require_stream`] prepends it to them. Field names are written literally in the scripts; the tests below check them
//! against the Rust constants ([`crate::entry`], [`crate::dead_letters`]).

use std::sync::LazyLock;

use redis::Script;

/// The shared prelude: `require_stream(key)` returns an error reply unless `key` holds a stream
/// or nothing.
macro_rules! with_require_stream {
    ($file:literal) => {
        concat!(
            include_str!("require_commands.lua"),
            include_str!("require_stream.lua"),
            include_str!($file)
        )
    };
}

/// The prelude of every script: `require_commands(calls)` returns an error reply (`NOPERM
/// backbone: …`, naming the command) unless the caller's ACL user may run each call.
macro_rules! with_require_commands {
    ($file:literal) => {
        concat!(include_str!("require_commands.lua"), include_str!($file))
    };
}

/// The prelude of the scripts that release payloads: `require_commands`, then `release(holds,
/// m, hash, objects)` (`release.lua`, see [`crate::holds`]).
macro_rules! with_release {
    ($file:literal) => {
        concat!(
            include_str!("require_commands.lua"),
            include_str!("release.lua"),
            include_str!($file)
        )
    };
}

/// `publish.lua` (with the prelude): the producer's batch of events, each its payload hash
/// (or sent-record) and its stream entry, each succeeding or failing on its own.
pub(crate) const PUBLISH_SOURCE: &str = with_require_stream!("publish.lua");
/// `dead_letter.lua` (with the prelude): acknowledges an entry and dead-letters it.
pub(crate) const DEAD_LETTER_SOURCE: &str = with_require_stream!("dead_letter.lua");
/// `replay.lua` (with the prelude): sends a dead letter's original fields again.
pub(crate) const REPLAY_SOURCE: &str = with_require_stream!("replay.lua");
/// `append.lua` (with the prelude): the event store's append.
pub(crate) const APPEND_SOURCE: &str = with_require_stream!("append.lua");
/// `trim.lua` (with the release prelude): one step of a safe trim.
pub(crate) const TRIM_SOURCE: &str = with_release!("trim.lua");
/// `purge.lua` (with the release prelude): purges dead letters, releasing their payloads.
pub(crate) const PURGE_SOURCE: &str = with_release!("purge.lua");
/// `snapshot.lua`: writes or drops an aggregate's snapshot, never moving it backwards.
pub(crate) const SNAPSHOT_SOURCE: &str = with_require_commands!("snapshot.lua");
/// `lease.lua`: renews or releases a partition's lease in an ordered group.
pub(crate) const LEASE_SOURCE: &str = with_require_commands!("lease.lua");
/// `members.lua`: joins, stays in or leaves an ordered group; returns its live members.
pub(crate) const MEMBERS_SOURCE: &str = with_require_commands!("members.lua");
/// `count.lua`: counts a range of stream entries on the server.
pub(crate) const COUNT_SOURCE: &str = with_require_commands!("count.lua");

/// `expiring_key.lua`: gets or creates a data subject's expiring key.
pub(crate) const EXPIRING_KEY_SOURCE: &str = with_require_commands!("expiring_key.lua");
/// The expiring-key script ([`EXPIRING_KEY_SOURCE`]).
pub(crate) static EXPIRING_KEY: LazyLock<Script> =
    LazyLock::new(|| Script::new(EXPIRING_KEY_SOURCE));

/// The publish script ([`PUBLISH_SOURCE`]).
pub(crate) static PUBLISH: LazyLock<Script> = LazyLock::new(|| Script::new(PUBLISH_SOURCE));
/// The dead-letter script ([`DEAD_LETTER_SOURCE`]).
pub(crate) static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| Script::new(DEAD_LETTER_SOURCE));
/// The replay script ([`REPLAY_SOURCE`]).
pub(crate) static REPLAY: LazyLock<Script> = LazyLock::new(|| Script::new(REPLAY_SOURCE));
/// The append script ([`APPEND_SOURCE`]).
pub(crate) static APPEND: LazyLock<Script> = LazyLock::new(|| Script::new(APPEND_SOURCE));
/// The trim script ([`TRIM_SOURCE`]).
pub(crate) static TRIM: LazyLock<Script> = LazyLock::new(|| Script::new(TRIM_SOURCE));
/// The purge script ([`PURGE_SOURCE`]).
pub(crate) static PURGE: LazyLock<Script> = LazyLock::new(|| Script::new(PURGE_SOURCE));
/// The snapshot script ([`SNAPSHOT_SOURCE`]).
pub(crate) static SNAPSHOT: LazyLock<Script> = LazyLock::new(|| Script::new(SNAPSHOT_SOURCE));
/// The count script ([`COUNT_SOURCE`]).
pub(crate) static COUNT: LazyLock<Script> = LazyLock::new(|| Script::new(COUNT_SOURCE));

/// The lease script ([`LEASE_SOURCE`]).
pub(crate) static LEASE: LazyLock<Script> = LazyLock::new(|| Script::new(LEASE_SOURCE));

/// The members script ([`MEMBERS_SOURCE`]).
pub(crate) static MEMBERS: LazyLock<Script> = LazyLock::new(|| Script::new(MEMBERS_SOURCE));

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::dead_letters::{
        DEAD_AT, DEAD_CONSUMER, DEAD_DELIVERIES, DEAD_GROUP, DEAD_PREFIX, DEAD_REASON,
        DEAD_STREAM_ID,
    };
    use crate::entry::{
        AGGREGATE, AGGREGATE_VERSION, KEY, MESSAGE_ID, OPERATION, PAYLOAD, POSITION, PRODUCED_AT,
        REPLAYED, VERSION,
    };

    /// The single-quoted string literals of `source`, comment lines left out.
    fn literals(source: &str) -> BTreeSet<&str> {
        let mut found = BTreeSet::new();
        for line in source.lines() {
            if line.trim_start().starts_with("--") {
                continue;
            }
            let mut parts = line.split('\'');
            parts.next();
            while let (Some(literal), Some(_)) = (parts.next(), parts.next()) {
                found.insert(literal);
            }
            // A line ending inside a literal would have an odd number of quotes.
            assert_eq!(line.matches('\'').count() % 2, 0, "odd quotes: {line}");
        }
        found
    }

    /// Asserts that the literals of `source` that look like field names (lowercase letters,
    /// `_` and `.`), apart from the script's other words (`other`), are exactly `fields`.
    fn assert_fields(script: &str, source: &str, fields: &[&str], other: &[&str]) {
        let field_like = |s: &&str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
        };
        let other: BTreeSet<&str> = other.iter().copied().collect();
        let used: BTreeSet<&str> = literals(source)
            .into_iter()
            .filter(field_like)
            .filter(|s| !other.contains(s))
            .collect();
        let expected: BTreeSet<&str> = fields.iter().copied().collect();
        assert_eq!(used, expected, "the field names of {script}");
    }

    #[test]
    fn the_publish_script_writes_the_entry_fields() {
        // The ordering key and the envelope's fields come as arguments (`entry::envelope_fields`).
        let fields = [MESSAGE_ID, OPERATION, VERSION, PRODUCED_AT, PAYLOAD];
        assert_fields(
            "publish.lua",
            PUBLISH_SOURCE,
            &fields,
            &["ok", "none", "stream", "error", "err", "table", "retry"],
        );
    }

    #[test]
    fn the_append_script_writes_the_store_fields() {
        let fields = [
            MESSAGE_ID,
            OPERATION,
            VERSION,
            PRODUCED_AT,
            KEY,
            AGGREGATE,
            AGGREGATE_VERSION,
            PAYLOAD,
            POSITION,
        ];
        let statuses = [
            "ok",
            "replay",
            "other_aggregate",
            "other_events",
            "conflict",
        ];
        let mut other = vec!["none", "stream", "hash", "exact", "appended"];
        other.extend(statuses);
        assert_fields("append.lua", APPEND_SOURCE, &fields, &other);
        // The statuses are the ones the Rust side matches.
        let append = include_str!("../store/append.rs");
        for status in statuses {
            assert!(append.contains(&format!("\"{status}\"")), "status {status}");
        }
    }

    #[test]
    fn the_dead_letter_scripts_use_the_dead_letter_fields() {
        let fields = [
            DEAD_STREAM_ID,
            DEAD_GROUP,
            DEAD_CONSUMER,
            DEAD_DELIVERIES,
            DEAD_REASON,
            DEAD_AT,
        ];
        assert!(fields.iter().all(|f| f.starts_with(DEAD_PREFIX)));
        assert_fields(
            "dead_letter.lua",
            DEAD_LETTER_SOURCE,
            &fields,
            &["ok", "none", "stream"],
        );
        assert_fields(
            "replay.lua",
            REPLAY_SOURCE,
            &[DEAD_PREFIX, REPLAYED],
            &["ok", "none", "stream"],
        );
        let prefix_test = format!(
            "string.sub(flat[i], 1, {}) ~= '{DEAD_PREFIX}'",
            DEAD_PREFIX.len()
        );
        assert!(REPLAY_SOURCE.contains(&prefix_test), "{prefix_test}");
    }

    #[test]
    fn the_other_scripts_use_no_entry_field() {
        assert_fields("trim.lua", TRIM_SOURCE, &[], &["name", "pending"]);
        let snapshot = [
            "none", "drop", "hash", "ok", "write", "version", "at", "state", "position",
        ];
        assert_fields("snapshot.lua", SNAPSHOT_SOURCE, &[], &snapshot);
        assert_fields("count.lua", COUNT_SOURCE, &[], &[]);
        assert_fields("purge.lua", PURGE_SOURCE, &[], &[]);
    }

    /// The commands `source` calls with `redis.call('X'` (not those under `pcall`, whose
    /// failure fails one event alone), and those it checks with `require_commands` (`{'X', …}`).
    fn commands(source: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let after = |marker: &str| -> BTreeSet<String> {
            source
                .match_indices(marker)
                .filter_map(|(at, _)| source[at + marker.len()..].split('\'').next())
                .filter(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase()))
                .map(str::to_owned)
                .collect()
        };
        // `pcall('X'` also matches `call('`: the pcall'ed commands are those after "pcall('",
        // which fail one event alone (publish.lua) and need no check.
        let mut called = after("call('");
        for pcalled in after("pcall('") {
            if !source.contains(&format!("redis.call('{pcalled}'")) {
                called.remove(&pcalled);
            }
        }
        (called, after("{'"))
    }

    #[test]
    fn every_script_checks_the_acl_for_each_command_it_calls_before_writing() {
        for (script, source) in [
            ("publish.lua", PUBLISH_SOURCE),
            ("dead_letter.lua", DEAD_LETTER_SOURCE),
            ("replay.lua", REPLAY_SOURCE),
            ("append.lua", APPEND_SOURCE),
            ("trim.lua", TRIM_SOURCE),
            ("purge.lua", PURGE_SOURCE),
            ("snapshot.lua", SNAPSHOT_SOURCE),
            ("count.lua", COUNT_SOURCE),
            ("expiring_key.lua", EXPIRING_KEY_SOURCE),
        ] {
            let (mut called, checked) = commands(source);
            // TYPE and GET only read: what they would refuse, nothing was written before.
            called.remove("TYPE");
            called.remove("GET");
            let unchecked: Vec<_> = called.difference(&checked).collect();
            assert!(
                unchecked.is_empty(),
                "{script} calls {unchecked:?} unchecked"
            );
            let check = source
                .find("local denied = require_commands(")
                .unwrap_or_else(|| panic!("{script} checks no command"));
            // The release prelude only defines a function that writes: the script must call it
            // after the check.
            let release = include_str!("release.lua");
            let body = source.find(release).map_or(0, |at| at + release.len());
            if body > 0 {
                let called = source[body..].find("release(").map(|at| at + body);
                assert!(
                    called.is_some_and(|at| at > check),
                    "{script} releases first"
                );
            }
            for write in [
                "'XADD'",
                "'HSET'",
                "'XACK'",
                "'SET'",
                "'DEL'",
                "'XDEL'",
                "'XTRIM'",
                "'HINCRBY'",
            ] {
                let first_call = [format!("call({write}"), format!("pcall({write}")]
                    .iter()
                    .filter_map(|call| source[body..].find(call.as_str()).map(|at| at + body))
                    .min();
                assert!(
                    first_call.is_none_or(|w| w > check),
                    "{script} writes ({write}) before checking the ACL"
                );
            }
        }
    }

    #[test]
    fn scripts_that_write_streams_check_them_first() {
        for (script, source, keys) in [
            ("publish.lua", PUBLISH_SOURCE, "require_stream(KEYS[1])"),
            (
                "dead_letter.lua",
                DEAD_LETTER_SOURCE,
                "require_stream(KEYS[2])",
            ),
            ("replay.lua", REPLAY_SOURCE, "require_stream(KEYS[2])"),
            (
                "append.lua",
                APPEND_SOURCE,
                "require_stream(KEYS[1]) or require_stream(KEYS[2])",
            ),
        ] {
            let check = format!("local refused = {keys}\nif refused then return refused end\n");
            let at = source
                .find(&check)
                .unwrap_or_else(|| panic!("{script}: {check}"));
            for write in ["'XADD'", "'HSET'", "'XACK'", "'SET'", "'DEL'", "'XDEL'"] {
                assert!(
                    source.find(write).is_none_or(|w| w > at),
                    "{script} writes ({write}) before checking its streams"
                );
            }
        }
    }
}
