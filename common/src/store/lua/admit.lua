-- admit(q, open, due, a): takes a submission's share of its tenant's
-- quota: `q` the quota hash, `open` the open subjects (id -> rows), `due`
-- their expiry (zset) — keys the calling script was given; `a` the six
-- quota arguments: how long the subject counts at most (ms), us per
-- submission (0: no rate check), burst, max open rows, rows (0: nothing
-- to count), subject id. Time is Redis's (`TIME`), so producers with
-- skewed clocks share one limiter; the GCRA state is kept in whole
-- microseconds. Returns {'ok', 0}, {'rate', ms to wait}, {'full', open
-- rows}, or {'held', 0}: the subject is counted already (nothing taken).
local function admit(q, open, due, a)
  local t = redis.call('TIME')
  local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local now = math.floor(now_us / 1000)
  local cur = redis.call('HMGET', q, 'sum', 'tat_us', 'prune_at')
  local sum = math.max(tonumber(cur[1]) or 0, 0)
  -- Subjects past their horizon are released, at most once a second.
  if now >= (tonumber(cur[3]) or 0) then
    local old = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, 256)
    for _, id in ipairs(old) do
      sum = sum - (tonumber(redis.call('HGET', open, id)) or 0)
      redis.call('HDEL', open, id)
      redis.call('ZREM', due, id)
    end
    sum = math.max(sum, 0)
    redis.call('HSET', q, 'sum', sum, 'prune_at', now + 1000)
  end
  local rows = tonumber(a[5])
  -- A subject counted already is not counted twice.
  if rows > 0 and redis.call('HEXISTS', open, a[6]) == 1 then return {'held', 0} end
  if rows > 0 and sum + rows > tonumber(a[4]) then return {'full', sum} end
  local interval = tonumber(a[2])
  local tat = nil
  if interval > 0 then
    tat = tonumber(cur[2]) or now_us
    if tat < now_us then tat = now_us end
    local allow_at = tat + interval - tonumber(a[3]) * interval
    if allow_at > now_us then return {'rate', math.ceil((allow_at - now_us) / 1000)} end
    tat = tat + interval
  end
  local expiry = now + tonumber(a[1])
  if rows > 0 then
    redis.call('HSET', open, a[6], rows)
    redis.call('ZADD', due, expiry, a[6])
    redis.call('PEXPIREAT', open, expiry + 3600000)
    redis.call('PEXPIREAT', due, expiry + 3600000)
  end
  if tat and rows > 0 then
    redis.call('HSET', q, 'sum', sum + rows, 'tat_us', string.format('%.0f', tat))
  elseif rows > 0 then
    redis.call('HSET', q, 'sum', sum + rows)
  elseif tat then
    redis.call('HSET', q, 'tat_us', string.format('%.0f', tat))
  end
  -- An idle tenant's quota state goes an hour after its last subject would.
  redis.call('PEXPIREAT', q, expiry + 3600000)
  return {'ok', 0}
end
