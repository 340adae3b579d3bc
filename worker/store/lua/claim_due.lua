-- Claim deliveries whose next attempt is due: push each one's due time a lease ahead, so no
-- other process claims it while it is being tried; if the claimer dies, it is due again when
-- the lease runs out.
-- ARGV: now_ms, lease_ms, limit. Returns the ids claimed.
local now, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local due = redis.call("ZRANGEBYSCORE", "tw:deliveries:due", "-inf", now, "LIMIT", 0, limit)
for _, id in ipairs(due) do
  redis.call("ZADD", "tw:deliveries:due", now + lease, id)
end
return due
