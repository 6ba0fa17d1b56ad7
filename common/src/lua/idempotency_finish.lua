-- Stores the answer, if the caller still owns the key.
-- KEYS[1] the key.
-- ARGV[1] owner; ARGV[2] body hash; ARGV[3] status; ARGV[4] response;
-- ARGV[5] TTL (ms).
-- Returns 1 if stored, 0 if another request owns the key now.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'body', ARGV[2], 'status', ARGV[3], 'response', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
