/*
 * The admin listener, on the main thread: /health/live, /health/ready,
 * /metrics. Never served on the client listeners. Not on the request
 * path, so libevent's evhttp is good enough here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include <stddef.h>

#include "infergate/admission.h"
#include "infergate/capacity.h"
#include "infergate/log.h"
#include "infergate/routing.h"
#include "infergate/store.h"
#include "gateway.h"

static struct evhttp	*admin_http;
static volatile int	 admin_ready;
uint64_t		 admin_reloads_ok;
uint64_t		 admin_reloads_failed;
static struct evconnlistener *admin_listener;	/* evhttp's */
static struct event	*admin_resume;
static uint64_t		 admin_warned_ns;
static uint64_t		 admin_accept_pauses;

void
admin_set_ready(bool ready)
{
	admin_ready = ready;
}

static void
admin_reply(struct evhttp_request *req, int code, const char *reason,
    const char *ctype, struct evbuffer *body)
{
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", ctype);
	evhttp_send_reply(req, code, reason, body);
}

static void
admin_text(struct evhttp_request *req, int code, const char *reason,
    const char *text)
{
	struct evbuffer *b = evbuffer_new();

	if (b != NULL)
		evbuffer_add(b, text, strlen(text));
	admin_reply(req, code, reason, "text/plain; charset=utf-8", b);
	if (b != NULL)
		evbuffer_free(b);
}

/* A metric family: what its # HELP and # TYPE lines say. */
struct admin_family {
	const char	*name;
	const char	*type;
	const char	*help;
};

static void
admin_head(struct evbuffer *b, const struct admin_family *f)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", f->name,
	    f->help, f->name, f->type);
}

static void	 admin_store_hist(struct evbuffer *);

static void
admin_metric(struct evbuffer *b, const char *name, const char *type,
    const char *help, uint64_t v)
{
	const struct admin_family f = { name, type, help };

	admin_head(b, &f);
	evbuffer_add_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* Admission: refusals by limit, shadow "would refuse", tokens, store. */
static void
admin_admission_metrics(struct evbuffer *b)
{
	struct ig_store_stats st, sum;
	size_t i, lim;

	admin_metric(b, "infergate_auth_failures_total", "counter",
	    "Requests refused 401: no or unknown API key.",
	    workers_stat(ST_AUTH_FAILURES));
	evbuffer_add_printf(b, "# HELP infergate_admission_rejects_total "
	    "Requests refused by admission, by the limit that refused.\n"
	    "# TYPE infergate_admission_rejects_total counter\n");
	for (lim = IG_LIMIT_INPUT_TOKENS; lim <= IG_LIMIT_STORE; lim++)
		evbuffer_add_printf(b, "infergate_admission_rejects_total"
		    "{limit=\"%s\"} %llu\n", ig_limit_name(lim),
		    (unsigned long long)workers_sum(offsetof(struct ig_worker,
		    rejects) + lim * sizeof(uint64_t)));
	evbuffer_add_printf(b, "# HELP infergate_admission_shadow_rejects_total "
	    "Requests of shadow tenants that a limit would have refused.\n"
	    "# TYPE infergate_admission_shadow_rejects_total counter\n");
	for (lim = IG_LIMIT_INPUT_TOKENS; lim <= IG_LIMIT_STORE; lim++)
		evbuffer_add_printf(b, "infergate_admission_shadow_rejects_total"
		    "{limit=\"%s\"} %llu\n", ig_limit_name(lim),
		    (unsigned long long)workers_sum(offsetof(struct ig_worker,
		    would_reject) + lim * sizeof(uint64_t)));
	admin_metric(b, "infergate_tokens_in_total", "counter",
	    "Prompt tokens settled (reported by the backends).",
	    workers_sum(offsetof(struct ig_worker, tokens_in)));
	admin_metric(b, "infergate_tokens_out_total", "counter",
	    "Completion tokens settled (reported by the backends).",
	    workers_sum(offsetof(struct ig_worker, tokens_out)));
	memset(&sum, 0, sizeof(sum));
	for (i = 0; i < workers_count(); i++) {
		if (worker_at(i)->store == NULL)
			continue;
		ig_store_stats(worker_at(i)->store, &st);
		sum.degraded |= st.degraded;
		sum.admissions += st.admissions;
		sum.fallbacks += st.fallbacks;
		sum.errors += st.errors;
		sum.timeouts += st.timeouts;
		sum.reconnects += st.reconnects;
		sum.settles_dropped += st.settles_dropped;
		sum.slice_admissions += st.slice_admissions;
		sum.slice_asks += st.slice_asks;
	}
	admin_metric(b, "infergate_store_degraded", "gauge",
	    "1 while the configured store (Redis) is not answering and "
	    "on_store_failure applies.", sum.degraded);
	admin_metric(b, "infergate_store_admissions_total", "counter",
	    "Admissions answered by the store.", sum.admissions);
	admin_metric(b, "infergate_store_fallbacks_total", "counter",
	    "Admissions answered by on_store_failure.", sum.fallbacks);
	admin_metric(b, "infergate_store_errors_total", "counter",
	    "Failed store round trips (timeouts included).", sum.errors);
	admin_metric(b, "infergate_store_timeouts_total", "counter",
	    "Store round trips over store.redis.timeout.", sum.timeouts);
	admin_metric(b, "infergate_store_reconnects_total", "counter",
	    "Successful (re)connections to Redis.", sum.reconnects);
	admin_metric(b, "infergate_store_settles_dropped_total", "counter",
	    "Settlements dropped: queue full while Redis was down.",
	    sum.settles_dropped);
	admin_metric(b, "infergate_store_slice_admissions_total", "counter",
	    "Admissions answered from a worker's slice of the tenant's "
	    "limits, without a Redis round trip (store.slices).",
	    sum.slice_admissions);
	admin_metric(b, "infergate_store_slice_asks_total", "counter",
	    "Asks of the slices sent to Redis: more of a tenant's limits, "
	    "what was left given back, usage reported (store.slices).",
	    sum.slice_asks);
	admin_store_hist(b);
}

/* V as a Prometheus label value (quoted, escaped) into B. */
static void
admin_label(struct evbuffer *b, const char *v)
{
	evbuffer_add(b, "\"", 1);
	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"')
			evbuffer_add_printf(b, "\\%c", *v);
		else if (*v == '\n')
			evbuffer_add(b, "\\n", 2);
		else
			evbuffer_add(b, v, 1);
	}
	evbuffer_add(b, "\"", 1);
}

/* {pool="POOL"} after a histogram's _sum or _count; nothing without one. */
static void
admin_hist_pool(struct evbuffer *b, const char *pool)
{
	if (pool == NULL)
		return;
	evbuffer_add(b, "{pool=", 6);
	admin_label(b, pool);
	evbuffer_add(b, "}", 1);
}

/*
 * Histogram NAME, the sum of the NH histograms HS of KIND, with the label
 * pool="POOL" unless POOL is NULL: cumulative buckets, _sum, _count.
 */
static void
admin_hist(struct evbuffer *b, const char *name, const char *pool,
    struct ig_hist *const *hs, size_t nh, enum ig_hist_kind kind)
{
	uint64_t cum = 0, sum_us = 0;
	size_t i, j, nb;
	const uint64_t *le = ig_hist_bounds(kind, &nb);

	for (j = 0; j < nh; j++)
		sum_us += atomic_load_explicit(&hs[j]->sum_us,
		    memory_order_relaxed);
	for (i = 0; i <= nb; i++) {
		for (j = 0; j < nh; j++)
			cum += atomic_load_explicit(&hs[j]->n[i],
			    memory_order_relaxed);
		evbuffer_add_printf(b, "%s_bucket{", name);
		if (pool != NULL) {
			evbuffer_add(b, "pool=", 5);
			admin_label(b, pool);
			evbuffer_add(b, ",", 1);
		}
		if (i < nb)
			evbuffer_add_printf(b, "le=\"%g\"} %llu\n",
			    le[i] / 1e9, (unsigned long long)cum);
		else
			evbuffer_add_printf(b, "le=\"+Inf\"} %llu\n",
			    (unsigned long long)cum);
	}
	/* the sum exact: a double would round a long one */
	evbuffer_add_printf(b, "%s_sum", name);
	admin_hist_pool(b, pool);
	evbuffer_add_printf(b, " %llu.%06llu\n",
	    (unsigned long long)(sum_us / 1000000),
	    (unsigned long long)(sum_us % 1000000));
	evbuffer_add_printf(b, "%s_count", name);
	admin_hist_pool(b, pool);
	evbuffer_add_printf(b, " %llu\n", (unsigned long long)cum);
}

/* The store's admission times, summed over the workers. */
static void
admin_store_hist(struct evbuffer *b)
{
	static const struct admin_family f = {
		"infergate_store_admission_seconds", "histogram",
		"Time from asking the store to admit a request to its answer, "
		"for the answers the store gave: not on_store_failure's, which "
		"a timeout also gets." };
	struct ig_hist *hs[IG_CAP_WORKERS];	/* workers: at most that */
	size_t i, n = workers_count();

	for (i = 0; i < n; i++)
		hs[i] = &worker_at(i)->store_hist;
	admin_head(b, &f);
	admin_hist(b, f.name, NULL, hs, n, IG_HIST_STORE);
}

/* One series per pool of the current config: NAME{pool="..."LABELS} V. */
static void
admin_pool_line(struct evbuffer *b, const char *name, const char *pool,
    const char *labels, const char *v)
{
	evbuffer_add_printf(b, "%s{pool=", name);
	admin_label(b, pool);
	evbuffer_add_printf(b, "%s} %s\n", labels, v);
}

static void
admin_pool_u64(struct evbuffer *b, const char *name, const char *pool,
    const char *labels, uint64_t x)
{
	char v[24];

	snprintf(v, sizeof(v), "%llu", (unsigned long long)x);
	admin_pool_line(b, name, pool, labels, v);
}

/* Per backend of the current config's pools (capacity.h's ig_bstate). */
static void
admin_backend_metrics(struct evbuffer *b, const struct ig_catalog *cat,
    uint64_t now)
{
	static const struct admin_family m[] = {
		{ "infergate_backend_up", "gauge",
		  "1 when the backend takes requests: not down by its health "
		  "checks, not ejected." },
		{ "infergate_backend_inflight", "gauge",
		  "Requests in flight to the backend." },
		{ "infergate_backend_ejections_total", "counter",
		  "Times the backend was ejected after transport failures in a "
		  "row." },
		{ "infergate_backend_health_check_failures_total", "counter",
		  "Failed active health checks." },
		{ "infergate_backend_queue_depth", "gauge",
		  "Requests waiting in the backend, as its metrics said at the "
		  "last scrape (scrape_metrics; 0: none)." },
	};
	struct ig_bstate_stats st;
	char lab[256];
	size_t i, j, k;

	for (i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		admin_head(b, &m[i]);
		for (j = 0; j < ig_catalog_npools(cat); j++) {
			const struct ig_pool *p = ig_catalog_pool_at(cat, j);

			for (k = 0; k < p->nbackends; k++) {
				const struct ig_backend *be = &p->backends[k];
				uint64_t x;

				ig_bstate_stats(be->state, now, &st);
				/* checks count only in a pool that has them */
				x = i == 0 ? ((!st.down ||
				    p->conf->health_path == NULL) && !st.ejected) :
				    i == 1 ? st.inflight : i == 2 ?
				    st.ejections : i == 3 ? st.checks_failed :
				    st.depth;
				snprintf(lab, sizeof(lab), ",backend=\"%s\"",
				    be->name);
				admin_pool_u64(b, m[i].name, p->conf->name, lab,
				    x);
			}
		}
	}
}

/*
 * Pool capacity (queue.c): what KEDA or an HPA scales the model servers
 * on, per pool of the current config.
 */
static void
admin_pool_metrics(struct evbuffer *b)
{
	static const struct admin_family m[] = {
		{ "infergate_pool_inflight", "gauge",
		  "Requests holding a slot of the pool." },
		{ "infergate_pool_max_inflight", "gauge",
		  "The pool's max_inflight (0: no limit)." },
		{ "infergate_pool_queue_depth", "gauge",
		  "Requests waiting for a slot of the pool." },
		{ "infergate_pool_queue_oldest_seconds", "gauge",
		  "How long the oldest waiting request has waited (0: none)." },
		{ "infergate_pool_queued_total", "counter",
		  "Requests that waited in the pool's queue." },
		{ "infergate_pool_shed_total", "counter",
		  "Requests refused 503 for the pool's capacity, by reason." },
		{ "infergate_pool_fallbacks_total", "counter",
		  "Requests sent to a fallback model's pool because this one "
		  "was full." },
		{ "infergate_pool_retrying", "gauge",
		  "Requests of the pool that are retrying (retries.budget)." },
		{ "infergate_pool_retries_refused_total", "counter",
		  "Retries refused by the pool's retries.budget." },
		{ "infergate_pool_parked", "gauge",
		  "Requests waiting for a backend to come up (when_empty: "
		  "queue)." },
	};
	static const char *const reasons[IG_SHED_NREASONS] = {
		[IG_SHED_FULL] = "queue_full",
		[IG_SHED_DISPLACED] = "displaced",
		[IG_SHED_TIMEOUT] = "queue_timeout",
	};
	struct ig_snapshot *snap = snapshot_current();
	const struct ig_catalog *cat = snap->catalog;
	struct ig_cap_stats st;
	uint64_t now = now_ns();
	char v[32], lab[48];
	size_t i, j, k;

	for (i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		admin_head(b, &m[i]);
		for (j = 0; j < ig_catalog_npools(cat); j++) {
			const struct ig_pool *p = ig_catalog_pool_at(cat, j);
			uint64_t x = 0;

			ig_cap_stats(p->cap, &st);
			switch (i) {
			case 0: x = st.inflight; break;
			case 1: x = p->conf->max_inflight; break;
			case 2: x = st.waiting; break;
			case 3:
				snprintf(v, sizeof(v), "%.3f", st.oldest_ns != 0 &&
				    now > st.oldest_ns ?
				    (now - st.oldest_ns) / 1e9 : 0.0);
				admin_pool_line(b, m[i].name, p->conf->name, "", v);
				continue;
			case 4: x = st.queued; break;
			case 5:
				for (k = 0; k < IG_SHED_NREASONS; k++) {
					snprintf(lab, sizeof(lab),
					    ",reason=\"%s\"", reasons[k]);
					admin_pool_u64(b, m[i].name,
					    p->conf->name, lab, st.shed[k]);
				}
				continue;
			case 6: x = st.fallbacks; break;
			case 7: x = st.retrying; break;
			case 8: x = st.retries_refused; break;
			default: x = st.parked; break;
			}
			admin_pool_u64(b, m[i].name, p->conf->name, "", x);
		}
	}
	for (i = 0; i < IG_CAP_NHISTS; i++) {
		static const struct admin_family h[IG_CAP_NHISTS] = {
			[IG_CAP_DURATION] = { "infergate_request_duration_seconds",
			  "histogram", "Requests whose response head came from "
			  "a backend of the pool (any status), from their start "
			  "until the gateway was done with them (the response "
			  "queued to the client, or the client gone)." },
			[IG_CAP_TTFT] = { "infergate_time_to_first_token_seconds",
			  "histogram", "Streamed responses, from the request's "
			  "first byte to the first body bytes from the "
			  "backend." },
		};

		admin_head(b, &h[i]);
		for (j = 0; j < ig_catalog_npools(cat); j++) {
			const struct ig_pool *p = ig_catalog_pool_at(cat, j);
			struct ig_hist *hs = ig_cap_hist(p->cap, i);

			admin_hist(b, h[i].name, p->conf->name, &hs, 1,
			    IG_HIST_REQUEST);
		}
	}
	admin_backend_metrics(b, cat, now);
	resolver_metrics(b);
	snapshot_unref(snap);
}

/* The per-worker counters exposed one to one, summed over the workers. */
static const struct {
	const char	*name;
	const char	*type;
	const char	*help;
	enum ig_stat	 stat;
} worker_metrics[] = {
	{ "infergate_connections_accepted_total", "counter",
	    "Client connections accepted.", ST_CONN_ACCEPTED },
	{ "infergate_connections_open", "gauge",
	    "Client connections open now.", ST_CONN_OPEN },
	{ "infergate_accept_pauses_total", "counter",
	    "Times a listener (a client one or the admin one) stopped "
	    "accepting for 100 ms: out of file descriptors.",
	    ST_ACCEPT_PAUSES },
	{ "infergate_requests_total", "counter",
	    "Requests started by clients.", ST_REQUESTS },
	{ "infergate_requests_inflight", "gauge",
	    "Requests received whole and not yet answered.", ST_REQ_INFLIGHT },
	{ "infergate_bad_requests_total", "counter",
	    "Requests refused as malformed or over a client limit.",
	    ST_BAD_REQUESTS },
	{ "infergate_client_aborts_total", "counter",
	    "Requests whose client went away before the response ended.",
	    ST_CLIENT_ABORTS },
	{ "infergate_streams_total", "counter",
	    "Responses passed through as streams.", ST_STREAMS },
	{ "infergate_upstream_connects_total", "counter",
	    "New connections opened to backends.", ST_UP_CONNECT },
	{ "infergate_upstream_reuses_total", "counter",
	    "Requests sent on a pooled keep-alive backend connection.",
	    ST_UP_REUSE },
	{ "infergate_upstream_errors_total", "counter",
	    "Backend failures (refused, reset, timeout, bad response).",
	    ST_UP_ERRORS },
	{ "infergate_upstream_no_socket_total", "counter",
	    "Backend connections the gateway could not open for want of file "
	    "descriptors or memory (503 gateway_overloaded).", ST_UP_NO_SOCKET },
	{ "infergate_upstream_retries_total", "counter",
	    "Requests sent again after a failure before any response byte.",
	    ST_UP_RETRIES },
};

/* Prometheus text exposition of the counters summed over the workers. */
static void
admin_metrics(struct evhttp_request *req)
{
	struct evbuffer *b = evbuffer_new();
	size_t i;

	if (b == NULL) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	for (i = 0; i < sizeof(worker_metrics) / sizeof(worker_metrics[0]); i++)
		admin_metric(b, worker_metrics[i].name, worker_metrics[i].type,
		    worker_metrics[i].help, workers_stat(worker_metrics[i].stat) +
		    (worker_metrics[i].stat == ST_ACCEPT_PAUSES ?
		    admin_accept_pauses : 0));
	evbuffer_add_printf(b, "# HELP infergate_responses_total Responses by "
	    "status class.\n# TYPE infergate_responses_total counter\n"
	    "infergate_responses_total{class=\"2xx\"} %llu\n"
	    "infergate_responses_total{class=\"4xx\"} %llu\n"
	    "infergate_responses_total{class=\"5xx\"} %llu\n",
	    (unsigned long long)workers_stat(ST_RESP_2XX),
	    (unsigned long long)workers_stat(ST_RESP_4XX),
	    (unsigned long long)workers_stat(ST_RESP_5XX));
	admin_metric(b, "infergate_reloads_total", "counter",
	    "Successful configuration reloads.", admin_reloads_ok);
	admin_metric(b, "infergate_reload_failures_total", "counter",
	    "Configuration reloads refused because the new config is invalid.",
	    admin_reloads_failed);
	admin_metric(b, "infergate_workers", "gauge", "Worker threads.",
	    workers_count());
	admin_admission_metrics(b);
	admin_pool_metrics(b);
	admin_reply(req, 200, "OK", "text/plain; version=0.0.4", b);
	evbuffer_free(b);
}

static void
admin_cb(struct evhttp_request *req, void *arg)
{
	const char *uri = evhttp_request_get_uri(req);
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	size_t plen = strcspn(uri, "?");

	if (plen == 12 && strncmp(uri, "/admin/drain", plen) == 0) {
		if (cmd != EVHTTP_REQ_POST) {
			evhttp_add_header(evhttp_request_get_output_headers(req),
			    "Allow", "POST");
			admin_text(req, 405, "Method Not Allowed",
			    "method not allowed\n");
			return;
		}
		/* The answer goes out while the workers drain. */
		admin_text(req, 202, "Accepted", "draining\n");
		gateway_drain("POST /admin/drain");
	} else if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Allow", "GET, HEAD");
		admin_text(req, 405, "Method Not Allowed", "method not allowed\n");
	} else if (plen == 12 && strncmp(uri, "/health/live", plen) == 0)
		admin_text(req, 200, "OK", "ok\n");
	else if (plen == 13 && strncmp(uri, "/health/ready", plen) == 0) {
		if (admin_ready)
			admin_text(req, 200, "OK", "ready\n");
		else
			admin_text(req, 503, "Service Unavailable", "not ready\n");
	} else if (plen == 8 && strncmp(uri, "/metrics", plen) == 0)
		admin_metrics(req);
	else
		admin_text(req, 404, "Not Found", "not found\n");
}


static void
admin_accept_error_cb(struct evconnlistener *l, void *arg)
{
	if (hs_accept_failed(l, admin_resume, &admin_warned_ns))
		admin_accept_pauses++;
}

static void
admin_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	if (admin_listener != NULL)
		evconnlistener_enable(admin_listener);
}

int
admin_start(struct event_base *base, const char *address, char **err)
{
	struct evhttp_bound_socket *bound;
	char host[128];
	const char *colon;
	size_t hl;
	int port;

	if ((colon = strrchr(address, ':')) == NULL ||
	    (hl = colon - address) >= sizeof(host))
		goto bad;
	memcpy(host, address, hl);
	host[hl] = '\0';
	if (host[0] == '[' && hl >= 2 && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	port = atoi(colon + 1);
	if ((admin_http = evhttp_new(base)) == NULL)
		goto bad;
	evhttp_set_allowed_methods(admin_http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD |
	    EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_gencb(admin_http, admin_cb, NULL);
	evhttp_set_timeout(admin_http, 10);
	if ((bound = evhttp_bind_socket_with_handle(admin_http, host,
	    port)) == NULL) {
		if (asprintf(err, "admin %s: cannot listen", address) == -1)
			*err = NULL;
		evhttp_free(admin_http);
		admin_http = NULL;
		return -1;
	}
	/* out of descriptors: pause, as the client listeners do */
	admin_listener = evhttp_bound_socket_get_listener(bound);
	if ((admin_resume = evtimer_new(base, admin_resume_cb, NULL)) == NULL) {
		*err = strdup("out of memory");
		admin_stop();
		return -1;
	}
	evconnlistener_set_error_cb(admin_listener, admin_accept_error_cb);
	return 0;
bad:
	if (asprintf(err, "admin %s: bad address", address) == -1)
		*err = NULL;
	return -1;
}

void
admin_stop(void)
{
	if (admin_resume != NULL)
		event_free(admin_resume);
	admin_resume = NULL;
	if (admin_http != NULL)
		evhttp_free(admin_http);
	admin_http = NULL;
	admin_listener = NULL;
}
