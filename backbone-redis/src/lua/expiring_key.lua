-- Gets or creates one of a data subject's expiring keys (RedisKeyStore, KeyClass::Expiring).
-- KEYS: 1 the key (bbkeys:{<subject>}:t<ttl>-<bucket>), 2 the subject's index of expiring
-- keys (bbkeys:{<subject>}:expiring, a set). ARGV: 1 a new key's bytes, 2 when it expires (ms
-- since the epoch).
-- Answers the key there, else records the new one in the index (which lives as long as its
-- longest-lived key, so that forget finds every key), writes it to expire at ARGV[2] and
-- answers false.
local denied = require_commands({{'GET', KEYS[1]}, {'SADD', KEYS[2], KEYS[1]},
  {'PEXPIRETIME', KEYS[2]}, {'PEXPIREAT', KEYS[2], ARGV[2]}, {'SET', KEYS[1], ARGV[1]}})
if denied then return denied end
local there = redis.call('GET', KEYS[1])
if there then return there end
local at = tonumber(ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
if redis.call('PEXPIRETIME', KEYS[2]) < at then
  redis.call('PEXPIREAT', KEYS[2], at)
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', at)
return false
