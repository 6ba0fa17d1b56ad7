-- transition(rec, parts, q): moves a job or batch to a new state if the
-- rules allow: terminal states never change and ranks never go down. The
-- record's `error` is replaced by the one given, or removed: every state
-- carries its own. `parts`: a batch's {chunk results, dead marks}, which
-- get its retention when it ends (nil for a job); `q` its tenant's quota
-- keys (see release), given back when it ends.
-- ARGV[1] status; ARGV[2] its rank; ARGV[3] TTL (ms); ARGV[4] channel to
-- publish terminal ids on; ARGV[5] the job or batch id; ARGV[6] the
-- digest the record must keep ('' to skip the check: the caller holds a
-- claimed message); ARGV[7..] more field/value pairs.
-- Returns 'ok', 'missing' (no record: one is never made from a message),
-- 'forged' (the digest differs) or the stored status that refused.
local function transition(rec, parts, q)
  local cur = redis.call('HMGET', rec, 'status', 'rank', 'digest')
  local rank = tonumber(ARGV[2])
  if not cur[1] then return 'missing' end
  if ARGV[6] ~= '' and cur[3] and cur[3] ~= ARGV[6] then return 'forged' end
  local cur_rank = tonumber(cur[2]) or 0
  if cur_rank >= 2 or rank < cur_rank then return cur[1] end
  redis.call('HDEL', rec, 'error')
  redis.call('HSET', rec, 'status', ARGV[1], 'rank', ARGV[2], unpack(ARGV, 7))
  if parts and rank >= 2 then expire_parts(parts[1], parts[2], ttl(rec, ARGV[3])) end
  redis.call('PEXPIRE', rec, ttl(rec, ARGV[3]))
  if rank >= 2 then
    release(rec, ARGV[5], nil, q)
    announce(ARGV[4], ARGV[5])
  end
  return 'ok'
end
