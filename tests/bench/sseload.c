#define _GNU_SOURCE
/* sseload: a load client for concurrent SSE streams (bench scenario 3).
 *
 * Holds N keep-alive connections, each running streaming requests back to
 * back for --duration seconds (connection i starts at i * ramp / N), and
 * records for every stream started after --measure-after seconds:
 *   time to first SSE event ("data:" event) from the request write,
 *   the gaps between consecutive events, the number of events, [DONE].
 * At the end it waits at most --drain seconds for the streams in flight,
 * then prints one JSON object with the percentiles on stdout.
 *
 * Build: cc -O2 -o sseload sseload.c $(pkg-config --cflags --libs libevent)
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#define MAX_EVENTS_HIST 1024

static struct event_base *base;
static struct sockaddr_in addr;
static char *request; /* the whole request, built once */
static size_t request_len;
static int nconns = 100;
static double duration = 5, ramp = 1, measure_after = 1, drain = 10;
static double stall_ms = 500;
static int64_t t0;
static int stopping; /* no new streams */
static int active;   /* streams in flight */

/* results */
static int64_t *ttfts; static size_t nttft, cap_ttft;
static int64_t *gaps; static size_t ngaps, cap_gaps;
static long streams_ok, streams_bad_status, streams_error, streams_no_done,
    streams_stalled, streams_unfinished, connects, connect_errors;
static long ev_hist[MAX_EVENTS_HIST + 1];
static int64_t max_gap_all;

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void push(int64_t **a, size_t *n, size_t *cap, int64_t v)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 4096;
		*a = realloc(*a, *cap * sizeof **a);
		if (!*a) { perror("realloc"); exit(2); }
	}
	(*a)[(*n)++] = v;
}

enum phase { P_HEADERS, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_CRLF, P_TRAILER,
	P_LENGTH, P_CLOSE, P_DONE };

struct conn {
	int id;
	struct bufferevent *bev;
	struct event *timer;
	enum phase phase;
	int status;
	int keepalive;
	long remaining; /* content-length left or chunk left */
	/* SSE line state */
	char line[64];
	size_t line_len;
	int in_event_has_data;
	/* stream stats */
	int measured;
	int64_t t_send, t_last;
	int64_t ttft, max_gap;
	int events;
	int done_seen;
	int in_stream;
	size_t gaps_mark;
};

static void start_stream(struct conn *c);
static void conn_connect(struct conn *c);

static void sse_event(struct conn *c, int64_t t)
{
	if (c->events == 0) {
		c->ttft = t - c->t_send;
	} else {
		int64_t g = t - c->t_last;
		if (g > c->max_gap)
			c->max_gap = g;
		if (c->measured)
			push(&gaps, &ngaps, &cap_gaps, g);
	}
	c->t_last = t;
	c->events++;
}

/* Feed body bytes to the SSE parser: an event ends at an empty line. */
static void sse_feed(struct conn *c, const char *p, size_t n, int64_t t)
{
	for (size_t i = 0; i < n; i++) {
		char ch = p[i];
		if (ch == '\r')
			continue;
		if (ch == '\n') {
			if (c->line_len == 0) {
				if (c->in_event_has_data)
					sse_event(c, t);
				c->in_event_has_data = 0;
			} else {
				if (c->line_len >= 5 && memcmp(c->line, "data:", 5) == 0) {
					c->in_event_has_data = 1;
					const char *v = c->line + 5;
					size_t vl = c->line_len - 5;
					if (vl && *v == ' ') { v++; vl--; }
					if (vl == 6 && memcmp(v, "[DONE]", 6) == 0)
						c->done_seen = 1;
				}
			}
			c->line_len = 0;
			continue;
		}
		if (c->line_len < sizeof c->line)
			c->line[c->line_len++] = ch;
		else
			c->line_len = sizeof c->line; /* long line: keep prefix */
	}
}

static void stream_end(struct conn *c, int error)
{
	if (!c->in_stream)
		return;
	c->in_stream = 0;
	active--;
	if (c->measured) {
		if (error)
			streams_error++;
		else if (c->status != 200)
			streams_bad_status++;
		else {
			if (!c->done_seen)
				streams_no_done++;
			else
				streams_ok++;
			if (c->events > 0)
				push(&ttfts, &nttft, &cap_ttft, c->ttft);
			ev_hist[c->events > MAX_EVENTS_HIST ? MAX_EVENTS_HIST : c->events]++;
			if (c->max_gap > stall_ms * 1000)
				streams_stalled++;
			if (c->max_gap > max_gap_all)
				max_gap_all = c->max_gap;
		}
	}
}

static void conn_reset(struct conn *c)
{
	if (c->bev) {
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
}

static void after_stream(struct conn *c)
{
	if (stopping) {
		conn_reset(c);
		if (active == 0)
			event_base_loopbreak(base);
		return;
	}
	if (!c->keepalive || !c->bev) {
		conn_reset(c);
		conn_connect(c);
	} else {
		start_stream(c);
	}
}

static int parse_headers(struct conn *c, struct evbuffer *in)
{
	struct evbuffer_ptr pos = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	if (pos.pos < 0)
		return 0;
	size_t hl = pos.pos + 4;
	char *h = malloc(hl + 1);
	evbuffer_remove(in, h, hl);
	h[hl] = 0;
	c->status = 0;
	if (strncmp(h, "HTTP/1.", 7) == 0)
		c->status = atoi(h + 9);
	c->keepalive = strncmp(h, "HTTP/1.1", 8) == 0;
	long clen = -1;
	int chunked = 0;
	for (char *l = strstr(h, "\r\n"); l && l[2] != '\r'; l = strstr(l + 2, "\r\n")) {
		char *s = l + 2;
		if (strncasecmp(s, "content-length:", 15) == 0)
			clen = atol(s + 15);
		else if (strncasecmp(s, "transfer-encoding:", 18) == 0) {
			char *e = strstr(s, "\r\n");
			char save = *e; *e = 0;
			if (strcasestr(s, "chunked")) chunked = 1;
			*e = save;
		} else if (strncasecmp(s, "connection:", 11) == 0) {
			char *e = strstr(s, "\r\n");
			char save = *e; *e = 0;
			if (strcasestr(s, "close")) c->keepalive = 0;
			*e = save;
		}
	}
	free(h);
	if (chunked)
		c->phase = P_CHUNK_SIZE;
	else if (clen >= 0) {
		c->phase = clen ? P_LENGTH : P_DONE;
		c->remaining = clen;
	} else {
		c->phase = P_CLOSE;
		c->keepalive = 0;
	}
	return 1;
}

static void read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	int64_t t = now_us();
	for (;;) {
		switch (c->phase) {
		case P_HEADERS:
			if (!parse_headers(c, in))
				return;
			break;
		case P_CHUNK_SIZE: {
			size_t n;
			char *l = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
			if (!l)
				return;
			c->remaining = strtol(l, NULL, 16);
			free(l);
			c->phase = c->remaining ? P_CHUNK_DATA : P_TRAILER;
			break;
		}
		case P_CHUNK_DATA:
		case P_LENGTH:
		case P_CLOSE: {
			size_t avail = evbuffer_get_length(in);
			if (!avail)
				return;
			size_t take = avail;
			if (c->phase != P_CLOSE && (long)take > c->remaining)
				take = c->remaining;
			struct evbuffer_iovec v[8];
			int nv = evbuffer_peek(in, take, NULL, v, 8);
			size_t left = take;
			for (int i = 0; i < nv && i < 8 && left; i++) {
				size_t k = v[i].iov_len < left ? v[i].iov_len : left;
				sse_feed(c, v[i].iov_base, k, t);
				left -= k;
			}
			take -= left;
			evbuffer_drain(in, take);
			if (c->phase != P_CLOSE) {
				c->remaining -= take;
				if (c->remaining == 0)
					c->phase = c->phase == P_LENGTH ? P_DONE : P_CHUNK_CRLF;
			}
			break;
		}
		case P_CHUNK_CRLF: {
			size_t n;
			char *l = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
			if (!l)
				return;
			free(l);
			c->phase = P_CHUNK_SIZE;
			break;
		}
		case P_TRAILER: {
			size_t n;
			char *l = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
			if (!l)
				return;
			int empty = n == 0;
			free(l);
			if (empty)
				c->phase = P_DONE;
			break;
		}
		case P_DONE:
			stream_end(c, 0);
			after_stream(c);
			return;
		}
	}
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	if (what & BEV_EVENT_CONNECTED) {
		int one = 1;
		setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		connects++;
		start_stream(c);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		if (c->in_stream && c->phase == P_CLOSE) {
			stream_end(c, 0);
			conn_reset(c);
			after_stream(c);
			return;
		}
	}
	if (!c->in_stream)
		connect_errors++;
	stream_end(c, 1);
	conn_reset(c);
	if (stopping) {
		if (active == 0)
			event_base_loopbreak(base);
		return;
	}
	/* back off a little before reconnecting */
	struct timeval tv = {0, 50000};
	evtimer_add(c->timer, &tv);
}

static void start_stream(struct conn *c)
{
	if (stopping) {
		conn_reset(c);
		return;
	}
	c->phase = P_HEADERS;
	c->status = 0;
	c->line_len = 0;
	c->in_event_has_data = 0;
	c->events = 0;
	c->done_seen = 0;
	c->ttft = c->max_gap = 0;
	c->t_send = now_us();
	c->measured = (c->t_send - t0) >= (int64_t)(measure_after * 1e6);
	c->in_stream = 1;
	active++;
	bufferevent_write(c->bev, request, request_len);
}

static void conn_connect(struct conn *c)
{
	if (stopping)
		return;
	c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&addr, sizeof addr) < 0) {
		connect_errors++;
		conn_reset(c);
		struct timeval tv = {0, 50000};
		evtimer_add(c->timer, &tv);
	}
}

static void timer_cb(evutil_socket_t fd, short w, void *arg)
{
	conn_connect(arg);
}

static void stop_cb(evutil_socket_t fd, short w, void *arg)
{
	stopping = 1;
	if (active == 0)
		event_base_loopbreak(base);
}

static void hard_stop_cb(evutil_socket_t fd, short w, void *arg)
{
	event_base_loopbreak(base);
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static int64_t pct(int64_t *a, size_t n, double p)
{
	if (!n)
		return -1;
	size_t i = (size_t)(p / 100.0 * (n - 1) + 0.5);
	return a[i < n ? i : n - 1];
}

static void usage(void)
{
	fprintf(stderr, "usage: sseload --port N [--host A] [--path P] --body-file F "
	        "[--header 'K: V']... [--conns N] [--duration S] [--ramp S] "
	        "[--measure-after S] [--drain S] [--stall-ms MS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1", *path = "/v1/chat/completions", *body_file = NULL;
	int port = 0;
	char headers[4096] = "";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v) usage();
		if (!strcmp(a, "--host")) host = v;
		else if (!strcmp(a, "--port")) port = atoi(v);
		else if (!strcmp(a, "--path")) path = v;
		else if (!strcmp(a, "--body-file")) body_file = v;
		else if (!strcmp(a, "--header")) {
			strncat(headers, v, sizeof headers - strlen(headers) - 3);
			strcat(headers, "\r\n");
		}
		else if (!strcmp(a, "--conns")) nconns = atoi(v);
		else if (!strcmp(a, "--duration")) duration = atof(v);
		else if (!strcmp(a, "--ramp")) ramp = atof(v);
		else if (!strcmp(a, "--measure-after")) measure_after = atof(v);
		else if (!strcmp(a, "--drain")) drain = atof(v);
		else if (!strcmp(a, "--stall-ms")) stall_ms = atof(v);
		else usage();
		i++;
	}
	if (!port || !body_file || nconns <= 0)
		usage();
	FILE *f = fopen(body_file, "rb");
	if (!f) { perror(body_file); return 2; }
	char body[65536];
	size_t blen = fread(body, 1, sizeof body, f);
	fclose(f);
	request = malloc(blen + 8192);
	request_len = snprintf(request, 8192,
		"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
		"Accept: text/event-stream\r\nContent-Length: %zu\r\n%s\r\n",
		path, host, port, blen, headers);
	memcpy(request + request_len, body, blen);
	request_len += blen;

	memset(&addr, 0, sizeof addr);
	addr.sin_family = AF_INET;
	addr.sin_port = htons(port);
	inet_pton(AF_INET, host, &addr.sin_addr);

	base = event_base_new();
	struct conn *conns = calloc(nconns, sizeof *conns);
	t0 = now_us();
	for (int i = 0; i < nconns; i++) {
		conns[i].id = i;
		conns[i].timer = evtimer_new(base, timer_cb, &conns[i]);
		double at = ramp * i / nconns;
		struct timeval tv = {(long)at, (long)((at - (long)at) * 1e6)};
		evtimer_add(conns[i].timer, &tv);
	}
	struct timeval tv = {(long)duration, (long)((duration - (long)duration) * 1e6)};
	struct event *stop = evtimer_new(base, stop_cb, NULL);
	evtimer_add(stop, &tv);
	double hard = duration + drain;
	struct timeval tv2 = {(long)hard, (long)((hard - (long)hard) * 1e6)};
	struct event *hstop = evtimer_new(base, hard_stop_cb, NULL);
	evtimer_add(hstop, &tv2);
	event_base_dispatch(base);

	/* streams still in flight at the hard stop never finished */
	for (int i = 0; i < nconns; i++)
		if (conns[i].in_stream && conns[i].measured)
			streams_unfinished++;

	qsort(ttfts, nttft, sizeof *ttfts, cmp64);
	qsort(gaps, ngaps, sizeof *gaps, cmp64);
	printf("{\"conns\": %d, \"connects\": %ld, \"connect_errors\": %ld, "
	       "\"streams_ok\": %ld, \"streams_no_done\": %ld, \"streams_bad_status\": %ld, "
	       "\"streams_error\": %ld, \"streams_stalled\": %ld, \"streams_unfinished\": %ld, "
	       "\"ttft_us\": {\"n\": %zu, \"p50\": %lld, \"p90\": %lld, \"p99\": %lld, \"max\": %lld}, "
	       "\"gap_us\": {\"n\": %zu, \"p50\": %lld, \"p99\": %lld, \"p999\": %lld, \"max\": %lld}, "
	       "\"events_hist\": {",
	       nconns, connects, connect_errors, streams_ok, streams_no_done,
	       streams_bad_status, streams_error, streams_stalled, streams_unfinished,
	       nttft, (long long)pct(ttfts, nttft, 50), (long long)pct(ttfts, nttft, 90),
	       (long long)pct(ttfts, nttft, 99), (long long)pct(ttfts, nttft, 100),
	       ngaps, (long long)pct(gaps, ngaps, 50), (long long)pct(gaps, ngaps, 99),
	       (long long)pct(gaps, ngaps, 99.9), (long long)max_gap_all);
	int first = 1;
	for (int i = 0; i <= MAX_EVENTS_HIST; i++)
		if (ev_hist[i]) {
			printf("%s\"%d\": %ld", first ? "" : ", ", i, ev_hist[i]);
			first = 0;
		}
	printf("}}\n");
	return 0;
}
