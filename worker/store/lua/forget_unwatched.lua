-- Take out of a domain's watched set the users who no longer hold a current token (no `t:`
-- field in their hash), atomically with the check: an install adding a token (and the user to
-- the set) in the same moment is never undone. Drops the domain from the domains set once its
-- set is empty.
--
-- KEYS[1]: the domain's watched set; KEYS[2]: the set of domains; KEYS[3..]: user hashes
-- ARGV[1]: the domain; ARGV[2..]: the user keys, in the order of KEYS[3..]
-- Returns how many were taken out.
local forgotten = 0
for i = 3, #KEYS do
  local holds = false
  for _, field in ipairs(redis.call("HKEYS", KEYS[i])) do
    if string.sub(field, 1, 2) == "t:" then
      holds = true
      break
    end
  end
  if not holds then
    forgotten = forgotten + redis.call("SREM", KEYS[1], ARGV[i - 1])
  end
end
if redis.call("SCARD", KEYS[1]) == 0 then
  redis.call("SREM", KEYS[2], ARGV[1])
end
return forgotten
