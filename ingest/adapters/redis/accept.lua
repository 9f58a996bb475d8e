-- Accept reports: take the next acceptance sequences, append the entries, raise the kick flag,
-- all in one atomic round trip (RedisQueue.accept_command; AcceptPipeline pipelines it).
-- KEYS: sequence, stream, kick flag, rate bucket, accepted counter, journal epoch,
--       back-pressure's pending cap, acknowledged counter.
-- ARGV: kick period (ms), rate (/s, 0: unlimited), burst, clock origin (ms since 1970),
-- sequence floor (a hint from SQL, 0: none), epoch prefix, then (report id, envelope) pairs.
-- Returns {first sequence, kick, tokens left, seconds to full, flags}; first = -1: rate limited,
-- first = -2: the pending cap is reached (services/pressure.py sets it; nothing is written, and
-- a request is refused only once the cap is reached: no burst overshoots it by more than one).
--
-- The sequence never goes backwards, whatever Redis lost: first = max(last + 1, clock,
-- floor + 1, the journal's newest sequence + 1), clock = (Redis TIME in ms - origin) * 4096. An emptied Redis or an older AOF
-- continues from the clock, far above anything handed out before; a clock that jumps back
-- continues from last + 1 (exact below 2^53 for about 69 years after the origin).
-- flags: 1 = the clock is more than a second behind the sequence (reported by the web),
--        2 = the sequence key was missing (a new or emptied Redis),
--        4 = this call wrote the journal epoch (the first write to this Redis's journal).
local TICKS = 4096
local count = (#ARGV - 6) / 2
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cap = redis.call('GET', KEYS[7])
if cap then
  local counts = redis.call('MGET', KEYS[5], KEYS[8])
  if (tonumber(counts[1]) or 0) - (tonumber(counts[2]) or 0) >= tonumber(cap) then
    return {-2, 0, -1, 0, 0}
  end
end
local t = redis.call('TIME')
local left, reset = -1, 0
if rate > 0 then
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local b = redis.call('HMGET', KEYS[4], 'tokens', 'ts')
  local tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
  -- a batch larger than the bucket is admitted once the bucket is full and leaves it in
  -- debt, so Retry-After is always true and the long-run rate still holds
  local need = math.min(count, burst)
  if tokens < need then
    return {-1, 0, math.max(0, math.floor(tokens)), math.ceil((need - tokens) / rate), 0}
  end
  tokens = tokens - count
  redis.call('HSET', KEYS[4], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[4], math.ceil((burst - tokens) / rate) + 1)
  left, reset = math.max(0, math.floor(tokens)), math.ceil((burst - tokens) / rate)
end
local flags = 0
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local clock = (ms - tonumber(ARGV[4])) * TICKS
local raw = redis.call('GET', KEYS[1])
if not raw then flags = flags + 2 end
local first = math.max(tonumber(raw or '0') + 1, clock, tonumber(ARGV[5]) + 1)
-- the journal's newest entry too: a key reset or set back in the same millisecond
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if newest then
  local fields = newest[2]
  for j = 1, #fields, 2 do
    if fields[j] == 's' then first = math.max(first, (tonumber(fields[j + 1]) or 0) + 1) end
  end
end
if first - clock > 1000 * TICKS then flags = flags + 1 end
-- integers as '%d': Lua's own number formatting keeps only 14 digits
redis.call('SET', KEYS[1], string.format('%d', first + count - 1))
if redis.call('SET', KEYS[6], ARGV[6] .. '-' .. t[1] .. '.' .. t[2], 'NX') then flags = flags + 4 end
redis.call('INCRBY', KEYS[5], count)
for i = 0, count - 1 do
  redis.call('XADD', KEYS[2], '*', 's', string.format('%d', first + i), 'i', ARGV[7 + 2 * i], 'r', ARGV[8 + 2 * i])
end
local kick = 0
if redis.call('SET', KEYS[3], '1', 'PX', ARGV[1], 'NX') then kick = 1 end
return {first, kick, left, reset, flags}
