-- Replace a provisioned user's record, if it is still at the version it was read at and its
-- (new) userName is not another user's. Returns the new version, or why not.
-- KEYS: the user (hash), the source's userName index (hash), the source (hash; removed first by
-- `sources remove`, which then forgets the source's users)
-- ARGV: user id, expected version ('' for any), new userName as it compares, record JSON
if redis.call('EXISTS', KEYS[3]) == 0 then
  return 'nosource'
end
local version = redis.call('HGET', KEYS[1], 'v')
if not version then
  return 'gone'
end
if ARGV[2] ~= '' and ARGV[2] ~= version then
  return 'moved'
end
local old_name = redis.call('HGET', KEYS[1], 'k')
if old_name ~= ARGV[3] then
  local owner = redis.call('HGET', KEYS[2], ARGV[3])
  if owner and owner ~= ARGV[1] then
    return 'taken'
  end
  if redis.call('HGET', KEYS[2], old_name) == ARGV[1] then
    redis.call('HDEL', KEYS[2], old_name)
  end
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
end
redis.call('HSET', KEYS[1], 'r', ARGV[4], 'k', ARGV[3])
return tostring(redis.call('HINCRBY', KEYS[1], 'v', 1))
