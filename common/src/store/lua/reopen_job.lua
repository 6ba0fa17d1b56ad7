-- Reopens a dead-lettered job for a replay: `failed` with code
-- `dead_lettered` goes back to `queued`, and `reopened` counts it (its
-- next terminal state is a new webhook event); nothing else changes.
-- KEYS[1] the job.
-- ARGV[1] the dead letter's digest, which must be the record's.
-- Returns 'ok', 'missing', 'forged' or the status that refused.
local cur = redis.call('HMGET', KEYS[1], 'status', 'error', 'digest')
if not cur[1] then return 'missing' end
if cur[3] and cur[3] ~= ARGV[1] then return 'forged' end
if cur[1] ~= 'failed' or not cur[2] or not string.find(cur[2], '"code":"dead_lettered"', 1, true) then
  return cur[1]
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'rank', 0)
redis.call('HDEL', KEYS[1], 'error', 'finished_at')
redis.call('HINCRBY', KEYS[1], 'reopened', 1)
redis.call('PEXPIRE', KEYS[1], ttl(KEYS[1], 0))
return 'ok'
