-- Claim deliveries whose next attempt is due (or whose lease ran out): lease each one to this
-- claim, so no other process sends it meanwhile; if the claimer dies, the lease runs out and
-- the delivery is due again.
-- Attempts are bounded per subscription (`bound` in hand per claimer; 0: no bound): a due
-- delivery of a subscription with none free is parked in that subscription's queue (it stays
-- pending, out of the way of the others), and parked deliveries of subscriptions with attempts
-- free come back first.
-- ARGV[1]: JSON {"now_ms","lease_ms","limit","claim" (the lease of delivery X becomes
--   claim .. ":" .. X),"bound","in_hand":{subscription: attempts},"parked_prefix"}
-- Returns {id, subscription, id, subscription, ...} of the deliveries claimed.
local a = cjson.decode(ARGV[1])
local now, lease = a.now_ms, a.lease_ms
local in_hand = a.in_hand
if type(in_hand) ~= "table" then in_hand = {} end
local function free(subscription)
  if a.bound <= 0 then return a.limit end
  return a.bound - (in_hand[subscription] or 0)
end

-- 1. Parked deliveries of subscriptions with attempts free go back to the due index.
for _, subscription in ipairs(redis.call("ZRANGE", "tw:deliveries:parked", 0, 99)) do
  local parked = a.parked_prefix .. subscription
  local room = free(subscription)
  if room > 0 then
    local waiting = redis.call("ZRANGE", parked, 0, room - 1, "WITHSCORES")
    for i = 1, #waiting, 2 do
      redis.call("ZADD", "tw:deliveries:due", math.min(tonumber(waiting[i + 1]), now), waiting[i])
      redis.call("ZREM", parked, waiting[i])
    end
  end
  if redis.call("ZCARD", parked) == 0 then
    redis.call("ZREM", "tw:deliveries:parked", subscription)
  end
end

-- 2. Claim from the head of the due index; what a busy subscription cannot take is parked,
-- which also clears the head for the others.
local claimed, found = {}, 0
for _ = 1, 10 do
  if found >= a.limit then break end
  local due = redis.call("ZRANGEBYSCORE", "tw:deliveries:due", "-inf", now, "WITHSCORES",
    "LIMIT", 0, a.limit - found)
  if #due == 0 then break end
  for i = 1, #due, 2 do
    local id, score = due[i], due[i + 1]
    local key = "tw:delivery:" .. id
    local status, subscription = unpack(redis.call("HMGET", key, "status", "subscription"))
    if status ~= "pending" then
      redis.call("ZREM", "tw:deliveries:due", id)  -- finished or gone: not due
    elseif free(subscription) <= 0 then
      redis.call("ZREM", "tw:deliveries:due", id)
      redis.call("HSET", key, "lease", "")
      redis.call("ZADD", a.parked_prefix .. subscription, score, id)
      redis.call("ZADD", "tw:deliveries:parked", 0, subscription)
    else
      redis.call("ZADD", "tw:deliveries:due", now + lease, id)
      redis.call("HSET", key, "lease", a.claim .. ":" .. id)
      in_hand[subscription] = (in_hand[subscription] or 0) + 1
      table.insert(claimed, id)
      table.insert(claimed, subscription)
      found = found + 1
    end
  end
end
return claimed
