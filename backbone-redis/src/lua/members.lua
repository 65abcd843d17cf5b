-- The members of an ordered consumer group, by the server's clock. KEYS[1]: the members (a
-- sorted set of member ids scored by when their membership expires, in ms); ARGV[1]: 'join'
-- (join or stay: expire ARGV[3] ms from now) or 'leave'; ARGV[2]: the member id.
-- Drops the expired members and returns the live ones, in order.
local denied = require_commands({{'TIME'}, {'ZADD', KEYS[1], '0', ARGV[2]},
  {'ZREM', KEYS[1], ARGV[2]}, {'ZREMRANGEBYSCORE', KEYS[1], '-inf', '0'},
  {'ZRANGE', KEYS[1], '0', '-1'}, {'PEXPIRE', KEYS[1], '1'}})
if denied then return denied end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if ARGV[1] == 'join' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], 10 * tonumber(ARGV[3]))
else
  redis.call('ZREM', KEYS[1], ARGV[2])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], '0', '-1')
