-- Create the deliveries of one outgoing event, each only if it does not exist yet (the same
-- outbox entry may be dispatched twice after a crash). A delivery sent at once is leased to its
-- sender (the lease lets the due index recover it if that send is lost); one whose
-- subscription has no attempt free is parked in the subscription's own queue instead.
-- The event body is stored once, however many subscriptions it goes to, with a count of the
-- deliveries that still need it (record_attempt.lua lets it go with the last one).
-- ARGV[1]: JSON {"now_ms":..,"lease_ms":..,"body_key":..,"body":..,"parked_prefix":..,
--   "deliveries":[{"id":..,"lease":..,"park":true|false,"fields":{...}}]}
-- Returns the ids created now.
local request = cjson.decode(ARGV[1])
local created = {}
for _, delivery in ipairs(request.deliveries) do
  local key = "tw:delivery:" .. delivery.id
  if redis.call("HSETNX", key, "id", delivery.id) == 1 then
    for field, value in pairs(delivery.fields) do
      redis.call("HSET", key, field, tostring(value))
    end
    redis.call("HINCRBY", request.body_key, "refs", 1)
    if delivery.park then
      local subscription = delivery.fields.subscription
      redis.call("ZADD", request.parked_prefix .. subscription, request.now_ms, delivery.id)
      redis.call("ZADD", "tw:deliveries:parked", 0, subscription)
    else
      redis.call("HSET", key, "lease", delivery.lease)
      redis.call("ZADD", "tw:deliveries:due", request.now_ms + request.lease_ms, delivery.id)
    end
    redis.call("ZADD", "tw:deliveries", request.now_ms, delivery.id)
    table.insert(created, delivery.id)
  end
end
if #created > 0 then
  redis.call("HSETNX", request.body_key, "body", request.body)
end
return created
