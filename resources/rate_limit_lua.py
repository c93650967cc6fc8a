"""The Redis rate limiter's Lua scripts: each step is one atomic script on Redis time."""

# One atomic step of the shared bucket, on Redis server time (TIME, so workers' clocks
# never matter for the bucket; Redis >= 5 replicates effects, so TIME before a write is
# allowed). KEYS[1] bucket hash {tokens, ts}, KEYS[2] penalty hash {until_ms, reason},
# KEYS[3] exchange-window hash {w, granted, excess, blocked, next, known}.
# ARGV capacity, rate per ms, cost, window id, window limit, hold ms, window ttl ms, fixed
# (1: the exchange's fixed windows, no bucket), last window the request may land in (fixed:
# w or w + 1, whose grants so far are `next`), hold ms when only that window is full.
# Returns {wait_ms, granted}: wait 0 = taken (granted = the window's grants so far), > 0 =
# the penalty remaining or the token deficit / rate, < 0 = held to the next window (the
# exchange's count says it is used up). A refusal writes nothing, except to create the
# bucket, empty (its clock starts then, so a new bucket does refill). Entering window w + 1,
# its grants start from `next` (requests of w that may land there). `known`: every grant
# that may land in the window is counted in this hash, so fixed grants may use it up; a
# hash that is missing (first use, idle, Redis restarted empty) or seeded after an outage
# is not known until the exchange's count for the window is reported (REPORT_LUA): until
# then, even fixed requests take the bucket.
TOKEN_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local penalty = tonumber(redis.call('HGET', KEYS[2], 'until_ms'))
if penalty and penalty > now then
  return {math.max(1, math.ceil(penalty - now)), '0'}
end
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local win = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local ws = redis.call('HMGET', KEYS[3], 'w', 'granted', 'excess', 'blocked', 'next', 'known')
local w = tonumber(ws[1])
local granted = tonumber(ws[2]) or 0
local excess = tonumber(ws[3]) or 0
local blocked = tonumber(ws[4]) or 0
local nextg = tonumber(ws[5]) or 0
local known = tonumber(ws[6]) or 0
if w == nil then
  granted = 0
  known = 0
elseif w < win then
  if w == win - 1 then
    granted = nextg  -- complete if the previous window's count was
  else
    granted = 0
    known = 1  -- nothing granted since can land in this window
  end
end
if w == nil or w < win then
  w = win
  excess = 0
  blocked = 0
  nextg = 0
end
if blocked == 1 or (excess + granted > 0 and excess + granted + cost > limit + 1e-9) then
  return {-math.max(1, math.ceil(tonumber(ARGV[6]))), '0'}
end
local last = tonumber(ARGV[9])
if last > win and nextg > 0 and nextg + cost > limit + 1e-9 then
  return {-math.max(1, math.ceil(tonumber(ARGV[10]))), '0'}
end
if tonumber(ARGV[8]) == 1 and known == 1 then
  granted = granted + cost
  if last > win then nextg = nextg + cost end
  redis.call('HSET', KEYS[3], 'w', w, 'granted', string.format('%.6f', granted),
             'excess', string.format('%.6f', excess), 'blocked', blocked,
             'next', string.format('%.6f', nextg), 'known', known)
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
  return {0, string.format('%.6f', granted)}
end
capacity = math.max(capacity, cost)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
local new = tokens == nil or ts == nil
if new then
  tokens = 0
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
  ts = now
end
local wait = 0
if tokens < cost then
  wait = math.max(1, math.ceil((cost - tokens) / rate))
  if not new then
    return {wait, '0'}
  end
else
  tokens = tokens - cost
  granted = granted + cost
  if last > win then nextg = nextg + cost end
  redis.call('HSET', KEYS[3], 'w', w, 'granted', string.format('%.6f', granted),
             'excess', string.format('%.6f', excess), 'blocked', blocked,
             'next', string.format('%.6f', nextg), 'known', known)
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
           'ts', string.format('%.3f', ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return {wait, string.format('%.6f', granted)}
"""

# The exchange reported ARGV[2] used in window ARGV[1], on a response to a request granted
# when the window's grants were ARGV[3]: max-merge the excess; the window's count is now
# known (the exchange's own). KEYS[1] window hash.
REPORT_LUA = """
local win = tonumber(ARGV[1])
local excess = tonumber(ARGV[2]) - tonumber(ARGV[3])
local ws = redis.call('HMGET', KEYS[1], 'w', 'excess', 'next')
local w = tonumber(ws[1])
if w ~= nil and w > win then
  return 0
end
if w == nil or w < win then
  local carried = '0'
  if w ~= nil and w == win - 1 then carried = ws[3] or '0' end
  redis.call('HSET', KEYS[1], 'w', win, 'granted', carried, 'excess',
             string.format('%.6f', excess), 'blocked', 0, 'next', '0', 'known', 1)
elseif excess > (tonumber(ws[2]) or 0) then
  redis.call('HSET', KEYS[1], 'excess', string.format('%.6f', excess), 'known', 1)
else
  redis.call('HSET', KEYS[1], 'known', 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# Back from an outage: add ARGV[2] (what this process granted in window ARGV[1] meanwhile)
# to the window's grants, ARGV[5] (what may land in the next) to `next`, and empty the
# bucket; the window is not known again until the exchange reports its count (workers
# still in their fallback grant outside Redis meanwhile). KEYS[1] window hash, KEYS[2]
# bucket hash; ARGV window, granted, window ttl ms, bucket ttl ms, granted into the next.
SEED_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local win = tonumber(ARGV[1])
local ws = redis.call('HMGET', KEYS[1], 'w', 'next')
local w = tonumber(ws[1])
if w == nil or w < win then
  local carried = 0
  if w ~= nil and w == win - 1 then carried = tonumber(ws[2]) or 0 end
  redis.call('HSET', KEYS[1], 'w', win,
             'granted', string.format('%.6f', carried + tonumber(ARGV[2])),
             'excess', '0', 'blocked', 0, 'next', string.format('%.6f', ARGV[5]),
             'known', 0)
elseif w == win then
  redis.call('HINCRBYFLOAT', KEYS[1], 'granted', ARGV[2])
  redis.call('HINCRBYFLOAT', KEYS[1], 'next', ARGV[5])
  redis.call('HSET', KEYS[1], 'known', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], 'tokens', '0', 'ts', string.format('%.3f', now))
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""
# Extend the penalty window of a key to now + ARGV[1] ms (Redis time); never shortens it.
# KEYS[1] penalty hash; ARGV duration_ms, reason. Returns 1 when the window grew.
PENALIZE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local duration = tonumber(ARGV[1])
local until_ms = now + duration
local current = tonumber(redis.call('HGET', KEYS[1], 'until_ms'))
if current and current >= until_ms then
  return 0
end
redis.call('HSET', KEYS[1], 'until_ms', string.format('%.3f', until_ms), 'reason', ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(duration) + 1000)
return 1
"""

# Remaining penalty ms (0 when none) and its reason, on Redis time.
PENALTY_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'until_ms', 'reason')
local until_ms = tonumber(state[1])
if until_ms == nil or until_ms <= now then
  return {'0', ''}
end
return {string.format('%.3f', until_ms - now), state[2] or ''}
"""
