-- cancel(rec, parts, q): cancels a job or batch if it is in one of the
-- given states. `parts`: a batch's {chunk results, dead marks}, which get
-- its retention (nil for a job); `q` its tenant's quota keys (see
-- release).
-- ARGV[1] now (ms); ARGV[2] channel; ARGV[3] id; ARGV[4] TTL (ms);
-- ARGV[5..] states that may be cancelled.
-- Returns 'ok', 'missing', or the status that refused.
local function cancel(rec, parts, q)
  local st = redis.call('HGET', rec, 'status')
  if not st then return 'missing' end
  for i = 5, #ARGV do
    if st == ARGV[i] then
      redis.call('HDEL', rec, 'error')
      redis.call('HSET', rec, 'status', 'cancelled', 'rank', 2, 'finished_at', ARGV[1])
      local keep = ttl(rec, ARGV[4])
      redis.call('PEXPIRE', rec, keep)
      if parts then expire_parts(parts[1], parts[2], keep) end
      release(rec, ARGV[3], nil, q)
      announce(ARGV[2], ARGV[3])
      return 'ok'
    end
  end
  return st
end
