-- Start an attempt: only the holder of the delivery's lease may, and only while the delivery
-- is pending. The lease is stretched to cover the attempt.
-- KEYS[1]: the delivery; KEYS[2]: the due index.
-- ARGV: id, lease, now_ms, lease_ms. Returns the attempts made so far, or -1 (not yours).
local key, due = KEYS[1], KEYS[2]
if redis.call("HGET", key, "status") ~= "pending" then return -1 end
if redis.call("HGET", key, "lease") ~= ARGV[2] then return -1 end
redis.call("ZADD", due, tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
return tonumber(redis.call("HGET", key, "attempts") or "0")
