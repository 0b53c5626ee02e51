/*
 * The budget store interface: admission ops with deferred delivery and
 * cancellation, the store timeout, on_store_failure, and the dispatch of
 * settlements and renewals to where each lease lives.
 *
 * An op lives until both its user side is done (callback delivered, or
 * cancelled) and no Redis reply is due for it: a reply that arrives after
 * the timeout or a cancel is still read, and a lease it granted released.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "infergate/log.h"
#include "store_int.h"

#define STORE_DEFAULT_TTL_MS	120000

struct ig_store {
	struct ig_store_conf conf;	/* numbers only; strings not kept */
	struct event_base *base;
	struct store_local *local;	/* local store, or redis's fallback */
	struct store_redis *redis;
	struct ig_store_op *ops;	/* every live op */
	struct ig_store_stats stats;
};

static void	 store_op_event(evutil_socket_t, short, void *);

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

void
ig_store_free(struct ig_store *s)
{
	struct ig_store_op *op, *next;

	if (s == NULL)
		return;
	/* No callback from here on; replies still due free their ops. */
	for (op = s->ops; op != NULL; op = op->next) {
		op->state = OP_ORPHAN;
		if (op->lease != NULL) {
			store_lease_free(op->lease);
			op->lease = NULL;
		}
	}
	store_redis_free(s->redis);
	s->redis = NULL;
	for (op = s->ops; op != NULL; op = next) {
		next = op->next;
		store_op_free(op);
	}
	store_local_put(s->local);
	free(s);
}

void
store_lease_free(struct ig_lease *l)
{
	if (l == NULL)
		return;
	free(l->tenant);
	free(l->request_id);
	free(l);
}

static struct ig_lease *
store_lease_new(enum lease_where where, const struct ig_admit_req *req)
{
	struct ig_lease	*l;

	if ((l = calloc(1, sizeof(*l))) == NULL ||
	    (l->tenant = strdup(req->tenant)) == NULL ||
	    (l->request_id = strdup(req->request_id)) == NULL) {
		store_lease_free(l);
		return NULL;
	}
	l->where = where;
	l->reserved = req->input_tokens + req->output_tokens;
	l->actual = IG_USAGE_UNKNOWN;
	return l;
}

void
store_op_free(struct ig_store_op *op)
{
	struct ig_store	*s = op->store;

	if (op->prev != NULL)
		op->prev->next = op->next;
	else
		s->ops = op->next;
	if (op->next != NULL)
		op->next->prev = op->prev;
	if (op->ev != NULL)
		event_free(op->ev);
	store_lease_free(op->lease);
	free((char *)op->req.tenant);
	free((char *)op->req.request_id);
	free(op);
}

/* Gives back what a lease holds, charging ACTUAL. Frees L. */
static void
store_release(struct ig_store *s, struct ig_lease *l, uint64_t actual)
{
	switch (l->where) {
	case LEASE_LOCAL:
	case LEASE_FALLBACK:
		if (s->local != NULL)
			store_local_settle(s->local, l->tenant, l->request_id,
			    actual);
		break;
	case LEASE_REDIS:
		if (s->redis != NULL) {
			l->actual = actual;
			store_redis_settle(s->redis, l);
			return;		/* it owns L now */
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
	op->state = OP_DELIVERING;
	op->store->stats.admissions++;
	event_del(op->ev);
	event_active(op->ev, EV_READ, 1);
}

/* The answer of the local store, into OP. */
static void
store_local_answer(struct ig_store_op *op, enum lease_where where,
    uint64_t divisor)
{
	struct ig_store	*s = op->store;

	if (store_local_admit(s->local, &op->req, divisor,
	    s->conf.lease_ttl_ms, s->conf.day_offset_s, &op->res) == 1 &&
	    (op->lease = store_lease_new(where, &op->req)) == NULL) {
		store_local_settle(s->local, op->req.tenant,
		    op->req.request_id, 0);
		ig_policy_store_unavailable(&op->res);
	}
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
		if ((op->lease = store_lease_new(LEASE_NONE, &op->req)) == NULL)
			ig_policy_store_unavailable(&op->res);
		break;
	case IG_STORE_FAIL_LOCAL:
		store_local_answer(op, LEASE_FALLBACK, s->conf.replicas);
		break;
	}
	op->res.degraded = true;
}

struct ig_store_op *
ig_store_admit(struct ig_store *s, const struct ig_admit_req *req,
    ig_store_admit_cb cb, void *arg)
{
	struct ig_store_op *op;
	struct timeval	 tv;

	if ((op = calloc(1, sizeof(*op))) == NULL)
		return NULL;
	op->store = s;
	op->cb = cb;
	op->arg = arg;
	op->req = *req;
	op->req.tenant = strdup(req->tenant);
	op->req.request_id = strdup(req->request_id);
	if ((op->next = s->ops) != NULL)
		s->ops->prev = op;
	s->ops = op;
	if (op->req.tenant == NULL || op->req.request_id == NULL ||
	    (op->ev = event_new(s->base, -1, 0, store_op_event, op)) == NULL) {
		store_op_free(op);
		return NULL;
	}
	if (s->redis == NULL)
		store_local_answer(op, LEASE_LOCAL, 1);
	else if (!store_redis_ready(s->redis))
		store_fallback(op, "redis not connected");
	else if (store_redis_admit(s->redis, op) == -1) {
		s->stats.errors++;
		store_fallback(op, "redis send failed");
	} else {
		op->state = OP_WAITING;
		op->redis_pending = true;
		tv.tv_sec = (time_t)(s->conf.redis_timeout_ms / 1000);
		tv.tv_usec = (suseconds_t)(s->conf.redis_timeout_ms % 1000) * 1000;
		event_add(op->ev, &tv);
		return op;
	}
	store_deliver(op);
	return op;
}

static void
store_op_event(evutil_socket_t fd, short what, void *arg)
{
	struct ig_store_op *op = arg;
	struct ig_store	*s = op->store;
	struct ig_lease	*lease;
	bool		 timed_out = false;

	if (op->state == OP_WAITING) {
		/* The store timeout: answer now, read the reply when it comes. */
		s->stats.timeouts++;
		s->stats.errors++;
		store_fallback(op, "redis timeout");
		s->stats.admissions++;
		timed_out = true;
	} else if (op->state != OP_DELIVERING)
		return;
	lease = op->lease;
	op->lease = NULL;
	op->state = OP_ORPHAN;
	op->cb(&op->res, lease, op->arg);
	if (!op->redis_pending)
		store_op_free(op);
	/* May drop the connection, which frees an op still waiting. */
	if (timed_out)
		store_redis_timeout(s->redis);
}

void
store_admit_done(struct ig_store_op *op, int taken,
    const struct ig_policy_state *st, const char *err)
{
	struct ig_store	*s = op->store;
	struct ig_lease	*lease;

	op->redis_pending = false;
	if (taken == -1 && s->redis != NULL &&
	    (lease = store_lease_new(LEASE_REDIS, &op->req)) != NULL) {
		/* Sent, never answered: it may run when Redis comes back. */
		lease->release = true;
		store_release(s, lease, 0);
	}
	if (op->state == OP_ORPHAN) {
		/* Cancelled or timed out: nobody wants what was granted. */
		if (err == NULL && taken == 1 && s->redis != NULL &&
		    (lease = store_lease_new(LEASE_REDIS, &op->req)) != NULL)
			store_release(s, lease, 0);
		store_op_free(op);
		return;
	}
	event_del(op->ev);
	if (err != NULL || taken == 3) {
		s->stats.errors++;
		store_fallback(op, err != NULL ? err : "released already");
	} else if (taken == 2) {
		/* A retried admission: the lease it already holds. */
		ig_policy_decide(&op->req.limits, true, 0, st, &op->res);
		memset(&op->res, 0, offsetof(struct ig_admit_result, rl));
		op->res.admitted = true;
		op->res.status = 200;
		op->lease = store_lease_new(LEASE_REDIS, &op->req);
	} else {
		if (ig_policy_decide(&op->req.limits, op->req.shadow,
		    op->req.input_tokens + op->req.output_tokens, st,
		    &op->res) != taken)
			log_error("store: request %s: the admission script and "
			    "the policy disagree", op->req.request_id);
		if (taken) {
			op->res.admitted = true;
			op->res.status = 200;
			op->lease = store_lease_new(LEASE_REDIS, &op->req);
		}
	}
	if (op->res.admitted && op->lease == NULL) {
		ig_policy_store_unavailable(&op->res);
		if (taken && (lease = store_lease_new(LEASE_REDIS, &op->req)))
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
	event_del(op->ev);
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
			store_local_renew(s->local, l->tenant, l->request_id,
			    s->conf.lease_ttl_ms);
		break;
	case LEASE_REDIS:
		if (s->redis != NULL)
			store_redis_renew(s->redis, l);
		break;
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
ig_store_stats(const struct ig_store *s, struct ig_store_stats *st)
{
	*st = s->stats;
	st->degraded = s->redis != NULL && !store_redis_ready(s->redis);
}
