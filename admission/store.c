/*
 * The budget store interface: admission ops with deferred delivery and
 * cancellation, the store timeout, on_store_failure, and the dispatch of
 * settlements and renewals to where each lease lives.
 *
 * An op lives until both its user side is done (callback delivered, or
 * cancelled) and no Redis reply is due for it: a reply that arrives after
 * the timeout or a cancel is still read, and a lease it granted released.
 *
 * Cost per request: an op and a lease are one block each, strings
 * included, taken from per-store freelists; answers wait on one FIFO
 * drained by one event per store (activated when the FIFO stops being
 * empty), and ops waiting for Redis sit on one FIFO in deadline order
 * (every op has the same timeout) under one timer, armed for the head.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "infergate/log.h"
#include "store_int.h"

#define STORE_DEFAULT_TTL_MS	120000
#define STORE_BUF		128	/* tenant + request id, pooled blocks */
#define STORE_POOL_MAX		4096	/* blocks kept per freelist */

struct op_queue {
	TAILQ_HEAD(, ig_store_op) ops;
	size_t		 n;
};

struct ig_store {
	struct ig_store_conf conf;	/* numbers only; strings not kept */
	struct event_base *base;
	struct store_local *local;	/* local store, or redis's fallback */
	struct store_redis *redis;
	struct ig_store_op *ops;	/* every live op */
	struct op_queue	 waiting;	/* for Redis, in deadline order */
	struct op_queue	 answered;	/* callbacks due */
	struct event	*deliver;	/* drains ANSWERED */
	struct event	*timer;		/* the head of WAITING's deadline */
	bool		 timer_armed;
	struct ig_store_op *free_ops;	/* freelists, linked by next */
	struct ig_lease	*free_leases;
	size_t		 nfree_ops, nfree_leases;
	struct ig_store_stats stats;
};

static void	 store_deliver_cb(evutil_socket_t, short, void *);
static void	 store_timer_cb(evutil_socket_t, short, void *);

struct ig_store *
ig_store_create(const struct ig_store_conf *conf, struct event_base *base,
    char **err)
{
	struct ig_store	*s;

	*err = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		goto nomem;
	s->conf = *conf;
	s->conf.redis_address = s->conf.redis_password = NULL;
	s->conf.redis_password_file = s->conf.redis_key_prefix = NULL;
	if (s->conf.lease_ttl_ms == 0)
		s->conf.lease_ttl_ms = STORE_DEFAULT_TTL_MS;
	if (s->conf.replicas == 0)
		s->conf.replicas = 1;
	s->base = base;
	TAILQ_INIT(&s->waiting.ops);
	TAILQ_INIT(&s->answered.ops);
	if ((s->deliver = event_new(base, -1, 0, store_deliver_cb, s)) == NULL ||
	    (s->timer = evtimer_new(base, store_timer_cb, s)) == NULL)
		goto nomem;
	if (conf->type == IG_STORE_LOCAL ||
	    conf->on_failure == IG_STORE_FAIL_LOCAL) {
		if ((s->local = store_local_get(conf->type == IG_STORE_LOCAL ?
		    0 : 1)) == NULL)
			goto nomem;
	}
	if (conf->type == IG_STORE_REDIS &&
	    (s->redis = store_redis_create(conf, base, &s->stats, err)) == NULL)
		goto fail;
	return s;
nomem:
	*err = strdup("out of memory");
fail:
	ig_store_free(s);
	return NULL;
}

static void
queue_append(struct op_queue *q, struct ig_store_op *op)
{
	TAILQ_INSERT_TAIL(&q->ops, op, qentry);
	q->n++;
	op->queued = true;
}

static void
queue_remove(struct op_queue *q, struct ig_store_op *op)
{
	TAILQ_REMOVE(&q->ops, op, qentry);
	q->n--;
	op->queued = false;
}

/* Off the queue its state puts it on, if it is on one. */
static void
store_op_unqueue(struct ig_store_op *op)
{
	if (!op->queued)
		return;
	queue_remove(op->state == OP_WAITING ? &op->store->waiting :
	    &op->store->answered, op);
}

static void
store_op_free(struct ig_store_op *op)
{
	struct ig_store	*s = op->store;

	store_op_unqueue(op);
	if (op->prev != NULL)
		op->prev->next = op->next;
	else
		s->ops = op->next;
	if (op->next != NULL)
		op->next->prev = op->prev;
	store_lease_free(op->lease);
	if (op->pooled && s->nfree_ops < STORE_POOL_MAX) {
		op->next = s->free_ops;
		s->free_ops = op;
		s->nfree_ops++;
	} else
		free(op);
}

void
ig_store_free(struct ig_store *s)
{
	struct ig_store_op *op, *next;
	struct ig_lease	*l;

	if (s == NULL)
		return;
	/* No callback from here on; replies still due free their ops. */
	for (op = s->ops; op != NULL; op = op->next) {
		store_op_unqueue(op);
		op->state = OP_ORPHAN;
		store_lease_free(op->lease);
		op->lease = NULL;
	}
	store_redis_free(s->redis);
	s->redis = NULL;
	for (op = s->ops; op != NULL; op = next) {
		next = op->next;
		store_op_free(op);
	}
	while ((op = s->free_ops) != NULL) {
		s->free_ops = op->next;
		free(op);
	}
	while ((l = s->free_leases) != NULL) {
		s->free_leases = l->next;
		free(l);
	}
	if (s->deliver != NULL)
		event_free(s->deliver);
	if (s->timer != NULL)
		event_free(s->timer);
	store_local_put(s->local);
	free(s);
}

/* Copies A and B (either may be NULL) into BUF; returns where B went. */
static const char *
store_copy2(char *buf, const char *a, size_t alen, const char *b,
    size_t blen, const char **acopy)
{
	*acopy = a != NULL ? memcpy(buf, a, alen + 1) : NULL;
	return b != NULL ? memcpy(buf + alen + 1, b, blen + 1) : NULL;
}

struct ig_lease *
store_lease_new(struct ig_store *s, enum lease_where where,
    const char *tenant, const char *request_id, uint64_t reserved)
{
	struct ig_lease	*l;
	size_t		 tl = tenant != NULL ? strlen(tenant) : 0;
	size_t		 il = request_id != NULL ? strlen(request_id) : 0;
	size_t		 need = tl + il + 2;
	bool		 pooled = need <= STORE_BUF;

	if (pooled && (l = s->free_leases) != NULL) {
		s->free_leases = l->next;
		s->nfree_leases--;
	} else if ((l = malloc(sizeof(*l) + (pooled ? STORE_BUF : need))) ==
	    NULL)
		return NULL;
	memset(l, 0, sizeof(*l));
	l->store = s;
	l->pooled = pooled;
	l->where = where;
	l->reserved = reserved;
	l->actual = IG_USAGE_UNKNOWN;
	l->request_id = store_copy2(l->buf, tenant, tl, request_id, il,
	    &l->tenant);
	return l;
}

void
store_lease_free(struct ig_lease *l)
{
	struct ig_store	*s;

	if (l == NULL)
		return;
	s = l->store;
	if (l->pooled && s->nfree_leases < STORE_POOL_MAX) {
		l->next = s->free_leases;
		s->free_leases = l;
		s->nfree_leases++;
	} else
		free(l);
}

static uint64_t
store_reserve(const struct ig_store_op *op)
{
	return op->req.input_tokens + op->req.output_tokens;
}

/* Gives back what a lease holds, charging ACTUAL. Frees L. */
static void
store_release(struct ig_store *s, struct ig_lease *l, uint64_t actual)
{
	switch (l->where) {
	case LEASE_LOCAL:
	case LEASE_FALLBACK:
		if (s->local != NULL && !l->shared)
			store_local_settle(s->local, &l->lh, actual);
		break;
	case LEASE_REDIS:
		if (s->redis != NULL && !l->shared) {
			l->actual = actual;
			store_redis_settle(s->redis, l);
			return;		/* it owns L now */
		}
		break;
	case LEASE_SLICE:
		if (s->redis != NULL) {
			store_redis_slice_settle(s->redis, l, actual);
			return;		/* freed there */
		}
		break;
	case LEASE_NONE:
		break;
	}
	store_lease_free(l);
}

/* The answer is in op->res (and op->lease): call back from the loop. */
static void
store_deliver(struct ig_store_op *op)
{
	struct ig_store	*s = op->store;

	store_op_unqueue(op);
	op->state = OP_DELIVERING;
	s->stats.admissions++;
	queue_append(&s->answered, op);
	if (s->answered.n == 1)
		event_active(s->deliver, EV_READ, 1);
}

/*
 * Calls back the ops answered when it started (answers that arrive from
 * the callbacks wait for the next run, so a callback that admits again
 * cannot keep this loop going).
 */
static void
store_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ig_store	*s = arg;
	struct ig_store_op *op;
	struct ig_lease	*lease;
	size_t		 n = s->answered.n;

	while (n-- > 0 && (op = TAILQ_FIRST(&s->answered.ops)) != NULL) {
		queue_remove(&s->answered, op);
		lease = op->lease;
		op->lease = NULL;
		op->state = OP_ORPHAN;
		op->cb(&op->res, lease, op->arg);
		if (!op->redis_pending)
			store_op_free(op);
	}
	if (s->answered.n > 0)
		event_active(s->deliver, EV_READ, 1);
}

void
ig_store_dispatch(struct ig_store *s)
{
	if (s != NULL && s->answered.n > 0)
		store_deliver_cb(-1, 0, s);
}

/* The answer of the local store, into OP. */
static void
store_local_answer(struct ig_store_op *op, enum lease_where where,
    uint64_t divisor)
{
	struct ig_store	*s = op->store;
	struct local_handle h;
	int		 rc;

	rc = store_local_admit(s->local, &op->req, divisor,
	    s->conf.lease_ttl_ms, s->conf.day_offset_s, &op->res, &h);
	if (rc == 0)
		return;
	if ((op->lease = store_lease_new(s, where, NULL, NULL,
	    store_reserve(op))) == NULL) {
		if (rc == 1)
			store_local_settle(s->local, &h, 0);
		ig_policy_store_unavailable(&op->res);
		return;
	}
	op->lease->lh = h;
	op->lease->shared = rc == 2;
}

/* Redis did not answer usefully: on_store_failure decides. */
static void
store_fallback(struct ig_store_op *op, const char *why)
{
	struct ig_store	*s = op->store;

	s->stats.fallbacks++;
	log_debug("store: request %s: %s; on_store_failure applies",
	    op->req.request_id, why);
	switch (s->conf.on_failure) {
	case IG_STORE_FAIL_CLOSED:
		ig_policy_store_unavailable(&op->res);
		break;
	case IG_STORE_FAIL_OPEN:
		memset(&op->res, 0, sizeof(op->res));
		op->res.admitted = true;
		op->res.status = 200;
		if ((op->lease = store_lease_new(s, LEASE_NONE, NULL, NULL,
		    store_reserve(op))) == NULL)
			ig_policy_store_unavailable(&op->res);
		break;
	case IG_STORE_FAIL_LOCAL:
		store_local_answer(op, LEASE_FALLBACK, s->conf.replicas);
		break;
	}
	op->res.degraded = true;
}

static uint64_t
store_now_ms(const struct ig_store *s)
{
	struct timeval	 tv;

	event_base_gettimeofday_cached(s->base, &tv);
	return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static void
store_timer_arm(struct ig_store *s, uint64_t in_ms)
{
	struct timeval	 tv = { (time_t)(in_ms / 1000),
	    (suseconds_t)(in_ms % 1000) * 1000 };

	evtimer_add(s->timer, &tv);
	s->timer_armed = true;
}

/* Times out the ops whose deadline passed; the rest wait for the next. */
static void
store_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ig_store	*s = arg;
	struct ig_store_op *op;
	uint64_t	 now = store_now_ms(s);
	unsigned	 n = 0;

	s->timer_armed = false;
	while ((op = TAILQ_FIRST(&s->waiting.ops)) != NULL &&
	    op->deadline_ms <= now) {
		/* Answer now; the reply is read when it comes. */
		s->stats.timeouts++;
		s->stats.errors++;
		store_fallback(op, "redis timeout");
		store_deliver(op);
		n++;
	}
	if (op != NULL)
		store_timer_arm(s, op->deadline_ms - now);
	/* May drop the connection, which answers the ops still waiting. */
	if (n > 0)
		store_redis_timeout(s->redis, s->conf.redis_timeout_ms);
}

static struct ig_store_op *
store_op_new(struct ig_store *s, const struct ig_admit_req *req, bool copy)
{
	struct ig_store_op *op;
	size_t		 tl = copy ? strlen(req->tenant) : 0;
	size_t		 il = copy ? strlen(req->request_id) : 0;
	size_t		 need = copy ? tl + il + 2 : 0;
	bool		 pooled = need <= STORE_BUF;

	if (pooled && (op = s->free_ops) != NULL) {
		s->free_ops = op->next;
		s->nfree_ops--;
	} else if ((op = malloc(sizeof(*op) + (pooled ? STORE_BUF : need))) ==
	    NULL)
		return NULL;
	memset(op, 0, offsetof(struct ig_store_op, res));
	op->lease = NULL;
	op->deadline_ms = 0;
	op->store = s;
	op->pooled = pooled;
	op->req = *req;
	if (copy)
		op->req.request_id = store_copy2(op->buf, req->tenant, tl,
		    req->request_id, il, &op->req.tenant);
	if ((op->next = s->ops) != NULL)
		s->ops->prev = op;
	op->prev = NULL;
	s->ops = op;
	return op;
}

struct ig_store_op *
ig_store_admit(struct ig_store *s, const struct ig_admit_req *req,
    ig_store_admit_cb cb, void *arg)
{
	struct ig_store_op *op;
	int		 taken;

	if ((op = store_op_new(s, req, s->redis != NULL)) == NULL)
		return NULL;
	op->cb = cb;
	op->arg = arg;
	if (s->redis == NULL) {
		store_local_answer(op, LEASE_LOCAL, 1);
		/* the caller's strings: not to be used after this call */
		op->req.tenant = op->req.request_id = NULL;
	} else if ((taken = store_redis_take(s->redis, op)) != 0) {
		/* from the tenant's slice (store.slices), or out of memory */
		if (taken == 1)
			s->stats.slice_admissions++;
		else
			ig_policy_store_unavailable(&op->res);
	} else if (!store_redis_accepting(s->redis))
		store_fallback(op, "redis not connected");
	else if (store_redis_admit(s->redis, op) == -1) {
		s->stats.errors++;
		store_fallback(op, "redis send failed");
	} else {
		op->state = OP_WAITING;
		op->redis_pending = true;
		op->deadline_ms = store_now_ms(s) + s->conf.redis_timeout_ms;
		queue_append(&s->waiting, op);
		if (!s->timer_armed)
			store_timer_arm(s, s->conf.redis_timeout_ms);
		return op;
	}
	store_deliver(op);
	return op;
}

/* A Redis lease for OP, reserved at ST's second. */
static struct ig_lease *
store_redis_lease(struct ig_store_op *op, const struct ig_policy_state *st)
{
	struct ig_lease	*l;

	l = store_lease_new(op->store, LEASE_REDIS, op->req.tenant,
	    op->req.request_id, store_reserve(op));
	if (l != NULL && st != NULL)
		l->sec = st->now_ms / 1000;
	return l;
}

void
store_admit_done(struct ig_store_op *op, int taken,
    const struct ig_policy_state *st, const char *err)
{
	struct ig_store	*s = op->store;
	struct ig_lease	*lease;

	op->redis_pending = false;
	if (taken == -1 && s->redis != NULL &&
	    (lease = store_redis_lease(op, NULL)) != NULL) {
		/* Sent, never answered: it may run when Redis comes back. */
		lease->release = true;
		store_release(s, lease, 0);
	}
	if (op->state != OP_WAITING) {
		/* Cancelled or timed out: nobody wants what was granted. */
		if (err == NULL && taken == 1 && s->redis != NULL &&
		    (lease = store_redis_lease(op, st)) != NULL)
			store_release(s, lease, 0);
		if (op->state == OP_ORPHAN)
			store_op_free(op);
		return;		/* DELIVERING: its fallback answer is due */
	}
	if (err != NULL || taken == 3) {
		s->stats.errors++;
		store_fallback(op, err != NULL ? err : "released already");
	} else if (taken == 2) {
		/* A retried admission: the lease it already holds. */
		ig_policy_decide(&op->req.limits, true, 0, st, &op->res);
		memset(&op->res, 0, offsetof(struct ig_admit_result, rl));
		op->res.admitted = true;
		op->res.status = 200;
		if ((op->lease = store_redis_lease(op, st)) != NULL)
			op->lease->shared = true;
	} else {
		if (ig_policy_decide(&op->req.limits, op->req.shadow,
		    store_reserve(op), st, &op->res) != taken)
			log_error("store: request %s: the admission script and "
			    "the policy disagree", op->req.request_id);
		if (taken) {
			op->res.admitted = true;
			op->res.status = 200;
			op->lease = store_redis_lease(op, st);
		}
	}
	if (op->res.admitted && op->lease == NULL) {
		ig_policy_store_unavailable(&op->res);
		if (taken == 1 && (lease = store_redis_lease(op, st)) != NULL)
			store_release(s, lease, 0);
	}
	store_deliver(op);
}

void
ig_store_cancel(struct ig_store_op *op)
{
	struct ig_store	*s;

	if (op == NULL)
		return;
	s = op->store;
	store_op_unqueue(op);
	if (op->lease != NULL) {
		store_release(s, op->lease, 0);
		op->lease = NULL;
	}
	op->state = OP_ORPHAN;
	if (!op->redis_pending)
		store_op_free(op);
}

void
ig_store_settle(struct ig_store *s, struct ig_lease *l, uint64_t actual)
{
	if (l != NULL)
		store_release(s, l, actual);
}

void
ig_store_renew(struct ig_store *s, struct ig_lease *l)
{
	switch (l->where) {
	case LEASE_LOCAL:
	case LEASE_FALLBACK:
		if (s->local != NULL)
			store_local_renew(s->local, &l->lh,
			    s->conf.lease_ttl_ms);
		break;
	case LEASE_REDIS:
		if (s->redis != NULL)
			store_redis_renew(s->redis, l);
		break;
	case LEASE_SLICE:	/* its slot is renewed with the slice's asks */
	case LEASE_NONE:
		break;
	}
}

uint64_t
ig_store_renew_ms(const struct ig_store *s)
{
	return s->conf.lease_ttl_ms / 3;
}

uint64_t
ig_lease_reserved(const struct ig_lease *l)
{
	return l->reserved;
}

void
ig_store_drain(struct ig_store *s)
{
	if (s->redis != NULL)
		store_redis_drain(s->redis);
}

bool
ig_store_busy(const struct ig_store *s)
{
	return s->ops != NULL || (s->redis != NULL && store_redis_busy(s->redis));
}

void
ig_store_stats(const struct ig_store *s, struct ig_store_stats *st)
{
	*st = s->stats;
	st->degraded = s->redis != NULL && !store_redis_ready(s->redis);
}
