/*
 * Load balancing over a pool's backends (see ig_balancer_pick). The
 * cursor and the seed belong to the calling worker and the backends'
 * counts are relaxed atomics, so picking takes no lock. A pick walks the
 * pool's backends (no candidate array, so a pool may have any number);
 * only the first 64 can be told apart as already tried by a request.
 */
#include "infergate/capacity.h"
#include "infergate/routing.h"

#define BAL_EXCLUDE_BITS	64

static unsigned
bal_next(unsigned *seed)
{
	unsigned x = *seed ? *seed : 0x9e3779b9u;	/* xorshift32 */

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *seed = x;
}

static uint64_t
bal_weight(const struct ig_backend *be)
{
	return be->conf->weight ? be->conf->weight : 1;
}

/*
 * A backend's load: its requests in flight from this gateway, plus, with
 * balance: queue_depth, the queue it reported (scrape_metrics) while that
 * is younger than three scrape intervals.
 */
static uint64_t
bal_load(const struct ig_pool *pool, const struct ig_backend *be,
    uint64_t now)
{
	uint64_t load = ig_bstate_inflight(be->state);

	if (pool->conf->balance == IG_BALANCE_QUEUE_DEPTH &&
	    pool->conf->scrape_path != NULL)
		load += ig_bstate_depth(be->state, now,
		    3 * pool->conf->scrape_interval_ms * 1000000ULL);
	return load;
}

/* Whether A carries less than B for its weight (a.load/a.w < ...). */
static bool
bal_lighter(const struct ig_pool *pool, const struct ig_backend *a,
    const struct ig_backend *b, uint64_t now)
{
	uint64_t wa = bal_weight(a), wb = bal_weight(b);

	return bal_load(pool, a, now) * wb < bal_load(pool, b, now) * wa;
}

enum bal_class { BAL_TRIED, BAL_READY, BAL_EJECTED, BAL_DOWN };

/*
 * What backend I is for this pick. Health checks count only in a pool
 * that has them: a backend shared with a checked pool, or left down by
 * checks a reload removed, is not down here.
 */
static enum bal_class
bal_class(const struct ig_pool *pool, size_t i, uint64_t exclude,
    uint64_t now)
{
	const struct ig_bstate *b = pool->backends[i].state;

	if (i < BAL_EXCLUDE_BITS && (exclude & (1ULL << i)))
		return BAL_TRIED;
	if (pool->conf->health_path != NULL && ig_bstate_down(b))
		return BAL_DOWN;
	return ig_bstate_ejected(b, now) ? BAL_EJECTED : BAL_READY;
}

/* The K-th (from 0) backend of class C; NULL when there are fewer now. */
static struct ig_backend *
bal_nth(const struct ig_pool *pool, enum bal_class c, size_t k,
    uint64_t exclude, uint64_t now)
{
	size_t i;

	for (i = 0; i < pool->nbackends; i++)
		if (bal_class(pool, i, exclude, now) == c && k-- == 0)
			return &pool->backends[i];
	return NULL;
}

/*
 * round_robin: the backend of class C at position POS of the cycle in
 * which each takes as many turns in a row as its weight; NULL when the
 * class shrank since it was counted.
 */
static struct ig_backend *
bal_at_turn(const struct ig_pool *pool, enum bal_class c, uint64_t pos,
    uint64_t exclude, uint64_t now)
{
	size_t i;

	for (i = 0; i < pool->nbackends; i++) {
		if (bal_class(pool, i, exclude, now) != c)
			continue;
		if (pos < bal_weight(&pool->backends[i]))
			return &pool->backends[i];
		pos -= bal_weight(&pool->backends[i]);
	}
	return NULL;
}

bool
ig_pool_has_backend(const struct ig_pool *pool)
{
	size_t i;

	if (pool->conf->health_path == NULL)
		return pool->nbackends > 0;
	for (i = 0; i < pool->nbackends; i++)
		if (!ig_bstate_down(pool->backends[i].state))
			return true;
	return false;
}

struct ig_backend *
ig_balancer_pick(const struct ig_pool *pool, unsigned *cursor,
    unsigned *seed, uint64_t exclude, uint64_t now, bool *all_down)
{
	size_t i, n[BAL_DOWN + 1] = { 0 }, ka, kb;
	uint64_t w[BAL_DOWN + 1] = { 0 };
	enum bal_class c = BAL_READY, k;
	struct ig_backend *a, *b;

	for (i = 0; i < pool->nbackends; i++) {
		k = bal_class(pool, i, exclude, now);
		n[k]++;
		w[k] += bal_weight(&pool->backends[i]);
	}
	/* All down by checks, or none at all (a DNS name with no address
	 * yet): when_empty applies. */
	*all_down = n[BAL_READY] == 0 && n[BAL_EJECTED] == 0 &&
	    (n[BAL_DOWN] > 0 || pool->nbackends == 0);
	if (n[BAL_READY] == 0)	/* only ejected ones left: use them */
		c = BAL_EJECTED;
	if (n[c] == 0)
		return NULL;
	if (n[c] == 1)
		return bal_nth(pool, c, 0, exclude, now);
	if (pool->conf->balance == IG_BALANCE_ROUND_ROBIN) {
		a = bal_at_turn(pool, c, (*cursor)++ % w[c], exclude, now);
		return a != NULL ? a : bal_nth(pool, c, 0, exclude, now);
	}
	ka = bal_next(seed) % n[c];
	kb = bal_next(seed) % (n[c] - 1);	/* another one */
	if (kb >= ka)
		kb++;
	a = bal_nth(pool, c, ka, exclude, now);
	b = bal_nth(pool, c, kb, exclude, now);
	/* Another worker (an ejection) or the checker may have moved one
	 * out of the class since the count: either can be missing. */
	if (a == NULL || b == NULL)
		return a != NULL ? a : b;
	return bal_lighter(pool, b, a, now) ? b : a;
}
