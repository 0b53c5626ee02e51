/*
 * The Redis budget store: hiredis async on the worker's event base.
 *
 * Per tenant T, keys in one hash slot (the tenant is the hash tag):
 *   <prefix>:{T}:leases  zset  request id -> lease expiry (ms, Redis time)
 *   <prefix>:{T}:linfo   hash  request id -> "<second> <day> <reserved>"
 *   <prefix>:{T}:win     hash  r<second> -> requests, t<second> -> tokens
 *                              (the sliding minute, one-second buckets)
 *   <prefix>:{T}:days    hash  <day number> -> tokens reserved or used
 *   <prefix>:{T}:gone    zset  request id -> expiry: released before its
 *                              admission ran (sent on a connection that was
 *                              dropped), so the late admission takes nothing
 *
 * Admission is one EVALSHA of ADMIT_LUA (time from TIME, stale leases
 * expired, every limit checked, and only then the lease and the
 * reservation); settlement one of SETTLE_LUA, which applies at most once
 * per lease (linfo is its ticket). The scripts make the same comparisons
 * as ig_policy_decide(), which then builds the answer from the numbers
 * they return.
 *
 * Connection: connect, AUTH, SELECT, SCRIPT LOAD; ready only when all of
 * that answered. Any lost reply or a setup step that does not answer
 * within REDIS_SETUP_MS drops the connection; reconnection backs off from
 * 50 ms to 500 ms. Settlements made while down wait in a bounded queue.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libevent.h>

#include "infergate/log.h"
#include "store_int.h"

#define REDIS_SETUP_MS		1000
#define REDIS_BACKOFF_MIN_MS	50
#define REDIS_BACKOFF_MAX_MS	500
#define REDIS_TIMEOUTS_TO_DROP	3
#define REDIS_QUEUE_MAX		100000

/*
 * KEYS: leases linfo win days gone. ARGV: request id, reserve, max
 * concurrent, rpm, tpm, daily budget, lease ttl ms, day offset s, shadow.
 * Returns {taken (0, 1, 2: already held, 3: released already), reason, now, concurrent,
 * lease_free, win_requests, req_free, req_reset, win_tokens, tok_free,
 * tok_reset, day_tokens, day_reset}, the numbers before this request.
 */
static const char ADMIT_LUA[] =
"local t = redis.call('TIME')\n"
"local sec = tonumber(t[1])\n"
"local now = sec * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
"local id, reserve = ARGV[1], tonumber(ARGV[2])\n"
"local mcr, rpm = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
"local tpm, daily = tonumber(ARGV[5]), tonumber(ARGV[6])\n"
"local ttl, off, shadow = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9] == '1'\n"
"local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)\n"
"for i = 1, #dead, 1000 do\n"
"  redis.call('HDEL', KEYS[2], unpack(dead, i, math.min(i + 999, #dead)))\n"
"end\n"
"if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end\n"
"redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)\n"
"if redis.call('ZSCORE', KEYS[5], id) then\n"
"  return {3, 0, now, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}\n"
"end\n"
"local lo = sec - 60\n"
"local rq, tk, stale = {}, {}, {}\n"
"local wr, wt = 0, 0\n"
"local win = redis.call('HGETALL', KEYS[3])\n"
"for i = 1, #win, 2 do\n"
"  local f = win[i]\n"
"  local s, v = tonumber(string.sub(f, 2)), tonumber(win[i + 1])\n"
"  if s == nil or s < lo then stale[#stale + 1] = f\n"
"  elseif string.sub(f, 1, 1) == 'r' then rq[s] = v; wr = wr + v\n"
"  else tk[s] = v; wt = wt + v end\n"
"end\n"
"for i = 1, #stale, 1000 do\n"
"  redis.call('HDEL', KEYS[3], unpack(stale, i, math.min(i + 999, #stale)))\n"
"end\n"
"local function window(b, need)\n"
"  local acc, last, free = 0, nil, 0\n"
"  for s = lo, sec do\n"
"    local v = b[s]\n"
"    if v and v > 0 then\n"
"      acc = acc + v; last = s\n"
"      if free == 0 and need > 0 and acc >= need then\n"
"        free = (s + 61) * 1000 - now end\n"
"    end\n"
"  end\n"
"  local reset = 0\n"
"  if last then reset = (last + 61) * 1000 - now end\n"
"  if need > 0 and free == 0 then free = reset end\n"
"  return free, reset\n"
"end\n"
"local rneed, tneed = 0, 0\n"
"if rpm > 0 and wr + 1 > rpm then rneed = wr + 1 - rpm end\n"
"if tpm > 0 and wt + reserve > tpm then tneed = wt + reserve - tpm end\n"
"local rfree, rreset = window(rq, rneed)\n"
"local tfree, treset = window(tk, tneed)\n"
"local day = math.floor((sec - off) / 86400)\n"
"local dayf = string.format('%d', day)\n"
"local dt = tonumber(redis.call('HGET', KEYS[4], dayf) or '0')\n"
"local dreset = ((day + 1) * 86400 + off) * 1000 - now\n"
"local conc = redis.call('ZCARD', KEYS[1])\n"
"local lfree = 0\n"
"if conc > 0 then\n"
"  local e = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
"  lfree = tonumber(e[2]) - now\n"
"end\n"
"local function out(taken, reason)\n"
"  return {taken, reason, now, conc, lfree, wr, rfree, rreset, wt, tfree,\n"
"    treset, dt, dreset}\n"
"end\n"
"if redis.call('ZSCORE', KEYS[1], id) then\n"
"  redis.call('ZADD', KEYS[1], now + ttl, id)\n"
"  conc = conc - 1\n"
"  if wr > 0 then wr = wr - 1 end\n"
"  return out(2, 0)\n"
"end\n"
"local reason = 0\n"
"if mcr > 0 and conc >= mcr then reason = 3\n"
"elseif rpm > 0 and wr + 1 > rpm then reason = 4\n"
"elseif tpm > 0 and wt + reserve > tpm then reason = 5\n"
"elseif daily > 0 and dt + reserve > daily then reason = 6 end\n"
"if reason ~= 0 and not shadow then return out(0, reason) end\n"
"local secf = string.format('%d', sec)\n"
"redis.call('ZADD', KEYS[1], now + ttl, id)\n"
"redis.call('HSET', KEYS[2], id, secf .. ' ' .. dayf .. ' ' .. ARGV[2])\n"
"redis.call('HINCRBY', KEYS[3], 'r' .. secf, 1)\n"
"if reserve > 0 then redis.call('HINCRBY', KEYS[3], 't' .. secf, ARGV[2]) end\n"
"redis.call('HINCRBY', KEYS[4], dayf, ARGV[2])\n"
"redis.call('HDEL', KEYS[4], string.format('%d', day - 2))\n"
"redis.call('PEXPIRE', KEYS[1], ttl + 60000)\n"
"redis.call('PEXPIRE', KEYS[2], ttl + 60000)\n"
"redis.call('PEXPIRE', KEYS[3], 62000)\n"
"redis.call('PEXPIRE', KEYS[4], 3 * 86400000)\n"
"return out(1, reason)\n";

/*
 * KEYS: leases linfo win days gone. ARGV: request id, actual tokens (-1:
 * unknown, the reservation stands), release (1: the admission's reply was
 * lost; if it has not run yet, it must take nothing when it does), lease
 * ttl ms. Returns 1 if it settled a lease.
 */
static const char SETTLE_LUA[] =
"local info = redis.call('HGET', KEYS[2], ARGV[1])\n"
"redis.call('ZREM', KEYS[1], ARGV[1])\n"
"if not info then\n"
"  if ARGV[3] == '1' then\n"
"    local t = redis.call('TIME')\n"
"    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
"    redis.call('ZADD', KEYS[5], now + tonumber(ARGV[4]), ARGV[1])\n"
"    redis.call('PEXPIRE', KEYS[5], tonumber(ARGV[4]) + 60000)\n"
"  end\n"
"  return 0\n"
"end\n"
"redis.call('HDEL', KEYS[2], ARGV[1])\n"
"local actual = tonumber(ARGV[2])\n"
"if actual < 0 then return 1 end\n"
"local sec, day, res = string.match(info, '(%d+) (%d+) (%d+)')\n"
"local delta = actual - tonumber(res)\n"
"if delta == 0 then return 1 end\n"
"local f = 't' .. sec\n"
"if redis.call('HEXISTS', KEYS[3], f) == 1 then\n"
"  if redis.call('HINCRBY', KEYS[3], f, delta) <= 0 then\n"
"    redis.call('HDEL', KEYS[3], f) end\n"
"end\n"
"if redis.call('HEXISTS', KEYS[4], day) == 1 then\n"
"  if redis.call('HINCRBY', KEYS[4], day, delta) < 0 then\n"
"    redis.call('HSET', KEYS[4], day, 0) end\n"
"end\n"
"return 1\n";

/* KEYS: leases linfo. ARGV: request id, ttl ms. */
static const char RENEW_LUA[] =
"local t = redis.call('TIME')\n"
"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
"local ttl = tonumber(ARGV[2])\n"
"if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end\n"
"redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[1])\n"
"redis.call('PEXPIRE', KEYS[1], ttl + 60000)\n"
"redis.call('PEXPIRE', KEYS[2], ttl + 60000)\n"
"return 1\n";

enum { SCRIPT_ADMIT, SCRIPT_SETTLE, SCRIPT_RENEW, NSCRIPTS };

static const char *const redis_scripts[NSCRIPTS] = {
	ADMIT_LUA, SETTLE_LUA, RENEW_LUA
};

enum redis_state { R_DOWN, R_CONNECTING, R_LOADING, R_READY };

struct store_redis {
	struct event_base *base;
	struct ig_store_stats *stats;
	char		*host;		/* NULL with a unix socket */
	int		 port;
	char		*path;
	char		*password;	/* NULL: no AUTH */
	uint64_t	 database;
	char		*prefix;
	uint64_t	 ttl_ms;
	uint64_t	 day_offset_s;
	redisAsyncContext *ac;
	enum redis_state state;
	char		 sha[NSCRIPTS][41];
	struct event	*timer;		/* reconnect, and the setup deadline */
	uint64_t	 backoff_ms;
	unsigned	 timeouts;	/* in a row */
	struct ig_lease	*qhead, *qtail;	/* settlements waiting */
	size_t		 queued;
	bool		 freeing;
	bool		 was_ready;	/* for the log */
};

static void	 redis_connect(struct store_redis *);
static int	 redis_send_settle(struct store_redis *, struct ig_lease *, int);

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

static void
redis_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_redis *r = arg;

	if (r->state == R_DOWN)
		redis_connect(r);
	else if (r->state != R_READY)
		redis_drop(r, "no answer to connection setup");
}

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
		if (redis_send_settle(r, l, 0) == -1) {
			store_lease_free(l);
			r->stats->settles_dropped++;
		}
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
		r->timeouts = 0;
		r->stats->reconnects++;
		evtimer_del(r->timer);
		log_info("store: redis %s: connected",
		    r->host != NULL ? r->host : r->path);
		r->was_ready = true;
		redis_flush_queue(r);
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
		r->state = R_DOWN;
		redis_schedule(r);
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
		r->state = R_DOWN;
		redis_schedule(r);
		return;
	}
	ac->data = r;
	if (redisLibeventAttach(ac, r->base) != REDIS_OK) {
		redisAsyncFree(ac);
		r->state = R_DOWN;
		redis_schedule(r);
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
	    (r->timer = evtimer_new(base, redis_timer_cb, r)) == NULL)
		goto nomem;
	redis_connect(r);
	return r;
nomem:
	*err = strdup("out of memory");
fail:
	store_redis_free(r);
	return NULL;
}

void
store_redis_free(struct store_redis *r)
{
	struct ig_lease	*l;

	if (r == NULL)
		return;
	r->freeing = true;
	redis_drop(r, "shutting down");
	while ((l = r->qhead) != NULL) {
		r->qhead = l->next;
		store_lease_free(l);
	}
	if (r->timer != NULL)
		event_free(r->timer);
	if (r->password != NULL)
		explicit_bzero(r->password, strlen(r->password));
	free(r->password);
	free(r->host);
	free(r->path);
	free(r->prefix);
	free(r);
}

int
store_redis_ready(const struct store_redis *r)
{
	return r->state == R_READY;
}

void
store_redis_timeout(struct store_redis *r)
{
	/* A Redis that stopped answering keeps its TCP connection open. */
	if (++r->timeouts >= REDIS_TIMEOUTS_TO_DROP && r->state == R_READY)
		redis_drop(r, "not answering");
}

#define REDIS_NKEYS	5

/* The keys of TENANT, "<prefix>:{<tenant>}:<name>", in BUF. */
struct redis_keys {
	char		*k[REDIS_NKEYS];
	size_t		 len[REDIS_NKEYS];
	char		*buf;
};

static int
redis_keys(const struct store_redis *r, const char *tenant,
    struct redis_keys *k)
{
	static const char *const names[REDIS_NKEYS] = { "leases", "linfo",
	    "win", "days", "gone" };
	size_t		 one = strlen(r->prefix) + strlen(tenant) + 16;
	int		 i, n;

	if ((k->buf = malloc(one * REDIS_NKEYS)) == NULL)
		return -1;
	for (i = 0; i < REDIS_NKEYS; i++) {
		k->k[i] = k->buf + one * (size_t)i;
		n = snprintf(k->k[i], one, "%s:{%s}:%s", r->prefix, tenant,
		    names[i]);
		k->len[i] = (size_t)n;
	}
	return 0;
}

static void	 redis_admit_cb(redisAsyncContext *, void *, void *);

/*
 * EVALSHA (or EVAL with the script, after NOSCRIPT) of script S with the
 * tenant's keys and NARGS arguments.
 */
static int
redis_eval(struct store_redis *r, int s, int eval, const char *tenant,
    const char **args, int nargs, redisCallbackFn *fn, void *priv)
{
	const char	*argv[32];
	size_t		 argl[32];
	struct redis_keys k;
	int		 i, argc = 0, rc;

	if (nargs > 12 || r->state != R_READY || r->ac == NULL ||
	    redis_keys(r, tenant, &k) == -1)
		return -1;
	argv[argc++] = eval ? "EVAL" : "EVALSHA";
	argv[argc++] = eval ? redis_scripts[s] : r->sha[s];
	argv[argc++] = "5";
	for (i = 0; i < REDIS_NKEYS; i++) {
		argl[argc] = k.len[i];
		argv[argc++] = k.k[i];
	}
	for (i = 0; i < nargs; i++)
		argv[argc++] = args[i];
	for (i = 0; i < argc; i++)
		if (i < 3 || i >= 3 + REDIS_NKEYS)
			argl[i] = strlen(argv[i]);
	rc = redisAsyncCommandArgv(r->ac, fn, priv, argc, argv, argl);
	free(k.buf);
	return rc == REDIS_OK ? 0 : -1;
}

static int
redis_send_admit(struct store_redis *r, struct ig_store_op *op, int eval)
{
	const struct ig_admit_req *q = &op->req;
	const struct ig_tenant_limits *l = &q->limits;
	char		 v[7][24];
	const char	*args[9];
	int		 i;

	snprintf(v[0], sizeof(v[0]), "%llu",
	    (unsigned long long)(q->input_tokens + q->output_tokens));
	snprintf(v[1], sizeof(v[1]), "%llu",
	    (unsigned long long)l->max_concurrent_requests);
	snprintf(v[2], sizeof(v[2]), "%llu",
	    (unsigned long long)l->requests_per_minute);
	snprintf(v[3], sizeof(v[3]), "%llu",
	    (unsigned long long)l->tokens_per_minute);
	snprintf(v[4], sizeof(v[4]), "%llu",
	    (unsigned long long)l->daily_token_budget);
	snprintf(v[5], sizeof(v[5]), "%llu", (unsigned long long)r->ttl_ms);
	snprintf(v[6], sizeof(v[6]), "%llu",
	    (unsigned long long)r->day_offset_s);
	args[0] = q->request_id;
	for (i = 0; i < 7; i++)
		args[i + 1] = v[i];
	args[8] = q->shadow ? "1" : "0";
	return redis_eval(r, SCRIPT_ADMIT, eval, q->tenant, args, 9,
	    redis_admit_cb, op);
}

int
store_redis_admit(struct store_redis *r, struct ig_store_op *op)
{
	return redis_send_admit(r, op, 0);
}

static int
redis_noscript(const redisReply *rep)
{
	return rep->type == REDIS_REPLY_ERROR &&
	    strncmp(rep->str, "NOSCRIPT", 8) == 0;
}

static void
redis_admit_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct store_redis *r = ac->data;
	struct ig_store_op *op = priv;
	struct ig_policy_state st;
	redisReply	*rep = reply;
	uint64_t	 v[13];
	size_t		 i;

	if (rep == NULL) {
		redis_lost(r, ac);
		store_admit_done(op, -1, NULL, "redis connection lost");
		return;
	}
	if (redis_noscript(rep) && op->state != OP_ORPHAN &&
	    redis_send_admit(r, op, 1) == 0)
		return;
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 13) {
		log_error("store: request %s: admission script: %s",
		    op->req.request_id, rep->type == REDIS_REPLY_ERROR ?
		    rep->str : "unexpected reply");
		store_admit_done(op, 0, NULL, "redis error");
		return;
	}
	for (i = 0; i < 13; i++) {
		if (rep->element[i]->type != REDIS_REPLY_INTEGER) {
			store_admit_done(op, 0, NULL, "redis error");
			return;
		}
		v[i] = rep->element[i]->integer < 0 ? 0 :
		    (uint64_t)rep->element[i]->integer;
	}
	r->timeouts = 0;
	memset(&st, 0, sizeof(st));
	st.now_ms = v[2];
	st.concurrent = v[3];
	st.lease_free_ms = v[4];
	st.win_requests = v[5];
	st.req_free_ms = v[6];
	st.req_reset_ms = v[7];
	st.win_tokens = v[8];
	st.tok_free_ms = v[9];
	st.tok_reset_ms = v[10];
	st.day_tokens = v[11];
	st.day_reset_ms = v[12];
	store_admit_done(op, (int)v[0], &st, NULL);
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

static void
redis_settle_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct store_redis *r = ac->data;
	struct ig_lease	*l = priv;
	redisReply	*rep = reply;

	if (rep == NULL) {
		redis_lost(r, ac);
		redis_enqueue(r, l);	/* sent again when Redis is back */
		return;
	}
	if (redis_noscript(rep) && redis_send_settle(r, l, 1) == 0)
		return;
	if (rep->type == REDIS_REPLY_ERROR)
		log_error("store: request %s: settlement script: %s",
		    l->request_id, rep->str);
	store_lease_free(l);
}

static int
redis_send_settle(struct store_redis *r, struct ig_lease *l, int eval)
{
	char		 actual[24], ttl[24];
	const char	*args[4];

	snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)r->ttl_ms);
	if (l->actual == IG_USAGE_UNKNOWN)
		snprintf(actual, sizeof(actual), "-1");
	else
		snprintf(actual, sizeof(actual), "%llu",
		    (unsigned long long)l->actual);
	args[0] = l->request_id;
	args[1] = actual;
	args[2] = l->release ? "1" : "0";
	args[3] = ttl;
	return redis_eval(r, SCRIPT_SETTLE, eval, l->tenant, args, 4,
	    redis_settle_cb, l);
}

void
store_redis_settle(struct store_redis *r, struct ig_lease *l)
{
	if (r->state != R_READY || redis_send_settle(r, l, 0) == -1)
		redis_enqueue(r, l);
}

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
	char		 ttl[24];
	const char	*args[2];

	snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)r->ttl_ms);
	args[0] = l->request_id;
	args[1] = ttl;
	if (redis_eval(r, SCRIPT_RENEW, 0, l->tenant, args, 2, redis_renew_cb,
	    NULL) == -1)
		log_debug("store: request %s: lease renewal not sent",
		    l->request_id);
}
