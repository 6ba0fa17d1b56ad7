-- Functions of the event scripts. No key is built here: each script is
-- given its subject's job and batch record keys (one of them exists).
--
-- keep(job, batch, default): how long an event record or log lives after
-- a change: its subject's retention (a tenant's, stored on the job or
-- batch, same hash tag, if it is a sane TTL: at most ten years) or
-- `default`, the store's.
--
-- erased(job, batch): whether the subject was erased (then nothing more
-- is sent or kept).
local function sane(ms)
  ms = tonumber(ms)
  if ms and ms >= 1 and ms <= 315360000000 then return math.floor(ms) end
  return nil
end
local function keep(job, batch, default)
  return sane(redis.call('HGET', job, 'retention_ms'))
    or sane(redis.call('HGET', batch, 'retention_ms'))
    or tonumber(default)
end
local function erased(job, batch)
  return redis.call('HEXISTS', job, 'erased') == 1
    or redis.call('HEXISTS', batch, 'erased') == 1
end
