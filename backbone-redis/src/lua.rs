//! Lua snippets shared by backbone's scripts.

/// Lua that returns an error reply, before anything is written, unless `key` (a `KEYS[i]`
/// expression) holds a stream or nothing. Scripts check first and write after: neither Lua nor
/// MULTI rolls back.
pub(crate) fn require_stream(key: &str) -> String {
    format!(
        "local kind = redis.call('TYPE', {key})['ok']\n\
         if kind ~= 'stream' and kind ~= 'none' then\n  \
         return redis.error_reply('backbone: ' .. {key} .. ' holds a ' .. kind .. ', not a stream')\n\
         end\n"
    )
}
