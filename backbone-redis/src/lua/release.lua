-- Defines release(holds, m, hash, objects): takes one reference to the payload of event m
-- away (see holds.rs). While the holds hash counts other references to m, it decrements the
-- count; else it releases the payload: deletes its hash (a key, or false for none) and, when
-- objects is '1', reports m for the caller to delete its objects.
-- Returns the number of hashes deleted (0 or 1) and whether m's objects are released.
-- It writes: call it only after every check of the calling script.
local function release(holds, m, hash, objects)
  local held = tonumber(redis.call('HGET', holds, m) or '0')
  if held > 1 then
    redis.call('HINCRBY', holds, m, -1)
    return 0, false
  elseif held == 1 then
    redis.call('HDEL', holds, m)
    return 0, false
  end
  local deleted = 0
  if hash then deleted = redis.call('DEL', hash) end
  return deleted, objects == '1'
end
