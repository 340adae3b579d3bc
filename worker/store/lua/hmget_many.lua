-- The same fields of many hashes in one call: the web pages read the whole estate with it,
-- one call per batch of keys rather than one command per hash.
-- KEYS: the hashes; ARGV: the field names.
-- Returns, for each key in order, its values in ARGV order (false for a field it lacks).
local found = {}
for i, key in ipairs(KEYS) do
  found[i] = redis.call("HMGET", key, unpack(ARGV))
end
return found
