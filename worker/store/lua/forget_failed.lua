-- Forget a delivery that failed long ago, if it is still failed: its record, its place in the
-- failed and listing indexes, and its share of the event body (the last one to go deletes it).
-- KEYS[1]: the delivery; KEYS[2]: tw:deliveries:failed; KEYS[3]: tw:deliveries;
-- KEYS[4]: the shared event body (for the event the caller read from the delivery)
-- ARGV[1]: the delivery id; ARGV[2]: the event id the caller read
-- Returns 1 when forgotten, 0 when the delivery changed meanwhile (say, retried by hand).
if redis.call("HGET", KEYS[1], "status") ~= "failed" then
  redis.call("ZREM", KEYS[2], ARGV[1])  -- not failed (any more): no place in this index
  return 0
end
if redis.call("HGET", KEYS[1], "event_id") ~= ARGV[2] then return 0 end
if redis.call("HEXISTS", KEYS[1], "event") == 0 then  -- the body is shared (older: inline)
  if redis.call("HINCRBY", KEYS[4], "refs", -1) <= 0 then redis.call("DEL", KEYS[4]) end
end
redis.call("DEL", KEYS[1])
redis.call("ZREM", KEYS[2], ARGV[1])
redis.call("ZREM", KEYS[3], ARGV[1])
return 1
