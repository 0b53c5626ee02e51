/*
 * infergate-sim: a stand-in for a vLLM/TGI model server, driven by the
 * gateway's integration tests, the demo and the benchmarks. One thread, one
 * libevent loop; the HTTP side is sim_http.c.
 *
 * Token rule (deterministic; also printed by --help):
 *   prompt tokens, where ceil4(n) = ceil(n / 4) and bytes are UTF-8 bytes:
 *     /v1/chat/completions: for each message, 4 + ceil4(bytes of its text
 *       content), plus 2. The content is a string, or an array of parts
 *       whose "text" members count; anything else counts 0 bytes.
 *     /v1/completions: ceil4(bytes) of the prompt string; for an array of
 *       strings, the sum of ceil4(bytes) over the strings. A token-id array
 *       counts one token per id.
 *     /v1/embeddings: the same rule on "input", summed over the inputs.
 *   completion tokens: max_completion_tokens, else max_tokens, else
 *     --default-max-tokens; token i (from 0) is the text "tok<i> ", and
 *     every completion ends with finish_reason "length".
 *
 * Timing: a stream sends its first chunk --ttft ms after it is admitted,
 * then one chunk per token every --itl ms. A non-streaming completion
 * answers after ttft + itl * (tokens - 1), embeddings after ttft.
 *
 * Timestamps (--stamp, for the benchmarks): every JSON event of a stream
 * opens with "sim_ts": the CLOCK_MONOTONIC time in ns at which the
 * simulator wrote it, and the first content event also with "sim_req_ts":
 * when the request's last bytes arrived in the socket (the kernel's receive
 * time, not when the simulator's loop got round to reading them). A client
 * on the same machine reads the same clock: receive time - sim_ts is the
 * event's transit, sim_req_ts - its own write time the request's path.
 * The members are extra keys of the chunk object, so the event stays valid
 * OpenAI-shaped JSON that a proxy passes on unchanged; "data: [DONE]" and
 * non-streaming replies carry no stamp.
 *
 * Fault injection: each inference request that passes validation (the
 * startup 503, 400 and 404 come first) draws three numbers u in [0, 1) from
 * splitmix64 seeded with --seed, in the order fail, hang, close; a fault
 * applies when u < its rate, so rate 1 hits every request and 0 none.
 *   fail   answered at once with --fail-status and an OpenAI error body.
 *   hang   never answered and takes no slot (neither active nor waiting);
 *          the connection is held open until the client closes it.
 *   close  streaming: the connection closes after --close-after content
 *          chunks, with neither [DONE] nor the end of the chunked body.
 *          Non-streaming: after the usual delay, the head (announcing the
 *          full Content-Length) and the first half of the body are written,
 *          then the connection closes.
 */
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <http_parser.h>
#include <jansson.h>

#include "sim_http.h"

#define SIM_MAX_MS		3600000L	/* one hour */
#define SIM_MAX_TOKENS		(1L << 20)
#define SIM_MAX_MODEL		200		/* bytes; keeps SSE events small */
#define SIM_EVENT_MAX		2048
#define SIM_EMBED_DIM		8

struct sim_conf {
	const char	*address;
	int		 port;
	const char	*model;
	long		 ttft_ms;
	long		 itl_ms;
	long		 max_concurrent;	/* 0: unlimited */
	long		 startup_delay_ms;
	long		 default_max_tokens;
	double		 fail_rate;
	long		 fail_status;
	double		 close_rate;
	long		 close_after;
	double		 hang_rate;
	unsigned long long seed;
	int		 stamp;
};

enum gen_kind {
	GEN_CHAT,
	GEN_COMPLETION,
	GEN_EMBEDDING,
};

enum gen_fault {
	FAULT_NONE,
	FAULT_CLOSE,
	FAULT_HANG,
};

enum gen_end {
	GEN_COMPLETED,		/* answered in full */
	GEN_CANCELLED,		/* the client went away */
	GEN_CLOSED,		/* injected close */
	GEN_DROPPED,		/* hung request let go, or shutdown */
};

/* One inference request, from validation to its last byte. */
struct gen {
	TAILQ_ENTRY(gen)	 entry;		/* in the wait queue */
	struct sim		*sim;
	struct sim_http_conn	*conn;		/* NULL once the client is gone */
	struct event		*timer;
	enum gen_kind		 kind;
	enum gen_fault		 fault;
	int			 stream;
	int			 include_usage;
	int			 queued;
	int			 active;
	long			 prompt_tokens;
	long			 max_tokens;
	long			 next_token;
	unsigned long long	 id;
	long long		 created;
	long long		 req_ns;	/* --stamp: request read */
	char			*tenant;	/* X-Infergate-Tenant or NULL */
	json_t			*input;		/* embeddings */
};

struct sim {
	struct sim_conf		 conf;
	struct event_base	*base;
	struct sim_http		*http;
	struct event		*ev_term;
	struct event		*ev_int;
	struct timespec		 ready_at;	/* end of --startup-delay */
	long long		 started;
	uint64_t		 rng;
	unsigned long long	 next_id;
	int			 stopping;
	char			*model_json;	/* JSON string literal */
	char			*model_prom;	/* escaped Prometheus label */

	unsigned long long	 requests;
	unsigned long long	 completed;
	unsigned long long	 cancelled;
	unsigned long long	 failed_injected;
	unsigned long long	 closed_injected;
	unsigned long long	 hung_injected;
	unsigned long long	 prompt_tokens;
	unsigned long long	 generation_tokens;
	long			 active;
	long			 waiting;
	long			 max_active;
	json_t			*tenant_active;	/* tenant -> active now */
	json_t			*tenant_max;	/* tenant -> highest active */
	json_t			*last_headers;
	json_t			*last_body;
	TAILQ_HEAD(, gen)	 waitq;
};

static void	gen_timer_cb(evutil_socket_t, short, void *);
static void	sim_admit(struct sim *);

static const char usage_text[] =
"usage: infergate-sim --port N [options]\n"
"\n"
"A stand-in for a vLLM/TGI model server speaking the OpenAI HTTP API:\n"
"POST /v1/chat/completions, /v1/completions, /v1/embeddings; GET /v1/models,\n"
"/health, /metrics (vLLM-style), /sim/stats (JSON counters for tests).\n"
"\n"
"  --port N                listen port (required)\n"
"  --address A             listen address (default 127.0.0.1)\n"
"  --model NAME            served model name (default sim-model)\n"
"  --ttft MS               delay before the first token (default 0)\n"
"  --itl MS                delay between tokens (default 0)\n"
"  --max-concurrent N      requests generating at once, 0 = unlimited;\n"
"                          beyond it requests wait in FIFO order (default 0)\n"
"  --startup-delay MS      /v1/* answer 503 for this long, /health 200\n"
"  --default-max-tokens N  completion tokens when the body names none (16)\n"
"  --fail-rate F           fraction 0..1 of requests answered at once with\n"
"  --fail-status N           this status (default 500) and an error body\n"
"  --close-rate F          fraction of requests whose connection is closed:\n"
"  --close-after N           streams after N tokens (default 2), without\n"
"                            [DONE]; other replies after half the body\n"
"  --hang-rate F           fraction of requests never answered\n"
"  --seed N                seed of the fault draws (default 1)\n"
"  --stamp                 time-stamp stream events for benchmarks: every\n"
"                          JSON event opens with \"sim_ts\": its write time,\n"
"                          the first also with \"sim_req_ts\": when the\n"
"                          request arrived (kernel receive time of its last\n"
"                          bytes); CLOCK_MONOTONIC ns\n"
"  -h, --help              this text\n"
"  (--ttft-ms, --itl-ms and --startup-delay-ms are accepted as aliases)\n"
"\n"
"Token rule, ceil4(n) = ceil(n / 4) over UTF-8 bytes:\n"
"  chat prompt:        sum over messages of 4 + ceil4(text content), + 2;\n"
"                      content is a string or parts whose \"text\" counts\n"
"  completions prompt: ceil4(prompt), summed over an array of strings\n"
"  embeddings input:   ceil4(input), summed over the inputs\n"
"  (a token-id array counts one token per id)\n"
"  completion tokens:  max_completion_tokens, else max_tokens, else\n"
"                      --default-max-tokens; token i is the text \"tok<i> \"\n"
"\n"
"Non-streaming replies wait ttft + itl * (tokens - 1); embeddings wait ttft.\n"
"Each fault is drawn per valid inference request (fail, hang, close).\n";

/* ---- helpers ---------------------------------------------------------- */

static uint64_t
splitmix64(uint64_t *state)
{
	uint64_t	 z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* A uniform draw in [0, 1). */
static double
sim_draw(struct sim *s)
{
	return (double)(splitmix64(&s->rng) >> 11) * 0x1.0p-53;
}

/* CLOCK_MONOTONIC in ns: the clock --stamp puts into events. */
static long long
mono_ns(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long
ceil4(size_t n)
{
	return (long)((n + 3) / 4);
}

static int
sim_loading(const struct sim *s)
{
	struct timespec	 now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec < s->ready_at.tv_sec ||
	    (now.tv_sec == s->ready_at.tv_sec &&
	    now.tv_nsec < s->ready_at.tv_nsec);
}

/* Reply with obj (reference stolen) as compact JSON. */
static void
sim_reply_json(struct sim_http_conn *c, int status, json_t *obj, size_t flags)
{
	char	*text;

	text = obj != NULL ? json_dumps(obj, flags | JSON_COMPACT) : NULL;
	json_decref(obj);
	if (text == NULL) {
		sim_http_reply(c, 500, "text/plain", "out of memory\n", 14);
		return;
	}
	sim_http_reply(c, status, "application/json", text, strlen(text));
	free(text);
}

/* An OpenAI error body: {"error":{"message","type","param","code"}}. */
static void sim_reply_error(struct sim_http_conn *, int, const char *,
    const char *, const char *, const char *, ...)
    __attribute__((format(printf, 6, 7)));

static void
sim_reply_error(struct sim_http_conn *c, int status, const char *type,
    const char *param, const char *code, const char *fmt, ...)
{
	va_list	 ap;
	char	 msg[512];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sim_reply_json(c, status, json_pack("{s:{s:s, s:s, s:s?, s:s?}}",
	    "error", "message", msg, "type", type, "param", param,
	    "code", code), 0);
}

/* ---- prompt tokens ---------------------------------------------------- */

/* Bytes of a message's text: a string, or the "text" members of parts. */
static size_t
content_bytes(const json_t *content)
{
	const json_t	*part;
	size_t		 i, n = 0;

	if (json_is_string(content))
		return json_string_length(content);
	if (json_is_array(content))
		json_array_foreach(content, i, part)
			n += json_string_length(json_object_get(part, "text"));
	return n;
}

static int
count_chat(const json_t *body, long *out, const char **err)
{
	const json_t	*msgs, *m;
	size_t		 i;
	long		 n = 2;

	msgs = json_object_get(body, "messages");
	if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
		*err = "messages must be a non-empty array";
		return -1;
	}
	json_array_foreach(msgs, i, m) {
		if (!json_is_object(m)) {
			*err = "each message must be an object";
			return -1;
		}
		n += 4 + ceil4(content_bytes(json_object_get(m, "content")));
	}
	*out = n;
	return 0;
}

/* One input: a string, a token id, or an array of token ids. */
static int
count_one_input(const json_t *v, long *out)
{
	const json_t	*id;
	size_t		 i;

	if (json_is_string(v)) {
		*out += ceil4(json_string_length(v));
		return 0;
	}
	if (json_is_integer(v)) {
		*out += 1;
		return 0;
	}
	if (!json_is_array(v) || json_array_size(v) == 0)
		return -1;
	json_array_foreach(v, i, id)
		if (!json_is_integer(id))
			return -1;
	*out += (long)json_array_size(v);
	return 0;
}

/* A completions prompt or an embeddings input: one input or an array. */
static int
count_input(const json_t *v, long *out)
{
	const json_t	*item;
	size_t		 i;

	*out = 0;
	if (json_is_string(v))
		return count_one_input(v, out);
	if (!json_is_array(v) || json_array_size(v) == 0)
		return -1;
	if (json_is_integer(json_array_get(v, 0)))
		return count_one_input(v, out);		/* one token-id array */
	json_array_foreach(v, i, item)
		if (json_is_integer(item) || count_one_input(item, out) == -1)
			return -1;
	return 0;
}

/* ---- generations ------------------------------------------------------ */

static void
gen_free(struct gen *g)
{
	if (g->timer != NULL)
		event_free(g->timer);
	free(g->tenant);
	json_decref(g->input);
	free(g);
}

/*
 * Read what the simulator needs from a validated-model body. Returns the
 * generation (owned by the caller), or NULL with *err set (static text).
 */
static struct gen *
gen_new(struct sim *s, enum gen_kind kind, const json_t *body,
    const json_t *headers, const char **err)
{
	struct gen	*g;
	const json_t	*mt, *input;
	const char	*tenant;
	int		 rc;

	if ((g = calloc(1, sizeof(*g))) == NULL ||
	    (g->timer = evtimer_new(s->base, gen_timer_cb, g)) == NULL) {
		*err = "out of memory";
		goto fail;
	}
	g->sim = s;
	g->kind = kind;
	switch (kind) {
	case GEN_CHAT:
		rc = count_chat(body, &g->prompt_tokens, err);
		break;
	case GEN_COMPLETION:
		rc = count_input(json_object_get(body, "prompt"),
		    &g->prompt_tokens);
		if (rc == -1)
			*err = "prompt must be a string or an array of strings";
		break;
	case GEN_EMBEDDING:
	default:
		input = json_object_get(body, "input");
		rc = count_input(input, &g->prompt_tokens);
		if (rc == -1)
			*err = "input must be a string or an array of strings";
		g->input = json_incref((json_t *)input);
		break;
	}
	if (rc == -1)
		goto fail;
	if (kind != GEN_EMBEDDING) {
		mt = json_object_get(body, "max_completion_tokens");
		if (mt == NULL || json_is_null(mt))
			mt = json_object_get(body, "max_tokens");
		if (mt == NULL || json_is_null(mt))
			g->max_tokens = s->conf.default_max_tokens;
		else if (json_is_integer(mt) && json_integer_value(mt) >= 1 &&
		    json_integer_value(mt) <= SIM_MAX_TOKENS)
			g->max_tokens = (long)json_integer_value(mt);
		else {
			*err = "max_tokens must be an integer from 1 to 1048576";
			goto fail;
		}
		g->stream = json_is_true(json_object_get(body, "stream"));
		g->include_usage = g->stream && json_is_true(json_object_get(
		    json_object_get(body, "stream_options"), "include_usage"));
	}
	tenant = json_string_value(json_object_get(headers,
	    "x-infergate-tenant"));
	if (tenant != NULL && (g->tenant = strdup(tenant)) == NULL) {
		*err = "out of memory";
		goto fail;
	}
	g->id = ++s->next_id;
	g->created = (long long)time(NULL);
	return g;
fail:
	if (g != NULL)
		gen_free(g);
	return NULL;
}

static void
gen_schedule(struct gen *g, long ms)
{
	struct timeval	 tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(g->timer, &tv);
}

static void
sim_tenant_adjust(struct sim *s, const char *tenant, json_int_t delta)
{
	json_t		*max;
	json_int_t	 n;

	if (tenant == NULL)
		return;
	n = json_integer_value(json_object_get(s->tenant_active, tenant)) +
	    delta;
	json_object_set_new(s->tenant_active, tenant, json_integer(n));
	max = json_object_get(s->tenant_max, tenant);
	if (max == NULL || n > json_integer_value(max))
		json_object_set_new(s->tenant_max, tenant, json_integer(n));
}

/* Take a slot and start the clock. */
static void
gen_activate(struct gen *g)
{
	struct sim	*s = g->sim;
	long		 delay = s->conf.ttft_ms;

	g->active = 1;
	if (++s->active > s->max_active)
		s->max_active = s->active;
	sim_tenant_adjust(s, g->tenant, 1);
	s->prompt_tokens += (unsigned long long)g->prompt_tokens;
	if (!g->stream && g->kind != GEN_EMBEDDING)
		delay += s->conf.itl_ms * (g->max_tokens - 1);
	gen_schedule(g, delay);
}

/*
 * The generation is over: count it, give back its slot, free it, and admit
 * the next waiting one. The caller has already finished with g->conn.
 */
static void
gen_end(struct gen *g, enum gen_end how)
{
	struct sim	*s = g->sim;

	switch (how) {
	case GEN_COMPLETED:
		s->completed++;
		break;
	case GEN_CANCELLED:
		s->cancelled++;
		break;
	case GEN_CLOSED:
		s->closed_injected++;
		break;
	case GEN_DROPPED:
		break;
	}
	if (g->queued) {
		TAILQ_REMOVE(&s->waitq, g, entry);
		s->waiting--;
	}
	if (g->active) {
		s->active--;
		sim_tenant_adjust(s, g->tenant, -1);
	}
	gen_free(g);
	if (!s->stopping)
		sim_admit(s);
}

static void
sim_enqueue(struct sim *s, struct gen *g)
{
	if (s->conf.max_concurrent == 0 || s->active < s->conf.max_concurrent) {
		gen_activate(g);
		return;
	}
	g->queued = 1;
	TAILQ_INSERT_TAIL(&s->waitq, g, entry);
	s->waiting++;
}

static void
sim_admit(struct sim *s)
{
	struct gen	*g;

	while ((g = TAILQ_FIRST(&s->waitq)) != NULL &&
	    (s->conf.max_concurrent == 0 ||
	    s->active < s->conf.max_concurrent)) {
		TAILQ_REMOVE(&s->waitq, g, entry);
		g->queued = 0;
		s->waiting--;
		gen_activate(g);
	}
}

/* The whole text of a completion: "tok0 tok1 ... ". */
static char *
gen_text(const struct gen *g)
{
	struct evbuffer	*b;
	char		*text = NULL;
	size_t		 len;
	long		 i;

	if ((b = evbuffer_new()) == NULL)
		return NULL;
	for (i = 0; i < g->max_tokens; i++)
		evbuffer_add_printf(b, "tok%ld ", i);
	len = evbuffer_get_length(b);
	if ((text = malloc(len + 1)) != NULL) {
		evbuffer_remove(b, text, len);
		text[len] = '\0';
	}
	evbuffer_free(b);
	return text;
}

/* Send the body built for g, whole or (close fault) half of it. */
static void
gen_send_body(struct gen *g, json_t *obj, size_t flags)
{
	struct sim_http_conn	*c = g->conn;
	char			*body;
	size_t			 len;

	body = obj != NULL ? json_dumps(obj, flags | JSON_COMPACT) : NULL;
	json_decref(obj);
	if (body == NULL) {
		sim_http_reply(c, 500, "text/plain", "out of memory\n", 14);
		gen_end(g, GEN_DROPPED);
		return;
	}
	len = strlen(body);
	if (g->fault == FAULT_CLOSE) {
		sim_http_reply_partial(c, 200, "application/json", len, body,
		    len / 2);
		sim_http_abort(c);
		gen_end(g, GEN_CLOSED);
	} else {
		sim_http_reply(c, 200, "application/json", body, len);
		gen_end(g, GEN_COMPLETED);
	}
	free(body);
}

static void
gen_reply_completion(struct gen *g)
{
	struct sim	*s = g->sim;
	json_t		*obj, *choice;
	char		*text, id[64];

	if ((text = gen_text(g)) == NULL) {
		gen_send_body(g, NULL, 0);
		return;
	}
	snprintf(id, sizeof(id), "cmpl-sim-%llu", g->id);
	if (g->kind == GEN_CHAT)
		choice = json_pack("{s:i, s:{s:s, s:s}, s:n, s:s}", "index", 0,
		    "message", "role", "assistant", "content", text,
		    "logprobs", "finish_reason", "length");
	else
		choice = json_pack("{s:i, s:s, s:n, s:s}", "index", 0,
		    "text", text, "logprobs", "finish_reason", "length");
	obj = json_pack("{s:s, s:s, s:I, s:s, s:[o], s:{s:I, s:I, s:I}}",
	    "id", id,
	    "object", g->kind == GEN_CHAT ? "chat.completion" :
	    "text_completion",
	    "created", (json_int_t)g->created,
	    "model", s->conf.model,
	    "choices", choice,
	    "usage", "prompt_tokens", (json_int_t)g->prompt_tokens,
	    "completion_tokens", (json_int_t)g->max_tokens,
	    "total_tokens", (json_int_t)(g->prompt_tokens + g->max_tokens));
	free(text);
	s->generation_tokens += (unsigned long long)g->max_tokens;
	gen_send_body(g, obj, 0);
}

/* Eight floats in [-1, 1) that depend only on the input's JSON text. */
static json_t *
gen_embedding(const json_t *input)
{
	json_t		*vec;
	char		*text;
	uint64_t	 h = 0xcbf29ce484222325ULL, st;
	const char	*p;
	int		 j;

	if ((text = json_dumps(input, JSON_ENCODE_ANY | JSON_COMPACT)) == NULL)
		return NULL;
	for (p = text; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;	/* FNV-1a */
	free(text);
	if ((vec = json_array()) == NULL)
		return NULL;
	st = h;
	for (j = 0; j < SIM_EMBED_DIM; j++) {
		double v = (double)(splitmix64(&st) >> 11) * 0x1.0p-53;

		json_array_append_new(vec,
		    json_real(round((v * 2 - 1) * 1e6) / 1e6));
	}
	return vec;
}

static void
gen_reply_embeddings(struct gen *g)
{
	struct sim	*s = g->sim;
	json_t		*data, *item, *obj;
	size_t		 i, n;
	int		 single;

	single = json_is_string(g->input) ||
	    json_is_integer(json_array_get(g->input, 0));
	n = single ? 1 : json_array_size(g->input);
	data = json_array();
	for (i = 0; data != NULL && i < n; i++) {
		item = json_pack("{s:s, s:I, s:o?}", "object", "embedding",
		    "index", (json_int_t)i, "embedding", gen_embedding(single ?
		    g->input : json_array_get(g->input, i)));
		json_array_append_new(data, item);
	}
	obj = json_pack("{s:s, s:o, s:s, s:{s:I, s:I}}", "object", "list",
	    "data", data, "model", s->conf.model, "usage",
	    "prompt_tokens", (json_int_t)g->prompt_tokens,
	    "total_tokens", (json_int_t)g->prompt_tokens);
	gen_send_body(g, obj, JSON_REAL_PRECISION(6));
}

/*
 * The members that open an event's object with --stamp: "sim_ts" (now),
 * and "sim_req_ts" on the first content event. "" without --stamp. Taken
 * when the event is formatted, just before it is written.
 */
static const char *
gen_stamp(const struct gen *g, char *buf, size_t size)
{
	if (!g->sim->conf.stamp)
		return "";
	if (g->next_token == 0)
		snprintf(buf, size, "\"sim_ts\":%lld,\"sim_req_ts\":%lld,",
		    mono_ns(), g->req_ns);
	else
		snprintf(buf, size, "\"sim_ts\":%lld,", mono_ns());
	return buf;
}

/* One SSE event for token g->next_token. Returns its length. */
static int
gen_format_chunk(const struct gen *g, char *buf, size_t size)
{
	const struct sim	*s = g->sim;
	const char		*finish, *usage, *stamp;
	char			 sbuf[80];

	finish = g->next_token + 1 == g->max_tokens ? "\"length\"" : "null";
	usage = g->include_usage ? ",\"usage\":null" : "";
	stamp = gen_stamp(g, sbuf, sizeof(sbuf));
	if (g->kind == GEN_CHAT)
		return snprintf(buf, size, "data: {%s\"id\":\"cmpl-sim-%llu\","
		    "\"object\":\"chat.completion.chunk\",\"created\":%lld,"
		    "\"model\":%s,\"choices\":[{\"index\":0,\"delta\":{%s"
		    "\"content\":\"tok%ld \"},\"logprobs\":null,"
		    "\"finish_reason\":%s}]%s}\n\n", stamp, g->id, g->created,
		    s->model_json,
		    g->next_token == 0 ? "\"role\":\"assistant\"," : "",
		    g->next_token, finish, usage);
	return snprintf(buf, size, "data: {%s\"id\":\"cmpl-sim-%llu\","
	    "\"object\":\"text_completion\",\"created\":%lld,\"model\":%s,"
	    "\"choices\":[{\"index\":0,\"text\":\"tok%ld \",\"logprobs\":null,"
	    "\"finish_reason\":%s}]%s}\n\n", stamp, g->id, g->created,
	    s->model_json, g->next_token, finish, usage);
}

/* The final usage event of stream_options.include_usage. */
static int
gen_format_usage(const struct gen *g, char *buf, size_t size)
{
	char	 sbuf[80];

	return snprintf(buf, size, "data: {%s\"id\":\"cmpl-sim-%llu\","
	    "\"object\":\"%s\",\"created\":%lld,\"model\":%s,\"choices\":[],"
	    "\"usage\":{\"prompt_tokens\":%ld,\"completion_tokens\":%ld,"
	    "\"total_tokens\":%ld}}\n\n", gen_stamp(g, sbuf, sizeof(sbuf)), g->id,
	    g->kind == GEN_CHAT ? "chat.completion.chunk" : "text_completion",
	    g->created, g->sim->model_json, g->prompt_tokens, g->max_tokens,
	    g->prompt_tokens + g->max_tokens);
}

/* One tick of a stream: the next token, or the end. */
static void
gen_stream_next(struct gen *g)
{
	struct sim		*s = g->sim;
	struct sim_http_conn	*c = g->conn;
	char			 buf[SIM_EVENT_MAX];
	int			 n;

	if (g->fault == FAULT_CLOSE && g->next_token >= s->conf.close_after)
		goto abort;
	n = gen_format_chunk(g, buf, sizeof(buf));
	sim_http_stream_write(c, buf, (size_t)n);
	g->next_token++;
	s->generation_tokens++;
	if (g->next_token < g->max_tokens) {
		gen_schedule(g, s->conf.itl_ms);
		return;
	}
	if (g->fault == FAULT_CLOSE)
		goto abort;	/* close-after >= max_tokens: lose [DONE] */
	if (g->include_usage) {
		n = gen_format_usage(g, buf, sizeof(buf));
		sim_http_stream_write(c, buf, (size_t)n);
	}
	sim_http_stream_write(c, "data: [DONE]\n\n", 14);
	sim_http_stream_end(c);
	gen_end(g, GEN_COMPLETED);
	return;
abort:
	sim_http_abort(c);
	gen_end(g, GEN_CLOSED);
}

static void
gen_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct gen	*g = arg;

	if (g->kind == GEN_EMBEDDING)
		gen_reply_embeddings(g);
	else if (g->stream)
		gen_stream_next(g);
	else
		gen_reply_completion(g);
}

/* The client of an unanswered request went away (or we are stopping). */
static void
sim_on_close(void *conn_arg, void *arg)
{
	struct gen	*g = conn_arg;
	struct sim	*s = arg;

	g->conn = NULL;
	gen_end(g, g->fault == FAULT_HANG || s->stopping ? GEN_DROPPED :
	    GEN_CANCELLED);
}

/* ---- endpoints -------------------------------------------------------- */

static void
sim_record_request(struct sim *s, const json_t *headers, json_t *body)
{
	json_decref(s->last_headers);
	if ((s->last_headers = json_copy((json_t *)headers)) == NULL)
		s->last_headers = json_object();
	json_decref(s->last_body);
	s->last_body = body != NULL ? json_incref(body) : json_null();
}

/*
 * POST /v1/chat/completions, /v1/completions, /v1/embeddings: validate,
 * draw the faults, then answer, hold, or queue a generation tied to c.
 */
static void
sim_infer(struct sim *s, struct sim_http_conn *c,
    const struct sim_http_request *req, enum gen_kind kind)
{
	json_error_t	 jerr;
	json_t		*body;
	struct gen	*g;
	const char	*model, *err = NULL;
	double		 u_fail, u_hang, u_close;

	s->requests++;
	body = json_loadb(req->body, req->body_len, 0, &jerr);
	sim_record_request(s, req->headers, body);
	if (sim_loading(s)) {
		sim_reply_error(c, 503, "server_error", NULL, NULL,
		    "the model is still loading");
		goto done;
	}
	if (body == NULL || !json_is_object(body)) {
		sim_reply_error(c, 400, "invalid_request_error", NULL, NULL,
		    "the body is not a JSON object: %s", body == NULL ?
		    jerr.text : "wrong type");
		goto done;
	}
	model = json_string_value(json_object_get(body, "model"));
	if (model == NULL) {
		sim_reply_error(c, 400, "invalid_request_error", "model", NULL,
		    "model is required and must be a string");
		goto done;
	}
	if (strcmp(model, s->conf.model) != 0) {
		sim_reply_error(c, 404, "invalid_request_error", "model",
		    "model_not_found", "The model `%s` does not exist.", model);
		goto done;
	}
	if ((g = gen_new(s, kind, body, req->headers, &err)) == NULL) {
		sim_reply_error(c, 400, "invalid_request_error", NULL, NULL,
		    "%s", err);
		goto done;
	}
	g->req_ns = req->rx_ns;
	u_fail = sim_draw(s);
	u_hang = sim_draw(s);
	u_close = sim_draw(s);
	if (u_fail < s->conf.fail_rate) {
		s->failed_injected++;
		gen_free(g);
		sim_reply_error(c, (int)s->conf.fail_status,
		    s->conf.fail_status == 429 ? "rate_limit_error" :
		    s->conf.fail_status >= 500 ? "server_error" :
		    "invalid_request_error", NULL, NULL,
		    "injected failure (infergate-sim --fail-rate)");
		goto done;
	}
	g->conn = c;
	sim_http_set_arg(c, g);
	if (u_hang < s->conf.hang_rate) {
		g->fault = FAULT_HANG;
		s->hung_injected++;
		goto done;
	}
	if (u_close < s->conf.close_rate)
		g->fault = FAULT_CLOSE;
	/* like vLLM, a stream's head goes out at once, even while queued */
	if (g->stream)
		sim_http_stream_start(c, 200, "text/event-stream");
	sim_enqueue(s, g);
done:
	json_decref(body);
}

static void
sim_chat(struct sim *s, struct sim_http_conn *c,
    const struct sim_http_request *req)
{
	sim_infer(s, c, req, GEN_CHAT);
}

static void
sim_completions(struct sim *s, struct sim_http_conn *c,
    const struct sim_http_request *req)
{
	sim_infer(s, c, req, GEN_COMPLETION);
}

static void
sim_embeddings(struct sim *s, struct sim_http_conn *c,
    const struct sim_http_request *req)
{
	sim_infer(s, c, req, GEN_EMBEDDING);
}

static void
sim_health(struct sim *s, struct sim_http_conn *c,
    const struct sim_http_request *req)
{
	sim_http_reply(c, 200, NULL, NULL, 0);
}

static void
sim_models(struct sim *s, struct sim_http_conn *c,
    const struct sim_http_request *req)
{
	if (sim_loading(s)) {
		sim_reply_error(c, 503, "server_error", NULL, NULL,
		    "the model is still loading");
		return;
	}
	sim_reply_json(c, 200, json_pack("{s:s, s:[{s:s, s:s, s:I, s:s}]}",
	    "object", "list", "data", "id", s->conf.model, "object", "model",
	    "created", (json_int_t)s->started, "owned_by", "infergate-sim"), 0);
}

static void
sim_metrics(struct sim *s, struct sim_http_conn *c,
    const struct sim_http_request *req)
{
	struct evbuffer	*b;
	const char	*m = s->model_prom;
	char		*text;
	size_t		 len;

	if ((b = evbuffer_new()) == NULL) {
		sim_http_reply(c, 500, "text/plain", "out of memory\n", 14);
		return;
	}
	evbuffer_add_printf(b,
	    "# HELP vllm:num_requests_running Number of requests currently "
	    "running on GPU.\n"
	    "# TYPE vllm:num_requests_running gauge\n"
	    "vllm:num_requests_running{model_name=\"%s\"} %ld\n"
	    "# HELP vllm:num_requests_waiting Number of requests waiting to "
	    "be processed.\n"
	    "# TYPE vllm:num_requests_waiting gauge\n"
	    "vllm:num_requests_waiting{model_name=\"%s\"} %ld\n"
	    "# HELP vllm:prompt_tokens_total Number of prefill tokens "
	    "processed.\n"
	    "# TYPE vllm:prompt_tokens_total counter\n"
	    "vllm:prompt_tokens_total{model_name=\"%s\"} %llu\n"
	    "# HELP vllm:generation_tokens_total Number of generation tokens "
	    "processed.\n"
	    "# TYPE vllm:generation_tokens_total counter\n"
	    "vllm:generation_tokens_total{model_name=\"%s\"} %llu\n"
	    "# HELP vllm:request_success_total Count of successfully "
	    "processed requests.\n"
	    "# TYPE vllm:request_success_total counter\n"
	    "vllm:request_success_total{finished_reason=\"length\","
	    "model_name=\"%s\"} %llu\n",
	    m, s->active, m, s->waiting, m, s->prompt_tokens, m,
	    s->generation_tokens, m, s->completed);
	len = evbuffer_get_length(b);
	text = (char *)evbuffer_pullup(b, -1);
	sim_http_reply(c, 200, "text/plain; version=0.0.4; charset=utf-8",
	    text, len);
	evbuffer_free(b);
}

static void
sim_stats(struct sim *s, struct sim_http_conn *c,
    const struct sim_http_request *req)
{
	sim_reply_json(c, 200, json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, "
	    "s:I, s:I, s:I, s:I, s:I, s:O, s:{s:O, s:O}}",
	    "requests", (json_int_t)s->requests,
	    "completed", (json_int_t)s->completed,
	    "active", (json_int_t)s->active,
	    "waiting", (json_int_t)s->waiting,
	    "max_active", (json_int_t)s->max_active,
	    "cancelled", (json_int_t)s->cancelled,
	    "connections", (json_int_t)sim_http_connections(s->http),
	    "failed_injected", (json_int_t)s->failed_injected,
	    "closed_injected", (json_int_t)s->closed_injected,
	    "hung_injected", (json_int_t)s->hung_injected,
	    "prompt_tokens", (json_int_t)s->prompt_tokens,
	    "max_active_by_tenant", s->tenant_max,
	    "last_request", "headers", s->last_headers, "body", s->last_body),
	    0);
}

typedef void	(*sim_handler)(struct sim *, struct sim_http_conn *,
		    const struct sim_http_request *);

static const struct sim_route {
	const char	*path;
	int		 method;
	sim_handler	 fn;
} sim_routes[] = {
	{ "/v1/chat/completions",	HTTP_POST,	sim_chat },
	{ "/v1/completions",		HTTP_POST,	sim_completions },
	{ "/v1/embeddings",		HTTP_POST,	sim_embeddings },
	{ "/v1/models",			HTTP_GET,	sim_models },
	{ "/health",			HTTP_GET,	sim_health },
	{ "/metrics",			HTTP_GET,	sim_metrics },
	{ "/sim/stats",			HTTP_GET,	sim_stats },
};

static void
sim_on_request(struct sim_http_conn *c, const struct sim_http_request *req,
    void *arg)
{
	struct sim	*s = arg;
	size_t		 i;

	for (i = 0; i < sizeof(sim_routes) / sizeof(sim_routes[0]); i++) {
		const struct sim_route *r = &sim_routes[i];

		if (strlen(r->path) != req->path_len ||
		    memcmp(r->path, req->url, req->path_len) != 0)
			continue;
		if (r->method != req->method) {
			sim_reply_error(c, 405, "invalid_request_error", NULL,
			    NULL, "method not allowed");
			return;
		}
		r->fn(s, c, req);
		return;
	}
	sim_reply_error(c, 404, "invalid_request_error", NULL, NULL,
	    "no such endpoint");
}

/* ---- flags, main ------------------------------------------------------ */

static int
parse_long(const char *name, const char *v, long min, long max, long *out)
{
	char	*end;
	long	 n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (*v == '\0' || *end != '\0' || errno == ERANGE || n < min ||
	    n > max) {
		fprintf(stderr, "infergate-sim: --%s: expected an integer "
		    "from %ld to %ld, got \"%s\"\n", name, min, max, v);
		return -1;
	}
	*out = n;
	return 0;
}

static int
parse_rate(const char *name, const char *v, double *out)
{
	char	*end;
	double	 f;

	errno = 0;
	f = strtod(v, &end);
	if (*v == '\0' || *end != '\0' || errno == ERANGE || isnan(f) ||
	    f < 0 || f > 1) {
		fprintf(stderr, "infergate-sim: --%s: expected a fraction "
		    "from 0 to 1, got \"%s\"\n", name, v);
		return -1;
	}
	*out = f;
	return 0;
}

enum {
	OPT_PORT = 256, OPT_ADDRESS, OPT_MODEL, OPT_TTFT, OPT_ITL,
	OPT_MAX_CONCURRENT, OPT_STARTUP_DELAY, OPT_DEFAULT_MAX_TOKENS,
	OPT_FAIL_RATE, OPT_FAIL_STATUS, OPT_CLOSE_RATE, OPT_CLOSE_AFTER,
	OPT_HANG_RATE, OPT_SEED, OPT_STAMP,
};

static const struct option sim_options[] = {
	{ "port",		required_argument, NULL, OPT_PORT },
	{ "address",		required_argument, NULL, OPT_ADDRESS },
	{ "model",		required_argument, NULL, OPT_MODEL },
	{ "ttft",		required_argument, NULL, OPT_TTFT },
	{ "ttft-ms",		required_argument, NULL, OPT_TTFT },
	{ "itl",		required_argument, NULL, OPT_ITL },
	{ "itl-ms",		required_argument, NULL, OPT_ITL },
	{ "max-concurrent",	required_argument, NULL, OPT_MAX_CONCURRENT },
	{ "startup-delay",	required_argument, NULL, OPT_STARTUP_DELAY },
	{ "startup-delay-ms",	required_argument, NULL, OPT_STARTUP_DELAY },
	{ "default-max-tokens",	required_argument, NULL,
	    OPT_DEFAULT_MAX_TOKENS },
	{ "fail-rate",		required_argument, NULL, OPT_FAIL_RATE },
	{ "fail-status",	required_argument, NULL, OPT_FAIL_STATUS },
	{ "close-rate",		required_argument, NULL, OPT_CLOSE_RATE },
	{ "close-after",	required_argument, NULL, OPT_CLOSE_AFTER },
	{ "hang-rate",		required_argument, NULL, OPT_HANG_RATE },
	{ "seed",		required_argument, NULL, OPT_SEED },
	{ "stamp",		no_argument,	   NULL, OPT_STAMP },
	{ "help",		no_argument,	   NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/*
 * Fill conf from argv. Returns 0, 1 when --help was printed, or -1 after
 * printing what is wrong on stderr.
 */
static int
sim_parse_args(struct sim_conf *conf, int argc, char *argv[])
{
	const char	*name;
	char		*end;
	long		 port = 0;
	int		 ch, idx, rc = 0;

	conf->address = "127.0.0.1";
	conf->model = "sim-model";
	conf->default_max_tokens = 16;
	conf->fail_status = 500;
	conf->close_after = 2;
	conf->seed = 1;
	while ((ch = getopt_long(argc, argv, "h", sim_options, &idx)) != -1) {
		name = ch == 'h' || ch == '?' ? "" : sim_options[idx].name;
		switch (ch) {
		case 'h':
			fputs(usage_text, stdout);
			return 1;
		case OPT_PORT:
			rc = parse_long(name, optarg, 1, 65535, &port);
			break;
		case OPT_ADDRESS:
			conf->address = optarg;
			break;
		case OPT_MODEL:
			conf->model = optarg;
			if (*optarg == '\0' || strlen(optarg) > SIM_MAX_MODEL) {
				fprintf(stderr, "infergate-sim: --model: "
				    "1 to %d bytes\n", SIM_MAX_MODEL);
				rc = -1;
			}
			break;
		case OPT_TTFT:
			rc = parse_long(name, optarg, 0, SIM_MAX_MS,
			    &conf->ttft_ms);
			break;
		case OPT_ITL:
			rc = parse_long(name, optarg, 0, SIM_MAX_MS,
			    &conf->itl_ms);
			break;
		case OPT_MAX_CONCURRENT:
			rc = parse_long(name, optarg, 0, 1000000,
			    &conf->max_concurrent);
			break;
		case OPT_STARTUP_DELAY:
			rc = parse_long(name, optarg, 0, SIM_MAX_MS,
			    &conf->startup_delay_ms);
			break;
		case OPT_DEFAULT_MAX_TOKENS:
			rc = parse_long(name, optarg, 1, SIM_MAX_TOKENS,
			    &conf->default_max_tokens);
			break;
		case OPT_FAIL_RATE:
			rc = parse_rate(name, optarg, &conf->fail_rate);
			break;
		case OPT_FAIL_STATUS:
			rc = parse_long(name, optarg, 400, 599,
			    &conf->fail_status);
			break;
		case OPT_CLOSE_RATE:
			rc = parse_rate(name, optarg, &conf->close_rate);
			break;
		case OPT_CLOSE_AFTER:
			rc = parse_long(name, optarg, 0, SIM_MAX_TOKENS,
			    &conf->close_after);
			break;
		case OPT_HANG_RATE:
			rc = parse_rate(name, optarg, &conf->hang_rate);
			break;
		case OPT_SEED:
			errno = 0;
			conf->seed = strtoull(optarg, &end, 10);
			if (*optarg < '0' || *optarg > '9' || *end != '\0' ||
			    errno == ERANGE) {
				fprintf(stderr, "infergate-sim: --seed: "
				    "expected an unsigned integer, got \"%s\"\n",
				    optarg);
				rc = -1;
			}
			break;
		case OPT_STAMP:
			conf->stamp = 1;
			break;
		default:
			rc = -1;	/* getopt_long said what */
			break;
		}
		if (rc == -1)
			goto usage;
	}
	if (optind < argc) {
		fprintf(stderr, "infergate-sim: unexpected argument \"%s\"\n",
		    argv[optind]);
		goto usage;
	}
	if (port == 0) {
		fprintf(stderr, "infergate-sim: --port is required\n");
		goto usage;
	}
	conf->port = (int)port;
	return 0;
usage:
	fprintf(stderr, "usage: infergate-sim --port N [options]; see --help\n");
	return -1;
}

/* conf->address as a socket address. Returns 0, or -1 if not an address. */
static int
sim_sockaddr(const struct sim_conf *conf, struct sockaddr_storage *ss,
    int *len)
{
	struct sockaddr_in	*sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, conf->address, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)conf->port);
		*len = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, conf->address, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)conf->port);
		*len = sizeof(*sin6);
		return 0;
	}
	return -1;
}

static char *
prom_escape(const char *v)
{
	char	*out, *o;

	if ((out = malloc(strlen(v) * 2 + 1)) == NULL)
		return NULL;
	for (o = out; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"' || *v == '\n') {
			*o++ = '\\';
			*o++ = *v == '\n' ? 'n' : *v;
		} else
			*o++ = *v;
	}
	*o = '\0';
	return out;
}

static void
sim_on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct sim	*s = arg;

	event_base_loopbreak(s->base);
}

/* Everything sim_setup() made; safe on a partly set-up sim. */
static void
sim_teardown(struct sim *s)
{
	s->stopping = 1;
	sim_http_free(s->http);		/* ends every generation */
	if (s->ev_term != NULL)
		event_free(s->ev_term);
	if (s->ev_int != NULL)
		event_free(s->ev_int);
	if (s->base != NULL)
		event_base_free(s->base);
	json_decref(s->tenant_active);
	json_decref(s->tenant_max);
	json_decref(s->last_headers);
	json_decref(s->last_body);
	free(s->model_json);
	free(s->model_prom);
	libevent_global_shutdown();
}

static int
sim_setup(struct sim *s)
{
	struct sockaddr_storage	 ss;
	struct rlimit		 rl;
	json_t			*m;
	char			*err;
	int			 sslen;

	if (sim_sockaddr(&s->conf, &ss, &sslen) == -1) {
		fprintf(stderr, "infergate-sim: --address: \"%s\" is not an "
		    "IPv4 or IPv6 address\n", s->conf.address);
		return 2;
	}
	/* a benchmark holds a thousand streams and more */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	TAILQ_INIT(&s->waitq);
	s->rng = s->conf.seed;
	s->started = (long long)time(NULL);
	clock_gettime(CLOCK_MONOTONIC, &s->ready_at);
	s->ready_at.tv_sec += s->conf.startup_delay_ms / 1000;
	s->ready_at.tv_nsec += (s->conf.startup_delay_ms % 1000) * 1000000L;
	if (s->ready_at.tv_nsec >= 1000000000L) {
		s->ready_at.tv_sec++;
		s->ready_at.tv_nsec -= 1000000000L;
	}
	m = json_string(s->conf.model);
	s->model_json = m != NULL ? json_dumps(m, JSON_ENCODE_ANY) : NULL;
	json_decref(m);
	if (s->model_json == NULL) {
		fprintf(stderr, "infergate-sim: --model must be UTF-8\n");
		return 2;
	}
	s->model_prom = prom_escape(s->conf.model);
	s->tenant_active = json_object();
	s->tenant_max = json_object();
	s->last_headers = json_object();
	s->last_body = json_null();
	s->base = event_base_new();
	if (s->model_prom == NULL || s->tenant_active == NULL ||
	    s->tenant_max == NULL || s->last_headers == NULL ||
	    s->base == NULL)
		goto nomem;
	s->ev_term = evsignal_new(s->base, SIGTERM, sim_on_signal, s);
	s->ev_int = evsignal_new(s->base, SIGINT, sim_on_signal, s);
	if (s->ev_term == NULL || s->ev_int == NULL ||
	    evsignal_add(s->ev_term, NULL) == -1 ||
	    evsignal_add(s->ev_int, NULL) == -1)
		goto nomem;
	s->http = sim_http_new(s->base, (struct sockaddr *)&ss, sslen,
	    sim_on_request, sim_on_close, s, &err);
	if (s->http == NULL) {
		fprintf(stderr, "infergate-sim: listen on %s port %d: %s\n",
		    s->conf.address, s->conf.port, err);
		return 1;
	}
	sim_http_rx_stamps(s->http, s->conf.stamp);
	return 0;
nomem:
	fprintf(stderr, "infergate-sim: out of memory\n");
	return 1;
}

int
main(int argc, char *argv[])
{
	struct sim	 s;
	int		 rc;

	memset(&s, 0, sizeof(s));
	switch (sim_parse_args(&s.conf, argc, argv)) {
	case 1:
		return 0;
	case -1:
		return 2;
	}
	if ((rc = sim_setup(&s)) == 0) {
		fprintf(stderr, "infergate-sim: model %s on %s port %d\n",
		    s.conf.model, s.conf.address, s.conf.port);
		if (event_base_dispatch(s.base) == -1)
			rc = 1;
	}
	sim_teardown(&s);
	return rc;
}
