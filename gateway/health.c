/*
 * Active health checks of the backends of pools that have `health`, on
 * the main thread's event base (off the request path): every
 * health.interval a GET of health.path on a connection of its own
 * (`Connection: close`, TLS when the pool has it), answered 2xx (a body of
 * 64 KiB at most) or failed; health.timeout bounds the whole check
 * (connect to the answer's last byte, a timer of its own: libevent's
 * connection timeout is per step); the scrapes of scrape_metrics go the
 * same way. Results go to the backend's shared state
 * (capacity.h): the first result decides at once (a backend starts
 * ready, so that a start or a reload never empties a pool before its
 * first check; one that joins a serving pool starts down instead, see
 * catalog.c), later ones after healthy_after / unhealthy_after in a
 * row. A backend that comes up wakes every worker (pool_wake_all), for
 * the requests parked by when_empty: queue.
 *
 * The tick walks the current snapshot, so a reload that adds or drops
 * backends changes what is checked at the next tick; a backend keeps its
 * state across reloads (it is keyed by "host:port"). A check in flight
 * holds a reference to the backend's state, which a reload or a DNS
 * change may drop meanwhile.
 */
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/ssl.h>

#include "infergate/capacity.h"
#include "infergate/log.h"
#include "infergate/routing.h"
#include "gateway.h"

#define HC_TICK_MS	50

#define HC_MAX_BODY	(64 * 1024)	/* a check's answer, at most */

#define HC_MAX_SCRAPE	(4 * 1024 * 1024)	/* a /metrics page, at most */

/* A check that could not get a socket: the gateway's shortage. */
static const char hc_no_socket[] = "no socket";

struct hc_check {
	LIST_ENTRY(hc_check) entry;
	bool		 scrape;	/* scrape_metrics, not a health check */
	bool		 starting;	/* inside evhttp_make_request */
	bool		 finished;	/* on hc_finished */
	struct ig_bstate *b;
	struct ig_probe	*probe;		/* b's, of this kind */
	struct evhttp_connection *conn;
	struct event	*deadline;	/* the whole check's timeout */
	uint64_t	 healthy_after;
	uint64_t	 unhealthy_after;
	char		 name[160];
};

LIST_HEAD(hc_list, hc_check);

static struct event_base *hc_base;
static struct event	*hc_timer;
static struct event	*hc_reaper;	/* frees the finished checks */
static struct hc_list	 hc_checks = LIST_HEAD_INITIALIZER(hc_checks);
static struct hc_list	 hc_finished = LIST_HEAD_INITIALIZER(hc_finished);

/*
 * A check's result. Its connection is freed later, from the reaper, never
 * here: libevent may be inside the connection (the callback can even run
 * from within evhttp_make_request), and in 2.1 the connect-failure paths
 * do not honour free-on-completion.
 */
static void
hc_done(struct hc_check *c, bool ok, const char *why)
{
	static const struct timeval zero = { 0, 0 };
	bool first;

	if (c->finished)
		return;
	c->finished = true;
	if (c->deadline != NULL)
		evtimer_del(c->deadline);
	LIST_REMOVE(c, entry);
	LIST_INSERT_HEAD(&hc_finished, c, entry);
	event_add(hc_reaper, &zero);
	c->probe->busy = false;
	if (c->scrape || why == hc_no_socket)	/* ours: not a result */
		return;
	first = !ig_bstate_checked(c->b);
	if (ig_bstate_check(c->b, ok, c->healthy_after, c->unhealthy_after)) {
		if (ok) {
			log_info("backend %s: up (health check)", c->name);
			pool_wake_all();
		} else
			log_warn("backend %s: down (health check: %s)", c->name,
			    why);
	} else if (first && !ok)	/* a joining one: never up, say it once */
		log_warn("backend %s: not up yet (first health check: %s)",
		    c->name, why);
}

/* The one teardown of a check (not on a list). */
static void
hc_check_free(struct hc_check *c)
{
	if (c->conn != NULL)
		evhttp_connection_free(c->conn);	/* no callback */
	if (c->deadline != NULL)
		event_free(c->deadline);
	ig_bstate_put(c->b);
	free(c);
}

static void
hc_free_list(struct hc_list *l)
{
	struct hc_check *c;

	while ((c = LIST_FIRST(l)) != NULL) {
		LIST_REMOVE(c, entry);
		hc_check_free(c);
	}
}

static void
hc_reap(evutil_socket_t fd, short what, void *arg)
{
	hc_free_list(&hc_finished);
}

/*
 * The requests waiting in a model server, from its Prometheus text: the
 * sum of vLLM's vllm:num_requests_waiting (every model_name) or TGI's
 * tgi_queue_size samples; -1 when the page has neither.
 */
static int64_t
hc_queue_depth(const char *p, size_t len)
{
	static const char *const names[] = { "vllm:num_requests_waiting",
		"tgi_queue_size" };
	const char *end = p + len, *eol, *v;
	int64_t sum = -1;
	size_t i, n;

	for (; p < end; p = eol + 1) {
		if ((eol = memchr(p, '\n', end - p)) == NULL)
			eol = end;
		if (*p == '#')
			continue;
		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			n = strlen(names[i]);
			if ((size_t)(eol - p) > n && memcmp(p, names[i], n) == 0 &&
			    (p[n] == '{' || p[n] == ' '))
				break;
		}
		if (i == sizeof(names) / sizeof(names[0]))
			continue;
		/* the value follows the labels (which may hold spaces) */
		v = p + n;
		if (*v == '{' && (v = memchr(v, '}', eol - v)) == NULL)
			continue;
		while (++v < eol && *v == ' ')
			;
		if (v < eol) {
			char num[32];	/* the page is not NUL-terminated */
			size_t k = (size_t)(eol - v) < sizeof(num) - 1 ?
			    (size_t)(eol - v) : sizeof(num) - 1;
			double d;

			memcpy(num, v, k);
			num[k] = '\0';
			d = strtod(num, NULL);	/* "3", "3.0", "3e0" */
			if (d > 0 && d < 1e12)
				sum = (sum < 0 ? 0 : sum) + (int64_t)d;
			else if (sum < 0)
				sum = 0;
		}
	}
	return sum;
}

static void
hc_scrape_cb(struct hc_check *c, struct evhttp_request *req, int code)
{
	struct evbuffer *in;
	const char *body;
	int64_t depth = -1;

	if (code >= 200 && code < 300 &&
	    (in = evhttp_request_get_input_buffer(req)) != NULL &&
	    (body = (const char *)evbuffer_pullup(in, -1)) != NULL)
		depth = hc_queue_depth(body, evbuffer_get_length(in));
	if (depth >= 0)
		ig_bstate_set_depth(c->b, (uint64_t)depth, now_ns());
	else
		log_debug("backend %s: no queue depth from its metrics (%d)",
		    c->name, code);
	hc_done(c, depth >= 0, NULL);
}

/*
 * The check's time is up: libevent's timeout bounds each step (connect,
 * each read), so an answer trickled a byte at a time would hold the check
 * (and the backend's state) for as long as it lasts.
 */
static void
hc_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hc_check *c = arg;

	if (c->scrape)
		log_debug("backend %s: metrics scrape took too long", c->name);
	hc_done(c, false, "no complete answer within the timeout");
}

static void
hc_response_cb(struct evhttp_request *req, void *arg)
{
	struct hc_check *c = arg;
	int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
	char why[64];

	if (c->finished)	/* its deadline came first */
		return;
	/* Called back from inside evhttp_make_request for want of a socket
	 * (libevent 2.1 reports the backend's own failures later, from the
	 * loop): the gateway's shortage, not a result. */
	if (code == 0 && c->starting && gw_errno_scarce(errno)) {
		hc_done(c, false, hc_no_socket);
		return;
	}
	if (c->scrape) {
		hc_scrape_cb(c, req, code);
		return;
	}

	if (code == 0)
		snprintf(why, sizeof(why), "no answer in time or no connection");
	else
		snprintf(why, sizeof(why), "status %d", code);
	hc_done(c, code >= 200 && code < 300, why);
}

/*
 * One probe of BE (of pool PC, TLS context CTX or NULL): a health check
 * of PATH, or a scrape. TIMEOUT_MS bounds the whole check.
 */
static void
hc_start(const struct ig_pool_conf *pc, struct ssl_ctx_st *ctx,
    const struct ig_backend *be, enum ig_probe_kind kind, const char *path,
    uint64_t timeout_ms)
{
	bool scrape = kind == IG_PROBE_SCRAPE;
	char addr[NI_MAXHOST], port[NI_MAXSERV];
	struct bufferevent *bev = NULL;
	struct evhttp_request *req;
	struct hc_check *c;
	struct timeval tv;
	SSL *ssl;

	if (getnameinfo((const struct sockaddr *)&be->addr, be->addrlen, addr,
	    sizeof(addr), port, sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV)
	    != 0 || (c = calloc(1, sizeof(*c))) == NULL)
		return;
	/* held while the check is out: DNS may drop the address meanwhile */
	c->b = ig_bstate_ref(be->state);
	c->probe = ig_bstate_probe(be->state, kind);
	c->scrape = scrape;
	c->healthy_after = pc->healthy_after;
	c->unhealthy_after = pc->unhealthy_after;
	snprintf(c->name, sizeof(c->name), "%s", be->name);
	if (ctx != NULL) {
		/* On failure libevent 2.1.12 frees the SSL itself
		 * (BEV_OPT_CLOSE_ON_FREE). */
		if ((ssl = tls_client_ssl(ctx, pc, be)) == NULL ||
		    (bev = bufferevent_openssl_socket_new(hc_base, -1, ssl,
		    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
			hc_check_free(c);
			return;
		}
	}
	c->conn = evhttp_connection_base_bufferevent_new(hc_base, NULL, bev,
	    addr, (unsigned short)atoi(port));
	if (c->conn == NULL) {
		if (bev != NULL)
			bufferevent_free(bev);
		hc_check_free(c);
		return;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	if ((c->deadline = evtimer_new(hc_base, hc_deadline_cb, c)) == NULL ||
	    evtimer_add(c->deadline, &tv) == -1) {
		hc_check_free(c);
		return;
	}
	evhttp_connection_set_timeout_tv(c->conn, &tv);
	evhttp_connection_set_retries(c->conn, 0);
	evhttp_connection_set_max_body_size(c->conn, scrape ? HC_MAX_SCRAPE :
	    HC_MAX_BODY);
	if ((req = evhttp_request_new(hc_response_cb, c)) == NULL) {
		hc_check_free(c);
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Host",
	    be->host);
	evhttp_add_header(evhttp_request_get_output_headers(req), "User-Agent",
	    "infergate-health/" IG_VERSION);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Connection",
	    "close");
	LIST_INSERT_HEAD(&hc_checks, c, entry);
	c->probe->busy = true;
	/* C may be finished (not freed: see hc_done) when this returns:
	 * without a socket libevent calls back from inside. */
	c->starting = true;
	if (evhttp_make_request(c->conn, req, EVHTTP_REQ_GET, path) == -1)
		hc_done(c, false, hc_no_socket);
	c->starting = false;
}

/*
 * Whether the gateway has a file descriptor to spare for checks: out of
 * them, every check would fail on our side and mark healthy backends
 * down. The round is skipped instead (logged once a second at most); a
 * check that still finds none is not counted (hc_response_cb).
 */
static bool
hc_have_socket(void)
{
	static uint64_t warned;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	uint64_t now;

	if (fd != -1) {
		close(fd);
		return true;
	}
	if ((now = now_ns()) - warned >= 1000000000ULL) {
		warned = now;
		log_warn("health checks skipped: %s", strerror(errno));
	}
	return false;
}

static void
hc_tick(evutil_socket_t fd, short what, void *arg)
{
	struct ig_snapshot *snap = snapshot_current();
	const struct ig_catalog *cat = snap->catalog;
	uint64_t now = now_ns();
	size_t i, j;
	enum ig_probe_kind k;

	for (i = 0; i < ig_catalog_npools(cat) && hc_have_socket(); i++) {
		const struct ig_pool *p = ig_catalog_pool_at(cat, i);
		const struct ig_pool_conf *pc = p->conf;

		/* A scrape has its interval to answer (a check's timeout is
		 * 1 s by default, a /metrics page may take longer). */
		const struct {
			const char	*path;
			uint64_t	 interval_ms, timeout_ms;
		} kinds[IG_PROBE_NKINDS] = {
			[IG_PROBE_HEALTH] = { pc->health_path,
			    pc->health_interval_ms, pc->health_timeout_ms },
			[IG_PROBE_SCRAPE] = { pc->scrape_path,
			    pc->scrape_interval_ms, pc->scrape_interval_ms },
		};

		for (j = 0; j < p->nbackends; j++)
			for (k = 0; k < IG_PROBE_NKINDS; k++) {
				struct ig_probe *pr = ig_bstate_probe(
				    p->backends[j].state, k);

				if (kinds[k].path == NULL || pr->busy ||
				    now < pr->next)
					continue;
				pr->next = now + kinds[k].interval_ms * 1000000ULL;
				hc_start(pc, snap->pool_tls[i], &p->backends[j],
				    k, kinds[k].path, kinds[k].timeout_ms);
			}
	}
	snapshot_unref(snap);
}

int
health_start(struct event_base *base)
{
	struct timeval tv = { 0, HC_TICK_MS * 1000 };

	hc_base = base;
	if ((hc_timer = event_new(base, -1, EV_PERSIST, hc_tick, NULL)) == NULL ||
	    (hc_reaper = evtimer_new(base, hc_reap, NULL)) == NULL ||
	    event_add(hc_timer, &tv) == -1)
		return -1;
	hc_tick(-1, 0, NULL);	/* the first checks now */
	return 0;
}

/* At exit: the checks in flight are dropped. */
void
health_stop(void)
{
	if (hc_timer != NULL)
		event_free(hc_timer);
	hc_timer = NULL;
	hc_free_list(&hc_checks);
	hc_free_list(&hc_finished);
	if (hc_reaper != NULL)
		event_free(hc_reaper);
	hc_reaper = NULL;
}
