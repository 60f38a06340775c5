"""Every Lua script tailrace runs, in one place.

Each script changes shared state in one atomic step, so a process may die between any two
scripts without leaving a half-done change. A script touches only the keys passed in
``KEYS``, and every key of one call shares one partition hash tag (Redis Cluster safe).
Every script is registered once per client (EVALSHA, reloaded on NOSCRIPT) by
:class:`tailrace.scriptcalls.Scripts`, the one place that builds their arguments (in the
order each header below lists them) and turns their replies into results; the wrappers
there follow this module's order. The wire format version of what a script appends is an
argument (``tailrace.wire``'s constants), never a literal here. The reply codes are the
``CODE_*`` constants, each meaning one thing whichever script returns it.
Floor version: Redis 6.2 (XAUTOCLAIM, XTRIM MINID); no Redis 7 functions are used.

When Redis is full (``maxmemory`` with ``noeviction``) it refuses a script's commands that
may grow memory, but only while the script has written nothing yet: a script is never cut
in half. The scripts that let a full pipeline drain (taking a lease, membership, worker
records, a sink's commit) therefore start with a write that cannot grow memory
(``PEXPIRE`` of a key, ``ZREMRANGEBYSCORE``, ``XACK``), so their few bytes still go
through; ``PRODUCE`` and a processor's ``XADD`` come first in theirs and are refused:
that refusal is the backpressure. (Off-cluster the batch and a processor's outputs are
``XADD``ed beside PRODUCE and COMMIT in one ``MULTI``, out of Lua, which hashes every byte
it is passed: a full Redis refuses those queued ``XADD``s, discarding the transaction.)
"""

from __future__ import annotations

__all__ = [
    "ACQUIRE",
    "ACQUIRE_KEY",
    "COMMIT",
    "DEAD_LETTER_PENDING",
    "DLQ_SCAN",
    "MEMBERS",
    "PRODUCE",
    "PUBLISH",
    "RELEASE",
    "RENEW",
    "REPLAY",
    "THROTTLE",
    "TRIM",
    "CODE_ALREADY",
    "CODE_BACKPRESSURE",
    "CODE_CONFLICT",
    "CODE_FENCED",
    "CODE_GONE",
    "CODE_MEMORY",
    "CODE_OK",
]

CODE_FENCED = -1  # the lease is not (any more) the caller's: nothing written
CODE_CONFLICT = 0  # PRODUCE: the stored offset differs from the batch's start
CODE_OK = 1
CODE_BACKPRESSURE = 2  # PRODUCE: the stream's backlog is over the limit
CODE_ALREADY = 3  # COMMIT: applied before (a retried call whose reply was lost)
CODE_MEMORY = 4  # PRODUCE: Redis memory over the limit
CODE_GONE = 5  # REPLAY: a dead letter was purged

# Shared by PRODUCE and COMMIT: delete the newest ``n`` entries of ``stream``, the ones the
# caller XADDed just before the script in the same MULTI (nothing ran in between). Only on a
# refusal: it reads them back, payloads included.
_TAKE_BACK = """
local function take_back(stream, n)
  if n > 0 then
    local ids = {}
    for _, e in ipairs(redis.call('XREVRANGE', stream, '+', '-', 'COUNT', n)) do
      ids[#ids + 1] = e[1]
    end
    if #ids > 0 then
      redis.call('XDEL', stream, unpack(ids))
    end
  end
end
"""

# Idempotent producer: append a batch only if the file's committed offset is its start.
# KEYS[1] offsets hash   KEYS[2] raw stream
# ARGV[1] file identity  ARGV[2] batch start  ARGV[3] batch end
# ARGV[4] payload ("" = none here: see ARGV[8]; with neither, move the offset only, e.g. a
#         run of skipped lines)
# ARGV[5] backlog limit in entries (0 = none)   ARGV[6] wire version of the payload
# ARGV[7] memory limit in bytes of this node's used_memory (0 = 90% of its maxmemory, if
#         set; "" = no check): exact where the agent's periodic look is late, so lines
#         never take the room the processors' records need to drain
# ARGV[8] "1" when the caller XADDed the batch to KEYS[2] just before this script, in the
#         same MULTI, to keep its bytes out of Lua (see COMMIT); on any refusal this script
#         deletes it again (the newest entry: nothing ran in between). Sent as EVAL.
# returns {1, entry id | ""}   appended (offset moved to end; "" when appended beside)
#         {0, stored offset}   CONFLICT: the stored offset differs, seek there and go on
#         {2, stream length}   BACKPRESSURE: backlog over the limit, nothing written
#         {4, used_memory}     BACKPRESSURE: Redis memory over the limit, nothing written
PRODUCE = _TAKE_BACK + """
local appended = ARGV[8] == '1'
local function refuse(code, value)
  if appended then
    take_back(KEYS[2], 1)
  end
  return {code, value}
end
local batch = appended or ARGV[4] ~= ''
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur ~= ARGV[2] then
  return refuse(0, cur)
end
local limit = tonumber(ARGV[5])
if batch and limit > 0 then
  local len = redis.call('XLEN', KEYS[2])
  if appended then
    len = len - 1
  end
  if len >= limit then
    return refuse(2, tostring(len))
  end
end
if batch and ARGV[7] ~= '' then
  local info = redis.call('INFO', 'memory')
  local used = tonumber(string.match(info, 'used_memory:(%d+)'))
  local cap = tonumber(ARGV[7])
  if cap == 0 then
    cap = math.floor(tonumber(string.match(info, 'maxmemory:(%d+)') or '0') * 0.9)
  end
  if cap > 0 and used >= cap then
    return refuse(4, tostring(used))
  end
end
local id = ''
if ARGV[4] ~= '' then
  id = redis.call('XADD', KEYS[2], '*', 'v', ARGV[6], 'b', ARGV[4])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return {1, id}
"""

# Take a free partition lease with a fencing token that only grows.
# KEYS[1] lease key   KEYS[2] epoch counter
# ARGV[1] worker id   ARGV[2] ttl ms
# returns token (> 0) when acquired (or already held by this worker: a retried call whose
# first reply was lost), 0 when another worker holds it
ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local prefix = ARGV[1] .. ':'
  if string.sub(cur, 1, #prefix) == prefix then
    return tonumber(string.sub(cur, #prefix + 1))
  end
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])  -- no-op (absent key): lets a full Redis take it
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
return token
"""

# Take a free lease that needs no fencing token (a single-writer output's lease).
# KEYS[1] lease key   ARGV[1] owner   ARGV[2] ttl ms
# returns 1 taken, 0 held by someone (this owner included: renew it with RENEW)
ACQUIRE_KEY = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])  -- no-op (absent key): lets a full Redis take it
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Group membership heartbeat: drop members silent for a TTL, (re)add this one, count.
# KEYS[1] members sorted set   ARGV[1] worker id   ARGV[2] now ms   ARGV[3] ttl ms
# returns the number of live members
MEMBERS = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""

# A worker's published record (status), kept even when Redis is full.
# KEYS[1] worker key   ARGV[1] record (JSON)   ARGV[2] ttl ms
PUBLISH = """
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Extend a lease this worker still holds.
# KEYS[1] lease key   ARGV[1] "worker:token"   ARGV[2] ttl ms
# returns 1 renewed, 0 lost (expired or taken over)
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# Give a lease back.
# KEYS[1] lease key   ARGV[1] "worker:token"
# returns 1 released, 0 not held
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# Fenced commit of one partition's batch, for processors and sinks alike.
# KEYS[1] lease key   KEYS[2] input stream   KEYS[3] output stream   KEYS[4] dlq stream
# KEYS[5] checkpoint hash
# ARGV[1] group   ARGV[2] "worker:token"   ARGV[3] dlq max length (0 = unbounded)
# ARGV[4] appended: how many outputs the caller XADDed to KEYS[3] just before this script,
#         in the same MULTI (0: none, or they are passed below). Outputs kept out of ARGV
#         are not hashed by Redis's Lua (7.0 hashes every byte of a string that enters it,
#         ~2 ns/B: most of a commit's cost); on FENCED or already-committed this script
#         deletes them again (the newest `appended` entries: nothing ran in between).
#         The caller must send the script as EVAL in that MULTI: an EVALSHA refused with
#         NOSCRIPT there would leave the outputs written and nothing acked.
# then: n_ids, ids...; n_out, wire version of the outputs, payloads...; n_dlq, 8 fields each
#       (kind, payload, stage, plugin, error, source id, time ms, wire version of the
#       payload); n_ckpt, field/value pairs
# returns {1, output stream length} committed, {-1} FENCED (nothing written),
#         {3, 0} already committed: the first id is no longer pending (a retried call whose
#         first reply was lost), so nothing is written twice
COMMIT = _TAKE_BACK + """
local appended = tonumber(ARGV[4])
local function undo()
  take_back(KEYS[3], appended)
end
if redis.call('GET', KEYS[1]) ~= ARGV[2] then
  undo()
  return {-1}
end
local i = 5
local n_ids = tonumber(ARGV[i]); i = i + 1
local ids_at = i; i = i + n_ids
if n_ids > 0 then
  local first = ARGV[ids_at]
  if #redis.call('XPENDING', KEYS[2], ARGV[1], first, first, 1) == 0 then
    undo()
    return {3, 0}
  end
end
local n_out = tonumber(ARGV[i]); i = i + 1
local version = ARGV[i]; i = i + 1
for j = 0, n_out - 1 do
  redis.call('XADD', KEYS[3], '*', 'v', version, 'b', ARGV[i + j])
end
i = i + n_out
local n_dlq = tonumber(ARGV[i]); i = i + 1
local cap = tonumber(ARGV[3])
for j = 0, n_dlq - 1 do
  local k = i + j * 8
  local fields = {'v', ARGV[k + 7], 'kind', ARGV[k], 'b', ARGV[k + 1], 'stage', ARGV[k + 2],
                  'plugin', ARGV[k + 3], 'error', ARGV[k + 4], 'source', ARGV[k + 5],
                  'time', ARGV[k + 6]}
  if cap > 0 then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', cap, '*', unpack(fields))
  else
    redis.call('XADD', KEYS[4], '*', unpack(fields))
  end
end
i = i + n_dlq * 8
-- The acks before the checkpoint: a sink's commit then starts with a write that cannot
-- grow memory, so it goes through when Redis is full (see the top of this module).
if n_ids > 0 then
  redis.call('XACK', KEYS[2], ARGV[1], unpack(ARGV, ids_at, ids_at + n_ids - 1))
end
local n_ckpt = tonumber(ARGV[i]); i = i + 1
for j = 0, n_ckpt - 1 do
  redis.call('HSET', KEYS[5], ARGV[i + 2 * j], ARGV[i + 2 * j + 1])
end
local len = 0
if n_out + appended > 0 then
  len = redis.call('XLEN', KEYS[3])
end
return {1, len}
"""

# Dead-letter pending entries that were delivered too often (poison), then ack them.
# KEYS[1] lease key   KEYS[2] input stream   KEYS[3] dlq stream
# ARGV[1] group   ARGV[2] "worker:token"   ARGV[3] kind   ARGV[4] stage   ARGV[5] reason
# ARGV[6] time ms   ARGV[7] plugin (the output or stage the entries failed in)
# ARGV[8] wire version for an entry without one   ARGV[9..] entry ids
# returns number of entries dead-lettered, or -1 when FENCED
# A dead letter keeps its entry's payload and wire version (a stream may hold several).
DEAD_LETTER_PENDING = """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then
  return -1
end
local n = 0
for i = 9, #ARGV do
  local e = redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i])
  local payload, version = '', ARGV[8]
  if e[1] then
    local f = e[1][2]
    for j = 1, #f, 2 do
      if f[j] == 'b' then payload = f[j + 1] end
      if f[j] == 'v' then version = f[j + 1] end
    end
  end
  redis.call('XADD', KEYS[3], '*', 'v', version, 'kind', ARGV[3], 'b', payload, 'stage', ARGV[4],
             'plugin', ARGV[7], 'error', ARGV[5], 'source', ARGV[i], 'time', ARGV[6])
  redis.call('XACK', KEYS[2], ARGV[1], ARGV[i])
  n = n + 1
end
return n
"""

# Trim a stream below what every consumer group has acknowledged.
# KEYS[1] stream
# returns {entries trimmed, min id kept}; {0, ''} when the stream has no group
# A group's safe point is its oldest pending id, or (none pending) the id right after its
# last-delivered id. Entries at or above the minimum over all groups are kept.
TRIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, ''}
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then
  return {0, ''}
end
local best_ms, best_seq = nil, nil
for _, g in ipairs(groups) do
  local name, last
  for j = 1, #g, 2 do
    if g[j] == 'name' then name = g[j + 1] end
    if g[j] == 'last-delivered-id' then last = g[j + 1] end
  end
  local pend = redis.call('XPENDING', KEYS[1], name)
  local ms, seq
  if tonumber(pend[1]) > 0 then
    local a, b = string.match(pend[2], '^(%d+)-(%d+)$')
    ms, seq = tonumber(a), tonumber(b)
  else
    local a, b = string.match(last, '^(%d+)-(%d+)$')
    ms, seq = tonumber(a), tonumber(b) + 1
  end
  if best_ms == nil or ms < best_ms or (ms == best_ms and seq < best_seq) then
    best_ms, best_seq = ms, seq
  end
end
local minid = string.format('%d-%d', best_ms, best_seq)
local n = redis.call('XTRIM', KEYS[1], 'MINID', minid)
return {n, minid}
"""

# Shared sliding-window rate limit (Fluent Bit's throttle), for many subjects in one call.
# KEYS[i] throttle hash of subject i (all of one filter: same hash tag)
# ARGV[1] rate (records per interval, may be fractional)   ARGV[2] window (panes)
# ARGV[3] interval ms   ARGV[4..] records wanted for subject i
# returns {allowed for subject 1, allowed for subject 2, ...}
# A subject's hash maps pane number (server time / interval) -> records let through, plus
# "first" (its first pane, for the slow start: the average is over the panes seen so far).
# Records pass while the window's total stays <= rate * min(window, panes seen).
THROTTLE = """
pcall(redis.replicate_commands)
local rate = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
local now = redis.call('TIME')
local cur = math.floor((tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)) / interval)
local out = {}
for i = 1, #KEYS do
  local want = tonumber(ARGV[i + 3])
  local h = redis.call('HGETALL', KEYS[i])
  local sum, first = 0, nil
  for j = 1, #h, 2 do
    if h[j] == 'first' then
      first = tonumber(h[j + 1])
    else
      local pane = tonumber(h[j])
      if pane <= cur - window then
        redis.call('HDEL', KEYS[i], h[j])
      else
        sum = sum + tonumber(h[j + 1])
      end
    end
  end
  if first == nil or first > cur then
    first = cur
    redis.call('HSET', KEYS[i], 'first', cur)
  end
  local filled = math.min(window, cur - first + 1)
  local allowed = math.floor(rate * filled) - sum
  if allowed > want then allowed = want end
  if allowed < 0 then allowed = 0 end
  if allowed > 0 then
    redis.call('HINCRBY', KEYS[i], tostring(cur), allowed)
  end
  redis.call('PEXPIRE', KEYS[i], window * interval * 2)
  out[i] = allowed
end
return out
"""

# List dead letters without their payloads (for planning replays and purges).
# KEYS[1] dlq stream
# ARGV[1] start id (exclusive when prefixed with '(')   ARGV[2] end id   ARGV[3] count
# returns a flat list: id, kind, stage, plugin, time ms (5 values per entry)
DLQ_SCAN = """
local out = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])) do
  local kind, stage, plugin, t = '', '', '', ''
  local f = e[2]
  for j = 1, #f, 2 do
    local k = f[j]
    if k == 'kind' then kind = f[j + 1]
    elseif k == 'stage' then stage = f[j + 1]
    elseif k == 'plugin' then plugin = f[j + 1]
    elseif k == 'time' then t = f[j + 1] end
  end
  out[#out + 1] = e[1]
  out[#out + 1] = kind
  out[#out + 1] = stage
  out[#out + 1] = plugin
  out[#out + 1] = t
end
return out
"""

# Replay dead letters back into the pipeline, each at most once: append one payload that
# holds them (the caller combines the records of several dead letters into one batch, or
# passes one raw batch) and mark every one of them replayed, in one step. A retried job, a
# second worker or a re-run finds them marked and appends nothing.
# KEYS[1] dlq stream   KEYS[2] target stream (raw or out)   KEYS[3] replayed hash
# ARGV[1] output the records are addressed to ('' = every output)   ARGV[2] time ms
# ARGV[3] payload   ARGV[4] mark prefix ('raw' or 'out')   ARGV[5] wire version of payload
# ARGV[6..] dead letter ids
# returns {1, new entry id} appended and marked; {3, id} that id was replayed already
#         (CODE_ALREADY), {5, id} that id is gone (purged, CODE_GONE): nothing written in
#         either case
REPLAY = """
for i = 6, #ARGV do
  if redis.call('HEXISTS', KEYS[3], ARGV[i]) == 1 then
    return {3, ARGV[i]}
  end
  if #redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i]) == 0 then
    return {5, ARGV[i]}
  end
end
local new
if ARGV[1] ~= '' then
  new = redis.call('XADD', KEYS[2], '*', 'v', ARGV[5], 'b', ARGV[3], 'to', ARGV[1])
else
  new = redis.call('XADD', KEYS[2], '*', 'v', ARGV[5], 'b', ARGV[3])
end
local mark = ARGV[4] .. ' ' .. new .. ' ' .. ARGV[1] .. ' ' .. ARGV[2]
for i = 6, #ARGV do
  redis.call('HSET', KEYS[3], ARGV[i], mark)
end
return {1, new}
"""
