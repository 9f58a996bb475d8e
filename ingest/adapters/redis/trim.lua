-- Trim the journal up to a cut-off (RedisQueue.trim), never past the entry the journal epoch
-- check verified last (it looks that entry up, and compares what follows it with SQL, at its
-- next run), and keep the cut-off used, in the same atomic step: the check expects nothing
-- older. KEYS: stream, trimmed cut-off, verified entry. ARGV: cut-off (a stream id).
-- Returns the number of entries removed.
local function key(id)
  local ms, n = string.match(id, '^(%d+)-?(%d*)$')
  return tonumber(ms), tonumber(n) or 0
end
local cutoff = ARGV[1]
local verified = redis.call('GET', KEYS[3])
if verified then
  local vm, vn = key(verified)
  local cm, cn = key(cutoff)
  if vm and (vm < cm or (vm == cm and vn < cn)) then cutoff = verified end
end
local removed = redis.call('XTRIM', KEYS[1], 'MINID', cutoff)
if removed > 0 then redis.call('SET', KEYS[2], cutoff) end
return removed
