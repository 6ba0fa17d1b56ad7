-- Gives back an open subject's rows (after give_back.lua).
-- KEYS[1..3] the tenant's quota keys (hash, open subjects, their expiry).
-- ARGV[1] the subject; ARGV[2] how many rows (optional; -1 or absent:
-- all it holds).
-- Returns the rows given back.
return give_back({KEYS[1], KEYS[2], KEYS[3]}, ARGV[1], ARGV[2])
