/*
 * The local budget store: the same semantics as the Redis scripts in
 * process memory. One state per process (and one for the Redis fallback),
 * shared by the stores of all worker threads under one mutex: admission is
 * a few hundred nanoseconds of arithmetic, far from a contention problem
 * at gateway request rates. Time is the wall clock (the day is UTC).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_int.h"

#define LOCAL_TENANT_BUCKETS	1024

struct local_lease {
	char		*request_id;
	uint64_t	 expiry_ms;
	uint64_t	 sec;		/* the window bucket it reserved in */
	uint64_t	 day;
	uint64_t	 reserved;
};

struct local_tenant {
	char		*id;
	struct local_lease *leases;
	size_t		 nleases, capleases;
	/* the sliding minute: ring of one-second buckets, slot sec % 61 */
	uint64_t	 bsec[IG_WINDOW_BUCKETS];
	uint64_t	 breq[IG_WINDOW_BUCKETS];
	uint64_t	 btok[IG_WINDOW_BUCKETS];
	uint64_t	 day[2], daytok[2];	/* slot day % 2 */
	struct local_tenant *next;
};

struct store_local {
	pthread_mutex_t	 mu;
	int		 refs;		/* under local_registry_mu */
	struct local_tenant *tenants[LOCAL_TENANT_BUCKETS];
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
local_tenant_free(struct local_tenant *t)
{
	size_t		 i;

	for (i = 0; i < t->nleases; i++)
		free(t->leases[i].request_id);
	free(t->leases);
	free(t->id);
	free(t);
}

/* The last store of the process gone: the state goes with it. */
void
store_local_put(struct store_local *l)
{
	struct local_tenant *t, *next;
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
	pthread_mutex_destroy(&l->mu);
	free(l);
}

static size_t
local_hash(const char *s)
{
	size_t		 h = 5381;

	while (*s != '\0')
		h = h * 33 + (unsigned char)*s++;
	return h % LOCAL_TENANT_BUCKETS;
}

/* The tenant's state, created on first use; NULL when out of memory. */
static struct local_tenant *
local_tenant(struct store_local *l, const char *id, int create)
{
	struct local_tenant *t;
	size_t		 h = local_hash(id);

	for (t = l->tenants[h]; t != NULL; t = t->next)
		if (strcmp(t->id, id) == 0)
			return t;
	if (!create || (t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	if ((t->id = strdup(id)) == NULL) {
		free(t);
		return NULL;
	}
	t->next = l->tenants[h];
	l->tenants[h] = t;
	return t;
}

static void
local_expire(struct local_tenant *t, uint64_t now)
{
	size_t		 i = 0;

	while (i < t->nleases) {
		if (t->leases[i].expiry_ms <= now) {
			free(t->leases[i].request_id);
			t->leases[i] = t->leases[--t->nleases];
		} else
			i++;
	}
}

static struct local_lease *
local_find(struct local_tenant *t, const char *request_id)
{
	size_t		 i;

	for (i = 0; i < t->nleases; i++)
		if (strcmp(t->leases[i].request_id, request_id) == 0)
			return &t->leases[i];
	return NULL;
}

/*
 * Over the sliding window's buckets for second SEC: the sum, the ms until
 * NEED units have left it (the whole window if they never do) and the ms
 * until it is empty. The same loop as the Redis script's.
 */
static uint64_t
local_window(const struct local_tenant *t, const uint64_t *b, uint64_t sec,
    uint64_t now, uint64_t need, uint64_t *free_ms, uint64_t *reset_ms)
{
	uint64_t	 s, acc = 0, v, last = 0;
	bool		 any = false;

	*free_ms = 0;
	for (s = sec - (IG_WINDOW_BUCKETS - 1); s <= sec; s++) {
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
	return acc;
}

static uint64_t
local_need(uint64_t used, uint64_t add, uint64_t limit)
{
	return limit != 0 && used + add > limit ? used + add - limit : 0;
}

static void
local_state(struct local_tenant *t, const struct ig_tenant_limits *l,
    uint64_t reserve, uint64_t now, uint64_t day_off,
    struct ig_policy_state *st)
{
	uint64_t	 sec = now / 1000, day = ig_policy_day(now, day_off);
	uint64_t	 f, r;
	size_t		 i;

	memset(st, 0, sizeof(*st));
	st->now_ms = now;
	st->concurrent = t->nleases;
	for (i = 0; i < t->nleases; i++) {
		f = t->leases[i].expiry_ms - now;
		if (i == 0 || f < st->lease_free_ms)
			st->lease_free_ms = f;
	}
	st->win_requests = local_window(t, t->breq, sec, now, 0, &f, &r);
	local_window(t, t->breq, sec, now,
	    local_need(st->win_requests, 1, l->requests_per_minute),
	    &st->req_free_ms, &st->req_reset_ms);
	st->win_tokens = local_window(t, t->btok, sec, now, 0, &f, &r);
	local_window(t, t->btok, sec, now,
	    local_need(st->win_tokens, reserve, l->tokens_per_minute),
	    &st->tok_free_ms, &st->tok_reset_ms);
	st->day_tokens = t->day[day % 2] == day ? t->daytok[day % 2] : 0;
	st->day_reset_ms = ig_policy_day_reset_ms(now, day_off);
}

static int
local_take(struct local_tenant *t, const struct ig_admit_req *req,
    uint64_t reserve, uint64_t now, uint64_t ttl, uint64_t day_off)
{
	struct local_lease *ls;
	uint64_t	 sec = now / 1000, day = ig_policy_day(now, day_off);
	size_t		 slot = sec % IG_WINDOW_BUCKETS, ncap;
	char		*id;

	if (t->nleases == t->capleases) {
		ncap = t->capleases == 0 ? 8 : t->capleases * 2;
		if ((ls = reallocarray(t->leases, ncap, sizeof(*ls))) == NULL)
			return -1;
		t->leases = ls;
		t->capleases = ncap;
	}
	if ((id = strdup(req->request_id)) == NULL)
		return -1;
	ls = &t->leases[t->nleases++];
	ls->request_id = id;
	ls->expiry_ms = now + ttl;
	ls->sec = sec;
	ls->day = day;
	ls->reserved = reserve;
	if (t->bsec[slot] != sec) {
		t->bsec[slot] = sec;
		t->breq[slot] = t->btok[slot] = 0;
	}
	t->breq[slot]++;
	t->btok[slot] += reserve;
	if (t->day[day % 2] != day) {
		t->day[day % 2] = day;
		t->daytok[day % 2] = 0;
	}
	t->daytok[day % 2] += reserve;
	return 0;
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
    struct ig_admit_result *res)
{
	struct ig_tenant_limits lim = req->limits;
	struct ig_policy_state st;
	struct local_tenant *t;
	struct local_lease *dup;
	uint64_t	 now = local_now_ms();
	uint64_t	 reserve = req->input_tokens + req->output_tokens;
	int		 take;

	lim.max_concurrent_requests = local_div(lim.max_concurrent_requests,
	    divisor);
	lim.requests_per_minute = local_div(lim.requests_per_minute, divisor);
	lim.tokens_per_minute = local_div(lim.tokens_per_minute, divisor);
	lim.daily_token_budget = local_div(lim.daily_token_budget, divisor);
	pthread_mutex_lock(&l->mu);
	if ((t = local_tenant(l, req->tenant, 1)) == NULL)
		goto nomem;
	local_expire(t, now);
	local_state(t, &lim, reserve, now, day_off, &st);
	if ((dup = local_find(t, req->request_id)) != NULL) {
		/* A retried admission: the lease it already holds, renewed. */
		dup->expiry_ms = now + ttl;
		st.concurrent--;
		st.win_requests = st.win_requests > 0 ? st.win_requests - 1 : 0;
		ig_policy_decide(&lim, true, 0, &st, res);
		memset(res, 0, offsetof(struct ig_admit_result, rl));
		res->admitted = true;
		res->status = 200;
		pthread_mutex_unlock(&l->mu);
		return 1;
	}
	take = ig_policy_decide(&lim, req->shadow, reserve, &st, res);
	if (take && local_take(t, req, reserve, now, ttl, day_off) == -1)
		goto nomem;
	pthread_mutex_unlock(&l->mu);
	return take;
nomem:
	pthread_mutex_unlock(&l->mu);
	ig_policy_store_unavailable(res);
	return 0;
}

void
store_local_settle(struct store_local *l, const char *tenant,
    const char *request_id, uint64_t actual)
{
	struct local_tenant *t;
	struct local_lease *ls;
	size_t		 slot;
	int64_t		 delta;

	pthread_mutex_lock(&l->mu);
	if ((t = local_tenant(l, tenant, 0)) == NULL ||
	    (ls = local_find(t, request_id)) == NULL)
		goto done;	/* settled already, or expired: it stands */
	if (actual != IG_USAGE_UNKNOWN) {
		delta = (int64_t)actual - (int64_t)ls->reserved;
		slot = ls->sec % IG_WINDOW_BUCKETS;
		if (t->bsec[slot] == ls->sec)
			t->btok[slot] = (int64_t)t->btok[slot] + delta < 0 ? 0 :
			    (uint64_t)((int64_t)t->btok[slot] + delta);
		if (t->day[ls->day % 2] == ls->day)
			t->daytok[ls->day % 2] =
			    (int64_t)t->daytok[ls->day % 2] + delta < 0 ? 0 :
			    (uint64_t)((int64_t)t->daytok[ls->day % 2] + delta);
	}
	free(ls->request_id);
	*ls = t->leases[--t->nleases];
done:
	pthread_mutex_unlock(&l->mu);
}

void
store_local_renew(struct store_local *l, const char *tenant,
    const char *request_id, uint64_t ttl)
{
	struct local_tenant *t;
	struct local_lease *ls;

	pthread_mutex_lock(&l->mu);
	if ((t = local_tenant(l, tenant, 0)) != NULL &&
	    (ls = local_find(t, request_id)) != NULL)
		ls->expiry_ms = local_now_ms() + ttl;
	pthread_mutex_unlock(&l->mu);
}
