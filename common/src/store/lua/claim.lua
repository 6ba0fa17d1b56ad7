-- A worker takes a job: unless it is terminal, mark it running and count
-- the attempt; past its deadline, it expires here instead.
-- KEYS[1] the job; KEYS[2..4] its tenant's quota keys (optional: used
-- only to expire a job that has a tenant).
-- ARGV[1] TTL (ms); ARGV[2] the message's digest; ARGV[3] its deadline
-- (epoch ms, 0 for none); ARGV[4] now (ms); ARGV[5] channel; ARGV[6] job
-- id.
-- Returns {what, webhook, attempt, tenant, explain}: what is 'run', 'skip'
-- (terminal: do not run), 'expired' (now), 'missing' (no record) or
-- 'forged' (the message is not the one the job was accepted with);
-- webhook is 1 when the record asks for a callback; tenant is the
-- record's tenant ('' for none); explain is 1 when the record asks for
-- the score to be explained. Expiring a job whose tenant's quota keys
-- were not given leaves its release to the caller (see AFTER).
local cur = redis.call('HMGET', KEYS[1], 'status', 'rank', 'digest', 'webhook_url', 'tenant', 'explain')
if not cur[1] then return {'missing', 0, 0, ''} end
local tenant = cur[5] or ''
if cur[3] and cur[3] ~= ARGV[2] then return {'forged', 0, 0, tenant} end
local hook = (cur[4] and cur[1] ~= 'cancelled') and 1 or 0
if (tonumber(cur[2]) or 0) >= 2 then return {'skip', hook, 0, tenant} end
local deadline = tonumber(ARGV[3])
if deadline > 0 and tonumber(ARGV[4]) > deadline then
  local q = quota_keys(2)
  redis.call('HDEL', KEYS[1], 'error')
  redis.call('HSET', KEYS[1], 'status', 'expired', 'rank', 2, 'finished_at', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ttl(KEYS[1], ARGV[1]))
  release(KEYS[1], ARGV[6], nil, q)
  announce(ARGV[5], ARGV[6])
  return {'expired', hook, 0, tenant}
end
redis.call('HSET', KEYS[1], 'status', 'running', 'rank', 1)
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('PEXPIRE', KEYS[1], ttl(KEYS[1], ARGV[1]))
return {'run', hook, n, tenant, cur[6] and 1 or 0}
