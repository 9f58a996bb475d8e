-- Take one token from the forwarders' global bucket (WALDUR_FORWARD_RATE), shared by every
-- forwarder process. The same token bucket as accept.lua's per-provider one (fields
-- tokens/ts, refilled from Redis TIME at `rate` per second up to `burst`), for one token.
-- KEYS: the bucket. ARGV: rate (/s), burst. Returns 0 when a token was taken, else the
-- milliseconds until one will be there.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
if tokens < 1 then
  return math.max(1, math.ceil((1 - tokens) / rate * 1000))
end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil((burst - tokens) / rate) + 1)
return 0
