-- Reopens a dead-lettered chunk for a replay: its dead-letter results are
-- removed and uncounted, and its batch runs again (its stored chunks kept
-- while it is open again).
-- KEYS[1] the batch; KEYS[2] its chunk results; KEYS[3] its dead marks;
-- KEYS[4] its chunk digests.
-- ARGV[1] index; ARGV[2] first row; ARGV[3] model; ARGV[4] version;
-- ARGV[5] digest, as the dead letter says.
-- Returns 'ok', 'missing', 'not_dead', why the chunk does not fit its
-- batch, or the status of a batch that was cancelled or failed (and so is
-- not reopened).
local f = redis.call('HMGET', KEYS[1], 'status', 'total', 'chunk_rows', 'chunks', 'model', 'version')
local st = f[1]
if not st then return 'missing' end
if st == 'cancelled' or st == 'failed' then return st end
local misfit = chunk_misfit(f, ARGV[1], ARGV[2], '', ARGV[3], ARGV[4])
  or chunk_forged(KEYS[4], ARGV[1], ARGV[5])
if misfit then return misfit end
local rows = tonumber(redis.call('HGET', KEYS[3], ARGV[1]))
if not rows then return 'not_dead' end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'failed', -rows)
redis.call('HINCRBY', KEYS[1], 'done_chunks', -1)
if redis.call('HGET', KEYS[1], 'status') == 'succeeded' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'rank', 1)
  redis.call('HDEL', KEYS[1], 'finished_at')
  redis.call('HINCRBY', KEYS[1], 'reopened', 1)
  local keep = ttl(KEYS[1], 0)
  redis.call('PEXPIRE', KEYS[1], keep)
  expire_parts(KEYS[2], KEYS[3], keep)
end
return 'ok'
