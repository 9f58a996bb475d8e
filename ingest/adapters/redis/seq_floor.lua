-- Raise the sequence to at least a floor (the highest sequence SQL committed), never lower it:
-- a key that is missing, or lower than the floor (an older AOF, a SET by hand), is raised.
-- KEYS: sequence. ARGV: floor. Returns the sequence after the call.
local raw = redis.call('GET', KEYS[1])
local current = tonumber(raw or '0')
local floor = tonumber(ARGV[1])
if raw == false or current < floor then
  redis.call('SET', KEYS[1], string.format('%d', math.max(current, floor)))
end
return math.max(current, floor)
