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
struct store_slice;
struct store_slices;

enum lease_where {
	LEASE_NONE,		/* on_store_failure: open; nothing to settle */
	LEASE_LOCAL,		/* store.type local */
	LEASE_FALLBACK,		/* the local fallback of a redis store */
	LEASE_REDIS,
	LEASE_SLICE		/* a redis store's slice (store.slices) */
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
					   (unknown when RELEASE); SLICE:
					   its grant's */
	struct local_handle lh;		/* LOCAL, FALLBACK */
	struct store_slice *slice;	/* SLICE */
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

/*
 * A lease of WHERE reserving RESERVED, with copies of TENANT and
 * REQUEST_ID (either may be NULL: not kept); NULL when out of memory.
 */
struct ig_lease	*store_lease_new(struct ig_store *, enum lease_where,
		    const char *tenant, const char *request_id,
		    uint64_t reserved);

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
/* The batch script's text (tests/unit/test_store.c runs it by hand). */
const char	*store_redis_batch_script(void);
/*
 * store.slices: admits OP from its tenant's slice without a round trip.
 * Returns 1 with op->res and op->lease filled (LEASE_SLICE), 0 when the
 * slice cannot take it (the caller admits it through Redis), -1 when
 * out of memory.
 */
int		 store_redis_take(struct store_redis *, struct ig_store_op *);
/* A LEASE_SLICE lease ends: its slot and its token delta. Frees L. */
void		 store_redis_slice_settle(struct store_redis *,
		    struct ig_lease *l, uint64_t actual);
/* Drain: every slice gives back what it holds now, not at its expiry. */
void		 store_redis_drain(struct store_redis *);

/* --- store_slice.c: the slices' bookkeeping (no I/O) ------------------ */

/*
 * store.slices. A worker holds, per tenant it serves, a slice of the
 * tenant's limits taken from Redis in advance: concurrency slots (zset
 * members "<writer>:<i>" in the tenant's leases, renewed with every ask)
 * and grants of requests and tokens charged to the tenant's minute
 * window and day in the second they were granted. Admissions that fit
 * are answered from it at once; the rest go to Redis one by one, as
 * without slices, and make the slice ask for more. An ask (one per
 * tenant in flight, carried by the tenant's batch) gives back what
 * expired, reports the token deltas of the requests it admitted, keeps
 * the slots in use and asks for what the demand of the last period
 * wants; the script grants at most half of what is left under each
 * limit. An ask whose reply was lost is sent again unchanged (same
 * sequence number: the script runs it at most once).
 */
#define SLICE_GRANTS	4	/* grants held at once */
#define SLICE_DELTAS	32	/* seconds of token deltas waiting */

struct slice_delta {
	uint64_t	 sec;		/* the grant's second */
	int64_t		 req, tok;	/* requests, tokens to add */
};

/* What one ask sends (kept until answered; sent again when lost). */
struct slice_ask {
	uint64_t	 seq;
	uint64_t	 need;		/* slots kept: members 1..need */
	uint64_t	 want;		/* slots wanted in all (>= need) */
	uint64_t	 old_held;	/* members need+1..old_held go */
	uint64_t	 want_req, want_tok;
	size_t		 ndeltas;
	struct slice_delta deltas[SLICE_DELTAS];	/* the slice's, moved */
};

/* What the script answered an ask. */
struct slice_reply {
	uint64_t	 now_ms;	/* Redis's clock */
	uint64_t	 sec;		/* the grant's second */
	uint64_t	 held;		/* slots held now */
	uint64_t	 req, tok;	/* granted */
	uint64_t	 others;	/* leases of everyone else */
	uint64_t	 win_requests, win_tokens, day_tokens;	/* before it */
};

struct store_slices *store_slices_new(uint64_t period_ms, uint64_t ttl_ms,
		    uint64_t day_offset_s);
void		 store_slices_free(struct store_slices *);
/* Monotonic milliseconds, as the slices count them. */
uint64_t	 store_slices_now(void);
/* TENANT's slice (HASH: its store_redis hash), NULL if none; CREATE
 * makes one (NULL when out of memory). */
struct store_slice *store_slices_get(struct store_slices *,
		    const char *tenant, size_t len, uint64_t hash,
		    bool create);
/*
 * Takes REQ from slice S if it fits: 1 with RES filled (the policy's
 * answer and headers) and *SEC the grant's second; 0 when it does not
 * fit (REQ's limits, if new, become S's and its grants go back). Does
 * not ask itself.
 */
int		 store_slice_take(struct store_slices *,
		    struct store_slice *, const struct ig_admit_req *req,
		    uint64_t now, struct ig_admit_result *res, uint64_t *sec);
/* An admission of S's tenant that went to Redis: demand. */
void		 store_slice_missed(struct store_slice *,
		    const struct ig_admit_req *req);
/*
 * What an admission or a settlement through Redis did to the tenant's
 * numbers (requests, tokens, leases), for the headers of the admissions
 * answered from S until its next answer holds it. Not for an admission
 * answered with S's ask (its answer holds it already).
 */
void		 store_slice_redis(struct store_slice *, int64_t req,
		    int64_t tok, int64_t conc);
/* S should ask now (nothing out, and running low or none). */
bool		 store_slice_should_ask(const struct store_slices *,
		    const struct store_slice *, uint64_t now);
/* S can carry an ask in its tenant's next batch (none out). */
bool		 store_slice_can_ask(const struct store_slice *);
/* S's ask goes in its tenant's next batch (store_slice_ask builds it). */
void		 store_slice_attached(struct store_slices *, struct store_slice *);
/*
 * The ask to send for S, built now (SHRINK: the batch has admissions
 * going to Redis, so idle slots go first) or the lost one again.
 */
const struct slice_ask *store_slice_ask(struct store_slices *,
		    struct store_slice *, bool shrink, uint64_t now);
void		 store_slice_answered(struct store_slices *,
		    struct store_slice *, const struct slice_reply *,
		    uint64_t now);
/* The ask's reply was lost: sent again unchanged when Redis is back. */
void		 store_slice_lost(struct store_slices *, struct store_slice *);
/*
 * The ask's reply was an error (logged by the caller): sent again, a
 * period later, up to three times, then dropped.
 */
void		 store_slice_failed(struct store_slices *, struct store_slice *,
		    uint64_t now);
/* S's limits and shadow (false: it has none yet). */
bool		 store_slice_limits(const struct store_slice *,
		    struct ig_tenant_limits *, bool *shadow);
/* S was attached to a batch that will not carry its ask after all. */
void		 store_slice_detached(struct store_slices *, struct store_slice *);
/*
 * A lease of S ends: ACTUAL tokens of RESERVED (IG_USAGE_UNKNOWN).
 * Returns true when S should ask now: it got fewer slots than it wanted
 * (the tenant is at its concurrency limit), so the one freed goes back
 * at once rather than at S's next ask.
 */
bool		 store_slice_settle(struct store_slices *, struct store_slice *,
		    uint64_t sec, uint64_t reserved, uint64_t actual,
		    uint64_t now);
/*
 * The slices due: expired grants, slots to renew, deltas to report.
 * Calls FN for each that should ask now (ARG passed on); frees the
 * slices left with nothing. Returns when the next one is due
 * (UINT64_MAX: none).
 */
uint64_t	 store_slices_run(struct store_slices *, uint64_t now,
		    void (*fn)(struct store_slice *, void *), void *arg);
/* The lost asks, to send again (Redis is back). */
void		 store_slices_lost(struct store_slices *,
		    void (*fn)(struct store_slice *, void *), void *arg);
/* From now on every slice gives back what it holds. */
void		 store_slices_drain(struct store_slices *, uint64_t now);
/* Something is held or not yet reported. */
bool		 store_slices_busy(const struct store_slices *);
/* The tenant of S, its length and its hash (the one it was got with). */
const char	*store_slice_tenant(const struct store_slice *, size_t *len,
		    uint64_t *hash);

#endif
