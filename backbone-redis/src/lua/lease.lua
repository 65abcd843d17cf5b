-- A partition's lease in an ordered consumer group. KEYS[1]: the lease (a string holding its
-- owner); ARGV[1]: 'renew' or 'release'; ARGV[2]: the owner; ARGV[3]: the lease's time to live
-- in ms (renew). Renew extends the lease and release deletes it, only while ARGV[2] holds it.
-- Returns 1 when done, 0 when the lease is another's or gone.
local denied = require_commands({{'GET', KEYS[1]}, {'PEXPIRE', KEYS[1], '1'}, {'DEL', KEYS[1]}})
if denied then return denied end
if redis.call('GET', KEYS[1]) ~= ARGV[2] then
  return 0
end
if ARGV[1] == 'renew' then
  return redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('DEL', KEYS[1])
