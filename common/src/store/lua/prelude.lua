-- Functions every state script starts with. Loaded after
-- `local OPEN_TTL_MS = <ms>` (see store/scripts.rs); no key is built here:
-- each function works on keys its script was given in KEYS[].
--
-- ttl(rec, default): how long a record (and its parts) is kept from now:
-- its retention (its `retention_ms`, set from its tenant's, or `default`,
-- the store's) once it has ended, and at least OPEN_TTL_MS while it has
-- not.
--
-- quota_keys(i): the quota keys of the subject's tenant, given as
-- KEYS[i], KEYS[i+1], KEYS[i+2] (the quota hash, its open subjects, their
-- expiry), or nil when the caller gave none (the subject has no tenant).
--
-- release(rec, id, n, q): the job or batch `id` (record `rec`) whose rows
-- stop being open (`n` of them, or all when nil) gives them back to its
-- tenant's quota `q` (from quota_keys). Idempotent: only what is still
-- registered can be given back. Nothing happens for a record without a
-- tenant, or without `q`.
local function ttl(rec, default)
  local f = redis.call('HMGET', rec, 'retention_ms', 'rank')
  local r = math.min(tonumber(f[1]) or tonumber(default), 315360000000)
  if (tonumber(f[2]) or 0) < 2 then return math.max(r, OPEN_TTL_MS) end
  return r
end
local function quota_keys(i)
  if KEYS[i] then return {KEYS[i], KEYS[i + 1], KEYS[i + 2]} end
  return nil
end
local function release(rec, id, n, q)
  if not q then return end
  if redis.call('HEXISTS', rec, 'tenant') == 0 then return end
  local have = tonumber(redis.call('HGET', q[2], id))
  if not have then return end
  n = tonumber(n)
  if n == nil or n >= have then
    redis.call('HDEL', q[2], id)
    redis.call('ZREM', q[3], id)
    n = have
  else
    redis.call('HINCRBY', q[2], id, -n)
  end
  redis.call('HINCRBY', q[1], 'sum', -n)
end
