-- Keeps a built event with its record, unless its subject was erased
-- (after prelude.lua).
-- KEYS[1] the event record; KEYS[2] the subject's job record; KEYS[3] its
-- batch record.
-- ARGV[1..3] id, type, body; ARGV[4] TTL (ms).
-- Returns 1 if kept, 0 if the subject was erased.
if erased(KEYS[2], KEYS[3]) then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'type', ARGV[2], 'body', ARGV[3])
redis.call('PEXPIRE', KEYS[1], keep(KEYS[2], KEYS[3], ARGV[4]))
return 1
