/*
 * infergate: latency histograms for /metrics (Prometheus "histogram"):
 * fixed upper bounds per kind, one relaxed atomic counter per bucket and
 * one for the sum (us), so that any worker thread observes and the admin
 * thread reads without a lock.
 *
 *   struct ig_hist h;                   zeroed
 *   ig_hist_observe(&h, IG_HIST_REQUEST, now_ns() - r->t_start);
 *   ig_hist_bounds(IG_HIST_REQUEST, &n) the finite bounds, ns, ascending
 *
 * Buckets are kept apart (not cumulative) and summed when read: each
 * bucket only grows, so cumulative counts read at any moment grow too.
 */
#ifndef INFERGATE_HIST_H
#define INFERGATE_HIST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define IG_HIST_BOUNDS	15	/* the most finite bounds of a kind */

enum ig_hist_kind {
	IG_HIST_REQUEST,	/* 5 ms .. 300 s: request durations, TTFT */
	IG_HIST_STORE		/* 100 us .. 1 s: store round trips */
};

/*
 * The sum is in microseconds: in nanoseconds a pool with 10,000 streams
 * open would wrap it within a month (it grows by the requests in flight
 * every second). Own cache lines: the pool's two are written apart.
 */
struct ig_hist {
	_Alignas(64) _Atomic uint64_t n[IG_HIST_BOUNDS + 1]; /* +Inf last */
	_Atomic uint64_t sum_us;
};

static inline const uint64_t *
ig_hist_bounds(enum ig_hist_kind kind, size_t *n)
{
#define MS	1000000ULL
	static const uint64_t request[] = { 5 * MS, 10 * MS, 25 * MS,
	    50 * MS, 100 * MS, 250 * MS, 500 * MS, 1000 * MS, 2500 * MS,
	    5000 * MS, 10000 * MS, 30000 * MS, 60000 * MS, 120000 * MS,
	    300000 * MS };
	static const uint64_t store[] = { MS / 10, MS / 4, MS / 2, MS,
	    5 * MS / 2, 5 * MS, 10 * MS, 25 * MS, 50 * MS, 100 * MS,
	    250 * MS, 500 * MS, 1000 * MS };
#undef MS
	_Static_assert(sizeof(request) / sizeof(request[0]) <= IG_HIST_BOUNDS,
	    "IG_HIST_BOUNDS");
	_Static_assert(sizeof(store) / sizeof(store[0]) <= IG_HIST_BOUNDS,
	    "IG_HIST_BOUNDS");

	if (kind == IG_HIST_STORE) {
		*n = sizeof(store) / sizeof(store[0]);
		return store;
	}
	*n = sizeof(request) / sizeof(request[0]);
	return request;
}

/* One observation of NS nanoseconds: the first bucket whose bound holds it. */
static inline void
ig_hist_observe(struct ig_hist *h, enum ig_hist_kind kind, uint64_t ns)
{
	size_t i, n;
	const uint64_t *le = ig_hist_bounds(kind, &n);

	for (i = 0; i < n && ns > le[i]; i++)
		;
	atomic_fetch_add_explicit(&h->n[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_us, ns / 1000, memory_order_relaxed);
}

#endif
