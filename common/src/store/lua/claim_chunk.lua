-- A worker takes a bulk chunk.
-- KEYS[1] the batch; KEYS[2] its chunk results; KEYS[3] its chunk digests.
-- ARGV[1] now (ms); ARGV[2] TTL (ms); ARGV[3] chunk index; ARGV[4] its
-- first row; ARGV[5] its rows; ARGV[6] model; ARGV[7] version; ARGV[8]
-- the message's digest.
-- Returns {what, webhook, tenant, explain}: what is 'run', 'skip' (stored before,
-- or the batch ended), 'missing' (no batch) or the reason the chunk does
-- not fit its batch; webhook is 1 when the batch asks for a callback
-- (announced once a store completes it) and, for a skipped chunk, only
-- when the batch has completed (so a redelivery announces it again);
-- tenant is the batch's tenant ('' for none); explain is 1 when the batch
-- asks for its rows' scores to be explained.
local f = redis.call('HMGET', KEYS[1], 'status', 'total', 'chunk_rows', 'chunks', 'model', 'version', 'webhook_url', 'tenant', 'explain')
local st = f[1]
if not st then return {'missing', 0, ''} end
local tenant = f[8] or ''
if st == 'cancelled' or st == 'failed' or st == 'expired' then return {'skip', 0, tenant} end
local misfit = chunk_misfit(f, ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
  or chunk_forged(KEYS[3], ARGV[3], ARGV[8])
if misfit then return {misfit, 0, tenant} end
local hook = f[7] and 1 or 0
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1 then
  if st == 'succeeded' then return {'skip', hook, tenant} end
  return {'skip', 0, tenant}
end
if st == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'rank', 1, 'started_at', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl(KEYS[1], ARGV[2]))
end
return {'run', hook, tenant, f[9] and 1 or 0}
