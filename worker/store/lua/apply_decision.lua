-- Apply one decision atomically: drop a repeated event (its de-duplication marker), refuse a
-- decision whose facts moved (its guards), else make its writes. Either all of them happen or
-- none does. The decision is made in Python (worker/rules); what it writes is derived from it
-- by worker/store/decisions.py, the only place that knows the keys and fields.
--
-- KEYS: every key the decision reads or writes; ARGV refers to them by index.
-- ARGV[1]: JSON {
--   "marker": [key index, value, seconds to keep]   (absent: no event to de-duplicate),
--   "guards": [[key index, hash field, value read ("" = absent)], ...],
--   "writes": [[command, key index, argument, ...], ...]   (commands: see WRITES)
-- }
-- Returns "applied", "duplicate" (the marker is there) or "retry" (a guard moved).

local WRITES = {
  HSET = true, HDEL = true, DEL = true, EXPIRE = true, PERSIST = true,
  ZADD = true, ZREM = true, XADD = true, SADD = true,
}

local decision = cjson.decode(ARGV[1])
local marker = decision.marker

if marker and redis.call("EXISTS", KEYS[marker[1]]) == 1 then
  return "duplicate"
end

for _, guard in ipairs(decision.guards) do
  if (redis.call("HGET", KEYS[guard[1]], guard[2]) or "") ~= guard[3] then
    return "retry"
  end
end

for _, write in ipairs(decision.writes) do
  if not WRITES[write[1]] then
    return redis.error_reply("apply_decision: " .. tostring(write[1]) .. " is not a write")
  end
end

if marker then
  redis.call("SET", KEYS[marker[1]], marker[2], "EX", marker[3])
end

for _, write in ipairs(decision.writes) do
  redis.call(write[1], KEYS[write[2]], unpack(write, 3))
end

return "applied"
