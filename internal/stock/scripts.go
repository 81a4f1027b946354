package stock

import "github.com/redis/go-redis/v9"

// claimScript claims one staged code for each of one or more requests of
// one pool shard, in order, as if each ran alone: the Pipe sends the
// requests queued for a shard as one script, so Redis runs one script call,
// not one per request.
//
// KEYS[1] the shard's staged list, KEYS[2] its in-flight ledger (sorted set
// scored by pop time), then for request i KEYS[1+2i] its replay record and
// KEYS[2+2i] its user's claim count. ARGV[1] now in unix ms, then for
// request i ARGV[3i-1] the pool's per-user limit, ARGV[3i] the TTL in
// seconds of the replay record and the count, ARGV[3i+1] the user id.
//
// The replay record is "<user>\n<entry>" (user ids hold no control
// character): the request id belongs to that user. Each request gets three
// values {outcome, value, left}, the outcome in the words of the claim
// package's outcome type, as far as Redis knows (Postgres decides):
// {"replay", entry} for a known request of this user, {"reused", ""} for a
// request id another user holds, {"limit", count} for a user whose count is
// at the limit, {"exhausted", ""} when nothing is staged, {"popped", entry,
// left} for a fresh pop, with the number of entries left in the list just
// after it (so that a claim that sees it run low can stage more before it
// runs out); left is "" except after a pop. Every check of a request comes
// before its first write, so a second run of the same call (go-redis
// retries on timeouts) finds the replay records and returns the same
// entries. A record without an owner (written before owners were kept) is
// replayed; Postgres checks the owner.
//
// Redis runs each redis.call with a fixed cost of its own, so the script
// makes few: one MGET reads a request's record and count; a user's first
// count is one SET with its TTL (INCR and EXPIRE after that); the pops go
// into the ledger with one ZADD, and the list's length is read once at the
// end (only this script pops meanwhile, so the i-th pop's left is that
// length plus the pops after it).
var claimScript = redis.NewScript(`
local out, ledger, pops = {}, {}, {}
for i = 1, (#KEYS - 2) / 2 do
  local rkey, ckey = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local limit, ttl, user = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local outcome, value = nil, ''
  local got = redis.call('MGET', rkey, ckey)
  local replay = got[1]
  if replay then
    local nl = string.find(replay, '\n', 1, true)
    if not nl then
      outcome, value = 'replay', replay
    elseif string.sub(replay, 1, nl - 1) == user then
      outcome, value = 'replay', string.sub(replay, nl + 1)
    else
      outcome = 'reused'
    end
  else
    local held = tonumber(got[2] or '0')
    if held >= tonumber(limit) then
      outcome, value = 'limit', tostring(held)
    else
      local entry = redis.call('LPOP', KEYS[1])
      if not entry then
        outcome = 'exhausted'
      else
        ledger[#ledger + 1] = ARGV[1]
        ledger[#ledger + 1] = entry
        redis.call('SET', rkey, user .. '\n' .. entry, 'EX', ttl)
        if held == 0 then
          redis.call('SET', ckey, '1', 'EX', ttl)
        else
          redis.call('INCR', ckey)
          redis.call('EXPIRE', ckey, ttl)
        end
        outcome, value = 'popped', entry
        pops[#pops + 1] = #out + 3
      end
    end
  end
  out[#out + 1] = outcome
  out[#out + 1] = value
  out[#out + 1] = ''
end
if #pops > 0 then
  redis.call('ZADD', KEYS[2], unpack(ledger))
  local left = redis.call('LLEN', KEYS[1])
  for j = #pops, 1, -1 do
    out[pops[j]] = tostring(left)
    left = left + 1
  end
end
return out
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
