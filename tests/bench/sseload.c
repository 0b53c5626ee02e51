#define _GNU_SOURCE
/* sseload: a load client for concurrent SSE streams (bench scenario 3).
 *
 * Holds N keep-alive connections, each running streaming requests back to
 * back for --duration seconds (connection i starts at i * ramp / N), and
 * records for every stream started after --measure-after seconds:
 *   time to first SSE event ("data:" event) from the request write,
 *   the gaps between consecutive events, the number of events, [DONE].
 * The request is written with send() as its time is taken, not at the
 * next turn of the loop; the time of an event's arrival is when it was
 * read (TTFT, gaps, stalls: what a client sees).
 *
 * Stamps (infergate-sim --stamp): a data line holding "sim_ts":NS (the
 * simulator's CLOCK_MONOTONIC write time; the same clock is read here)
 * gives the event's transit = arrival - sim_ts, where arrival is the
 * kernel's receive time of the bytes (SO_TIMESTAMPNS), not when this
 * process got round to reading them: on a CPU shared with the simulator
 * that wait is the load generator's, not the proxy's. It is reported
 * apart, as the read lag. The first event's "sim_req_ts" (when the
 * request arrived at the simulator) splits the time to first token into
 *   request path   sim_req_ts - request write
 *   sim wait       sim_ts(first) - sim_req_ts   (the backend's own delay)
 *   first transit  arrival(first) - sim_ts(first)
 * and "path" = request path + first transit: what a proxy adds on the way
 * to the first token. Percentiles of each, of every event's transit and
 * of the read lag are printed with the rest (µs).
 *
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
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/util.h>

#define MAX_EVENTS_HIST 1024
#define READ_SIZE 65536

static struct event_base *base;
static struct sockaddr_in addr;
static char *request; /* the whole request, built once */
static size_t request_len;
static int nconns = 100;
static double duration = 5, ramp = 1, measure_after = 1, drain = 10;
static double stall_ms = 500;
static int64_t t0; /* ns */
static int stopping; /* no new streams */
static int active;   /* streams in flight */

/* results, in ns; only streams that got a 200 count */
struct dist {
	int64_t *v;
	size_t n, cap;
};
static struct dist ttfts, gaps;
static struct dist req_paths, sim_waits, first_transits, paths; /* stamped */
static struct dist transits;	/* every stamped event of measured streams */
static struct dist read_lags;	/* read time - kernel receive time, per event */
static long streams_ok, streams_bad_status, streams_error, streams_no_done,
    streams_stalled, streams_unfinished, connects, connect_errors;
static long events_stamped, events_unstamped, streams_first_unstamped;
static long reads, reads_no_rx_stamp;
static long ev_hist[MAX_EVENTS_HIST + 1];
static int64_t max_gap_all;

static int64_t ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts_ns(&ts);
}

static void push(struct dist *d, int64_t v)
{
	if (d->n == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 4096;
		d->v = realloc(d->v, d->cap * sizeof *d->v);
		if (!d->v) { perror("realloc"); exit(2); }
	}
	d->v[d->n++] = v;
}

enum phase { P_HEADERS, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_CRLF, P_TRAILER,
	P_LENGTH, P_CLOSE, P_DONE };

struct conn {
	int id;
	evutil_socket_t fd; /* -1: not connected */
	struct event *ev_read, *ev_write; /* NULL without fd */
	struct event *timer; /* start, and reconnect after an error */
	struct evbuffer *in;
	int connecting;
	size_t sent; /* bytes of the request written */
	enum phase phase;
	int status;
	int keepalive;
	long remaining; /* content-length left or chunk left */
	/* SSE line state; a longer line keeps its first bytes, where the
	 * simulator puts its stamps */
	char line[256];
	size_t line_len;
	int in_event_has_data;
	int in_event_done;
	int64_t ev_sim_ts, ev_req_ts; /* -1: none in this event */
	/* stream stats (ns) */
	int measured;
	int64_t t_send, t_last;
	int64_t ttft, max_gap;
	int first_stamped;
	int64_t req_path, sim_wait, first_transit;
	int events;
	int done_seen;
	int in_stream;
};

static void start_stream(struct conn *c);
static void conn_connect(struct conn *c);

/* An event ended: at t_read by our clock, arrived at t_rx (kernel). */
static void sse_event(struct conn *c, int64_t t_read, int64_t t_rx)
{
	if (c->events == 0) {
		c->ttft = t_read - c->t_send;
		c->first_stamped = c->ev_sim_ts >= 0 && c->ev_req_ts >= 0;
		if (c->first_stamped) {
			c->req_path = c->ev_req_ts - c->t_send;
			c->sim_wait = c->ev_sim_ts - c->ev_req_ts;
			c->first_transit = t_rx - c->ev_sim_ts;
		}
	} else {
		int64_t g = t_read - c->t_last;
		if (g > c->max_gap)
			c->max_gap = g;
		if (c->measured)
			push(&gaps, g);
	}
	if (c->measured) {
		push(&read_lags, t_read - t_rx);
		if (c->ev_sim_ts >= 0) {
			push(&transits, t_rx - c->ev_sim_ts);
			events_stamped++;
		} else if (!c->in_event_done)
			events_unstamped++;
	}
	c->t_last = t_read;
	c->events++;
}

/* The integer after key in the line (a JSON member), or -1. */
static int64_t line_stamp(const struct conn *c, const char *key)
{
	size_t kl = strlen(key);
	const char *p = memmem(c->line, c->line_len, key, kl);
	const char *end = c->line + c->line_len;
	int64_t v = 0;

	if (!p || (p += kl) >= end || *p < '0' || *p > '9')
		return -1;
	for (; p < end && *p >= '0' && *p <= '9'; p++)
		v = v * 10 + (*p - '0');
	return p < end ? v : -1; /* digits cut off by the line's end: no */
}

/* Feed body bytes to the SSE parser: an event ends at an empty line. */
static void sse_feed(struct conn *c, const char *p, size_t n, int64_t t_read,
                     int64_t t_rx)
{
	for (size_t i = 0; i < n; i++) {
		char ch = p[i];
		if (ch == '\r')
			continue;
		if (ch == '\n') {
			if (c->line_len == 0) {
				if (c->in_event_has_data)
					sse_event(c, t_read, t_rx);
				c->in_event_has_data = 0;
				c->in_event_done = 0;
				c->ev_sim_ts = c->ev_req_ts = -1;
			} else {
				if (c->line_len >= 5 && memcmp(c->line, "data:", 5) == 0) {
					c->in_event_has_data = 1;
					const char *v = c->line + 5;
					size_t vl = c->line_len - 5;
					if (vl && *v == ' ') { v++; vl--; }
					if (vl == 6 && memcmp(v, "[DONE]", 6) == 0) {
						c->done_seen = 1;
						c->in_event_done = 1;
					} else {
						int64_t ts = line_stamp(c, "\"sim_ts\":");
						int64_t rq = line_stamp(c, "\"sim_req_ts\":");
						if (ts >= 0)
							c->ev_sim_ts = ts;
						if (rq >= 0)
							c->ev_req_ts = rq;
					}
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
				push(&ttfts, c->ttft);
			if (c->events > 0 && c->first_stamped) {
				push(&req_paths, c->req_path);
				push(&sim_waits, c->sim_wait);
				push(&first_transits, c->first_transit);
				push(&paths, c->req_path + c->first_transit);
			} else if (c->events > 0)
				streams_first_unstamped++;
			ev_hist[c->events > MAX_EVENTS_HIST ? MAX_EVENTS_HIST : c->events]++;
			if (c->max_gap > stall_ms * 1e6)
				streams_stalled++;
			if (c->max_gap > max_gap_all)
				max_gap_all = c->max_gap;
		}
	}
}

static void conn_reset(struct conn *c)
{
	if (c->fd != -1) {
		event_free(c->ev_read);
		event_free(c->ev_write);
		c->ev_read = c->ev_write = NULL;
		evutil_closesocket(c->fd);
		c->fd = -1;
	}
	c->connecting = 0;
	evbuffer_drain(c->in, evbuffer_get_length(c->in));
}

static void after_stream(struct conn *c)
{
	if (stopping) {
		conn_reset(c);
		if (active == 0)
			event_base_loopbreak(base);
		return;
	}
	if (!c->keepalive || c->fd == -1) {
		conn_reset(c);
		conn_connect(c);
	} else {
		start_stream(c);
	}
}

/* The connection failed (eof: the peer closed it) */
static void conn_fail(struct conn *c, int eof)
{
	if (eof && c->in_stream && c->phase == P_CLOSE) {
		stream_end(c, 0); /* a body that ends at close */
		conn_reset(c);
		after_stream(c);
		return;
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

/* Run the response parser over what the input holds. */
static void parse(struct conn *c, int64_t t_read, int64_t t_rx)
{
	struct evbuffer *in = c->in;
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
				sse_feed(c, v[i].iov_base, k, t_read, t_rx);
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

/* The kernel's receive time of what msg brought (CLOCK_REALTIME, moved
 * onto CLOCK_MONOTONIC with the clocks' offset now), or -1. */
static int64_t rx_time(struct msghdr *msg, int64_t mono)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_TIMESTAMPNS)
			continue;
		struct timespec ts, real;
		memcpy(&ts, CMSG_DATA(cm), sizeof ts);
		clock_gettime(CLOCK_REALTIME, &real);
		return ts_ns(&ts) - (ts_ns(&real) - mono);
	}
	return -1;
}

/* Readable: one recvmsg() into the input, then parse. A read that holds
 * several events gives them all the last one's receive time. */
static void read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct evbuffer_iovec v[2];
	struct iovec iov[2];
	union {
		char buf[CMSG_SPACE(sizeof(struct timespec))];
		struct cmsghdr align;
	} cmsg;
	struct msghdr msg;

	int nv = evbuffer_reserve_space(c->in, READ_SIZE, v, 2);
	if (nv < 1) { perror("evbuffer_reserve_space"); exit(2); }
	for (int i = 0; i < nv; i++) {
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len;
	}
	memset(&msg, 0, sizeof msg);
	msg.msg_iov = iov;
	msg.msg_iovlen = nv;
	msg.msg_control = cmsg.buf;
	msg.msg_controllen = sizeof cmsg.buf;
	ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
	int64_t t_read = now_ns();
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		conn_fail(c, n == 0);
		return;
	}
	size_t left = n;
	for (int i = 0; i < nv; i++) {
		v[i].iov_len = left < v[i].iov_len ? left : v[i].iov_len;
		left -= v[i].iov_len;
	}
	evbuffer_commit_space(c->in, v, nv);
	int64_t t_rx = rx_time(&msg, t_read);
	reads++;
	if (t_rx < 0) {
		reads_no_rx_stamp++;
		t_rx = t_read;
	}
	parse(c, t_read, t_rx);
}

/* Send what is left of the request; the rest waits for EV_WRITE. */
static void send_rest(struct conn *c)
{
	ssize_t w = send(c->fd, request + c->sent, request_len - c->sent,
	                 MSG_NOSIGNAL | MSG_DONTWAIT);
	if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		conn_fail(c, 0);
		return;
	}
	if (w > 0)
		c->sent += w;
	if (c->sent < request_len)
		event_add(c->ev_write, NULL);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (c->connecting) {
		int err = 0;
		socklen_t len = sizeof err;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
			conn_fail(c, 0);
			return;
		}
		c->connecting = 0;
		connects++;
		event_add(c->ev_read, NULL);
		start_stream(c);
		return;
	}
	send_rest(c);
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
	c->in_event_done = 0;
	c->ev_sim_ts = c->ev_req_ts = -1;
	c->events = 0;
	c->done_seen = 0;
	c->ttft = c->max_gap = 0;
	c->first_stamped = 0;
	c->in_stream = 1;
	active++;
	c->sent = 0;
	c->t_send = now_ns();
	c->measured = (c->t_send - t0) >= (int64_t)(measure_after * 1e9);
	send_rest(c);
}

static void conn_connect(struct conn *c)
{
	if (stopping)
		return;
	int one = 1;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd == -1) {
		connect_errors++;
		struct timeval tv = {0, 50000};
		evtimer_add(c->timer, &tv);
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	setsockopt(c->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
	c->ev_read = event_new(base, c->fd, EV_READ | EV_PERSIST, read_cb, c);
	c->ev_write = event_new(base, c->fd, EV_WRITE, write_cb, c);
	if (!c->ev_read || !c->ev_write) { perror("event_new"); exit(2); }
	if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
		connects++;
		event_add(c->ev_read, NULL);
		start_stream(c);
	} else if (errno == EINPROGRESS) {
		c->connecting = 1;
		event_add(c->ev_write, NULL);
	} else {
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

static void sort_dist(struct dist *d)
{
	qsort(d->v, d->n, sizeof *d->v, cmp64);
}

/* a percentile in µs (integer, as the older figures are), -1 if empty */
static long long pct(const struct dist *d, double p)
{
	if (!d->n)
		return -1;
	size_t i = (size_t)(p / 100.0 * (d->n - 1) + 0.5);
	return d->v[i < d->n ? i : d->n - 1] / 1000;
}

/* , "name": {"n", "p50", "p90", "p99", "p999", "max"} in µs, 0.1 µs */
static void print_dist(const char *name, struct dist *d)
{
	static const double ps[] = {50, 90, 99, 99.9, 100};
	static const char *const names[] = {"p50", "p90", "p99", "p999", "max"};

	sort_dist(d);
	printf(", \"%s\": {\"n\": %zu", name, d->n);
	for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) {
		if (!d->n) {
			printf(", \"%s\": null", names[k]);
			continue;
		}
		size_t i = (size_t)(ps[k] / 100.0 * (d->n - 1) + 0.5);
		printf(", \"%s\": %.1f", names[k], d->v[i < d->n ? i : d->n - 1] / 1e3);
	}
	printf("}");
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
	signal(SIGPIPE, SIG_IGN);
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
	t0 = now_ns();
	for (int i = 0; i < nconns; i++) {
		conns[i].id = i;
		conns[i].fd = -1;
		conns[i].in = evbuffer_new();
		conns[i].timer = evtimer_new(base, timer_cb, &conns[i]);
		if (!conns[i].in || !conns[i].timer) { perror("evbuffer_new"); return 2; }
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

	sort_dist(&ttfts);
	sort_dist(&gaps);
	printf("{\"conns\": %d, \"connects\": %ld, \"connect_errors\": %ld, "
	       "\"streams_ok\": %ld, \"streams_no_done\": %ld, \"streams_bad_status\": %ld, "
	       "\"streams_error\": %ld, \"streams_stalled\": %ld, \"streams_unfinished\": %ld, "
	       "\"ttft_us\": {\"n\": %zu, \"p50\": %lld, \"p90\": %lld, \"p99\": %lld, \"max\": %lld}, "
	       "\"gap_us\": {\"n\": %zu, \"p50\": %lld, \"p99\": %lld, \"p999\": %lld, \"max\": %lld}, "
	       "\"events_stamped\": %ld, \"events_unstamped\": %ld, "
	       "\"streams_first_unstamped\": %ld, \"reads\": %ld, \"reads_no_rx_stamp\": %ld",
	       nconns, connects, connect_errors, streams_ok, streams_no_done,
	       streams_bad_status, streams_error, streams_stalled, streams_unfinished,
	       ttfts.n, pct(&ttfts, 50), pct(&ttfts, 90), pct(&ttfts, 99), pct(&ttfts, 100),
	       gaps.n, pct(&gaps, 50), pct(&gaps, 99), pct(&gaps, 99.9),
	       (long long)(max_gap_all / 1000),
	       events_stamped, events_unstamped, streams_first_unstamped,
	       reads, reads_no_rx_stamp);
	print_dist("path_us", &paths);
	print_dist("req_path_us", &req_paths);
	print_dist("first_transit_us", &first_transits);
	print_dist("sim_wait_us", &sim_waits);
	print_dist("transit_us", &transits);
	print_dist("read_lag_us", &read_lags);
	printf(", \"events_hist\": {");
	int first = 1;
	for (int i = 0; i <= MAX_EVENTS_HIST; i++)
		if (ev_hist[i]) {
			printf("%s\"%d\": %ld", first ? "" : ", ", i, ev_hist[i]);
			first = 0;
		}
	printf("}}\n");
	return 0;
}
