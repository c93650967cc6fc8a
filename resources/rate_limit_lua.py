"""The Redis rate limiter's Lua scripts: each step is one atomic script on Redis time."""

# One atomic step of the shared bucket, on Redis server time (TIME, so workers' clocks
# never matter for the bucket; Redis >= 5 replicates effects, so TIME before a write is
# allowed). KEYS[1] bucket hash {tokens, ts}, KEYS[2] penalty hash {until_ms, reason},
# KEYS[3] exchange-window hash {w, granted, excess, blocked}.
# ARGV capacity, rate per ms, cost, window id, window limit, hold ms, window ttl ms.
# Returns {wait_ms, granted}: wait 0 = taken (granted = the window's grants so far), > 0 =
# the penalty remaining or the token deficit / rate, < 0 = held to the next window (the
# exchange's count says it is used up). A refusal writes nothing, except to create the
# bucket, empty (its clock starts then, so a new bucket does refill).
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
local ws = redis.call('HMGET', KEYS[3], 'w', 'granted', 'excess', 'blocked')
local w = tonumber(ws[1])
local granted = tonumber(ws[2]) or 0
local excess = tonumber(ws[3]) or 0
local blocked = tonumber(ws[4]) or 0
if w == nil or w < win then
  w = win
  granted = 0
  excess = 0
  blocked = 0
end
if blocked == 1 or (excess + granted > 0 and excess + granted + cost > limit + 1e-9) then
  return {-math.max(1, math.ceil(tonumber(ARGV[6]))), '0'}
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
  redis.call('HSET', KEYS[3], 'w', w, 'granted', string.format('%.6f', granted),
             'excess', string.format('%.6f', excess), 'blocked', blocked)
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
           'ts', string.format('%.3f', ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return {wait, string.format('%.6f', granted)}
"""

# The exchange reported ARGV[2] used in window ARGV[1], on a response to a request granted
# when the window's grants were ARGV[3]: max-merge the excess. KEYS[1] window hash.
REPORT_LUA = """
local win = tonumber(ARGV[1])
local excess = tonumber(ARGV[2]) - tonumber(ARGV[3])
local ws = redis.call('HMGET', KEYS[1], 'w', 'excess')
local w = tonumber(ws[1])
if w ~= nil and w > win then
  return 0
end
if w == nil or w < win then
  redis.call('HSET', KEYS[1], 'w', win, 'granted', '0', 'excess',
             string.format('%.6f', excess), 'blocked', 0)
elseif excess > (tonumber(ws[2]) or 0) then
  redis.call('HSET', KEYS[1], 'excess', string.format('%.6f', excess))
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# Back from an outage: add ARGV[2] (what this process granted in window ARGV[1] meanwhile)
# to the window's grants and empty the bucket. KEYS[1] window hash, KEYS[2] bucket hash;
# ARGV window, granted, window ttl ms, bucket ttl ms.
SEED_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local win = tonumber(ARGV[1])
local w = tonumber(redis.call('HGET', KEYS[1], 'w'))
if w == nil or w < win then
  redis.call('HSET', KEYS[1], 'w', win, 'granted', string.format('%.6f', ARGV[2]),
             'excess', '0', 'blocked', 0)
elseif w == win then
  redis.call('HINCRBYFLOAT', KEYS[1], 'granted', ARGV[2])
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
