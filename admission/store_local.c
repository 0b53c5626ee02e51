/*
 * The local budget store: the same semantics as the Redis script in
 * process memory. One state per process (and one for the Redis fallback),
 * shared by the stores of all worker threads under one mutex. Time is the
 * wall clock (the day is UTC).
 *
 * The common admission and settlement are O(1) and allocate nothing once
 * the process is warm:
 *   - a tenant is found by a hash of its id; its leases are a list in
 *     expiry order (expired ones leave from the head, the earliest expiry
 *     is the head's) and a process-wide table by request id (for a retried
 *     admission);
 *   - the caller's lease holds a handle (slot, generation) on its local
 *     lease, so settling and renewing search nothing; a slot that expired
 *     and was reused has another generation, and the handle does nothing;
 *   - the sliding minute keeps running sums of its 61 one-second buckets;
 *     buckets leave the sums as their second leaves the window. The scans
 *     (how long until a request fits, until the window is empty) run only
 *     when an answer needs them: a refusal, a reservation of 0 tokens, a
 *     retried admission;
 *   - freed lease slots go to a freelist, request ids up to
 *     LOCAL_ID_INLINE bytes live in the slot.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_int.h"

#define LOCAL_TENANT_BUCKETS	1024
#define LOCAL_ID_INLINE		64
#define LOCAL_NO_SEC		UINT64_MAX

struct local_tenant;

struct local_lease {
	struct local_tenant *t;		/* NULL while on the freelist */
	uint64_t	 gen;		/* bumped whenever the slot is freed */
	uint64_t	 expiry_ms;
	uint64_t	 sec;		/* the window bucket it reserved in */
	uint64_t	 day;
	uint64_t	 reserved;
	size_t		 hash;		/* of (tenant, request id) */
	struct local_lease *eprev, *enext;	/* the tenant's, by expiry */
	struct local_lease *hnext;	/* the id table's chain; the freelist */
	char		*id;		/* idbuf, or malloc'd when longer */
	char		 idbuf[LOCAL_ID_INLINE];
};

struct local_tenant {
	char		*id;
	struct local_lease *ehead, *etail;	/* live leases, by expiry */
	uint64_t	 nleases;
	/* the sliding minute: ring of one-second buckets, slot sec % 61 */
	uint64_t	 bsec[IG_WINDOW_BUCKETS];
	uint64_t	 breq[IG_WINDOW_BUCKETS];
	uint64_t	 btok[IG_WINDOW_BUCKETS];
	uint64_t	 hi;		/* newest second; the window is hi-60..hi */
	uint64_t	 wreq, wtok;	/* sums of the buckets in the window */
	uint64_t	 day[2], daytok[2];	/* slot day % 2 */
	struct local_tenant *next;
};

struct store_local {
	pthread_mutex_t	 mu;
	int		 refs;		/* under local_registry_mu */
	struct local_tenant *tenants[LOCAL_TENANT_BUCKETS];
	struct local_lease **ids;	/* every live lease by (tenant, id) */
	size_t		 nids, capids;	/* capids: a power of two */
	struct local_lease *freelist;
};

static pthread_mutex_t local_registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct store_local *local_registry[2];

static uint64_t
local_now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct store_local *
store_local_get(int which)
{
	struct store_local *l;

	pthread_mutex_lock(&local_registry_mu);
	if ((l = local_registry[which]) == NULL) {
		if ((l = calloc(1, sizeof(*l))) == NULL)
			goto done;
		pthread_mutex_init(&l->mu, NULL);
		local_registry[which] = l;
	}
	l->refs++;
done:
	pthread_mutex_unlock(&local_registry_mu);
	return l;
}

static void
local_lease_free(struct local_lease *ls)
{
	if (ls->id != ls->idbuf)
		free(ls->id);
	free(ls);
}

static void
local_tenant_free(struct local_tenant *t)
{
	struct local_lease *ls, *next;

	for (ls = t->ehead; ls != NULL; ls = next) {
		next = ls->enext;
		local_lease_free(ls);
	}
	free(t->id);
	free(t);
}

/* The last store of the process gone: the state goes with it. */
void
store_local_put(struct store_local *l)
{
	struct local_tenant *t, *next;
	struct local_lease *ls;
	size_t		 i;
	int		 last;

	if (l == NULL)
		return;
	pthread_mutex_lock(&local_registry_mu);
	if ((last = --l->refs == 0)) {
		for (i = 0; i < 2; i++)
			if (local_registry[i] == l)
				local_registry[i] = NULL;
	}
	pthread_mutex_unlock(&local_registry_mu);
	if (!last)
		return;
	for (i = 0; i < LOCAL_TENANT_BUCKETS; i++) {
		for (t = l->tenants[i]; t != NULL; t = next) {
			next = t->next;
			local_tenant_free(t);
		}
	}
	while ((ls = l->freelist) != NULL) {
		l->freelist = ls->hnext;
		local_lease_free(ls);
	}
	free(l->ids);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

static size_t
local_hash(const char *s, size_t h)
{
	while (*s != '\0')
		h = h * 33 + (unsigned char)*s++;
	return h;
}

/* The tenant's state, created on first use; NULL when out of memory. */
static struct local_tenant *
local_tenant(struct store_local *l, const char *id)
{
	struct local_tenant *t;
	size_t		 h = local_hash(id, 5381) % LOCAL_TENANT_BUCKETS;
	size_t		 i;

	for (t = l->tenants[h]; t != NULL; t = t->next)
		if (strcmp(t->id, id) == 0)
			return t;
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	if ((t->id = strdup(id)) == NULL) {
		free(t);
		return NULL;
	}
	for (i = 0; i < IG_WINDOW_BUCKETS; i++)
		t->bsec[i] = LOCAL_NO_SEC;
	t->next = l->tenants[h];
	l->tenants[h] = t;
	return t;
}

static size_t
local_id_hash(const struct local_tenant *t, const char *id)
{
	return local_hash(id, (size_t)(uintptr_t)t * 31 + 5381);
}

static struct local_lease *
local_id_find(const struct store_local *l, const struct local_tenant *t,
    const char *id, size_t hash)
{
	struct local_lease *ls;

	if (l->capids == 0)
		return NULL;
	for (ls = l->ids[hash & (l->capids - 1)]; ls != NULL; ls = ls->hnext)
		if (ls->hash == hash && ls->t == t && strcmp(ls->id, id) == 0)
			return ls;
	return NULL;
}

/* Doubles the id table when it is full; -1 when out of memory. */
static int
local_id_grow(struct store_local *l)
{
	struct local_lease **ids, *ls, *next;
	size_t		 cap = l->capids == 0 ? 256 : l->capids * 2, i;

	if (l->nids < l->capids)
		return 0;
	if ((ids = calloc(cap, sizeof(*ids))) == NULL)
		return -1;
	for (i = 0; i < l->capids; i++) {
		for (ls = l->ids[i]; ls != NULL; ls = next) {
			next = ls->hnext;
			ls->hnext = ids[ls->hash & (cap - 1)];
			ids[ls->hash & (cap - 1)] = ls;
		}
	}
	free(l->ids);
	l->ids = ids;
	l->capids = cap;
	return 0;
}

static void
local_id_remove(struct store_local *l, struct local_lease *ls)
{
	struct local_lease **pp = &l->ids[ls->hash & (l->capids - 1)];

	while (*pp != ls)
		pp = &(*pp)->hnext;
	*pp = ls->hnext;
	l->nids--;
}

static void
local_unlink(struct local_tenant *t, struct local_lease *ls)
{
	if (ls->eprev != NULL)
		ls->eprev->enext = ls->enext;
	else
		t->ehead = ls->enext;
	if (ls->enext != NULL)
		ls->enext->eprev = ls->eprev;
	else
		t->etail = ls->eprev;
	ls->eprev = ls->enext = NULL;
}

/* Into the tenant's expiry order; from the tail, where new leases go. */
static void
local_link(struct local_tenant *t, struct local_lease *ls)
{
	struct local_lease *p = t->etail;

	while (p != NULL && p->expiry_ms > ls->expiry_ms)
		p = p->eprev;
	ls->eprev = p;
	ls->enext = p != NULL ? p->enext : t->ehead;
	if (ls->enext != NULL)
		ls->enext->eprev = ls;
	else
		t->etail = ls;
	if (p != NULL)
		p->enext = ls;
	else
		t->ehead = ls;
}

/* Gives the slot of a live lease back: its handles stop working. */
static void
local_release(struct store_local *l, struct local_lease *ls)
{
	struct local_tenant *t = ls->t;

	local_unlink(t, ls);
	local_id_remove(l, ls);
	t->nleases--;
	if (ls->id != ls->idbuf)
		free(ls->id);
	ls->id = NULL;
	ls->t = NULL;
	ls->gen++;
	ls->hnext = l->freelist;
	l->freelist = ls;
}

static void
local_expire(struct store_local *l, struct local_tenant *t, uint64_t now)
{
	while (t->ehead != NULL && t->ehead->expiry_ms <= now)
		local_release(l, t->ehead);
}

/*
 * Moves the window to second SEC: buckets older than SEC-60 leave the
 * sums. Each bucket leaves once, so this is O(1) per second on average.
 */
static void
local_advance(struct local_tenant *t, uint64_t sec)
{
	uint64_t	 s, from;
	size_t		 slot;

	if (sec <= t->hi)
		return;
	if (sec - t->hi >= IG_WINDOW_BUCKETS) {
		t->wreq = t->wtok = 0;
		for (slot = 0; slot < IG_WINDOW_BUCKETS; slot++)
			t->bsec[slot] = LOCAL_NO_SEC;
	} else {
		from = t->hi >= IG_WINDOW_BUCKETS - 1 ?
		    t->hi - (IG_WINDOW_BUCKETS - 1) : 0;
		for (s = from; s + (IG_WINDOW_BUCKETS - 1) < sec; s++) {
			slot = s % IG_WINDOW_BUCKETS;
			if (t->bsec[slot] != s)
				continue;
			t->wreq -= t->breq[slot];
			t->wtok -= t->btok[slot];
			t->bsec[slot] = LOCAL_NO_SEC;
		}
	}
	t->hi = sec;
}

/*
 * Over the window's buckets (hi-60 .. hi): the ms until NEED units have
 * left it (the whole window if they never do) and the ms until it is
 * empty. The same loop as the Redis script's.
 */
static void
local_window(const struct local_tenant *t, const uint64_t *b, uint64_t now,
    uint64_t need, uint64_t *free_ms, uint64_t *reset_ms)
{
	uint64_t	 s, acc = 0, v, last = 0, lo;
	bool		 any = false;

	lo = t->hi >= IG_WINDOW_BUCKETS - 1 ? t->hi - (IG_WINDOW_BUCKETS - 1) :
	    0;
	*free_ms = 0;
	for (s = lo; s <= t->hi; s++) {
		size_t	 slot = s % IG_WINDOW_BUCKETS;

		if (t->bsec[slot] != s || (v = b[slot]) == 0)
			continue;
		acc += v;
		last = s;
		any = true;
		if (*free_ms == 0 && need > 0 && acc >= need)
			*free_ms = (s + IG_WINDOW_BUCKETS) * 1000 - now;
	}
	*reset_ms = any ? (last + IG_WINDOW_BUCKETS) * 1000 - now : 0;
	if (need > 0 && *free_ms == 0)
		*free_ms = *reset_ms;
}

static uint64_t
local_need(uint64_t used, uint64_t add, uint64_t limit)
{
	return limit != 0 && used + add > limit ? used + add - limit : 0;
}

/* The numbers every answer needs: O(1). */
static void
local_state(const struct local_tenant *t, uint64_t now, uint64_t day,
    uint64_t day_off, struct ig_policy_state *st)
{
	memset(st, 0, sizeof(*st));
	st->now_ms = now;
	st->concurrent = t->nleases;
	if (t->ehead != NULL)
		st->lease_free_ms = t->ehead->expiry_ms - now;
	st->win_requests = t->wreq;
	st->win_tokens = t->wtok;
	st->day_tokens = t->day[day % 2] == day ? t->daytok[day % 2] : 0;
	st->day_reset_ms = ig_policy_day_reset_ms(now, day_off);
}

/* The numbers only a refusal (or a 0-token answer) needs: the scans. */
static void
local_state_slow(const struct local_tenant *t,
    const struct ig_tenant_limits *l, uint64_t reserve,
    struct ig_policy_state *st)
{
	local_window(t, t->breq, st->now_ms,
	    local_need(st->win_requests, 1, l->requests_per_minute),
	    &st->req_free_ms, &st->req_reset_ms);
	local_window(t, t->btok, st->now_ms,
	    local_need(st->win_tokens, reserve, l->tokens_per_minute),
	    &st->tok_free_ms, &st->tok_reset_ms);
}

/* ig_policy_decide's comparisons: does some limit refuse? */
static bool
local_refuses(const struct ig_tenant_limits *l, uint64_t reserve,
    const struct ig_policy_state *st)
{
	return (l->max_concurrent_requests != 0 &&
	    st->concurrent >= l->max_concurrent_requests) ||
	    (l->requests_per_minute != 0 &&
	    st->win_requests + 1 > l->requests_per_minute) ||
	    (l->tokens_per_minute != 0 &&
	    st->win_tokens + reserve > l->tokens_per_minute) ||
	    (l->daily_token_budget != 0 &&
	    st->day_tokens + reserve > l->daily_token_budget);
}

/* A slot for a new lease of T named ID: NULL when out of memory. */
static struct local_lease *
local_lease_new(struct store_local *l, struct local_tenant *t,
    const char *id, size_t hash)
{
	struct local_lease *ls;
	size_t		 len = strlen(id);

	if (local_id_grow(l) == -1)
		return NULL;
	if ((ls = l->freelist) != NULL)
		l->freelist = ls->hnext;
	else if ((ls = calloc(1, sizeof(*ls))) == NULL)
		return NULL;
	if (len < sizeof(ls->idbuf))
		ls->id = memcpy(ls->idbuf, id, len + 1);
	else if ((ls->id = strdup(id)) == NULL) {
		ls->hnext = l->freelist;
		l->freelist = ls;
		return NULL;
	}
	ls->t = t;
	ls->hash = hash;
	ls->hnext = l->ids[hash & (l->capids - 1)];
	l->ids[hash & (l->capids - 1)] = ls;
	l->nids++;
	t->nleases++;
	return ls;
}

static void
local_take(struct local_tenant *t, struct local_lease *ls, uint64_t reserve,
    uint64_t now, uint64_t ttl, uint64_t day)
{
	uint64_t	 sec = t->hi;
	size_t		 slot = sec % IG_WINDOW_BUCKETS;

	ls->expiry_ms = now + ttl;
	ls->sec = sec;
	ls->day = day;
	ls->reserved = reserve;
	local_link(t, ls);
	if (t->bsec[slot] != sec) {
		t->bsec[slot] = sec;
		t->breq[slot] = t->btok[slot] = 0;
	}
	t->breq[slot]++;
	t->btok[slot] += reserve;
	t->wreq++;
	t->wtok += reserve;
	if (t->day[day % 2] != day) {
		t->day[day % 2] = day;
		t->daytok[day % 2] = 0;
	}
	t->daytok[day % 2] += reserve;
}

static uint64_t
local_div(uint64_t limit, uint64_t divisor)
{
	if (limit == 0 || divisor <= 1)
		return limit;
	return limit / divisor > 0 ? limit / divisor : 1;
}

int
store_local_admit(struct store_local *l, const struct ig_admit_req *req,
    uint64_t divisor, uint64_t ttl, uint64_t day_off,
    struct ig_admit_result *res, struct local_handle *h)
{
	struct ig_tenant_limits lim = req->limits;
	struct ig_policy_state st;
	struct local_tenant *t;
	struct local_lease *ls;
	uint64_t	 now = local_now_ms(), day;
	uint64_t	 reserve = req->input_tokens + req->output_tokens;
	size_t		 hash;
	int		 take;

	if (divisor > 1) {
		lim.max_concurrent_requests =
		    local_div(lim.max_concurrent_requests, divisor);
		lim.requests_per_minute = local_div(lim.requests_per_minute,
		    divisor);
		lim.tokens_per_minute = local_div(lim.tokens_per_minute,
		    divisor);
		lim.daily_token_budget = local_div(lim.daily_token_budget,
		    divisor);
	}
	pthread_mutex_lock(&l->mu);
	if ((t = local_tenant(l, req->tenant)) == NULL)
		goto nomem;
	/* The window's time never goes back, even when the clock does. */
	local_advance(t, now / 1000);
	if (now < t->hi * 1000)
		now = t->hi * 1000;
	day = ig_policy_day(now, day_off);
	local_expire(l, t, now);
	local_state(t, now, day, day_off, &st);
	hash = local_id_hash(t, req->request_id);
	if ((ls = local_id_find(l, t, req->request_id, hash)) != NULL) {
		/* A retried admission: the lease it already holds, renewed. */
		local_unlink(t, ls);
		ls->expiry_ms = now + ttl;
		local_link(t, ls);
		st.concurrent--;
		st.win_requests = st.win_requests > 0 ? st.win_requests - 1 : 0;
		local_state_slow(t, &lim, 0, &st);
		ig_policy_decide(&lim, true, 0, &st, res);
		memset(res, 0, offsetof(struct ig_admit_result, rl));
		res->admitted = true;
		res->status = 200;
		h->ll = ls;
		h->gen = ls->gen;
		pthread_mutex_unlock(&l->mu);
		return 2;
	}
	/* The scans only when the answer will show what they find. */
	if (local_refuses(&lim, reserve, &st) && !req->shadow)
		local_state_slow(t, &lim, reserve, &st);
	else if (reserve == 0)
		local_state_slow(t, &lim, reserve, &st);
	take = ig_policy_decide(&lim, req->shadow, reserve, &st, res);
	if (take) {
		if ((ls = local_lease_new(l, t, req->request_id, hash)) == NULL)
			goto nomem;
		local_take(t, ls, reserve, now, ttl, day);
		h->ll = ls;
		h->gen = ls->gen;
	}
	pthread_mutex_unlock(&l->mu);
	return take;
nomem:
	pthread_mutex_unlock(&l->mu);
	ig_policy_store_unavailable(res);
	return 0;
}

/* The live lease of H, or NULL (settled already, or expired). */
static struct local_lease *
local_handle_lease(const struct local_handle *h)
{
	return h->ll != NULL && h->ll->gen == h->gen && h->ll->t != NULL ?
	    h->ll : NULL;
}

static uint64_t
local_add(uint64_t v, int64_t delta)
{
	return (int64_t)v + delta < 0 ? 0 : (uint64_t)((int64_t)v + delta);
}

void
store_local_settle(struct store_local *l, const struct local_handle *h,
    uint64_t actual)
{
	struct local_tenant *t;
	struct local_lease *ls;
	size_t		 slot;
	uint64_t	 nv;
	int64_t		 delta;

	pthread_mutex_lock(&l->mu);
	if ((ls = local_handle_lease(h)) == NULL)
		goto done;	/* settled already, or expired: it stands */
	t = ls->t;
	if (actual != IG_USAGE_UNKNOWN && actual != ls->reserved) {
		delta = (int64_t)actual - (int64_t)ls->reserved;
		slot = ls->sec % IG_WINDOW_BUCKETS;
		if (t->bsec[slot] == ls->sec) {
			/* still in the window: the sum follows the bucket */
			nv = local_add(t->btok[slot], delta);
			t->wtok = t->wtok - t->btok[slot] + nv;
			t->btok[slot] = nv;
		}
		if (t->day[ls->day % 2] == ls->day)
			t->daytok[ls->day % 2] =
			    local_add(t->daytok[ls->day % 2], delta);
	}
	local_release(l, ls);
done:
	pthread_mutex_unlock(&l->mu);
}

void
store_local_renew(struct store_local *l, const struct local_handle *h,
    uint64_t ttl)
{
	struct local_lease *ls;

	pthread_mutex_lock(&l->mu);
	if ((ls = local_handle_lease(h)) != NULL) {
		local_unlink(ls->t, ls);
		ls->expiry_ms = local_now_ms() + ttl;
		local_link(ls->t, ls);
	}
	pthread_mutex_unlock(&l->mu);
}
