-- Prepended to the scripts that write streams. require_stream(key) returns an error reply
-- (to return at once, before anything is written) unless key holds a stream or nothing, else
-- nil. Scripts check first and write after: neither Lua nor MULTI rolls back.
local function require_stream(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'stream' and kind ~= 'none' then
    return redis.error_reply('backbone: ' .. key .. ' holds a ' .. kind .. ', not a stream')
  end
end
