-- One step of StreamAdmin's trim: checks the plan again, then releases the payloads of the
-- entries to remove (release.lua) and trims the stream.
-- KEYS[1] stream, KEYS[2] its holds hash, KEYS[3..] the payload hashes of the planned entries.
-- ARGV[1] the MINID for XTRIM, ARGV[2] the last (newest) entry id to remove, ARGV[3] how many
-- entries are planned to go, ARGV[4] how many must stay at least, ARGV[5] g, then g group
-- names, then r and r references (message id, k: its hash is KEYS[2 + k], 0 none; objects
-- '1' or '0'; replayed '1' or '0'), one per planned entry with a payload, oldest first.
-- The original entry of a replayed one is older: it is gone, or goes in this step.
-- Returns {1, entries removed, payloads deleted, '', message ids whose objects are released}
-- or, when the plan no longer holds and nothing was written, {0, 0, 0, reason, {}}.
local function num_lt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function id_lt(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if am ~= bm then return num_lt(am, bm) end
  return num_lt(as, bs)
end
local function replan(reason) return {0, 0, 0, reason, {}} end
local last, g = ARGV[2], tonumber(ARGV[5])
local denied = require_commands({{'EXISTS', KEYS[1]}, {'XLEN', KEYS[1]}, {'XINFO', 'GROUPS', KEYS[1]},
  {'XPENDING', KEYS[1]}, {'HGET', KEYS[2]}, {'HINCRBY', KEYS[2]}, {'HDEL', KEYS[2]},
  {'DEL', KEYS[#KEYS]}, {'XTRIM', KEYS[1]}})
if denied then return denied end
if redis.call('EXISTS', KEYS[1]) == 0 then return replan('the stream is gone') end
if redis.call('XLEN', KEYS[1]) - tonumber(ARGV[3]) < tonumber(ARGV[4]) then
  return replan('the stream got shorter')
end
local infos = redis.call('XINFO', 'GROUPS', KEYS[1])
if #infos ~= g then return replan('the groups changed') end
local planned = {}
for i = 1, g do planned[ARGV[5 + i]] = i end
for _, info in ipairs(infos) do
  local f = {}
  for j = 1, #info, 2 do f[info[j]] = info[j + 1] end
  local name = f['name']
  if not planned[name] then return replan('group ' .. name .. ' is new') end
  if id_lt(f['last-delivered-id'], last) then
    return replan('group ' .. name .. ' has not read ' .. last)
  end
  if f['pending'] > 0 then
    local oldest = redis.call('XPENDING', KEYS[1], name)[2]
    if not id_lt(last, oldest) then
      return replan('entry ' .. oldest .. ' is pending in group ' .. name)
    end
  end
end
local base = 6 + g
local payloads, released = 0, {}
for i = 0, tonumber(ARGV[base]) - 1 do
  local a = base + 1 + 4 * i
  local k = tonumber(ARGV[a + 1])
  local hash = false
  if k > 0 then hash = KEYS[2 + k] end
  local deleted, objects = release(KEYS[2], ARGV[a], hash, ARGV[a + 2], ARGV[a + 3] == '1', true)
  payloads = payloads + deleted
  if objects then table.insert(released, ARGV[a]) end
end
local entries = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
return {1, entries, payloads, '', released}
