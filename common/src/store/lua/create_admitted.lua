-- Takes a job's share of its tenant's quota and, if granted, creates its
-- record, in one step (after admit.lua).
-- KEYS[1] the job; KEYS[2..4] its tenant's quota keys.
-- ARGV[1] TTL (ms); ARGV[2..7] the quota arguments (see admit.lua);
-- ARGV[8..] field/value pairs.
-- Returns the admission's reply (see admit.lua), or {'exists', 0}.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', 0} end
local a = admit(KEYS[2], KEYS[3], KEYS[4], {unpack(ARGV, 2, 7)})
if a[1] ~= 'ok' and a[1] ~= 'held' then return a end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('PEXPIRE', KEYS[1], ttl(KEYS[1], ARGV[1]))
return {'ok', 0}
