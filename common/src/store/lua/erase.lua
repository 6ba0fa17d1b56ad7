-- Erases a job or batch: its results, delivery logs and every field but
-- its tenant, leaving a `cancelled` tombstone marked `erased` (so a
-- message still queued for it does not run) for its retention, and at
-- least the tombstone's least lifetime.
-- KEYS[1] the record; KEYS[2 .. 1+ARGV[6]] the keys to delete with it
-- (its event records, one per end, and delivery log; a batch's chunk
-- results, dead marks and digests); then its tenant's quota keys
-- (optional: given when it has a tenant).
-- ARGV[1] channel; ARGV[2] TTL (ms); ARGV[3] the tombstone's least
-- lifetime (ms); ARGV[4] its id; ARGV[5] how often it was reopened, as
-- the caller counted its event records; ARGV[6] how many keys to delete.
-- Returns 'ok', 'missing', or 'moved' (reopened since the caller counted:
-- nothing is done; count again).
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local f = redis.call('HMGET', KEYS[1], 'tenant', 'reopened')
if (tonumber(f[2]) or 0) ~= tonumber(ARGV[5]) then return 'moved' end
local n = tonumber(ARGV[6])
local keep = math.max(ttl(KEYS[1], ARGV[2]), tonumber(ARGV[3]))
release(KEYS[1], ARGV[4], nil, quota_keys(2 + n))
for i = 2, 1 + n do redis.call('DEL', KEYS[i]) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'rank', 2, 'erased', 1)
if f[1] then redis.call('HSET', KEYS[1], 'tenant', f[1]) end
redis.call('PEXPIRE', KEYS[1], keep)
announce(ARGV[1], ARGV[4])
return 'ok'
