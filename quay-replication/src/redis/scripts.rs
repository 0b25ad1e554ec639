//! The Lua scripts of the Redis queue. Each runs atomically on the server, so a claim, and the
//! token check of every other operation, cannot interleave with another client's.
//!
//! Every script gets the same keys, in this order (see the module docs of `redis`):
//! `KEYS[1]` pending, `KEYS[2]` leased, `KEYS[3]` dead, `KEYS[4]` live, `KEYS[5]` ids,
//! `KEYS[6]` seq; and `ARGV[1]`, the prefix of job hashes. Times come from the server's clock
//! (`TIME`), so workers with skewed clocks still agree on when a lease ends. Numbers go back to
//! the client as decimal strings, and "lease lost" as a nil reply.

/// Shared helpers, prepended to every script.
macro_rules! prelude {
    () => {
        r#"
-- Effects replication, so that TIME may precede writes (the default from Redis 7 on).
if redis.replicate_commands then pcall(redis.replicate_commands) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function s(n) return string.format('%d', n) end
local function ident(kind, digest, target) return kind .. ' ' .. digest .. ' ' .. target end
local function held(key, token) return redis.call('HGET', key, 'token') == token end
local FIELDS = {'kind', 'digest', 'target', 'attempts', 'enqueued_at', 'last_error'}
-- Appends a job as 7 values: id, kind, digest, target, attempts, enqueued_at, last_error.
local function push_job(out, id, key)
  local f = redis.call('HMGET', key, unpack(FIELDS))
  out[#out + 1] = id
  for i = 1, 6 do out[#out + 1] = f[i] end
end
"#
    };
}

/// `ARGV[2..]`: groups of kind, digest, target, enqueued_at (empty: now). Returns how many jobs
/// were new.
pub(crate) const ENQUEUE: &str = concat!(
    prelude!(),
    r#"
local now = now_ms()
local added = 0
for i = 2, #ARGV, 4 do
  local id_key = ident(ARGV[i], ARGV[i + 1], ARGV[i + 2])
  if redis.call('HEXISTS', KEYS[5], id_key) == 0 then
    local id = s(redis.call('INCR', KEYS[6]))
    local at = now
    if ARGV[i + 3] ~= '' then at = tonumber(ARGV[i + 3]) end
    redis.call('HSET', ARGV[1] .. id, 'kind', ARGV[i], 'digest', ARGV[i + 1],
      'target', ARGV[i + 2], 'attempts', '0', 'enqueued_at', s(at))
    redis.call('HSET', KEYS[5], id_key, id)
    redis.call('ZADD', KEYS[1], now, id)
    redis.call('ZADD', KEYS[4], at, id)
    added = added + 1
  end
end
return s(added)
"#
);

/// `ARGV[2]` max, `ARGV[3]` lease in ms, `ARGV[4]` token. Takes due pending jobs first, then
/// jobs whose lease ended; returns the lease's end, then 7 values per job.
pub(crate) const CLAIM: &str = concat!(
    prelude!(),
    r#"
local now = now_ms()
local max = tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', s(now), 'LIMIT', 0, max)
if #ids < max then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. s(now), 'LIMIT', 0, max - #ids)
  for _, id in ipairs(expired) do ids[#ids + 1] = id end
end
local expires = now + tonumber(ARGV[3])
local out = {s(expires)}
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  redis.call('ZREM', KEYS[1], id)
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZADD', KEYS[2], expires, id)
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HSET', key, 'token', ARGV[4])
    push_job(out, id, key)
  else
    -- An index entry without its job cannot be claimed; drop it.
    redis.call('ZREM', KEYS[2], id)
  end
end
return out
"#
);

/// `ARGV[2]` id, `ARGV[3]` token, `ARGV[4]` extension in ms. Returns the lease's new end.
pub(crate) const HEARTBEAT: &str = concat!(
    prelude!(),
    r#"
local key = ARGV[1] .. ARGV[2]
if not held(key, ARGV[3]) then return false end
local expires = now_ms() + tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], expires, ARGV[2])
return s(expires)
"#
);

/// `ARGV[2]` id, `ARGV[3]` token. Removes the job and its identity.
pub(crate) const COMPLETE: &str = concat!(
    prelude!(),
    r#"
local key = ARGV[1] .. ARGV[2]
if not held(key, ARGV[3]) then return false end
local f = redis.call('HMGET', key, 'kind', 'digest', 'target')
redis.call('HDEL', KEYS[5], ident(f[1], f[2], f[3]))
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('DEL', key)
return '1'
"#
);

/// `ARGV[2]` id, `ARGV[3]` token, `ARGV[4]` error, `ARGV[5]` max attempts, `ARGV[6]` back-off
/// in ms. Returns `dead`, or when the job is due again.
pub(crate) const FAIL: &str = concat!(
    prelude!(),
    r#"
local key = ARGV[1] .. ARGV[2]
if not held(key, ARGV[3]) then return false end
local attempts = tonumber(redis.call('HGET', key, 'attempts')) or 0
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', key, 'token')
redis.call('HSET', key, 'last_error', ARGV[4])
if attempts >= tonumber(ARGV[5]) then
  redis.call('ZREM', KEYS[4], ARGV[2])
  redis.call('ZADD', KEYS[3], tonumber(ARGV[2]), ARGV[2])
  return 'dead'
end
local due = now_ms() + tonumber(ARGV[6])
redis.call('ZADD', KEYS[1], due, ARGV[2])
return s(due)
"#
);

/// `ARGV[2]` id, `ARGV[3]` token, `ARGV[4]` delay in ms. Gives the attempt back; returns when
/// the job is due again.
pub(crate) const DEFER: &str = concat!(
    prelude!(),
    r#"
local key = ARGV[1] .. ARGV[2]
if not held(key, ARGV[3]) then return false end
local attempts = tonumber(redis.call('HGET', key, 'attempts')) or 0
if attempts > 0 then redis.call('HSET', key, 'attempts', s(attempts - 1)) end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', key, 'token')
local due = now_ms() + tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], due, ARGV[2])
return s(due)
"#
);

/// Returns pending, pending again (lease ended), leased, dead, and the enqueue time of the
/// oldest job not dead (nil if none), read at one instant.
pub(crate) const STATS: &str = concat!(
    prelude!(),
    r#"
local now = now_ms()
local oldest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
local first = false
if #oldest == 2 then first = s(tonumber(oldest[2])) end
return {
  s(redis.call('ZCARD', KEYS[1])),
  s(redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. s(now))),
  s(redis.call('ZCOUNT', KEYS[2], s(now), '+inf')),
  s(redis.call('ZCARD', KEYS[3])),
  first,
}
"#
);

/// `ARGV[2]` limit (at least 1). Returns 7 values per dead job, oldest first.
pub(crate) const DEAD_JOBS: &str = concat!(
    prelude!(),
    r#"
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, tonumber(ARGV[2]) - 1)) do
  local key = ARGV[1] .. id
  if redis.call('EXISTS', key) == 1 then push_job(out, id, key) end
end
return out
"#
);

/// `ARGV[2]` batch size. Puts up to that many dead jobs back, due now, attempts reset;
/// returns how many.
pub(crate) const RETRY_DEAD: &str = concat!(
    prelude!(),
    r#"
local now = now_ms()
local ids = redis.call('ZRANGE', KEYS[3], 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  redis.call('ZREM', KEYS[3], id)
  local at = redis.call('HGET', key, 'enqueued_at')
  if at then
    redis.call('HSET', key, 'attempts', '0')
    redis.call('ZADD', KEYS[1], now, id)
    redis.call('ZADD', KEYS[4], tonumber(at), id)
  end
end
return s(#ids)
"#
);
