-- EventStore::append: the idempotency record, the expected version and the writes, in one run.
-- KEYS: 1 the contract's stream, 2 the aggregate's stream, 3 the stats hash,
-- [4 the idempotency record], then one payload key per event.
-- ARGV: 1 expected kind (any | none | exact), 2 expected version, 3 idempotency key given
-- (0 | 1), 4 idempotency TTL in seconds, 5 aggregate id, 6 produced_at, 7 event count m,
-- 8 the events' fingerprint ('' without an idempotency key), then per event: message id,
-- operation, version, a count k and k name/value pairs of further entry fields (correlation_id,
-- causation_id, traceparent, tracestate, header.<name>; an inline event's param.<name>
-- fields), field count n, n name/value pairs (the payload hash's; 0 for an inline event, which
-- has no payload hash: its entries in both streams carry its parameters).
-- The idempotency record is "<first> <last> <pos1,pos2,...> <fingerprint> <aggregate>"
-- (records written before fingerprints existed lack the last two, and replay unchecked).
-- Returns {'ok', "<first> <last> <pos1,pos2,...>"}, {'replay' | 'other_aggregate' |
-- 'other_events', record} or {'conflict', "<current>"}.
-- Every check comes before the first write: neither Lua nor MULTI rolls back.
-- Prepended with require_stream.lua.
local idem = tonumber(ARGV[3])
if idem == 1 then
  local prior = redis.call('GET', KEYS[4])
  if prior then
    local fingerprint, aggregate = string.match(prior, '^%S+ %S+ %S+ (%x+) (%S+)$')
    if aggregate and aggregate ~= ARGV[5] then
      return {'other_aggregate', prior}
    end
    if fingerprint and fingerprint ~= ARGV[8] then
      return {'other_events', prior}
    end
    return {'replay', prior}
  end
end
local refused = require_stream(KEYS[1]) or require_stream(KEYS[2])
if refused then return refused end
local calls = {{'XREVRANGE', KEYS[2]}, {'HSET', KEYS[4 + idem] or KEYS[1]}, {'XADD', KEYS[1]},
  {'XADD', KEYS[2]}, {'HINCRBY', KEYS[3]}}
if idem == 1 then table.insert(calls, {'SET', KEYS[4]}) end
local denied = require_commands(calls)
if denied then return denied end
local stats = redis.call('TYPE', KEYS[3])['ok']
if stats ~= 'hash' and stats ~= 'none' then
  return redis.error_reply('backbone: ' .. KEYS[3] .. ' holds a ' .. stats .. ', not a hash')
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
local at = 9
local positions = {}
for i = 1, m do
  local k = tonumber(ARGV[at + 3])
  local v = current + i
  local entry = {'message_id', ARGV[at], 'operation', ARGV[at + 1], 'version', ARGV[at + 2],
    'produced_at', ARGV[6], 'key', ARGV[5], 'aggregate', ARGV[5], 'aggregate_version', tostring(v)}
  for j = at + 4, at + 3 + 2 * k do
    entry[#entry + 1] = ARGV[j]
  end
  at = at + 4 + 2 * k
  local n = tonumber(ARGV[at])
  at = at + 1
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
  redis.call('SET', KEYS[4], result .. ' ' .. ARGV[8] .. ' ' .. ARGV[5], 'EX', ARGV[4])
end
return {'ok', result}
