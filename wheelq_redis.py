"""wheelq_redis: the same wheelq ``Wheel`` on a Redis server, for several machines.

``pip install "wheelq[redis]"`` installs it with redis-py.  ``wheelq.py``
imports it when a Wheel is given a Redis URL; nothing else in wheelq changes:

    wheel = wheelq.Wheel("redis://redis.internal:6379/0?queue=shop")

This module holds the Redis store and nothing else: it implements the store
interface of section "Stores" of ``wheelq.py`` (open, append, defer, commit,
load, tail, view, rewrite, acquire, release, check, after_fork, close, and
``skew``), with the semantics of the file store.  It needs Redis 7.0 or
later, and redis-py.

URLs
----
``redis://[USER:PASSWORD@]HOST[:PORT][/DB]``, ``rediss://...`` (TLS) or
``unix:///path/to/redis.sock``, followed by ``?queue=NAME`` (default
``default``) and ``lease=SECONDS`` (the owner lease, default 10).  Every other
query option goes to redis-py (``socket_timeout=5``, ``ssl_ca_certs=...``).

Keys
----
Every key of queue NAME sits under one hash tag, so one script may touch
them together (on Redis Cluster too)::

    wheelq:{NAME}:log      stream  the journal: one entry per journal line, with
                                   fields r (the line, byte for byte what the file
                                   journal would hold), n (the writer's nonce
                                   "WRITER:K"), u (the task_id of an add that
                                   carries one), a (the add an end names)
    wheelq:{NAME}:base     stream  the last compaction's snapshot (field r)
    wheelq:{NAME}:meta     hash    wheelq=1 (the header), cut (the last log entry
                                   the base replaces), gen (compactions so far),
                                   seen (the writers' nonces at the cut), cid
    wheelq:{NAME}:live     hash    task_id -> entry id of its add, for adds with a
                                   task_id that have not ended
    wheelq:{NAME}:lease    string  the owner's fencing token "EPOCH:UUID", with an
                                   expiry: the owner lease
    wheelq:{NAME}:epoch    string  the counter the epochs come from
    wheelq:{NAME}:owner    string  "TOKEN\\n{host, pid, since}" of the latest owner
    wheelq:{NAME}:new      stream  a compaction's snapshot while it is written
    wheelq:{NAME}:staging  hash    that compaction: token, cid, cut, chunks, entries

Replay reads ``base`` whole, then ``log`` strictly after ``meta.cut``.

Design
------
*Producers.*  A producer's ``append()`` of one line is one ``XADD``.
Concurrent appends in one process share one round trip (group commit): the
first caller sends at once; callers arriving meanwhile form the next group,
sent as one ``EVALSHA`` of the append script (one command, atomic) when the
round trip in flight returns.  An add with a ``task_id`` goes through that
script, which writes it only if ``live`` does not hold the id (atomically,
across hosts) and records it there.

*The owner.*  Every write of the owner is one call of the owner script,
which first checks that the lease still holds the owner's token (a stale
owner is refused and writes nothing), then returns the entries others
appended since the owner last read, and then appends the owner's lines.  The
owner hands those entries to the wheel before it applies its own change, so
its state always is the state of the stream up to its own line, as in the
file store, at one round trip a write.  Lines that end a task (``done``,
``cancel``, ``purge``) remove its id from ``live`` in the same script, and
the entry names the add it ends (field ``a``).

*The lease.*  ``acquire()`` takes the lease key, with a fresh token
``EPOCH:UUID`` (the epoch from ``INCR``), and a thread (``wheelq-lease``)
renews it every third of its period.  The lease is strict: once it has
expired, it cannot be renewed, even if nobody took it over.  The owner stops
(``check()`` gives the wheel a reason, and it stops taking tasks) when a
renewal or a write is refused, and also when the last renewal that
succeeded was sent three quarters of a lease ago by its monotonic clock, so
it stops dispatching before another owner may start.  A standby polls
``acquire()`` and takes over once the lease has expired: within one lease
period and a quarter of a tick after the owner died.

*Time.*  Due times are compared with the server's ``TIME``: each renewal
(and, for a producer, opening the queue) measures the offset of the
server's clock from the wheel's, halfway through the round trip, and the
wheel adds it (``skew``) to its clock.  Only a real clock (``SystemClock``)
is offset: a ``ManualClock`` is the time of its test.

*Retries and duplicates.*  redis-py's own retries are off; this module
retries a lost connection itself, with backoff, for up to 30 seconds (the
owner only while its lease may still hold; the first connection of a store,
3 seconds, since a server never reached is more likely a wrong URL than a
restart), and loads its scripts again when
a restarted server has forgotten them.  A write sent again after a lost
reply carries the same nonce ``WRITER:K`` (WRITER random per process and
role, K counting its lines, one round trip in flight per writer), and every
reader drops an entry whose K is not above the highest it has seen of its
writer.  The owner script finds the owner's own first try itself and does
not write twice.  A compaction keeps the nonces at its cut (``meta.seen``),
so a late duplicate after it is still dropped.

*Compaction* is three fenced steps: ``begin`` (record the cut), ``chunk`` i
(append snapshot lines to ``new``; a chunk sent again is recognised by its
index) and ``commit`` (one script: check that every chunk arrived, rename
``new`` to ``base``, set the cut, and trim the log exactly with ``XTRIM
MINID``).  Nothing a reader looks at changes before ``commit``, which Redis
applies whole or not at all, across a crash too (the AOF wraps a script's
effects in MULTI/EXEC).  A crash at any step replays to the same tasks.

*Durability is the server's.*  ``acquire()`` reads ``appendonly``,
``appendfsync`` and ``maxmemory-policy`` and refuses to own a queue on a
server with AOF off or a policy that evicts any key (``allkeys-*``), naming
the setting; where ``CONFIG`` is not allowed, it logs a warning.  It logs the
durability the server gives.  The ``fsync`` option of the Wheel changes
nothing here but what the file store does with it too: under ``"always"``
the owner's concurrent ``delay()``s share one write.

Decisions the design contract leaves open
-----------------------------------------
* The ``live`` hash never holds an id that is not live: any end removes the
  id, also a producer's ``cancel`` that the owner will find too late (the
  task was running).  It may lack a live id; then an add of that id is
  written, and the owner ignores it as it ignores any add of a live id (the
  rule of the file store, which stays the authority).  So deduplication on
  the server never changes which task runs; it only spares the stream the
  duplicate adds.  A dead letter keeps its id until it is requeued and
  finishes, or purged.
* A done names the add it ends from ``live`` on the server, in the owner
  script that checks the token: a stale owner's done is refused there, so it
  cannot finish a newer task of the same id.
* ``maxmemory-policy`` ``noeviction`` and the ``volatile-*`` policies are
  accepted (these evict only keys with an expiry, and the only one here is
  the lease, whose loss costs a failover, never a record); ``allkeys-*`` is
  refused.  ``appendfsync no`` is accepted and named as the weakest.
* An entry that is not one journal line (not written by wheelq) reads as an
  unreadable line naming its entry id; the owner refuses the queue, as it
  refuses a file with a bad line: ``XDEL`` the entry.  There are no torn
  lines in a stream: an entry is written whole or not at all.
* A producer measures the server's clock when it opens the queue; the owner
  at every renewal.
* The lease's token, host and pid are in ``wheelq:{NAME}:owner``; a second
  owner's ``JournalLocked`` names them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import queue
import re
import socket
import sys
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Iterator, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as _RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as _RedisTimeoutError
from redis.retry import Retry

from wheelq import _shown  # a URL as messages show it: its password hidden

__all__ = ["RedisStore", "parse_url"]

logger = logging.getLogger("wheelq")

_RETRYABLE = (_RedisConnectionError, _RedisTimeoutError)  # BusyLoadingError is a ConnectionError
RETRY_FOR = 30.0  # seconds a call is retried over a lost connection
OPEN_FOR = 3.0  # seconds the first connection is tried
LEASE = 10.0  # seconds: the owner lease, unless the URL says lease=
_CHUNK = 5000  # entries a read takes at a time; lines a snapshot chunk holds
_BEHIND = 5000  # entries an owner write hands back at most, else the owner reads first
_GROUP_MAX = 512  # lines in one call of the append script
_STOP_AT = 0.75  # the owner stops once its last renewal is this part of a lease old
_HORIZON_MS = 15 * 60 * 1000  # writers silent this long before a cut are forgotten there
_QUEUE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-:")


# --------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------


class _URL(NamedTuple):
    client: str  # what redis-py gets: the URL without wheelq's options
    queue: str
    lease: float
    display: str  # for messages: the URL with its password hidden


def parse_url(url: str) -> _URL:
    """Split a ``redis://``, ``rediss://`` or ``unix://`` URL into redis-py's URL and wheelq's options."""
    if not isinstance(url, str):
        raise TypeError("a Redis URL is a str, not %s" % type(url).__name__)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    shown = _shown(url)
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError("%r is not a Redis URL: use redis://HOST:PORT/DB, rediss://HOST:PORT/DB "
                         "or unix:///PATH/TO/redis.sock, with ?queue=NAME" % shown)
    if scheme == "unix":
        if not parts.path or parts.path == "/":
            raise ValueError("%r names no socket: use unix:///path/to/redis.sock?queue=NAME" % shown)
    else:
        if not parts.hostname:
            raise ValueError("%r names no host: use %s://HOST:PORT/DB?queue=NAME, e.g. "
                             "%s://127.0.0.1:6379/0?queue=shop" % (shown, scheme, scheme))
        try:
            parts.port
        except ValueError:
            raise ValueError("%r has a port that is not a number" % shown) from None
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ValueError("%r: the database after the port is a number (/0), not %r; name the "
                             "queue with ?queue=%s" % (shown, db, db))
    query = parse_qsl(parts.query, keep_blank_values=True)
    options: dict = {}
    rest = []
    for k, v in query:
        if k in ("queue", "lease"):
            if k in options:
                raise ValueError("%r gives %s twice" % (shown, k))
            options[k] = v
        else:
            rest.append((k, v))
    queue = options.get("queue", "default")
    if not queue or not set(queue) <= _QUEUE_CHARS or len(queue) > 200:
        raise ValueError("%r: queue name %r: use 1 to 200 letters, digits and _ . - :" % (shown, queue))
    try:
        lease = float(options.get("lease", LEASE))
    except ValueError:
        lease = -1.0
    if not 0.1 <= lease <= 3600:
        raise ValueError("%r: lease=%s: give the owner lease in seconds, from 0.1 to 3600 "
                         "(default %g)" % (shown, options["lease"], LEASE))
    query = urlencode(rest)
    plain = "%s://%s%s%s" % (parts.scheme, parts.netloc, parts.path, "?" + query if query else "")
    return _URL(plain, queue, lease, _shown(plain))


# --------------------------------------------------------------------------
# Scripts.  Each names every key it touches in KEYS (all under one hash tag).
# --------------------------------------------------------------------------

# Entries as one reply: redis-py's RESP parser costs ~15 us an entry in pure
# Python; this packs a chunk into a few strings.  pack(e) answers {count,
# lines, ids, nonces, writers}: lines is every entry's r (an entry that is not
# one line ending in a newline becomes a line naming it, which no reader takes
# for a record), ids and nonces one per entry joined by newlines ("-": none),
# writers one row "WRITER FIRST_K LAST_K RISING" per writer of the chunk, so
# a reader checks its nonces per writer, not per entry.
_PACK = r"""
local function pack(e, first, last)
  local lines, ids, nonces, seen, order = {}, {}, {}, {}, {}
  local j = 0
  for i = first, last do
    local id, f = e[i][1], e[i][2]
    local r, n
    for x = 1, #f, 2 do
      local k = f[x]
      if k == 'r' then r = f[x + 1] elseif k == 'n' then n = f[x + 1] end
    end
    j = j + 1
    if r == nil or string.byte(r, -1) ~= 10 or string.find(r, '\n', 1, true) ~= #r then
      r = '!wheelq: stream entry ' .. id .. ' is not one journal line\n'
    end
    lines[j], ids[j], nonces[j] = r, id, n or '-'
    if n then
      local w, k = string.match(n, '^(%w+):(%d+)$')
      if w then
        k = tonumber(k)
        local s = seen[w]
        if s == nil then
          seen[w] = {k, k, 1}
          order[#order + 1] = w
        else
          if k <= s[2] then s[3] = 0 end
          s[2] = k
        end
      end
    end
  end
  local writers = {}
  for x, w in ipairs(order) do
    local s = seen[w]
    writers[x] = w .. ' ' .. string.format('%d %d %d', s[1], s[2], s[3])
  end
  return {j, table.concat(lines), table.concat(ids, '\n'), table.concat(nonces, '\n'),
          table.concat(writers, '\n')}
end
"""

# Writing lines: ARGV[j..] holds n triples (kind, task_id, line); line i
# gets the nonce w:(k0 + i).  kind "u": an add of task_id, written only if
# live lacks the id (then it enters live); "e": a line that ends task_id (its
# entry names the add live held, and live loses the id); "": a plain line.
# Answers one entry id per line, "=" for an add that found its id live.
_WRITE = r"""
local function write(log, live, w, k0, n, j)
  local ids = {}
  for i = 0, n - 1 do
    local kind, tid, line = ARGV[j], ARGV[j + 1], ARGV[j + 2]
    local nonce = w .. ':' .. (k0 + i)
    j = j + 3
    if kind == 'u' then
      if redis.call('HEXISTS', live, tid) == 1 then
        ids[#ids + 1] = '='
      else
        local id = redis.call('XADD', log, '*', 'r', line, 'n', nonce, 'u', tid)
        redis.call('HSET', live, tid, id)
        ids[#ids + 1] = id
      end
    elseif kind == 'e' then
      local a = redis.call('HGET', live, tid)
      if a then
        ids[#ids + 1] = redis.call('XADD', log, '*', 'r', line, 'n', nonce, 'a', a)
        redis.call('HDEL', live, tid)
      else
        ids[#ids + 1] = redis.call('XADD', log, '*', 'r', line, 'n', nonce)
      end
    else
      ids[#ids + 1] = redis.call('XADD', log, '*', 'r', line, 'n', nonce)
    end
  end
  return ids
end
"""

# A producer's group of lines.  KEYS: log, live.  ARGV: writer, k0, n, then
# the triples of _WRITE.
_APPEND = _WRITE + r"""
return write(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), 4)
"""

# Every write of the owner.  KEYS: lease, log, live.  ARGV: token, last (the
# entry the owner read last), writer, k0, n, then the triples of _WRITE.
# Refuses, writing nothing, unless the lease holds the token.  Answers
# {status, pack of the entries after last that come before the owner's
# lines, the id of the owner's last entry or ""}.  status "new": written now;
# "again": this write's first try is in the log already (its reply was lost),
# so it is not written twice; "behind": more than _BEHIND entries came after
# last, and nothing was written (the owner reads them first).
_OWNER = _PACK + _WRITE + r"""
local lease = redis.call('GET', KEYS[1])
if lease ~= ARGV[1] then
  return redis.error_reply('WHEELQ_FENCED ' .. (lease or 'none'))
end
local w, k0, n = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local e = redis.call('XRANGE', KEYS[2], '(' .. ARGV[2], '+', 'COUNT', %d + n + 1)
local prefix, mine, lastmine = w .. ':', nil, ''
for i = 1, #e do
  local f = e[i][2]
  for x = 1, #f, 2 do
    if f[x] == 'n' and string.sub(f[x + 1], 1, #prefix) == prefix then
      local k = tonumber(string.sub(f[x + 1], #prefix + 1))
      if k and k >= k0 and k < k0 + n then
        mine = mine or i
        lastmine = e[i][1]
      end
    end
  end
end
if mine then
  return {'again', pack(e, 1, mine - 1), lastmine}
end
if #e > %d then
  return {'behind', pack(e, 1, 0), ''}
end
local ids = write(KEYS[2], KEYS[3], w, k0, n, 6)
local last = ''
for i = #ids, 1, -1 do
  if ids[i] ~= '=' then last = ids[i]; break end
end
return {'new', pack(e, 1, #e), last}
""" % (_BEHIND, _BEHIND)

# Reading.  KEYS: meta, a stream (log or base).  ARGV: start ("-" or
# "(ID"), count.  Answers {gen, cut, seen, pack} read at one instant.
_READ = _PACK + r"""
local meta = redis.call('HMGET', KEYS[1], 'gen', 'cut', 'seen')
local e = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
return {meta[1] or '', meta[2] or '', meta[3] or '', pack(e, 1, #e)}
"""

# The owner takes the lease.  KEYS: lease, epoch, owner.  ARGV: uuid, lease
# ms, owner json.  Answers {1, token, sec, usec} when taken (or already ours:
# a retry after a lost reply), {0, pttl ms, owner record} when another holds it.
_ACQUIRE = r"""
local cur = redis.call('GET', KEYS[1])
local t = redis.call('TIME')
if cur then
  local sep = string.find(cur, ':', 1, true)
  if sep and string.sub(cur, sep + 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, cur, t[1], t[2]}
  end
  return {0, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[3]) or ''}
end
local token = redis.call('INCR', KEYS[2]) .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
redis.call('SET', KEYS[3], token .. '\n' .. ARGV[3])
return {1, token, t[1], t[2]}
"""

# KEYS: lease.  ARGV: token, lease ms.  Extends the lease only while it holds
# the token.  Answers {1 or 0, sec, usec}: the server's TIME, for the offset.
_RENEW = r"""
local t = redis.call('TIME')
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, t[1], t[2]}
end
return {0, t[1], t[2]}
"""

# KEYS: lease.  ARGV: token.  Deletes the lease only while it holds the token.
_RELEASE = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

_LUA_IDS = r"""
local function parse(id)
  local d = string.find(id, '-', 1, true)
  if not d then return tonumber(id), 0 end
  return tonumber(string.sub(id, 1, d - 1)), tonumber(string.sub(id, d + 1))
end
local function before(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local function fenced(lease, token)
  local cur = redis.call('GET', lease)
  if cur ~= token then return redis.error_reply('WHEELQ_FENCED ' .. (cur or 'none')) end
  return false
end
"""

# Compaction, step 1.  KEYS: lease, log, meta, new, staging.  ARGV: token,
# cid, cut.  The cut may not go back before the last one.
_BEGIN = _LUA_IDS + r"""
local err = fenced(KEYS[1], ARGV[1]); if err then return err end
local cut, old = ARGV[3], redis.call('HGET', KEYS[3], 'cut') or '0-0'
if before(cut, old) then
  return redis.error_reply('WHEELQ_CUT the cut ' .. cut .. ' is before the last one, ' .. old)
end
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('HSET', KEYS[5], 'token', ARGV[1], 'cid', ARGV[2], 'cut', cut, 'chunks', 0, 'entries', 0)
return 1
"""

# Step 2, once a chunk.  KEYS: lease, new, staging.  ARGV: token, cid, index,
# then lines.  A chunk whose index already arrived is not written again.
_CHUNK_SCRIPT = _LUA_IDS + r"""
local err = fenced(KEYS[1], ARGV[1]); if err then return err end
if redis.call('HGET', KEYS[3], 'cid') ~= ARGV[2] then
  return redis.error_reply('WHEELQ_STAGING this compaction was abandoned or replaced')
end
local have, i = tonumber(redis.call('HGET', KEYS[3], 'chunks')), tonumber(ARGV[3])
if i < have then return 0 end
if i > have then
  return redis.error_reply('WHEELQ_STAGING chunk ' .. i .. ' arrived before chunk ' .. have)
end
for j = 4, #ARGV do redis.call('XADD', KEYS[2], '*', 'r', ARGV[j]) end
redis.call('HINCRBY', KEYS[3], 'chunks', 1)
redis.call('HINCRBY', KEYS[3], 'entries', #ARGV - 3)
return 1
"""

# Step 3.  KEYS: lease, log, meta, base, new, staging.  ARGV: token, cid,
# chunks, entries, seen.  Checks that every chunk arrived, then swaps the
# snapshot in and trims the log exactly: one atomic step.  A commit sent
# again after it committed answers as the first did.  Answers {gen, trimmed}.
_COMMIT = _LUA_IDS + r"""
local err = fenced(KEYS[1], ARGV[1]); if err then return err end
if redis.call('HGET', KEYS[6], 'cid') ~= ARGV[2] then
  if redis.call('HGET', KEYS[3], 'cid') == ARGV[2] then
    return {tonumber(redis.call('HGET', KEYS[3], 'gen')), -1}
  end
  return redis.error_reply('WHEELQ_STAGING this compaction was abandoned or replaced')
end
local s = redis.call('HMGET', KEYS[6], 'cut', 'chunks', 'entries')
if s[2] ~= ARGV[3] or s[3] ~= ARGV[4] then
  return redis.error_reply('WHEELQ_STAGING ' .. s[2] .. ' chunks, ' .. s[3] ..
    ' entries arrived, not ' .. ARGV[3] .. ', ' .. ARGV[4])
end
local cut = s[1]
redis.call('UNLINK', KEYS[4])
if redis.call('EXISTS', KEYS[5]) == 1 then redis.call('RENAME', KEYS[5], KEYS[4]) end
redis.call('DEL', KEYS[6])
local gen = redis.call('HINCRBY', KEYS[3], 'gen', 1)
redis.call('HSET', KEYS[3], 'cut', cut, 'seen', ARGV[5], 'cid', ARGV[2], 'wheelq', 1)
local ms, seq = parse(cut)
local trimmed = redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d-%d', ms, seq + 1))
return {gen, trimmed}
"""

_SCRIPTS = {"read": _READ, "append": _APPEND, "owner": _OWNER, "acquire": _ACQUIRE,
            "renew": _RENEW, "release": _RELEASE, "begin": _BEGIN, "chunk": _CHUNK_SCRIPT,
            "commit": _COMMIT}
_SHAS = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in _SCRIPTS.items()}

# A line that ends a task (its id leaves ``live``): done, cancel, purge.
_END = re.compile(rb'\{(?:"p":1,)?"op":"(?:done|cancel|purge)","id":("(?:[^"\\]|\\.)*")')


_ADD = b'{"p":1,"op":"add","id":'


def _kind(line: bytes) -> tuple:
    """``(kind, task_id)`` of one line for _WRITE: an end, or a plain line."""
    m = _END.match(line)
    if m is None:
        return b"", b""
    return b"e", json.loads(m.group(1)).encode("utf-8")


# --------------------------------------------------------------------------
# Group commit: one round trip in flight, callers meanwhile share the next
# --------------------------------------------------------------------------


class _Group:
    __slots__ = ("items", "results", "error", "lead", "gates", "want", "sent")

    def __init__(self) -> None:
        self.items: list = []
        self.results: Any = None
        self.error: BaseException | None = None
        self.lead: Any = None  # a closed gate its first caller waits at, while a round trip is out
        self.gates: list = []  # one closed gate a caller, opened once the group is back
        self.want = 0  # callers it gathers for before it is sent
        self.sent = False


def _gate() -> Any:
    gate = threading.Lock()
    gate.acquire()
    return gate


class _GroupCommit:
    """``submit(item)`` sends ``send(items) -> results`` for a group of callers, one group in flight.

    A caller that finds nothing in flight sends its item at once, alone, so a
    call on its own is one round trip.  Callers that arrive while a round trip
    is in flight join the open group; when the round trip returns, that
    group's first caller sends it, with every item that joined meanwhile.
    When the round trip that just returned carried several callers, they are
    likely to come back at once (threads in a loop of ``delay()``): the first
    of them to come back opens a group that waits up to ``gather`` seconds
    for as many callers as the last round trip carried, and the caller that
    completes it sends it.  So they ride one round trip instead of one alone
    and the rest in the next, and no thread is woken just to send.
    """

    def __init__(self, send: Callable[[list], list], gather: float = 0.0003) -> None:
        self._send = send
        self.gather = gather
        self._lock = threading.Lock()
        self._busy = False
        self._open: _Group | None = None
        self._last = 1  # callers the last round trip carried

    def submit(self, item: Any) -> Any:
        lock = self._lock
        lock.acquire()
        if not self._busy and (self._last == 1 or self.gather <= 0):
            # Alone, and the last round trip was alone too: send at once, no group.
            self._busy = True
            lock.release()
            try:
                return self._send([item])[0]
            finally:
                self._done(1)
        gate = _gate()
        if not self._busy:  # gather: others are about to come back
            self._busy = True
            group = self._open = _Group()
            group.want = self._last
            role = "gather"
        elif self._open is None:  # a round trip is out: the next group, sent when it is back
            group = self._open = _Group()
            group.lead = _gate()
            role = "next"
        else:
            group = self._open
            role = "ride"
        index = len(group.items)
        group.items.append(item)
        group.gates.append(gate)
        if role == "ride" and group.want and len(group.items) >= group.want and not group.sent:
            group.sent = True  # complete: this caller sends it
            self._open = None
            role = "send"
        lock.release()
        if role == "send":
            self._run(group)
        elif role == "next":
            group.lead.acquire()  # the round trip before it is back
            with lock:
                group.sent = True
                if self._open is group:
                    self._open = None  # newcomers start the next group
            self._run(group)
        elif role == "gather":
            if not gate.acquire(timeout=self.gather):
                with lock:
                    mine = not group.sent
                    group.sent = True
                    if self._open is group:
                        self._open = None
                if mine:
                    self._run(group)
                else:
                    gate.acquire()  # the caller that completed it sent it
        else:
            gate.acquire()
        if group.error is not None:
            raise group.error
        return group.results[index]

    def _run(self, group: _Group) -> None:
        try:
            group.results = self._send(group.items)
        except BaseException as exc:  # every caller of the group sees it
            group.error = exc
        self._done(len(group.items))
        for gate in group.gates:  # each caller wakes on its own gate
            gate.release()

    def _done(self, carried: int) -> None:
        """A round trip is back: hand over to the group that waits for it, if any."""
        with self._lock:
            self._last = carried
            nxt = self._open  # (a group that gathers opens only while nothing is out)
            if nxt is None:
                self._busy = False
        if nxt is not None:
            nxt.lead.release()


# --------------------------------------------------------------------------
# Reading: entries in order, without duplicates
# --------------------------------------------------------------------------


class _Reader:
    """Where a reader of the queue stands, and the nonces it has seen.

    ``last`` is the log entry read last (None: start from the base), ``gen``
    the compaction the reader read, ``seen`` the highest K of each writer
    (with the time of its entry, to forget silent writers at a cut).
    """

    __slots__ = ("last", "gen", "seen", "duplicates")

    def __init__(self) -> None:
        self.last: str | None = None
        self.gen = b""
        self.seen: dict = {}
        self.duplicates = 0

    def fresh(self, packed: list) -> tuple:
        """``(lines, count, last id)`` of a packed chunk, without the entries seen before."""
        count, lines, ids, nonces, writers = packed
        count = int(count)
        if not count:
            return b"", 0, None
        last = ids[ids.rfind(b"\n") + 1:].decode()
        if not writers:  # no nonces: a snapshot, or lines written by hand
            return lines, count, last
        seen = self.seen
        ms = int(last.partition("-")[0])
        rows = []
        for row in writers.split(b"\n"):
            w, first, high, rising = row.split(b" ")
            have = seen.get(w)
            if rising != b"1" or (have is not None and int(first) <= have[0]):
                break
            rows.append((w, int(high)))
        else:
            for w, high in rows:
                seen[w] = [high, ms]
            return lines, count, last
        # Some entry repeats an earlier one (a write sent again): look at each.
        kept = []
        all_lines = lines.split(b"\n")
        for line, nonce, eid in zip(all_lines, nonces.split(b"\n"), ids.split(b"\n")):
            w, _, k = nonce.rpartition(b":")
            if w and k.isdigit():
                k = int(k)
                have = seen.get(w)
                if have is not None and k <= have[0]:
                    self.duplicates += 1
                    continue
                seen[w] = [k, int(eid.partition(b"-")[0])]
            kept.append(line + b"\n")
        return b"".join(kept), len(kept), last

    def position(self) -> tuple:
        """``(last, seen)`` for a compaction's cut: writers silent for 15 minutes are left out."""
        last = self.last or "0-0"
        cut_ms = int(last.partition("-")[0])
        return last, {w.decode(): v for w, v in self.seen.items() if v[1] >= cut_ms - _HORIZON_MS}


def _ahead(chunks: Iterator, depth: int = 4) -> Iterator:
    """``chunks``, read by a thread of their own up to ``depth`` ahead.

    A replay then parses one chunk while the server packs the next: its
    time is the greater of the two, not their sum.  An error of the reading
    thread is raised here, in order.
    """
    out: queue.Queue = queue.Queue(depth)
    done = object()
    stop = threading.Event()

    def read() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        out.put((True, chunk), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            out.put((True, done))
        except BaseException as exc:
            out.put((False, exc))

    thread = threading.Thread(target=read, name="wheelq-replay", daemon=True)
    thread.start()
    try:
        while True:
            ok, value = out.get()
            if not ok:
                raise value
            if value is done:
                return
            yield value
    finally:
        stop.set()
        thread.join()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _host_module(frame: Any) -> Any:
    """The wheelq module that builds this store (``python -m wheelq`` runs it as __main__)."""
    name = frame.f_globals.get("__name__") if frame is not None else None
    module = sys.modules.get(name) if name else None
    if module is not None and hasattr(module, "_store_for") and hasattr(module, "Wheel"):
        return module
    import wheelq
    return wheelq


# --------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------


class RedisStore:
    """A queue on a Redis server: the store interface of ``wheelq.py``, on a stream.

    See the module docstring for the keys and the design.  ``lock``,
    ``deliver``, ``skew`` and ``clock`` are the interface's; ``clock`` is the
    wheel's, set by the wheel before ``open()``, against which the offset of
    the server's time is measured.
    """

    durable = True
    concurrent = True  # a producer's appends need not hold ``lock``: they are grouped here

    def __init__(self, url: str, fsync: str = "batch"):
        self._wq = _host_module(sys._getframe(1))
        parsed = parse_url(url)
        self.url = parsed.client
        self.queue = parsed.queue
        self.lease = parsed.lease
        self.name = "%s (queue %s)" % (parsed.display, parsed.queue)
        self.mode = fsync
        tag = "wheelq:{%s}:" % parsed.queue
        self.keys = {k: tag + k for k in ("log", "base", "meta", "live", "lease", "epoch", "owner",
                                          "new", "staging")}
        self.clock: Any = None
        self.skew = 0.0
        self._offsets: list = []  # the owner's measurements: (monotonic, lower bound, wall - monotonic)
        self.closed = False
        self._client: Any = None
        self._durability: tuple | None = None  # (level, message) once read
        self._token: str | None = None
        self._lost: str | None = None  # why this owner stopped owning
        self._renewer: threading.Thread | None = None
        self._stop_renewing = threading.Event()
        self._renewed_at = 0.0  # monotonic time the last renewal that succeeded was sent
        self._between: Callable[[str], None] = lambda step: None  # compaction steps (tests crash there)
        self._fresh_process()
        _STORES.add(self)

    def _fresh_process(self) -> None:
        """State of one process (again after fork)."""
        self.lock = threading.Lock()
        self.deliver: Callable | None = None
        self._pid = os.getpid()  # (a child calls after_fork: the wheel's fork hook, or ours below)
        # One writer per role: each has one round trip in flight, so its K
        # grow along the stream, which is what readers rely on.
        self._writer = uuid.uuid4().hex[:16].encode()
        self._owner_writer = uuid.uuid4().hex[:16].encode()
        self._k = self._owner_k = 0
        self._producing = _GroupCommit(self._send_append)
        self._conn: Any = None  # the producers' own connection
        self._reader = _Reader()  # the owner's
        self._view_reader = _Reader()  # a producer's view
        self._view_lineno = 0
        self._lineno = 0  # lines the owner has accounted for, as the file store counts them
        self._records = 0
        self._deferred: list = []  # lines of defer(), written by the next commit
        self._seq = 0  # the owner's appends handed out
        self._failed: dict = {}  # seq -> the error that lost its deferred line

    # -- the server --------------------------------------------------------------

    def _redis(self) -> Any:
        client = self._client
        if client is None:
            options = {"decode_responses": False, "socket_timeout": 10.0,
                       "socket_connect_timeout": 5.0, "client_name": "wheelq:%s" % self.queue,
                       # This module retries, with the same nonces; redis-py's own
                       # retries (3 by default) would send writes again behind its back.
                       "retry": Retry(NoBackoff(), 0)}
            try:
                client = redis.Redis.from_url(self.url, **options)
            except ValueError as exc:
                raise ValueError("%s: %s" % (self.name, exc)) from None
            self._client = client
        return client

    def _call(self, call: Callable[[], Any], deadline: float | None = None) -> Any:
        """``call()``, retried over a lost connection with backoff until ``deadline``.

        Safe for every call here: reads, writes that carry their nonce, and
        scripts that are idempotent.  A script the server does not know (it
        restarted) is loaded and the call sent again: NOSCRIPT did nothing.
        Raises OSError (ConnectionError or TimeoutError) when the server stays away.
        """
        if deadline is None:
            deadline = time.monotonic() + RETRY_FOR
        pause = 0.005
        loads = 0
        while True:
            try:
                return call()
            except NoScriptError:
                loads += 1
                if loads > 3:
                    raise
                self._load_scripts()
            except _RETRYABLE as exc:
                now = time.monotonic()
                if now >= deadline:
                    cls = TimeoutError if isinstance(exc, _RedisTimeoutError) else ConnectionError
                    raise cls(errno.ETIMEDOUT if cls is TimeoutError else errno.ECONNREFUSED,
                              "cannot reach Redis at %s: %s; check that redis-server runs and that "
                              "the URL is right" % (self.name, exc)) from None
                time.sleep(min(pause, max(0.0, deadline - now)))
                pause = min(pause * 2, 0.25)
            except ResponseError as exc:
                raise self._refusal(exc) from None

    def _refusal(self, exc: ResponseError) -> Exception:
        text = str(exc)
        if "WHEELQ_FENCED" in text:
            return self._fenced()
        if "WHEELQ_" in text:
            return self._wq.WheelqError("%s: %s" % (self.name, text.split(" ", 1)[-1]))
        if text.startswith("WRONGTYPE"):
            return self._wq.WheelqError(
                "%s: a key under wheelq:{%s}: is not what wheelq keeps there (%s): this is not a "
                "wheelq queue; choose another queue name" % (self.name, self.queue, text))
        if text.startswith(("NOPERM", "NOAUTH", "WRONGPASS")):
            return PermissionError(errno.EACCES, "%s refused: %s; check the user and password in "
                                   "the URL and the user's ACL" % (self.name, text))
        if text.startswith(("OOM", "MISCONF", "READONLY")):
            return OSError(errno.EIO, "%s refused a write: %s; fix the server, then retry"
                           % (self.name, text))
        return exc

    def _load_scripts(self) -> None:
        pipe = self._redis().pipeline(transaction=False)
        for text in _SCRIPTS.values():
            pipe.execute_command("SCRIPT", "LOAD", text)
        pipe.execute()

    def _eval(self, name: str, keys: tuple, args: Any) -> Any:
        return self._redis().execute_command("EVALSHA", _SHAS[name], len(keys), *keys, *args)

    def _now(self) -> float:
        clock = self.clock
        return clock.time() if clock is not None else time.time()

    def _measured(self, sent: float, sec: Any, usec: Any) -> None:
        """Take the server's TIME, read between ``sent`` and now (this host's clock), into ``skew``.

        The server read its clock at some moment of the round trip, so its
        offset lies between ``TIME - back`` and ``TIME - sent``.  The owner
        takes the lower bound, the greatest of the last lease's measurements
        (it then never runs a task before the server's clock says it is due,
        and is late by a round trip at most); a producer takes the upper bound
        (a ``count_down`` then never ends before its time).  A step of this
        host's clock drops the measurements made before it.
        """
        clock = self.clock
        if clock is not None and not isinstance(clock, self._wq.SystemClock):
            return  # a ManualClock is the time of its test: never offset it
        back = self._now()
        mono = time.monotonic()
        server = int(sec) + int(usec) / 1e6
        if self._token is None:
            self.skew = server - sent
            return
        step = back - mono
        keep = [m for m in self._offsets if mono - m[0] < self.lease and abs(m[2] - step) < 0.05]
        keep.append((mono, server - back, step))
        self._offsets = keep
        self.skew = max(m[1] for m in keep)

    # -- opening -------------------------------------------------------------------

    def open(self) -> None:
        """Connect, check that the keys are a wheelq queue (writing its header if new), measure time."""
        if self.closed:
            raise self._wq.WheelClosed("the queue %s is closed; build a new Wheel to go on" % self.name)
        if self._client is not None:
            return
        k = self.keys
        when = [0.0]

        def call() -> Any:
            pipe = self._redis().pipeline(transaction=False)
            pipe.execute_command("HSETNX", k["meta"], "wheelq", 1)
            pipe.execute_command("HGET", k["meta"], "wheelq")
            pipe.execute_command("TYPE", k["log"])
            pipe.execute_command("TYPE", k["base"])
            pipe.execute_command("TYPE", k["live"])
            pipe.execute_command("TIME")
            when[0] = self._now()
            return pipe.execute()

        try:  # a server never reached yet is more likely a wrong URL: a few seconds, not 30
            _, version, log, base, live, (sec, usec) = self._call(call, time.monotonic() + OPEN_FOR)
        except BaseException:
            self._forget_client()
            raise
        self._measured(when[0], sec, usec)
        for key, have, want in ((k["log"], log, b"stream"), (k["base"], base, b"stream"),
                                (k["live"], live, b"hash")):
            if have not in (b"none", want):
                self._forget_client()
                raise self._wq.WheelqError(
                    "%s: the key %s is a %s, not the %s of a wheelq queue: wheelq writes only to "
                    "its own queues; choose another queue name" % (self.name, key, _text(have),
                                                                  _text(want)))
        if version != b"1":
            self._forget_client()
            raise self._wq.WheelqError("%s was written by another version of wheelq (format %s); "
                                       "use that version" % (self.name, _text(version)))

    def _forget_client(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
            self._conn = None
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
            self._client = None

    def records(self) -> int:
        return self._records

    # -- appending --------------------------------------------------------------------

    def append(self, data: bytes, build: Callable | None = None, lines: int = 0,
               task_id: str | None = None) -> int:
        """Append whole lines (see the interface); ``task_id``: the add of a user's task id.

        A producer's lines go through group commit and need no lock.  The
        owner (holding ``lock``) writes through the owner script, and hands
        the wheel what others appended before its lines first.
        """
        if self._client is None:
            self.open()
        if self._token is None:
            if build is not None:
                data = build()
            if not data:
                return self._seq
            self._producing.submit(self._triples(data, task_id))
            return 0
        return self._owner_write(data, build, task_id)

    def _triples(self, data: bytes, task_id: str | None) -> list:
        """``[(kind, task_id, line)]`` for _WRITE (see the scripts)."""
        if task_id is not None:
            return [(b"u", task_id.encode("utf-8"), data)]
        if data.startswith(_ADD):  # the hot path: one add
            return [(b"", b"", data)]
        if data.count(b"\n") == 1:
            kind, tid = _kind(data)
            return [(kind, tid, data)]
        out = []
        for line in data.splitlines(keepends=True):
            kind, tid = _kind(line)
            out.append((kind, tid, line))
        return out

    def _send_append(self, items: list) -> list:
        """One round trip for a group of producers' appends.

        Plain lines are pipelined ``XADD``s (in order on one connection, so
        each writer's nonces grow along the stream); a group with an add of a
        task id or an end is one call of the append script, atomic.
        """
        triples = [t for item in items for t in item] if len(items) > 1 else items[0]
        k0 = self._k
        self._k += len(triples)
        w = self._writer
        log = self.keys["log"]
        if not any(t[0] for t in triples):
            commands = [("XADD", log, "*", "r", t[2], "n", b"%s:%d" % (w, k0 + i))
                        for i, t in enumerate(triples)]
        else:
            live = self.keys["live"]
            commands = []
            for at in range(0, len(triples), _GROUP_MAX):
                part = triples[at:at + _GROUP_MAX]
                argv: list = ["EVALSHA", _SHAS["append"], 2, log, live, w, k0 + at, len(part)]
                for t in part:
                    argv += t
                commands.append(argv)
        self._call(lambda: self._roundtrip(commands))
        return [None] * len(items)

    def _roundtrip(self, commands: list) -> list:
        """Send ``commands`` on the producers' own connection in one round trip; their replies.

        One connection is enough: group commit keeps one round trip in flight,
        and a connection of its own skips the pool on the hot path.
        """
        conn = self._conn
        if conn is None:
            conn = self._conn = self._redis().connection_pool.make_connection()
        try:
            if len(commands) == 1:
                conn.send_command(*commands[0])
                return [conn.read_response()]
            conn.send_packed_command(conn.pack_commands(commands))
            return [conn.read_response() for _ in commands]
        except BaseException:
            conn.disconnect()  # never left half read
            raise

    # -- the owner's writes --------------------------------------------------------------

    def _owner_write(self, data: bytes, build: Callable | None, task_id: str | None) -> int:
        """Holding ``lock``: one call of the owner script, with the deferred lines first."""
        if build is not None:
            data = build()
        deferred, self._deferred = self._deferred, []
        triples = [t for _, d in deferred for t in self._triples(d, None)]
        if data:
            triples += self._triples(data, task_id)
        if triples:
            try:
                self._write_owned(triples)
            except BaseException as exc:
                self._lose_deferred([seq for seq, _ in deferred], exc)
                raise
        if data:
            self._seq += 1
        return self._seq

    def _write_owned(self, triples: list) -> None:
        """Send the owner's lines; deliver what came before them; raise if the lease is lost."""
        if self._token is None:
            raise self._wq.WheelqError("%s: this process does not own the queue (any more)" % self.name)
        k0 = self._owner_k
        self._owner_k += len(triples)
        argv: list = [self._token, "", self._owner_writer, k0, len(triples)]
        for t in triples:
            argv += t
        keys = (self.keys["lease"], self.keys["log"], self.keys["live"])
        deadline = min(time.monotonic() + RETRY_FOR, self._renewed_at + self.lease)
        while True:
            argv[1] = self._reader.last or "0-0"
            status, packed, last = self._call(lambda: self._eval("owner", keys, argv), deadline)
            if status == b"behind":
                self.tail(quiet=False)
                continue
            break
        self._take(packed)
        if last:
            self._reader.last = _text(last)
        self._reader.seen[self._owner_writer] = [k0 + len(triples) - 1,
                                                 int(_text(last or b"0-0").partition("-")[0])]
        n = len(triples)
        self._records += n
        self._lineno += n

    def _take(self, packed: list) -> None:
        """Owner: deliver the entries of a packed chunk (without duplicates) to the wheel."""
        data, count, last = self._reader.fresh(packed)
        if last is not None:
            self._reader.last = last
        if count:
            text, raws = self._wq._decode(data)
            lineno = self._lineno
            self._lineno += count
            self._records += count
            self.deliver(text, lineno, raws)

    def _fenced(self) -> Exception:
        """The lease holds another token: this owner stops owning (the ERROR is logged once)."""
        holder = self._holder()
        if holder is None:
            who = "it expired and nobody holds it now"
        else:
            who = "%s holds it now (lease token %s)" % (holder[1], holder[0])
        self._lose("this owner's lease on %s is lost: %s; this owner stops taking tasks, and "
                   "another owner (a standby) runs them" % (self.name, who))
        return self._wq.WheelqError(self._lost)

    def _lose(self, why: str) -> None:
        """Stop owning: ``check()`` gives ``why`` from now on, and the lease is no longer renewed."""
        if self._lost is None:
            self._lost = why
        self._stop_renewing.set()

    def detached(self, why: str) -> str:
        """The ERROR line the wheel logs when it stops taking tasks because ``check()`` gave ``why``."""
        return "%s (pid %d)" % (why, os.getpid())

    # -- fsync="always": deferred lines, written by the next commit --------------------------

    def defer(self, data: bytes) -> int:
        """Owner, holding ``lock``: leave ``data`` for the next commit, which writes the group."""
        if self._client is None:
            self.open()
        self._seq += 1
        self._deferred.append((self._seq, data))
        return self._seq

    def _lose_deferred(self, seqs: list, exc: BaseException) -> None:
        lost = OSError(getattr(exc, "errno", None) or errno.EIO, str(exc))
        # A refusal wrote nothing; a connection lost for good leaves it unknown.
        lost.unwritten = not isinstance(exc, (ConnectionError, TimeoutError))
        for seq in seqs:
            self._failed[seq] = lost

    def commit(self, seq: int) -> None:
        """Return once write ``seq`` is in the stream; deferred writes side by side share one call.

        Raises OSError if ``seq`` was deferred and writing it failed.
        """
        if not self._deferred and not self._failed:
            return
        with self.lock:
            lost = self._failed.pop(seq, None)
            if lost is None and any(s == seq for s, _ in self._deferred):
                try:
                    self._owner_write(b"", None, None)
                except Exception:
                    pass  # each deferred write's commit raises its own error
                lost = self._failed.pop(seq, None)
        if lost is not None:
            raise lost

    def sync(self) -> None:
        """Write deferred lines; the stream is as durable as the server's appendfsync makes it."""
        if self._deferred:
            with self.lock:
                if self._deferred:
                    try:
                        self._owner_write(b"", None, None)
                    except Exception:
                        pass  # their commits raise it

    # -- reading --------------------------------------------------------------------------

    def _chunks(self, reader: _Reader) -> Iterator:
        """What ``reader`` has not read yet, in chunks: ``(data, count)`` each, or None for a reset.

        Reads the base first, then the log after its cut.  A compaction that
        commits between two reads (the ``gen`` changed) starts the reader
        again from the base; it yields None first, and the lines after it
        are the whole queue again.
        """
        k = self.keys
        while True:
            if reader.last is None:
                chunks = self._base(reader)
                if chunks is None:
                    yield None
                    continue
                yield from chunks
            while True:
                start = "(" + reader.last
                gen, _, _, packed = self._call(lambda: self._eval("read", (k["meta"], k["log"]),
                                                                  (start, _CHUNK)))
                if gen != reader.gen:  # compacted since the last read: from the base again
                    reader.__init__()
                    yield None
                    break
                data, count, last = reader.fresh(packed)
                if last is not None:
                    reader.last = last
                if count:
                    yield data, count
                if int(packed[0]) < _CHUNK:
                    return

    def _base(self, reader: _Reader) -> list | None:
        """The whole base, in chunks, setting the reader at its cut; None if a compaction came meanwhile."""
        k = self.keys
        out = []
        start = "-"
        while True:
            gen, cut, seen, packed = self._call(lambda: self._eval("read", (k["meta"], k["base"]),
                                                                   (start, _CHUNK)))
            if start == "-":
                reader.gen = gen
                reader.seen = {w.encode(): v for w, v in json.loads(seen).items()} if seen else {}
            elif gen != reader.gen:
                return None
            count = int(packed[0])
            if count:
                out.append((packed[1], count))
                start = "(" + _text(packed[2][packed[2].rfind(b"\n") + 1:])
            if count < _CHUNK:
                reader.last = _text(cut) if cut else "0-0"
                return out

    def load(self, read: Callable) -> None:
        """Owner, holding the lease and ``lock``: replay the base and the log, chunk by chunk."""
        if self._client is None:
            self.open()
        reader = self._reader = _Reader()
        lineno = 1
        for chunk in _ahead(self._chunks(reader)):
            if chunk is None:
                raise self._wq.WheelqError("%s was compacted while this owner replayed it: is "
                                           "another owner running? Start again" % self.name)
            data, count = chunk
            text, raws = self._wq._decode(data)
            try:
                read(text, lineno, raws, False)
            except self._wq.JournalCorrupt as exc:
                raise self._corrupt(exc) from None
            lineno += count
        self._lineno = lineno
        self._records = lineno - 1

    def _corrupt(self, exc: Any) -> Exception:
        """A bad entry: say which, and how to remove it (there is no `repair` for a stream)."""
        cls = self._wq.JournalCorrupt
        err = cls.__new__(cls)
        err.path, err.lineno, err.reason = exc.path, exc.lineno, exc.reason
        Exception.__init__(err, "queue %s, entry %d of its replay: %s; wheelq did not write it: "
                           "find it with XRANGE and remove it with XDEL (the keys are "
                           "wheelq:{%s}:base and :log)" % (self.name, exc.lineno - 1, exc.reason,
                                                             self.queue))
        return err

    def tail(self, quiet: bool = True) -> None:
        """Owner, holding ``lock``: deliver what others appended since the last read (once a tick).

        ``quiet``: a server that is away is no error here (the next tick reads
        again), and the tick waits for it a second at most.
        """
        if self._client is None or self.deliver is None:
            return
        k = self.keys
        deadline = time.monotonic() + (1.0 if quiet else RETRY_FOR)
        while True:
            start = "(" + (self._reader.last or "0-0")
            try:
                _, _, _, packed = self._call(lambda: self._eval("read", (k["meta"], k["log"]),
                                                                (start, _CHUNK)), deadline)
            except (ConnectionError, TimeoutError) as exc:
                if not quiet:
                    raise
                self._note_unreachable(exc, "owner")
                return
            self._take(packed)
            if int(packed[0]) < _CHUNK:
                return

    def view(self) -> tuple:
        """``(reset, text, lineno, raws)``: the lines appended since the last view(), for a producer."""
        if self._client is None:
            self.open()
        reader = self._view_reader
        reset = False
        if reader.last is None:
            self._view_lineno = 1
        datas: list = []
        lines = 0
        for chunk in self._chunks(reader):
            if chunk is None:
                reset, datas, lines, self._view_lineno = True, [], 0, 1
                continue
            datas.append(chunk[0])
            lines += chunk[1]
        lineno = self._view_lineno
        self._view_lineno += lines
        if not datas:
            return reset, "", lineno, None
        text, raws = self._wq._decode(datas[0] if len(datas) == 1 else b"".join(datas))
        return reset, text, lineno, raws

    def view_reset(self) -> None:
        self._view_reader = _Reader()

    def lines_naming(self, needles: tuple) -> None:
        """No search on the server: a producer's look at one task reads the view."""
        return None

    # -- compaction ------------------------------------------------------------------------

    def rewrite(self, snapshot: Callable[[Callable[[], bytes]], list]) -> int:
        """Owner, holding ``lock``: replace everything up to the cut by ``snapshot(read)``.

        The cut is the last entry this owner has read, after it delivered what
        others appended; every step is fenced, and only ``commit`` changes
        what a reader sees.  Returns the number of records written.
        """
        if self._token is None:
            raise self._wq.WheelqError("only the owner compacts %s" % self.name)
        if self._deferred:
            self._owner_write(b"", None, None)
        self.tail(quiet=False)
        cut, seen = self._reader.position()
        lines = snapshot(lambda: b"")
        k = self.keys
        token, cid = self._token, uuid.uuid4().hex
        deadline = time.monotonic() + RETRY_FOR
        self._call(lambda: self._eval("begin", (k["lease"], k["log"], k["meta"], k["new"],
                                                k["staging"]), (token, cid, cut)), deadline)
        self._between("begin")
        chunks = 0
        for at in range(0, len(lines), _CHUNK):
            argv = [token, cid, chunks] + lines[at:at + _CHUNK]
            self._call(lambda: self._eval("chunk", (k["lease"], k["new"], k["staging"]), argv),
                       deadline)
            chunks += 1
            self._between("chunk %d" % chunks)
        gen, _ = self._call(lambda: self._eval(
            "commit", (k["lease"], k["log"], k["meta"], k["base"], k["new"], k["staging"]),
            (token, cid, chunks, len(lines), json.dumps(seen, separators=(",", ":")))), deadline)
        self._between("commit")
        self._reader.gen = str(gen).encode()
        self._records = len(lines)
        return len(lines)

    # -- the owner lease -------------------------------------------------------------------

    def acquire(self, wait: bool) -> bool:
        """Take the owner lease.  ``wait``: return False while another holds it; else raise JournalLocked.

        First checks, once, that the server keeps what it acknowledges; a
        server that would drop records is refused.
        """
        if self._client is None:
            self.open()
        if self._lost is not None:
            raise self._wq.WheelqError(self._lost)
        try:
            self._check_durability()
        except (ConnectionError, TimeoutError) as exc:
            if wait:
                self._note_unreachable(exc)
                return False
            raise
        me = uuid.uuid4().hex
        info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
        keys = (self.keys["lease"], self.keys["epoch"], self.keys["owner"])
        ms = max(1, int(self.lease * 1000))
        when = [0.0, 0.0]

        def call() -> Any:
            when[0], when[1] = time.monotonic(), self._now()
            return self._eval("acquire", keys, (me, ms, info))

        try:
            reply = self._call(call)
        except (ConnectionError, TimeoutError) as exc:
            if wait:
                self._note_unreachable(exc)
                return False
            raise
        if int(reply[0]) != 1:
            if wait:
                return False
            token, holder = _owner_record(reply[2])
            pid = holder.get("pid") if isinstance(holder.get("pid"), int) else None
            raise self._wq.JournalLocked(self.name, pid, "host %s pid %s (lease token %s, %.1f s "
                                         "left)" % (holder.get("host", "?"), pid or "?", token,
                                                    max(0, int(reply[1])) / 1000))
        self._token = _text(reply[1])
        # The owner's nonces name its epoch ("7o1f2e..."): a person (and a test) can
        # tell from the stream which owner wrote an entry.
        self._owner_writer = ("%so%s" % (self._token.split(":", 1)[0], uuid.uuid4().hex[:12])).encode()
        self._owner_k = 0
        self._renewed_at = when[0]
        self._offsets = []
        self._measured(when[1], reply[2], reply[3])
        self._lost = None
        self._stop_renewing = threading.Event()
        self._renewer = threading.Thread(target=self._renew, args=(self._token, self._stop_renewing),
                                         name="wheelq-lease", daemon=True)
        self._renewer.start()
        level, message = self._durability
        logger.log(logging.WARNING if level == "warning" else logging.INFO, "%s", message)
        logger.info("%s: owner lease %s (%g s, renewed every %g s)", self.name, self._token,
                    self.lease, self.lease / 3)
        if abs(self.skew) > 1.0:
            logger.warning("%s: this host's clock is %.1f s %s the Redis server's; due times "
                           "follow the server's clock (run NTP on this host)", self.name,
                           abs(self.skew), "ahead of" if self.skew < 0 else "behind")
        return True

    def _note_unreachable(self, exc: BaseException, who: str = "standby") -> None:
        """A warning every 30 s at most while the server is away."""
        now = time.monotonic()
        if now - getattr(self, "_noted", -60.0) > 30:
            self._noted = now
            logger.warning("%s for %s: %s; it goes on trying", who, self.name, exc)

    def _holder(self) -> tuple | None:
        """``(token, "host H pid P")`` of the lease's holder, or None."""
        try:
            token, record = self._call(lambda: self._redis().pipeline(transaction=True)
                                       .get(self.keys["lease"]).get(self.keys["owner"]).execute(),
                                       time.monotonic() + 2)
        except Exception:
            return None
        if token is None:
            return None
        held, info = _owner_record(record or b"")
        if held != _text(token):
            info = {}
        return _text(token), "host %s pid %s" % (info.get("host", "?"), info.get("pid", "?"))

    def _renew(self, token: str, stop: threading.Event) -> None:
        """The lease thread: renew every third of the lease, and measure the server's time."""
        ms = max(1, int(self.lease * 1000))
        period = self.lease / 3
        wait = period
        while not stop.wait(wait):
            sent = time.monotonic()
            host = self._now()
            deadline = self._renewed_at + self.lease
            try:
                ok, sec, usec = self._call(lambda: self._eval("renew", (self.keys["lease"],),
                                                              (token, ms)), deadline)
            except (ConnectionError, TimeoutError):
                if time.monotonic() >= deadline:
                    self._lose("%s: could not renew this owner's lease for %.1f s (the server was "
                               "unreachable), so another owner may take over: this owner stops "
                               "taking tasks" % (self.name, time.monotonic() - self._renewed_at))
                    return
                wait = 0.05
                continue
            except Exception as exc:
                logger.warning("%s: renewing the owner lease failed: %s", self.name, exc)
                wait = 0.05
                continue
            if stop.is_set():
                return
            if int(ok) != 1:
                self._fenced()
                return
            self._renewed_at = sent
            self._measured(host, sec, usec)
            wait = period

    def release(self) -> None:
        """Give the lease up (only while it holds this owner's token); close the client if closed."""
        self._stop_renewing.set()
        token, self._token = self._token, None
        renewer, self._renewer = self._renewer, None
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join(timeout=2)
        if token is not None and self._client is not None:
            try:
                self._call(lambda: self._eval("release", (self.keys["lease"],), (token,)),
                           time.monotonic() + 2)
            except Exception as exc:
                logger.warning("%s: could not release the owner lease (%s); it expires in %g s",
                               self.name, exc, self.lease)
        if self.closed:
            self._forget_client()

    def check(self) -> str | None:
        """Owner, once a tick: why this owner must stop owning, or None."""
        if self._lost is not None:
            return self._lost
        if self._token is not None:
            age = time.monotonic() - self._renewed_at
            if age > _STOP_AT * self.lease:
                self._lose("%s: this owner's lease was last renewed %.1f s ago (the lease is %g s), "
                           "so another owner may take over soon: this owner stops taking tasks"
                           % (self.name, age, self.lease))
                return self._lost
        return None

    # -- durability ---------------------------------------------------------------------------

    def _check_durability(self) -> None:
        """Refuse (WheelqError) a server that would drop acknowledged records; note what it gives."""
        if self._durability is None:
            self._durability = self._read_durability()
        level, message = self._durability
        if level == "error":
            raise self._wq.WheelqError(message)

    def _read_durability(self) -> tuple:
        try:
            info = self._call(lambda: self._redis().execute_command("INFO", "server"))
            version = info.get(b"redis_version", info.get("redis_version")) \
                if isinstance(info, dict) else None
            if version is not None:
                parts = tuple(int(p) for p in _text(version).split(".")[:2] if p.isdigit())
                if parts < (7, 0):
                    return "error", "%s runs Redis %s; wheelq needs Redis 7.0 or later" % (
                        self.name, _text(version))
        except ResponseError:
            pass  # INFO not allowed: the scripts' own errors will tell
        try:
            def call() -> Any:
                pipe = self._redis().pipeline(transaction=False)
                for name in ("appendonly", "appendfsync", "maxmemory-policy"):
                    pipe.execute_command("CONFIG", "GET", name)
                return pipe.execute()
            replies = self._call(call)
        except (ResponseError, Exception) as exc:
            if isinstance(exc, (ConnectionError, TimeoutError)):
                raise
            return "warning", ("cannot read the durability settings of %s (CONFIG is not allowed: "
                               "%s); make sure it runs with appendonly yes and maxmemory-policy "
                               "noeviction, or acknowledged tasks can be lost" % (self.name, exc))
        cfg = {}
        for reply in replies:
            if isinstance(reply, dict):
                cfg.update({_text(a): _text(b) for a, b in reply.items()})
            else:
                cfg.update({_text(reply[i]): _text(reply[i + 1]) for i in range(0, len(reply), 2)})
        aof, fsync, policy = cfg.get("appendonly"), cfg.get("appendfsync"), cfg.get("maxmemory-policy")
        if aof != "yes":
            return "error", ("%s has appendonly %s: a restart of redis-server would lose every "
                             "task; run CONFIG SET appendonly yes and set appendonly yes in "
                             "redis.conf" % (self.name, aof))
        if policy is not None and policy.startswith("allkeys-"):
            return "error", ("%s has maxmemory-policy %s: when memory runs short Redis deletes any "
                             "key, the journal included; run CONFIG SET maxmemory-policy "
                             "noeviction and set maxmemory-policy noeviction in redis.conf"
                             % (self.name, policy))
        if fsync == "always":
            how = "appendfsync always: every acknowledged record is on disk"
        elif fsync == "everysec":
            how = ("appendfsync everysec: a crash of redis-server loses nothing acknowledged; a "
                   "power cut or a kernel crash can lose about the last second")
        else:
            how = ("appendfsync %s: a crash of redis-server loses nothing acknowledged; a power "
                   "cut or a kernel crash can lose what the system had not written" % fsync)
        note = ""
        if policy is not None and policy.startswith("volatile-"):
            note = ("; maxmemory-policy %s evicts only keys with an expiry: the owner lease may go "
                    "under memory pressure, which costs a failover, not a task" % policy)
        return "info", "%s keeps the journal with AOF, %s%s" % (self.name, how, note)

    # -- fork and close -------------------------------------------------------------------

    def after_fork(self) -> None:
        """In a child process: a client, writers and readers of its own; never the parent's lease."""
        self._conn = None  # the parent's: redis-py never shuts a socket down in another pid
        client, self._client = self._client, None
        if client is not None:
            try:  # redis-py's pool does not close the parent's sockets in the child: drop them
                client.connection_pool.reset()
            except Exception:
                pass
        self._token = None
        self._renewer = None
        self._stop_renewing = threading.Event()
        self._fresh_process()

    def close(self) -> None:
        """Write what is deferred; the caller holds ``lock``.  ``release()`` then closes the client."""
        try:
            if self._deferred and self._token is not None and self._client is not None:
                self._owner_write(b"", None, None)
        finally:
            self.closed = True
            if self._token is None:
                self._forget_client()


_STORES: Any = weakref.WeakSet()  # every store of this process, for fork


def _after_fork_in_child() -> None:
    """A store used without a wheel is made a child's too (the wheel's own hook may come first)."""
    for store in list(_STORES):
        if store._pid != os.getpid():
            store.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _owner_record(record: Any) -> tuple:
    """``(token, {host, pid, since})`` from the owner key's value."""
    held, _, rest = _text(record).partition("\n")
    try:
        info = json.loads(rest) if rest else {}
    except ValueError:
        info = {}
    return held, info if isinstance(info, dict) else {}

