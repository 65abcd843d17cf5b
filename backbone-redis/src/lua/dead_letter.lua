-- Dead-letters one entry: acknowledges it for the group and appends it to the group's
-- dead-letter stream.
-- KEYS[1] stream, KEYS[2] the group's dead-letter stream, KEYS[3] the stream's holds hash.
-- ARGV: entry id, group, consumer, deliveries, reason, the message id whose payload (hash or
-- objects) the dead letter holds ('' none), field count n, then n name/value pairs of the
-- original entry (n = 0 when it was deleted). dead.at comes from the server's TIME.
-- The hold (HINCRBY of the message id in KEYS[3]) keeps trimming and purging from releasing
-- the payload while the dead letter needs it.
-- Returns 1, or 0 (writing nothing) when the entry is no longer pending for the group.
-- Every check comes before the first write: neither Lua nor MULTI rolls back.
-- Prepended with require_stream.lua.
local refused = require_stream(KEYS[2])
if refused then return refused end
local denied = require_commands({{'XPENDING', KEYS[1]}, {'TIME'}, {'XACK', KEYS[1]}, {'XADD', KEYS[2]},
  {'HINCRBY', KEYS[3]}})
if denied then return denied end
if #redis.call('XPENDING', KEYS[1], ARGV[2], ARGV[1], ARGV[1], 1) == 0 then
  return 0
end
local t = redis.call('TIME')
local at = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
local n = tonumber(ARGV[7])
local fields = {}
for i = 8, 7 + 2 * n do
  table.insert(fields, ARGV[i])
end
for _, f in ipairs({'dead.stream_id', ARGV[1], 'dead.group', ARGV[2], 'dead.consumer', ARGV[3],
    'dead.deliveries', ARGV[4], 'dead.reason', ARGV[5], 'dead.at', at}) do
  table.insert(fields, f)
end
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('XADD', KEYS[2], '*', unpack(fields))
if ARGV[6] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[6], 1) end
return 1
