-- Find one report's journal entry by its id, scanning at most a bounded stretch of the stream
-- (RedisQueue.find): the report id carries its acceptance time, so the entry is at or just
-- after it. KEYS: stream. ARGV: first stream id, last stream id, report id, most entries read.
-- Returns {stream id, fields} or false; never reads more than ARGV[4] entries.
local cursor, last, wanted = ARGV[1], ARGV[2], ARGV[3]
local left = tonumber(ARGV[4])
while left > 0 do
  local rows = redis.call('XRANGE', KEYS[1], cursor, last, 'COUNT', math.min(left, 500))
  for _, row in ipairs(rows) do
    local fields = row[2]
    for j = 1, #fields, 2 do
      if fields[j] == 'i' and fields[j + 1] == wanted then return row end
    end
  end
  if #rows < math.min(left, 500) then return false end
  left = left - #rows
  cursor = '(' .. rows[#rows][1]
end
return false
