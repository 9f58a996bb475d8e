-- Accept reports: take the next acceptance sequences, append the entries, raise the kick flag,
-- all in one atomic round trip (RedisQueue.accept_command; AcceptPipeline pipelines it).
-- KEYS: sequence, stream, kick flag, rate bucket, accepted counter.
-- ARGV: kick period (ms), rate (/s, 0: unlimited), burst, then (report id, envelope) pairs.
-- Returns {first sequence, kick, tokens left, seconds to full}; first = -1: rate limited;
-- first = -2: the sequence key is missing (a new or emptied Redis): the caller must set its
-- floor from SQL first, so a sequence at or below one already committed is never handed out.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-2, 0, 0, 0} end
local count = (#ARGV - 3) / 2
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local left, reset = -1, 0
if rate > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local b = redis.call('HMGET', KEYS[4], 'tokens', 'ts')
  local tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
  -- a batch larger than the bucket is admitted once the bucket is full and leaves it in
  -- debt, so Retry-After is always true and the long-run rate still holds
  local need = math.min(count, burst)
  if tokens < need then
    return {-1, 0, math.max(0, math.floor(tokens)), math.ceil((need - tokens) / rate)}
  end
  tokens = tokens - count
  redis.call('HSET', KEYS[4], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[4], math.ceil((burst - tokens) / rate) + 1)
  left, reset = math.max(0, math.floor(tokens)), math.ceil((burst - tokens) / rate)
end
local last = redis.call('INCRBY', KEYS[1], count)
redis.call('INCRBY', KEYS[5], count)
local first = last - count + 1
for i = 0, count - 1 do
  redis.call('XADD', KEYS[2], '*', 's', first + i, 'i', ARGV[4 + 2 * i], 'r', ARGV[5 + 2 * i])
end
local kick = 0
if redis.call('SET', KEYS[3], '1', 'PX', ARGV[1], 'NX') then kick = 1 end
return {first, kick, left, reset}
