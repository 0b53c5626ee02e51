/*
 * infergate pool capacity: what every worker thread shares about a pool,
 * by the pool's name, for the life of the process (so that a reload that
 * keeps a pool keeps its count of requests in flight): the requests in
 * flight to it, and per worker the requests waiting in that worker's
 * queue and the oldest one's arrival. Lock-free (atomics) on the request
 * path; one mutex for the registry, taken when a catalog is built and
 * when /metrics is read.
 */
#ifndef INFERGATE_CAPACITY_H
#define INFERGATE_CAPACITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "infergate/hist.h"

#define IG_CAP_WORKERS	256	/* the most workers a config may have */

enum ig_cap_shed {
	IG_SHED_FULL,		/* the queue was full (or is off) */
	IG_SHED_DISPLACED,	/* a higher priority took its place */
	IG_SHED_TIMEOUT,	/* waited queue.max_wait */
	IG_SHED_NREASONS
};

struct ig_cap;

/* The pool named NAME's shared state, created the first time. */
struct ig_cap	*ig_cap_get(const char *name);
void		 ig_cap_free_all(void);

/*
 * The pool's max_inflight (0: no limit) as the published config says:
 * set when a snapshot is published, so that requests of every snapshot,
 * queued before a reload or not, are held to the same, current limit.
 */
void		 ig_cap_set_max(struct ig_cap *, uint64_t max);
/*
 * Takes a slot when fewer than the limit are in flight. Every taken slot
 * is given back with ig_cap_release, which says whether any worker has
 * requests waiting (ig_cap_waiting).
 */
bool		 ig_cap_try_acquire(struct ig_cap *);
bool		 ig_cap_release(struct ig_cap *);

/*
 * Worker W's queue: its length and its oldest waiter's arrival (ns,
 * monotonic; 0: empty), published by W for the others and for /metrics.
 * Set the length before the retry that follows it (see queue.c).
 */
void		 ig_cap_set_waiting(struct ig_cap *, unsigned w, uint64_t n,
		    uint64_t oldest_ns);
uint64_t	 ig_cap_waiting(const struct ig_cap *);
uint64_t	 ig_cap_waiting_at(const struct ig_cap *, unsigned w);

/*
 * The retry budget: a request may start retrying (once: it stays counted
 * until ig_cap_retry_done) while the pool's requests retrying are fewer
 * than BUDGET of those in flight, or than IG_CAP_RETRY_MIN (so that a
 * quiet pool can still retry); false counts a refusal.
 */
#define IG_CAP_RETRY_MIN	3
bool		 ig_cap_retry_begin(struct ig_cap *, double budget);
void		 ig_cap_retry_done(struct ig_cap *);

/* Requests parked for a backend (when_empty: queue), over all workers. */
bool		 ig_cap_park(struct ig_cap *, uint64_t max);	/* < MAX: +1 */
void		 ig_cap_unpark(struct ig_cap *);

void		 ig_cap_count(struct ig_cap *, enum ig_cap_shed);
void		 ig_cap_count_queued(struct ig_cap *);
void		 ig_cap_count_fallback(struct ig_cap *);	/* from this pool */

struct ig_cap_stats {
	uint64_t	 inflight;
	uint64_t	 waiting;
	uint64_t	 oldest_ns;
	uint64_t	 queued;
	uint64_t	 fallbacks;
	uint64_t	 retrying;
	uint64_t	 retries_refused;
	uint64_t	 parked;
	uint64_t	 shed[IG_SHED_NREASONS];
};
void		 ig_cap_stats(const struct ig_cap *, struct ig_cap_stats *);

/*
 * The pool's latency histograms (kind IG_HIST_REQUEST), observed by the
 * workers: the duration of the requests its backends answered, and the
 * time to the first body bytes of its streams.
 */
enum ig_cap_hist { IG_CAP_DURATION, IG_CAP_TTFT, IG_CAP_NHISTS };
struct ig_hist	*ig_cap_hist(struct ig_cap *, enum ig_cap_hist);

/*
 * A backend's shared state, by its "host:port", while a catalog (or a
 * health check in flight) holds it: ig_bstate_get takes a reference,
 * ig_bstate_put drops one and the last frees it. It holds requests in
 * flight to it (least_inflight balancing), active
 * health (pools with `health`: written by the checker on the main
 * thread) and passive ejection (consecutive transport failures seen by
 * the workers). A backend is ready when it is not ejected and, in a pool
 * with health checks, not down by them.
 */
struct ig_bstate;

struct ig_bstate *ig_bstate_get(const char *name);
/*
 * The main thread's side (the catalog builder, the checker): whether the
 * checks have a result for B; and, for one catalog build (BUILD), whether
 * every pool with checks that has B marks it as joining (see catalog.c).
 * A backend that joins is pending: down until its first check passes
 * (ig_bstate_pending; nothing once the checks have a result).
 */
bool		 ig_bstate_checked(const struct ig_bstate *);
void		 ig_bstate_mark(struct ig_bstate *, uint64_t build, bool joins);
bool		 ig_bstate_joins(const struct ig_bstate *, uint64_t build);
void		 ig_bstate_pending(struct ig_bstate *);
struct ig_bstate *ig_bstate_ref(struct ig_bstate *);
void		 ig_bstate_put(struct ig_bstate *);
bool		 ig_bstate_ejected(const struct ig_bstate *, uint64_t now_ns);
bool		 ig_bstate_down(const struct ig_bstate *);	/* by its checks */
uint64_t	 ig_bstate_inflight(const struct ig_bstate *);
void		 ig_bstate_attempt(struct ig_bstate *);	/* inflight + 1 */
void		 ig_bstate_attempt_done(struct ig_bstate *);
/*
 * A request's attempt answered (a response head), or failed in transport
 * (refused, reset, timed out): after FAILS_MAX failures in a row the
 * backend is ejected until NOW + EJECT_NS; true when this one ejected it.
 */
void		 ig_bstate_ok(struct ig_bstate *);
bool		 ig_bstate_fail(struct ig_bstate *, uint64_t fails_max,
		    uint64_t now_ns, uint64_t eject_ns);
/*
 * A response from B: clears its transport failures; a 5xx counts toward
 * MAX_5XX in a row (0: not counted) and ejects it like ig_bstate_fail,
 * anything else clears that count. True when this one ejected it.
 */
bool		 ig_bstate_response(struct ig_bstate *, bool is_5xx,
		    uint64_t max_5xx, uint64_t now_ns, uint64_t eject_ns);

/*
 * The checker's side (one thread): a check's result, with the pool's
 * thresholds. The first result of a backend decides at once; later ones
 * need HEALTHY_AFTER successes or UNHEALTHY_AFTER failures in a row.
 * True when the backend changed state.
 */
bool		 ig_bstate_check(struct ig_bstate *, bool ok,
		    uint64_t healthy_after, uint64_t unhealthy_after);
/*
 * The checker's bookkeeping per kind of probe (health check, metrics
 * scrape), touched by its thread only: one in flight at a time, the next
 * due at `next` (now_ns()).
 */
enum ig_probe_kind { IG_PROBE_HEALTH, IG_PROBE_SCRAPE, IG_PROBE_NKINDS };
struct ig_probe {
	bool		 busy;
	uint64_t	 next;
};
struct ig_probe	*ig_bstate_probe(struct ig_bstate *, enum ig_probe_kind);

/*
 * The queue depth scraped from the backend (scrape_metrics) at NOW_NS;
 * ig_bstate_depth gives it while younger than MAX_AGE_NS, else 0.
 */
void		 ig_bstate_set_depth(struct ig_bstate *, uint64_t depth,
		    uint64_t now_ns);
uint64_t	 ig_bstate_depth(const struct ig_bstate *, uint64_t now_ns,
		    uint64_t max_age_ns);

struct ig_bstate_stats {
	uint64_t	 inflight;
	bool		 down;		/* by its checks */
	bool		 ejected;
	uint64_t	 ejections;
	uint64_t	 checks_failed;
	uint64_t	 depth;		/* last scraped, 0: none */
	uint64_t	 depth_ns;	/* when; 0: never */
};
void		 ig_bstate_stats(const struct ig_bstate *, uint64_t now_ns,
		    struct ig_bstate_stats *);

#endif
