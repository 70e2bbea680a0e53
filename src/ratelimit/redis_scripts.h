// The Lua scripts of RedisLimiter (see redis_limiter.h). Their arithmetic is
// checks.cpp's, line for line: drained / bucket_outcome / budget_outcome /
// concurrency_outcome and the UTC calendar; keep the two in step (the Redis
// tests run the same cases as the local ones).
#pragma once

namespace llmpool::ratelimit::scripts {

// The Lua both kAdmit and kFinish start with (redis_limiter.cpp puts it in
// front of them). A subject's buckets and budgets share one hash (FIELDS:
// requests level and time, tokens level and time, day and its usage, month
// and its usage; AT[kind] is where a kind's pair starts). A script reads each
// hash once (HMGET), works on the values in memory (so each of a batch's
// requests sees the ones before it), and writes what changed once (HSET,
// PEXPIRE), however many limits and requests the call holds.
inline constexpr const char* kHashes = R"lua(
local FIELDS = {'rl', 'rt', 'tl', 'tt', 'dp', 'du', 'mp', 'mu'}
local AT = {[1] = 1, [2] = 3, [4] = 5, [5] = 7}
local hashes, order = {}, {}
local function hash_of(key)
  local h = hashes[key]
  if not h then
    h = {v = redis.call('HMGET', key, unpack(FIELDS)), dirty = {}, ttl = 0}
    hashes[key] = h
    order[#order + 1] = key
  end
  return h
end
-- Sets the pair at AT `at` to a, b; the hash must then live `ttl` ms more.
-- An admission's put sets the hash's expiry to what it needs (`sets`); a
-- finish's only ever makes it longer.
local function put(key, at, a, b, ttl, sets)
  local h = hash_of(key)
  h.v[at] = a
  h.v[at + 1] = b
  h.dirty[at] = true
  if ttl > h.ttl then h.ttl = ttl end
  if sets then h.sets = true end
end
-- Writes what put() set, once per hash.
local function write_hashes()
  for _, key in ipairs(order) do
    local h = hashes[key]
    local set = {}
    for at = 1, 7, 2 do
      if h.dirty[at] then
        local a = h.v[at]
        if at <= 3 then a = string.format('%.17g', a) end  -- a bucket's level
        set[#set + 1] = FIELDS[at]
        set[#set + 1] = a
        set[#set + 1] = FIELDS[at + 1]
        set[#set + 1] = h.v[at + 1]
      end
    end
    if #set > 0 then
      redis.call('HSET', key, unpack(set))
      if h.ttl > 0 and (h.sets or redis.call('PTTL', key) < h.ttl) then
        redis.call('PEXPIRE', key, h.ttl)
      end
    end
  end
end
-- The call's clock, and where the next part's ARGV (A) and KEYS (K) start:
-- a round call (kFinish's part, then kAdmit's) reads its arguments in turn.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local A, K = 1, 0
)lua";

// One call admits a batch of requests, in order, each as if alone: all of
// its checks pass and are charged, or nothing of it is. KEYS: each request's
// checks' keys, one after another: a concurrency check's ZSET of leases, or
// the subject's hash (kHashes; several checks name the same one). ARGV[A]
// lease ttl (ms), ARGV[A + 1] the number of requests, then per request: its
// ticket, its number of checks n, and per check: kind, limit, cost, want.
// A check passes when `cost` fits; what it then charges (its grant) is
// `want` (>= cost) or, if less fits, all that fits: an allotment
// (redis_limiter.h) takes `want` and admits from the rest locally. A grant
// of g > 1 leases is g members of the ZSET, <ticket>.1 .. <ticket>.g.
// Returns {now_ms, day, month, then per request: admitted 0|1, and per check:
// ok, remaining (after the grant), reset_ms, retry_ms, grant}.
inline constexpr const char* kAdmit = R"lua(
local function floor_div(a, b) return math.floor(a / b) end
local function month_of(day)
  local z = day + 719468
  local era = floor_div(z, 146097)
  local doe = z - era * 146097
  local yoe = floor_div(doe - floor_div(doe, 1460) + floor_div(doe, 36524) - floor_div(doe, 146096), 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + floor_div(yoe, 4) - floor_div(yoe, 100))
  local mp = floor_div(5 * doy + 2, 153)
  local m
  if mp < 10 then m = mp + 3 else m = mp - 9 end
  if m <= 2 then y = y + 1 end
  return y * 12 + (m - 1)
end
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor_div(y, 400)
  local yoe = y - era * 400
  local mm
  if m > 2 then mm = m - 3 else mm = m + 9 end
  local doy = floor_div(153 * mm + 2, 5) + d - 1
  local doe = yoe * 365 + floor_div(yoe, 4) - floor_div(yoe, 100) + doy
  return era * 146097 + doe - 719468
end
local function month_end(month)
  local nxt = month + 1
  local y = floor_div(nxt, 12)
  return days_from_civil(y, nxt - y * 12 + 1, 1) * 86400000
end

local ttl = tonumber(ARGV[A])
local m = tonumber(ARGV[A + 1])
local day = floor_div(now, 86400000)
local month = month_of(day)
local out = {now, day, month}
-- A ZSET of leases is purged and counted once per call, then counted in memory.
local leases, lease_order = {}, {}
local function leases_of(key)
  local z = leases[key]
  if not z then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    z = {held = redis.call('ZCARD', key), add = {}}
    leases[key] = z
    lease_order[#lease_order + 1] = key
  end
  return z
end
local a = A + 2  -- ARGV of the next request
local k = K  -- KEYS before the next request's
for j = 1, m do
  local ticket = ARGV[a]
  local n = tonumber(ARGV[a + 1])
  a = a + 2
  local flag = #out + 1
  out[flag] = 0
  local all_ok = true
  local state = {}
  for i = 1, n do
    local kind = tonumber(ARGV[a])
    local limit = tonumber(ARGV[a + 1])
    local cost = tonumber(ARGV[a + 2])
    local want = tonumber(ARGV[a + 3])
    a = a + 4
    local key = KEYS[k + i]
    local ok, remaining, reset, retry = false, 0, 0, -1
    local grant = cost
    local st = {kind, limit, cost, key}
    if kind == 1 or kind == 2 then
      local h = hash_of(key)
      local at = AT[kind]
      local level = tonumber(h.v[at]) or 0
      local last = tonumber(h.v[at + 1]) or now
      if now > last then level = math.max(0, level - (now - last) * limit / 60000) end
      ok = level + cost <= limit
      if ok and want > cost then grant = cost + math.max(0, math.min(want - cost, math.floor(limit - level - cost))) end
      local after = level
      if ok then after = level + grant end
      remaining = math.floor(math.max(0, limit - after))
      reset = math.ceil(after * 60000 / limit)
      if not ok then
        if cost > limit then retry = -1 else retry = math.ceil((level + cost - limit) * 60000 / limit) end
      end
      st[5] = level
    elseif kind == 3 then
      local held = leases_of(key).held
      ok = held < limit
      if ok then
        grant = math.max(1, math.min(want, limit - held))
        remaining = math.max(0, limit - held - grant)
      else
        remaining = math.max(0, limit - held)
        retry = 1000
      end
    else
      local period, period_end
      if kind == 4 then period, period_end = day, (day + 1) * 86400000
      else period, period_end = month, month_end(month) end
      local h = hash_of(key)
      local at = AT[kind]
      local used = 0
      if tonumber(h.v[at]) == period then used = tonumber(h.v[at + 1]) or 0 end
      ok = used + cost <= limit
      if ok and want > cost then grant = cost + math.max(0, math.min(want - cost, limit - used - cost)) end
      if ok then remaining = math.max(0, limit - used - grant) else remaining = math.max(0, limit - used) end
      reset = math.max(0, period_end - now)
      if not ok then
        if cost > limit then retry = -1 else retry = reset end
      end
      st[5], st[6], st[7] = period, used, period_end
    end
    st[8] = grant
    state[i] = st
    all_ok = all_ok and ok
    local okn = 0
    if ok then okn = 1 end
    out[#out + 1] = okn
    out[#out + 1] = remaining
    out[#out + 1] = reset
    out[#out + 1] = retry
    out[#out + 1] = grant
  end
  k = k + n
  if all_ok then
    out[flag] = 1
    for i = 1, n do
      local st = state[i]
      local kind, limit, grant, key = st[1], st[2], st[8], st[4]
      if kind == 3 then
        local z = leases[key]
        z.held = z.held + grant
        if grant == 1 then
          z.add[#z.add + 1] = now + ttl
          z.add[#z.add + 1] = ticket
        else
          for g = 1, grant do
            z.add[#z.add + 1] = now + ttl
            z.add[#z.add + 1] = ticket .. '.' .. g
          end
        end
      elseif kind == 1 or kind == 2 then
        local level = st[5] + grant
        put(key, AT[kind], level, now, math.ceil(level * 60000 / limit) + 1000, true)
      else
        put(key, AT[kind], st[5], st[6] + grant, math.max(0, st[7] - now) + 86400000, true)
      end
    end
  end
end
write_hashes()
for _, key in ipairs(lease_order) do
  local z = leases[key]
  if #z.add > 0 then
    redis.call('ZADD', key, unpack(z.add))
    redis.call('PEXPIRE', key, ttl + 1000)
  end
end
return out
)lua";

// One call finishes a batch of tickets. KEYS: each ticket's charged keys,
// one after another (as kAdmit's). ARGV[A] the number of tickets, then per
// ticket: the ticket, its number of keys n, and per key: kind, limit, cost
// (what was charged), period, used (what it should have been), and m, the
// number of lease members that follow (m = 0: the ticket itself). Per-minute
// buckets and budgets (of the period charged) get used - cost added (what
// was charged and not used comes back), leases are removed. Returns 1 (with
// kFinishEnd); in a round call it leaves A and K where kAdmit's arguments
// and keys start.
inline constexpr const char* kFinish = R"lua(
local m = tonumber(ARGV[A])
local a = A + 1  -- ARGV of the next finish
local k = K  -- KEYS before the next finish's
for j = 1, m do
  local ticket = ARGV[a]
  local n = tonumber(ARGV[a + 1])
  a = a + 2
  for i = 1, n do
    local kind = tonumber(ARGV[a])
    local limit = tonumber(ARGV[a + 1])
    local cost = tonumber(ARGV[a + 2])
    local period = tonumber(ARGV[a + 3])
    local used = tonumber(ARGV[a + 4])
    local members = tonumber(ARGV[a + 5])
    a = a + 6
    local key = KEYS[k + i]
    local delta = used - cost
    if kind == 3 then
      if members == 0 then
        redis.call('ZREM', key, ticket)
      else
        for from = a, a + members - 1, 1000 do  -- unpack's stack is bounded
          redis.call('ZREM', key, unpack(ARGV, from, math.min(from + 999, a + members - 1)))
        end
      end
    elseif kind == 1 or kind == 2 then
      local at = AT[kind]
      local h = hash_of(key)
      local last = tonumber(h.v[at + 1])
      local level = tonumber(h.v[at]) or 0
      if last and now > last then level = math.max(0, level - (now - last) * limit / 60000) end
      level = math.max(0, level + delta)
      -- Nothing to give back to a bucket that expired (it drained).
      if last or level > 0 then
        -- More used than reserved: the hash must live until this drains.
        local need = 0
        if level > 0 and delta > 0 then need = math.ceil(level * 60000 / limit) + 1000 end
        put(key, at, level, math.max(now, last or now), need, false)
      end
    elseif kind == 4 or kind == 5 then
      local h = hash_of(key)
      local at = AT[kind]
      if tonumber(h.v[at]) == period then
        put(key, at, period, math.max(0, (tonumber(h.v[at + 1]) or 0) + delta), 0, false)
      end
    end
    a = a + members
  end
  k = k + n
end
A, K = a, k
)lua";

// kFinish's script ends here; in a round call, kAdmit follows.
inline constexpr const char* kFinishEnd = R"lua(
write_hashes()
return 1
)lua";

// KEYS[i]: a concurrency key; ARGV[1] lease ttl (ms), ARGV[i + 1] the ticket
// whose lease in KEYS[i] is renewed (only if it is still there). Returns 1.
inline constexpr const char* kRenew = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS do
  if redis.call('ZADD', KEYS[i], 'XX', 'CH', now + ttl, ARGV[i + 1]) == 1 then
    redis.call('PEXPIRE', KEYS[i], ttl + 1000)
  end
end
return 1
)lua";

// KEYS[1]: a one-time token (an HMAC signature); ARGV[1] its lifetime (s).
// Returns 1 when this call recorded it, 0 when it was recorded before.
inline constexpr const char* kClaimOnce = R"lua(
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then return 1 end
return 0
)lua";

}  // namespace llmpool::ratelimit::scripts
