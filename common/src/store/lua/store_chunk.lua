-- Stores a chunk's results once and counts them; the last chunk completes
-- the batch.
-- KEYS[1] the batch; KEYS[2] its chunk results; KEYS[3] its dead marks;
-- KEYS[4..6] its tenant's quota keys (optional: given when it has a
-- tenant).
-- ARGV[1] results JSON; ARGV[2] rows that succeeded; ARGV[3] rows that
-- failed; ARGV[4] TTL (ms); ARGV[5] now (ms); ARGV[6] channel; ARGV[7]
-- batch id; ARGV[8] chunk index.
-- Returns 'done' when the batch has completed (now or before, so a retry
-- after a lost reply still announces it), else 'ok', 'dup' (stored
-- before) or 'missing'; or, for a chunk stored now of a batch that asked
-- for progress events ('progress_ms') whose interval has passed since the
-- last one (or since it started), 'p<n>': its event number n is due.
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
if redis.call('HEXISTS', KEYS[1], 'erased') == 1 then return 'missing' end
local q = quota_keys(4)
local keep = ttl(KEYS[1], ARGV[4])
local fresh = redis.call('HSETNX', KEYS[2], ARGV[8], ARGV[1]) == 1
if fresh then
  redis.call('PEXPIRE', KEYS[2], keep)
  redis.call('PEXPIRE', KEYS[1], keep)
  redis.call('HINCRBY', KEYS[1], 'succeeded', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'failed', ARGV[3])
  release(KEYS[1], ARGV[7], tonumber(ARGV[2]) + tonumber(ARGV[3]), q)
  redis.call('HINCRBY', KEYS[1], 'done_chunks', 1)
end
if complete(KEYS[1], KEYS[2], KEYS[3], q, ARGV[5], ARGV[6], ARGV[7], ARGV[4]) then return 'done' end
if not fresh then return 'dup' end
local f = redis.call('HMGET', KEYS[1], 'progress_ms', 'status', 'progress_at', 'started_at')
local every = tonumber(f[1])
if every and f[2] == 'running' then
  local last = tonumber(f[3] or f[4] or ARGV[5])
  if tonumber(ARGV[5]) - last >= every then
    redis.call('HSET', KEYS[1], 'progress_at', ARGV[5])
    return 'p' .. redis.call('HINCRBY', KEYS[1], 'progress_seq', 1)
  end
end
return 'ok'
