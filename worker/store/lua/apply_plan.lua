-- Apply one decision atomically: the event's de-duplication marker, the guards the decision was
-- made under, the causes it records, the replacements it opens or extends or resolves, the
-- outgoing events (outbox) and the audit entry. Either all of it happens or none of it does.
--
-- The decision itself is made in Python (worker/rules); this script only applies it, merging
-- a new reason into an open replacement so that racing workers never open two. The merge
-- (merge_reason.lua, prepended) keeps a replacement's reasons bounded, and sends a new
-- replacement_required only when there is something new to tell.
--
-- ARGV[1]: the plan, JSON (see worker/store/event_store.py, Plan.encode)
-- Returns JSON {"outcome": "applied"|"duplicate"|"retry", "results": [...]}

local plan = cjson.decode(ARGV[1])
local results = {}

local function finish(outcome)
  if plan.audit then
    redis.call("XADD", plan.audit_key, "MAXLEN", "~", plan.audit_max, "*",
      "at", plan.now_text, "kind", plan.audit.kind, "event", plan.audit.event,
      "outcome", outcome, "note", plan.audit.note, "decisions", cjson.encode(results))
  end
  return cjson.encode({outcome = outcome, results = results})
end

if plan.seen_key and redis.call("EXISTS", plan.seen_key) == 1 then
  return cjson.encode({outcome = "duplicate", results = {}})
end

for _, guard in ipairs(plan.guards) do
  local current = redis.call("HGET", guard.key, guard.field) or ""
  if current ~= guard.value then
    return cjson.encode({outcome = "retry", results = {}})
  end
end

if plan.seen_key then
  redis.call("SET", plan.seen_key, plan.now_text, "EX", plan.seen_ttl)
end

-- The latest cause of each kind per user or server, so a token installed later but downloaded
-- earlier is caught at install time.
local function lists_a_token(key)
  local prefix = plan.user_token_prefix
  for _, name in ipairs(redis.call("HKEYS", key)) do
    if string.sub(name, 1, #prefix) == prefix then return true end
  end
  return false
end

for _, cause in ipairs(plan.causes) do
  local existing = redis.call("HGET", cause.key, cause.field)
  if not existing or tonumber(cjson.decode(existing).at) < tonumber(cause.at) then
    redis.call("HSET", cause.key, cause.field, cause.value)
  end
  -- A user named in events but holding no token is forgotten in time (install persists it).
  if cause.tokenless_ttl and not lists_a_token(cause.key) then
    redis.call("EXPIRE", cause.key, cause.tokenless_ttl)
  end
end

-- Plain writes the decision carries (the scheduler's warning level, its next check), and
-- outgoing events that stand alone (warnings).
for _, write in ipairs(plan.writes) do
  if write.op == "hset" then
    redis.call("HSET", write.key, write.field, write.value)
  elseif write.op == "zadd" then
    redis.call("ZADD", write.key, write.score, write.member)
  elseif write.op == "zrem" then
    redis.call("ZREM", write.key, write.member)
  end
end
for _, outgoing in ipairs(plan.emit) do
  redis.call("XADD", plan.outbox_key, "*", "type", outgoing.type, "event", outgoing.event)
  table.insert(results, {action = "sent " .. outgoing.type})
end

local function most_urgent(reasons)
  local best = reasons[1]
  for _, reason in ipairs(reasons) do
    if reason.rank > best.rank then best = reason end
  end
  return best.urgency
end

local function emit(event)
  redis.call("XADD", plan.outbox_key, "*", "type", event.type, "event", cjson.encode(event))
end

-- The reasons of the replacement at `key` (its reasons hash field) and the causes omitted.
local function stored_reasons(key)
  local reasons = cjson.decode(redis.call("HGET", key, "reasons") or "[]")
  if type(reasons) ~= "table" then reasons = {} end
  return load_reasons(reasons, tonumber(redis.call("HGET", key, "omitted")) or 0, plan.max_reasons)
end

-- The outgoing event: the reason this cause ended in, the reasons kept (bounded) and totals.
local function describe(event, key, reason, reasons, omitted)
  event.data.reason = reason
  event.data.reasons = reasons
  event.data.urgency = most_urgent(reasons)
  event.data.opened_at = redis.call("HGET", key, "opened_at")
  for name, value in pairs(totals(reasons, omitted)) do event.data[name] = value end
end

for _, op in ipairs(plan.open) do
  local entry = {token = op.token, server = op.server_name, cause = op.reason.id}
  if redis.call("HGET", "tw:token:" .. op.token, "status") ~= "current" then
    entry.action = "none: token no longer current"
  else
    local key = "tw:replacement:" .. op.token
    local opened = redis.call("HGET", key, "status") ~= "open"
    local reasons, omitted = {}, 0
    if not opened then reasons, omitted = stored_reasons(key) end
    local change, reason
    reasons, omitted, change, reason = merge_reason(reasons, omitted, op.reason, plan.max_reasons)
    if change == "same" then
      entry.action = "none: same cause already recorded"
    else
      local encoded = cjson.encode(reasons)
      if opened then
        redis.call("DEL", key)
        redis.call("HSET", key, "token", op.token, "server", op.server, "status", "open",
          "opened_at", plan.now_text, "resolved_at", "", "resolved_by", "", "reasons", encoded,
          "omitted", omitted)
        redis.call("ZADD", "tw:replacements:open", plan.now_ms, op.token)
        redis.call("ZADD", "tw:replacements", plan.now_ms, op.token)
        entry.action = "opened"
      else
        redis.call("HSET", key, "reasons", encoded, "omitted", omitted)
        entry.action = "reason " .. change
      end
      local event = cjson.decode(op.outgoing)
      -- The certificate to upload stays with the replacement, whatever reason comes later.
      local stored = redis.call("HGET", key, "certificate")
      local certificate_changed = false
      if type(event.data.certificate) == "string" then
        certificate_changed = event.data.certificate ~= stored
        redis.call("HSET", key, "certificate", event.data.certificate)
      elseif stored then
        event.data.certificate = stored
      end
      if notifies(opened, change, certificate_changed) then
        describe(event, key, reason, reasons, omitted)
        emit(event)
      else
        entry.action = entry.action .. " (nothing new to tell)"
      end
    end
  end
  table.insert(results, entry)
end

for _, op in ipairs(plan.resolve) do
  local key = "tw:replacement:" .. op.token
  local entry = {token = op.token, server = op.server_name}
  local event = cjson.decode(op.outgoing)
  if redis.call("HGET", key, "status") == "open" then
    redis.call("HSET", key, "status", "resolved", "resolved_at", plan.now_text,
      "resolved_by", op.by)
    redis.call("ZREM", "tw:replacements:open", op.token)
    local reasons, omitted = stored_reasons(key)
    local closed = totals(reasons, omitted)
    closed.reasons = reasons
    closed.opened_at = redis.call("HGET", key, "opened_at")
    event.data.closed_replacement = closed
    entry.action = "replacement resolved"
  else
    entry.action = "replaced (no replacement was open)"
  end
  emit(event)
  table.insert(results, entry)
end

return finish("applied")
