-- Deprovision a user, if it is still at the version it was read at.
-- KEYS: the user (hash), the source's userName index (hash), the source's user ids (zset)
-- ARGV: user id, expected version ('' for any)
local version = redis.call('HGET', KEYS[1], 'v')
if not version then
  return 'gone'
end
if ARGV[2] ~= '' and ARGV[2] ~= version then
  return 'moved'
end
local name = redis.call('HGET', KEYS[1], 'k')
if redis.call('HGET', KEYS[2], name) == ARGV[1] then
  redis.call('HDEL', KEYS[2], name)
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 'ok'
