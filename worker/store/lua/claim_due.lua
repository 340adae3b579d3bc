-- Claim deliveries whose next attempt is due (or whose lease ran out): lease each one to this
-- claim, so no other process sends it meanwhile; if the claimer dies, the lease runs out and
-- the delivery is due again.
-- Attempts are bounded per subscription (`bound` in hand per claimer; 0: no bound): a due
-- delivery of a subscription with none free is parked in that subscription's queue (it stays
-- pending, out of the way of the others), and parked deliveries of subscriptions with attempts
-- free come back first.
-- The caller read the candidates (the head of the due index with each one's subscription, and
-- the head of the parked queues with room); each is checked again here, so one that another
-- process claimed or changed meanwhile is passed over, never claimed twice.
-- KEYS[1]: the due index; KEYS[2]: the index of parked queues; KEYS[2 + j]: the parked queue
-- of subscription j (of ARGV's "queues", P in all); KEYS[2 + P + c]: the delivery of
-- candidate c.
-- ARGV[1]: JSON {"now_ms","lease_ms","limit","claim" (the lease of delivery X becomes
--   claim .. ":" .. X),"bound","in_hand":{subscription: attempts},"queues":[subscription],
--   "unpark":[{"id","queue"}],"candidates":[{"id","queue"}]} ("queue": j, 0 when unknown)
-- Returns {passed, id, subscription, id, subscription, ...}: how many candidates left the due
-- index unclaimed (parked, or no longer pending), then the deliveries claimed.
local due, parked_index = KEYS[1], KEYS[2]
local a = cjson.decode(ARGV[1])
local now, lease = a.now_ms, a.lease_ms
local in_hand = a.in_hand
if type(in_hand) ~= "table" then in_hand = {} end
local queues = #a.queues
local function free(subscription)
  if a.bound <= 0 then return a.limit end
  return a.bound - (in_hand[subscription] or 0)
end

-- 1. Parked deliveries of subscriptions with attempts free go back to the due index.
for _, parked in ipairs(a.unpark) do
  local queue = KEYS[2 + parked.queue]
  local score = redis.call("ZSCORE", queue, parked.id)
  if score then
    redis.call("ZADD", due, math.min(tonumber(score), now), parked.id)
    redis.call("ZREM", queue, parked.id)
  end
end

-- 2. Claim the candidates still due; what a busy subscription cannot take is parked, which
-- also clears the head of the due index for the others.
local claimed, found, passed = {0}, 0, 0
for c, candidate in ipairs(a.candidates) do
  if found >= a.limit then break end
  local id, key = candidate.id, KEYS[2 + queues + c]
  local score = redis.call("ZSCORE", due, id)
  if score and tonumber(score) <= now then
    local status, subscription = unpack(redis.call("HMGET", key, "status", "subscription"))
    if status ~= "pending" then
      redis.call("ZREM", due, id)  -- finished or gone: not due
      passed = passed + 1
    elseif candidate.queue > 0 and subscription == a.queues[candidate.queue] then
      if free(subscription) <= 0 then
        redis.call("ZREM", due, id)
        redis.call("HSET", key, "lease", "")
        redis.call("ZADD", KEYS[2 + candidate.queue], score, id)
        redis.call("ZADD", parked_index, 0, subscription)
        passed = passed + 1
      else
        redis.call("ZADD", due, now + lease, id)
        redis.call("HSET", key, "lease", a.claim .. ":" .. id)
        in_hand[subscription] = (in_hand[subscription] or 0) + 1
        table.insert(claimed, id)
        table.insert(claimed, subscription)
        found = found + 1
      end
    end
  end
end
claimed[1] = passed

-- 3. An empty queue leaves the index.
for j = 1, queues do
  if redis.call("ZCARD", KEYS[2 + j]) == 0 then
    redis.call("ZREM", parked_index, a.queues[j])
  end
end
return claimed
