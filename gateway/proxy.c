/*
 * The proxy: what happens to a complete client request between the server
 * side (http_server.c) and the backend (upstream.c).
 *
 *   proxy_request -> parse JSON, find the model and its pool
 *                 -> proxy_forward: build the upstream request, up_send
 *   upstream events:
 *     headers  -> a stream starts now (2xx to a streaming request), or the
 *                 reply is buffered whole (bounded by max_response_bytes)
 *     body     -> passed on chunk by chunk, or appended to the buffer
 *     complete -> end of the client's response
 *     error    -> before any response byte: retry on another backend or
 *                 502/504; mid-stream: a final SSE error event
 *
 * Every path ends in hs_response_end() or hs_response_abort(), which free
 * the request: nothing may touch it after those calls.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/random.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <llhttp.h>
#include <jansson.h>

#include "infergate/capacity.h"
#include "infergate/fmt.h"
#include "infergate/log.h"
#include "gateway.h"

static void	 proxy_on_headers(struct ig_request *, int,
		    const struct ig_header *, size_t);
static void	 proxy_on_body(struct ig_request *, const char *, size_t);
static void	 proxy_on_complete(struct ig_request *);
static void	 proxy_on_error(struct ig_request *, const char *, bool, bool,
		    bool);
static void	 proxy_fail(struct ig_request *, const char *, bool);

static const struct up_events proxy_up_events = {
	.on_headers = proxy_on_headers,
	.on_body = proxy_on_body,
	.on_complete = proxy_on_complete,
	.on_error = proxy_on_error,
};

/* The time of the event being handled (now_hold); 0: read the clock. */
__thread uint64_t now_held;

uint64_t
now_ns(void)
{
	struct timespec ts;

	if (now_held != 0)
		return now_held;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/*
 * Sends an OpenAI error reply and ends the request (which is freed: the
 * caller must not touch it afterwards). A request whose client is gone is
 * just freed.
 */
void
proxy_send_error(struct ig_request *r, int status, const char *type,
    const char *code, const char *param, const char *fmt, ...)
{
	char msg[512], extra[1024];
	struct ig_fmt f = IG_FMT_INIT(extra, sizeof(extra));
	json_t *o;
	char *body;
	va_list ap;
	size_t len;

	if (r->conn == NULL) {
		proxy_request_free(r);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (r->error_code == NULL)
		r->error_code = code;
	if (r->outcome == NULL)
		r->outcome = "error";
	o = json_pack("{s:{s:s,s:s,s:s?,s:s?}}", "error", "message", msg,
	    "type", type, "param", param, "code", code);
	body = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	len = body ? strlen(body) : 0;
	ig_fmt_lit(&f, "Content-Type: application/json\r\n");
	if (r->allow != NULL) {
		ig_fmt_lit(&f, "Allow: ");
		ig_fmt_cstr(&f, r->allow);
		ig_fmt_lit(&f, "\r\n");
	}
	if (!f.overflow)
		f.len += admit_headers(r, extra + f.len, sizeof(extra) - f.len);
	r->backend_date = false;	/* our answer, our Date */
	hs_response_start(r->conn, status, extra, f.len, len);
	if (r->method != HTTP_HEAD)
		hs_response_body(r->conn, body, len);
	free(body);
	hs_response_end(r->conn);
}

#define PROXY_JSON_TYPE	"Content-Type: application/json\r\n"

static void
proxy_reply_json(struct ig_request *r, int status, json_t *o)
{
	char *body = json_dumps(o, JSON_COMPACT);
	size_t len;

	if (body == NULL) {
		proxy_send_error(r, 500, "server_error", NULL, NULL,
		    "out of memory");
		return;
	}
	len = strlen(body);
	hs_response_start(r->conn, status, PROXY_JSON_TYPE,
	    sizeof(PROXY_JSON_TYPE) - 1, len);
	if (r->method != HTTP_HEAD)
		hs_response_body(r->conn, body, len);
	free(body);
	hs_response_end(r->conn);
}

/* GET /v1/models: the models the config offers, in the OpenAI list form. */
static void
proxy_models(struct ig_request *r)
{
	const struct ig_catalog *cat = r->snap->catalog;
	json_t *list, *data;
	size_t i;

	list = json_pack("{s:s,s:[]}", "object", "list", "data");
	data = json_object_get(list, "data");
	for (i = 0; i < ig_catalog_nmodels(cat); i++) {
		const struct ig_model *m = ig_catalog_model_at(cat, i);

		if (!admit_model_allowed(r, m->conf->name))
			continue;
		json_array_append_new(data, json_pack("{s:s,s:s,s:i,s:s}",
		    "id", m->conf->name, "object", "model", "created", 0,
		    "owned_by", "infergate"));
	}
	proxy_reply_json(r, 200, list);
	json_decref(list);
}

/* V as exactly WIDTH lowercase hex digits (the low ones) at P. */
static void
proxy_hex(char *p, uint64_t v, int width)
{
	while (width-- > 0) {
		p[width] = "0123456789abcdef"[v & 15];
		v >>= 4;
	}
}

/*
 * Every request gets a name of its own, unique across gateway replicas: a
 * random 64-bit salt per worker thread, the worker and a sequence number
 * (32 hex digits). It names the request's lease in the budget store, so
 * that clients sending one X-Request-Id twice still hold two leases. A
 * client X-Request-Id is kept (for the backend, the response and the log)
 * when it is short and plain; else the request's own name is used.
 */
static void
proxy_request_id(struct ig_request *r)
{
	static __thread uint64_t salt;
	const struct ig_header *h = hs_find_header(r, "x-request-id");
	size_t i;

	while (salt == 0 && getrandom(&salt, sizeof(salt), 0) != sizeof(salt))
		salt = now_ns() ^ (uint64_t)(uintptr_t)&salt;
	proxy_hex(r->lease_id, salt, 16);
	proxy_hex(r->lease_id + 16, r->worker->id & 0xff, 2);
	proxy_hex(r->lease_id + 18, ++r->worker->next_request_seq, 14);
	r->lease_id[32] = '\0';
	if (h != NULL && h->valuelen > 0 && h->valuelen < sizeof(r->id)) {
		for (i = 0; i < h->valuelen; i++) {
			char ch = h->value[i];
			if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
			    ch == '.' || ch == ':'))
				break;
		}
		if (i == h->valuelen) {
			memcpy(r->id, h->value, h->valuelen);
			r->id[h->valuelen] = '\0';
			return;
		}
	}
	memcpy(r->id, r->lease_id, 33);
}

/* Resolves a virtual model through its route rules (first match wins). */
static const struct ig_model *
proxy_route(struct ig_request *r, const struct ig_model *m, size_t body_len)
{
	const struct ig_catalog *cat = r->snap->catalog;
	size_t i, hops;

	for (hops = 0; m != NULL && m->pool == NULL && hops < 8; hops++) {
		const struct ig_model_conf *mc = m->conf;
		const struct ig_model *next = NULL;
		uint64_t est = (uint64_t)(body_len /
		    (mc->bytes_per_token > 0 ? mc->bytes_per_token : 4));

		for (i = 0; i < mc->nroutes && next == NULL; i++) {
			const struct ig_route_conf *rt = &mc->routes[i];

			if (rt->tier != NULL && (r->tenant == NULL ||
			    r->tenant->tier == NULL ||
			    strcmp(rt->tier, r->tenant->tier) != 0))
				continue;
			if (rt->tenant != NULL && (r->tenant == NULL ||
			    strcmp(rt->tenant, r->tenant->id) != 0))
				continue;
			if (rt->has_max_input_tokens && est > rt->max_input_tokens)
				continue;
			next = ig_catalog_model(cat, rt->model, strlen(rt->model));
		}
		m = next;
	}
	return m != NULL && m->pool != NULL ? m : NULL;
}

static enum ig_endpoint
proxy_endpoint(enum gw_endpoint ep)
{
	return ep == EP_CHAT ? IG_EP_CHAT : ep == EP_COMPLETIONS ?
	    IG_EP_COMPLETIONS : IG_EP_EMBEDDINGS;
}

/* What ig_request_parse found wrong with the body: 400 (503: no memory). */
static void
proxy_refuse_body(struct ig_request *r, const struct ig_request_error *e)
{
	if (e->code == NULL)
		proxy_send_error(r, 503, "server_error", NULL, NULL,
		    "out of memory");
	else
		proxy_send_error(r, 400, "invalid_request_error", e->code,
		    e->param[0] ? e->param : NULL, "%s", e->message);
}

/* A model name the client sent, bounded for a message: "%.*s". */
#define PROXY_NAME(r)	(int)((r)->info.model_len < 128 ? \
			    (r)->info.model_len : 128), (r)->info.model

/* A header name with its length, for sets compared on every request. */
struct proxy_name {
	const char	*name;
	size_t		 len;
};
#define PN(s)	{ (s), sizeof(s) - 1 }

static bool
proxy_name_in(const struct ig_header *h, const struct proxy_name *set,
    size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (h->namelen == set[i].len &&
		    gw_caseeq(h->name, set[i].name, set[i].len))
			return true;
	return false;
}

/*
 * The request's place in a full pool's queue: the tenant's priority, or
 * what X-Infergate-Priority asks for, up to the tenant's max_priority
 * (higher asks are lowered to it, as max_tokens is clamped). Without
 * tenants the header is taken as it is. -1: answered 400.
 */
static int
proxy_priority(struct ig_request *r)
{
	const struct ig_header *h = hs_find_header(r, "x-infergate-priority");
	size_t i;

	r->priority = r->tenant != NULL ? r->tenant->priority : IG_PRIO_NORMAL;
	if (h == NULL)
		return 0;
	for (i = 0; i <= IG_PRIO_HIGH; i++)
		if (h->valuelen == strlen(ig_priority_name(i)) &&
		    gw_caseeq(h->value, ig_priority_name(i), h->valuelen))
			break;
	if (i > IG_PRIO_HIGH) {
		proxy_send_error(r, 400, "invalid_request_error",
		    "invalid_priority", NULL, "X-Infergate-Priority must be "
		    "low, normal or high");
		return -1;
	}
	r->priority = (enum ig_priority)i;
	if (r->tenant != NULL && r->priority > r->tenant->max_priority)
		r->priority = r->tenant->max_priority;
	return 0;
}

/*
 * A complete request from a client. Scans the body once (the fields
 * routing and admission need, and where the edits go), then forwards it
 * or refuses it. Admission's own complaints about the body wait until
 * the model is known (404 and 403 come first) and apply only to tenants.
 */
void
proxy_request(struct ig_request *r)
{
	struct ig_request_error perr;
	const struct ig_model *m;
	const char *body;
	size_t len;
	int rc;

	proxy_request_id(r);
	client_addr_resolve(r);
	if (admit_auth(r) == -1)
		return;
	if (r->ep == EP_MODELS) {
		proxy_models(r);
		return;
	}
	len = r->body ? evbuffer_get_length(r->body) : 0;
	body = len > 0 ? (const char *)evbuffer_pullup(r->body, -1) : "";
	if (body == NULL) {
		proxy_send_error(r, 503, "server_error", NULL, NULL,
		    "out of memory");
		return;
	}
	rc = ig_request_parse(body, len, proxy_endpoint(r->ep), &r->info,
	    &perr);
	if (rc == -1 && !perr.admission) {
		proxy_refuse_body(r, &perr);
		return;
	}
	m = ig_catalog_model(r->snap->catalog, r->info.model, r->info.model_len);
	if (m == NULL) {
		proxy_send_error(r, 404, "invalid_request_error",
		    "model_not_found", "model",
		    "the model '%.*s' does not exist", PROXY_NAME(r));
		return;
	}
	if (!admit_model_allowed(r, m->conf->name)) {
		r->outcome = "refused";
		proxy_send_error(r, 403, "invalid_request_error",
		    "model_not_allowed", "model", "this API key may not use "
		    "the model '%.*s'", PROXY_NAME(r));
		return;
	}
	if ((r->model = proxy_route(r, m, len)) == NULL) {
		proxy_send_error(r, 400, "invalid_request_error",
		    "no_route", "model", "no route of model '%.*s' matches "
		    "this request", PROXY_NAME(r));
		return;
	}
	r->routed_from = m;
	if (proxy_priority(r) == -1)
		return;
	if (rc == -1 && r->tenant != NULL) {
		r->outcome = "refused";
		proxy_refuse_body(r, &perr);
		return;
	}
	admit_start(r);
}

/* Admitted (or no tenants): next, a slot of the pool (queue.c). */
void
proxy_admitted(struct ig_request *r)
{
	pool_enter(r);
}

/*
 * With a pool slot (of the fallback's pool, perhaps): the edits to the
 * body (the upstream model name, the output cap admission set, stream
 * usage), spliced into the received bytes rather than re-serialized;
 * then the backend.
 */
void
proxy_dispatch(struct ig_request *r)
{
	const struct ig_model_conf *mc = r->model->conf;
	struct ig_request_edits ed;
	const char *want = mc->upstream_model;
	size_t len = r->body ? evbuffer_get_length(r->body) : 0;

	free(r->edited);	/* made for the model it fell back from */
	r->edited = NULL;
	memset(&ed, 0, sizeof(ed));
	if (want == NULL && r->model != r->routed_from)
		want = mc->name;
	if (want != NULL && (strlen(want) != r->info.model_len ||
	    memcmp(want, r->info.model, r->info.model_len) != 0)) {
		ed.model = want;
		ed.model_len = strlen(want);
	}
	ed.set_max_tokens = r->set_max_tokens;
	ed.max_tokens = r->max_tokens;
	ed.force_usage = r->force_usage;
	if (ed.model != NULL || ed.set_max_tokens || ed.force_usage) {
		if ((r->edited = malloc(sizeof(*r->edited))) == NULL) {
			proxy_send_error(r, 503, "server_error", NULL, NULL,
			    "out of memory");
			return;
		}
		if (ig_request_edit((const char *)evbuffer_pullup(r->body, -1),
		    len, &r->info, &ed, r->edited) == -1) {
			proxy_send_error(r, 500, "server_error", NULL, NULL,
			    "cannot rewrite the request for the backend");
			return;
		}
	}
	proxy_forward(r);
}

/* Hop-by-hop headers, and headers that carry client identity or framing. */
static bool
proxy_drop_request_header(const struct ig_header *h, const struct ig_header *conn)
{
	static const struct proxy_name drop[] = { PN("host"),
		PN("connection"), PN("keep-alive"), PN("proxy-connection"),
		PN("proxy-authorization"), PN("te"), PN("trailer"),
		PN("transfer-encoding"), PN("upgrade"), PN("content-length"),
		PN("expect"), PN("authorization"), PN("api-key"),
		PN("x-api-key"), PN("x-request-id"), PN("x-forwarded-for"),
		PN("forwarded"), PN("x-real-ip"), PN("accept-encoding") };

	if (proxy_name_in(h, drop, sizeof(drop) / sizeof(drop[0])))
		return true;
	if (h->namelen >= 12 && gw_caseeq(h->name, "x-infergate-", 12))
		return true;
	/* Names listed in Connection: are hop-by-hop too. */
	if (conn != NULL) {
		const char *s = conn->value, *end = s + conn->valuelen;

		while (s < end) {
			const char *t;

			while (s < end && (*s == ' ' || *s == ',' || *s == '\t'))
				s++;
			for (t = s; t < end && *t != ',' && *t != ' '; t++)
				;
			if (t > s && (size_t)(t - s) == h->namelen &&
			    strncasecmp(s, h->name, h->namelen) == 0)
				return true;
			s = t;
		}
	}
	return false;
}

/*
 * The request head for the backend, written into BUF in one piece: the
 * client's end-to-end headers and ours, the body length BODY_LEN.
 */
static int
proxy_head(struct ig_request *r, struct evbuffer *buf, size_t body_len)
{
	const struct ig_header *conn = hs_find_header(r, "connection");
	struct evbuffer_iovec v;
	struct ig_fmt f;
	size_t i, need;

	need = 96 + strlen(r->path) + strlen(r->backend->host) +
	    sizeof(r->id) + sizeof(r->client_ip) +
	    (r->tenant != NULL ? strlen(r->tenant->id) + 24 : 0);
	for (i = 0; r->conn != NULL && i < r->nheaders; i++)
		need += r->headers[i].namelen + r->headers[i].valuelen + 4;
	if (evbuffer_reserve_space(buf, need, &v, 1) != 1)
		return -1;
	f = (struct ig_fmt)IG_FMT_INIT(v.iov_base, v.iov_len);
	ig_fmt_lit(&f, "POST ");
	ig_fmt_cstr(&f, r->path);
	ig_fmt_lit(&f, " HTTP/1.1\r\nHost: ");
	ig_fmt_cstr(&f, r->backend->host);
	ig_fmt_lit(&f, "\r\n");
	for (i = 0; r->conn != NULL && i < r->nheaders; i++) {
		const struct ig_header *h = &r->headers[i];

		if (proxy_drop_request_header(h, conn))
			continue;
		ig_fmt_mem(&f, h->name, h->namelen);
		ig_fmt_lit(&f, ": ");
		ig_fmt_mem(&f, h->value, h->valuelen);
		ig_fmt_lit(&f, "\r\n");
	}
	if (r->tenant != NULL) {
		ig_fmt_lit(&f, "X-Infergate-Tenant: ");
		ig_fmt_cstr(&f, r->tenant->id);
		ig_fmt_lit(&f, "\r\n");
	}
	/* bodies are read (usage) and streams get our events: uncompressed */
	ig_fmt_lit(&f, "Accept-Encoding: identity\r\nX-Request-Id: ");
	ig_fmt_cstr(&f, r->id);
	ig_fmt_lit(&f, "\r\nX-Forwarded-For: ");
	/* from a trusted proxy, its list goes on, with the proxy added */
	for (i = 0; r->xff_trusted && r->conn != NULL && i < r->nheaders; i++)
		if (client_addr_is_xff(&r->headers[i]) &&
		    r->headers[i].valuelen > 0) {
			ig_fmt_mem(&f, r->headers[i].value,
			    r->headers[i].valuelen);
			ig_fmt_lit(&f, ", ");
		}
	ig_fmt_cstr(&f, r->client_ip);
	ig_fmt_lit(&f, "\r\nContent-Length: ");
	ig_fmt_u64(&f, body_len);
	ig_fmt_lit(&f, "\r\n\r\n");
	if (f.overflow)
		return -1;
	v.iov_len = f.len;
	return evbuffer_commit_space(buf, &v, 1);
}

static size_t
proxy_body_length(const struct ig_request *r)
{
	if (r->edited != NULL)
		return r->edited->len;
	return r->body != NULL ? evbuffer_get_length(r->body) : 0;
}

/* Large pieces are referenced, not copied (see proxy_body). */
#define PROXY_COPY_MAX	(16 * 1024)

static int
proxy_piece(struct evbuffer *buf, const char *p, size_t len)
{
	if (len <= PROXY_COPY_MAX)
		return evbuffer_add(buf, p, len);
	return evbuffer_add_reference(buf, p, len, NULL, NULL);
}

/*
 * The body as forwarded, after the head in BUF: the received bytes, or
 * the pieces of the edited body. Every attempt writes it again. Large
 * pieces are referenced in place: the request's body and edits outlive
 * the connection's output (a connection is pooled only once its output
 * is written, and is freed with the request otherwise).
 */
static int
proxy_body(struct ig_request *r, struct evbuffer *buf)
{
	const char *b;
	size_t i, len = r->body != NULL ? evbuffer_get_length(r->body) : 0;

	if (r->edited != NULL) {
		for (i = 0; i < r->edited->npieces; i++)
			if (proxy_piece(buf, r->edited->piece[i].p,
			    r->edited->piece[i].len) == -1)
				return -1;
		return 0;
	}
	if (len == 0)
		return 0;
	if ((b = (const char *)evbuffer_pullup(r->body, -1)) == NULL)
		return -1;
	return proxy_piece(buf, b, len);
}

/* The attempt on r->backend is over: one less in flight to it. */
static void
proxy_attempt_done(struct ig_request *r)
{
	if (r->attempt_on != NULL) {
		ig_bstate_attempt_done(r->attempt_on);
		r->attempt_on = NULL;
	}
}

/* The pool the current attempt's backend is from (see proxy_pool_now). */
static const struct ig_pool *
proxy_attempt_pool(const struct ig_request *r)
{
	return r->bsnap != NULL ? r->bpool : r->model->pool;
}

/* TRIED (bits of FROM's backends) as bits of TO's with the same names. */
static uint64_t
proxy_tried_in(const struct ig_pool *from, const struct ig_pool *to,
    uint64_t tried)
{
	uint64_t out = 0;
	size_t i, j;

	for (i = 0; i < from->nbackends && i < 64; i++) {
		if ((tried & (1ULL << i)) == 0)
			continue;
		for (j = 0; j < to->nbackends && j < 64; j++)
			if (strcmp(from->backends[i].name,
			    to->backends[j].name) == 0)
				out |= 1ULL << j;
	}
	return out;
}

/* The attempt's pool is the request's own again. */
static void
proxy_pool_own(struct ig_request *r)
{
	if (r->bsnap != NULL)
		snapshot_unref(r->bsnap);
	r->bsnap = NULL;
	r->bpool = NULL;
}

/* The pool CUR has for the request: its own when CUR is its snapshot. */
static const struct ig_pool *
proxy_pool_in(const struct ig_request *r, struct ig_snapshot *cur)
{
	const struct ig_pool *own = r->model->pool, *p;

	if (cur == r->snap)
		return own;
	p = ig_catalog_pool_named(cur->catalog, own->conf->name);
	return p != NULL ? p : own;
}

/*
 * The request's pool as the published snapshot has it now, for the next
 * attempt: a DNS change or a reload since the request came in gives it
 * the pool's backends of now (a parked request finds the addresses a
 * scaled-up Service gained; a retry skips those it lost). The attempt
 * keeps that snapshot (r->bsnap) while it uses them; r->backend must be
 * picked again after this. A pool the config no longer has is the
 * request's own.
 */
const struct ig_pool *
proxy_pool_now(struct ig_request *r)
{
	struct ig_snapshot *cur = snapshot_peek(), *old;
	const struct ig_pool *own = r->model->pool, *was, *p;

	/* A fallback moved the request to another model's pool. */
	if (r->bsnap != NULL && strcmp(r->bpool->conf->name,
	    own->conf->name) != 0) {
		proxy_pool_own(r);
		r->tried = 0;
		r->backend = NULL;
	}
	was = proxy_attempt_pool(r);
	if (cur == r->bsnap || (cur == r->snap && r->bsnap == NULL))
		return was;
	p = proxy_pool_in(r, cur);
	/* The new pool first: WAS lives in the old snapshot until the
	 * backends that failed the request are carried over by name. */
	old = r->bsnap;
	r->bsnap = p != own ? snapshot_ref(cur) : NULL;
	r->bpool = p != own ? p : NULL;
	if (r->tried != 0)
		r->tried = proxy_tried_in(was, p, r->tried);
	r->backend = NULL;	/* it was the old snapshot's */
	if (old != NULL)
		snapshot_unref(old);
	return p;
}

/*
 * Builds the upstream request and sends it to the next backend to try
 * (also for a parked request whose pool has a backend again).
 */
void
proxy_forward(struct ig_request *r)
{
	const struct ig_pool *pool;
	const struct ig_pool_conf *pc;
	struct evbuffer *buf;
	bool all_down;

	/* Before the pool of now: the last attempt's backend state may go
	 * with the snapshot it held. */
	proxy_attempt_done(r);
	pool = proxy_pool_now(r);
	pc = pool->conf;
	r->backend = ig_balancer_pick(pool, &r->worker->rr_cursor,
	    &r->worker->p2c_seed, r->tried, now_ns(), &all_down);
	if (r->backend == NULL) {
		if (r->attempts == 0 && all_down)
			pool_no_backend(r);	/* when_empty */
		else	/* the others are down: the last failure stands */
			proxy_fail(r, r->last_error != NULL ? r->last_error :
			    "no backend is ready", r->last_timeout);
		return;
	}
	r->btls = (r->bsnap != NULL ? r->bsnap : r->snap)->pool_tls[pool->index];
	r->btls_fp = (r->bsnap != NULL ? r->bsnap : r->snap)->
	    pool_tls_fp[pool->index];
	r->attempt_on = r->backend->state;
	ig_bstate_attempt(r->attempt_on);
	r->attempts++;
	if (r->deadline_ns == 0 && pc->request_timeout_ms > 0)
		r->deadline_ns = now_ns() + pc->request_timeout_ms * 1000000ULL;
	if ((buf = up_open(r, r->backend, pc, &proxy_up_events)) == NULL) {
		/* The gateway's own shortage, not the backend's failure: no
		 * ejection, no retry elsewhere (it would fail the same). */
		if (gw_errno_scarce(errno)) {
			log_warn("request %s: no socket for backend %s: %s",
			    r->id, r->backend->name, strerror(errno));
			WSTAT_ADD(r->worker, ST_UP_NO_SOCKET, 1);
			r->retry_after_s = 1;
			proxy_send_error(r, 503, "server_error",
			    "gateway_overloaded", NULL, "the gateway is out of "
			    "file descriptors or memory; retry later");
			return;
		}
		proxy_on_error(r, "cannot connect", false, true, false);
		return;
	}
	if (proxy_head(r, buf, proxy_body_length(r)) == -1 ||
	    proxy_body(r, buf) == -1) {
		up_cancel(r);
		proxy_send_error(r, 503, "server_error", NULL, NULL,
		    "out of memory");
		return;
	}
	up_start(r);
}

/* Response headers the client must not get from the backend as they are. */
static bool
proxy_drop_response_header(const struct ig_header *h)
{
	static const struct proxy_name drop[] = { PN("connection"),
		PN("keep-alive"), PN("proxy-connection"), PN("te"),
		PN("trailer"), PN("transfer-encoding"), PN("upgrade"),
		PN("content-length"), PN("x-request-id") };

	return proxy_name_in(h, drop, sizeof(drop) / sizeof(drop[0]));
}

static void
proxy_on_headers(struct ig_request *r, int status, const struct ig_header *h,
    size_t n)
{
	const struct ig_pool_conf *pc;
	size_t i, cap = ADMIT_HDRS_MAX + 1;
	struct ig_fmt f;

	r->t_first_byte = now_ns();
	r->status = status;
	r->backend_date = false;
	pc = proxy_attempt_pool(r)->conf;
	/* ejection.after_5xx: a backend that answers but only with errors */
	if (ig_bstate_response(r->backend->state, status >= 500,
	    pc->eject_after_5xx, r->t_first_byte, pc->eject_ms * 1000000ULL))
		log_warn("backend %s: ejected for %llu ms after %llu 5xx "
		    "responses in a row", r->backend->name,
		    (unsigned long long)pc->eject_ms,
		    (unsigned long long)pc->eject_after_5xx);
	for (i = 0; i < n; i++)
		cap += h[i].namelen + h[i].valuelen + 4;
	free(r->resp_head);
	if ((r->resp_head = malloc(cap)) == NULL) {
		up_cancel(r);
		proxy_send_error(r, 503, "server_error", NULL, NULL,
		    "out of memory");
		return;
	}
	f = (struct ig_fmt)IG_FMT_INIT(r->resp_head, cap);
	for (i = 0; i < n; i++) {
		if (proxy_drop_response_header(&h[i]))
			continue;
		if (h[i].namelen == 4 && gw_caseeq(h[i].name, "date", 4))
			r->backend_date = true;
		ig_fmt_mem(&f, h[i].name, h[i].namelen);
		ig_fmt_lit(&f, ": ");
		ig_fmt_mem(&f, h[i].value, h[i].valuelen);
		ig_fmt_lit(&f, "\r\n");
	}
	f.len += admit_headers(r, r->resp_head + f.len, cap - f.len);
	r->resp_head_len = f.len;
	if (r->info.stream && status >= 200 && status < 300 &&
	    r->conn != NULL) {
		r->streaming = true;
		WSTAT_ADD(r->worker, ST_STREAMS, 1);
		hs_response_start(r->conn, status, r->resp_head,
		    r->resp_head_len, -1);
		return;
	}
	worker_evbuffer_put(r->worker, r->resp);	/* a retry's */
	if ((r->resp = worker_evbuffer_get(r->worker)) == NULL) {
		up_cancel(r);
		proxy_send_error(r, 503, "server_error", NULL, NULL,
		    "out of memory");
	}
}

static void
proxy_on_body(struct ig_request *r, const char *data, size_t len)
{
	if (r->streaming) {
		if (r->t_first_token == 0 && len > 0) {
			r->t_first_token = now_ns();
			ig_hist_observe(ig_cap_hist(r->model->pool->cap,
			    IG_CAP_TTFT), IG_HIST_REQUEST,
			    r->t_first_token - r->t_start);
		}
		if (r->tenant != NULL)	/* usage tap */
			admit_stream_body(r, data, len);
		else
			hs_response_body(r->conn, data, len);
		/* Backpressure: a slow client pauses the backend's reads. */
		if (!r->paused && hs_output_full(r->conn)) {
			r->paused = true;
			up_pause(r, true);
		}
		return;
	}
	if (evbuffer_get_length(r->resp) + len >
	    r->snap->conf->limits.max_response_bytes) {
		up_cancel(r);
		r->outcome = "response_too_large";
		proxy_send_error(r, 502, "server_error", "upstream_error", NULL,
		    "the backend's response is larger than the gateway accepts");
		return;
	}
	evbuffer_add(r->resp, data, len);
}

void
proxy_client_writable(struct ig_request *r)
{
	if (r->paused && !hs_output_full(r->conn)) {
		r->paused = false;
		up_pause(r, false);
	}
}

static void
proxy_on_complete(struct ig_request *r)
{
	if (r->streaming) {
		if (r->sse != NULL)	/* a last event without its blank line */
			hs_response_body_buffer(r->conn, r->sse);
		hs_response_end(r->conn);
		return;
	}
	admit_response_done(r);
	hs_response_start(r->conn, r->status, r->resp_head, r->resp_head_len,
	    (int64_t)evbuffer_get_length(r->resp));
	if (r->method != HTTP_HEAD)
		hs_response_body_buffer(r->conn, r->resp);
	hs_response_end(r->conn);
}

/*
 * Backends this request has not failed on yet, of the pool a retry
 * would pick from (the published one's: see proxy_pool_now).
 */
static size_t
proxy_untried(const struct ig_request *r)
{
	const struct ig_pool *was = proxy_attempt_pool(r);
	const struct ig_pool *now = proxy_pool_in(r, snapshot_peek());
	uint64_t bits = now == was ? r->tried :
	    proxy_tried_in(was, now, r->tried);
	size_t n = now->nbackends > 64 ? 64 : now->nbackends;
	size_t tried = (size_t)__builtin_popcountll(bits);

	return tried < n ? n - tried : 0;
}

/*
 * retries.budget: the first retry of a request counts against its pool's
 * budget until the request ends (a failing pool cannot double its load
 * with retries); the keep-alive race's retry is not counted.
 */
static bool
proxy_retry_allowed(struct ig_request *r)
{
	if (r->retry_cap != NULL)
		return true;
	if (r->cap == NULL || !ig_cap_retry_begin(r->cap,
	    r->model->pool->conf->retries_budget))
		return false;
	r->retry_cap = r->cap;
	return true;
}

/*
 * The backend failed. A request that never reached it (refused, connect
 * timeout, TLS handshake, not read) may be tried again on another
 * backend within the pool's retry allowance; one on a pooled connection
 * that closed before any byte of a response (the keep-alive race) at
 * once on a fresh connection. A request the backend may be working on
 * (sent on a fresh connection, or timed out after it was sent) is never
 * sent again, as nginx does for a POST that went out: a generation is
 * not paid for twice, and a request that crashes its backend does not
 * go on to the next. Otherwise the client gets 502/504, or, mid-stream,
 * a final SSE error event and the end of the stream.
 */
static void
proxy_on_error(struct ig_request *r, const char *errstr, bool timeout,
    bool before_response, bool sent)
{
	/* the attempt's settings: its pool may be a newer config's */
	const struct ig_pool_conf *pc = proxy_attempt_pool(r)->conf;
	uint64_t now = now_ns();
	bool stale = r->up_reused && !timeout && before_response;
	bool in_time = r->deadline_ns == 0 || now < r->deadline_ns;

	r->last_error = errstr;		/* static strings (upstream.c, llhttp) */
	r->last_timeout = timeout;
	WSTAT_ADD(r->worker, ST_UP_ERRORS, 1);
	log_info("request %s: backend %s: %s", r->id,
	    r->backend ? r->backend->name : "-", errstr);
	/* Passive ejection: the backend's failures, not the keep-alive race
	 * nor the request's own deadline. */
	if (r->backend != NULL && before_response && !stale && in_time &&
	    pc->eject_after > 0 && ig_bstate_fail(r->backend->state, pc->eject_after, now,
	    pc->eject_ms * 1000000ULL))
		log_warn("backend %s: ejected for %llu ms after %llu failures "
		    "in a row (last: %s)", r->backend->name,
		    (unsigned long long)pc->eject_ms,
		    (unsigned long long)pc->eject_after, errstr);
	if (r->conn == NULL) {
		proxy_request_free(r);
		return;
	}
	if (before_response && !r->resp_started && in_time &&
	    (stale || !sent)) {
		if (!stale && r->backend != NULL && r->backend->index < 64)
			r->tried |= 1ULL << r->backend->index;
		if (stale || (r->attempts <= pc->retries_max_per_request &&
		    proxy_untried(r) > 0 && proxy_retry_allowed(r))) {
			WSTAT_ADD(r->worker, ST_UP_RETRIES, 1);
			if (stale)
				r->attempts--;
			free(r->resp_head);
			r->resp_head = NULL;
			proxy_forward(r);
			return;
		}
	}
	proxy_fail(r, errstr, timeout);
}

/* No more tries: tell the client, in the form its response is in. */
static void
proxy_fail(struct ig_request *r, const char *errstr, bool timeout)
{
	static const char sse_err[] = "data: {\"error\":{\"message\":\"the "
	    "backend failed mid-stream\",\"type\":\"server_error\",\"param\":"
	    "null,\"code\":\"upstream_error\"}}\n\n";

	if (r->conn == NULL) {
		proxy_request_free(r);
		return;
	}
	r->outcome = timeout ? "upstream_timeout" : "upstream_error";
	if (r->streaming) {
		hs_response_body(r->conn, sse_err, sizeof(sse_err) - 1);
		hs_response_end(r->conn);
		return;
	}
	if (timeout)
		proxy_send_error(r, 504, "server_error", "upstream_timeout", NULL,
		    "the backend did not answer in time");
	else
		proxy_send_error(r, 502, "server_error", "upstream_error", NULL,
		    "the backend failed: %s", errstr);
}

/* The one teardown of a request: cancels what is in flight, logs, frees. */
void
proxy_request_free(struct ig_request *r)
{
	if (r->up != NULL)
		up_cancel(r);
	proxy_attempt_done(r);
	if (r->retry_cap != NULL)
		ig_cap_retry_done(r->retry_cap);
	pool_leave(r);
	admit_finish(r);
	/* A request a backend answered, whatever the status; not a refusal.
	 * (A pool's capacity entry is its name's: the attempt's is the same.) */
	if (r->t_first_byte != 0)
		ig_hist_observe(ig_cap_hist(r->model->pool->cap,
		    IG_CAP_DURATION), IG_HIST_REQUEST, now_ns() - r->t_start);
	if (r->dispatched || r->logged)
		access_log_request(r);
	if (r->dispatched)
		WSTAT_SUB(r->worker, ST_REQ_INFLIGHT, 1);
	free(r->edited);
	worker_evbuffer_put(r->worker, r->body);
	worker_evbuffer_put(r->worker, r->resp);
	free(r->resp_head);
	proxy_pool_own(r);
	snapshot_unref(r->snap);
	worker_block_put(r->worker, WB_REQUEST, r, sizeof(*r));
}
