-- A replacement's reasons, merged and bounded: the same rules as merge_reason, notifies and
-- totals in worker/rules/replacement.py (read it there; tests/test_reason_merging.py runs one
-- table of cases against both). Prepended to apply_plan.lua.

local SAME, MERGED, ADDED, DISPLACED, OMITTED = "same", "merged", "added", "displaced", "omitted"

local function same_kind(a, b)
  -- A reason recorded before reasons had subjects matches by type alone.
  return a.type == b.type and (a.subject == nil or b.subject == nil or a.subject == b.subject)
end

local function is_same_event(reason, new)
  local last = reason.last or reason
  return (reason.source == new.source and reason.id == new.id)
    or (last.source == new.source and last.id == new.id)
end

local function copy(t)
  local c = {}
  for name, value in pairs(t) do c[name] = value end
  return c
end

local function absorb(reason, new)
  local merged = copy(reason)
  merged.count = reason.count + new.count
  -- RFC 3339 UTC to the second: times compare as text.
  if new.time < reason.time then
    merged.id, merged.source, merged.time = new.id, new.source, new.time
  end
  if new.last.time >= reason.last.time then
    merged.last = copy(new.last)
  end
  return merged
end

-- Returns reasons, omitted, change, and the reason the new cause ended in.
local function merge_reason(reasons, omitted, new, cap)
  for _, reason in ipairs(reasons) do
    if is_same_event(reason, new) then return reasons, omitted, SAME, reason end
  end
  for index, reason in ipairs(reasons) do
    if same_kind(reason, new) then
      local merged = absorb(reason, new)
      reasons[index] = merged
      return reasons, omitted, MERGED, merged
    end
  end
  if #reasons < cap then
    table.insert(reasons, new)
    return reasons, omitted, ADDED, new
  end
  -- The least urgent after the first, the latest of equals.
  local victim = nil
  for index = 2, #reasons do
    if victim == nil or reasons[index].rank <= reasons[victim].rank then victim = index end
  end
  if victim ~= nil and new.rank > reasons[victim].rank then
    local displaced = table.remove(reasons, victim)
    table.insert(reasons, new)
    return reasons, omitted + displaced.count, DISPLACED, new
  end
  return reasons, omitted + new.count, OMITTED, new
end

local function notifies(opened, change, certificate_changed)
  if change == SAME then return false end
  return opened or change == ADDED or change == DISPLACED or certificate_changed
end

local function totals(reasons, omitted)
  local events = omitted
  for _, reason in ipairs(reasons) do events = events + reason.count end
  return {reason_count = #reasons, event_count = events, omitted_events = omitted}
end

-- Reasons as stored: those recorded before merging (no count) are merged now, once.
local function load_reasons(reasons, omitted, cap)
  local legacy = false
  for _, reason in ipairs(reasons) do
    if reason.count == nil then legacy = true end
  end
  if not legacy then return reasons, omitted end
  local merged = {}
  for _, reason in ipairs(reasons) do
    if reason.count == nil then
      reason.count = 1
      reason.last = {id = reason.id, source = reason.source, time = reason.time}
    end
    merged, omitted = merge_reason(merged, omitted, reason, cap)
  end
  return merged, omitted
end
