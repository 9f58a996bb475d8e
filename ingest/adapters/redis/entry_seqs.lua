-- (stream id, sequence) of up to ARGV[2] journal entries after ARGV[1] (an exclusive start,
-- "(id"), and nothing else: the journal epoch check reads the whole window this way, and
-- whole entries (~800 bytes each) in its replies took Redis memory past maxmemory for a
-- moment under back-pressure (client output buffers count). KEYS: stream.
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
local found = {}
for _, row in ipairs(rows) do
  local fields, seq = row[2], '0'
  for j = 1, #fields, 2 do
    if fields[j] == 's' then seq = fields[j + 1] end
  end
  found[#found + 1] = row[1]
  found[#found + 1] = seq
end
return found
