-- Claims an idempotency key or reports what it holds.
-- KEYS[1] the key.
-- ARGV[1] body hash ('' when not known yet); ARGV[2] pending TTL (ms);
-- ARGV[3] owner.
-- Returns {'new'}, {'mismatch'}, {'pending'} or {'done', body, status,
-- response}.
local cur = redis.call('HMGET', KEYS[1], 'state', 'body', 'status', 'response')
if not cur[1] then
  redis.call('HSET', KEYS[1], 'state', 'pending', 'body', ARGV[1], 'owner', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'new'}
end
if ARGV[1] ~= '' and cur[2] ~= '' and cur[2] ~= ARGV[1] then return {'mismatch'} end
if cur[1] == 'pending' then return {'pending'} end
return {'done', cur[2], cur[3], cur[4]}
