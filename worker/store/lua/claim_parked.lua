-- Claim the next parked delivery of one subscription, for an attempt that just finished for
-- it (its slot goes on to the next delivery waiting). Leased like claim_due.lua.
-- ARGV: parked key, subscription, now_ms, lease_ms, claim. Returns the id claimed, or false.
local parked, subscription = ARGV[1], ARGV[2]
local now, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local claimed = false
for _ = 1, 10 do
  local head = redis.call("ZRANGE", parked, 0, 0)
  if #head == 0 then break end
  local id = head[1]
  redis.call("ZREM", parked, id)
  local key = "tw:delivery:" .. id
  if redis.call("HGET", key, "status") == "pending" then
    redis.call("ZADD", "tw:deliveries:due", now + lease, id)
    redis.call("HSET", key, "lease", ARGV[5] .. ":" .. id)
    claimed = id
    break
  end
end
if redis.call("ZCARD", parked) == 0 then
  redis.call("ZREM", "tw:deliveries:parked", subscription)
end
return claimed
