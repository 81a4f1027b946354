package stock

import "github.com/redis/go-redis/v9"

// claimScript claims one staged code for each of one or more requests of
// one pool shard, in order, as if each ran alone: the Pipe sends the
// requests queued for a shard as one script, so Redis runs one script call,
// not one per request.
//
// KEYS[1] the shard's staged list, KEYS[2] its in-flight ledger (sorted set
// scored by pop time), then two keys for request i, KEYS[1+2i] and
// KEYS[2+2i]. ARGV[1] now in unix ms, then for request i ARGV[3i-1] the
// pool's per-user limit, ARGV[3i] the TTL in seconds of what it writes, and
// ARGV[3i+1] an id.
//
// A pool whose limit is 1 (the default) keeps one key per user, the user's
// one claim (Keys.OneClaim, "<request>\n<entry>"): both of the request's
// keys are that key and the id is the request's. A known request of the
// user replays its entry; any other request of the user is at the limit;
// a user without the key pops and writes it.
//
// A pool of a higher limit keeps the request's replay record (KEYS[1+2i],
// "<user>\n<entry>": the request id belongs to that user; user ids hold no
// control character) and the user's claim count (KEYS[2+2i]), and the id is
// the user's. A record without an owner (written before owners were kept)
// is replayed; Postgres checks the owner.
//
// Each request gets three values {outcome, value, left}, the outcome in the
// words of the claim package's outcome type, as far as Redis knows
// (Postgres decides): {"replay", entry} for a known request of this user,
// {"reused", ""} for a request id another user holds (known only with a
// replay record), {"limit", count} for a user at the limit, {"exhausted",
// ""} when nothing is staged, {"popped", entry, left} for a fresh pop, with
// the number of entries left in the list just after it (so that a claim
// that sees it run low can stage more before it runs out); left is "" except
// after a pop. Every check of a request comes before its first write, so a
// second run of the same call (go-redis retries on timeouts) finds what the
// first wrote and returns the same entries.
//
// Redis runs each redis.call with a fixed cost of its own, so the script
// makes few: with a limit of 1, a GET, the LPOP and a SET per request;
// above it, one MGET reads a request's record and count and a user's first
// count is one SET with its TTL (INCR and EXPIRE after that). The pops go
// into the ledger with one ZADD, and the list's length is read once at the
// end (only this script pops meanwhile, so the i-th pop's left is that
// length plus the pops after it).
var claimScript = redis.NewScript(`
local out, ledger, pops = {}, {}, {}
for i = 1, (#KEYS - 2) / 2 do
  local rkey, ckey = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local limit, ttl, id = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local outcome, value, held = nil, '', 0
  if limit == '1' then
    local one = redis.call('GET', rkey)
    if one then
      local nl = string.find(one, '\n', 1, true)
      if nl and string.sub(one, 1, nl - 1) == id then
        outcome, value = 'replay', string.sub(one, nl + 1)
      else
        outcome, value = 'limit', '1'
      end
    end
  else
    local got = redis.call('MGET', rkey, ckey)
    local replay = got[1]
    if replay then
      local nl = string.find(replay, '\n', 1, true)
      if not nl then
        outcome, value = 'replay', replay
      elseif string.sub(replay, 1, nl - 1) == id then
        outcome, value = 'replay', string.sub(replay, nl + 1)
      else
        outcome = 'reused'
      end
    else
      held = tonumber(got[2] or '0')
      if held >= tonumber(limit) then
        outcome, value = 'limit', tostring(held)
      end
    end
  end
  if not outcome then
    local entry = redis.call('LPOP', KEYS[1])
    if not entry then
      outcome = 'exhausted'
    else
      ledger[#ledger + 1] = ARGV[1]
      ledger[#ledger + 1] = entry
      redis.call('SET', rkey, id .. '\n' .. entry, 'EX', ttl)
      if limit ~= '1' then
        if held == 0 then
          redis.call('SET', ckey, '1', 'EX', ttl)
        else
          redis.call('INCR', ckey)
          redis.call('EXPIRE', ckey, ttl)
        end
      end
      outcome, value = 'popped', entry
      pops[#pops + 1] = #out + 3
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
// In a pool of limit 1 the record is the user's one claim and its own count
// (ARGV[5] "0"): deleting it uncounts the pop.
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
