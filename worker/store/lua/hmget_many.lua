-- The same fields of many hashes in one call: the web pages read the whole estate with it,
-- one call per batch of keys rather than one command per hash.
-- KEYS: the hashes; ARGV: the field names.
-- Returns, for each key in order, its values in ARGV order joined by the unit separator
-- (byte 31), "" for a field it lacks: one string per hash is what the reader parses fastest.
-- A value holding that byte shows as too many fields, and the reader reads that hash again.
local found = {}
for i, key in ipairs(KEYS) do
  local values = redis.call("HMGET", key, unpack(ARGV))
  for j = 1, #ARGV do
    values[j] = values[j] or ""
  end
  found[i] = table.concat(values, "\31")
end
return found
