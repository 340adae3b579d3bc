-- Record the outcome of attempt N of a delivery, only for the lease holder and only if N-1
-- attempts were made (a late duplicate changes nothing). The lease ends here. A delivered or
-- cancelled delivery no longer needs the event body: the last one to finish lets it go (a
-- failed one keeps it, for `deliveries retry`).
-- KEYS[1]: the delivery; KEYS[2]: the due index; KEYS[3]: the failed index; KEYS[4]: the
-- shared event body (of the event the caller read from the delivery).
-- ARGV[1]: JSON {"id","event_id","lease","attempt",
--                "outcome":"delivered"|"retry"|"failed"|"cancelled",
--                "status","error","now_ms","now_text","next_ms","latency_ms","keep_ms"}
-- Returns 1 when recorded, 0 when stale.
local key, due, failed, body = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local a = cjson.decode(ARGV[1])
if redis.call("HGET", key, "status") ~= "pending" then return 0 end
if redis.call("HGET", key, "lease") ~= a.lease then return 0 end
if tonumber(redis.call("HGET", key, "attempts") or "0") ~= a.attempt - 1 then return 0 end
if redis.call("HGET", key, "event_id") ~= a.event_id then return 0 end
redis.call("HSET", key, "attempts", a.attempt, "last_status", a.status, "last_error", a.error,
  "last_attempt_at", a.now_text, "last_latency_ms", a.latency_ms, "lease", "")
if a.outcome == "delivered" or a.outcome == "cancelled" then
  redis.call("HSET", key, "status", a.outcome, "finished_at", a.now_text, "next_at", "")
  redis.call("ZREM", due, a.id)
  redis.call("PEXPIRE", key, a.keep_ms)  -- finished: kept a while for `deliveries list`
  if redis.call("HEXISTS", key, "event") == 0 then  -- the body is shared (older: inline)
    if redis.call("HINCRBY", body, "refs", -1) <= 0 then redis.call("DEL", body) end
  end
elseif a.outcome == "retry" then
  redis.call("HSET", key, "next_at", a.next_ms)
  redis.call("ZADD", due, a.next_ms, a.id)
else
  redis.call("HSET", key, "status", "failed", "failed_at", a.now_text, "next_at", "")
  redis.call("ZREM", due, a.id)
  redis.call("ZADD", failed, a.now_ms, a.id)
end
return 1
