/*
 * The budget store's insides, shared by store.c (the interface, the ops,
 * their timeouts and deferred delivery, on_store_failure), store_local.c
 * and store_redis.c. Not a public header.
 */
#ifndef INFERGATE_STORE_INT_H
#define INFERGATE_STORE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/queue.h>

#include "infergate/store.h"

struct event;
struct store_local;
struct local_lease;
struct store_redis;

enum lease_where {
	LEASE_NONE,		/* on_store_failure: open; nothing to settle */
	LEASE_LOCAL,		/* store.type local */
	LEASE_FALLBACK,		/* the local fallback of a redis store */
	LEASE_REDIS
};

/* A lease of the local store: its slot, valid while the generation holds. */
struct local_handle {
	struct local_lease *ll;
	uint64_t	 gen;
};

/*
 * One block per lease, strings included (from the store's freelist when
 * they fit). A Redis lease carries what its admission reserved where (the
 * second and the reservation), so that settlement needs no per-lease
 * record in Redis: the lease's entry in the leases zset is its
 * at-most-once ticket.
 */
struct ig_lease {
	struct ig_store	*store;
	enum lease_where where;
	bool		 shared;	/* a retried admission's: settles nothing */
	bool		 release;	/* its admission's reply was lost */
	bool		 pooled;	/* back to the store's freelist */
	uint64_t	 reserved;
	uint64_t	 actual;	/* while a settlement waits for Redis */
	uint64_t	 sec;		/* Redis: the second it reserved in
					   (unknown when RELEASE) */
	struct local_handle lh;		/* LOCAL, FALLBACK */
	const char	*tenant;	/* REDIS: in buf */
	const char	*request_id;
	struct ig_lease	*next;		/* the settlement queue */
	char		 buf[];
};

enum op_state {
	OP_WAITING,		/* for the store's answer */
	OP_DELIVERING,		/* answer in RES, callback deferred */
	OP_ORPHAN		/* cancelled or answered; Redis reply due */
};

/*
 * One block per admission, strings included. An op is on the store's list
 * of live ops and, while WAITING or DELIVERING, on one of its two queues
 * (the timeout FIFO, the delivery FIFO).
 */
struct ig_store_op {
	struct ig_store	*store;
	enum op_state	 state;
	bool		 pooled;
	bool		 redis_pending;	/* a Redis reply is due */
	bool		 queued;	/* on a queue (qentry) */
	ig_store_admit_cb cb;
	void		*arg;
	struct ig_admit_req req;	/* strings in buf (Redis only) */
	struct ig_admit_result res;
	struct ig_lease	*lease;		/* granted, not yet delivered */
	uint64_t	 deadline_ms;	/* WAITING: the store timeout */
	struct ig_store_op *next, *prev;	/* every live op */
	TAILQ_ENTRY(ig_store_op) qentry;	/* a queue */
	char		 buf[];
};

/* --- store.c: what store_redis.c reports back ------------------------ */

/*
 * The admission script answered for OP: TAKEN (1: lease taken, 2: held
 * already, 3: released before it ran), ST the tenant's numbers before this
 * request. ERR non-NULL: the round trip failed and on_store_failure
 * applies; TAKEN -1 then says the command may have run (connection lost),
 * so a release is queued for when Redis is back.
 */
void		 store_admit_done(struct ig_store_op *op, int taken,
		    const struct ig_policy_state *st, const char *err);

/* Back to its store's freelist (or freed). */
void		 store_lease_free(struct ig_lease *);

/* --- store_local.c --------------------------------------------------- */

/* The process-wide local state: 0 the local store, 1 the Redis fallback. */
struct store_local *store_local_get(int which);
void		 store_local_put(struct store_local *);

/*
 * The policy against local state, atomically: fills RES. Returns 1 when it
 * took a lease and reserved, 2 when REQ's request id holds a lease already
 * (renewed, nothing counted), with *H the lease either way; 0 when it
 * refused. Limits that count across replicas (concurrency, rpm, tpm, day)
 * are divided by DIVISOR.
 */
int		 store_local_admit(struct store_local *,
		    const struct ig_admit_req *, uint64_t divisor,
		    uint64_t lease_ttl_ms, uint64_t day_offset_s,
		    struct ig_admit_result *res, struct local_handle *h);
/* Releases the lease of H (if it is still live), charging ACTUAL. */
void		 store_local_settle(struct store_local *,
		    const struct local_handle *h, uint64_t actual);
void		 store_local_renew(struct store_local *,
		    const struct local_handle *h, uint64_t lease_ttl_ms);

/* --- store_redis.c --------------------------------------------------- */

struct store_redis *store_redis_create(const struct ig_store_conf *,
		    struct event_base *, struct ig_store_stats *, char **err);
void		 store_redis_free(struct store_redis *);
/* Connected, authenticated and the scripts loaded. */
int		 store_redis_ready(const struct store_redis *);
/*
 * Ready, or setting a connection up: admissions wait for it (within the
 * store timeout) rather than fall back at once.
 */
int		 store_redis_accepting(const struct store_redis *);
/* Batches waiting or sent and unanswered, or settlements queued for a
 * Redis that is up. */
int		 store_redis_busy(const struct store_redis *);
/*
 * Queues OP's admission in its tenant's batch, sent at the end of this
 * loop iteration; -1 if it could not be queued (no memory).
 */
int		 store_redis_admit(struct store_redis *, struct ig_store_op *);
/*
 * Admissions timed out (each has had its fallback answer): drops the
 * connection if its oldest unanswered batch has waited so long that
 * Redis is taken for dead (see REDIS_STALL_TIMEOUTS).
 */
void		 store_redis_timeout(struct store_redis *, uint64_t timeout_ms);
/* Settles L (l->actual) now or when Redis is back; owns L. */
void		 store_redis_settle(struct store_redis *, struct ig_lease *);
void		 store_redis_renew(struct store_redis *, const struct ig_lease *);

#endif
