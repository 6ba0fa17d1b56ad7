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
-- tenant's quota `q` (from quota_keys; see give_back.lua). Nothing happens
-- for a record without a tenant. Without `q` (in a Redis Cluster the
-- quota lives in another slot) the release is left to the caller: see
-- AFTER.
--
-- announce(channel, id): publishes that `id` has ended on `channel`, or,
-- when `channel` is '' (a Redis Cluster: the done channels are sharded,
-- in other slots), leaves that to the caller.
--
-- AFTER: what the script leaves to its caller to do on other slots, nil
-- when nothing: a flat list of `'release', tenant, id, rows` (rows -1:
-- all) and `'done', id`. The script's reply then comes wrapped as
-- {'infq:after', reply, AFTER} (see store/scripts.rs and store/after.rs).
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
local AFTER = nil
local function after(...)
  AFTER = AFTER or {}
  for _, v in ipairs({...}) do table.insert(AFTER, v) end
end
local function release(rec, id, n, q)
  local tenant = redis.call('HGET', rec, 'tenant')
  if not tenant then return end
  if not q then
    after('release', tenant, id, n and tostring(n) or '-1')
    return
  end
  give_back(q, id, n)
end
local function announce(channel, id)
  if channel == '' then
    after('done', id)
  else
    redis.call('PUBLISH', channel, id)
  end
end
