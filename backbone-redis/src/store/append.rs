//! `EventStore::append`: expected version, idempotency key and the writes, in one script.

use std::sync::LazyLock;

use backbone_core::metadata::now_millis;
use backbone_core::names::check_name;
use backbone_core::store::{AppendOptions, AppendResult, ExpectedVersion};
use backbone_core::{ContractEvent, Error, MessageId};
use redis::{Script, Value};

use super::{check_aggregate_id, EventStore};
use crate::connection::redis_error;
use crate::entry::{
    AGGREGATE, AGGREGATE_VERSION, KEY, MESSAGE_ID, OPERATION, PAYLOAD, POSITION, PRODUCED_AT,
    VERSION,
};
use crate::lua::require_stream;

/// KEYS: 1 the contract's stream, 2 the aggregate's stream, 3 the stats hash,
/// [4 the idempotency record], then one payload key per event.
/// ARGV: 1 expected kind (any | none | exact), 2 expected version, 3 idempotency keys given
/// (0 | 1), 4 idempotency TTL in seconds, 5 aggregate id, 6 produced_at, 7 event count m, then
/// per event: message id, operation, version, field count n, n name/value pairs.
/// Returns {'ok' | 'replay', "<first> <last> <pos1,pos2,...>"} or {'conflict', "<current>"}.
/// Every check comes before the first write: neither Lua nor MULTI rolls back.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    let check_category = require_stream("KEYS[1]");
    let check_aggregate = require_stream("KEYS[2]");
    Script::new(&format!(
        r#"
local idem = tonumber(ARGV[3])
if idem == 1 then
  local prior = redis.call('GET', KEYS[4])
  if prior then
    return {{'replay', prior}}
  end
end
{check_category}{check_aggregate}local stats = redis.call('TYPE', KEYS[3])['ok']
if stats ~= 'hash' and stats ~= 'none' then
  return redis.error_reply('backbone: ' .. KEYS[3] .. ' holds a ' .. stats .. ', not a hash')
end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local current = 0
if #last > 0 then
  current = tonumber(string.match(last[1][1], '%-(%d+)$'))
end
if (ARGV[1] == 'none' and current ~= 0) or (ARGV[1] == 'exact' and current ~= tonumber(ARGV[2])) then
  return {{'conflict', tostring(current)}}
end
local m = tonumber(ARGV[7])
local at = 8
local positions = {{}}
for i = 1, m do
  local n = tonumber(ARGV[at + 3])
  local v = current + i
  local entry = {{'{MESSAGE_ID}', ARGV[at], '{OPERATION}', ARGV[at + 1], '{VERSION}', ARGV[at + 2],
    '{PRODUCED_AT}', ARGV[6], '{KEY}', ARGV[5], '{AGGREGATE}', ARGV[5], '{AGGREGATE_VERSION}', tostring(v)}}
  at = at + 4
  if n > 0 then
    local payload = KEYS[3 + idem + i]
    redis.call('HSET', payload, unpack(ARGV, at, at + 2 * n - 1))
    table.insert(entry, '{PAYLOAD}')
    table.insert(entry, payload)
  end
  at = at + 2 * n
  local position = redis.call('XADD', KEYS[1], '*', unpack(entry))
  table.insert(entry, '{POSITION}')
  table.insert(entry, position)
  redis.call('XADD', KEYS[2], '0-' .. v, unpack(entry))
  positions[i] = position
end
redis.call('HINCRBY', KEYS[3], 'appended', m)
local result = (current + 1) .. ' ' .. (current + m) .. ' ' .. table.concat(positions, ',')
if idem == 1 then
  redis.call('SET', KEYS[4], result, 'EX', ARGV[4])
end
return {{'ok', result}}
"#
    ))
});

impl<E: ContractEvent> EventStore<E> {
    /// Appends `events` to aggregate `aggregate_id` if its version is what `expected` says:
    /// all of them or none. A version conflict is [`Error::WrongExpectedVersion`] with the
    /// actual version. With an idempotency key seen before, nothing is written and the first
    /// append's result comes back with `replayed: true`.
    pub async fn append(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        events: &[E],
        options: AppendOptions,
    ) -> Result<AppendResult, Error> {
        check_aggregate_id(aggregate_id)?;
        if events.is_empty() {
            return Err(Error::Config(format!(
                "append to aggregate `{aggregate_id}`: no events given"
            )));
        }
        if let Some(key) = &options.idempotency_key {
            check_name("idempotency key", key, "")?;
        }
        let keys = self.keys();
        let mut invocation = APPEND.key(keys.stream());
        invocation
            .key(keys.aggregate(aggregate_id))
            .key(keys.store_stats());
        if let Some(key) = &options.idempotency_key {
            invocation.key(keys.idempotency(key));
        }
        let (kind, version) = match expected {
            ExpectedVersion::Any => ("any", 0),
            ExpectedVersion::NoStream => ("none", 0),
            ExpectedVersion::Exact(n) => ("exact", n),
        };
        invocation
            .arg(kind)
            .arg(version)
            .arg(u8::from(options.idempotency_key.is_some()))
            .arg(self.idempotency_ttl.as_secs())
            .arg(aggregate_id)
            .arg(now_millis())
            .arg(events.len());
        for event in events {
            let id = MessageId::new();
            let operation = event.operation();
            let fields = event.encode()?;
            invocation.key(keys.payload(&id));
            invocation
                .arg(id.to_string())
                .arg(operation.name)
                .arg(operation.version)
                .arg(fields.len());
            for (name, value) in fields.iter() {
                invocation.arg(name).arg(value);
            }
        }
        let context = || format!("append to aggregate `{aggregate_id}` of {}", keys.stream());
        let reply: Value = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(|e| redis_error(context(), e))?;
        let (status, text): (String, String) = redis::from_redis_value(reply)
            .map_err(|e| Error::channel(context(), format!("unexpected reply: {e}")))?;
        match status.as_str() {
            "conflict" => Err(Error::WrongExpectedVersion {
                aggregate: aggregate_id.to_owned(),
                expected: expected.to_string(),
                actual: text.parse().unwrap_or(0),
            }),
            "ok" | "replay" => parse_result(&text, status == "replay")
                .ok_or_else(|| Error::channel(context(), format!("unexpected result {text:?}"))),
            other => Err(Error::channel(
                context(),
                format!("unexpected status {other:?}"),
            )),
        }
    }
}

/// `"<first> <last> <pos1,pos2,...>"`.
fn parse_result(text: &str, replayed: bool) -> Option<AppendResult> {
    let mut parts = text.splitn(3, ' ');
    let first_version = parts.next()?.parse().ok()?;
    let version = parts.next()?.parse().ok()?;
    let positions = parts.next()?.split(',').map(str::to_owned).collect();
    Some(AppendResult {
        first_version,
        version,
        positions,
        replayed,
    })
}
