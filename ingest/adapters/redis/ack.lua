-- Acknowledge entries and count only those newly acknowledged: accepted - acked = backlog.
-- KEYS: stream, acked counter. ARGV: group, then entry ids.
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('INCRBY', KEYS[2], n)
return n
