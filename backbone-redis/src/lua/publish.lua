-- The producer's publish script: a batch of events, each its payload hash (or sent-record)
-- and its stream entry.
-- KEYS[1] the stream, KEYS[1 + i] the marker of event i: its payload hash when it has
-- parameters, else its sent-record (StreamKeys::sent).
-- ARGV[1] payload TTL in ms ('0' for none), ARGV[2] the number of events m, then per event:
-- message id, operation, version, produced_at, a count k and k name/value pairs of further
-- entry fields (key, correlation_id, causation_id, traceparent, tracestate, header.<name>:
-- written as given, after produced_at), a field count n and n name/value pairs (the payload).
--
-- Checks the stream's type before the first write: an error reply proves that nothing was
-- written (neither Lua nor MULTI rolls back). Then answers one reply per event:
-- - the new entry's id: written now;
-- - false: written before (a retried send), nothing new written now. An event's marker is its
--   own check: HSET adding no field means its payload hash, with these very fields, was there
--   already, and it was written with its entry in one run of this script. Either way the
--   marker is written again (the same HSET; a sent-record's PEXPIRE), so that a WAIT after
--   this run covers the event even on a connection that did not write it first;
-- - {'error', text}: not written. A command that fails is called with pcall, and a payload
--   hash this run created for the event is deleted again before the script goes on, so nobody
--   ever sees it: the script is atomic.
-- A sent-record lives 600000 ms (the producer's SENT_TTL_MS).
-- Prepended with require_stream.lua.
local refused = require_stream(KEYS[1])
if refused then return refused end
local stream, ttl, pcall = KEYS[1], ARGV[1], redis.pcall
-- HSET and XADD run under pcall: a refusal fails that event alone, named by failed() below.
-- The other calls must not fail half-way, so the ACL is checked for those this batch makes.
local with_fields, without_fields = false, false
do
  local at = 3
  for _ = 1, tonumber(ARGV[2]) do
    local k = tonumber(ARGV[at + 4])
    local n = tonumber(ARGV[at + 5 + 2 * k])
    if n > 0 then with_fields = true else without_fields = true end
    at = at + 6 + 2 * k + 2 * n
  end
end
local calls = {}
if with_fields then
  table.insert(calls, {'DEL', KEYS[2]})
  if ttl ~= '0' then table.insert(calls, {'PEXPIRE', KEYS[2]}) end
end
if without_fields then
  table.insert(calls, {'EXISTS', KEYS[2]})
  table.insert(calls, {'SET', KEYS[2]})
  table.insert(calls, {'PEXPIRE', KEYS[2]})
end
local denied = require_commands(calls)
if denied then return denied end
-- The reply of a pcall that failed: NOPERM naming the command when the ACL refused it (Redis
-- 7.0 does not say which), else the key and Redis's error.
local function failed(command, key, reply)
  if string.find(reply['err'], 'run this command or subcommand', 1, true) then
    return {'error', 'NOPERM backbone: this ACL user may not run ' .. command .. ' on ' .. key}
  end
  return {'error', key .. ': ' .. reply['err']}
end
local replies = {}
local at = 3
for i = 1, tonumber(ARGV[2]) do
  local marker = KEYS[1 + i]
  local k = tonumber(ARGV[at + 4])
  local fields_at = at + 5 + 2 * k
  local n = tonumber(ARGV[fields_at])
  local fresh
  if n > 0 then
    fresh = pcall('HSET', marker, unpack(ARGV, fields_at + 1, fields_at + 2 * n))
  else
    fresh = 1 - redis.call('EXISTS', marker)
  end
  if fresh == 0 then
    if n == 0 then
      redis.call('PEXPIRE', marker, 600000)
    end
    replies[i] = false
  elseif type(fresh) == 'table' then
    replies[i] = failed('HSET', marker, fresh)
  else
    local id
    if k == 0 and n > 0 then
      -- The common case, without building a table.
      id = pcall('XADD', stream, '*', 'message_id', ARGV[at], 'operation', ARGV[at + 1],
        'version', ARGV[at + 2], 'produced_at', ARGV[at + 3], 'payload', marker)
    else
      local entry = {stream, '*', 'message_id', ARGV[at], 'operation', ARGV[at + 1],
        'version', ARGV[at + 2], 'produced_at', ARGV[at + 3]}
      for j = at + 5, at + 4 + 2 * k do
        entry[#entry + 1] = ARGV[j]
      end
      if n > 0 then
        entry[#entry + 1] = 'payload'
        entry[#entry + 1] = marker
      end
      id = pcall('XADD', unpack(entry))
    end
    if type(id) == 'table' then
      if n > 0 then
        redis.call('DEL', marker)
      end
      replies[i] = failed('XADD', stream, id)
    else
      if n == 0 then
        redis.call('SET', marker, id, 'PX', 600000)
      elseif ttl ~= '0' then
        redis.call('PEXPIRE', marker, ttl)
      end
      replies[i] = id
    end
  end
  at = fields_at + 1 + 2 * n
end
return replies
