-- Claim deliveries whose next attempt is due (or whose lease ran out): lease each one to this
-- claim, so no other process sends it meanwhile; if the claimer dies, the lease runs out and
-- the delivery is due again.
-- ARGV: now_ms, lease_ms, limit, claim (the lease of delivery X becomes claim .. ":" .. X).
-- Returns the ids claimed.
local now, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local due = redis.call("ZRANGEBYSCORE", "tw:deliveries:due", "-inf", now, "LIMIT", 0, limit)
local claimed = {}
for _, id in ipairs(due) do
  local key = "tw:delivery:" .. id
  if redis.call("HGET", key, "status") == "pending" then
    redis.call("ZADD", "tw:deliveries:due", now + lease, id)
    redis.call("HSET", key, "lease", ARGV[4] .. ":" .. id)
    table.insert(claimed, id)
  else
    redis.call("ZREM", "tw:deliveries:due", id)  -- finished or gone: not due
  end
end
return claimed
