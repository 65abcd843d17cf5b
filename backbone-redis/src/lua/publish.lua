-- The producer's publish script: a batch of events, each its stream entry and, in the hash
-- layout, its payload hash (or sent-record).
-- KEYS[1] the stream, KEYS[2] the producer's sequence record (StreamKeys::sequence), KEYS[2 + j]
-- the marker of the j-th event in the hash layout: its payload hash when it has parameters,
-- else its sent-record (StreamKeys::sent). Inline events have no marker.
-- ARGV[1] payload TTL in ms ('0' for none), ARGV[2] the number of events m, ARGV[3] the
-- producer's floor: every sequence number below it is settled (written, or given up by its
-- sender); then per event: message id, operation, version, produced_at, its sequence number
-- ('0' in the hash layout), a count k and k name/value pairs of further entry fields (key,
-- correlation_id, causation_id, traceparent, tracestate, header.<name>, and for an inline event
-- its param.<name> fields: written as given, after produced_at), a field count n and n
-- name/value pairs (the payload hash's fields; 0 for an inline event).
-- The inline events of a batch come in increasing sequence order (copies of one event share
-- its number).
--
-- Checks the stream's type, the ACL and the sequence record before the first write: an error
-- reply proves that nothing was written (neither Lua nor MULTI rolls back). Then answers one
-- reply per event:
-- - the new entry's id: written now;
-- - false: written before (a retried send), nothing new written now. A hash-layout event's
--   marker is its own check: HSET adding no field means its payload hash, with these very
--   fields, was there already, and it was written with its entry in one run of this script.
--   Either way the marker is written again (the same HSET; a sent-record's PEXPIRE), so that a
--   WAIT after this run covers the event even on a connection that did not write it first.
--   An inline event was written before when its sequence number is at most the record's
--   (or below the floor): the record holds the highest number up to which this producer's
--   inline events were all written, so it only moves one step at a time;
-- - {'retry', text}: an inline event whose number is past the next one to write (an earlier
--   event of this producer is not written yet: its batch failed and is being retried, or is
--   still on its way). Not written; the producer sends it again, after the earlier one;
-- - {'error', text}: not written. A command that fails is called with pcall, and a payload
--   hash this run created for the event is deleted again before the script goes on, so nobody
--   ever sees it: the script is atomic. After an inline event fails, the later inline events
--   of the batch are answered 'retry'.
-- A sent-record and the sequence record live 600000 ms (the producer's SENT_TTL_MS), the
-- sequence record from its last write.
-- Prepended with require_stream.lua.
local refused = require_stream(KEYS[1])
if refused then return refused end
local stream, sequence, ttl, pcall = KEYS[1], KEYS[2], ARGV[1], redis.pcall
-- HSET and XADD run under pcall: a refusal fails that event alone, named by failed() below.
-- The other calls must not fail half-way, so the ACL is checked for those this batch makes.
local with_fields, without_fields, inline = false, false, false
do
  local at = 4
  for _ = 1, tonumber(ARGV[2]) do
    local k = tonumber(ARGV[at + 5])
    local n = tonumber(ARGV[at + 6 + 2 * k])
    if ARGV[at + 4] ~= '0' then
      inline = true
    elseif n > 0 then
      with_fields = true
    else
      without_fields = true
    end
    at = at + 7 + 2 * k + 2 * n
  end
end
local calls = {}
if with_fields then
  table.insert(calls, {'DEL', KEYS[3]})
  if ttl ~= '0' then table.insert(calls, {'PEXPIRE', KEYS[3]}) end
end
if without_fields then
  table.insert(calls, {'EXISTS', KEYS[3]})
  table.insert(calls, {'SET', KEYS[3]})
  table.insert(calls, {'PEXPIRE', KEYS[3]})
end
if inline then
  table.insert(calls, {'GET', sequence})
  table.insert(calls, {'SET', sequence})
end
local denied = require_commands(calls)
if denied then return denied end
-- The highest sequence number up to which this producer's inline events are all written.
local written = 0
if inline then
  local record = redis.pcall('GET', sequence)
  if type(record) == 'table' and record['err'] then
    return redis.error_reply('backbone: ' .. sequence .. ' cannot be read: ' .. record['err'])
  end
  if record then
    written = tonumber(record)
    if not written then
      return redis.error_reply('backbone: ' .. sequence .. ' holds ' .. record ..
        ', not a sequence number')
    end
  end
  written = math.max(written, tonumber(ARGV[3]) - 1)
end
-- The reply of a pcall that failed: NOPERM naming the command when the ACL refused it (Redis
-- 7.0 does not say which), else the key and Redis's error.
local function failed(command, key, reply)
  if string.find(reply['err'], 'run this command or subcommand', 1, true) then
    return {'error', 'NOPERM backbone: this ACL user may not run ' .. command .. ' on ' .. key}
  end
  return {'error', key .. ': ' .. reply['err']}
end
-- The new entry of the event at ARGV[at], its k further fields and, if any, its payload hash.
local function add(at, k, payload)
  if not payload then
    -- Inline events and those without parameters: the further fields last, without a table.
    return pcall('XADD', stream, '*', 'message_id', ARGV[at], 'operation', ARGV[at + 1],
      'version', ARGV[at + 2], 'produced_at', ARGV[at + 3], unpack(ARGV, at + 6, at + 5 + 2 * k))
  end
  if k == 0 then
    -- The common case of the hash layout, without building a table.
    return pcall('XADD', stream, '*', 'message_id', ARGV[at], 'operation', ARGV[at + 1],
      'version', ARGV[at + 2], 'produced_at', ARGV[at + 3], 'payload', payload)
  end
  local entry = {stream, '*', 'message_id', ARGV[at], 'operation', ARGV[at + 1],
    'version', ARGV[at + 2], 'produced_at', ARGV[at + 3]}
  for j = at + 6, at + 5 + 2 * k do
    entry[#entry + 1] = ARGV[j]
  end
  entry[#entry + 1] = 'payload'
  entry[#entry + 1] = payload
  return pcall('XADD', unpack(entry))
end
local replies = {}
local stopped = false
local hashed = 0
local at = 4
for i = 1, tonumber(ARGV[2]) do
  local k = tonumber(ARGV[at + 5])
  local fields_at = at + 6 + 2 * k
  local n = tonumber(ARGV[fields_at])
  local seq = tonumber(ARGV[at + 4])
  if seq > 0 then
    if seq <= written then
      replies[i] = false
    elseif stopped or seq ~= written + 1 then
      replies[i] = {'retry', 'inline event ' .. ARGV[at] .. ' has sequence number ' ..
        ARGV[at + 4] .. ' of ' .. sequence .. ', but ' .. string.format('%d', written + 1) ..
        ' is the next to write (an earlier send is not written yet)'}
    else
      local id = add(at, k, nil)
      if type(id) == 'table' then
        stopped = true
        replies[i] = failed('XADD', stream, id)
      else
        written = seq
        replies[i] = id
      end
    end
  else
    hashed = hashed + 1
    local marker = KEYS[2 + hashed]
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
      local payload = nil
      if n > 0 then payload = marker end
      local id = add(at, k, payload)
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
  end
  at = fields_at + 1 + 2 * n
end
if inline then
  redis.call('SET', sequence, string.format('%d', written), 'PX', 600000)
end
return replies
