-- Sets an active tenant's webhook secrets.
-- KEYS[1] the tenants hash.
-- ARGV[1] name; ARGV[2] the secrets (a JSON array, not empty).
-- Returns 'ok', 'unknown' or 'revoked'.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 'unknown' end
local t = cjson.decode(raw)
if t.revoked then return 'revoked' end
t.webhook_secrets = cjson.decode(ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(t))
return 'ok'
