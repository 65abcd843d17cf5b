-- Prepended to every script. require_commands(calls) returns an error reply naming the first
-- call of calls (each {command, arguments...}, keys included) that the caller's ACL user may
-- not run, else nil. Scripts call it before their first write: Redis checks each call of a
-- script against the caller's ACL only when it is made, neither Lua nor MULTI rolls back (a
-- refused XADD after an XACK would lose the entry), and Redis 7.0's own refusal does not say
-- which command it refused.
local function require_commands(calls)
  for _, call in ipairs(calls) do
    if not redis.acl_check_cmd(unpack(call)) then
      return redis.error_reply('NOPERM backbone: this ACL user may not run ' .. call[1] ..
        ' on ' .. call[#call] .. ' (backbone_redis::acl has the rule of each role)')
    end
  end
end
