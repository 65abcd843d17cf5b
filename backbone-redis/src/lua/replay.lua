-- Replays a dead letter: its original fields (every field not starting with 'dead.', the
-- dead-letter prefix of 5 bytes) as a new entry of the original stream, marked 'replayed';
-- removes the dead letter. The dead letter's hold on the payload passes to the new entry.
-- KEYS[1] dead-letter stream, KEYS[2] original stream; ARGV[1] dead-letter id.
-- Returns the new stream id, false when there is no such dead letter.
-- Prepended with require_stream.lua.
local refused = require_stream(KEYS[2])
if refused then return refused end
local denied = require_commands({{'XRANGE', KEYS[1]}, {'XADD', KEYS[2]}, {'XDEL', KEYS[1]}})
if denied then return denied end
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return false
end
local flat = found[1][2]
local fields = {}
local marked = false
for i = 1, #flat, 2 do
  if string.sub(flat[i], 1, 5) ~= 'dead.' then
    table.insert(fields, flat[i])
    table.insert(fields, flat[i + 1])
    if flat[i] == 'replayed' then marked = true end
  end
end
if #fields == 0 then
  return redis.error_reply('backbone: dead letter ' .. ARGV[1] .. ' in ' .. KEYS[1] ..
    ' cannot be replayed: its entry was deleted or trimmed before it was dead-lettered (purge it)')
end
if not marked then
  table.insert(fields, 'replayed')
  table.insert(fields, '1')
end
local id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
