/*
 * The Redis budget store: hiredis async on the worker's event base.
 *
 * Per tenant T, keys in one hash slot (the tenant is the hash tag):
 *   <prefix>:{T}:leases  zset  request id -> lease expiry (ms, Redis time);
 *                              with 8 leases or more also a sentinel (80
 *                              '~', score 0) that keeps it a skiplist:
 *                              listpack lookups are linear in the leases
 *   <prefix>:{T}:s       hash  the tenant's counters:
 *                          hi       the newest second of the sliding
 *                                   minute, which is hi-60 .. hi
 *                          R, T     requests and tokens in the minute (the
 *                                   running sums of the buckets below)
 *                          r<sec>   requests admitted in second <sec>
 *                          t<sec>   tokens reserved (then used) in <sec>
 *                          d<day>   tokens reserved or used in budget day
 *                                   <day> (days since the epoch, shifted by
 *                                   store.day_offset)
 *                          g        until when `gone` may hold entries
 *   <prefix>:{T}:gone    zset  request id -> expiry: released before its
 *                              admission ran (sent on a connection that was
 *                              dropped), so the late admission takes nothing
 *
 * Batching: the admissions and settlements a worker makes during one
 * event-loop iteration are gathered per tenant and sent as ONE EVALSHA of
 * BATCH_LUA per tenant when the iteration's callbacks are done (an event
 * activated by the first of them), then written at once. While a batch of
 * a tenant is in flight, that tenant's next one waits for its reply (group
 * commit): a busy Redis gets bigger batches, not more of them. The script
 * applies the settlements, then takes the admissions in order, each
 * against the state the previous one left: one atomic check-and-reserve
 * per admission, as if each had its own script call. A batch holds one
 * set of limits and each request id once; an item that would break either
 * sends the batch first, so the order of the requests is kept.
 *
 * The script's common path makes seven redis.call()s whatever the batch
 * holds: TIME, one HMGET of the counters, one ZMSCORE of every request id
 * (the settlements' tickets, the admissions already holding a lease), the
 * settlements' ZREM, ZCOUNT of the live leases, one ZADD, one HSET. Once
 * per second per tenant (its first call of a second) buckets that left
 * the window leave the running sums and the hash, expired leases the
 * zset, and the keys' expiries are pushed back. The scans that say how
 * long until a request fits, or until the window is empty, run only for
 * an answer that shows them (a refusal, a reservation of 0 tokens, a
 * retried request id), over one HGETALL, once per call and state.
 *
 * A lease carries its second and its reservation back at settlement; the
 * gateway sums the token deltas per second, and the script's ZMSCORE/ZREM
 * is the at-most-once ticket (a lease settled twice, or expired and swept,
 * is no longer in the zset: its delta is taken back out of its group). A
 * lost admission reply is released with second 0: if the admission ran,
 * its second is read back from the lease's expiry (never renewed: nobody
 * holds it); if not, the request id goes to `gone`.
 *
 * The script returns {now, leases, R, T, day tokens} as they were before
 * the first admission, then the codes, one digit per admission in one
 * string (0 refused, 1 taken, 2 held already, 3 released already; +4 when
 * lease_free, req_free, req_reset, tok_free, tok_reset follow the string,
 * in order). The gateway replays the batch (the same additions the script
 * made) to get each admission's numbers, and ig_policy_decide() builds
 * each answer from them.
 *
 * Slices (store.slices; store_slice.c keeps their books): a batch may
 * carry its tenant's slice's ask (KEYS[4] is then the writer's record):
 * its deltas and slots before the admissions, its grant after them.
 * Admissions that fit a slice never come here (store_redis_take).
 *
 * Connection: connect, AUTH, SELECT, SCRIPT LOAD; ready only when all of
 * that answered. Admissions made meanwhile wait in their batches (within
 * the store timeout). A lost reply, a setup step that does not answer
 * within REDIS_SETUP_MS, or a batch unanswered for REDIS_STALL_TIMEOUTS
 * store timeouts (at least REDIS_STALL_MIN_MS) when an admission times out
 * drops the connection; reconnection backs off from 50 ms to 500 ms. A
 * reply that is only late costs the admissions that timed out (their
 * on_store_failure answers), not the connection. A ready connection is
 * also watched every REDIS_WATCH_MS with a PING, dropped when it or a
 * batch is unanswered past the same stall limit. Settlements made while down wait in a bounded queue.
 * Requires Redis >= 6.2 (ZMSCORE).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/random.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libevent.h>

#include "infergate/log.h"
#include "store_int.h"

#define REDIS_SETUP_MS		1000
#define REDIS_BACKOFF_MIN_MS	50
#define REDIS_BACKOFF_MAX_MS	500
/*
 * A connection whose oldest unanswered batch has waited this many store
 * timeouts (and at least REDIS_STALL_MIN_MS) is taken for dead and
 * dropped; a reply that is only late costs the admissions that timed out,
 * not the connection and everything in flight on it.
 */
#define REDIS_STALL_TIMEOUTS	3
#define REDIS_STALL_MIN_MS	250
/*
 * A ready connection is watched this often: a PING is sent when none is
 * out, and a PING or a batch unanswered for the stall limit drops it, so
 * that a Redis that stopped answering is noticed while nothing is
 * admitted too (settlements only, or no traffic), not by the first
 * admissions after a quiet time.
 */
#define REDIS_WATCH_MS		1000
#define REDIS_QUEUE_MAX		100000
#define REDIS_BATCH_MAX		256	/* admissions + settlements per call */
#define REDIS_PENDING_BUCKETS	64
#define REDIS_BATCH_ARGS	10	/* ARGV before the first request id */

/*
 * KEYS: leases, s, gone (and w:<writer> with a slice's ask). ARGV (so
 * that the request ids are one run, for unpack()): [1] lease ttl ms, [2]
 * day offset s, [3] NS settlements, [4] NA admissions, [5] NG groups,
 * [6..9] max concurrent, rpm, tpm, daily budget, [10] shadow ('1'); then
 * the NS settlements' request ids, the NA admissions' request ids; per
 * settlement its group (1..NG; 0: a release, second unknown; '-': no
 * token change) and its token delta (actual - reserved); per admission
 * its reservation; per group a second, its budget day and the sum of its
 * settlements' deltas; then, for a slice's ask (store.slices): the
 * writer, the ask's sequence number, the slots it keeps (NEED), wants in
 * all and held before, the requests and tokens it wants, and per delta a
 * second, its day, requests and tokens to add. Returns {now} plus, with
 * admissions, the numbers and codes described at the top of this file,
 * plus, with an ask, its answer: {second, slots held, requests granted,
 * tokens granted, everyone else's leases, R, T, day tokens before it}.
 *
 * Its cost is mostly per redis.call() and per number written as a string,
 * not per request: field names are built from the strings TIME and the
 * gateway send, and the common call makes seven redis.call()s whatever
 * the batch holds (TIME, HMGET, ZMSCORE, ZREM, ZCOUNT, ZADD, HSET).
 */
static const char BATCH_LUA[] =
"local ttl, off = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
"local ns, na, ng = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])\n"
"local mcr, rpm = tonumber(ARGV[6]), tonumber(ARGV[7])\n"
"local tpm, daily = tonumber(ARGV[8]), tonumber(ARGV[9])\n"
"local shadow = ARGV[10] == '1'\n"
"local s1 = 11\n"
"local a1 = s1 + ns\n"
"local x1 = a1 + na\n"
"local r1 = x1 + 2 * ns\n"
"local g1 = r1 + na\n"
"local k1 = g1 + 3 * ng\n"
"local t = redis.call('TIME')\n"
"local secs = t[1]\n"
"local sec = tonumber(secs)\n"
"local now = sec * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
"local function dayof(s)\n"
"  local d = math.floor((s - off) / 86400)\n"
"  if d < 0 then d = 0 end\n"
"  return d\n"
"end\n"
"local function fmt(n) return string.format('%d', n) end\n"
"local days = fmt(dayof(sec))\n"
"local h = redis.call('HMGET', KEYS[2], 'hi', 'R', 'T', 'g',\n"
"  'r' .. secs, 't' .. secs, 'd' .. days)\n"
"local hi, R1, T1 = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])\n"
"local R, T = R1 or 0, T1 or 0\n"
"local g = tonumber(h[4])\n"
"local rc, tc, dt = tonumber(h[5]) or 0, tonumber(h[6]) or 0,\n"
"  tonumber(h[7]) or false\n"
"-- the window's time never goes back, even when Redis's clock does\n"
"if hi and sec < hi then\n"
"  sec = hi; now = hi * 1000; secs = fmt(sec); days = fmt(dayof(sec))\n"
"  h = redis.call('HMGET', KEYS[2], 'r' .. secs, 't' .. secs, 'd' .. days)\n"
"  rc, tc, dt = tonumber(h[1]) or 0, tonumber(h[2]) or 0,\n"
"    tonumber(h[3]) or false\n"
"end\n"
"local rc1, tc1, dt1 = rc, tc, dt\n"
"local exp = fmt(now + ttl)\n"
"local hs = {}\n"
"local adv = not hi or sec > hi\n"
"if adv then\n"
"  -- the first call of a second: buckets that left the window leave the\n"
"  -- sums, expired leases the zset\n"
"  if hi then\n"
"    local f, last = {}, math.min(sec - 61, hi)\n"
"    for s = hi - 60, last do f[#f + 1] = 'r' .. fmt(s); f[#f + 1] = 't' .. fmt(s) end\n"
"    if last == hi then R, T = 0, 0\n"
"    else\n"
"      local v = redis.call('HMGET', KEYS[2], unpack(f))\n"
"      for i = 1, #f, 2 do\n"
"        R = R - (tonumber(v[i]) or 0); T = T - (tonumber(v[i + 1]) or 0)\n"
"      end\n"
"    end\n"
"    redis.call('HDEL', KEYS[2], unpack(f))\n"
"  else R, T = 0, 0 end\n"
"  redis.call('ZREMRANGEBYSCORE', KEYS[1], '(0', now)\n"
"  -- a zset of many leases is kept a skiplist (listpack lookups are\n"
"  -- linear): a member longer than zset-max-listpack-value, score 0\n"
"  if redis.call('ZCARD', KEYS[1]) >= 8 then\n"
"    redis.call('ZADD', KEYS[1], 'NX', 0, string.rep('~', 80))\n"
"  end\n"
"  hi = sec\n"
"  hs[1] = 'hi'; hs[2] = secs\n"
"end\n"
"-- RQ requests and TK tokens added to second SS (string) of day DD: to\n"
"-- its buckets while it is in the window, to the day's tokens; a bucket\n"
"-- or day that is not there any more is left alone\n"
"local rmod, tmod, dmod = {}, {}, {}\n"
"local function apply(ss, dd, rq, tk)\n"
"  local s = tonumber(ss)\n"
"  local u, v, w\n"
"  if ss == secs then u = rc; v = tc else u = rmod[s]; v = tmod[s] end\n"
"  if dd == days then w = dt else w = dmod[dd] end\n"
"  if u == nil or v == nil or w == nil then\n"
"    local x = redis.call('HMGET', KEYS[2], 'r' .. ss, 't' .. ss, 'd' .. dd)\n"
"    if u == nil then u = tonumber(x[1]) or false end\n"
"    if v == nil then v = tonumber(x[2]) or false end\n"
"    if w == nil then w = tonumber(x[3]) or false end\n"
"  end\n"
"  if s >= hi - 60 then\n"
"    if u and rq ~= 0 then\n"
"      local nu = u + rq\n"
"      if nu < 0 then nu = 0 end\n"
"      R = R + nu - u\n"
"      if ss == secs then rc = nu else rmod[s] = nu end\n"
"    end\n"
"    if v and tk ~= 0 then\n"
"      local nv = v + tk\n"
"      if nv < 0 then nv = 0 end\n"
"      T = T + nv - v\n"
"      if ss == secs then tc = nv else tmod[s] = nv end\n"
"    end\n"
"  end\n"
"  if w and tk ~= 0 then\n"
"    local nw = w + tk\n"
"    if nw < 0 then nw = 0 end\n"
"    if dd == days then dt = nw else dmod[dd] = nw end\n"
"  end\n"
"end\n"
"-- ZADD / ZREM of many members, in calls unpack() can take\n"
"local function zbulk(cmd, m)\n"
"  for i = 1, #m, 4000 do\n"
"    redis.call(cmd, KEYS[1], unpack(m, i, math.min(i + 3999, #m)))\n"
"  end\n"
"end\n"
"local sc = {}\n"
"if ns + na > 0 then\n"
"  sc = redis.call('ZMSCORE', KEYS[1], unpack(ARGV, s1, x1 - 1))\n"
"end\n"
"if ns > 0 then\n"
"  -- a lease still in the zset is settled once: its group's delta stands;\n"
"  -- a missing one's is taken back out of its group\n"
"  local gd, gone, nrem = {}, {}, 0\n"
"  for k = 1, ng do gd[k] = tonumber(ARGV[g1 + 3 * k - 1]) end\n"
"  for i = 1, ns do\n"
"    local e, grp = sc[i], ARGV[x1 + 2 * i - 2]\n"
"    if e then\n"
"      nrem = nrem + 1\n"
"      if grp == '0' then\n"
"        local s = math.floor((tonumber(e) - ttl) / 1000)\n"
"        apply(fmt(s), fmt(dayof(s)), 0, tonumber(ARGV[x1 + 2 * i - 1]))\n"
"      end\n"
"    elseif grp == '0' then\n"
"      gone[#gone + 1] = now + ttl; gone[#gone + 1] = ARGV[s1 + i - 1]\n"
"    elseif grp ~= '-' then\n"
"      local k = tonumber(grp)\n"
"      gd[k] = gd[k] - tonumber(ARGV[x1 + 2 * i - 1])\n"
"    end\n"
"  end\n"
"  if nrem == ns then redis.call('ZREM', KEYS[1], unpack(ARGV, s1, a1 - 1))\n"
"  elseif nrem > 0 then\n"
"    local rem = {}\n"
"    for i = 1, ns do if sc[i] then rem[#rem + 1] = ARGV[s1 + i - 1] end end\n"
"    redis.call('ZREM', KEYS[1], unpack(rem))\n"
"  end\n"
"  if #gone > 0 then\n"
"    redis.call('ZADD', KEYS[3], unpack(gone))\n"
"    redis.call('PEXPIRE', KEYS[3], ttl + 60000)\n"
"    g = now + ttl + 60000\n"
"    hs[#hs + 1] = 'g'; hs[#hs + 1] = fmt(g)\n"
"  end\n"
"  for k = 1, ng do\n"
"    if gd[k] ~= 0 then apply(ARGV[g1 + 3 * k - 3], ARGV[g1 + 3 * k - 2], 0, gd[k]) end\n"
"  end\n"
"end\n"
"-- a worker's slice (store.slices): its ask runs once (a lost reply sends\n"
"-- it again, same sequence number: KEYS[4] keeps the last one's grant; a\n"
"-- late copy of an older ask, the data of a dropped connection, runs\n"
"-- not at all); first what it gives back and reports, and its slots in\n"
"-- use, renewed (the idle ones above NEED go)\n"
"local sli, wid, seq, need, want, oldh, done, sout = #ARGV >= k1\n"
"if sli then\n"
"  wid, seq = ARGV[k1], ARGV[k1 + 1]\n"
"  need, want, oldh = tonumber(ARGV[k1 + 2]), tonumber(ARGV[k1 + 3]),\n"
"    tonumber(ARGV[k1 + 4])\n"
"  local rec = redis.call('GET', KEYS[4])\n"
"  if rec then\n"
"    local f = {}\n"
"    for x in string.gmatch(rec, '%d+') do f[#f + 1] = tonumber(x) end\n"
"    if f[1] == tonumber(seq) then\n"
"      done = true\n"
"      sout = {f[2], f[3], f[4], f[5]}\n"
"    elseif f[1] > tonumber(seq) then\n"
"      done = true\n"
"      sout = {sec, f[3], 0, 0}\n"
"    end\n"
"  end\n"
"  if not done then\n"
"    for j = k1 + 7, #ARGV, 4 do\n"
"      apply(ARGV[j], ARGV[j + 1], tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3]))\n"
"    end\n"
"    local m = {}\n"
"    for i = need + 1, oldh do m[#m + 1] = wid .. ':' .. i end\n"
"    if #m > 0 then zbulk('ZREM', m) end\n"
"    m = {}\n"
"    for i = 1, need do m[#m + 1] = exp; m[#m + 1] = wid .. ':' .. i end\n"
"    if #m > 0 then zbulk('ZADD', m) end\n"
"  end\n"
"end\n"
"local out = {now}\n"
"local taken = false\n"
"local conc\n"
"if na > 0 then\n"
"  conc = redis.call('ZCOUNT', KEYS[1], '(' .. fmt(now), '+inf')\n"
"  local conc0 = conc\n"
"  local gone = false\n"
"  if g and g > now then\n"
"    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)\n"
"    gone = redis.call('ZMSCORE', KEYS[3], unpack(ARGV, a1, x1 - 1))\n"
"  end\n"
"  if not dt then dt = 0 end\n"
"  out[2] = conc; out[3] = R; out[4] = T; out[5] = dt\n"
"  local add, codes, slowv, win, memo, memok = {}, {}, {}, nil, nil, nil\n"
"  local C, nadd = {'0', '1', '2', '3', '4', '5', '6', '7'}, 0\n"
"  local function flushadd()\n"
"    if #add > 0 then redis.call('ZADD', KEYS[1], unpack(add)); add = {} end\n"
"  end\n"
"  local function window(b, cur, need)\n"
"    local acc, last, free = 0, nil, 0\n"
"    for s = sec - 60, sec do\n"
"      local v = b[s]\n"
"      if s == sec then v = cur end\n"
"      if v and v > 0 then\n"
"        acc = acc + v; last = s\n"
"        if free == 0 and need > 0 and acc >= need then\n"
"          free = (s + 61) * 1000 - now end\n"
"      end\n"
"    end\n"
"    local reset = 0\n"
"    if last then reset = (last + 61) * 1000 - now end\n"
"    if need > 0 and free == 0 then free = reset end\n"
"    return free, reset\n"
"  end\n"
"  -- the scans, for an answer that shows them: once per state and need\n"
"  local function slow(reserve)\n"
"    local rneed, tneed = 0, 0\n"
"    if rpm > 0 and R + 1 > rpm then rneed = R + 1 - rpm end\n"
"    if tpm > 0 and T + reserve > tpm then tneed = T + reserve - tpm end\n"
"    local k = conc .. ' ' .. R .. ' ' .. T .. ' ' .. rneed .. ' ' .. tneed\n"
"    if k == memok then return memo end\n"
"    if not win then\n"
"      win = {r = {}, t = {}}\n"
"      local all = redis.call('HGETALL', KEYS[2])\n"
"      for i = 1, #all, 2 do\n"
"        local f, p = all[i], string.sub(all[i], 1, 1)\n"
"        if p == 'r' or p == 't' then\n"
"          local s = tonumber(string.sub(f, 2))\n"
"          if s and s >= sec - 60 then win[p][s] = tonumber(all[i + 1]) end\n"
"        end\n"
"      end\n"
"      for s, v in pairs(rmod) do win.r[s] = v end\n"
"      for s, v in pairs(tmod) do win.t[s] = v end\n"
"    end\n"
"    flushadd()\n"
"    local lfree = 0\n"
"    if conc > 0 then\n"
"      local e = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. fmt(now), '+inf',\n"
"        'WITHSCORES', 'LIMIT', 0, 1)\n"
"      if e[2] then lfree = tonumber(e[2]) - now end\n"
"    end\n"
"    local rf, rr = window(win.r, rc, rneed)\n"
"    local tf, tr = window(win.t, tc, tneed)\n"
"    memo, memok = {lfree, rf, rr, tf, tr}, k\n"
"    return memo\n"
"  end\n"
"  for i = 1, na do\n"
"    local reserve = tonumber(ARGV[r1 + i - 1])\n"
"    local code, sl, e = 1, nil, sc[ns + i]\n"
"    if gone and gone[i] then code = 3\n"
"    elseif e and tonumber(e) > now then\n"
"      -- a retried request id: the lease it holds, renewed\n"
"      code = 2; sl = slow(0); nadd = nadd + 1\n"
"      add[#add + 1] = exp; add[#add + 1] = ARGV[a1 + i - 1]\n"
"    else\n"
"      if (mcr > 0 and conc >= mcr) or (rpm > 0 and R + 1 > rpm) or\n"
"          (tpm > 0 and T + reserve > tpm) or\n"
"          (daily > 0 and dt + reserve > daily) then\n"
"        if not shadow then code = 0; sl = slow(reserve) end\n"
"      end\n"
"      if code == 1 then\n"
"        if reserve == 0 then sl = slow(0) end\n"
"        conc = conc + 1; R = R + 1; T = T + reserve; dt = dt + reserve\n"
"        rc = rc + 1; tc = tc + reserve; taken = true; nadd = nadd + 1\n"
"        add[#add + 1] = exp; add[#add + 1] = ARGV[a1 + i - 1]\n"
"      end\n"
"    end\n"
"    if sl then\n"
"      codes[i] = C[code + 5]\n"
"      for j = 1, 5 do slowv[#slowv + 1] = sl[j] end\n"
"    else codes[i] = C[code + 1] end\n"
"  end\n"
"  flushadd()\n"
"  if nadd > 0 and conc0 == 0 and not adv then\n"
"    redis.call('PEXPIRE', KEYS[1], ttl + 60000)\n"
"  end\n"
"  out[6] = table.concat(codes)\n"
"  for i = 1, #slowv do out[6 + i] = slowv[i] end\n"
"end\n"
"-- then the slice's grant, from what the admissions left: slots up to\n"
"-- WANT, requests and tokens as asked, each at most half of what is left\n"
"-- under its limit and an eighth of the limit (so a small limit is taken\n"
"-- request by request)\n"
"if sli then\n"
"  if not conc then conc = redis.call('ZCOUNT', KEYS[1], '(' .. fmt(now), '+inf') end\n"
"  local d = dt or 0\n"
"  if done then\n"
"    local o = conc - sout[2]\n"
"    if o < 0 then o = 0 end\n"
"    sout = {sec = sout[1], held = sout[2], r = sout[3], t = sout[4], o = o}\n"
"  else\n"
"    -- at most half of what is left under LIMIT and an eighth of it\n"
"    local function cap(limit, used, e)\n"
"      local c = math.floor((limit - used) / 2)\n"
"      if e < c then c = e end\n"
"      if c < 0 then c = 0 end\n"
"      return c\n"
"    end\n"
"    local held, gr, gt = want, tonumber(ARGV[k1 + 5]), tonumber(ARGV[k1 + 6])\n"
"    if mcr > 0 then\n"
"      held = need + math.min(want - need, cap(mcr, conc, math.floor(mcr / 8) - need))\n"
"    end\n"
"    if held < need then held = need end\n"
"    if rpm > 0 then gr = math.min(gr, cap(rpm, R, math.floor(rpm / 8))) end\n"
"    if tpm > 0 then gt = math.min(gt, cap(tpm, T, math.floor(tpm / 8))) end\n"
"    if daily > 0 then gt = math.min(gt, cap(daily, d, math.floor(daily / 8))) end\n"
"    -- requests without tokens (or the other way round) are of no use,\n"
"    -- nor either without a slot: such a grant would only count\n"
"    if gr == 0 or (gt == 0 and tonumber(ARGV[k1 + 6]) > 0) or\n"
"        (mcr > 0 and held == 0) then gr, gt = 0, 0 end\n"
"    local m = {}\n"
"    for i = need + 1, held do m[#m + 1] = exp; m[#m + 1] = wid .. ':' .. i end\n"
"    if #m > 0 then zbulk('ZADD', m) end\n"
"    if held > 0 then redis.call('PEXPIRE', KEYS[1], ttl + 60000) end\n"
"    sout = {sec = sec, held = held, r = gr, t = gt, o = conc - need}\n"
"    -- kept a day at least: a dropped connection's data can come late\n"
"    redis.call('SET', KEYS[4], seq .. ' ' .. fmt(sec) .. ' ' .. fmt(held) ..\n"
"      ' ' .. fmt(gr) .. ' ' .. fmt(gt), 'PX', math.max(ttl + 60000, 86400000))\n"
"  end\n"
"  local n = #out\n"
"  out[n + 1] = sout.sec; out[n + 2] = sout.held; out[n + 3] = sout.r\n"
"  out[n + 4] = sout.t; out[n + 5] = sout.o; out[n + 6] = R\n"
"  out[n + 7] = T; out[n + 8] = d\n"
"  if not done then\n"
"    R = R + sout.r; rc = rc + sout.r\n"
"    T = T + sout.t; tc = tc + sout.t\n"
"    if sout.t > 0 then dt = d + sout.t end\n"
"  end\n"
"end\n"
"if taken or rc ~= rc1 or tc ~= tc1 then\n"
"  hs[#hs + 1] = 'r' .. secs; hs[#hs + 1] = fmt(rc)\n"
"  hs[#hs + 1] = 't' .. secs; hs[#hs + 1] = fmt(tc)\n"
"end\n"
"for s, v in pairs(rmod) do hs[#hs + 1] = 'r' .. fmt(s); hs[#hs + 1] = fmt(v) end\n"
"for s, v in pairs(tmod) do hs[#hs + 1] = 't' .. fmt(s); hs[#hs + 1] = fmt(v) end\n"
"for dd, w in pairs(dmod) do hs[#hs + 1] = 'd' .. dd; hs[#hs + 1] = fmt(w) end\n"
"if dt and dt ~= dt1 then hs[#hs + 1] = 'd' .. days; hs[#hs + 1] = fmt(dt) end\n"
"if R ~= R1 then hs[#hs + 1] = 'R'; hs[#hs + 1] = fmt(R) end\n"
"if T ~= T1 then hs[#hs + 1] = 'T'; hs[#hs + 1] = fmt(T) end\n"
"if #hs > 0 then redis.call('HSET', KEYS[2], unpack(hs)) end\n"
"if adv then\n"
"  redis.call('PEXPIRE', KEYS[1], ttl + 60000)\n"
"  redis.call('HDEL', KEYS[2], 'd' .. fmt(dayof(sec) - 2))\n"
"  redis.call('PEXPIRE', KEYS[2], ((dayof(sec) + 1) * 86400 + off) * 1000 - now + 62000)\n"
"end\n"
"return out\n";

/* KEYS: leases. ARGV: request id, ttl ms. */
static const char RENEW_LUA[] =
"local t = redis.call('TIME')\n"
"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
"local ttl = tonumber(ARGV[2])\n"
"if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end\n"
"redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[1])\n"
"redis.call('PEXPIRE', KEYS[1], ttl + 60000)\n"
"return 1\n";

enum { SCRIPT_BATCH, SCRIPT_RENEW, NSCRIPTS };

static const char *const redis_scripts[NSCRIPTS] = {
	BATCH_LUA, RENEW_LUA
};

const char *
store_redis_batch_script(void)
{
	return BATCH_LUA;
}

enum redis_state { R_DOWN, R_CONNECTING, R_LOADING, R_READY };

/* One tenant's admissions and settlements of one loop iteration. */
struct redis_batch {
	struct redis_batch *next;	/* pending chain; the freelist */
	size_t		 hash;
	char		*tenant;
	size_t		 tenantlen, tenantcap;
	bool		 has_limits;	/* set by its first admission */
	struct ig_tenant_limits limits;
	bool		 shadow;
	bool		 eval;		/* re-sent with EVAL after NOSCRIPT */
	struct store_slice *slice;	/* carries its ask (store.slices) */
	struct ig_store_op **ops;
	size_t		 nops, capops;
	struct ig_lease	**settles;
	size_t		 nsettles, capsettles;
	struct redis_id	*ids;		/* of its ops and settlements */
	size_t		 nids, capids;
	uint64_t	 sent_ms;	/* when it was written (in flight) */
};

/* A request id in a batch (pointing into its op or lease). */
struct redis_id {
	uint64_t	 hash;
	const char	*id;
};

/* The settlements of a batch charging one second, at write time. */
struct redis_group {
	uint64_t	 sec;
	int64_t		 delta;
};

struct store_redis {
	struct event_base *base;
	struct ig_store_stats *stats;
	char		*host;		/* NULL with a unix socket */
	int		 port;
	char		*path;
	char		*password;	/* NULL: no AUTH */
	uint64_t	 database;
	char		*prefix;
	size_t		 prefixlen;
	uint64_t	 ttl_ms;
	uint64_t	 day_offset_s;
	redisAsyncContext *ac;
	enum redis_state state;
	char		 sha[NSCRIPTS][41];
	struct event	*timer;		/* reconnect, and the setup deadline */
	struct event	*flush;		/* sends the pending batches */
	bool		 flushing;	/* in redis_flush_cb */
	bool		 unwritten;	/* commands queued in hiredis */
	uint64_t	 backoff_ms;
	struct redis_batch *pending[REDIS_PENDING_BUCKETS];
	size_t		 npending;
	struct redis_batch *inflight[REDIS_PENDING_BUCKETS];	/* sent */
	size_t		 ninflight;
	bool		 reflush;	/* batches started while flushing */
	struct redis_batch *free_batches;
	char		*cmd;		/* the command being formatted */
	size_t		 cmdlen, cmdcap;
	bool		 cmdfail;
	struct redis_group *groups;	/* scratch of redis_batch_write */
	int		*sgroup;
	size_t		 capgroups;
	struct ig_lease	*qhead, *qtail;	/* settlements waiting */
	size_t		 queued;
	bool		 freeing;
	bool		 was_ready;	/* for the log */
	uint64_t	 timeout_ms;	/* store.redis.timeout */
	uint64_t	 ping_ms;	/* when the PING out was sent; 0: none */
	struct store_slices *slices;	/* store.slices, else NULL */
	struct event	*slice_timer;	/* runs the slices due */
	uint64_t	 slice_tick_ms;
	char		 wkey[2 + 16 + 1];	/* "w:<writer>" */
};

static void	 redis_connect(struct store_redis *);
static void	 redis_add_settle(struct store_redis *, struct ig_lease *);
static void	 redis_slice_want(struct store_slice *, void *);
static void	 redis_slice_timer_arm(struct store_redis *);

static void
redis_schedule(struct store_redis *r)
{
	struct timeval	 tv = { 0, 0 };

	if (r->freeing)
		return;
	tv.tv_usec = (suseconds_t)r->backoff_ms * 1000;
	evtimer_add(r->timer, &tv);
	r->backoff_ms *= 2;
	if (r->backoff_ms > REDIS_BACKOFF_MAX_MS)
		r->backoff_ms = REDIS_BACKOFF_MAX_MS;
}

static void
redis_went_down(struct store_redis *r, const char *why)
{
	if (r->was_ready)
		log_warn("store: redis %s: %s; running degraded",
		    r->host != NULL ? r->host : r->path, why);
	r->was_ready = false;
	r->state = R_DOWN;
	redis_schedule(r);
	if (r->npending > 0)
		event_active(r->flush, EV_WRITE, 1);	/* they fail */
}

/*
 * Drops the connection on our initiative. Replies still due are called
 * back with NULL (now, or when hiredis leaves its current callback).
 */
static void
redis_drop(struct store_redis *r, const char *why)
{
	redisAsyncContext *ac = r->ac;

	r->ac = NULL;
	if (ac != NULL)
		redisAsyncFree(ac);
	if (!r->freeing)
		redis_went_down(r, why);
}

/* A reply came back NULL: the connection AC is gone or going. */
static void
redis_lost(struct store_redis *r, const redisAsyncContext *ac)
{
	if (r->ac != ac || r->ac == NULL)
		return;
	r->ac = NULL;		/* hiredis frees it */
	redis_went_down(r, "connection lost");
}

static void
redis_disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct store_redis *r = ac->data;

	redis_lost(r, ac);
}

static void	 redis_watch(struct store_redis *);

static void
redis_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_redis *r = arg;

	if (r->state == R_DOWN)
		redis_connect(r);
	else if (r->state != R_READY)
		redis_drop(r, "no answer to connection setup");
	else
		redis_watch(r);
}

/* The settlements that waited for Redis, into this iteration's batches. */
static void
redis_flush_queue(struct store_redis *r)
{
	struct ig_lease	*l;

	while ((l = r->qhead) != NULL && r->state == R_READY) {
		r->qhead = l->next;
		if (r->qhead == NULL)
			r->qtail = NULL;
		r->queued--;
		l->next = NULL;
		redis_add_settle(r, l);
	}
}

/* AUTH, SELECT and the SCRIPT LOADs; PRIV is the step (script index). */
static void
redis_setup_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct store_redis *r = ac->data;
	redisReply	*rep = reply;
	intptr_t	 step = (intptr_t)priv;

	if (rep == NULL) {
		redis_lost(r, ac);
		return;
	}
	if (r->ac != ac)
		return;
	if (rep->type == REDIS_REPLY_ERROR) {
		log_error("store: redis setup: %s", rep->str);
		redis_drop(r, "setup refused");
		return;
	}
	if (step < 0 || step >= NSCRIPTS)
		return;		/* AUTH, SELECT */
	if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
		redis_drop(r, "bad SCRIPT LOAD reply");
		return;
	}
	memcpy(r->sha[step], rep->str, 40);
	r->sha[step][40] = '\0';
	if (step == NSCRIPTS - 1 && r->state == R_LOADING) {
		r->state = R_READY;
		r->backoff_ms = REDIS_BACKOFF_MIN_MS;
		r->stats->reconnects++;
		r->ping_ms = 0;
		redis_watch(r);		/* the timer: from setup to watch */
		log_info("store: redis %s: connected",
		    r->host != NULL ? r->host : r->path);
		r->was_ready = true;
		redis_flush_queue(r);
		if (r->slices != NULL)
			store_slices_lost(r->slices, redis_slice_want, r);
		if (r->npending > 0)
			event_active(r->flush, EV_WRITE, 1);
	}
}

static int
redis_load_scripts(struct store_redis *r)
{
	intptr_t	 i;

	for (i = 0; i < NSCRIPTS; i++)
		if (redisAsyncCommand(r->ac, redis_setup_cb, (void *)i,
		    "SCRIPT LOAD %s", redis_scripts[i]) != REDIS_OK)
			return -1;
	return 0;
}

static void
redis_connect_cb(const redisAsyncContext *ac, int status)
{
	struct store_redis *r = ac->data;
	char		 db[24];

	if (r->ac != ac)
		return;
	if (status != REDIS_OK) {
		r->ac = NULL;		/* hiredis frees it */
		redis_went_down(r, "cannot connect");
		return;
	}
	r->state = R_LOADING;
	snprintf(db, sizeof(db), "%llu", (unsigned long long)r->database);
	if ((r->password != NULL && redisAsyncCommand(r->ac, redis_setup_cb,
	    (void *)(intptr_t)-1, "AUTH %s", r->password) != REDIS_OK) ||
	    (r->database != 0 && redisAsyncCommand(r->ac, redis_setup_cb,
	    (void *)(intptr_t)-2, "SELECT %s", db) != REDIS_OK) ||
	    redis_load_scripts(r) == -1)
		redis_drop(r, "cannot send setup");
}

static void
redis_connect(struct store_redis *r)
{
	struct timeval	 tv = { REDIS_SETUP_MS / 1000,
	    (REDIS_SETUP_MS % 1000) * 1000 };
	redisAsyncContext *ac;

	ac = r->path != NULL ? redisAsyncConnectUnix(r->path) :
	    redisAsyncConnect(r->host, r->port);
	if (ac == NULL || ac->err != 0) {
		if (ac != NULL)
			redisAsyncFree(ac);
		redis_went_down(r, "cannot connect");
		return;
	}
	ac->data = r;
	if (redisLibeventAttach(ac, r->base) != REDIS_OK) {
		redisAsyncFree(ac);
		redis_went_down(r, "cannot connect");
		return;
	}
	redisAsyncSetConnectCallback(ac, redis_connect_cb);
	redisAsyncSetDisconnectCallback(ac, redis_disconnect_cb);
	r->ac = ac;
	r->state = R_CONNECTING;
	evtimer_add(r->timer, &tv);
}

static int
redis_parse_address(struct store_redis *r, const char *addr, char **err)
{
	const char	*colon;
	char		*end;
	long		 port;

	if (addr == NULL || *addr == '\0')
		addr = "127.0.0.1:6379";
	if (strncmp(addr, "unix:", 5) == 0)
		return (r->path = strdup(addr + 5)) == NULL ? -1 : 0;
	if ((colon = strrchr(addr, ':')) == NULL)
		goto bad;
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port < 1 || port > 65535)
		goto bad;
	if (addr[0] == '[' && colon > addr && colon[-1] == ']')
		r->host = strndup(addr + 1, (size_t)(colon - addr - 2));
	else
		r->host = strndup(addr, (size_t)(colon - addr));
	r->port = (int)port;
	return r->host == NULL ? -1 : 0;
bad:
	if (asprintf(err, "store.redis.address: \"%s\" is not host:port or "
	    "unix:/path", addr) == -1)
		*err = NULL;
	return -1;
}

static void	 redis_flush_cb(evutil_socket_t, short, void *);
static void	 redis_slice_timer_cb(evutil_socket_t, short, void *);

/*
 * store.slices: the slices, their timer (a quarter of the period, at most
 * 250 ms; armed while there are slices) and this worker's writer name, a
 * random 64-bit number: its slots are "<writer>:<i>" in a tenant's leases
 * and its last ask's record "<prefix>:{<tenant>}:w:<writer>".
 */
static int
redis_slices_create(struct store_redis *r, const struct ig_store_conf *conf)
{
	static const char hex[] = "0123456789abcdef";
	uint64_t	 w = 0;
	int		 i;

	while (w == 0 && getrandom(&w, sizeof(w), 0) != sizeof(w))
		w = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)r;
	memcpy(r->wkey, "w:", 2);
	for (i = 0; i < 16; i++)
		r->wkey[2 + i] = hex[(w >> (60 - 4 * i)) & 0xf];
	r->wkey[18] = '\0';
	r->slice_tick_ms = conf->slice_period_ms / 4;
	if (r->slice_tick_ms > 250)
		r->slice_tick_ms = 250;
	if (r->slice_tick_ms < 10)
		r->slice_tick_ms = 10;
	if ((r->slices = store_slices_new(conf->slice_period_ms, r->ttl_ms,
	    r->day_offset_s)) == NULL ||
	    (r->slice_timer = evtimer_new(r->base, redis_slice_timer_cb, r)) ==
	    NULL)
		return -1;
	return 0;
}

struct store_redis *
store_redis_create(const struct ig_store_conf *conf, struct event_base *base,
    struct ig_store_stats *stats, char **err)
{
	struct store_redis *r;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		goto nomem;
	r->base = base;
	r->stats = stats;
	r->database = conf->redis_database;
	r->ttl_ms = conf->lease_ttl_ms != 0 ? conf->lease_ttl_ms : 120000;
	r->day_offset_s = conf->day_offset_s;
	r->timeout_ms = conf->redis_timeout_ms;
	r->backoff_ms = REDIS_BACKOFF_MIN_MS;
	if (redis_parse_address(r, conf->redis_address, err) == -1) {
		if (*err == NULL)
			goto nomem;
		goto fail;
	}
	if ((r->prefix = strdup(conf->redis_key_prefix != NULL ?
	    conf->redis_key_prefix : "ig")) == NULL ||
	    (conf->redis_password != NULL && *conf->redis_password != '\0' &&
	    (r->password = strdup(conf->redis_password)) == NULL) ||
	    (r->timer = evtimer_new(base, redis_timer_cb, r)) == NULL ||
	    (r->flush = event_new(base, -1, 0, redis_flush_cb, r)) == NULL)
		goto nomem;
	r->prefixlen = strlen(r->prefix);
	if (conf->slices && redis_slices_create(r, conf) == -1)
		goto nomem;
	redis_connect(r);
	return r;
nomem:
	*err = strdup("out of memory");
fail:
	store_redis_free(r);
	return NULL;
}

static void
redis_batch_free(struct redis_batch *b)
{
	free(b->tenant);
	free(b->ops);
	free(b->settles);
	free(b->ids);
	free(b);
}

/* Back to the freelist, empty; its arrays are kept for the next tenant. */
static void
redis_batch_put(struct store_redis *r, struct redis_batch *b)
{
	b->nops = b->nsettles = b->nids = 0;
	b->has_limits = b->eval = false;
	b->slice = NULL;
	b->next = r->free_batches;
	r->free_batches = b;
}

void
store_redis_free(struct store_redis *r)
{
	struct redis_batch *b;
	struct ig_lease	*l;
	size_t		 i, j;

	if (r == NULL)
		return;
	r->freeing = true;
	r->state = R_DOWN;	/* what is settled from here on is dropped */
	/* Unsent batches: their ops belong to the store, which frees them. */
	for (i = 0; i < REDIS_PENDING_BUCKETS; i++) {
		while ((b = r->pending[i]) != NULL) {
			r->pending[i] = b->next;
			for (j = 0; j < b->nops; j++)
				b->ops[j]->redis_pending = false;
			for (j = 0; j < b->nsettles; j++)
				store_lease_free(b->settles[j]);
			redis_batch_free(b);
		}
	}
	redis_drop(r, "shutting down");
	while ((l = r->qhead) != NULL) {
		r->qhead = l->next;
		store_lease_free(l);
	}
	while ((b = r->free_batches) != NULL) {
		r->free_batches = b->next;
		redis_batch_free(b);
	}
	if (r->timer != NULL)
		event_free(r->timer);
	if (r->flush != NULL)
		event_free(r->flush);
	if (r->slice_timer != NULL)
		event_free(r->slice_timer);
	store_slices_free(r->slices);
	if (r->password != NULL)
		explicit_bzero(r->password, strlen(r->password));
	free(r->password);
	free(r->host);
	free(r->path);
	free(r->prefix);
	free(r->cmd);
	free(r->groups);
	free(r->sgroup);
	free(r);
}

int
store_redis_ready(const struct store_redis *r)
{
	return r->state == R_READY;
}

int
store_redis_busy(const struct store_redis *r)
{
	return r->npending > 0 || r->ninflight > 0 ||
	    ((r->queued > 0 || (r->slices != NULL &&
	    store_slices_busy(r->slices))) && r->state == R_READY);
}

int
store_redis_accepting(const struct store_redis *r)
{
	return r->state != R_DOWN;
}

static uint64_t
redis_now_ms(const struct store_redis *r)
{
	struct timeval	 tv;

	event_base_gettimeofday_cached(r->base, &tv);
	return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* How long a round trip may wait before the connection is taken for dead. */
static uint64_t
redis_stall_limit(uint64_t timeout_ms)
{
	uint64_t	 limit = REDIS_STALL_TIMEOUTS * timeout_ms;

	return limit < REDIS_STALL_MIN_MS ? REDIS_STALL_MIN_MS : limit;
}

/* When the oldest batch in flight was written; UINT64_MAX: none. */
static uint64_t
redis_oldest_sent(const struct store_redis *r)
{
	struct redis_batch *b;
	uint64_t	 oldest = UINT64_MAX;
	size_t		 i;

	for (i = 0; r->ninflight > 0 && i < REDIS_PENDING_BUCKETS; i++)
		for (b = r->inflight[i]; b != NULL; b = b->next)
			if (b->sent_ms < oldest)
				oldest = b->sent_ms;
	return oldest;
}

void
store_redis_timeout(struct store_redis *r, uint64_t timeout_ms)
{
	uint64_t	 oldest;

	if (r->state != R_READY || r->ninflight == 0)
		return;
	oldest = redis_oldest_sent(r);
	/* A Redis that stopped answering keeps its TCP connection open. */
	if (redis_now_ms(r) >= oldest + redis_stall_limit(timeout_ms))
		redis_drop(r, "not answering");
}

static void
redis_ping_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct store_redis *r = ac->data;

	if (reply == NULL)
		redis_lost(r, ac);
	else if (r->ac == ac)
		r->ping_ms = 0;
}

/* The ready connection's watch (REDIS_WATCH_MS); re-arms its timer. */
static void
redis_watch(struct store_redis *r)
{
	struct timeval	 tv = { REDIS_WATCH_MS / 1000,
	    (REDIS_WATCH_MS % 1000) * 1000 };
	uint64_t	 now = redis_now_ms(r), oldest, limit;

	limit = redis_stall_limit(r->timeout_ms);
	oldest = redis_oldest_sent(r);
	if ((r->ping_ms != 0 && now >= r->ping_ms + limit) ||
	    (oldest != UINT64_MAX && now >= oldest + limit)) {
		redis_drop(r, "not answering");
		return;
	}
	if (r->ping_ms == 0 && r->ac != NULL) {
		if (redisAsyncCommand(r->ac, redis_ping_cb, NULL, "PING") !=
		    REDIS_OK) {
			redis_drop(r, "cannot send");
			return;
		}
		r->ping_ms = now;
	}
	evtimer_add(r->timer, &tv);
}

/* --- the command, formatted in RESP by hand ----------------------------- */

static void
cmd_put(struct store_redis *r, const void *p, size_t n)
{
	size_t		 cap;
	char		*nc;

	if (r->cmdfail)
		return;
	if (r->cmdlen + n > r->cmdcap) {
		for (cap = r->cmdcap ? r->cmdcap : 4096; cap < r->cmdlen + n;)
			cap *= 2;
		if ((nc = realloc(r->cmd, cap)) == NULL) {
			r->cmdfail = true;
			return;
		}
		r->cmd = nc;
		r->cmdcap = cap;
	}
	memcpy(r->cmd + r->cmdlen, p, n);
	r->cmdlen += n;
}

/* V in decimal at the end of BUF[24]; returns the first digit. */
static char *
cmd_u64(uint64_t v, char buf[24])
{
	char		*p = buf + 24;

	do
		*--p = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	return p;
}

/* A RESP header: C ('*' or '$') and N. */
static void
cmd_head(struct store_redis *r, char c, uint64_t n)
{
	char		 buf[24 + 3], *p;

	p = cmd_u64(n, buf);
	*--p = c;
	buf[24] = '\r';
	buf[25] = '\n';
	cmd_put(r, p, (size_t)(buf + 26 - p));
}

static void
cmd_arg(struct store_redis *r, const char *s, size_t n)
{
	cmd_head(r, '$', n);
	cmd_put(r, s, n);
	cmd_put(r, "\r\n", 2);
}

static void
cmd_num(struct store_redis *r, uint64_t v)
{
	char		 buf[24], *p = cmd_u64(v, buf);

	cmd_arg(r, p, (size_t)(buf + 24 - p));
}

static void
cmd_int(struct store_redis *r, int64_t v)
{
	char		 buf[24], *p;

	p = cmd_u64(v < 0 ? (uint64_t)-(v + 1) + 1 : (uint64_t)v, buf);
	if (v < 0)
		*--p = '-';
	cmd_arg(r, p, (size_t)(buf + 24 - p));
}

/* "<prefix>:{<tenant>}:<name>" */
static void
cmd_key(struct store_redis *r, const char *tenant, size_t tl,
    const char *name)
{
	size_t		 nl = strlen(name);

	cmd_head(r, '$', r->prefixlen + tl + nl + 4);
	cmd_put(r, r->prefix, r->prefixlen);
	cmd_put(r, ":{", 2);
	cmd_put(r, tenant, tl);
	cmd_put(r, "}:", 2);
	cmd_put(r, name, nl);
	cmd_put(r, "\r\n", 2);
}

/*
 * EVALSHA (EVAL when EVAL) of script S with TENANT's keys (NKEYS; the
 * fourth is this writer's record, for a slice's ask).
 */
static void
cmd_script(struct store_redis *r, int s, int eval, int argc,
    const char *tenant, size_t tl, int nkeys)
{
	const char	*names[] = { "leases", "s", "gone", r->wkey };
	int		 i;

	r->cmdlen = 0;
	r->cmdfail = false;
	cmd_head(r, '*', (uint64_t)(argc + 3 + nkeys));
	if (eval) {
		cmd_arg(r, "EVAL", 4);
		cmd_arg(r, redis_scripts[s], strlen(redis_scripts[s]));
	} else {
		cmd_arg(r, "EVALSHA", 7);
		cmd_arg(r, r->sha[s], 40);
	}
	cmd_num(r, (uint64_t)nkeys);
	for (i = 0; i < nkeys; i++)
		cmd_key(r, tenant, tl, names[i]);
}

/* --- batches ------------------------------------------------------------ */

static size_t
redis_hash(const char *s, size_t *len)
{
	const char	*p = s;
	size_t		 h = 5381;

	while (*p != '\0')
		h = h * 33 + (unsigned char)*p++;
	*len = (size_t)(p - s);
	return h;
}

static void	 redis_batch_cb(redisAsyncContext *, void *, void *);

/*
 * The settlements' token deltas, summed per second: *NG groups, and per
 * settlement its group (1..), 0 for a release (the script reads its second
 * back from the lease) or -1 when it changes no tokens. -1: no memory.
 */
static int
redis_batch_groups(struct store_redis *r, const struct redis_batch *b,
    size_t *ng)
{
	const struct ig_lease *l;
	void		*p;
	size_t		 i, k;

	if (b->nsettles > r->capgroups) {
		if ((p = reallocarray(r->groups, b->nsettles,
		    sizeof(*r->groups))) == NULL)
			return -1;
		r->groups = p;
		if ((p = reallocarray(r->sgroup, b->nsettles,
		    sizeof(*r->sgroup))) == NULL)
			return -1;
		r->sgroup = p;
		r->capgroups = b->nsettles;
	}
	*ng = 0;
	for (i = 0; i < b->nsettles; i++) {
		l = b->settles[i];
		if (l->release) {
			r->sgroup[i] = 0;
			continue;
		}
		if (l->actual == IG_USAGE_UNKNOWN || l->actual == l->reserved) {
			r->sgroup[i] = -1;
			continue;
		}
		for (k = 0; k < *ng && r->groups[k].sec != l->sec; k++)
			;
		if (k == *ng) {
			r->groups[k].sec = l->sec;
			r->groups[k].delta = 0;
			(*ng)++;
		}
		r->groups[k].delta += (int64_t)l->actual - (int64_t)l->reserved;
		r->sgroup[i] = (int)k + 1;
	}
	return 0;
}

static int64_t
redis_delta(const struct ig_lease *l)
{
	if (l->actual == IG_USAGE_UNKNOWN)
		return 0;
	return (int64_t)l->actual - (int64_t)l->reserved;
}

/*
 * The slice ask B carries: the one attached to it, or, when B has
 * admissions for Redis, its tenant's slice's if none is out, so that the
 * idle slots of this worker go before those admissions are counted (NULL:
 * none). Built once: a batch written again (NOSCRIPT) sends the same.
 */
static const struct slice_ask *
redis_batch_ask(struct store_redis *r, struct redis_batch *b)
{
	struct store_slice *s = b->slice;
	struct ig_tenant_limits limits;
	bool		 shadow;

	if (r->slices == NULL)
		return NULL;
	if (s == NULL && b->nops > 0 && (s = store_slices_get(r->slices,
	    b->tenant, b->tenantlen, b->hash, false)) != NULL &&
	    !store_slice_can_ask(s))
		s = NULL;
	if (s == NULL)
		return NULL;
	/*
	 * The script caps the grant by the batch's limits: an ask alone
	 * takes its slice's; one beside admissions of other limits (a
	 * reload) waits for a batch of its own.
	 */
	if (!store_slice_limits(s, &limits, &shadow) || (b->has_limits &&
	    (b->shadow != shadow || memcmp(&b->limits, &limits,
	    sizeof(limits)) != 0))) {
		if (b->slice != NULL) {
			b->slice = NULL;
			store_slice_detached(r->slices, s);
			redis_slice_timer_arm(r);
		}
		return NULL;
	}
	if (!b->has_limits) {
		b->has_limits = true;
		b->limits = limits;
		b->shadow = shadow;
	}
	if (!b->eval)
		r->stats->slice_asks++;
	b->slice = s;
	return store_slice_ask(r->slices, s, b->nops > 0, store_slices_now());
}

/* The ask's arguments, at the end of the batch's (BATCH_LUA's layout). */
static void
redis_ask_write(struct store_redis *r, const struct slice_ask *a)
{
	size_t		 i;

	cmd_arg(r, r->wkey + 2, 16);
	cmd_num(r, a->seq);
	cmd_num(r, a->need);
	cmd_num(r, a->want);
	cmd_num(r, a->old_held);
	cmd_num(r, a->want_req);
	cmd_num(r, a->want_tok);
	for (i = 0; i < a->ndeltas; i++) {
		cmd_num(r, a->deltas[i].sec);
		cmd_num(r, ig_policy_day(a->deltas[i].sec * 1000,
		    r->day_offset_s));
		cmd_int(r, a->deltas[i].req);
		cmd_int(r, a->deltas[i].tok);
	}
}

/*
 * Formats B (the argument layout of BATCH_LUA) and hands it to hiredis;
 * -1 if it could not (B untouched).
 */
static int
redis_batch_write(struct store_redis *r, struct redis_batch *b)
{
	const struct ig_tenant_limits *l = &b->limits;
	const struct slice_ask *ask = NULL;
	size_t		 i, ng;
	int		 argc;

	if (r->state != R_READY || r->ac == NULL ||
	    redis_batch_groups(r, b, &ng) == -1)
		return -1;
	argc = REDIS_BATCH_ARGS + 3 * (int)b->nsettles + 2 * (int)b->nops +
	    3 * (int)ng;
	if ((ask = redis_batch_ask(r, b)) != NULL)
		argc += 7 + 4 * (int)ask->ndeltas;
	cmd_script(r, SCRIPT_BATCH, b->eval, argc, b->tenant, b->tenantlen,
	    ask != NULL ? 4 : 3);
	cmd_num(r, r->ttl_ms);
	cmd_num(r, r->day_offset_s);
	cmd_num(r, b->nsettles);
	cmd_num(r, b->nops);
	cmd_num(r, ng);
	cmd_num(r, l->max_concurrent_requests);
	cmd_num(r, l->requests_per_minute);
	cmd_num(r, l->tokens_per_minute);
	cmd_num(r, l->daily_token_budget);
	cmd_arg(r, b->shadow ? "1" : "0", 1);
	for (i = 0; i < b->nsettles; i++)
		cmd_arg(r, b->settles[i]->request_id,
		    strlen(b->settles[i]->request_id));
	for (i = 0; i < b->nops; i++)
		cmd_arg(r, b->ops[i]->req.request_id,
		    strlen(b->ops[i]->req.request_id));
	for (i = 0; i < b->nsettles; i++) {
		if (r->sgroup[i] == -1)
			cmd_arg(r, "-", 1);
		else
			cmd_num(r, (uint64_t)r->sgroup[i]);
		cmd_int(r, redis_delta(b->settles[i]));
	}
	for (i = 0; i < b->nops; i++)
		cmd_num(r, b->ops[i]->req.input_tokens +
		    b->ops[i]->req.output_tokens);
	for (i = 0; i < ng; i++) {
		cmd_num(r, r->groups[i].sec);
		cmd_num(r, ig_policy_day(r->groups[i].sec * 1000,
		    r->day_offset_s));
		cmd_int(r, r->groups[i].delta);
	}
	if (ask != NULL)
		redis_ask_write(r, ask);
	if (r->cmdfail || redisAsyncFormattedCommand(r->ac, redis_batch_cb, b,
	    r->cmd, r->cmdlen) != REDIS_OK)
		return -1;
	r->unwritten = true;
	if (!r->flushing)
		event_active(r->flush, EV_WRITE, 1);
	return 0;
}

static void
redis_enqueue(struct store_redis *r, struct ig_lease *l)
{
	if (r->freeing || r->queued >= REDIS_QUEUE_MAX) {
		if (!r->freeing)
			r->stats->settles_dropped++;
		store_lease_free(l);
		return;
	}
	l->next = NULL;
	if (r->qtail != NULL)
		r->qtail->next = l;
	else
		r->qhead = l;
	r->qtail = l;
	r->queued++;
}

/*
 * B could not be sent, or its reply says nothing usable: its admissions
 * follow on_store_failure (TAKEN -1: they may have run), its settlements
 * and its slice's ask wait for Redis (REQUEUE) or are dropped. Frees B.
 */
static void
redis_batch_fail(struct store_redis *r, struct redis_batch *b, int taken,
    const char *why, bool requeue)
{
	size_t		 i;

	for (i = 0; i < b->nsettles; i++) {
		if (requeue)
			redis_enqueue(r, b->settles[i]);
		else
			store_lease_free(b->settles[i]);
	}
	for (i = 0; i < b->nops; i++)
		store_admit_done(b->ops[i], taken, NULL, why);
	if (b->slice != NULL) {
		if (requeue)
			store_slice_lost(r->slices, b->slice);
		else
			store_slice_failed(r->slices, b->slice,
			    store_slices_now());
		redis_slice_timer_arm(r);
	}
	redis_batch_put(r, b);
}

/* The batch of TENANT (hash H, length LEN) in table T, or NULL. */
static struct redis_batch *
redis_batch_find(struct redis_batch *const *t, size_t h, const char *tenant,
    size_t len)
{
	struct redis_batch *b;

	for (b = t[h % REDIS_PENDING_BUCKETS]; b != NULL; b = b->next)
		if (b->hash == h && b->tenantlen == len &&
		    memcmp(b->tenant, tenant, len) == 0)
			return b;
	return NULL;
}

static void
redis_batch_unlink(struct redis_batch **t, struct redis_batch *b)
{
	struct redis_batch **pp = &t[b->hash % REDIS_PENDING_BUCKETS];

	while (*pp != b)
		pp = &(*pp)->next;
	*pp = b->next;
	b->next = NULL;
}

/* Off the pending table, then out: to hiredis (in flight), or failed. */
static void
redis_batch_send(struct store_redis *r, struct redis_batch *b)
{
	size_t		 i, n;

	redis_batch_unlink(r->pending, b);
	r->npending--;
	/* Ops cancelled (or timed out) before they left need not go. */
	for (i = n = 0; i < b->nops; i++) {
		if (b->ops[i]->state == OP_WAITING)
			b->ops[n++] = b->ops[i];
		else
			store_admit_done(b->ops[i], 0, NULL, "not sent");
	}
	b->nops = n;
	if (b->nops == 0 && b->nsettles == 0 && b->slice == NULL)
		redis_batch_put(r, b);
	else if (redis_batch_write(r, b) == -1)
		redis_batch_fail(r, b, 0, "redis send failed", true);
	else {
		b->next = r->inflight[b->hash % REDIS_PENDING_BUCKETS];
		r->inflight[b->hash % REDIS_PENDING_BUCKETS] = b;
		r->ninflight++;
		b->sent_ms = redis_now_ms(r);
	}
}

/* B holds request id ID (of hash H) already. */
static bool
redis_batch_holds(const struct redis_batch *b, uint64_t h, const char *id)
{
	size_t		 i;

	for (i = 0; i < b->nids; i++)
		if (b->ids[i].hash == h && strcmp(b->ids[i].id, id) == 0)
			return true;
	return false;
}

static uint64_t
redis_id_hash(const char *id)
{
	uint64_t	 h = 14695981039346656037ULL;

	while (*id != '\0')
		h = (h ^ (unsigned char)*id++) * 1099511628211ULL;
	return h;
}

static int
redis_grow(void *pp, size_t *cap, size_t n, size_t size)
{
	void		**p = pp, *np;
	size_t		 ncap = *cap ? *cap * 2 : 16;

	if (n < *cap)
		return 0;
	if ((np = reallocarray(*p, ncap, size)) == NULL)
		return -1;
	*p = np;
	*cap = ncap;
	return 0;
}

/* A new pending batch for TENANT (LEN, hash H); NULL when out of memory. */
static struct redis_batch *
redis_batch_new(struct store_redis *r, const char *tenant, size_t len,
    size_t h)
{
	struct redis_batch *b;
	char		*nt;

	if ((b = r->free_batches) != NULL)
		r->free_batches = b->next;
	else if ((b = calloc(1, sizeof(*b))) == NULL)
		return NULL;
	if (len + 1 > b->tenantcap) {
		if ((nt = realloc(b->tenant, len + 1)) == NULL) {
			redis_batch_put(r, b);
			return NULL;
		}
		b->tenant = nt;
		b->tenantcap = len + 1;
	}
	memcpy(b->tenant, tenant, len);
	b->tenant[len] = '\0';
	b->tenantlen = len;
	b->hash = h;
	b->next = r->pending[h % REDIS_PENDING_BUCKETS];
	r->pending[h % REDIS_PENDING_BUCKETS] = b;
	r->npending++;
	if (r->flushing)
		r->reflush = true;
	else
		event_active(r->flush, EV_WRITE, 1);
	return b;
}

/*
 * TENANT's pending batch, ready to take one more item named ID (hash H),
 * a new one if needed; NULL when out of memory. The script takes a batch's
 * settlements before its admissions, and each request id once: a batch
 * that holds ID already, or (for an admission OP) other limits (a
 * reload), is sent first, so that the order of the requests is kept.
 */
static struct redis_batch *
redis_batch_get(struct store_redis *r, const char *tenant,
    const struct ig_store_op *op, const char *id, uint64_t idh)
{
	struct redis_batch *b;
	size_t		 len, h = redis_hash(tenant, &len);

	b = redis_batch_find(r->pending, h, tenant, len);
	if (b != NULL && (redis_batch_holds(b, idh, id) ||
	    (op != NULL && b->has_limits && (b->shadow != op->req.shadow ||
	    memcmp(&b->limits, &op->req.limits, sizeof(b->limits)) != 0)))) {
		redis_batch_send(r, b);
		b = NULL;
	}
	if (b == NULL && (b = redis_batch_new(r, tenant, len, h)) == NULL)
		return NULL;
	if (redis_grow(&b->ids, &b->capids, b->nids, sizeof(*b->ids)) == -1)
		return NULL;
	return b;
}

/* A batch at its size limit goes at once. */
static void
redis_batch_check(struct store_redis *r, struct redis_batch *b)
{
	if (b->nops + b->nsettles >= REDIS_BATCH_MAX)
		redis_batch_send(r, b);
}

int
store_redis_admit(struct store_redis *r, struct ig_store_op *op)
{
	struct redis_batch *b;
	struct store_slice *sl;
	uint64_t	 h = redis_id_hash(op->req.request_id);

	if ((b = redis_batch_get(r, op->req.tenant, op, op->req.request_id,
	    h)) == NULL || redis_grow(&b->ops, &b->capops, b->nops,
	    sizeof(*b->ops)) == -1)
		return -1;
	if (!b->has_limits) {
		b->has_limits = true;
		b->limits = op->req.limits;
		b->shadow = op->req.shadow;
	}
	b->ids[b->nids].hash = h;
	b->ids[b->nids++].id = op->req.request_id;
	b->ops[b->nops++] = op;
	/* Not from the slice: its demand, and an ask in this batch. */
	if (r->slices != NULL) {
		if ((sl = store_slices_get(r->slices, b->tenant, b->tenantlen,
		    b->hash, true)) != NULL) {
			store_slice_missed(sl, &op->req);
			if (b->slice == NULL && store_slice_can_ask(sl)) {
				store_slice_attached(r->slices, sl);
				b->slice = sl;
			}
			redis_slice_timer_arm(r);
		}
	}
	redis_batch_check(r, b);
	return 0;
}

/* --- slices (store.slices) ---------------------------------------------- */

/* The slice timer runs while there are slices. */
static void
redis_slice_timer_arm(struct store_redis *r)
{
	struct timeval	 tv = { 0, 0 };

	if (r->slices == NULL || !store_slices_busy(r->slices) ||
	    evtimer_pending(r->slice_timer, NULL))
		return;
	tv.tv_sec = (time_t)(r->slice_tick_ms / 1000);
	tv.tv_usec = (suseconds_t)(r->slice_tick_ms % 1000) * 1000;
	evtimer_add(r->slice_timer, &tv);
}

/* Slice S's ask goes in its tenant's next batch (a new one if need be). */
static void
redis_slice_want(struct store_slice *s, void *arg)
{
	struct store_redis *r = arg;
	struct redis_batch *b;
	const char	*tenant;
	size_t		 len;
	uint64_t	 h;

	tenant = store_slice_tenant(s, &len, &h);
	if ((b = redis_batch_find(r->pending, h, tenant, len)) == NULL &&
	    (b = redis_batch_new(r, tenant, len, h)) == NULL) {
		store_slice_lost(r->slices, s);	/* tried again later */
		return;
	}
	if (b->slice == NULL) {
		store_slice_attached(r->slices, s);
		b->slice = s;
	}
}

static void
redis_slice_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_redis *r = arg;

	store_slices_run(r->slices, store_slices_now(), redis_slice_want, r);
	redis_slice_timer_arm(r);
}

int
store_redis_take(struct store_redis *r, struct ig_store_op *op)
{
	struct store_slice *s;
	struct ig_lease	*l;
	uint64_t	 now, sec, reserve;
	size_t		 len, h;

	if (r->slices == NULL)
		return 0;
	h = redis_hash(op->req.tenant, &len);
	if ((s = store_slices_get(r->slices, op->req.tenant, len, h,
	    false)) == NULL)
		return 0;
	now = store_slices_now();
	if (!store_slice_take(r->slices, s, &op->req, now, &op->res, &sec))
		return 0;
	reserve = op->req.input_tokens + op->req.output_tokens;
	if ((l = store_lease_new(op->store, LEASE_SLICE, NULL, NULL,
	    reserve)) == NULL) {
		store_slice_settle(r->slices, s, sec, reserve, 0, now);
		return -1;
	}
	l->slice = s;
	l->sec = sec;
	op->lease = l;
	if (store_slice_should_ask(r->slices, s, now))
		redis_slice_want(s, r);
	return 1;
}

void
store_redis_slice_settle(struct store_redis *r, struct ig_lease *l,
    uint64_t actual)
{
	if (r->slices != NULL && l->slice != NULL) {
		if (store_slice_settle(r->slices, l->slice, l->sec,
		    l->reserved, actual, store_slices_now()))
			redis_slice_want(l->slice, r);
		redis_slice_timer_arm(r);
	}
	store_lease_free(l);
}

void
store_redis_drain(struct store_redis *r)
{
	if (r->slices == NULL)
		return;
	store_slices_drain(r->slices, store_slices_now());
	redis_slice_timer_arm(r);
}

static void
redis_add_settle(struct store_redis *r, struct ig_lease *l)
{
	struct redis_batch *b;
	uint64_t	 h = redis_id_hash(l->request_id);

	if ((b = redis_batch_get(r, l->tenant, NULL, l->request_id,
	    h)) == NULL || redis_grow(&b->settles, &b->capsettles,
	    b->nsettles, sizeof(*b->settles)) == -1) {
		redis_enqueue(r, l);
		return;
	}
	b->ids[b->nids].hash = h;
	b->ids[b->nids++].id = l->request_id;
	b->settles[b->nsettles++] = l;
	redis_batch_check(r, b);
}

void
store_redis_settle(struct store_redis *r, struct ig_lease *l)
{
	struct store_slice *sl;
	size_t		 len, h;

	if (r->slices != NULL && !l->release) {
		h = redis_hash(l->tenant, &len);
		if ((sl = store_slices_get(r->slices, l->tenant, len, h,
		    false)) != NULL)
			store_slice_redis(sl, 0, redis_delta(l), -1);
	}
	if (r->state != R_READY)
		redis_enqueue(r, l);
	else
		redis_add_settle(r, l);
}

/*
 * The end of the loop iteration: the pending batches go, written now.
 * A tenant that has a batch in flight waits for its reply (which activates
 * this again): what arrives meanwhile joins one batch, so a busy Redis
 * gets bigger batches rather than more of them.
 */
static void
redis_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_redis *r = arg;
	struct redis_batch **pp, *b;
	size_t		 i;

	if (r->state != R_READY && r->state != R_DOWN)
		return;		/* connecting: sent when ready */
	r->flushing = true;
	r->reflush = false;
	for (i = 0; i < REDIS_PENDING_BUCKETS && r->npending > 0; i++) {
		pp = &r->pending[i];
		while ((b = *pp) != NULL) {
			if (redis_batch_find(r->inflight, b->hash, b->tenant,
			    b->tenantlen) != NULL)
				pp = &b->next;
			else
				redis_batch_send(r, b);
		}
	}
	r->flushing = false;
	/* Settlements of the answers above may have started new batches. */
	if (r->reflush)
		event_active(r->flush, EV_WRITE, 1);
	/* Now rather than when the loop sees the socket writable. */
	if (r->unwritten && r->ac != NULL) {
		r->unwritten = false;
		redisAsyncHandleWrite(r->ac);
	}
}

static int
redis_noscript(const redisReply *rep)
{
	return rep->type == REDIS_REPLY_ERROR &&
	    strncmp(rep->str, "NOSCRIPT", 8) == 0;
}

/* Element *I of REP as a number (negative: 0); -1 if not an integer. */
static int
redis_num(const redisReply *rep, size_t *i, uint64_t *v)
{
	const redisReply *e;

	if (*i >= rep->elements)
		return -1;
	e = rep->element[(*i)++];
	if (e->type != REDIS_REPLY_INTEGER)
		return -1;
	*v = e->integer < 0 ? 0 : (uint64_t)e->integer;
	return 0;
}

#define REDIS_ASK_REPLY	8	/* the numbers that answer an ask */

/*
 * The reply has the shape B expects: {now} for settlements only, else
 * {now, leases, R, T, day tokens, codes, the five slow numbers of each code
 * from 4 on}, codes a string of one digit per admission; then, with an
 * ask, its REDIS_ASK_REPLY numbers.
 */
static int
redis_batch_valid(const struct redis_batch *b, const redisReply *rep)
{
	const redisReply *codes;
	size_t		 i, k, nslow = 0, n = 1;

	if (rep->type != REDIS_REPLY_ARRAY)
		return -1;
	if (b->nops > 0) {
		if (rep->elements < 6 || (codes = rep->element[5])->type !=
		    REDIS_REPLY_STRING || codes->len != b->nops)
			return -1;
		for (k = 0; k < b->nops; k++) {
			if (codes->str[k] < '0' || codes->str[k] > '7')
				return -1;
			if (codes->str[k] >= '4')
				nslow++;
		}
		n = 6 + 5 * nslow;
	}
	if (b->slice != NULL)
		n += REDIS_ASK_REPLY;
	if (rep->elements != n)
		return -1;
	for (i = 0; i < rep->elements; i++)
		if (i != 5 && rep->element[i]->type != REDIS_REPLY_INTEGER)
			return -1;
	return 0;
}

/* The ask's answer, the last REDIS_ASK_REPLY numbers of a valid reply. */
static void
redis_ask_answer(struct store_redis *r, struct redis_batch *b,
    const redisReply *rep)
{
	struct slice_reply sr;
	size_t		 i = rep->elements - REDIS_ASK_REPLY;

	sr.now_ms = (uint64_t)rep->element[0]->integer;
	redis_num(rep, &i, &sr.sec);
	redis_num(rep, &i, &sr.held);
	redis_num(rep, &i, &sr.req);
	redis_num(rep, &i, &sr.tok);
	redis_num(rep, &i, &sr.others);
	redis_num(rep, &i, &sr.win_requests);
	redis_num(rep, &i, &sr.win_tokens);
	redis_num(rep, &i, &sr.day_tokens);
	store_slice_answered(r->slices, b->slice, &sr, store_slices_now());
	redis_slice_timer_arm(r);
}

/*
 * Hands each admission of B its answer. The script returned the numbers
 * before the first admission; each admission's are those plus what the
 * ones before it took, which is what the script added too.
 */
static void
redis_batch_answer(struct store_redis *r, struct redis_batch *b,
    const redisReply *rep)
{
	struct ig_policy_state st, cur;
	struct store_slice *sl = NULL;
	const char	*codes = rep->element[5]->str;
	uint64_t	 reserve;
	size_t		 i = 1, k;
	int		 code;

	/* Its slice's headers count these, unless its ask's answer does. */
	if (r->slices != NULL && b->slice == NULL)
		sl = store_slices_get(r->slices, b->tenant, b->tenantlen,
		    b->hash, false);
	memset(&cur, 0, sizeof(cur));
	cur.now_ms = (uint64_t)rep->element[0]->integer;
	cur.day_reset_ms = ig_policy_day_reset_ms(cur.now_ms, r->day_offset_s);
	redis_num(rep, &i, &cur.concurrent);
	redis_num(rep, &i, &cur.win_requests);
	redis_num(rep, &i, &cur.win_tokens);
	redis_num(rep, &i, &cur.day_tokens);
	i = 6;
	for (k = 0; k < b->nops; k++) {
		struct ig_store_op *op = b->ops[k];

		st = cur;
		code = codes[k] - '0';
		if (code >= 4) {
			redis_num(rep, &i, &st.lease_free_ms);
			redis_num(rep, &i, &st.req_free_ms);
			redis_num(rep, &i, &st.req_reset_ms);
			redis_num(rep, &i, &st.tok_free_ms);
			redis_num(rep, &i, &st.tok_reset_ms);
			code -= 4;
		}
		reserve = op->req.input_tokens + op->req.output_tokens;
		if (code == 2) {
			/* as if it were not counted: it is counted once */
			st.concurrent = st.concurrent > 0 ? st.concurrent - 1 : 0;
			st.win_requests = st.win_requests > 0 ?
			    st.win_requests - 1 : 0;
		} else if (code == 1) {
			cur.concurrent++;
			cur.win_requests++;
			cur.win_tokens += reserve;
			cur.day_tokens += reserve;
			if (sl != NULL)
				store_slice_redis(sl, 1, (int64_t)reserve, 1);
		}
		store_admit_done(op, code, &st, NULL);
	}
}

static void
redis_batch_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct store_redis *r = ac->data;
	struct redis_batch *b = priv;
	redisReply	*rep = reply;
	size_t		 i;

	if (rep != NULL && redis_noscript(rep) && !b->eval && r->ac == ac) {
		/* SCRIPT FLUSH: the script again, whole (Redis caches it). */
		b->eval = true;
		if (redis_batch_write(r, b) == 0)
			return;
	}
	/* Its tenant's next batch may go now (after this reply's answers). */
	redis_batch_unlink(r->inflight, b);
	r->ninflight--;
	if (redis_batch_find(r->pending, b->hash, b->tenant, b->tenantlen))
		event_active(r->flush, EV_WRITE, 1);
	if (rep == NULL) {
		redis_lost(r, ac);
		redis_batch_fail(r, b, -1, "redis connection lost", true);
		return;
	}
	if (redis_batch_valid(b, rep) == -1) {
		log_error("store: tenant %s: batch script: %s", b->tenant,
		    rep->type == REDIS_REPLY_ERROR ? rep->str :
		    "unexpected reply");
		redis_batch_fail(r, b, 0, "redis error", false);
		return;
	}
	for (i = 0; i < b->nsettles; i++)
		store_lease_free(b->settles[i]);
	b->nsettles = 0;
	if (b->slice != NULL)
		redis_ask_answer(r, b, rep);
	if (b->nops > 0)
		redis_batch_answer(r, b, rep);
	redis_batch_put(r, b);
}

/* --- renewal ------------------------------------------------------------- */

static void
redis_renew_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct store_redis *r = ac->data;
	redisReply	*rep = reply;

	if (rep == NULL)
		redis_lost(r, ac);
	else if (redis_noscript(rep) && r->ac == ac)
		redis_load_scripts(r);	/* SCRIPT FLUSH; the next renew works */
}

void
store_redis_renew(struct store_redis *r, const struct ig_lease *l)
{
	if (r->state != R_READY || r->ac == NULL)
		goto fail;
	cmd_script(r, SCRIPT_RENEW, 0, 2, l->tenant, strlen(l->tenant), 1);
	cmd_arg(r, l->request_id, strlen(l->request_id));
	cmd_num(r, r->ttl_ms);
	if (r->cmdfail || redisAsyncFormattedCommand(r->ac, redis_renew_cb,
	    NULL, r->cmd, r->cmdlen) != REDIS_OK)
		goto fail;
	return;
fail:
	log_debug("store: request %s: lease renewal not sent", l->request_id);
}
