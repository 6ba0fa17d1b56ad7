-- Starts a manual redelivery (after prelude.lua).
-- KEYS[1] the event record; KEYS[2] the subject's job record; KEYS[3] its
-- batch record.
-- ARGV[1] event ref (webhook-id or type); ARGV[2] new chain; ARGV[3] TTL
-- (ms).
-- Returns {id, type, body, url, state, chain, tries} as they were, or
-- nil.
local r = redis.call('HMGET', KEYS[1], 'id', 'type', 'body', 'url', 'state', 'chain', 'tries')
if not r[3] then return nil end
if ARGV[1] ~= r[1] and ARGV[1] ~= r[2] then return nil end
redis.call('HSET', KEYS[1], 'state', 'pending', 'chain', ARGV[2], 'tries', 0)
redis.call('PEXPIRE', KEYS[1], keep(KEYS[2], KEYS[3], ARGV[3]))
return {r[1], r[2], r[3], r[4], r[5] or 'pending', r[6] or '', r[7] or '0'}
