//! The raw baselines' Lua: the same checks and writes as the framework's publish script
//! (`src/producer.rs`) and append script (`src/store/append.rs`), written out by hand.

/// KEYS: stream, then one marker (payload hash) per event. ARGV: payload TTL ms ('0' for
/// none), event count m, then per event: message id, operation, version, produced_at, ordering
/// key ('' for none), field count n, n name/value pairs.
pub const PUBLISH: &str = r#"
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'stream' and kind ~= 'none' then
  return redis.error_reply('bench: ' .. KEYS[1] .. ' holds a ' .. kind .. ', not a stream')
end
local stream, ttl, pcall = KEYS[1], ARGV[1], redis.pcall
local replies = {}
local at = 3
for i = 1, tonumber(ARGV[2]) do
  local marker = KEYS[1 + i]
  local n = tonumber(ARGV[at + 5])
  local fresh
  if n > 0 then
    fresh = pcall('HSET', marker, unpack(ARGV, at + 6, at + 5 + 2 * n))
  else
    fresh = 1 - redis.call('EXISTS', marker)
  end
  if fresh == 0 then
    replies[i] = false
  elseif type(fresh) == 'table' then
    replies[i] = {'error', marker .. ': ' .. fresh['err']}
  else
    local id
    local key = ARGV[at + 4]
    if n > 0 then
      if key == '' then
        id = pcall('XADD', stream, '*', 'message_id', ARGV[at], 'operation', ARGV[at + 1], 'version', ARGV[at + 2], 'produced_at', ARGV[at + 3], 'payload', marker)
      else
        id = pcall('XADD', stream, '*', 'message_id', ARGV[at], 'operation', ARGV[at + 1], 'version', ARGV[at + 2], 'produced_at', ARGV[at + 3], 'key', key, 'payload', marker)
      end
    elseif key == '' then
      id = pcall('XADD', stream, '*', 'message_id', ARGV[at], 'operation', ARGV[at + 1], 'version', ARGV[at + 2], 'produced_at', ARGV[at + 3])
    else
      id = pcall('XADD', stream, '*', 'message_id', ARGV[at], 'operation', ARGV[at + 1], 'version', ARGV[at + 2], 'produced_at', ARGV[at + 3], 'key', key)
    end
    if type(id) == 'table' then
      if n > 0 then
        redis.call('DEL', marker)
      end
      replies[i] = {'error', stream .. ': ' .. id['err']}
    else
      if n == 0 then
        redis.call('SET', marker, id, 'PX', 600000)
      elseif ttl ~= '0' then
        redis.call('PEXPIRE', marker, ttl)
      end
      replies[i] = id
    end
  end
  at = at + 6 + 2 * n
end
return replies
"#;

/// KEYS: stream, aggregate stream, stats hash, [idempotency record], one payload hash per event.
/// ARGV: expected kind (any | none | exact), expected version, idempotency (0 | 1), its TTL (s),
/// aggregate id, produced_at, event count m, then per event: message id, operation, version,
/// field count n, n name/value pairs.
pub const APPEND: &str = r#"
local idem = tonumber(ARGV[3])
if idem == 1 then
  local prior = redis.call('GET', KEYS[4])
  if prior then
    return {'replay', prior}
  end
end
for _, key in ipairs({KEYS[1], KEYS[2]}) do
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'stream' and kind ~= 'none' then
    return redis.error_reply('bench: ' .. key .. ' holds a ' .. kind .. ', not a stream')
  end
end
local stats = redis.call('TYPE', KEYS[3])['ok']
if stats ~= 'hash' and stats ~= 'none' then
  return redis.error_reply('bench: ' .. KEYS[3] .. ' holds a ' .. stats .. ', not a hash')
end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local current = 0
if #last > 0 then
  current = tonumber(string.match(last[1][1], '%-(%d+)$'))
end
if (ARGV[1] == 'none' and current ~= 0) or (ARGV[1] == 'exact' and current ~= tonumber(ARGV[2])) then
  return {'conflict', tostring(current)}
end
local m = tonumber(ARGV[7])
local at = 8
local positions = {}
for i = 1, m do
  local n = tonumber(ARGV[at + 3])
  local v = current + i
  local entry = {'message_id', ARGV[at], 'operation', ARGV[at + 1], 'version', ARGV[at + 2],
    'produced_at', ARGV[6], 'key', ARGV[5], 'aggregate', ARGV[5], 'aggregate_version', tostring(v)}
  at = at + 4
  if n > 0 then
    local payload = KEYS[3 + idem + i]
    redis.call('HSET', payload, unpack(ARGV, at, at + 2 * n - 1))
    table.insert(entry, 'payload')
    table.insert(entry, payload)
  end
  at = at + 2 * n
  local position = redis.call('XADD', KEYS[1], '*', unpack(entry))
  table.insert(entry, 'position')
  table.insert(entry, position)
  redis.call('XADD', KEYS[2], '0-' .. v, unpack(entry))
  positions[i] = position
end
redis.call('HINCRBY', KEYS[3], 'appended', m)
local result = (current + 1) .. ' ' .. (current + m) .. ' ' .. table.concat(positions, ',')
if idem == 1 then
  redis.call('SET', KEYS[4], result, 'EX', ARGV[4])
end
return {'ok', result}
"#;
