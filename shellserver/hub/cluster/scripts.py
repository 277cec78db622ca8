"""The Lua scripts that keep the cluster's shared records consistent (docs/scaling.md).

Each change a node makes to the shared records is one script, so it is atomic:
the check and the claim of ``--max-sessions`` cannot interleave with another
node's, a tty number is handed out once, and a node's change to its session
records, the bump of its generation and the event that tells the others are
one step (the others see events in generation order and reload a node's
records when they miss one). Times are Redis's (``TIME``), never a node's clock.

Keys (all under ``ss:``; the URL's db number keeps clusters apart, and channel
names are global to a redis-server, so they carry the db too — see ``calls.Names``):

- ``nodes``: zset node -> last heartbeat (ms, Redis time)
- ``gen``: hash node -> generation of its session records
- ``s:NODE``: hash session id -> record (JSON array, ``SessionRecord.to_json``)
- ``u:USER``: zset ``NODE/ID`` -> login time: the user's sessions and login claims
- ``nu:NODE``: set of users the node has members in ``u:USER`` for (to clean up)
- ``tty:NODE``: set of tty names the node holds; ``tk:KIND:free`` zset, ``tk:KIND:next``
- ``ign``: hash user -> JSON list of the names they ignore
- ``rooms``: set of room names; ``r:ROOM`` hash creator/topic;
  ``rm:ROOM`` zset ``NODE/ID`` -> join sequence; ``ri:ROOM`` hash ``NODE/ID`` -> JSON
  [user, tty, node, id]; ``sr:NODE/ID`` zset room -> join sequence; ``seq`` counter
"""

from __future__ import annotations

# ARGV[1] is always the key prefix ("ss:"), ARGV[2] the channel for events to all nodes.
_COMMON = r"""
local P = ARGV[1]
local ALL = ARGV[2]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function leave_room(room, sk)
  redis.call('ZREM', P..'rm:'..room, sk)
  redis.call('HDEL', P..'ri:'..room, sk)
  redis.call('ZREM', P..'sr:'..sk, room)
  if redis.call('ZCARD', P..'rm:'..room) == 0 then
    redis.call('DEL', P..'rm:'..room, P..'ri:'..room, P..'r:'..room)
    redis.call('SREM', P..'rooms', room)
    return true
  end
  return false
end
local function free_tty(node, tty)
  if redis.call('SREM', P..'tty:'..node, tty) == 1 then
    local kind, n = string.match(tty, '^(%w+)/(%d+)$')
    if kind then redis.call('ZADD', P..'tk:'..kind..':free', tonumber(n), n) end
  end
end
-- A session's room memberships, all of them; true when a room went with it. With ``parts``,
-- each room that still has members is noted there as {room, user} (their "has left" line).
local function leave_rooms(sk, user, parts)
  local gone = false
  for _, room in ipairs(redis.call('ZRANGE', P..'sr:'..sk, 0, -1)) do
    if leave_room(room, sk) then gone = true
    elseif parts then parts[room..' '..user] = {room, user} end
  end
  redis.call('DEL', P..'sr:'..sk)
  return gone
end
-- The node's --max-sessions claims, but those of the session ids in ``keep`` (nil: none).
local function drop_claims(node, keep)
  for _, user in ipairs(redis.call('SMEMBERS', P..'nu:'..node)) do
    for _, m in ipairs(redis.call('ZRANGE', P..'u:'..user, 0, -1)) do
      if string.sub(m, 1, #node + 1) == node..'/'
          and not (keep and keep[string.sub(m, #node + 2)]) then
        redis.call('ZREM', P..'u:'..user, m)
      end
    end
  end
end
-- A node's records, claims, tty names and room memberships go. The "gone" event says why
-- (w: 'beat', with a: ms since its last beat; 'stopped'; 'restarted'), how many sessions
-- ended (c) and the {room, user} of each room that lost one and still has members (p), so
-- every node logs it and tells its own members; w is left out when there was nothing to see
-- (a node starting fresh).
local function reap(node, why, now)
  local beat = redis.call('ZSCORE', P..'nodes', node)
  local changed_rooms = false
  local ended, parts = 0, {}
  for _, rec in ipairs(redis.call('HVALS', P..'s:'..node)) do
    local r = cjson.decode(rec)
    ended = ended + 1
    if leave_rooms(node..'/'..r[2], r[3], parts) then changed_rooms = true end
  end
  drop_claims(node, nil)
  for _, tty in ipairs(redis.call('SMEMBERS', P..'tty:'..node)) do free_tty(node, tty) end
  redis.call('DEL', P..'s:'..node, P..'nu:'..node, P..'tty:'..node)
  redis.call('HDEL', P..'gen', node)
  redis.call('ZREM', P..'nodes', node)
  local gone = {op='gone', n=node}
  if beat or ended > 0 then
    gone.w, gone.c = why, ended
    if why == 'beat' and beat then gone.a = now - tonumber(beat) end
    local told = {}
    for _, part in pairs(parts) do table.insert(told, part) end
    if #told > 0 then
      table.sort(told, function(x, y) return x[1]..' '..x[2] < y[1]..' '..y[2] end)
      gone.p = told
    end
  end
  redis.call('PUBLISH', ALL, cjson.encode(gone))
  if changed_rooms then redis.call('PUBLISH', ALL, '{"op":"rooms"}') end
end
local function event(op, node, gen, body)
  redis.call('PUBLISH', ALL, '{"op":"'..op..'","n":'..cjson.encode(node)..',"g":'..gen..body..'}')
end
"""

#: ARGV: prefix, all, node, ttl_ms. Marks the node alive, reaps nodes whose heartbeat is older
#: than the TTL, and answers {fresh, {node, gen, ...}, now_ms} for the live ones; fresh is 1
#: when this node was not in the table (it was reaped, or Redis lost its data).
HEARTBEAT = (
    _COMMON
    + r"""
local node, ttl = ARGV[3], tonumber(ARGV[4])
local now = now_ms()
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', P..'nodes', '-inf', now - ttl)) do
  if dead ~= node then reap(dead, 'beat', now) end
end
local fresh = redis.call('ZADD', P..'nodes', now, node)
local live = {}
for _, n in ipairs(redis.call('ZRANGE', P..'nodes', 0, -1)) do
  table.insert(live, n)
  table.insert(live, redis.call('HGET', P..'gen', n) or '0')
end
return {fresh, live, now}
"""
)

#: ARGV: prefix, all, node, why ('stopped', or 'restarted': a node starting clears what its
#: previous life left).
REAP_SELF = (
    _COMMON
    + r"""
reap(ARGV[3], ARGV[4], now_ms())
return 1
"""
)

#: ARGV: prefix, all, node, then (id, tty) pairs of the sessions the node has now. After an
#: outage: what Redis holds of the node's sessions that ended meanwhile goes (records, claims,
#: tty names, room memberships); REPUBLISH then puts the live ones back.
RESET_SELF = (
    _COMMON
    + r"""
local node = ARGV[3]
local keep, ttys = {}, {}
for i = 4, #ARGV, 2 do keep[ARGV[i]] = true; ttys[ARGV[i + 1]] = true end
local changed_rooms = false
local parts = {}
local flat = redis.call('HGETALL', P..'s:'..node)
for i = 1, #flat, 2 do
  local id = flat[i]
  if not keep[id] then
    local user = cjson.decode(flat[i + 1])[3]
    if leave_rooms(node..'/'..id, user, parts) then changed_rooms = true end
  end
end
drop_claims(node, keep)
for _, tty in ipairs(redis.call('SMEMBERS', P..'tty:'..node)) do
  if not ttys[tty] then free_tty(node, tty) end
end
redis.call('DEL', P..'s:'..node)
if changed_rooms then redis.call('PUBLISH', ALL, '{"op":"rooms"}') end
-- The sessions that ended while the node was away left their rooms unheard: tell them now.
local told = {}
for _, part in pairs(parts) do table.insert(told, part) end
if #told > 0 then
  table.sort(told, function(x, y) return x[1]..' '..x[2] < y[1]..' '..y[2] end)
  redis.call('PUBLISH', ALL, cjson.encode({op='left', p=told}))
end
return 1
"""
)

#: ARGV: prefix, all, node, then records as JSON. Puts a node's sessions (back) in the shared
#: records: records, user claims, tty names; then tells the others to load them.
REPUBLISH = (
    _COMMON
    + r"""
local node = ARGV[3]
redis.call('ZADD', P..'nodes', now_ms(), node)
for i = 4, #ARGV do
  local r = cjson.decode(ARGV[i])
  redis.call('HSET', P..'s:'..node, r[2], ARGV[i])
  redis.call('ZADD', P..'u:'..r[3], 'NX', math.floor(r[8] * 1000), node..'/'..r[2])
  redis.call('SADD', P..'nu:'..node, r[3])
  local tty = r[5]
  if redis.call('SADD', P..'tty:'..node, tty) == 1 then
    local kind, n = string.match(tty, '^(%w+)/(%d+)$')
    if kind then
      redis.call('ZREM', P..'tk:'..kind..':free', n)
      local nxt = tonumber(redis.call('GET', P..'tk:'..kind..':next') or '0')
      if nxt <= tonumber(n) then redis.call('SET', P..'tk:'..kind..':next', tonumber(n) + 1) end
    end
  end
end
local g = redis.call('HINCRBY', P..'gen', node, 1)
event('snap', node, g, '')
return g
"""
)

#: ARGV: prefix, all, node. The records of one node with their generation, atomically.
SNAPSHOT = (
    _COMMON
    + r"""
local node = ARGV[3]
return {redis.call('HGET', P..'gen', node) or '0', redis.call('HVALS', P..'s:'..node)}
"""
)

#: ARGV: prefix, all, node, kind. The lowest free tty number of a kind, cluster-wide.
ALLOCATE_TTY = (
    _COMMON
    + r"""
local node, kind = ARGV[3], ARGV[4]
local free = redis.call('ZPOPMIN', P..'tk:'..kind..':free')
local n
if #free > 0 then n = free[1] else n = redis.call('INCR', P..'tk:'..kind..':next') - 1 end
local tty = kind..'/'..n
redis.call('SADD', P..'tty:'..node, tty)
return tty
"""
)

#: ARGV: prefix, all, node, tty. That very name, if no node holds it (a parked session
#: taken back keeps its name); '' when it is taken. Numbers past the counter are claimed
#: by moving the counter, the skipped ones made free (at most 10,000 of them).
CLAIM_TTY = (
    _COMMON
    + r"""
local node, tty = ARGV[3], ARGV[4]
local kind, n = string.match(tty, '^(%w+)/(%d+)$')
if not kind then return '' end
local free = P..'tk:'..kind..':free'
if redis.call('ZREM', free, n) == 1 then
  redis.call('SADD', P..'tty:'..node, tty)
  return tty
end
local nxt = tonumber(redis.call('GET', P..'tk:'..kind..':next') or '0')
local want = tonumber(n)
if want < nxt or want - nxt > 10000 then return '' end
for i = nxt, want - 1 do redis.call('ZADD', free, i, tostring(i)) end
redis.call('SET', P..'tk:'..kind..':next', want + 1)
redis.call('SADD', P..'tty:'..node, tty)
return tty
"""
)

#: ARGV: prefix, all, node, id, user, record. Publishes "att" with the record.
ATTACH = (
    _COMMON
    + r"""
local node, id, user, rec = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
redis.call('HSET', P..'s:'..node, id, rec)
redis.call('ZADD', P..'u:'..user, 'NX', now_ms(), node..'/'..id)
redis.call('SADD', P..'nu:'..node, user)
local g = redis.call('HINCRBY', P..'gen', node, 1)
event('att', node, g, ',"r":'..rec)
return g
"""
)

#: ARGV: prefix, all, node, id, record. Publishes "upd"; nothing for a detached session.
UPDATE = (
    _COMMON
    + r"""
local node, id, rec = ARGV[3], ARGV[4], ARGV[5]
if redis.call('HEXISTS', P..'s:'..node, id) == 0 then return 0 end
redis.call('HSET', P..'s:'..node, id, rec)
local g = redis.call('HINCRBY', P..'gen', node, 1)
event('upd', node, g, ',"r":'..rec)
return g
"""
)

#: ARGV: prefix, all, node, id, user, tty. Publishes "det"; frees the tty name and the claim.
DETACH = (
    _COMMON
    + r"""
local node, id, user, tty = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
redis.call('HDEL', P..'s:'..node, id)
redis.call('ZREM', P..'u:'..user, node..'/'..id)
free_tty(node, tty)
local g = redis.call('HINCRBY', P..'gen', node, 1)
event('det', node, g, ',"i":'..id)
return g
"""
)

#: ARGV: prefix, all, node, user, id, limit, replace(0/1), ttl_ms.
#: --max-sessions as one step: drop claims of dead nodes, then {'ok', members to end...}
#: (the new one claimed) or {'refuse'}.
ADMIT = (
    _COMMON
    + r"""
local node, user, id = ARGV[3], ARGV[4], ARGV[5]
local limit, replace, ttl = tonumber(ARGV[6]), ARGV[7] == '1', tonumber(ARGV[8])
local key = P..'u:'..user
local now = now_ms()
for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
  local owner = string.match(m, '^(.*)/%d+$')
  local beat = redis.call('ZSCORE', P..'nodes', owner)
  if not beat or tonumber(beat) < now - ttl then redis.call('ZREM', key, m) end
end
local n = redis.call('ZCARD', key)
local out = {'ok'}
if n >= limit then
  if not replace then return {'refuse'} end
  -- Detached sessions go first (oldest first), then the oldest attached ones: the record's
  -- twelfth field says detached (a claim without a record yet counts as attached).
  local detached, attached = {}, {}
  for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    local owner, sid = string.match(m, '^(.*)/(%d+)$')
    local rec = owner and redis.call('HGET', P..'s:'..owner, sid)
    local ok, fields = false, nil
    if rec then ok, fields = pcall(cjson.decode, rec) end
    if ok and type(fields) == 'table' and fields[12] == true then
      table.insert(detached, m)
    else
      table.insert(attached, m)
    end
  end
  local need = n - limit + 1
  for _, group in ipairs({detached, attached}) do
    for _, m in ipairs(group) do
      if need > 0 then
        redis.call('ZREM', key, m)
        table.insert(out, m)
        need = need - 1
      end
    end
  end
end
redis.call('ZADD', key, now, node..'/'..id)
redis.call('SADD', P..'nu:'..node, user)
return out
"""
)

#: ARGV: prefix, all, node, user, id. A claim whose login was abandoned.
RELEASE = (
    _COMMON
    + r"""
local node, user, id = ARGV[3], ARGV[4], ARGV[5]
if redis.call('HEXISTS', P..'s:'..node, id) == 0 then
  redis.call('ZREM', P..'u:'..user, node..'/'..id)
end
return 1
"""
)

#: ARGV: prefix, all, user, JSON list or "" (forget).
SET_IGNORES = (
    _COMMON
    + r"""
local user, names = ARGV[3], ARGV[4]
if names == '' then redis.call('HDEL', P..'ign', user)
else redis.call('HSET', P..'ign', user, names) end
redis.call('PUBLISH', ALL, cjson.encode({op='ign', u=user, v=names}))
return 1
"""
)

#: ARGV: prefix, all, room, node, id, user, tty, max_rooms, max_members.
JOIN = (
    _COMMON
    + r"""
local room, node, id, user, tty = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local max_rooms, max_members = tonumber(ARGV[8]), tonumber(ARGV[9])
local sk = node..'/'..id
if redis.call('ZSCORE', P..'rm:'..room, sk) then return 'already' end
if redis.call('ZCARD', P..'sr:'..sk) >= max_rooms then return 'too-many' end
local exists = redis.call('EXISTS', P..'r:'..room) == 1
if exists and redis.call('ZCARD', P..'rm:'..room) >= max_members then return 'full' end
local seq = redis.call('INCR', P..'seq')
if not exists then
  redis.call('HSET', P..'r:'..room, 'creator', user, 'topic', '')
  redis.call('SADD', P..'rooms', room)
end
redis.call('ZADD', P..'rm:'..room, seq, sk)
redis.call('HSET', P..'ri:'..room, sk, cjson.encode({user, tty, node, tonumber(id)}))
redis.call('ZADD', P..'sr:'..sk, seq, room)
if exists then return 'joined' end
redis.call('PUBLISH', ALL, '{"op":"rooms"}')
return 'created'
"""
)

#: ARGV: prefix, all, node, id, and the room (or "" for all). The rooms left.
PART = (
    _COMMON
    + r"""
local node, id, only = ARGV[3], ARGV[4], ARGV[5]
local sk = node..'/'..id
local rooms
if only == '' then rooms = redis.call('ZRANGE', P..'sr:'..sk, 0, -1)
elseif redis.call('ZSCORE', P..'sr:'..sk, only) then rooms = {only}
else rooms = {} end
local gone = false
for _, room in ipairs(rooms) do
  if leave_room(room, sk) then gone = true end
end
if gone then redis.call('PUBLISH', ALL, '{"op":"rooms"}') end
return rooms
"""
)

#: ARGV: prefix, all, room. {creator, topic, count, members as JSON...} or {} (no room).
ROOM = (
    _COMMON
    + r"""
local room = ARGV[3]
local info = redis.call('HMGET', P..'r:'..room, 'creator', 'topic')
if not info[1] then return {} end
local out = {info[1], info[2] or '', redis.call('ZCARD', P..'rm:'..room)}
if ARGV[4] == '1' then
  local sks = redis.call('ZRANGE', P..'rm:'..room, 0, -1)
  if #sks > 0 then
    for _, m in ipairs(redis.call('HMGET', P..'ri:'..room, unpack(sks))) do
      if m then table.insert(out, m) end
    end
  end
end
return out
"""
)

#: ARGV: prefix, all. {name, creator, topic, count, ...} sorted by name.
ROOM_LIST = (
    _COMMON
    + r"""
local names = redis.call('SMEMBERS', P..'rooms')
table.sort(names)
local out = {}
for _, room in ipairs(names) do
  local info = redis.call('HMGET', P..'r:'..room, 'creator', 'topic')
  table.insert(out, room)
  table.insert(out, info[1] or '')
  table.insert(out, info[2] or '')
  table.insert(out, redis.call('ZCARD', P..'rm:'..room))
end
return out
"""
)

#: ARGV: prefix, all, room, topic. 0 when there is no such room.
SET_TOPIC = (
    _COMMON
    + r"""
if redis.call('EXISTS', P..'r:'..ARGV[3]) == 0 then return 0 end
redis.call('HSET', P..'r:'..ARGV[3], 'topic', ARGV[4])
return 1
"""
)

#: ARGV: prefix, all, target node, id, sender ("" for a notice), channel, payload, deadline_ms.
#: One message to a session on another node, decided where the truth is: 'gone' (no such
#: session), 'refused' (its mesg n, or its user ignores the sender, as Redis has them now),
#: 'late' (the sender gave up waiting before Redis ran this: never shown after "unavailable"),
#: else published, 'ok'. It runs for every cross-node ``write``, so it does not start with
#: ``_COMMON``: Lua makes that prologue's functions anew on every run, which cost Redis a fifth
#: of this script's time (8.5-10 against 7.5 µs a call); it needs only the prefix and the time.
DELIVER = r"""
local P = ARGV[1]
local node, id, sender = ARGV[3], ARGV[4], ARGV[5]
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[8]) then
  return 'late'
end
local rec = redis.call('HGET', P..'s:'..node, id)
if not rec then return 'gone' end
if sender ~= '' then
  local r = cjson.decode(rec)
  if not r[10] then return 'refused' end
  local ign = redis.call('HGET', P..'ign', r[3])
  if ign then
    for _, n in ipairs(cjson.decode(ign)) do
      if n == sender then return 'refused' end
    end
  end
end
if redis.call('PUBLISH', ARGV[6], ARGV[7]) == 0 then return 'gone' end
return 'ok'
"""
