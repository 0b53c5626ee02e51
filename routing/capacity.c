/*
 * Pool capacity shared by the worker threads (see capacity.h). One entry
 * per pool name ever configured, never freed before exit: a pool dropped
 * by a reload may still have requests in flight on the old snapshot, and
 * a pool added back later finds its count again.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "infergate/capacity.h"

struct ig_cap {
	struct ig_cap	*next;
	char		*name;
	_Atomic uint64_t inflight;
	_Atomic uint64_t waiting;	/* the sum of waiting_w */
	_Atomic uint64_t queued;
	_Atomic uint64_t fallbacks;
	_Atomic uint64_t shed[IG_SHED_NREASONS];
	_Atomic uint64_t waiting_w[IG_CAP_WORKERS];
	_Atomic uint64_t oldest_w[IG_CAP_WORKERS];
};

static pthread_mutex_t	 cap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ig_cap	*caps;

struct ig_cap *
ig_cap_get(const char *name)
{
	struct ig_cap *c;

	pthread_mutex_lock(&cap_lock);
	for (c = caps; c != NULL; c = c->next)
		if (strcmp(c->name, name) == 0)
			break;
	if (c == NULL && (c = calloc(1, sizeof(*c))) != NULL) {
		if ((c->name = strdup(name)) == NULL) {
			free(c);
			c = NULL;
		} else {
			c->next = caps;
			caps = c;
		}
	}
	pthread_mutex_unlock(&cap_lock);
	return c;
}

void
ig_cap_free_all(void)
{
	struct ig_cap *c;

	pthread_mutex_lock(&cap_lock);
	while ((c = caps) != NULL) {
		caps = c->next;
		free(c->name);
		free(c);
	}
	pthread_mutex_unlock(&cap_lock);
}

bool
ig_cap_try_acquire(struct ig_cap *c, uint64_t max)
{
	uint64_t n;

	if (max == 0) {
		atomic_fetch_add(&c->inflight, 1);
		return true;
	}
	n = atomic_load(&c->inflight);
	do {
		if (n >= max)
			return false;
	} while (!atomic_compare_exchange_weak(&c->inflight, &n, n + 1));
	return true;
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

uint64_t
ig_cap_inflight(const struct ig_cap *c)
{
	return atomic_load(&c->inflight);
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

uint64_t
ig_cap_oldest(const struct ig_cap *c)
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

void
ig_cap_count_fallback(struct ig_cap *c)
{
	atomic_fetch_add(&c->fallbacks, 1);
}

void
ig_cap_stats(const struct ig_cap *c, struct ig_cap_stats *st)
{
	size_t i;

	st->inflight = atomic_load(&c->inflight);
	st->waiting = atomic_load(&c->waiting);
	st->oldest_ns = ig_cap_oldest(c);
	st->queued = atomic_load(&c->queued);
	st->fallbacks = atomic_load(&c->fallbacks);
	for (i = 0; i < IG_SHED_NREASONS; i++)
		st->shed[i] = atomic_load(&c->shed[i]);
}
