-- burnmap: push a held reservation's expiry back (a long stream is still running).
-- KEYS[1]: key prefix. ARGV: hold id, ttl (s)
local P = KEYS[1]
local hk = P .. ':h:' .. ARGV[1]
if redis.call('HGET', hk, 'st') ~= 'held' then return 0 end
local t = redis.call('TIME')
local expires = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2])
redis.call('HSET', hk, 'x', expires)
redis.call('ZADD', P .. ':exp', expires, ARGV[1])
return 1
