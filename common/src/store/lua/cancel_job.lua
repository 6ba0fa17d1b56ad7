-- Cancels a job if it is in one of the given states (after cancel.lua).
-- KEYS[1] the job; KEYS[2..4] its tenant's quota keys (optional: given
-- when it has a tenant).
-- ARGV: as cancel.lua says.
-- Returns: as cancel.lua says.
return cancel(KEYS[1], nil, quota_keys(2))
