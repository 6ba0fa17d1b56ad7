-- Applies a quota check on its own (after admit.lua).
-- KEYS[1..3] the tenant's quota keys (hash, open subjects, their expiry).
-- ARGV[1..6] the quota arguments (see admit.lua).
-- Returns: as admit.lua says.
return admit(KEYS[1], KEYS[2], KEYS[3], ARGV)
