//! The Lua scripts of the Redis queue. Each runs atomically on the server, so a claim, and the
//! token check of every other operation, cannot interleave with another client's.
//!
//! Every script gets the same keys, in this order (see the module docs of `redis`):
//! `KEYS[1]` pending, `KEYS[2]` leased, `KEYS[3]` dead, `KEYS[4]` live, `KEYS[5]` ids,
//! `KEYS[6]` seq, `KEYS[7]` workers, `KEYS[8]` worker_info; and `ARGV[1]`, the prefix of job
//! hashes. Times come from the server's clock
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

/// `ARGV[2]` max, `ARGV[3]` lease in ms, `ARGV[4]` token. Takes jobs whose lease ended first
/// (a takeover never waits behind the queue), then due pending jobs (prioritized ones have the
/// lowest scores); returns the lease's end, then 7 values per job.
pub(crate) const CLAIM: &str = concat!(
    prelude!(),
    r#"
local now = now_ms()
local max = tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. s(now), 'LIMIT', 0, max)
if #ids < max then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', s(now), 'LIMIT', 0, max - #ids)
  for _, id in ipairs(due) do ids[#ids + 1] = id end
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

/// How far before the present a prioritized job's score is put in the pending set: every
/// due time of a normal job is later, so `CLAIM` (lowest score first) takes prioritized jobs
/// first, in the order they were bumped. Exact in a double (< 2^53).
pub(crate) const PRIORITY_OFFSET_MS: i64 = 1_000_000_000_000_000;

/// `ARGV[2]` the priority offset, `ARGV[3..]`: groups of kind, digest, target. Moves each of
/// those jobs that is pending to the front, due now; returns how many it moved. Claiming
/// removes the job from the pending set, so the priority lasts until the next claim.
pub(crate) const PRIORITIZE: &str = concat!(
    prelude!(),
    r#"
local now = now_ms()
local score = now - tonumber(ARGV[2])
local moved = 0
for i = 3, #ARGV, 3 do
  local id = redis.call('HGET', KEYS[5], ident(ARGV[i], ARGV[i + 1], ARGV[i + 2]))
  if id and redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], score, id)
    moved = moved + 1
  end
end
return s(moved)
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

/// Per target: pending (with leases that ended), leased, dead, and the oldest enqueue time of
/// the jobs not dead. Returns 5 values per target: target, pending, leased, dead, oldest (or
/// an empty string). It reads every job's hash: its cost grows with the queue (a status page,
/// not a hot path).
pub(crate) const TARGET_STATS: &str = concat!(
    prelude!(),
    r#"
local now = now_ms()
local stats, order = {}, {}
local function add(id, slot)
  local f = redis.call('HMGET', ARGV[1] .. id, 'target', 'enqueued_at')
  if not f[1] then return end
  local e = stats[f[1]]
  if not e then
    e = {0, 0, 0, false}
    stats[f[1]] = e
    order[#order + 1] = f[1]
  end
  e[slot] = e[slot] + 1
  local at = tonumber(f[2])
  if slot ~= 3 and at and (not e[4] or at < e[4]) then e[4] = at end
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do add(id, 1) end
local leased = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #leased, 2 do
  if tonumber(leased[i + 1]) < now then add(leased[i], 1) else add(leased[i], 2) end
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do add(id, 3) end
table.sort(order)
local out = {}
for _, t in ipairs(order) do
  local e = stats[t]
  out[#out + 1] = t
  out[#out + 1] = s(e[1])
  out[#out + 1] = s(e[2])
  out[#out + 1] = s(e[3])
  if e[4] then out[#out + 1] = s(e[4]) else out[#out + 1] = '' end
end
return out
"#
);

/// `ARGV[2]` worker id, `ARGV[3]` seen_at, `ARGV[4]` the beat (JSON), `ARGV[5]` the retention
/// cut-off. Stores the beat and drops those older than the cut-off; returns how many.
pub(crate) const WORKER_BEAT: &str = concat!(
    prelude!(),
    r#"
redis.call('ZADD', KEYS[7], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[8], ARGV[2], ARGV[4])
local old = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', '(' .. ARGV[5])
for _, id in ipairs(old) do
  redis.call('ZREM', KEYS[7], id)
  redis.call('HDEL', KEYS[8], id)
end
return s(#old)
"#
);

/// `ARGV[2]` worker id. Removes its beat; returns how many (0 or 1).
pub(crate) const FORGET_WORKER: &str = concat!(
    prelude!(),
    r#"
redis.call('HDEL', KEYS[8], ARGV[2])
return s(redis.call('ZREM', KEYS[7], ARGV[2]))
"#
);

/// `ARGV[2]` seen since (ms). Returns the beats (JSON) seen since then, most recent first.
pub(crate) const WORKERS: &str = concat!(
    prelude!(),
    r#"
local out = {}
for _, id in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[7], '+inf', ARGV[2], 'LIMIT', 0, 1000)) do
  local beat = redis.call('HGET', KEYS[8], id)
  if beat then out[#out + 1] = beat end
end
return out
"#
);
