-- A batch's parts: its chunk results (one hash, index -> rows) and its
-- dead-lettered chunks (one hash, index -> rows).
--
-- expire_parts(results, dead, keep): gives both `keep` ms from now: the
-- batch's retention once it has ended, or the open TTL again when it is
-- reopened.
--
-- complete(batch, results, dead, q, now, channel, id, default): ends the
-- batch `id` whose every chunk is stored, if it is still open: it becomes
-- `succeeded` at `now`, gives back its quota (`q`, see release), gets its
-- retention (its parts too) and is published on `channel`. Returns
-- whether the batch has completed (now, or before: a retry after a lost
-- reply must still announce it).
local function expire_parts(results, dead, keep)
  redis.call('PEXPIRE', results, keep)
  redis.call('PEXPIRE', dead, keep)
end
local function complete(batch, results, dead, q, now, channel, id, default)
  local f = redis.call('HMGET', batch, 'status', 'done_chunks', 'chunks')
  local chunks = tonumber(f[3]) or 0
  if (tonumber(f[2]) or 0) >= chunks and (f[1] == 'queued' or f[1] == 'running') then
    redis.call('HSET', batch, 'status', 'succeeded', 'rank', 2, 'finished_at', now)
    release(batch, id, nil, q)
    local keep = ttl(batch, default)
    redis.call('PEXPIRE', batch, keep)
    expire_parts(results, dead, keep)
    announce(channel, id)
    return true
  end
  return f[1] == 'succeeded'
end
