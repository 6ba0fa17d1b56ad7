-- Undoes a redelivery that could not be queued.
-- KEYS[1] the event record.
-- ARGV[1] the redelivery's chain; ARGV[2..4] state, chain and tries
-- before.
-- Returns 1 if restored, 0 if something moved it since.
if redis.call('HGET', KEYS[1], 'chain') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'chain', ARGV[3], 'tries', ARGV[4])
return 1
