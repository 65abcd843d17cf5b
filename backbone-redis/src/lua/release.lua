-- Defines release(holds, m, hash, objects, counted, gone): takes one reference to the payload
-- of event m away (see holds.rs). counted: the reference is one the holds hash counts (a dead
-- letter, a replayed entry), else it is the event's original entry. gone: the original entry
-- is no longer in the stream (or is being trimmed).
-- A counted reference decrements m's count; when it was the last one, or when the original
-- entry goes and nothing is counted, the payload is released if the original entry is gone:
-- its hash (a key, or false for none) is deleted and, when objects is '1', m is reported for
-- the caller to delete its objects.
-- Returns the number of hashes deleted (0 or 1) and whether m's objects are released.
-- It writes: call it only after every check of the calling script.
local function release(holds, m, hash, objects, counted, gone)
  local held = tonumber(redis.call('HGET', holds, m) or '0')
  if counted and held > 1 then
    redis.call('HINCRBY', holds, m, -1)
    return 0, false
  elseif counted and held == 1 then
    redis.call('HDEL', holds, m)
  elseif held > 0 then
    return 0, false
  end
  if not gone then return 0, false end
  local deleted = 0
  if hash then deleted = redis.call('DEL', hash) end
  return deleted, objects == '1'
end
