-- Writes or drops an aggregate's snapshot, never moving it backwards.
-- KEYS: 1 the snapshot. ARGV: 1 mode (write | drop), 2 version, 3 state, 4 at,
-- 5 position, 6 and 7 the version and at of a snapshot the load rejected ('' when none).
-- write replaces a snapshot of a lower version, one whose version is not a number, or the
-- rejected one; drop deletes the rejected one if it is still there. Returns 1 if it wrote or
-- deleted, else 0.
local denied = require_commands({{'TYPE', KEYS[1]}, {'HMGET', KEYS[1]}, {'DEL', KEYS[1]}, {'HSET', KEYS[1]}})
if denied then return denied end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then
  if ARGV[1] == 'drop' then return 0 end
elseif kind ~= 'hash' then
  return redis.error_reply('backbone: ' .. KEYS[1] .. ' holds a ' .. kind .. ', not a hash')
else
  local current = redis.call('HMGET', KEYS[1], 'version', 'at')
  local rejected = ARGV[6] ~= '' and current[1] == ARGV[6] and (current[2] or '') == ARGV[7]
  if ARGV[1] == 'drop' then
    if rejected then redis.call('DEL', KEYS[1]) return 1 end
    return 0
  end
  local version = tonumber(current[1])
  if version ~= nil and version >= tonumber(ARGV[2]) and not rejected then return 0 end
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'state', ARGV[3], 'at', ARGV[4], 'position', ARGV[5])
return 1
