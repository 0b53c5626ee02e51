/*
 * Load balancing over a pool's backends. Round robin for now; the cursor
 * belongs to the calling worker, so picking takes no lock.
 */
#include "infergate/routing.h"

struct ig_backend *
ig_balancer_pick(const struct ig_pool *pool, unsigned *cursor, uint64_t exclude)
{
	size_t i, n = pool->nbackends;

	for (i = 0; i < n; i++) {
		unsigned k = (*cursor)++ % n;

		if (k < 64 && (exclude & (1ULL << k)))
			continue;
		return &pool->backends[k];
	}
	return NULL;
}
