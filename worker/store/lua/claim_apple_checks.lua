-- Claim the tokens due for a check with Apple: each is moved to the lease's end, so another
-- round (or a scheduler taking over) does not ask about it twice, and a check that dies with
-- its process comes back when the lease ends.
--
-- KEYS[1]: the schedule (sorted set: token id -> when due, ms)
-- ARGV: now (ms), how many at most, the lease's end (ms)
-- Returns the ids claimed, soonest due first.
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call("ZADD", KEYS[1], "XX", ARGV[3], id)
end
return ids
