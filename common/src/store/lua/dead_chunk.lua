-- Records a dead-lettered chunk: every row of it fails with the given
-- error, once, and the batch counts them.
-- KEYS[1] the batch; KEYS[2] its chunk results; KEYS[3] its dead marks;
-- KEYS[4] its chunk digests; KEYS[5..7] its tenant's quota keys
-- (optional: given when it has a tenant).
-- ARGV[1] chunk index; ARGV[2] the error as a JSON string; ARGV[3] TTL
-- (ms); ARGV[4] now (ms); ARGV[5] channel; ARGV[6] batch id; ARGV[7] the
-- message's first row; ARGV[8] model; ARGV[9] version; ARGV[10] its
-- digest; ARGV[11] its passthrough values as a JSON array of strings, or
-- '' (they are under the digest, so they are the uploaded ones).
-- Returns 'done' (the batch has completed), 'ok', 'dup', 'missing', or
-- why the chunk does not fit its batch.
local f = redis.call('HMGET', KEYS[1], 'status', 'total', 'chunk_rows', 'chunks', 'model', 'version', 'erased')
if not f[1] or f[7] then return 'missing' end
local misfit = chunk_misfit(f, ARGV[1], ARGV[7], '', ARGV[8], ARGV[9])
  or chunk_forged(KEYS[4], ARGV[1], ARGV[10])
if misfit then return misfit end
local q = quota_keys(5)
local keep = ttl(KEYS[1], ARGV[3])
local per = tonumber(f[3])
local rows = math.min(per, tonumber(f[2]) - tonumber(ARGV[1]) * per)
local body = '[' .. string.rep(ARGV[2] .. ',', rows - 1) .. ARGV[2] .. ']'
if ARGV[11] ~= '' then body = '{"rows":' .. body .. ',"ids":' .. ARGV[11] .. '}' end
local fresh = redis.call('HSETNX', KEYS[2], ARGV[1], body) == 1
if fresh then
  redis.call('PEXPIRE', KEYS[2], keep)
  redis.call('PEXPIRE', KEYS[1], keep)
  redis.call('HINCRBY', KEYS[1], 'failed', rows)
  release(KEYS[1], ARGV[6], rows, q)
  redis.call('HSET', KEYS[3], ARGV[1], rows)
  redis.call('PEXPIRE', KEYS[3], keep)
  redis.call('HINCRBY', KEYS[1], 'done_chunks', 1)
end
if complete(KEYS[1], KEYS[2], KEYS[3], q, ARGV[4], ARGV[5], ARGV[6], ARGV[3]) then return 'done' end
if fresh then return 'ok' end
return 'dup'
