-- Create the deliveries of one outgoing event, each only if it does not exist yet (the same
-- outbox entry may be dispatched twice after a crash). A delivery sent at once is leased to its
-- sender (the lease lets the due index recover it if that send is lost); one whose
-- subscription has no attempt free is parked in the subscription's own queue instead.
-- The event body is stored once, however many subscriptions it goes to, with a count of the
-- deliveries that still need it (record_attempt.lua lets it go with the last one).
-- KEYS[1]: the due index; KEYS[2]: all deliveries; KEYS[3]: the index of parked queues;
-- KEYS[4]: the event body; then, for the N deliveries in ARGV order, KEYS[4 + i]: delivery i
-- and KEYS[4 + N + i]: the parked queue of its subscription.
-- ARGV[1]: JSON {"now_ms":..,"lease_ms":..,"body":..,
--   "deliveries":[{"id":..,"lease":..,"park":true|false,"fields":{...}}]}
-- Returns the ids created now.
local due, all, parked_index, body_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local request = cjson.decode(ARGV[1])
local count = #request.deliveries
local created = {}
for i, delivery in ipairs(request.deliveries) do
  local key = KEYS[4 + i]
  if redis.call("HSETNX", key, "id", delivery.id) == 1 then
    for field, value in pairs(delivery.fields) do
      redis.call("HSET", key, field, tostring(value))
    end
    redis.call("HINCRBY", body_key, "refs", 1)
    if delivery.park then
      redis.call("ZADD", KEYS[4 + count + i], request.now_ms, delivery.id)
      redis.call("ZADD", parked_index, 0, delivery.fields.subscription)
    else
      redis.call("HSET", key, "lease", delivery.lease)
      redis.call("ZADD", due, request.now_ms + request.lease_ms, delivery.id)
    end
    redis.call("ZADD", all, request.now_ms, delivery.id)
    table.insert(created, delivery.id)
  end
end
if #created > 0 then
  redis.call("HSETNX", body_key, "body", request.body)
end
return created
