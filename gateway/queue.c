/*
 * Pool capacity on the request path: a pool's `max_inflight` and its
 * bounded priority queue.
 *
 *   proxy_admitted -> pool_enter: a slot of the pool (ig_cap, shared by
 *     every worker), or of the first fallback model's pool that has one
 *     free when the queue is full (or off), or a place in this worker's
 *     queue, or 503 with Retry-After
 *   a slot comes free (pool_leave) -> the worker's grant event, and a
 *     kick of every other worker that has requests waiting for the pool
 *     -> pool_grant: the oldest request of the highest priority goes on
 *     (proxy_dispatch)
 *   queue.max_wait passes -> a fallback with a free slot, or 503
 *
 * Each worker queues its own requests, three FIFO lists by priority per
 * pool; `queue.max_waiting` bounds the sum over the workers. When it is
 * reached, a request of higher priority than some waiter of this worker
 * takes the place of the youngest waiter of the lowest priority (which
 * is shed); otherwise the newcomer is. A worker that queues publishes its
 * queue's length, then tries for a slot again; a release lowers the
 * count, then reads the lengths (ig_cap_release): a slot that comes free
 * meanwhile is seen by one of the two. Priority orders the requests of
 * one worker; across workers, the first to take a free slot has it.
 *
 * A slot is held from the first attempt until the request is freed
 * (retries on other backends of the pool keep it). Waiting is bounded by
 * queue.max_wait alone: the pool's timeouts (timeouts.request included)
 * start with the first attempt. The limit is the published config's
 * (ig_cap_set_max): a reload that changes it wakes the queues.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "infergate/capacity.h"
#include "infergate/log.h"
#include "gateway.h"

/* Retry-After (s) of a request shed for capacity. */
#define QUEUE_RETRY_AFTER_S	1

struct pool_queue {
	struct ig_cap	*cap;
	struct ig_request_q q[IG_PRIO_HIGH + 1];	/* oldest first */
	size_t		 n;
	struct pool_queue *next;
};

static void	 pool_grant_cb(evutil_socket_t, short, void *);
static void	 pool_kick_cb(evutil_socket_t, short, void *);
static void	 pool_timeout_cb(evutil_socket_t, short, void *);
static void	 pool_unpark(struct ig_request *);
static void	 pool_no_backend_error(struct ig_request *);

int
pool_worker_init(struct ig_worker *w)
{
	TAILQ_INIT(&w->parked);
	w->kick_fd = -1;
	if ((w->grant = event_new(w->base, -1, 0, pool_grant_cb, w)) == NULL ||
	    (w->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1 ||
	    (w->kick = event_new(w->base, w->kick_fd, EV_READ | EV_PERSIST,
	    pool_kick_cb, w)) == NULL || event_add(w->kick, NULL) == -1)
		return -1;
	return 0;
}

/* After the worker's loop: its requests are freed, its queues empty. */
void
pool_worker_free(struct ig_worker *w)
{
	struct pool_queue *pq;

	while ((pq = w->queues) != NULL) {
		w->queues = pq->next;
		free(pq);
	}
	if (w->grant != NULL)
		event_free(w->grant);
	if (w->kick != NULL)
		event_free(w->kick);
	if (w->kick_fd > 0)
		close(w->kick_fd);
}

static struct pool_queue *
pool_queue_of(struct ig_worker *w, struct ig_cap *cap)
{
	struct pool_queue *pq;
	int i;

	for (pq = w->queues; pq != NULL; pq = pq->next)
		if (pq->cap == cap)
			return pq;
	if ((pq = calloc(1, sizeof(*pq))) == NULL)
		return NULL;
	pq->cap = cap;
	for (i = 0; i <= IG_PRIO_HIGH; i++)
		TAILQ_INIT(&pq->q[i]);
	pq->next = w->queues;
	w->queues = pq;
	return pq;
}

/* The queue's length and oldest arrival, for the other workers. */
static void
pool_publish(struct ig_worker *w, struct pool_queue *pq)
{
	uint64_t oldest = 0;
	int i;

	for (i = 0; i <= IG_PRIO_HIGH; i++) {
		struct ig_request *h = TAILQ_FIRST(&pq->q[i]);

		if (h != NULL && (oldest == 0 || h->t_queued < oldest))
			oldest = h->t_queued;
	}
	ig_cap_set_waiting(pq->cap, w->id, pq->n, oldest);
}

/* A wait of at most queue.max_wait starts (in a queue, or parked). */
static int
pool_wait_start(struct ig_request *r)
{
	uint64_t ms = r->model->pool->conf->queue_max_wait_ms;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	if ((r->qtimer = evtimer_new(r->worker->base, pool_timeout_cb, r)) ==
	    NULL || evtimer_add(r->qtimer, &tv) == -1) {
		if (r->qtimer != NULL)
			event_free(r->qtimer);
		r->qtimer = NULL;
		return -1;
	}
	r->t_queued = now_ns();
	return 0;
}

/* The wait ends: its timer, and its time (0 when it ended at once). */
static uint64_t
pool_wait_end(struct ig_request *r)
{
	uint64_t waited = now_ns() - r->t_queued;

	event_free(r->qtimer);
	r->qtimer = NULL;
	r->queue_ns += waited;
	return waited;
}

static void
pool_unqueue(struct ig_request *r)
{
	struct pool_queue *pq = r->queue;

	TAILQ_REMOVE(&pq->q[r->priority], r, qentry);
	pq->n--;
	r->queue = NULL;
	if (pool_wait_end(r) > 0)	/* not granted in the same event */
		ig_cap_count_queued(pq->cap);
	pool_publish(r->worker, pq);
}

static void	 pool_release(struct ig_request *);

/* The request has a slot of M's pool: on to the backend. */
static void
pool_go(struct ig_request *r, const struct ig_model *m)
{
	pool_release(r);	/* a fallback from a pool without backends */
	r->cap = m->pool->cap;
	r->model = m;
	proxy_dispatch(r);
}

/*
 * Whether fallback M can serve the request at all: its context_tokens (0:
 * not known) holds the input, estimated by M's own rule, and the output
 * the request asks for. A GPU that cannot serve it never gets it.
 */
static bool
pool_fits(const struct ig_request *r, const struct ig_model *m)
{
	uint64_t ctx = m->conf->context_tokens, out = 0;

	if (ctx == 0)
		return true;
	if (r->set_max_tokens)	/* the gateway writes it: a tenant's cap */
		out = r->max_tokens;
	else if (r->info.max_field != IG_MAX_NONE)
		out = r->info.max_tokens;
	return ig_request_estimate_input(&r->info, m->conf) + out <= ctx;
}

/*
 * The first fallback of the request's model whose pool has a free slot
 * now, that the tenant may use and whose context holds the request; false
 * when none has.
 */
static bool
pool_fallback(struct ig_request *r)
{
	const struct ig_model_conf *mc = r->model->conf;
	const struct ig_model *m;
	size_t i;

	if (r->fell_back_from != NULL)	/* one hop: never A -> B -> A */
		return false;
	for (i = 0; i < mc->nfallback; i++) {
		m = ig_catalog_model(r->snap->catalog, mc->fallback[i],
		    strlen(mc->fallback[i]));
		if (m == NULL || m->pool == NULL || m->pool == r->model->pool ||
		    !admit_model_allowed(r, m->conf->name) ||
		    !ig_pool_has_backend(m->pool) || !pool_fits(r, m))
			continue;
		/* Not ahead of the fallback pool's own waiters. */
		if (ig_cap_waiting(m->pool->cap) == 0 &&
		    ig_cap_try_acquire(m->pool->cap)) {
			ig_cap_count_fallback(r->model->pool->cap);
			r->fell_back_from = r->model;
			pool_go(r, m);
			return true;
		}
	}
	return false;
}

/* 503 for capacity, with Retry-After; frees R. */
static void
pool_shed(struct ig_request *r, enum ig_cap_shed why)
{
	const char *pool = r->model->pool->conf->name;

	ig_cap_count(r->model->pool->cap, why);
	r->outcome = "shed";
	r->retry_after_s = QUEUE_RETRY_AFTER_S;
	switch (why) {
	case IG_SHED_TIMEOUT:
		proxy_send_error(r, 503, "server_error", "queue_timeout", NULL,
		    "the request waited too long for a free slot of pool '%s'",
		    pool);
		break;
	case IG_SHED_DISPLACED:
		proxy_send_error(r, 503, "server_error", "pool_overloaded",
		    NULL, "pool '%s' is at capacity: a request of higher "
		    "priority took this one's place in its queue", pool);
		break;
	default:
		proxy_send_error(r, 503, "server_error", "pool_overloaded",
		    NULL, "pool '%s' is at capacity and its queue is %s", pool,
		    r->model->pool->conf->queue_max_waiting == 0 ||
		    r->model->pool->conf->queue_max_wait_ms == 0 ? "off" :
		    "full");
		break;
	}
}

/* The youngest waiter of the lowest priority below PRIO, or NULL. */
static struct ig_request *
pool_victim(struct pool_queue *pq, enum ig_priority prio)
{
	int i;

	for (i = IG_PRIO_LOW; i < (int)prio; i++)
		if (!TAILQ_EMPTY(&pq->q[i]))
			return TAILQ_LAST(&pq->q[i], ig_request_q);
	return NULL;
}

static void
pool_grant(struct ig_worker *w, struct pool_queue *pq)
{
	struct ig_request *r;
	int i;

	while (pq->n > 0) {
		for (i = IG_PRIO_HIGH; TAILQ_EMPTY(&pq->q[i]); i--)
			;
		r = TAILQ_FIRST(&pq->q[i]);
		if (!ig_cap_try_acquire(pq->cap))
			return;
		pool_unqueue(r);
		pool_go(r, r->model);
	}
}

void
pool_enter(struct ig_request *r)
{
	const struct ig_pool *pool = r->model->pool;
	const struct ig_pool_conf *pc = pool->conf;
	struct ig_worker *w = r->worker;
	struct pool_queue *pq;
	struct ig_request *victim = NULL;

	r->pooled = true;
	/* Nobody waits: the slot is the newcomer's if there is one. Else it
	 * queues behind them, and pool_grant below keeps the order. */
	if (ig_cap_waiting(pool->cap) == 0 && ig_cap_try_acquire(pool->cap)) {
		pool_go(r, r->model);
		return;
	}
	if (pc->queue_max_waiting == 0 || pc->queue_max_wait_ms == 0 ||
	    (pq = pool_queue_of(w, pool->cap)) == NULL) {
		if (!pool_fallback(r))
			pool_shed(r, IG_SHED_FULL);
		return;
	}
	/* Full: a higher priority displaces the youngest of the lowest
	 * (which may go to a fallback); otherwise the newcomer tries one. */
	if (ig_cap_waiting(pool->cap) >= pc->queue_max_waiting &&
	    (victim = pool_victim(pq, r->priority)) == NULL) {
		if (!pool_fallback(r))
			pool_shed(r, IG_SHED_FULL);
		return;
	}
	if (pool_wait_start(r) == -1) {
		pool_shed(r, IG_SHED_FULL);
		return;
	}
	r->queue = pq;
	TAILQ_INSERT_TAIL(&pq->q[r->priority], r, qentry);
	pq->n++;
	pool_publish(w, pq);
	if (victim != NULL) {
		pool_unqueue(victim);
		if (!pool_fallback(victim))
			pool_shed(victim, IG_SHED_DISPLACED);
	}
	/* A slot freed between the first try and the publish above. */
	pool_grant(w, pq);
}

static void
pool_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ig_request *r = arg;

	if (r->parked) {
		pool_unpark(r);
		if (!pool_fallback(r))
			pool_no_backend_error(r);
		return;
	}
	pool_unqueue(r);
	if (!pool_fallback(r))
		pool_shed(r, IG_SHED_TIMEOUT);
}

/* W looks at its queues and parked requests (pool_kick_cb). */
static void
pool_kick(struct ig_worker *w)
{
	uint64_t one = 1;

	if (write(w->kick_fd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		log_error("worker %u: cannot wake it up: %s", w->id,
		    strerror(errno));
}

/* Wakes the workers that have requests waiting for CAP. */
static void
pool_wake(struct ig_worker *self, struct ig_cap *cap)
{
	size_t i, n = workers_count();

	for (i = 0; i < n; i++) {
		struct ig_worker *w = worker_at(i);

		if (ig_cap_waiting_at(cap, w->id) == 0)
			continue;
		if (w == self)
			event_active(w->grant, EV_WRITE, 1);
		else
			pool_kick(w);
	}
}

/* Gives back the request's slot, waking who waits for it. */
static void
pool_release(struct ig_request *r)
{
	struct ig_cap *cap = r->cap;

	if (cap == NULL)
		return;
	r->cap = NULL;
	if (ig_cap_release(cap))
		pool_wake(r->worker, cap);
}

/* The request is being freed: its place in a queue, its slot. */
void
pool_leave(struct ig_request *r)
{
	if (r->queue != NULL)
		pool_unqueue(r);
	if (r->parked)
		pool_unpark(r);
	pool_release(r);
}

/*
 * No backend of the request's pool is ready (all down by their health
 * checks), before its first attempt: when_empty says what happens. It
 * keeps its slot while parked (nothing of the pool can be served anyway).
 */
void
pool_no_backend(struct ig_request *r)
{
	const struct ig_pool_conf *pc = r->model->pool->conf;

	switch (pc->when_empty) {
	case IG_EMPTY_QUEUE:
		/* queue.max_waiting bounds the parked too */
		if (pc->queue_max_wait_ms == 0 ||
		    !ig_cap_park(r->model->pool->cap, pc->queue_max_waiting))
			break;
		if (pool_wait_start(r) == -1) {
			ig_cap_unpark(r->model->pool->cap);
			break;
		}
		r->parked = true;
		TAILQ_INSERT_TAIL(&r->worker->parked, r, qentry);
		return;
	case IG_EMPTY_FALLBACK:
		if (pool_fallback(r))
			return;
		break;
	case IG_EMPTY_FAIL:
		break;
	}
	pool_no_backend_error(r);
}

static void
pool_unpark(struct ig_request *r)
{
	TAILQ_REMOVE(&r->worker->parked, r, qentry);
	r->parked = false;
	ig_cap_unpark(r->model->pool->cap);
	pool_wait_end(r);
}

static void
pool_no_backend_error(struct ig_request *r)
{
	r->retry_after_s = QUEUE_RETRY_AFTER_S;
	proxy_send_error(r, 503, "server_error", "no_backend", NULL,
	    "no backend of pool '%s' is ready", r->model->pool->conf->name);
}

/* A backend came up (the health checker): parked requests go on. */
static void
pool_unpark_ready(struct ig_worker *w)
{
	struct ig_request_q ready;
	struct ig_request *r, *next;

	TAILQ_INIT(&ready);
	for (r = TAILQ_FIRST(&w->parked); r != NULL; r = next) {
		next = TAILQ_NEXT(r, qentry);
		if (!ig_pool_has_backend(proxy_pool_now(r)))
			continue;
		pool_unpark(r);
		TAILQ_INSERT_TAIL(&ready, r, qentry);
	}
	/* Sent from a list of their own: each may be answered and freed. */
	while ((r = TAILQ_FIRST(&ready)) != NULL) {
		TAILQ_REMOVE(&ready, r, qentry);
		proxy_forward(r);
	}
}

/* Every worker looks at its parked requests and queues again. */
void
pool_wake_all(void)
{
	size_t i, n = workers_count();

	for (i = 0; i < n; i++)
		pool_kick(worker_at(i));
}

/*
 * Grants from the loop, never from inside pool_leave: a request that
 * goes on may be answered (and freed) at once.
 */
static void
pool_grant_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ig_worker *w = arg;
	struct pool_queue *pq;

	for (pq = w->queues; pq != NULL; pq = pq->next)
		pool_grant(w, pq);
}

static void
pool_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ig_worker *w = arg;
	uint64_t n;

	if (read(fd, &n, sizeof(n)) == -1)
		return;
	/* A publish kicks every worker: an idle one lets the old snapshot
	 * (and the backends only it holds) go now, not at its next request. */
	snapshot_peek();
	pool_unpark_ready(w);
	pool_grant_cb(-1, 0, w);
}
