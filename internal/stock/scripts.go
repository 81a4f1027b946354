package stock

import "github.com/redis/go-redis/v9"

// claimScript claims one staged code for a request.
//
// KEYS[1] the pool's staged list, KEYS[2] its in-flight ledger (sorted set
// scored by pop time), KEYS[3] the request's replay record, KEYS[4] the user's
// claim count. ARGV[1] the pool's per-user limit, ARGV[2] now in unix ms,
// ARGV[3] the TTL in seconds of the replay record and the count, ARGV[4] the
// user id.
//
// The replay record is "<user>\n<entry>" (user ids hold no control
// character): the request id belongs to that user. Returns {outcome, value},
// the outcome in the words of the claim package's outcome type, as far as Redis
// knows (Postgres decides): {"replay", entry} for a known request of this
// user, {"reused", ""} for a request id another user holds, {"limit", count}
// for a user whose count is at the limit, {"exhausted", ""} when nothing is
// staged, {"popped", entry, left} for a fresh pop,
// with the number of entries left in the list (so that a claim that sees it
// run low can stage more before it runs out). Every
// check comes before the first write, so a second run of the same call
// (go-redis retries on timeouts) finds the replay record and returns the
// same entry. A record without an owner (written before owners were kept)
// is replayed; Postgres checks the owner.
var claimScript = redis.NewScript(`
local replay = redis.call('GET', KEYS[3])
if replay then
  local nl = string.find(replay, '\n', 1, true)
  if not nl then return {'replay', replay} end
  if string.sub(replay, 1, nl - 1) == ARGV[4] then return {'replay', string.sub(replay, nl + 1)} end
  return {'reused', ''}
end
local held = tonumber(redis.call('GET', KEYS[4]) or '0')
if held >= tonumber(ARGV[1]) then return {'limit', tostring(held)} end
local entry = redis.call('LPOP', KEYS[1])
if not entry then return {'exhausted', ''} end
redis.call('ZADD', KEYS[2], ARGV[2], entry)
redis.call('SET', KEYS[3], ARGV[4] .. '\n' .. entry, 'EX', ARGV[3])
redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], ARGV[3])
return {'popped', entry, tostring(redis.call('LLEN', KEYS[1]))}
`)

// releaseScript undoes a pop whose claim Postgres refused or answered from
// an earlier claim.
//
// KEYS[1] the request's replay record, KEYS[2] the user's claim count,
// KEYS[3] the in-flight ledger. ARGV[1] the entry, ARGV[2] the replay record
// this call's pop wrote, ARGV[3] the record's new value ("" to delete it),
// ARGV[4] its TTL in seconds, ARGV[5] "1" when this call popped (and so
// counted) the entry. The replay record is only touched while it still is
// this call's, so a late release cannot undo a newer claim of the request.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[2] then
  if ARGV[3] == '' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
  end
end
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[5] == '1' then
  local n = tonumber(redis.call('GET', KEYS[2]) or '0')
  if n <= 1 then redis.call('DEL', KEYS[2]) else redis.call('DECR', KEYS[2]) end
end
return 1
`)

// unlockScript deletes a lock key if it still holds this holder's token.
//
// KEYS[1] the lock, ARGV[1] the token.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// pushScript stages a refill batch: the entries go to the tail of the list
// and the batch id into the batch set, both or neither. A batch already in
// the set is not pushed again: the client retries a script whose answer was
// lost (a read timeout under load), and the first run may have pushed it.
//
// KEYS[1] the staged list, KEYS[2] the batch set. ARGV[1] the batch id,
// ARGV[2..] the entries.
var pushScript = redis.NewScript(`
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  return redis.call('LLEN', KEYS[1])
end
for i = 2, #ARGV, 5000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 4999, #ARGV)))
end
redis.call('SADD', KEYS[2], ARGV[1])
return redis.call('LLEN', KEYS[1])
`)
