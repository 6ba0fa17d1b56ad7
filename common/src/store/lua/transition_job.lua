-- Moves a job to a new state if the rules allow (after transition.lua).
-- KEYS[1] the job; KEYS[2..4] its tenant's quota keys (optional: given
-- when the job has a tenant and the new state may end it).
-- ARGV: as transition.lua says.
-- Returns: as transition.lua says.
return transition(KEYS[1], nil, quota_keys(2))
