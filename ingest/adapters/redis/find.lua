-- Find one report's journal entry by its id, reading a bounded stretch of the stream
-- (RedisQueue.find): the report id carries its acceptance time by the web's clock, the
-- stream id Redis's. Forward from that time (where the entry is when the clocks agree), then
-- backward from it (a web clock ahead of Redis's), at most ARGV[4] entries each way, never
-- further than ARGV[4] ms. KEYS: stream. ARGV: the id's time (ms), report id, most entries
-- read each way, farthest (ms). Returns {stream id, fields} or false.
local at, wanted = tonumber(ARGV[1]), ARGV[2]
local most, far = tonumber(ARGV[3]), tonumber(ARGV[4])
local function id(ms) return string.format('%d', ms) end  -- tostring would write 1.8e+12
local function match(rows)
  for _, row in ipairs(rows) do
    local fields = row[2]
    for j = 1, #fields, 2 do
      if fields[j] == 'i' and fields[j + 1] == wanted then return row end
    end
  end
  return nil
end
local found = match(redis.call('XRANGE', KEYS[1], id(at), id(at + far), 'COUNT', most))
if found then return found end
-- backward only when the stream holds something older: XREVRANGE over a range before its
-- first entry walks the whole stream (6 ms for 30,000 entries on Redis 7.0)
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
if oldest and tonumber(string.match(oldest[1], '^(%d+)')) < at then
  local before = math.max(0, at - far)
  found = match(redis.call('XREVRANGE', KEYS[1], '(' .. id(at) .. '-0', id(before), 'COUNT', most))
  if found then return found end
end
return false
