/*
 * The budget store's insides, shared by store.c (the interface, the ops,
 * on_store_failure), store_local.c and store_redis.c. Not a public header.
 */
#ifndef INFERGATE_STORE_INT_H
#define INFERGATE_STORE_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "infergate/store.h"

struct event;
struct store_local;
struct store_redis;

enum lease_where {
	LEASE_NONE,		/* on_store_failure: open; nothing to settle */
	LEASE_LOCAL,		/* store.type local */
	LEASE_FALLBACK,		/* the local fallback of a redis store */
	LEASE_REDIS
};

struct ig_lease {
	enum lease_where where;
	char		*tenant;
	char		*request_id;
	uint64_t	 reserved;
	uint64_t	 actual;	/* while a settlement waits for Redis */
	bool		 release;	/* its admission's reply was lost */
	struct ig_lease	*next;		/* the settlement queue */
};

enum op_state {
	OP_WAITING,		/* for the store's answer */
	OP_DELIVERING,		/* answer in RES, callback deferred */
	OP_ORPHAN		/* cancelled or timed out; Redis reply due */
};

struct ig_store_op {
	struct ig_store	*store;
	enum op_state	 state;
	struct event	*ev;		/* deferred delivery and the timeout */
	ig_store_admit_cb cb;
	void		*arg;
	struct ig_admit_req req;	/* tenant and request_id owned */
	struct ig_admit_result res;
	struct ig_lease	*lease;		/* granted, not yet delivered */
	bool		 redis_pending;	/* a Redis reply is due */
	struct ig_store_op *next, *prev;	/* the store's list of ops */
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

/* --- store_local.c --------------------------------------------------- */

/* The process-wide local state: 0 the local store, 1 the Redis fallback. */
struct store_local *store_local_get(int which);
void		 store_local_put(struct store_local *);

/*
 * The policy against local state, atomically: fills RES and, when it
 * returns 1, has taken the lease and reserved. Limits that count across
 * replicas (concurrency, rpm, tpm, day) are divided by DIVISOR.
 */
int		 store_local_admit(struct store_local *,
		    const struct ig_admit_req *, uint64_t divisor,
		    uint64_t lease_ttl_ms, uint64_t day_offset_s,
		    struct ig_admit_result *res);
void		 store_local_settle(struct store_local *, const char *tenant,
		    const char *request_id, uint64_t actual);
void		 store_local_renew(struct store_local *, const char *tenant,
		    const char *request_id, uint64_t lease_ttl_ms);

/* --- store_redis.c --------------------------------------------------- */

struct store_redis *store_redis_create(const struct ig_store_conf *,
		    struct event_base *, struct ig_store_stats *, char **err);
void		 store_redis_free(struct store_redis *);
/* Connected, authenticated and the scripts loaded. */
int		 store_redis_ready(const struct store_redis *);
/* Sends OP's admission; -1 if it could not be sent (not ready). */
int		 store_redis_admit(struct store_redis *, struct ig_store_op *);
/* An admission timed out (several in a row: the connection is dropped). */
void		 store_redis_timeout(struct store_redis *);
/* Settles L (l->actual) now or when Redis is back; owns L. */
void		 store_redis_settle(struct store_redis *, struct ig_lease *);
void		 store_redis_renew(struct store_redis *, const struct ig_lease *);

void		 store_lease_free(struct ig_lease *);
void		 store_op_free(struct ig_store_op *);

#endif
