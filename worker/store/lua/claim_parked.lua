-- Claim the next parked delivery of one subscription, for an attempt that just finished for
-- it (its slot goes on to the next delivery waiting). Leased like claim_due.lua. The caller
-- read the head of the parked queue; a candidate no longer in it (another process took it)
-- is passed over.
-- KEYS[1]: the subscription's parked queue; KEYS[2]: the index of parked queues; KEYS[3]: the
-- due index; KEYS[3 + i]: the delivery of candidate i.
-- ARGV: subscription, now_ms, lease_ms, claim, then the candidate ids, head first.
-- Returns the id claimed, or false.
local parked, parked_index, due = KEYS[1], KEYS[2], KEYS[3]
local subscription, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local claimed = false
for i = 5, #ARGV do
  local id, key = ARGV[i], KEYS[i - 1]
  if redis.call("ZSCORE", parked, id) then
    redis.call("ZREM", parked, id)
    if redis.call("HGET", key, "status") == "pending" then
      redis.call("ZADD", due, now + lease, id)
      redis.call("HSET", key, "lease", ARGV[4] .. ":" .. id)
      claimed = id
      break
    end
  end
end
if redis.call("ZCARD", parked) == 0 then
  redis.call("ZREM", parked_index, subscription)
end
return claimed
