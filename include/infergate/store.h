/*
 * infergate: the budget store. Concurrency leases, the sliding minute
 * windows and the daily budget of every tenant, checked and reserved in one
 * step per request (so concurrent requests cannot race past a limit) and
 * settled with the real usage when the response ends.
 *
 * One interface, two implementations, chosen by store.type:
 *   local  process memory, shared by every worker thread of the process
 *          (a mutex per store domain; it is not on the Redis path).
 *   redis  hiredis async on the worker's event base; the admissions and
 *          settlements of one loop iteration go as one Lua script call per
 *          tenant (each admission still checked and reserved on its own,
 *          in order), time from Redis. Admissions made while the connection
 *          is being set up wait for it, within the store timeout.
 *          On timeout, error or disconnect, store.on_store_failure decides:
 *          closed (503 store_unavailable, Retry-After 1), open (admit,
 *          degraded), local (a process-local store with every limit divided
 *          by store.replicas, degraded). It reconnects with backoff (at most
 *          500 ms between attempts) and is used again as soon as it answers.
 *          With store.slices, each worker answers the admissions that fit
 *          its slice of the tenant's limits (taken from Redis in advance)
 *          at once, and the rest as above.
 *
 * Threads: one ig_store per worker thread, used only from that thread.
 * Callbacks are always delivered from the worker's event loop, never from
 * inside ig_store_admit() (answers wait on a queue drained by an event
 * made active when it stops being empty), so a callback may call any
 * ig_store_* function.
 *
 * The gateway, per request:
 *
 *   op = ig_store_admit(store, &req, on_admit, r);   keep op in the request
 *   ...request dies before on_admit: ig_store_cancel(op) (no callback then;
 *      whatever the store granted is released)
 *   on_admit(res, lease, r): op is gone. res->admitted? forward, keep
 *      lease, add ig_ratelimit_format(&res->rl) to the response headers;
 *      refused: answer res->status / res->code / Retry-After.
 *   long stream: ig_store_renew(store, lease) every ig_store_renew_ms()
 *   end: ig_store_settle(store, lease, actual_tokens) exactly once, which
 *      frees the lease (IG_USAGE_UNKNOWN keeps the reservation; 0 when the
 *      backend failed before any output).
 *
 * A request id admitted again while its lease is held gets that lease
 * (renewed, counted once); settling the retried one's lease releases
 * nothing: the first lease settles.
 */
#ifndef INFERGATE_STORE_H
#define INFERGATE_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "infergate/admission.h"
#include "infergate/config.h"

struct event_base;
struct ig_store;
struct ig_store_op;
struct ig_lease;

/* What one admission asks of the store. Everything is copied. */
struct ig_admit_req {
	const char	*tenant;	/* tenant id */
	const char	*request_id;	/* unique; the lease's name */
	struct ig_tenant_limits limits;
	bool		 shadow;	/* never refuse; report would_refuse */
	uint64_t	 input_tokens;	/* the estimate */
	uint64_t	 output_tokens;	/* max_tokens after the output check */
};

/*
 * RES is valid only during the call. LEASE is non-NULL exactly when
 * res->admitted; the callee owns it and must give it back through
 * ig_store_settle() once.
 */
typedef void (*ig_store_admit_cb)(const struct ig_admit_result *res,
		    struct ig_lease *lease, void *arg);

#define IG_USAGE_UNKNOWN	UINT64_MAX

struct ig_store_stats {
	bool		 degraded;	/* redis configured, not answering now */
	uint64_t	 admissions;	/* ig_store_admit calls answered */
	uint64_t	 fallbacks;	/* answered by on_store_failure */
	uint64_t	 errors;	/* failed round trips, timeouts included */
	uint64_t	 timeouts;
	uint64_t	 reconnects;	/* successful (re)connections */
	uint64_t	 settles_dropped;	/* queue full while Redis was down */
	uint64_t	 slice_admissions;	/* answered from a slice */
	uint64_t	 slice_asks;	/* asks of the slices sent to Redis */
};

/*
 * A store for one worker. CONF is copied. For redis, connecting starts in
 * the background: admissions before Redis answers follow on_store_failure.
 * Returns NULL with *err malloc'd (caller frees).
 */
struct ig_store	*ig_store_create(const struct ig_store_conf *conf,
		    struct event_base *base, char **err);

/*
 * Frees the store. Pending operations are dropped without their callbacks;
 * the caller cancels them first if it cares. Leases not yet settled stay
 * reserved in the store until their lease expires.
 */
void		 ig_store_free(struct ig_store *);

/*
 * Checks REQ against its tenant's limits and, if they all pass (or in
 * shadow mode), takes a concurrency lease named by the request id and
 * reserves input + output tokens in the minute window and the day. CB
 * is called exactly once, later, from the event loop, unless the op is
 * cancelled first. Returns the op, or NULL when out of memory (no
 * callback; answer 503).
 */
struct ig_store_op *ig_store_admit(struct ig_store *,
		    const struct ig_admit_req *req, ig_store_admit_cb cb,
		    void *arg);

/*
 * Abandons OP before its callback: the callback is never called and a
 * lease the store granted (now or when a late reply arrives) is released
 * with nothing charged. OP is invalid afterwards. Not to be called once
 * the callback has run.
 */
void		 ig_store_cancel(struct ig_store_op *op);

/*
 * Ends the request of LEASE: releases the concurrency lease and replaces
 * the reserved tokens with ACTUAL in the minute window and the day
 * (IG_USAGE_UNKNOWN: the reservation stands). The request keeps counting
 * against requests_per_minute. Fire and forget: while Redis is away the
 * settlement is queued and sent when it returns. Frees LEASE.
 */
void		 ig_store_settle(struct ig_store *, struct ig_lease *lease,
		    uint64_t actual);

/*
 * Delivers now the answers that wait for the event loop (local answers,
 * and Redis replies already read), instead of after the events of the
 * current batch. Only from the top of an event callback: never inside an
 * ig_store_* call or a store callback.
 */
void		 ig_store_dispatch(struct ig_store *);

/* Extends LEASE by store.lease_ttl from now (fire and forget). */
void		 ig_store_renew(struct ig_store *, struct ig_lease *lease);

/* How often a long request should renew its lease (lease_ttl / 3). */
uint64_t	 ig_store_renew_ms(const struct ig_store *);

/* The tokens LEASE reserved (input + output). */
uint64_t	 ig_lease_reserved(const struct ig_lease *);

/*
 * The worker drains: what its slices (store.slices) hold is given back
 * now rather than when each grant's period ends.
 */
void		 ig_store_drain(struct ig_store *);

/*
 * Whether the store still has work in hand: operations waiting for their
 * answer, settlements not yet written to (or answered by) a Redis that
 * is up, or slices holding something. A draining worker waits for it
 * before it frees the store, so that the usage of its last requests is
 * charged and what it held is given back.
 */
bool		 ig_store_busy(const struct ig_store *);

/* The counters and the degraded gauge, for /metrics. */
void		 ig_store_stats(const struct ig_store *, struct ig_store_stats *);

#endif
