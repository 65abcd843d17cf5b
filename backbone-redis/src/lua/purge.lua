-- Purges dead letters and releases the payloads only they still needed (release.lua).
-- KEYS[1] the dead-letter stream, KEYS[2] the original stream, KEYS[3] its holds hash,
-- KEYS[4..] payload hashes.
-- ARGV[1] d, then d dead letters, each: its id, the original entry's stream id, and a
-- reference (message id, k: its hash is KEYS[3 + k], 0 none; objects '1' or '0'; replayed,
-- ignored: a dead letter's reference is always counted) or, for a dead letter without a
-- payload, '' 0 0 0.
-- A dead letter already gone (replayed or purged by someone else) is skipped, its reference
-- untouched. While the original entry is still in the stream, the payload stays for the trim
-- to release.
-- Returns {dead letters deleted, payloads deleted, message ids whose objects are released}.
local denied = require_commands({{'XRANGE', KEYS[1]}, {'XRANGE', KEYS[2]}, {'XDEL', KEYS[1]},
  {'HGET', KEYS[3]}, {'HINCRBY', KEYS[3]}, {'HDEL', KEYS[3]}, {'DEL', KEYS[#KEYS]}})
if denied then return denied end
local purged, payloads, released = 0, 0, {}
for i = 0, tonumber(ARGV[1]) - 1 do
  local a = 2 + 6 * i
  local id, entry, m, k, objects = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]), ARGV[a + 4]
  if #redis.call('XRANGE', KEYS[1], id, id) > 0 then
    redis.call('XDEL', KEYS[1], id)
    purged = purged + 1
    if m ~= '' then
      local gone = #redis.call('XRANGE', KEYS[2], entry, entry) == 0
      local hash = false
      if k > 0 then hash = KEYS[3 + k] end
      local deleted, freed = release(KEYS[3], m, hash, objects, true, gone)
      payloads = payloads + deleted
      if freed then table.insert(released, m) end
    end
  end
end
return {purged, payloads, released}
