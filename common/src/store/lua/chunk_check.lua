-- Checks of an untrusted chunk message against its batch: a made-up one
-- must not finish a batch early, count rows twice, or run other inputs as
-- the batch's.
--
-- chunk_misfit(f, index, first_row, rows, model, version): whether the
-- chunk's place agrees with its batch (the batch's fields `total`,
-- `chunk_rows`, `chunks`, `model`, `version` in f[2..6]): index, first
-- row, row count ('' to skip) and model. Returns why not, or nil.
--
-- chunk_forged(digests, index, digest): whether its digest is the one the
-- producer noted for that place in the batch's chunk digests `digests` (a
-- batch of an earlier release has none). Returns why not, or nil.
local function chunk_misfit(f, index, first_row, rows, model, version)
  local total, per, chunks = tonumber(f[2]) or 0, tonumber(f[3]) or 0, tonumber(f[4]) or 0
  index, first_row = tonumber(index), tonumber(first_row)
  if index == nil or index < 0 or index >= chunks then return 'chunk index out of range' end
  if first_row ~= index * per + 1 then return 'chunk first_row does not match its batch' end
  local want = math.min(per, total - index * per)
  if rows ~= '' and tonumber(rows) ~= want then return 'chunk row count does not match its batch' end
  if f[5] ~= model or f[6] ~= version then return 'chunk model does not match its batch' end
  return nil
end
local function chunk_forged(digests, index, digest)
  local want = redis.call('HGET', digests, index)
  if want and want ~= digest then return 'chunk inputs do not match its batch' end
  return nil
end
