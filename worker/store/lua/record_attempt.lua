-- Record the outcome of attempt N of a delivery, only if it is still pending with N-1 attempts
-- made (a late duplicate of an attempt changes nothing).
-- ARGV[1]: JSON {"id","attempt","outcome":"delivered"|"retry"|"failed","status","error",
--                "now_ms","now_text","next_ms","latency_ms"}
-- Returns 1 when recorded, 0 when stale.
local a = cjson.decode(ARGV[1])
local key = "tw:delivery:" .. a.id
if redis.call("HGET", key, "status") ~= "pending" then return 0 end
if tonumber(redis.call("HGET", key, "attempts") or "0") ~= a.attempt - 1 then return 0 end
redis.call("HSET", key, "attempts", a.attempt, "last_status", a.status, "last_error", a.error,
  "last_attempt_at", a.now_text, "last_latency_ms", a.latency_ms)
if a.outcome == "delivered" then
  redis.call("HSET", key, "status", "delivered", "delivered_at", a.now_text, "next_at", "")
  redis.call("ZREM", "tw:deliveries:due", a.id)
elseif a.outcome == "retry" then
  redis.call("HSET", key, "next_at", a.next_ms)
  redis.call("ZADD", "tw:deliveries:due", a.next_ms, a.id)
else
  redis.call("HSET", key, "status", "failed", "failed_at", a.now_text, "next_at", "")
  redis.call("ZREM", "tw:deliveries:due", a.id)
  redis.call("ZADD", "tw:deliveries:failed", a.now_ms, a.id)
end
return 1
