-- burnmap: replace a hold by the actual cost, in the windows it was made in. Idempotent;
-- after expiry it corrects what expiry charged.
-- KEYS[1]: key prefix. ARGV: hold id, actual (micro-dollars), keep (s)
local P = KEYS[1]
local hk = P .. ':h:' .. ARGV[1]
local actual = tonumber(ARGV[2])
local h = redis.call('HMGET', hk, 'st', 'a', 'e', 'c')
if not h[1] or h[1] == 'settled' or h[1] == 'refused' then return 0 end
for _, e in ipairs(cjson.decode(h[3])) do
  local tk = P .. ':t:' .. e[1] .. '|' .. e[2]
  if h[1] == 'held' then
    redis.call('HINCRBY', tk, 'r', -tonumber(h[2]))
    redis.call('HINCRBY', tk, 's', actual)
  else
    redis.call('HINCRBY', tk, 's', actual - tonumber(h[4]))
  end
end
redis.call('HSET', hk, 'st', 'settled', 'c', actual)
redis.call('EXPIRE', hk, tonumber(ARGV[3]))
redis.call('ZREM', P .. ':exp', ARGV[1])
return 1
