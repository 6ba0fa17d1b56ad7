-- Moves a batch to a new state if the rules allow (after transition.lua).
-- KEYS[1] the batch; KEYS[2] its chunk results; KEYS[3] its dead marks;
-- KEYS[4..6] its tenant's quota keys (optional: given when it has a
-- tenant).
-- ARGV: as transition.lua says.
-- Returns: as transition.lua says.
return transition(KEYS[1], {KEYS[2], KEYS[3]}, quota_keys(4))
