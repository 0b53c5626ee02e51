/*
 * Pool capacity shared by the worker threads (see capacity.h). One entry
 * per pool name ever configured, never freed before exit: a pool dropped
 * by a reload may still have requests in flight on the old snapshot, and
 * a pool added back later finds its count again. Backends' entries are
 * counted by the catalogs (and health checks) that hold them, and freed
 * with the last: DNS backends come and go with their pods' addresses.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "infergate/capacity.h"

/* What both registries' entries start with: the list and the name. */
struct cap_entry {
	struct cap_entry *next;
	char		*name;
	uint64_t	 refs;		/* bstates only; under cap_lock */
};

struct ig_cap {
	struct cap_entry e;		/* first: see cap_get */
	_Atomic uint64_t max;
	/* The compare-and-swap target, on a cache line of its own. */
	_Alignas(64) _Atomic uint64_t inflight;
	_Alignas(64) char pad_;
	_Atomic uint64_t waiting;	/* the sum of waiting_w */
	_Atomic uint64_t queued;
	_Atomic uint64_t fallbacks;
	_Atomic uint64_t retrying;
	_Atomic uint64_t retries_refused;
	_Atomic uint64_t parked;
	_Atomic uint64_t shed[IG_SHED_NREASONS];
	_Atomic uint64_t waiting_w[IG_CAP_WORKERS];
	_Atomic uint64_t oldest_w[IG_CAP_WORKERS];
	_Alignas(64) struct ig_hist hist[IG_CAP_NHISTS];
};

struct ig_bstate {
	struct cap_entry e;		/* first: see cap_get */
	_Atomic uint64_t inflight;
	_Atomic bool	 down;		/* by its checks */
	_Atomic uint64_t ejected_until;	/* ns; 0: never ejected */
	_Atomic uint64_t fails;		/* transport failures in a row */
	_Atomic uint64_t fails_5xx;	/* 5xx responses in a row */
	_Atomic uint64_t ejections;
	_Atomic uint64_t checks_failed;
	_Atomic uint64_t depth;		/* scraped queue depth */
	_Atomic uint64_t depth_ns;	/* when; 0: never */
	/* the catalog builder's scratch (ig_bstate_mark) and the checker's
	 * own: the main thread's */
	uint64_t	 join_build, stay_build;
	bool		 checked;	/* has a first result */
	uint64_t	 run;		/* results in a row opposing the state */
	struct ig_probe	 probes[IG_PROBE_NKINDS];
};

static pthread_mutex_t	 cap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cap_entry	*caps;
static struct cap_entry	*bstates;

/*
 * The entry named NAME of the registry *HEAD, made (zeroed, SIZE bytes,
 * cache-line aligned) the first time, with a reference taken when REF;
 * NULL: no memory.
 */
static void *
cap_get(struct cap_entry **head, const char *name, size_t size, bool ref)
{
	struct cap_entry *e;

	pthread_mutex_lock(&cap_lock);
	for (e = *head; e != NULL; e = e->next)
		if (strcmp(e->name, name) == 0)
			break;
	if (e == NULL && (e = aligned_alloc(64, (size + 63) & ~63UL)) != NULL) {
		memset(e, 0, size);
		if ((e->name = strdup(name)) == NULL) {
			free(e);
			e = NULL;
		} else {
			e->next = *head;
			*head = e;
		}
	}
	/* under the lock: a last ig_bstate_put elsewhere cannot free it */
	if (e != NULL && ref)
		e->refs++;
	pthread_mutex_unlock(&cap_lock);
	return e;
}

static void
cap_free_list(struct cap_entry **head)
{
	struct cap_entry *e;

	while ((e = *head) != NULL) {
		*head = e->next;
		free(e->name);
		free(e);
	}
}

struct ig_cap *
ig_cap_get(const char *name)
{
	return cap_get(&caps, name, sizeof(struct ig_cap), false);
}

/* NAME's state, with a reference for the caller (see ig_bstate_put). */
struct ig_bstate *
ig_bstate_get(const char *name)
{
	return cap_get(&bstates, name, sizeof(struct ig_bstate), true);
}

bool
ig_bstate_checked(const struct ig_bstate *b)
{
	return b->checked;
}

void
ig_bstate_mark(struct ig_bstate *b, uint64_t build, bool joins)
{
	if (joins)
		b->join_build = build;
	else
		b->stay_build = build;
}

bool
ig_bstate_joins(const struct ig_bstate *b, uint64_t build)
{
	return b->join_build == build && b->stay_build != build;
}

void
ig_bstate_pending(struct ig_bstate *b)
{
	if (!b->checked)
		atomic_store(&b->down, true);
}

struct ig_bstate *
ig_bstate_ref(struct ig_bstate *b)
{
	pthread_mutex_lock(&cap_lock);
	b->e.refs++;
	pthread_mutex_unlock(&cap_lock);
	return b;
}

/* Drops a reference; the last one frees B (NULL: nothing). */
void
ig_bstate_put(struct ig_bstate *b)
{
	struct cap_entry **pp;

	if (b == NULL)
		return;
	pthread_mutex_lock(&cap_lock);
	if (--b->e.refs == 0) {
		for (pp = &bstates; *pp != NULL; pp = &(*pp)->next)
			if (*pp == &b->e) {
				*pp = b->e.next;
				break;
			}
		free(b->e.name);
		free(b);
	}
	pthread_mutex_unlock(&cap_lock);
}

void
ig_cap_free_all(void)
{
	pthread_mutex_lock(&cap_lock);
	cap_free_list(&caps);
	cap_free_list(&bstates);
	pthread_mutex_unlock(&cap_lock);
}

/* *N + 1 when *N is below LIMIT; false (unchanged) when it is not. */
static bool
cap_inc_below(_Atomic uint64_t *n, uint64_t limit)
{
	uint64_t v = atomic_load(n);

	do {
		if (v >= limit)
			return false;
	} while (!atomic_compare_exchange_weak(n, &v, v + 1));
	return true;
}

void
ig_cap_set_max(struct ig_cap *c, uint64_t max)
{
	atomic_store(&c->max, max);
}

bool
ig_cap_try_acquire(struct ig_cap *c)
{
	uint64_t max = atomic_load_explicit(&c->max, memory_order_relaxed);

	if (max == 0) {
		atomic_fetch_add(&c->inflight, 1);
		return true;
	}
	return cap_inc_below(&c->inflight, max);
}

/*
 * Sequentially consistent with ig_cap_set_waiting: a worker that queues
 * publishes its length, then tries again; a release lowers the count,
 * then reads the lengths. One of the two sees the other.
 */
bool
ig_cap_release(struct ig_cap *c)
{
	atomic_fetch_sub(&c->inflight, 1);
	return atomic_load(&c->waiting) > 0;
}

void
ig_cap_set_waiting(struct ig_cap *c, unsigned w, uint64_t n,
    uint64_t oldest_ns)
{
	uint64_t old;

	if (w >= IG_CAP_WORKERS)
		return;
	atomic_store(&c->oldest_w[w], oldest_ns);
	old = atomic_exchange(&c->waiting_w[w], n);
	if (n > old)
		atomic_fetch_add(&c->waiting, n - old);
	else if (old > n)
		atomic_fetch_sub(&c->waiting, old - n);
}

uint64_t
ig_cap_waiting(const struct ig_cap *c)
{
	return atomic_load(&c->waiting);
}

uint64_t
ig_cap_waiting_at(const struct ig_cap *c, unsigned w)
{
	return w < IG_CAP_WORKERS ? atomic_load(&c->waiting_w[w]) : 0;
}

static uint64_t
cap_oldest(const struct ig_cap *c)
{
	uint64_t o, oldest = 0;
	size_t	 i;

	for (i = 0; i < IG_CAP_WORKERS; i++)
		if ((o = atomic_load(&c->oldest_w[i])) != 0 &&
		    (oldest == 0 || o < oldest))
			oldest = o;
	return oldest;
}

void
ig_cap_count(struct ig_cap *c, enum ig_cap_shed why)
{
	atomic_fetch_add(&c->shed[why], 1);
}

void
ig_cap_count_queued(struct ig_cap *c)
{
	atomic_fetch_add(&c->queued, 1);
}

bool
ig_cap_retry_begin(struct ig_cap *c, double budget)
{
	uint64_t allowed = (uint64_t)(budget * (double)atomic_load(&c->inflight));

	if (allowed < IG_CAP_RETRY_MIN)
		allowed = IG_CAP_RETRY_MIN;
	if (cap_inc_below(&c->retrying, allowed))
		return true;
	atomic_fetch_add(&c->retries_refused, 1);
	return false;
}

bool
ig_cap_park(struct ig_cap *c, uint64_t max)
{
	return cap_inc_below(&c->parked, max);
}

void
ig_cap_unpark(struct ig_cap *c)
{
	atomic_fetch_sub(&c->parked, 1);
}

void
ig_cap_retry_done(struct ig_cap *c)
{
	atomic_fetch_sub(&c->retrying, 1);
}

void
ig_cap_count_fallback(struct ig_cap *c)
{
	atomic_fetch_add(&c->fallbacks, 1);
}

struct ig_hist *
ig_cap_hist(struct ig_cap *c, enum ig_cap_hist which)
{
	return &c->hist[which];
}

void
ig_cap_stats(const struct ig_cap *c, struct ig_cap_stats *st)
{
	size_t i;

	st->inflight = atomic_load(&c->inflight);
	st->waiting = atomic_load(&c->waiting);
	st->oldest_ns = cap_oldest(c);
	st->queued = atomic_load(&c->queued);
	st->fallbacks = atomic_load(&c->fallbacks);
	st->retrying = atomic_load(&c->retrying);
	st->retries_refused = atomic_load(&c->retries_refused);
	st->parked = atomic_load(&c->parked);
	for (i = 0; i < IG_SHED_NREASONS; i++)
		st->shed[i] = atomic_load(&c->shed[i]);
}

bool
ig_bstate_ejected(const struct ig_bstate *b, uint64_t now)
{
	return atomic_load_explicit(&b->ejected_until, memory_order_relaxed) >
	    now;
}

bool
ig_bstate_down(const struct ig_bstate *b)
{
	return atomic_load_explicit(&b->down, memory_order_relaxed);
}

uint64_t
ig_bstate_inflight(const struct ig_bstate *b)
{
	return atomic_load_explicit(&b->inflight, memory_order_relaxed);
}

void
ig_bstate_attempt(struct ig_bstate *b)
{
	atomic_fetch_add_explicit(&b->inflight, 1, memory_order_relaxed);
}

void
ig_bstate_attempt_done(struct ig_bstate *b)
{
	atomic_fetch_sub_explicit(&b->inflight, 1, memory_order_relaxed);
}

void
ig_bstate_ok(struct ig_bstate *b)
{
	if (atomic_load_explicit(&b->fails, memory_order_relaxed) != 0)
		atomic_store_explicit(&b->fails, 0, memory_order_relaxed);
}

/*
 * One more failure of B's kind *N: the one at or past MAX that takes the
 * count back to 0 ejects B for EJECT_NS (and counts the ejection).
 */
static bool
bstate_count(struct ig_bstate *b, _Atomic uint64_t *count, uint64_t max,
    uint64_t now, uint64_t eject_ns)
{
	uint64_t n = atomic_fetch_add(count, 1) + 1;

	if (n < max || !atomic_compare_exchange_strong(count, &n, 0))
		return false;
	atomic_store(&b->ejected_until, now + eject_ns);
	atomic_fetch_add(&b->ejections, 1);
	return true;
}

bool
ig_bstate_fail(struct ig_bstate *b, uint64_t fails_max, uint64_t now,
    uint64_t eject_ns)
{
	return bstate_count(b, &b->fails, fails_max, now, eject_ns);
}

bool
ig_bstate_response(struct ig_bstate *b, bool is_5xx, uint64_t max_5xx,
    uint64_t now, uint64_t eject_ns)
{
	ig_bstate_ok(b);	/* it answered: no transport failure */
	if (is_5xx && max_5xx > 0)
		return bstate_count(b, &b->fails_5xx, max_5xx, now, eject_ns);
	if (atomic_load_explicit(&b->fails_5xx, memory_order_relaxed) != 0)
		atomic_store_explicit(&b->fails_5xx, 0, memory_order_relaxed);
	return false;
}

bool
ig_bstate_check(struct ig_bstate *b, bool ok, uint64_t healthy_after,
    uint64_t unhealthy_after)
{
	bool down = atomic_load(&b->down);

	if (!ok)
		atomic_fetch_add(&b->checks_failed, 1);
	if (!b->checked) {
		b->checked = true;
		b->run = 0;
		atomic_store(&b->down, !ok);
		return down != !ok;
	}
	if (ok != down) {	/* agrees with the state */
		b->run = 0;
		return false;
	}
	if (++b->run < (ok ? healthy_after : unhealthy_after))
		return false;
	b->run = 0;
	atomic_store(&b->down, !ok);
	if (ok)		/* back: what ejected it is past */
		atomic_store(&b->ejected_until, 0);
	return true;
}

struct ig_probe *
ig_bstate_probe(struct ig_bstate *b, enum ig_probe_kind k)
{
	return &b->probes[k];
}

void
ig_bstate_set_depth(struct ig_bstate *b, uint64_t depth, uint64_t now)
{
	atomic_store_explicit(&b->depth, depth, memory_order_relaxed);
	atomic_store_explicit(&b->depth_ns, now, memory_order_relaxed);
}

uint64_t
ig_bstate_depth(const struct ig_bstate *b, uint64_t now, uint64_t max_age)
{
	uint64_t at = atomic_load_explicit(&b->depth_ns, memory_order_relaxed);

	if (at == 0 || now - at > max_age)
		return 0;
	return atomic_load_explicit(&b->depth, memory_order_relaxed);
}

void
ig_bstate_stats(const struct ig_bstate *b, uint64_t now,
    struct ig_bstate_stats *st)
{
	st->inflight = atomic_load(&b->inflight);
	st->down = atomic_load(&b->down);
	st->ejected = atomic_load(&b->ejected_until) > now;
	st->ejections = atomic_load(&b->ejections);
	st->checks_failed = atomic_load(&b->checks_failed);
	st->depth = atomic_load(&b->depth);
	st->depth_ns = atomic_load(&b->depth_ns);
}
