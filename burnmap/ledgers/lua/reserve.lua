-- burnmap: reserve a hold on every scope of a call, or nothing. One atomic step.
-- KEYS[1]: key prefix (a hash tag, so every key lives in one Cluster slot)
-- ARGV: hold id, amount (micro-dollars), ttl (s), keep (s), charge_expired (1/0), n,
--       then per scope: scope, limit json ("" = no limit), window key, start, end ("" = none)
local P = KEYS[1]
local id = ARGV[1]
local amount = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local keep = tonumber(ARGV[4])
local charge_expired = ARGV[5] == '1'
local n = tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

-- Expire overdue holds first (a bounded batch per call).
local due = redis.call('ZRANGEBYSCORE', P .. ':exp', '-inf', now, 'LIMIT', 0, 200)
for _, hid in ipairs(due) do
  local hk = P .. ':h:' .. hid
  local h = redis.call('HMGET', hk, 'st', 'a', 'e', 'x')
  if h[1] == 'held' and tonumber(h[4]) <= now then
    local held = tonumber(h[2])
    local charged = 0
    if charge_expired then charged = held end
    for _, e in ipairs(cjson.decode(h[3])) do
      local tk = P .. ':t:' .. e[1] .. '|' .. e[2]
      redis.call('HINCRBY', tk, 'r', -held)
      redis.call('HINCRBY', tk, 's', charged)
    end
    redis.call('HSET', hk, 'st', 'expired', 'c', charged)
    redis.call('EXPIRE', hk, keep)
  end
  if h[1] ~= 'held' or tonumber(h[4]) <= now then
    redis.call('ZREM', P .. ':exp', hid)
  end
end

-- Called with no hold id, the script only reaps.
if id == '' then return {'reaped', #due} end

-- A re-sent reservation gets its first answer.
local hk = P .. ':h:' .. id
local known = redis.call('HMGET', hk, 'st', 'rf')
if known[1] then
  if known[1] == 'refused' then return {'refused', known[2]} end
  return {'ok'}
end

-- Check everything before writing anything: limits as the client saw them, and the
-- windows it computed against the store's clock.
local scopes = {}
local stale = false
for i = 0, n - 1 do
  local b = 7 + i * 5
  local s = {scope = ARGV[b], limit = ARGV[b + 1], window = ARGV[b + 2],
             start = tonumber(ARGV[b + 3]), stop = ARGV[b + 4]}
  s.current = redis.call('HGET', P .. ':limits', s.scope) or ''
  if s.current ~= s.limit then stale = true end
  if now < s.start or (s.stop ~= '' and now >= tonumber(s.stop)) then stale = true end
  scopes[#scopes + 1] = s
end
if stale then
  local current = {}
  for _, s in ipairs(scopes) do current[s.scope] = s.current end
  return {'retry', tostring(now), cjson.encode(current)}
end

for _, s in ipairs(scopes) do
  if s.limit ~= '' then
    local limit = tonumber(cjson.decode(s.limit)['limit'])
    local tk = P .. ':t:' .. s.scope .. '|' .. s.window
    local v = redis.call('HMGET', tk, 's', 'r')
    local spent = tonumber(v[1] or '0')
    local reserved = tonumber(v[2] or '0')
    if spent + reserved + amount > limit then
      local rf = cjson.encode({s.scope, limit, spent, reserved, s.window, s.stop})
      redis.call('HSET', hk, 'st', 'refused', 'rf', rf)
      redis.call('EXPIRE', hk, keep)
      return {'refused', rf}
    end
  end
end

local entries = {}
for _, s in ipairs(scopes) do
  redis.call('HINCRBY', P .. ':t:' .. s.scope .. '|' .. s.window, 'r', amount)
  entries[#entries + 1] = {s.scope, s.window}
end
redis.call('HSET', hk, 'st', 'held', 'a', amount, 'x', now + ttl, 'e', cjson.encode(entries))
redis.call('ZADD', P .. ':exp', now + ttl, id)
return {'ok'}
