/*
 * Load balancing over a pool's backends (see ig_balancer_pick). The seed
 * belongs to the calling worker and the backends' counts are relaxed
 * atomics, so picking takes no lock.
 */
#include "infergate/capacity.h"
#include "infergate/routing.h"

#define BAL_MAX	64	/* backends a request can tell apart (exclude) */

static unsigned
bal_next(unsigned *seed)
{
	unsigned x = *seed ? *seed : 0x9e3779b9u;	/* xorshift32 */

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *seed = x;
}

/* Whether A carries less than B for its weight (a.inflight/a.w < ...). */
static bool
bal_lighter(const struct ig_backend *a, const struct ig_backend *b)
{
	uint64_t wa = a->conf->weight ? a->conf->weight : 1;
	uint64_t wb = b->conf->weight ? b->conf->weight : 1;

	return ig_bstate_inflight(a->state) * wb <
	    ig_bstate_inflight(b->state) * wa;
}

struct ig_backend *
ig_balancer_pick(const struct ig_pool *pool, unsigned *seed, uint64_t exclude,
    uint64_t now, bool *all_down)
{
	struct ig_backend *cand[BAL_MAX], *a, *b;
	size_t i, n = 0, nejected = 0, total = pool->nbackends;
	uint64_t ejected = 0;

	*all_down = false;
	if (total > BAL_MAX)
		total = BAL_MAX;
	for (i = 0; i < total; i++) {
		struct ig_backend *be = &pool->backends[i];

		if (exclude & (1ULL << i))
			continue;
		if (ig_bstate_ready(be->state, now))
			cand[n++] = be;
		else if (!ig_bstate_down(be->state)) {
			ejected |= 1ULL << i;
			nejected++;
		}
	}
	if (n == 0 && nejected > 0)	/* only ejected ones left: use them */
		for (i = 0; i < total; i++)
			if (ejected & (1ULL << i))
				cand[n++] = &pool->backends[i];
	if (n == 0) {
		for (i = 0; i < total && !*all_down; i++)
			*all_down = !(exclude & (1ULL << i));
		return NULL;
	}
	if (n == 1)
		return cand[0];
	if (pool->conf->balance == IG_BALANCE_ROUND_ROBIN)
		return cand[(*seed)++ % n];
	a = cand[bal_next(seed) % n];
	do
		b = cand[bal_next(seed) % n];
	while (b == a);
	return bal_lighter(b, a) ? b : a;
}
