-- Provision a user of a SCIM source, unless the source is gone or full or the userName taken.
-- KEYS: the source's user ids (zset), its userName index (hash), the user (hash), the source
-- (hash; removed first by `sources remove`, which then forgets the source's users)
-- ARGV: user id, userName as it compares, record JSON, created (ms), most users per source
if redis.call('EXISTS', KEYS[4]) == 0 then
  return 'nosource'
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then
  return 'full'
end
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[1]) == 0 then
  return 'taken'
end
redis.call('HSET', KEYS[3], 'r', ARGV[3], 'v', 1, 'k', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
return 'ok'
