/*
 * Worker threads: each has its own event base, its own SO_REUSEPORT
 * listening sockets (the kernel spreads connections), its own upstream
 * connection pools and counters. Nothing on the request path is shared
 * between workers except read-only snapshots.
 *
 * Stopping: the main thread wakes each worker through its eventfd;
 * the worker closes its listeners, and leaves its loop once no request is
 * in flight or the shutdown grace has passed.
 */
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <openssl/ssl.h>

#include "infergate/admission_conf.h"
#include "infergate/log.h"
#include "infergate/store.h"
#include "gateway.h"

static void
worker_blocks_drop(struct wblock_cache *bc)
{
	void *p, *next;

	for (p = bc->head; p != NULL; p = next) {
		memcpy(&next, p, sizeof(void *));
		free(p);
	}
	bc->head = NULL;
	bc->n = 0;
}

/* Every read lands in the worker's buffer of this size first (io.c). */
#define WORKER_READ_BUF		(64 * 1024)

static struct ig_worker	*workers;
static size_t		 nworkers;

/* The start's listen entries: TLS context (a reference) and address. */
static struct ssl_ctx_st **listen_tls;
static char		**listen_addr;
static size_t		 nlisten_tls;

/* The start's store section, what the workers' stores were made with. */
static struct ig_config	*start_store;

/* At most this many free blocks of a kind are kept per worker. */
#define WORKER_BLOCKS_KEPT	64

void *
worker_block_get(struct ig_worker *w, enum wblock_kind k, size_t size)
{
	struct wblock_cache *bc = &w->blocks[k];
	void *p = bc->head;

	if (p == NULL || bc->size != size)
		return malloc(size < sizeof(void *) ? sizeof(void *) : size);
	memcpy(&bc->head, p, sizeof(void *));
	bc->n--;
	return p;
}

/* Blocks of another size than the kept ones (a reload changed it) win. */
void
worker_block_put(struct ig_worker *w, enum wblock_kind k, void *p, size_t size)
{
	struct wblock_cache *bc = &w->blocks[k];

	if (p == NULL)
		return;
	if (bc->size != size) {
		worker_blocks_drop(bc);
		bc->size = size;
	}
	if (bc->n >= WORKER_BLOCKS_KEPT) {
		free(p);
		return;
	}
	memcpy(p, &bc->head, sizeof(void *));
	bc->head = p;
	bc->n++;
}

struct evbuffer *
worker_evbuffer_get(struct ig_worker *w)
{
	if (w->nevbufs > 0)
		return w->evbufs[--w->nevbufs];
	return evbuffer_new();
}

void
worker_evbuffer_put(struct ig_worker *w, struct evbuffer *b)
{
	size_t len;

	if (b == NULL)
		return;
	if (w->nevbufs == sizeof(w->evbufs) / sizeof(w->evbufs[0])) {
		evbuffer_free(b);
		return;
	}
	if ((len = evbuffer_get_length(b)) > 0)
		evbuffer_drain(b, len);
	w->evbufs[w->nevbufs++] = b;
}

const char *
worker_date(struct ig_worker *w)
{
	time_t t = time(NULL);
	struct tm tm;

	if (t != w->date_t) {
		gmtime_r(&t, &tm);
		strftime(w->date, sizeof(w->date),
		    "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
		w->date_t = t;
	}
	return w->date;
}

void
worker_after_io(struct ig_worker *w)
{
	ig_store_dispatch(w->store);
	if (!LIST_EMPTY(&w->dirty))
		io_flush_all(w);
}

static struct evconnlistener *
worker_listen(struct ig_worker *w, struct ig_listener *il,
    const char *address, char **err)
{
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	struct evconnlistener *l;

	if (evutil_parse_sockaddr_port(address, (struct sockaddr *)&ss,
	    &sslen) == -1) {
		if (asprintf(err, "listen %s: bad address", address) == -1)
			*err = NULL;
		return NULL;
	}
	l = evconnlistener_new_bind(w->base, hs_listener_cb, il,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE |
	    LEV_OPT_REUSEABLE_PORT, 4096, (struct sockaddr *)&ss, sslen);
	if (l == NULL) {
		if (asprintf(err, "listen %s: %s", address,
		    strerror(errno)) == -1)
			*err = NULL;
		return NULL;
	}
	if ((il->resume = evtimer_new(w->base, hs_listener_resume_cb,
	    il)) == NULL) {
		evconnlistener_free(l);
		*err = strdup("out of memory");
		return NULL;
	}
	evconnlistener_set_error_cb(l, hs_listener_error_cb);
	return l;
}

static void
worker_close_listeners(struct ig_worker *w)
{
	size_t i;

	for (i = 0; i < w->nlisteners; i++) {
		if (w->listeners[i].resume != NULL)
			event_free(w->listeners[i].resume);
		w->listeners[i].resume = NULL;
		if (w->listeners[i].l != NULL)
			evconnlistener_free(w->listeners[i].l);
		w->listeners[i].l = NULL;
	}
	w->nlisteners = 0;
}

static void
worker_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ig_worker *w = arg;

	if ((atomic_load(&w->stats[ST_REQ_INFLIGHT]) == 0 &&
	    (w->store == NULL || !ig_store_busy(w->store))) ||
	    now_ns() >= w->drain_deadline)
		event_base_loopbreak(w->base);
}

static void
worker_ctl_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ig_worker *w = arg;
	struct timeval tv = { 0, 50 * 1000 };
	uint64_t n;

	if (read(w->ctl_fd, &n, sizeof(n)) == -1 || w->drain != NULL)
		return;
	worker_close_listeners(w);
	if (w->store != NULL)
		ig_store_drain(w->store);
	w->drain = event_new(w->base, -1, EV_PERSIST, worker_drain_cb, w);
	if (w->drain == NULL) {
		event_base_loopbreak(w->base);
		return;
	}
	event_add(w->drain, &tv);
	worker_drain_cb(-1, 0, w);
}

/*
 * A worker's event base: epoll with the changelist, so that interest
 * added and dropped within one loop iteration costs no epoll_ctl, and no
 * locks: a base belongs to one thread (the main thread reaches a worker
 * only through its eventfd, see workers_stop), so libevent's lock around
 * every event operation is pure cost.
 */
static struct event_base *
worker_base_new(void)
{
	struct event_config *cfg = event_config_new();
	struct event_base *base;

	if (cfg == NULL)
		return NULL;
	event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
	base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return base;
}

static void *
worker_main(void *arg)
{
	struct ig_worker *w = arg;

	event_base_dispatch(w->base);
	hs_close_all(w);
	snapshot_thread_done();
	atomic_store(&w->done, 1);
	return NULL;
}

/*
 * The listen entry of CONF that the start's entry J is (the same address
 * as written; at the same index first); -1 when CONF has none.
 */
static ssize_t
listen_entry(const struct ig_config *conf, const char *address, size_t j)
{
	size_t k;

	if (j < conf->nlisten && strcmp(conf->listen[j].address, address) == 0)
		return (ssize_t)j;
	for (k = 0; k < conf->nlisten; k++)
		if (strcmp(conf->listen[k].address, address) == 0)
			return (ssize_t)k;
	return -1;
}

/* The context for a handshake on IL now (see struct ig_listener). */
struct ssl_ctx_st *
listener_tls(const struct ig_listener *il, const struct ig_snapshot *snap)
{
	if (il->tls == NULL)
		return NULL;
	if (il->index < snap->nrun && snap->run_tls[il->index] != NULL)
		return snap->run_tls[il->index];
	return il->tls;
}

/*
 * Into *RUN (NRUN of them, a reference each) the context each running
 * listener's handshakes take with CONF, whose listen entries' contexts
 * are LTLS: before the start, CONF's own; then the entry with the
 * listener's address, else PREV's (the published snapshot: a reload that
 * drops the entry or its TLS keeps the last certificate, not the
 * start's); a plain listener stays plain. -1 when out of memory.
 */
int
workers_listen_tls(const struct ig_config *conf, struct ssl_ctx_st **ltls,
    const struct ig_snapshot *prev, struct ssl_ctx_st ***runp, size_t *nrunp)
{
	size_t n = nlisten_tls ? nlisten_tls : conf->nlisten, j;
	struct ssl_ctx_st **run, *ctx;
	ssize_t k;

	if ((run = calloc(n + 1, sizeof(*run))) == NULL)
		return -1;
	for (j = 0; j < n; j++) {
		if (nlisten_tls == 0)
			ctx = ltls[j];
		else if (listen_tls[j] == NULL)
			ctx = NULL;
		else {
			k = listen_entry(conf, listen_addr[j], j);
			ctx = k >= 0 ? ltls[k] : NULL;
			if (ctx == NULL && prev != NULL && j < prev->nrun)
				ctx = prev->run_tls[j];
			if (ctx == NULL)
				ctx = listen_tls[j];
		}
		if (ctx != NULL)
			SSL_CTX_up_ref(ctx);
		run[j] = ctx;
	}
	*runp = run;
	*nrunp = n;
	return 0;
}

/*
 * A reload's listen list against the running listeners: what it cannot
 * change before a restart is said (an address added or gone, TLS turned
 * on or off); certificates and keys it changes apply to new handshakes.
 */
void
workers_listen_check(const struct ig_config *conf)
{
	size_t j, k;
	ssize_t e;

	for (j = 0; j < nlisten_tls; j++) {
		if ((e = listen_entry(conf, listen_addr[j], j)) == -1)
			log_warn("reload: listener %s is no longer configured; "
			    "it is closed on restart", listen_addr[j]);
		else if ((conf->listen[e].tls_certificate != NULL) !=
		    (listen_tls[j] != NULL))
			log_warn("reload: listener %s: TLS is turned %s on "
			    "restart; until then it stays %s", listen_addr[j],
			    listen_tls[j] != NULL ? "off" : "on",
			    listen_tls[j] != NULL ? "TLS, with its last "
			    "certificate" : "plain");
	}
	for (k = 0; k < conf->nlisten; k++) {
		for (j = 0; j < nlisten_tls; j++)
			if (strcmp(conf->listen[k].address, listen_addr[j]) == 0)
				break;
		if (j == nlisten_tls)
			log_warn("reload: listener %s is opened on restart",
			    conf->listen[k].address);
	}
}

/*
 * A reload's store section against the one the workers' stores were made
 * with: a change waits for a restart, and is said (once per reload).
 */
void
workers_store_check(const struct ig_config *conf)
{
	const char *key;
	char buf[64];

	if (start_store != NULL && (key = admission_store_changed(start_store,
	    conf, buf, sizeof(buf))) != NULL)
		log_warn("reload: store.%s changed; the store section takes "
		    "effect on restart, the running one stays until then", key);
}

/*
 * Creates the workers and their listeners, then starts the threads. All
 * sockets are bound before any thread runs, so an address in use is an
 * error of this call.
 */
int
workers_start(struct ig_snapshot *snap, char **err)
{
	const struct ig_config *conf = snap->conf;
	size_t i, j;

	if ((listen_tls = calloc(conf->nlisten + 1, sizeof(*listen_tls))) ==
	    NULL || (listen_addr = calloc(conf->nlisten + 1,
	    sizeof(*listen_addr))) == NULL)
		goto nomem;
	nlisten_tls = conf->nlisten;
	if ((start_store = calloc(1, sizeof(*start_store))) == NULL ||
	    admission_store_copy(start_store, conf) == -1)
		goto nomem;
	for (j = 0; j < conf->nlisten; j++) {
		if ((listen_addr[j] = strdup(conf->listen[j].address)) == NULL)
			goto nomem;
		if ((listen_tls[j] = snap->listen_tls[j]) != NULL)
			SSL_CTX_up_ref(listen_tls[j]);
	}
	if ((workers = calloc(conf->workers ? conf->workers : 1,
	    sizeof(*workers))) == NULL)
		goto nomem;
	nworkers = conf->workers ? conf->workers : 1;
	for (i = 0; i < nworkers; i++) {
		struct ig_worker *w = &workers[i];

		w->id = i;
		w->p2c_seed = 0x9e3779b9u * (i + 1);	/* not one draw for all */
		LIST_INIT(&w->dirty);
		w->rbuf_size = WORKER_READ_BUF;
		if ((w->base = worker_base_new()) == NULL ||
		    (w->rbuf = malloc(w->rbuf_size)) == NULL ||
		    (w->flush = event_new(w->base, -1, 0, io_flush_cb, w)) == NULL ||
		    (w->ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1 ||
		    (w->ctl = event_new(w->base, w->ctl_fd, EV_READ | EV_PERSIST,
		    worker_ctl_cb, w)) == NULL || event_add(w->ctl, NULL) == -1 ||
		    (w->upstreams = up_pools_create(w)) == NULL ||
		    pool_worker_init(w) == -1 ||
		    (w->store = ig_store_create(&conf->store, w->base,
		    err)) == NULL ||
		    (w->listeners = calloc(conf->nlisten,
		    sizeof(*w->listeners))) == NULL)
			goto nomem;
		for (j = 0; j < conf->nlisten; j++) {
			w->listeners[j].w = w;
			w->listeners[j].tls = listen_tls[j];
			w->listeners[j].index = j;
			w->listeners[j].l = worker_listen(w, &w->listeners[j],
			    conf->listen[j].address, err);
			if (w->listeners[j].l == NULL)
				goto fail;
			w->nlisteners++;
		}
	}
	for (i = 0; i < nworkers; i++)
		if (pthread_create(&workers[i].thread, NULL, worker_main,
		    &workers[i]) != 0) {
			*err = strdup("cannot start worker threads");
			goto fail;	/* not reached in practice */
		}
	return 0;
nomem:
	if (*err == NULL)
		*err = strdup("out of memory");
fail:
	return -1;
}

/*
 * Stops the workers: no new connections; in-flight requests get up to
 * grace_ms to finish. Returns when every thread has ended.
 */
void
workers_drain(uint64_t grace_ms)
{
	uint64_t one = 1;
	size_t i;

	for (i = 0; i < nworkers; i++) {
		struct ig_worker *w = &workers[i];

		if (atomic_exchange(&w->stopping, 1))
			continue;	/* told already */
		w->drain_deadline = now_ns() + grace_ms * 1000000ULL;
		if (w->thread && write(w->ctl_fd, &one, sizeof(one)) == -1)
			log_error("worker %u: cannot wake it up: %s", w->id,
			    strerror(errno));
	}
}

size_t
workers_running(void)
{
	size_t i, n = 0;

	for (i = 0; i < nworkers; i++)
		if (workers[i].thread && !atomic_load(&workers[i].done))
			n++;
	return n;
}

void
workers_join(void)
{
	size_t i;

	for (i = 0; i < nworkers; i++)
		if (workers[i].thread) {
			pthread_join(workers[i].thread, NULL);
			workers[i].thread = 0;
		}
}

void
workers_free(void)
{
	size_t i, j;

	for (i = 0; i < nworkers; i++) {
		struct ig_worker *w = &workers[i];

		worker_close_listeners(w);
		free(w->listeners);
		up_pools_free(w->upstreams);
		pool_worker_free(w);
		if (w->store != NULL)
			ig_store_free(w->store);
		if (w->drain != NULL)
			event_free(w->drain);
		if (w->tq_timer != NULL)
			event_free(w->tq_timer);
		if (w->flush != NULL)
			event_free(w->flush);
		free(w->rbuf);
		for (j = 0; j < WB_MAX; j++)
			worker_blocks_drop(&w->blocks[j]);
		while (w->nevbufs > 0)
			evbuffer_free(w->evbufs[--w->nevbufs]);
		if (w->ctl != NULL)
			event_free(w->ctl);
		if (w->ctl_fd > 0)
			close(w->ctl_fd);
		if (w->base != NULL)
			event_base_free(w->base);
	}
	free(workers);
	workers = NULL;
	for (i = 0; i < nlisten_tls; i++) {
		SSL_CTX_free(listen_tls[i]);
		free(listen_addr[i]);
	}
	free(listen_tls);
	free(listen_addr);
	listen_tls = NULL;
	listen_addr = NULL;
	nlisten_tls = 0;
	nworkers = 0;
	if (start_store != NULL)
		admission_conf_free(start_store);
	free(start_store);
	start_store = NULL;
}

size_t
workers_count(void)
{
	return nworkers;
}

struct ig_worker *
worker_at(size_t i)
{
	return i < nworkers ? &workers[i] : NULL;
}

uint64_t
workers_sum(size_t offset)
{
	uint64_t sum = 0;
	size_t i;

	for (i = 0; i < nworkers; i++)
		sum += atomic_load_explicit((_Atomic uint64_t *)
		    ((char *)&workers[i] + offset), memory_order_relaxed);
	return sum;
}

uint64_t
workers_stat(enum ig_stat s)
{
	return workers_sum(offsetof(struct ig_worker, stats) +
	    s * sizeof(uint64_t));
}
