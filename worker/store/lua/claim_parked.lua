-- Claim the next parked delivery of one subscription, for an attempt that just finished for
-- it (its slot goes on to the next delivery waiting). Leased like claim_due.lua. The caller
-- passes candidates it read from the head of the parked queue (or that the previous call
-- returned); one no longer in the queue (another process took it) is passed over.
-- KEYS[1]: the subscription's parked queue; KEYS[2]: the index of parked queues; KEYS[3]: the
-- due index; KEYS[3 + i]: the delivery of candidate i.
-- ARGV: subscription, now_ms, lease_ms, claim, looks (how many ids of the head to return),
-- then the candidate ids, head first.
-- Returns {the id claimed or "", then the ids now at the head of the queue}.
local parked, parked_index, due = KEYS[1], KEYS[2], KEYS[3]
local subscription, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local claimed = ""
for i = 6, #ARGV do
  local id, key = ARGV[i], KEYS[i - 2]
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
local head = redis.call("ZRANGE", parked, 0, tonumber(ARGV[5]) - 1)
if #head == 0 then
  redis.call("ZREM", parked_index, subscription)
end
table.insert(head, 1, claimed)
return head
