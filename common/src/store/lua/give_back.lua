-- give_back(q, id, n): the subject `id` gives `n` of its open rows (all
-- when nil or negative) back to the quota `q` (the quota hash, its open
-- subjects, their expiry). Idempotent: only what is still registered can
-- be given back. Returns the rows given back.
local function give_back(q, id, n)
  local have = tonumber(redis.call('HGET', q[2], id))
  if not have then return 0 end
  n = tonumber(n)
  if n == nil or n < 0 or n >= have then
    redis.call('HDEL', q[2], id)
    redis.call('ZREM', q[3], id)
    n = have
  else
    redis.call('HINCRBY', q[2], id, -n)
  end
  redis.call('HINCRBY', q[1], 'sum', -n)
  return n
end
