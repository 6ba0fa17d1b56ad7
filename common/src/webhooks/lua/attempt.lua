-- Logs an attempt and, if the chain is current, still pending and not
-- past this attempt (a late copy must not move it back), sets the state
-- and the chain's attempt count (after prelude.lua).
-- KEYS[1] the event record; KEYS[2] the delivery log; KEYS[3] the
-- subject's job record; KEYS[4] its batch record.
-- ARGV[1] chain; ARGV[2] state; ARGV[3] attempt JSON; ARGV[4] TTL (ms);
-- ARGV[5] log length; ARGV[6] attempt number.
-- Returns 1 if the state was set, else 0.
if erased(KEYS[3], KEYS[4]) then return 0 end
local t = keep(KEYS[3], KEYS[4], ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
redis.call('PEXPIRE', KEYS[2], t)
local r = redis.call('HMGET', KEYS[1], 'chain', 'state', 'tries')
redis.call('PEXPIRE', KEYS[1], t)
if r[1] == ARGV[1] and r[2] == 'pending' and (tonumber(r[3]) or 0) < tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[1], 'state', ARGV[2], 'tries', ARGV[6])
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  return 1
end
return 0
