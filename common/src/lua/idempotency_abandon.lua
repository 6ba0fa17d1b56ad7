-- Frees the key, if the caller still owns it.
-- KEYS[1] the key.
-- ARGV[1] owner.
-- Returns 1 if freed, else 0.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
