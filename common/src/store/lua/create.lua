-- Creates a record unless one exists.
-- KEYS[1] the record.
-- ARGV[1] TTL (ms); ARGV[2..] field/value pairs.
-- Returns 1 if created, 0 if it existed.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ttl(KEYS[1], ARGV[1]))
return 1
