-- Counts up to ARGV[3] entries of stream KEYS[1] from ARGV[1] to ARGV[2] (XRANGE bounds) on
-- the server, so no entry crosses the network. Returns {count, last id or ''}.
local denied = require_commands({{'XRANGE', KEYS[1]}})
if denied then return denied end
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
local n = #entries
if n == 0 then
  return {0, ''}
end
return {n, entries[n][1]}
