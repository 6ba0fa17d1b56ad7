-- Starts (or continues) a chain (after prelude.lua).
-- KEYS[1] the event record; KEYS[2] the subject's job record; KEYS[3] its
-- batch record.
-- ARGV[1] chain; ARGV[2] url; ARGV[3] TTL (ms); ARGV[4] kind; ARGV[5]
-- attempts the message says were made; ARGV[6] '1' if the record may be
-- created (only ever by a chain's first attempt: a made-up later one must
-- not shorten the schedule of the event it names).
-- Returns {verdict, id, type, body}. A message of an older chain, or a
-- copy of one whose attempt was already made, is 'stale'; one whose
-- subject was erased is 'erased', one that finds no record it may not
-- create 'missing' (and then nothing is written).
if erased(KEYS[2], KEYS[3]) then return {'erased'} end
local r = redis.call('HMGET', KEYS[1], 'state', 'chain', 'id', 'type', 'body', 'tries')
if not r[1] and (ARGV[6] ~= '1' or ARGV[5] ~= '0') then return {'missing'} end
if not r[1] then
  redis.call('HSET', KEYS[1], 'state', 'pending', 'chain', ARGV[1], 'url', ARGV[2], 'kind', ARGV[4], 'tries', 0)
  redis.call('PEXPIRE', KEYS[1], keep(KEYS[2], KEYS[3], ARGV[3]))
  return {'go'}
end
if r[1] ~= 'pending' then return {r[1]} end
if r[2] ~= ARGV[1] then return {'stale'} end
if (tonumber(r[6]) or 0) > tonumber(ARGV[5]) then return {'stale'} end
redis.call('PEXPIRE', KEYS[1], keep(KEYS[2], KEYS[3], ARGV[3]))
if r[5] then return {'go', r[3], r[4], r[5]} end
return {'go'}
