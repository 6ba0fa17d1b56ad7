-- Cancels a batch if it is in one of the given states (after cancel.lua).
-- KEYS[1] the batch; KEYS[2] its chunk results; KEYS[3] its dead marks;
-- KEYS[4..6] its tenant's quota keys (optional: given when it has a
-- tenant).
-- ARGV: as cancel.lua says.
-- Returns: as cancel.lua says.
return cancel(KEYS[1], {KEYS[2], KEYS[3]}, quota_keys(4))
