/*
 * Tenants on the request path: authentication, the admission policy and
 * the budget store, the usage tap on responses, and settlement.
 *
 *   proxy_request -> admit_auth (401) -> model allowed (403)
 *     -> admit_start: parse (400), estimate, policy (400), body edits,
 *        ig_store_admit -> admit_store_cb -> refused (429/503) or
 *        proxy_admitted (forward)
 *   response: admit_stream_body (SSE: count content chunks, read and, if
 *     the client did not ask for it, strip the usage chunk) or
 *     admit_response_done (usage from the JSON body)
 *   proxy_request_free -> admit_finish: settle exactly once
 *
 * With no tenants in the config, nothing here runs: the gateway is an
 * open proxy (a warning says so at start).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "infergate/admission.h"
#include "infergate/fmt.h"
#include "infergate/log.h"
#include "infergate/store.h"
#include "gateway.h"

/* The tenant of the request's API key; -1 when answered 401. */
int
admit_auth(struct ig_request *r)
{
	const struct ig_auth *auth = r->snap->auth;
	const char *key = NULL;
	size_t i, keylen = 0;

	if (auth == NULL)
		return 0;
	for (i = 0; i < r->nheaders && key == NULL; i++) {
		const struct ig_header *h = &r->headers[i];
		char name[32];

		/* Only "authorization", "api-key" and "x-api-key" carry one. */
		if (h->namelen != 13 && h->namelen != 7 && h->namelen != 9)
			continue;
		memcpy(name, h->name, h->namelen);
		name[h->namelen] = '\0';
		if (!ig_auth_key_from_header(name, h->value, h->valuelen, &key,
		    &keylen))
			key = NULL;
	}
	if (key != NULL)
		r->tenant = r->conn != NULL ? ig_auth_lookup_memo(auth,
		    hs_auth_memo(r->conn), key, keylen) :
		    ig_auth_lookup(auth, key, keylen);
	if (r->tenant == NULL) {
		WSTAT_ADD(r->worker, ST_AUTH_FAILURES, 1);
		r->outcome = "refused";
		proxy_send_error(r, 401, "invalid_request_error",
		    "invalid_api_key", NULL, "%s", key == NULL ?
		    "no API key: send Authorization: Bearer <key>" :
		    "incorrect API key provided");
		return -1;
	}
	return 0;
}

bool
admit_model_allowed(const struct ig_request *r, const char *name)
{
	const struct ig_tenant_conf *t = r->tenant;
	size_t i;

	if (t == NULL)
		return true;
	for (i = 0; i < t->nmodels; i++)
		if (strcmp(t->models[i], "*") == 0 ||
		    strcmp(t->models[i], name) == 0)
			return true;
	return false;
}

static void
admit_refuse(struct ig_request *r, const struct ig_admit_result *res)
{
	r->refused_by = ig_limit_name(res->limit);
	atomic_fetch_add_explicit(&r->worker->rejects[res->limit], 1,
	    memory_order_relaxed);
	r->outcome = "refused";
	r->rl_headers = false;
	r->retry_after_s = res->retry_after_s;
	proxy_send_error(r, res->status, res->type ? res->type :
	    "invalid_request_error", res->code, res->param, "%s", res->message);
}

/* Keeps what the response headers admission adds are made of. */
static void
admit_keep_headers(struct ig_request *r, const struct ig_admit_result *res)
{
	r->rl = res->rl;
	r->rl_headers = true;
	r->retry_after_s = 0;
}

/*
 * Into BUF (CAP bytes, NUL-terminated): an admitted request's x-ratelimit-*
 * lines and x-infergate-max-tokens-clamped, a refused one's Retry-After.
 * Returns their length; what does not fit is left out whole.
 */
/* "NAME: V\r\n" (NAME with its ": "), or nothing when it does not fit. */
static void
admit_line(struct ig_fmt *f, const char *name, size_t namelen, uint64_t v)
{
	size_t done = f->len;

	ig_fmt_mem(f, name, namelen);
	ig_fmt_u64(f, v);
	ig_fmt_lit(f, "\r\n");
	if (f->overflow) {
		f->len = done;
		f->buf[done] = '\0';
	}
}

#define ADMIT_LINE(f, name, v)	admit_line((f), name, sizeof(name) - 1, (v))

size_t
admit_headers(const struct ig_request *r, char *buf, size_t cap)
{
	struct ig_fmt f = IG_FMT_INIT(buf, cap);
	int n;

	if (cap == 0)
		return 0;
	buf[0] = '\0';
	if (r->rl_headers) {
		if ((n = ig_ratelimit_format(&r->rl, buf, cap)) < 0)
			n = 0;
		f.len = (size_t)n;
		buf[f.len] = '\0';
		if (r->clamped)
			ADMIT_LINE(&f, "x-infergate-max-tokens-clamped: ",
			    r->max_tokens);
	}
	if (r->retry_after_s > 0)	/* refused, or shed by its pool */
		ADMIT_LINE(&f, "Retry-After: ", r->retry_after_s);
	return f.len;
}

static void
admit_renew_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ig_request *r = arg;

	if (r->lease != NULL)
		ig_store_renew(r->worker->store, r->lease);
}

static void
admit_store_cb(const struct ig_admit_result *res, struct ig_lease *lease,
    void *arg)
{
	struct ig_request *r = arg;

	r->admit_op = NULL;
	if (!res->degraded)
		ig_hist_observe(&r->worker->store_hist, IG_HIST_STORE,
		    now_ns() - r->t_admit);
	if (!res->admitted) {
		admit_refuse(r, res);
		return;
	}
	r->lease = lease;
	if (res->would_refuse) {
		r->would_refuse = ig_limit_name(res->limit);
		atomic_fetch_add_explicit(&r->worker->would_reject[res->limit],
		    1, memory_order_relaxed);
	}
	admit_keep_headers(r, res);
	if (r->info.stream && lease != NULL) {
		uint64_t ms = ig_store_renew_ms(r->worker->store);
		struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

		r->renew = event_new(r->worker->base, -1, EV_PERSIST,
		    admit_renew_cb, r);
		if (r->renew != NULL && ms > 0)
			event_add(r->renew, &tv);
	}
	proxy_admitted(r);
}

/*
 * Admission of a parsed request whose model is known: the checks that
 * need no store, the body edits, then the store. Ends in proxy_admitted()
 * or in a refusal (which frees the request).
 */
void
admit_start(struct ig_request *r)
{
	struct ig_output_decision out;
	struct ig_admit_result res;
	struct ig_admit_req ar;

	if (r->tenant == NULL) {
		proxy_admitted(r);
		return;
	}
	r->input_est = ig_request_estimate_input(&r->info, r->model->conf);
	if (ig_policy_request(r->tenant, r->input_est, &r->info,
	    r->model->conf->context_tokens, &out, &res) == -1) {
		admit_refuse(r, &res);
		return;
	}
	if (res.would_refuse) {
		r->would_refuse = ig_limit_name(res.limit);
		atomic_fetch_add_explicit(&r->worker->would_reject[res.limit],
		    1, memory_order_relaxed);
	}
	r->max_tokens = out.max_tokens;
	r->set_max_tokens = out.set_body && r->ep != EP_EMBEDDINGS;
	r->clamped = out.clamped;
	r->force_usage = r->info.stream && !r->info.client_usage;
	memset(&ar, 0, sizeof(ar));
	ar.tenant = r->tenant->id;
	ar.request_id = r->lease_id;
	ar.limits = r->tenant->limits;
	ar.shadow = r->tenant->shadow;
	ar.input_tokens = r->input_est;
	/* max_tokens is per choice: n (or best_of) of them are generated */
	ar.output_tokens = r->info.choices > 1 && out.max_tokens >
	    UINT64_MAX / 2 / r->info.choices ? UINT64_MAX / 2 :
	    out.max_tokens * (r->info.choices > 1 ? r->info.choices : 1);
	r->t_admit = now_ns();
	if ((r->admit_op = ig_store_admit(r->worker->store, &ar,
	    admit_store_cb, r)) == NULL)
		goto nomem;
	return;
nomem:
	proxy_send_error(r, 503, "server_error", NULL, NULL, "out of memory");
}

/*
 * Counts a backend reported, kept when they are believable: negative
 * numbers (which arrive wrapped) and a total below the prompt (a
 * completion derived as total - prompt then wraps) are a broken
 * backend's, and settling them would charge nothing or nonsense: the
 * reservation stands instead, as when no usage is reported.
 */
#define ADMIT_USAGE_MAX	(1ULL << 53)

static void
admit_usage(struct ig_request *r, uint64_t prompt, uint64_t completion)
{
	if (prompt >= ADMIT_USAGE_MAX || completion >= ADMIT_USAGE_MAX) {
		log_warn("request %s: backend usage out of range: ignored",
		    r->id);
		return;
	}
	r->usage_prompt = prompt;
	r->usage_completion = completion;
	r->usage_known = true;
}

/* A usage object's numbers (JSON from its '{'), if it has them. */
static void
admit_read_usage(struct ig_request *r, const char *json, size_t len)
{
	uint64_t	 p, c;

	if (ig_usage_parse(json, len, &p, &c) == 0)
		admit_usage(r, p, c);
}

/*
 * Whether [P, END), from a member name's closing quote on, starts with
 * ':' (or ": ") and then OPEN ("{" or "[{").
 */
static bool
admit_member_opens(const char *p, const char *end, const char *open,
    size_t openlen)
{
	if (p == end || *p++ != ':')
		return false;
	if (p < end && *p == ' ')
		p++;
	return (size_t)(end - p) >= openlen && memcmp(p, open, openlen) == 0;
}

/*
 * Whether [P, END) holds the member name KEY (LEN bytes, quotes
 * included) followed by ':' (or ": ") and OPEN: found by memchr hops on
 * the name's first letter, which is rarer in an event than its quote.
 */
static bool
admit_sse_has(const char *p, const char *end, const char *key, size_t len,
    const char *open, size_t openlen)
{
	if (end - p < (ptrdiff_t)len)
		return false;
	for (p++; (p = memchr(p, key[1], end - p)) != NULL; p++) {
		if ((size_t)(end - p) < len - 1)
			return false;
		if (p[-1] == '"' && memcmp(p, key + 1, len - 1) == 0 &&
		    admit_member_opens(p + len - 1, end, open, openlen))
			return true;
	}
	return false;
}

/*
 * The members an SSE event's JSON may carry that matter here: a "usage"
 * object ("usage":{ or "usage": {) and a non-empty "choices" array
 * ("choices":[{ or "choices": [{). Either may also match inside a
 * string; a usage match is confirmed by parsing the event.
 */
static void
admit_sse_scan(const char *p, const char *end, bool *usage, bool *choice)
{
	*usage = admit_sse_has(p, end, "\"usage\"", 7, "{", 1);
	*choice = !*usage &&
	    admit_sse_has(p, end, "\"choices\"", 9, "[{", 2);
}

/*
 * One complete SSE event (without its blank line) from the backend.
 * Returns false when it must not reach the client: the usage chunk the
 * gateway asked for on the client's behalf.
 */
static bool
admit_sse_event(struct ig_request *r, const char *ev, size_t len)
{
	struct ig_usage_event ue;
	bool usage, choice;

	if (len < 6 || memcmp(ev, "data:", 5) != 0)
		return true;
	/* Content chunks are counted without a parse; only a chunk that
	 * may carry usage is read whole. */
	admit_sse_scan(ev + 5, ev + len, &usage, &choice);
	if (!usage) {
		if (choice)
			r->tokens_sent++;
		return true;
	}
	if (ig_usage_event(ev + 5, len - 5, &ue) == -1)
		return true;
	if (ue.usage_known) {
		admit_usage(r, ue.prompt, ue.completion);
	}
	if (ue.choices)
		r->tokens_sent++;
	return !(ue.usage && ue.no_choices && !r->info.client_usage);
}

/* A partial event held back longer than this ends the reading of a stream. */
#define ADMIT_SSE_EVENT_MAX	(1024 * 1024)

/*
 * The end of the first event in [P, END): a line end followed by an empty
 * line, lines ending in LF or CRLF (as sse-starlette, and so llama.cpp's
 * Python server, writes them). Returns where the event's last line end
 * starts and into *NEXT where the next event starts; NULL: no complete
 * event yet (a CR last may be the start of a CRLF).
 */
static const char *
admit_event_end(const char *p, const char *end, const char **next)
{
	const char *start = p, *t, *u;

	while (p < end && (t = memchr(p, '\n', end - p)) != NULL) {
		u = t + 1;
		if (u == end || (*u == '\r' && u + 1 == end))
			return NULL;
		if (*u == '\n' || (*u == '\r' && u[1] == '\n')) {
			*next = *u == '\n' ? u + 1 : u + 2;
			return t > start && t[-1] == '\r' ? t - 1 : t;
		}
		p = u;
	}
	return NULL;
}

/*
 * The complete events at the head of DATA (LEN bytes): each is read by
 * admit_sse_event and the ones to forward go to the client, consecutive
 * ones in one piece. Returns how many bytes they took; the rest is a
 * partial event.
 */
static size_t
admit_sse_events(struct ig_request *r, const char *data, size_t len)
{
	const char *p = data, *end = data + len, *run = data, *e, *next;

	while (p < end && (e = admit_event_end(p, end, &next)) != NULL) {
		if (!admit_sse_event(r, p, e - p)) {
			if (p > run)
				hs_response_body(r->conn, run, p - run);
			run = next;
		}
		p = next;
	}
	if (p > run)
		hs_response_body(r->conn, run, p - run);
	return p - data;
}

/*
 * A piece of a streamed body: passed on event by event. The backend
 * writes whole events, so events are normally read straight from DATA
 * and at most a partial one is held back (and completed by the next
 * piece).
 */
void
admit_stream_body(struct ig_request *r, const char *data, size_t len)
{
	size_t n, have;
	char *b;

	if (r->sse_raw) {
		hs_response_body(r->conn, data, len);
		return;
	}
	if (r->sse == NULL || evbuffer_get_length(r->sse) == 0) {
		n = admit_sse_events(r, data, len);
		data += n;
		len -= n;
		if (len == 0)
			return;
		if (r->sse == NULL &&
		    (r->sse = worker_evbuffer_get(r->worker)) == NULL) {
			hs_response_body(r->conn, data, len);	/* unread */
			return;
		}
	}
	if (evbuffer_add(r->sse, data, len) == -1) {
		hs_response_body(r->conn, data, len);
		return;
	}
	have = evbuffer_get_length(r->sse);
	if ((b = (char *)evbuffer_pullup(r->sse, -1)) == NULL)
		return;
	evbuffer_drain(r->sse, admit_sse_events(r, b, have));
	/* Not events as we know them (or one past any real chunk): passed
	 * on as they come from now on, unread; the reservation stands. */
	if (evbuffer_get_length(r->sse) > ADMIT_SSE_EVENT_MAX) {
		log_info("request %s: an SSE event over %d KiB; the rest of the "
		    "stream is passed on unread", r->id,
		    ADMIT_SSE_EVENT_MAX / 1024);
		hs_response_body_buffer(r->conn, r->sse);
		r->sse_raw = true;
	}
}

/*
 * A buffered (non-streaming) response is complete: read its usage. Only
 * the usage object is parsed, not the whole completion: the last
 * "usage" key not inside a string (inside one its quotes would be
 * escaped), whose value is read up to its end.
 */
void
admit_response_done(struct ig_request *r)
{
	size_t len = evbuffer_get_length(r->resp);
	const char *b, *p;

	if (r->tenant == NULL || r->status < 200 || r->status >= 300 || len < 8)
		return;
	if ((b = (const char *)evbuffer_pullup(r->resp, -1)) == NULL)
		return;
	for (p = b + len - 7; p >= b; p--) {
		const char *v;

		if (memcmp(p, "\"usage\"", 7) != 0 || (p > b && p[-1] == '\\'))
			continue;
		for (v = p + 7; v < b + len && (*v == ' ' || *v == ':' ||
		    *v == '\t' || *v == '\n' || *v == '\r'); v++)
			;
		if (v >= b + len || *v != '{')
			continue;
		admit_read_usage(r, v, b + len - v);
		return;
	}
}

/*
 * Settles the lease once, when the request ends:
 *   usage reported                 -> the real total
 *   broke mid-stream / client gone -> estimated input + chunks sent
 *   failed before any output       -> 0
 *   completed, no usage reported   -> the reservation stands
 */
void
admit_finish(struct ig_request *r)
{
	uint64_t actual;

	if (r->admit_op != NULL) {
		ig_store_cancel(r->admit_op);
		r->admit_op = NULL;
	}
	if (r->renew != NULL) {
		event_free(r->renew);
		r->renew = NULL;
	}
	worker_evbuffer_put(r->worker, r->sse);
	r->sse = NULL;
	if (r->lease == NULL)
		return;
	if (r->usage_known)
		actual = r->usage_prompt + r->usage_completion;
	else if (!r->streaming)		/* the client got all or nothing */
		actual = r->status >= 200 && r->status < 300 && r->outcome &&
		    strcmp(r->outcome, "ok") == 0 ? IG_USAGE_UNKNOWN : 0;
	else if (r->outcome != NULL && strcmp(r->outcome, "ok") != 0) {
		actual = r->input_est + r->tokens_sent;
		r->usage_estimated = true;
	} else
		actual = IG_USAGE_UNKNOWN;
	if (actual == 0)
		r->failed_before_output = true;
	if (r->usage_known) {
		atomic_fetch_add_explicit(&r->worker->tokens_in, r->usage_prompt,
		    memory_order_relaxed);
		atomic_fetch_add_explicit(&r->worker->tokens_out,
		    r->usage_completion, memory_order_relaxed);
	} else if (r->usage_estimated) {
		r->usage_prompt = r->input_est;
		r->usage_completion = r->tokens_sent;
	}
	ig_store_settle(r->worker->store, r->lease, actual);
	r->lease = NULL;
}
