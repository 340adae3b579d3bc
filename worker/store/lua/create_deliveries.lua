-- Create the deliveries of one outgoing event, each only if it does not exist yet (the same
-- outbox entry may be dispatched twice after a crash), leased to the sender that will try it
-- at once (the lease lets the due index recover it if that send is lost).
-- ARGV[1]: JSON {"now_ms":..,"lease_ms":..,"deliveries":[{"id":..,"lease":..,"fields":{...}}]}
-- Returns the ids created now.
local request = cjson.decode(ARGV[1])
local created = {}
for _, delivery in ipairs(request.deliveries) do
  local key = "tw:delivery:" .. delivery.id
  if redis.call("HSETNX", key, "id", delivery.id) == 1 then
    for field, value in pairs(delivery.fields) do
      redis.call("HSET", key, field, tostring(value))
    end
    redis.call("HSET", key, "lease", delivery.lease)
    redis.call("ZADD", "tw:deliveries:due", request.now_ms + request.lease_ms, delivery.id)
    redis.call("ZADD", "tw:deliveries", request.now_ms, delivery.id)
    table.insert(created, delivery.id)
  end
end
return created
