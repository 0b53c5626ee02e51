/*
 * store.slices: the slices' bookkeeping, without I/O (store_int.h says
 * what a slice is; store_redis.c carries the asks in the tenants' batches
 * and hands the answers back here).
 *
 * Per tenant a worker serves, one slice:
 *   held, inflight   slots Redis holds for this worker (members
 *                    "<writer>:1".."<writer>:held" of the tenant's leases)
 *                    and the leases taken from them, live;
 *   grants           up to SLICE_GRANTS grants of requests and tokens,
 *                    each charged to the tenant's window and day in its
 *                    second; a grant is used for one period, then what is
 *                    left of it is given back;
 *   deltas           what the next ask reports: the grants given back
 *                    and the token deltas (actual - reserved) of the
 *                    leases that ended, per grant second;
 *   demand           admissions, tokens and the most in flight since the
 *                    last ask, which size the next one.
 *
 * An ask is in flight at most once per slice (the tenant's batches go one
 * at a time). While one is out, only the slots it keeps (its NEED) may be
 * taken: an ask that shrinks the slots may already have run.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "infergate/admission.h"
#include "store_int.h"

#define SLICES_BUCKETS_MIN	64
#define SLICE_TRIES		3	/* error replies before an ask is dropped */
#define SLICE_WANT_MAX		(UINT64_C(1) << 40)

struct slice_grant {
	uint64_t	 sec;		/* charged in this second (Redis's) */
	uint64_t	 expires;	/* store_slices_now() */
	uint64_t	 req, tok;	/* left */
	uint64_t	 req0, tok0;	/* granted */
};

enum slice_state {
	SLICE_IDLE,		/* no ask out */
	SLICE_WANTED,		/* in its tenant's next batch */
	SLICE_SENT		/* ask in flight */
};

struct store_slice {
	struct store_slice *next;	/* hash chain */
	TAILQ_ENTRY(store_slice) entry;	/* the due list, while IDLE */
	bool		 on_due;
	uint64_t	 due;
	uint64_t	 hash;
	char		*tenant;
	size_t		 len;
	bool		 has_limits;
	struct ig_tenant_limits limits;
	bool		 shadow;
	uint64_t	 held;		/* slots, as of the last answer */
	uint64_t	 inflight;	/* leases from the slice, live */
	uint64_t	 peak;		/* most in flight since the last ask */
	uint64_t	 misses;	/* admissions that found no free slot */
	struct slice_grant grants[SLICE_GRANTS];	/* oldest first */
	size_t		 ngrants;
	struct slice_delta deltas[SLICE_DELTAS];
	size_t		 ndeltas;
	uint64_t	 deltas_since;	/* the oldest waiting delta */
	/* The tenant's numbers at the last answer, for the headers. */
	uint64_t	 redis_ms, at;
	uint64_t	 others, win_requests, win_tokens, day_tokens;
	uint64_t	 used_req, used_tok;	/* taken since */
	/*
	 * What this worker did to the tenant's numbers that the last answer
	 * does not hold: admissions through Redis, token deltas and leases
	 * ended. PREV was recorded before the ask out was written (its
	 * answer holds it), CUR after.
	 */
	struct slice_acc {
		int64_t		 req, tok, conc;
	}		 acc_prev, acc_cur;
	uint64_t	 dem_req, dem_tok, dem_since;	/* since the last ask */
	uint64_t	 asked;		/* when the last ask was built */
	uint64_t	 renewed;	/* when the slots were renewed */
	uint64_t	 not_before;	/* after a failed ask */
	enum slice_state state;
	bool		 resend;	/* the ask was lost: it goes again */
	bool		 uncertain;	/* an ask out, or lost: NEED bounds */
	bool		 tight;		/* got fewer slots than it wanted */
	unsigned	 tries;		/* error replies to the ask out */
	struct slice_ask ask;
};

struct store_slices {
	struct store_slice **buckets;
	size_t		 nbuckets, n;
	TAILQ_HEAD(store_slice_due_head, store_slice) due;	/* by due time */
	uint64_t	 period, ttl, day_offset_s;
	uint64_t	 seq;		/* asks of this writer, all tenants */
	bool		 draining;
};

uint64_t
store_slices_now(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct store_slices *
store_slices_new(uint64_t period_ms, uint64_t ttl_ms, uint64_t day_offset_s)
{
	struct store_slices *ss;

	if ((ss = calloc(1, sizeof(*ss))) == NULL ||
	    (ss->buckets = calloc(SLICES_BUCKETS_MIN,
	    sizeof(*ss->buckets))) == NULL) {
		free(ss);
		return NULL;
	}
	ss->nbuckets = SLICES_BUCKETS_MIN;
	TAILQ_INIT(&ss->due);
	ss->period = period_ms != 0 ? period_ms : 1000;
	ss->ttl = ttl_ms;
	ss->day_offset_s = day_offset_s;
	return ss;
}

static void
slice_unlink_due(struct store_slices *ss, struct store_slice *s)
{
	if (s->on_due)
		TAILQ_REMOVE(&ss->due, s, entry);
	s->on_due = false;
}

/* Off the table and the due list, and freed. */
static void
slice_free(struct store_slices *ss, struct store_slice *s)
{
	struct store_slice **pp = &ss->buckets[s->hash & (ss->nbuckets - 1)];

	while (*pp != s)
		pp = &(*pp)->next;
	*pp = s->next;
	slice_unlink_due(ss, s);
	ss->n--;
	free(s->tenant);
	free(s);
}

void
store_slices_free(struct store_slices *ss)
{
	struct store_slice *s, *next;
	size_t		 i;

	if (ss == NULL)
		return;
	for (i = 0; i < ss->nbuckets; i++)
		for (s = ss->buckets[i]; s != NULL; s = next) {
			next = s->next;
			free(s->tenant);
			free(s);
		}
	free(ss->buckets);
	free(ss);
}

/* Twice the buckets (the chains stay short); as it was when out of memory. */
static void
slices_grow(struct store_slices *ss)
{
	struct store_slice **nb, *s, *next;
	size_t		 i, n = ss->nbuckets * 2;

	if ((nb = calloc(n, sizeof(*nb))) == NULL)
		return;
	for (i = 0; i < ss->nbuckets; i++)
		for (s = ss->buckets[i]; s != NULL; s = next) {
			next = s->next;
			s->next = nb[s->hash & (n - 1)];
			nb[s->hash & (n - 1)] = s;
		}
	free(ss->buckets);
	ss->buckets = nb;
	ss->nbuckets = n;
}

struct store_slice *
store_slices_get(struct store_slices *ss, const char *tenant, size_t len,
    uint64_t hash, bool create)
{
	struct store_slice *s;

	for (s = ss->buckets[hash & (ss->nbuckets - 1)]; s != NULL;
	    s = s->next)
		if (s->hash == hash && s->len == len &&
		    memcmp(s->tenant, tenant, len) == 0)
			return s;
	if (!create)
		return NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL ||
	    (s->tenant = strndup(tenant, len)) == NULL) {
		free(s);
		return NULL;
	}
	s->hash = hash;
	s->len = len;
	s->dem_since = s->asked = store_slices_now();
	if (ss->n >= ss->nbuckets * 2)
		slices_grow(ss);
	s->next = ss->buckets[hash & (ss->nbuckets - 1)];
	ss->buckets[hash & (ss->nbuckets - 1)] = s;
	ss->n++;
	return s;
}

const char *
store_slice_tenant(const struct store_slice *s, size_t *len, uint64_t *hash)
{
	*len = s->len;
	*hash = s->hash;
	return s->tenant;
}

static uint64_t
slice_sub(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

static uint64_t
slice_min(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t
slice_add(uint64_t base, int64_t a, int64_t b)
{
	int64_t		 v = (int64_t)base + a + b;

	return v > 0 ? (uint64_t)v : 0;
}

/*
 * REQ requests and TOK tokens for second SEC, into the next ask. When
 * all the entries are taken (only while asks cannot go: Redis away), it
 * goes into the oldest of its day at or before SEC: into a bucket that
 * may have left the window (then only the day takes it), never into a
 * newer one it would wrongly lower. With none, it is dropped: what was
 * given back stays counted, the safe side.
 */
static void
slice_delta(const struct store_slices *ss, struct store_slice *s,
    uint64_t sec, int64_t req, int64_t tok, uint64_t now)
{
	struct slice_delta *d = NULL;
	uint64_t	 day = ig_policy_day(sec * 1000, ss->day_offset_s);
	size_t		 i;

	if (req == 0 && tok == 0)
		return;
	for (i = 0; i < s->ndeltas && d == NULL; i++)
		if (s->deltas[i].sec == sec)
			d = &s->deltas[i];
	if (d == NULL && s->ndeltas < SLICE_DELTAS) {
		d = &s->deltas[s->ndeltas++];
		d->sec = sec;
		d->req = d->tok = 0;
	}
	for (i = 0; i < s->ndeltas && d == NULL; i++)
		if (s->deltas[i].sec <= sec && ig_policy_day(s->deltas[i].sec *
		    1000, ss->day_offset_s) == day)
			d = &s->deltas[i];
	if (d == NULL)
		return;
	if (s->ndeltas == 1 && d->req == 0 && d->tok == 0)
		s->deltas_since = now;
	d->req += req;
	d->tok += tok;
}

/* Grant I is given back: what is left of it goes into the next ask. */
static void
slice_give_back(const struct store_slices *ss, struct store_slice *s,
    size_t i, uint64_t now)
{
	struct slice_grant *g = &s->grants[i];

	slice_delta(ss, s, g->sec, -(int64_t)g->req, -(int64_t)g->tok, now);
	memmove(g, g + 1, (s->ngrants - i - 1) * sizeof(*g));
	s->ngrants--;
}

/* Grants past their period (all of them when draining) are given back. */
static void
slice_expire(struct store_slices *ss, struct store_slice *s, uint64_t now)
{
	size_t		 i = 0;

	while (i < s->ngrants) {
		if (ss->draining || s->grants[i].expires <= now)
			slice_give_back(ss, s, i, now);
		else
			i++;
	}
}

/* Nothing held, nothing to report, nothing out: the slice can go. */
static bool
slice_empty(const struct store_slice *s)
{
	return s->state == SLICE_IDLE && !s->resend && s->held == 0 &&
	    s->inflight == 0 && s->ngrants == 0 && s->ndeltas == 0;
}

/*
 * When S next has something to do: a grant to give back, deltas a
 * period old, slots to renew (a third of lease_ttl) or idle ones a
 * period after the last ask; now when draining or empty.
 */
static uint64_t
slice_due(const struct store_slices *ss, const struct store_slice *s,
    uint64_t now)
{
	uint64_t	 due = UINT64_MAX;
	size_t		 i;

	if (slice_empty(s) || (ss->draining && (s->ngrants > 0 ||
	    s->ndeltas > 0 || s->held > s->inflight)))
		return now;
	for (i = 0; i < s->ngrants; i++)
		due = slice_min(due, s->grants[i].expires);
	if (s->ndeltas > 0)
		due = slice_min(due, s->deltas_since + ss->period);
	if (s->held > 0)
		due = slice_min(due, s->renewed + ss->ttl / 3);
	if (s->held > s->inflight)
		due = slice_min(due, s->asked + ss->period);
	if (s->resend)
		due = slice_min(due, now);
	return due > s->not_before ? due : s->not_before;
}

/* S on the due list in order (most go near its end), while IDLE. */
static void
slice_schedule(struct store_slices *ss, struct store_slice *s, uint64_t now)
{
	struct store_slice *p;

	slice_unlink_due(ss, s);
	if (s->state != SLICE_IDLE)
		return;
	s->due = slice_due(ss, s, now);
	for (p = TAILQ_LAST(&ss->due, store_slice_due_head); p != NULL &&
	    p->due > s->due; p = TAILQ_PREV(p, store_slice_due_head, entry))
		;
	if (p == NULL)
		TAILQ_INSERT_HEAD(&ss->due, s, entry);
	else
		TAILQ_INSERT_AFTER(&ss->due, p, s, entry);
	s->on_due = true;
}

/* Limits that changed (a reload): what was granted under the old ones goes. */
static void
slice_limits(struct store_slices *ss, struct store_slice *s,
    const struct ig_admit_req *req, uint64_t now)
{
	s->has_limits = true;
	s->limits = req->limits;
	s->shadow = req->shadow;
	while (s->ngrants > 0)
		slice_give_back(ss, s, 0, now);
	slice_schedule(ss, s, now);
}

int
store_slice_take(struct store_slices *ss, struct store_slice *s,
    const struct ig_admit_req *req, uint64_t now,
    struct ig_admit_result *res, uint64_t *sec)
{
	struct ig_policy_state st;
	struct slice_grant *g = NULL;
	uint64_t	 reserve = req->input_tokens + req->output_tokens;
	uint64_t	 usable = s->held;
	size_t		 i;

	if (!s->has_limits || s->shadow != req->shadow ||
	    memcmp(&s->limits, &req->limits, sizeof(s->limits)) != 0) {
		slice_limits(ss, s, req, now);
		return 0;
	}
	if (s->uncertain)
		usable = slice_min(usable, s->ask.need);
	if (s->limits.max_concurrent_requests != 0 && s->inflight >= usable) {
		s->misses++;
		return 0;
	}
	for (i = 0; i < s->ngrants && g == NULL; i++)
		if (s->grants[i].expires > now && s->grants[i].req >= 1 &&
		    s->grants[i].tok >= reserve)
			g = &s->grants[i];
	if (g == NULL)
		return 0;
	/*
	 * The numbers as the tenant's would be had this request gone to
	 * Redis: as of the last answer (less what this worker held unused
	 * then), plus what was taken since and what this worker did that
	 * the answer does not hold. Within the grants by construction, so
	 * the policy admits; if it does not, Redis decides.
	 */
	memset(&st, 0, sizeof(st));
	st.now_ms = s->redis_ms + (now - s->at);
	st.concurrent = slice_add(s->others + s->inflight, s->acc_prev.conc,
	    s->acc_cur.conc);
	st.win_requests = slice_add(s->win_requests + s->used_req,
	    s->acc_prev.req, s->acc_cur.req);
	st.win_tokens = slice_add(s->win_tokens + s->used_tok,
	    s->acc_prev.tok, s->acc_cur.tok);
	st.day_tokens = slice_add(s->day_tokens + s->used_tok,
	    s->acc_prev.tok, s->acc_cur.tok);
	st.day_reset_ms = ig_policy_day_reset_ms(st.now_ms, ss->day_offset_s);
	if (ig_policy_decide(&s->limits, s->shadow, reserve, &st, res) != 1 ||
	    !res->admitted)
		return 0;
	g->req--;
	g->tok -= reserve;
	s->inflight++;
	if (s->inflight > s->peak)
		s->peak = s->inflight;
	s->used_req++;
	s->used_tok += reserve;
	s->dem_req++;
	s->dem_tok += reserve;
	*sec = g->sec;
	return 1;
}

void
store_slice_redis(struct store_slice *s, int64_t req, int64_t tok,
    int64_t conc)
{
	s->acc_cur.req += req;
	s->acc_cur.tok += tok;
	s->acc_cur.conc += conc;
}

void
store_slice_missed(struct store_slice *s, const struct ig_admit_req *req)
{
	if (!s->has_limits) {	/* a new slice: its first ask's limits */
		s->has_limits = true;
		s->limits = req->limits;
		s->shadow = req->shadow;
	}
	s->dem_req++;
	s->dem_tok += req->input_tokens + req->output_tokens;
}

bool
store_slice_can_ask(const struct store_slice *s)
{
	return s->state == SLICE_IDLE;
}

/*
 * Nothing out, and the newest grant half used or half through its
 * period (or no grant at all): the next one should be on its way before
 * this one runs out.
 */
bool
store_slice_should_ask(const struct store_slices *ss,
    const struct store_slice *s, uint64_t now)
{
	const struct slice_grant *g;

	if (s->state != SLICE_IDLE || now < s->not_before)
		return false;
	if (s->resend || s->ngrants == 0)
		return true;
	if (s->ngrants == SLICE_GRANTS)
		return false;
	g = &s->grants[s->ngrants - 1];
	return g->req * 2 < g->req0 || g->tok * 2 < g->tok0 ||
	    g->expires < now + ss->period / 2;
}

void
store_slice_attached(struct store_slices *ss, struct store_slice *s)
{
	slice_unlink_due(ss, s);
	s->state = SLICE_WANTED;
}

/* How much of a rate of N per WINDOW ms a period holds (0 for none). */
static uint64_t
slice_want(uint64_t n, uint64_t period, uint64_t window)
{
	n = slice_min(n, SLICE_WANT_MAX);
	return n == 0 ? 0 : slice_min(n * period / window + 1, SLICE_WANT_MAX);
}

const struct slice_ask *
store_slice_ask(struct store_slices *ss, struct store_slice *s, bool shrink,
    uint64_t now)
{
	struct slice_ask *a = &s->ask;
	uint64_t	 demand, window;
	bool		 idle = s->dem_req == 0 || ss->draining;

	if (s->state == SLICE_SENT)
		return a;	/* the same batch written again (NOSCRIPT) */
	slice_unlink_due(ss, s);
	s->state = SLICE_SENT;
	s->uncertain = true;
	/* What was recorded up to now is in this ask's answer. */
	s->acc_prev.req += s->acc_cur.req;
	s->acc_prev.tok += s->acc_cur.tok;
	s->acc_prev.conc += s->acc_cur.conc;
	memset(&s->acc_cur, 0, sizeof(s->acc_cur));
	if (s->resend) {
		s->resend = false;
		return a;
	}
	slice_expire(ss, s, now);
	/*
	 * Admissions going to Redis in the same batch must not find this
	 * worker's unused grants counted: they go back first (the script
	 * applies them before the admissions) and the ask grants anew.
	 */
	while (shrink && s->ngrants > 0)
		slice_give_back(ss, s, 0, now);
	memset(a, 0, offsetof(struct slice_ask, deltas));
	a->seq = ++ss->seq;
	a->old_held = s->held;
	if (s->limits.max_concurrent_requests != 0) {
		a->need = shrink || idle || s->tight ? s->inflight : s->held;
		demand = (s->peak > s->inflight ? s->peak : s->inflight) +
		    s->misses;
		a->want = idle ? a->need : demand + (demand / 4 > 2 ?
		    demand / 4 : 2);
		if (a->want < a->need)
			a->want = a->need;
	}
	window = now - s->dem_since;
	if (window < ss->period / 4)
		window = ss->period / 4;
	if (window == 0)
		window = 1;
	if (!ss->draining) {
		a->want_req = slice_want(s->dem_req, ss->period, window);
		a->want_tok = slice_want(s->dem_tok, ss->period, window);
	}
	memcpy(a->deltas, s->deltas, s->ndeltas * sizeof(*s->deltas));
	a->ndeltas = s->ndeltas;
	s->ndeltas = 0;
	s->dem_req = s->dem_tok = s->misses = 0;
	s->dem_since = s->asked = now;
	s->peak = s->inflight;
	return a;
}

void
store_slice_answered(struct store_slices *ss, struct store_slice *s,
    const struct slice_reply *rep, uint64_t now)
{
	struct slice_grant *g;
	uint64_t	 unused_req = 0, unused_tok = 0, age, left;
	size_t		 i;

	s->state = SLICE_IDLE;
	s->uncertain = false;
	s->tries = 0;
	s->tight = rep->held < s->ask.want;
	s->held = rep->held;
	s->renewed = now;
	for (i = 0; i < s->ngrants; i++) {
		unused_req += s->grants[i].req;
		unused_tok += s->grants[i].tok;
	}
	s->redis_ms = rep->now_ms;
	s->at = now;
	s->others = rep->others;
	s->win_requests = slice_sub(rep->win_requests, unused_req);
	s->win_tokens = slice_sub(rep->win_tokens, unused_tok);
	s->day_tokens = slice_sub(rep->day_tokens, unused_tok);
	s->used_req = s->used_tok = 0;
	memset(&s->acc_prev, 0, sizeof(s->acc_prev));
	if (rep->req > 0 || rep->tok > 0) {
		/*
		 * A grant read back from an ask that ran in an earlier second
		 * (the reply was lost) is that much older.
		 */
		age = slice_sub(rep->now_ms / 1000, rep->sec) * 1000;
		/* Its tokens are its day's: not used in the next one. */
		left = slice_sub((ig_policy_day(rep->sec * 1000,
		    ss->day_offset_s) + 1) * 86400000 + ss->day_offset_s *
		    1000, rep->now_ms);
		if (s->ngrants == SLICE_GRANTS)
			slice_give_back(ss, s, 0, now);
		g = &s->grants[s->ngrants++];
		g->sec = rep->sec;
		g->expires = now + slice_min(slice_sub(ss->period, age), left);
		g->req = g->req0 = rep->req;
		g->tok = g->tok0 = rep->tok;
		if (g->expires <= now || ss->draining)
			slice_give_back(ss, s, s->ngrants - 1, now);
	}
	slice_schedule(ss, s, now);
}

void
store_slice_lost(struct store_slices *ss, struct store_slice *s)
{
	uint64_t	 now = store_slices_now();

	if (s->state == SLICE_SENT)
		s->resend = true;	/* it may have run: the same again */
	else
		s->not_before = now + ss->period;	/* never left */
	s->state = SLICE_IDLE;
	slice_schedule(ss, s, now);
}

void
store_slice_failed(struct store_slices *ss, struct store_slice *s,
    uint64_t now)
{
	/*
	 * Most error replies (BUSY, LOADING, READONLY, OOM at the first
	 * write) mean the script did not run: the same ask goes again, its
	 * record keeps it from running twice. Three in a row, it is dropped
	 * with what it reported (given back grants stay counted).
	 */
	if (s->state == SLICE_SENT && ++s->tries < SLICE_TRIES) {
		s->resend = true;
	} else {
		s->resend = false;
		s->uncertain = false;
		s->tries = 0;
	}
	s->state = SLICE_IDLE;
	s->not_before = now + ss->period;
	slice_schedule(ss, s, now);
}

bool
store_slice_limits(const struct store_slice *s,
    struct ig_tenant_limits *limits, bool *shadow)
{
	*limits = s->limits;
	*shadow = s->shadow;
	return s->has_limits;
}

void
store_slice_detached(struct store_slices *ss, struct store_slice *s)
{
	s->state = SLICE_IDLE;
	slice_schedule(ss, s, store_slices_now());
}

bool
store_slice_settle(struct store_slices *ss, struct store_slice *s,
    uint64_t sec, uint64_t reserved, uint64_t actual, uint64_t now)
{
	if (s->inflight > 0)
		s->inflight--;
	if (actual != IG_USAGE_UNKNOWN) {
		slice_delta(ss, s, sec, 0, (int64_t)actual - (int64_t)reserved,
		    now);
		s->acc_cur.tok += (int64_t)actual - (int64_t)reserved;
	}
	if (s->state == SLICE_IDLE)
		slice_schedule(ss, s, now);
	/* At the limit, a freed slot is of use to the other workers now. */
	return s->tight && s->state == SLICE_IDLE && s->held > s->inflight &&
	    now >= s->not_before;
}

uint64_t
store_slices_run(struct store_slices *ss, uint64_t now,
    void (*fn)(struct store_slice *, void *), void *arg)
{
	struct store_slice *s;

	while ((s = TAILQ_FIRST(&ss->due)) != NULL && s->due <= now) {
		slice_unlink_due(ss, s);
		slice_expire(ss, s, now);
		if (slice_empty(s))
			slice_free(ss, s);
		else
			fn(s, arg);	/* attaches it, or schedules it again */
	}
	return s != NULL ? s->due : UINT64_MAX;
}

void
store_slices_lost(struct store_slices *ss,
    void (*fn)(struct store_slice *, void *), void *arg)
{
	struct store_slice *s;
	size_t		 i;

	for (i = 0; i < ss->nbuckets; i++)
		for (s = ss->buckets[i]; s != NULL; s = s->next)
			if (s->resend && s->state == SLICE_IDLE)
				fn(s, arg);
}

void
store_slices_drain(struct store_slices *ss, uint64_t now)
{
	struct store_slice *s;
	size_t		 i;

	ss->draining = true;
	for (i = 0; i < ss->nbuckets; i++)
		for (s = ss->buckets[i]; s != NULL; s = s->next) {
			slice_expire(ss, s, now);
			slice_schedule(ss, s, now);
		}
}

bool
store_slices_busy(const struct store_slices *ss)
{
	return ss->n > 0;
}
