-- Gives back an open subject's rows.
-- KEYS[1..3] the tenant's quota keys (hash, open subjects, their expiry).
-- ARGV[1] the subject.
-- Returns the rows given back.
local rows = tonumber(redis.call('HGET', KEYS[2], ARGV[1]))
if not rows then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'sum', -rows)
return rows
