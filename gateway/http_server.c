/*
 * The client side of the gateway: HTTP/1.1 connections on our own socket
 * I/O (io.c), parsed with llhttp, one small function per state.
 *
 *   IDLE --first byte--> HEAD --headers--> BODY --complete--> BUSY
 *    ^                                                          |
 *    +------------- response handed off (keep-alive) -----------+
 *   any state --error / Connection: close--> CLOSING (flush, then free)
 *
 * One request at a time per connection: pipelined requests wait in the
 * input buffer (reading pauses past max_header_bytes + 64 KiB of it) and
 * are parsed once the response before them is handed off, so responses
 * go out in order. Requests are parsed straight from the worker's read
 * buffer; only what a read leaves unparsed is copied.
 * While a request is BUSY, reading stays on so that a client that goes
 * away is noticed at once and its upstream request cancelled.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <llhttp.h>
#include <openssl/ssl.h>

#include "infergate/fmt.h"
#include "infergate/log.h"
#include "gateway.h"

enum hs_state { HS_IDLE, HS_HEAD, HS_BODY, HS_BUSY, HS_CLOSING };

/* Output above this pauses the backend's reads (see hs_output_full). */
#define HS_OUT_HIGH	(64 * 1024)
#define HS_OUT_LOW	(16 * 1024)
/* A client that takes no byte of a pending response for this long is gone. */
#define HS_SEND_TIMEOUT	60
/* A header section, counted whole, past this is refused (see hs_scan). */
#define HS_HEAD_MAX	(2 * 1024 * 1024)

enum hs_scan { HS_SCAN_OK, HS_SCAN_MALFORMED, HS_SCAN_TOO_LARGE,
	HS_SCAN_PROTOCOL };

struct hs_conn {
	struct ig_worker *w;
	struct hs_conn	*next;		/* the worker's open connections */
	struct hs_conn	*prev;
	struct ig_io	 io;
	size_t		 in_max;	/* pipelined input kept before pausing */
	/* The phase timeout: one FIFO per phase per worker (every entry of a
	 * list has the same timeout, so appending keeps it sorted) and one
	 * timer per worker, instead of an event per connection. */
	struct hs_conn	*tnext;
	struct hs_conn	*tprev;
	uint64_t	 deadline;	/* now_ns() value */
	int		 tq;		/* the list it is in: its state, or -1 */
	llhttp_t	 parser;
	enum hs_state	 state;
	unsigned	 nrequests;
	struct ig_request *req;
	struct ig_snapshot *snap;	/* of the request being received */
	/* The request being received: URL and headers in one arena. */
	char		*arena;
	size_t		 arena_block;	/* a worker block of this size; 0: malloc'd */
	size_t		 arena_used;
	size_t		 arena_cap;
	struct ig_header *hdrs;
	size_t		 nhdrs;
	size_t		 max_hdrs;
	const char	*url;
	size_t		 url_len;
	size_t		 body_len;
	int		 err_status;	/* refuse at message end: 404/405/... */
	const char	*err_code;
	const char	*err_msg;
	const char	*allow;		/* for 405 */
	bool		 in_value;
	bool		 keep_alive;
	bool		 chunked_out;
	bool		 close_delimited;
	bool		 feeding;	/* inside hs_feed */
	bool		 out_failed;	/* no memory for a response head: the
					   rest is dropped, the connection closes */
	/* Line-ending scan of the header section (bare LF, obs-fold). */
	uint8_t		 scan_prev;
	bool		 scanning;
	bool		 scan_seen_line;	/* the request line went by */
	uint32_t	 scan_line_len;
	size_t		 scan_bytes;	/* of the header section so far */
	uint64_t	 scan_tail;	/* the request line's last 8 bytes */
	struct ig_auth_memo auth_memo;	/* the key of the last request */
	char		 client_ip[48];
};

static const llhttp_settings_t hs_settings;
static int	 hs_feed(struct hs_conn *, const char *, size_t);
static void	 hs_close(struct hs_conn *);
static void	 hs_refuse(struct hs_conn *, int status, const char *code,
		    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static const struct ig_limits_conf *
hs_limits(struct hs_conn *c)
{
	return &c->snap->conf->limits;
}

static void	 hs_timer_fire(struct hs_conn *);

static void
hs_tq_unlink(struct hs_conn *c)
{
	struct ig_worker *w = c->w;

	if (c->tq < 0)
		return;
	if (c->tprev != NULL)
		c->tprev->tnext = c->tnext;
	else
		w->tq_head[c->tq] = c->tnext;
	if (c->tnext != NULL)
		c->tnext->tprev = c->tprev;
	else
		w->tq_tail[c->tq] = c->tprev;
	c->tnext = c->tprev = NULL;
	c->tq = -1;
}

/* Makes the worker's timer fire by WHEN (now_ns() value) at the latest. */
static void
hs_tq_schedule(struct ig_worker *w, uint64_t when)
{
	struct timeval tv;
	uint64_t now, d;

	if (w->tq_when != 0 && w->tq_when <= when)
		return;
	now = now_ns();
	d = when > now ? when - now : 0;
	tv.tv_sec = d / 1000000000ULL;
	tv.tv_usec = (d % 1000000000ULL) / 1000;
	w->tq_when = when;
	evtimer_add(w->tq_timer, &tv);
}

/* Expires what is due in each list, then waits for the earliest left. */
static void
hs_tq_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ig_worker *w = arg;
	uint64_t now = now_ns(), next = 0;
	struct hs_conn *c;
	int q;

	w->tq_when = 0;
	for (q = 0; q < 3; q++) {
		while ((c = w->tq_head[q]) != NULL && c->deadline <= now) {
			hs_tq_unlink(c);
			hs_timer_fire(c);
		}
		if ((c = w->tq_head[q]) != NULL && (next == 0 || c->deadline < next))
			next = c->deadline;
	}
	if (next != 0)
		hs_tq_schedule(w, next);
}

/* Arms the timeout of the connection's current phase (0: none). */
static void
hs_timer_arm(struct hs_conn *c, uint64_t ms)
{
	struct ig_worker *w = c->w;
	int q = c->state;	/* HS_IDLE, HS_HEAD, HS_BODY: 0..2 */

	hs_tq_unlink(c);
	if (ms == 0 || q > HS_BODY)
		return;
	if (w->tq_timer == NULL &&
	    (w->tq_timer = evtimer_new(w->base, hs_tq_cb, w)) == NULL)
		return;
	c->deadline = now_ns() + ms * 1000000ULL;
	c->tq = q;
	c->tprev = w->tq_tail[q];
	c->tnext = NULL;
	if (w->tq_tail[q] != NULL)
		w->tq_tail[q]->tnext = c;
	else
		w->tq_head[q] = c;
	w->tq_tail[q] = c;
	hs_tq_schedule(w, c->deadline);
}

/* The arena of the request being received goes back or is freed. */
static void
hs_arena_free(struct hs_conn *c)
{
	if (c->arena_block != 0)
		worker_block_put(c->w, WB_ARENA, c->arena, c->arena_block);
	else
		free(c->arena);
	c->arena = NULL;
	c->arena_block = 0;
}

static void
hs_request_reset(struct hs_conn *c)
{
	hs_arena_free(c);
	c->arena = NULL;
	c->hdrs = NULL;
	c->arena_used = c->arena_cap = c->nhdrs = c->max_hdrs = 0;
	c->url = NULL;
	c->url_len = c->body_len = 0;
	c->err_status = 0;
	c->err_code = c->err_msg = c->allow = NULL;
	c->in_value = false;
	c->scanning = true;
	c->scan_prev = 0;
	c->scan_seen_line = false;
	c->scan_line_len = 0;
	c->scan_bytes = 0;
	c->scan_tail = 0;
	if (c->snap != NULL) {
		snapshot_unref(c->snap);
		c->snap = NULL;
	}
}

/* The first byte of a request: take the current config, set up limits. */
static int
hs_on_message_begin(llhttp_t *p)
{
	struct hs_conn *c = p->data;
	const struct ig_limits_conf *lim;
	struct ig_request *r;

	/* A start that failed for want of memory may be made again. */
	snapshot_unref(c->snap);
	if (c->arena != NULL)
		hs_arena_free(c);
	c->snap = snapshot_current();
	lim = hs_limits(c);
	c->max_hdrs = lim->max_headers;
	c->arena_cap = lim->max_header_bytes;
	c->arena_block = c->arena_cap + c->max_hdrs * sizeof(struct ig_header);
	c->arena = worker_block_get(c->w, WB_ARENA, c->arena_block);
	if (c->arena == NULL ||
	    (r = worker_block_get(c->w, WB_REQUEST, sizeof(*r))) == NULL) {
		c->err_status = 503;
		return -1;
	}
	memset(r, 0, sizeof(*r));
	c->hdrs = (struct ig_header *)(c->arena + c->arena_cap);
	r->conn = c;
	r->worker = c->w;
	r->snap = snapshot_ref(c->snap);
	r->t_start = now_ns();
	memcpy(r->client_ip, c->client_ip, sizeof(r->client_ip));
	c->req = r;
	c->state = HS_HEAD;
	hs_timer_arm(c, lim->header_timeout_ms);
	WSTAT_ADD(c->w, ST_REQUESTS, 1);
	return 0;
}

/* Appends a fragment of the URL or a header to the arena, within limits. */
static int
hs_arena_add(struct hs_conn *c, const char *at, size_t len)
{
	if (c->arena_used + len > c->arena_cap) {
		c->err_status = 431;
		c->err_msg = "request header section too large";
		return -1;
	}
	memcpy(c->arena + c->arena_used, at, len);
	c->arena_used += len;
	return 0;
}

static int
hs_on_url(llhttp_t *p, const char *at, size_t len)
{
	struct hs_conn *c = p->data;

	if (c->url == NULL) {
		c->url = c->arena + c->arena_used;
		/* The method came before the URL. */
		if (c->req != NULL) {
			c->req->method = llhttp_get_method(p);
			c->req->method_known = true;
		}
	}
	c->url_len += len;
	return hs_arena_add(c, at, len);
}

/* RFC 9110 tchar: what a header name may be made of. */
static const uint8_t hs_tchar[256] = {
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
	['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
	['`'] = 1, ['|'] = 1, ['~'] = 1,
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
	['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
	['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
	['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
	['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
	['Y'] = 1, ['Z'] = 1,
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
	['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
	['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
	['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
	['y'] = 1, ['z'] = 1,
};

static bool
hs_token_char(unsigned char ch)
{
	return hs_tchar[ch] != 0;
}

static int
hs_on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct hs_conn *c = p->data;
	struct ig_header *h;
	size_t i;

	/* A chunked body's trailer: the arena was cut to the head's size
	 * (hs_compact), so no header more fits; refused as it always was. */
	if (c->state == HS_BODY) {
		c->err_status = 431;
		c->err_msg = "request header section too large";
		return -1;
	}
	/* "Host : x" got past http-parser; a space in a name is a smuggling
	 * vector, so only token characters are accepted, whatever the parser. */
	for (i = 0; i < len; i++)
		if (!hs_token_char(at[i])) {
			c->err_status = 400;
			c->err_msg = "invalid character in a header name";
			return -1;
		}
	if (c->nhdrs == 0 || c->in_value) {
		if (c->nhdrs == c->max_hdrs) {
			c->err_status = 431;
			c->err_msg = "too many request headers";
			return -1;
		}
		h = &c->hdrs[c->nhdrs++];
		h->name = c->arena + c->arena_used;
		h->namelen = 0;
		h->value = NULL;
		h->valuelen = 0;
		c->in_value = false;
	}
	h = &c->hdrs[c->nhdrs - 1];
	h->namelen += len;
	return hs_arena_add(c, at, len);
}

static int
hs_on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct hs_conn *c = p->data;
	struct ig_header *h = &c->hdrs[c->nhdrs - 1];

	if (!c->in_value) {
		/* llhttp passes ": v" as a header with an empty name. */
		if (h->namelen == 0) {
			c->err_status = 400;
			c->err_msg = "empty header name";
			return -1;
		}
		h->value = c->arena + c->arena_used;
		c->in_value = true;
	}
	h->valuelen += len;
	return hs_arena_add(c, at, len);
}

/* NAME, V: lowercase literals (inlined: their lengths are constants). */
static inline __attribute__((always_inline)) bool
hs_header_is(const struct ig_header *h, const char *name)
{
	return h->namelen == strlen(name) &&
	    gw_caseeq(h->name, name, h->namelen);
}

static inline __attribute__((always_inline)) bool
hs_value_is(const struct ig_header *h, const char *v)
{
	const char *s = h->value;
	size_t n = h->valuelen;

	while (n > 0 && (*s == ' ' || *s == '\t'))
		s++, n--;
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	return n == strlen(v) && gw_caseeq(s, v, n);
}

const struct ig_header *
hs_find_header(const struct ig_request *r, const char *name)
{
	size_t i;

	for (i = 0; i < r->nheaders; i++)
		if (hs_header_is(&r->headers[i], name))
			return &r->headers[i];
	return NULL;
}

/* Which endpoint, and is the method right for it; sets the refusal if not. */
static void
hs_route(struct hs_conn *c, struct ig_request *r)
{
	static const struct { const char *path; enum gw_endpoint ep;
		unsigned method; const char *allow; } eps[] = {
		{ "/v1/chat/completions", EP_CHAT, HTTP_POST, "POST" },
		{ "/v1/completions", EP_COMPLETIONS, HTTP_POST, "POST" },
		{ "/v1/embeddings", EP_EMBEDDINGS, HTTP_POST, "POST" },
		{ "/v1/models", EP_MODELS, HTTP_GET, "GET, HEAD" },
	};
	size_t i, plen;
	const char *q;

	q = memchr(c->url, '?', c->url_len);
	plen = q ? (size_t)(q - c->url) : c->url_len;
	/* Tolerate one trailing slash, as the OpenAI API does. */
	if (plen > 1 && c->url[plen - 1] == '/')
		plen--;
	for (i = 0; i < sizeof(eps) / sizeof(eps[0]); i++) {
		if (strlen(eps[i].path) != plen ||
		    memcmp(eps[i].path, c->url, plen) != 0)
			continue;
		r->ep = eps[i].ep;
		r->path = eps[i].path;
		if (r->method == eps[i].method ||
		    (eps[i].method == HTTP_GET && r->method == HTTP_HEAD))
			return;
		c->err_status = 405;
		c->err_code = "method_not_allowed";
		c->err_msg = "method not allowed for this endpoint";
		c->allow = eps[i].allow;
		return;
	}
	c->err_status = 404;
	c->err_code = "not_found";
	c->err_msg = "no such endpoint";
}

/*
 * The arena was sized for the largest header section allowed; a request
 * that lives on (a stream) keeps only what it used: the headers are moved
 * to a block of their own size and the arena freed.
 */
static int
hs_compact(struct hs_conn *c)
{
	size_t hsz = c->nhdrs * sizeof(struct ig_header);
	char *blk, *old = c->arena;
	size_t i;

	if ((blk = malloc(hsz + c->arena_used + 1)) == NULL)
		return -1;
	memcpy(blk + hsz, old, c->arena_used);
	memcpy(blk, c->hdrs, hsz);
	c->hdrs = (struct ig_header *)blk;
	for (i = 0; i < c->nhdrs; i++) {
		c->hdrs[i].name = blk + hsz + (c->hdrs[i].name - old);
		if (c->hdrs[i].value != NULL)
			c->hdrs[i].value = blk + hsz + (c->hdrs[i].value - old);
		else
			c->hdrs[i].value = blk + hsz + c->arena_used;
	}
	if (c->url != NULL)
		c->url = blk + hsz + (c->url - old);
	blk[hsz + c->arena_used] = '\0';
	hs_arena_free(c);
	c->arena = blk;
	c->arena_cap = c->arena_used;
	return 0;
}

/*
 * The header section is complete: check what llhttp leaves to us
 * (Host, Transfer-Encoding other than a lone "chunked", body size, Expect)
 * and decide what happens to the body.
 */
static int
hs_on_headers_complete(llhttp_t *p)
{
	struct hs_conn *c = p->data;
	struct ig_request *r = c->req;
	const struct ig_limits_conf *lim = hs_limits(c);
	bool has_host = false, expect_continue = false, has_te = false;
	size_t i;

	if (p->http_major != 1) {
		c->err_status = 505;
		c->err_msg = "HTTP version not supported";
		return -1;
	}
	r->method = p->method;
	if (hs_compact(c) == -1) {
		c->err_status = 503;
		c->err_msg = "out of memory";
		return -1;
	}
	r->headers = c->hdrs;
	r->nheaders = c->nhdrs;
	for (i = 0; i < c->nhdrs; i++) {
		const struct ig_header *h = &c->hdrs[i];

		if (hs_header_is(h, "host")) {
			if (has_host) {
				c->err_status = 400;
				c->err_msg = "duplicate Host header";
				return -1;
			}
			has_host = true;
		} else if (hs_header_is(h, "transfer-encoding")) {
			if (has_te || !hs_value_is(h, "chunked")) {
				c->err_status = 400;
				c->err_msg = "unsupported Transfer-Encoding";
				return -1;
			}
			has_te = true;
		} else if (hs_header_is(h, "expect")) {
			if (!hs_value_is(h, "100-continue")) {
				c->err_status = 417;
				c->err_msg = "unsupported expectation";
				return -1;
			}
			expect_continue = true;
		}
	}
	if (!has_host && p->http_minor >= 1) {
		c->err_status = 400;
		c->err_msg = "missing Host header";
		return -1;
	}
	if ((p->flags & F_CONTENT_LENGTH) &&
	    p->content_length > lim->max_body_bytes) {
		c->err_status = 413;
		c->err_msg = "request body too large";
		return -1;
	}
	c->keep_alive = llhttp_should_keep_alive(p);
	hs_route(c, r);
	if (expect_continue && c->err_status == 0 && p->http_minor >= 1) {
		evbuffer_add(c->io.out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
		io_schedule_flush(&c->io);
	} else if (expect_continue)	/* refused: do not make it send the body */
		c->keep_alive = false;
	c->state = HS_BODY;
	hs_timer_arm(c, lim->body_timeout_ms);
	return 0;
}

static int
hs_on_body(llhttp_t *p, const char *at, size_t len)
{
	struct hs_conn *c = p->data;

	c->body_len += len;
	if (c->body_len > hs_limits(c)->max_body_bytes) {
		c->err_status = 413;
		c->err_msg = "request body too large";
		return -1;
	}
	if (c->err_status != 0)		/* being refused: read and discard */
		return 0;
	if (c->req->body == NULL &&
	    (c->req->body = worker_evbuffer_get(c->w)) == NULL)
		return -1;
	return evbuffer_add(c->req->body, at, len);
}

static int
hs_on_message_complete(llhttp_t *p)
{
	struct hs_conn *c = p->data;

	c->state = HS_BUSY;
	hs_tq_unlink(c);
	return HPE_PAUSED;	/* hs_feed dispatches it */
}

static const llhttp_settings_t hs_settings = {
	.on_message_begin = hs_on_message_begin,
	.on_url = hs_on_url,
	.on_header_field = hs_on_header_field,
	.on_header_value = hs_on_header_value,
	.on_headers_complete = hs_on_headers_complete,
	.on_body = hs_on_body,
	.on_message_complete = hs_on_message_complete,
};

/* "RTSP/" as the first 5 of the last 8 bytes of a request line. */
#define HS_RTSP		0x525453502fULL

/* Shifts the last (up to 8) of N request-line bytes into c->scan_tail. */
static void
hs_scan_tail(struct hs_conn *c, const unsigned char *s, size_t n)
{
	if (n > 8) {
		s += n - 8;
		n = 8;
	}
	while (n-- > 0)
		c->scan_tail = c->scan_tail << 8 | *s++;
}

/*
 * Scans header-section bytes for what the parser tolerates but a proxy
 * must not: a bare LF or CR, and obs-fold continuation lines; and counts
 * the section whole (request line, line ends, whitespace), which llhttp
 * does not bound: past HS_HEAD_MAX it is refused as http-parser's limit
 * did (limits.max_header_bytes, on what is kept, applies first). And the
 * request line must not end in RTSP/x.y, which llhttp takes for GET,
 * POST and OPTIONS. Stops at the blank line ending the section.
 */
static enum hs_scan
hs_scan(struct hs_conn *c, const unsigned char *s, size_t n)
{
	const unsigned char *end = s + n, *cr, *lf;
	size_t i;

	for (i = 0; i < n && c->scanning; i++) {
		unsigned char ch = s[i], prev = c->scan_prev;

		c->scan_prev = ch;
		if (prev == '\r' && ch != '\n')
			return HS_SCAN_MALFORMED;	/* bare CR */
		if (ch == '\r')
			continue;
		if (ch == '\n') {
			if (prev != '\r')
				return HS_SCAN_MALFORMED;	/* bare LF */
			if (c->scan_line_len == 0 && c->scan_seen_line)
				c->scanning = false;	/* end of the section */
			else if (c->scan_line_len > 0) {
				if (!c->scan_seen_line &&
				    c->scan_tail >> 24 == HS_RTSP)
					return HS_SCAN_PROTOCOL;
				c->scan_seen_line = true;
			}
			c->scan_line_len = 0;	/* blank lines before a request
						 * line are tolerated */
			continue;
		}
		if ((ch == ' ' || ch == '\t') && c->scan_line_len == 0 &&
		    c->scan_seen_line)
			return HS_SCAN_MALFORMED;	/* obs-fold */
		/* The rest of the line up to its CR or LF needs no look. */
		lf = memchr(s + i, '\n', n - i);
		cr = memchr(s + i, '\r', (lf != NULL ? lf : end) - (s + i));
		if (cr == NULL)
			cr = lf != NULL ? lf : end;
		c->scan_line_len += cr - (s + i);
		if (!c->scan_seen_line)
			hs_scan_tail(c, s + i, cr - (s + i));
		c->scan_prev = cr[-1];
		i = cr - s - 1;
	}
	c->scan_bytes += i;
	return c->scan_bytes > HS_HEAD_MAX ? HS_SCAN_TOO_LARGE : HS_SCAN_OK;
}

/* Hands the parsed request over: to the proxy, or to its refusal. */
static void
hs_dispatch(struct hs_conn *c)
{
	struct ig_request *r = c->req;

	c->nrequests++;
	r->bytes_in = c->body_len;
	r->dispatched = true;
	WSTAT_ADD(c->w, ST_REQ_INFLIGHT, 1);
	if (c->err_status != 0) {
		hs_refuse(c, c->err_status, c->err_code, "%s", c->err_msg);
		return;
	}
	proxy_request(r);
}

/* Takes N bytes of the input: from DATA (*data, *len) or from io->in. */
static void
hs_consume(struct hs_conn *c, const char **data, size_t *len, size_t n)
{
	if (*data != NULL) {
		*data += n;
		*len -= n;
		io_consumed(&c->io, n);
	} else
		evbuffer_drain(c->io.in, n);
}

/* Nothing more is read from a connection being closed: drops the input. */
static void
hs_discard_input(struct hs_conn *c, const char *data, size_t len)
{
	if (data != NULL)
		io_consumed(&c->io, len);
	evbuffer_drain(c->io.in, evbuffer_get_length(c->io.in));
}

/*
 * Feeds input to the parser while the connection may take a new request:
 * DATA (the worker's read buffer, what is left unparsed is kept by io.c)
 * or, when NULL, what waits in io->in. Stops at the end of each request
 * (the parser is paused there) and resumes only when its response has
 * been handed off. Returns -1 when the connection was closed.
 */
static int
hs_feed(struct hs_conn *c, const char *data, size_t len)
{
	struct evbuffer_iovec v;
	const char *p;
	size_t n, avail;
	enum hs_scan sr;
	llhttp_errno_t e;

	c->feeding = true;
	while (c->state == HS_IDLE || c->state == HS_HEAD ||
	    c->state == HS_BODY) {
		if (data != NULL) {
			if (len == 0)
				break;
			p = data;
			avail = len;
		} else {
			if (evbuffer_peek(c->io.in, -1, NULL, &v, 1) <= 0)
				break;
			p = v.iov_base;
			avail = v.iov_len;
		}
		if (c->state == HS_IDLE)
			hs_request_reset(c);
		if (c->scanning && (sr = hs_scan(c, (const unsigned char *)p,
		    avail)) != HS_SCAN_OK) {
			if (c->req == NULL)
				hs_on_message_begin(&c->parser);
			if (sr == HS_SCAN_TOO_LARGE)
				hs_refuse(c, 431, NULL,
				    "request header section too large");
			else if (sr == HS_SCAN_PROTOCOL)
				hs_refuse(c, 400, NULL, "not an HTTP request");
			else
				hs_refuse(c, 400, NULL,
				    "malformed line ending or folded header");
			break;
		}
		e = llhttp_execute(&c->parser, p, avail);
		/* Where it stopped, on a pause or an error; all taken on OK. */
		n = e == HPE_OK ? avail :
		    (size_t)(llhttp_get_error_pos(&c->parser) - p);
		hs_consume(c, &data, &len, n);
		if (e == HPE_PAUSED) {		/* end of a request */
			llhttp_resume(&c->parser);
			hs_dispatch(c);
			continue;
		}
		if (e == HPE_PAUSED_UPGRADE) {
			/* Upgrade and CONNECT are not served: the request was
			 * answered as any other, and what follows is HTTP, as
			 * http-parser left it. */
			llhttp_resume_after_upgrade(&c->parser);
			continue;
		}
		if (e != HPE_OK) {
			int status = c->err_status ? c->err_status : 400;
			const char *msg = c->err_msg ? c->err_msg :
			    e == HPE_PAUSED_H2_UPGRADE ? "HTTP/2 is not supported" :
			    llhttp_get_error_reason(&c->parser);

			if (c->req == NULL)
				hs_on_message_begin(&c->parser);
			c->err_status = 0;
			hs_refuse(c, status, NULL, "%s", msg);
			break;
		}
	}
	c->feeding = false;
	if (c->state == HS_CLOSING) {
		hs_discard_input(c, data, len);
		if (!io_output_pending(&c->io)) {
			hs_close(c);
			return -1;
		}
		io_schedule_flush(&c->io);
	}
	return 0;
}

static int
hs_on_read(struct ig_io *io, void *arg, const char *data, size_t len)
{
	struct hs_conn *c = arg;

	if (c->state == HS_CLOSING) {
		hs_discard_input(c, data, len);
		return 0;
	}
	if (hs_feed(c, data, len) == -1)
		return -1;
	/* Pipelined input waiting behind a busy request is bounded. */
	if (c->state == HS_BUSY && evbuffer_get_length(io->in) + len > c->in_max)
		io_pause_read(io, true);
	return 0;
}

/* Output drained: close a closing connection, resume a paused backend. */
static int
hs_on_drain(struct ig_io *io, void *arg)
{
	struct hs_conn *c = arg;

	if (c->state == HS_CLOSING) {
		if (io_output_pending(io))
			return 0;
		hs_close(c);
		return -1;
	}
	if (c->req != NULL && c->state == HS_BUSY)
		proxy_client_writable(c->req);
	return 0;
}

static int
hs_on_event(struct ig_io *io, void *arg, int what)
{
	struct hs_conn *c = arg;

	if (what == IO_CONNECTED)
		return 0;
	if (c->req != NULL && c->state == HS_BUSY)
		c->req->outcome = what == IO_TIMEOUT ? "client_timeout" :
		    "client_abort";
	hs_close(c);
	return -1;
}

static const struct io_handlers hs_io = {
	.on_read = hs_on_read,
	.on_drain = hs_on_drain,
	.on_event = hs_on_event,
};

static void
hs_timer_fire(struct hs_conn *c)
{
	switch (c->state) {
	case HS_HEAD:
	case HS_BODY:
		hs_refuse(c, 408, "request_timeout", "%s",
		    c->state == HS_HEAD ? "timed out reading the request headers"
		    : "timed out reading the request body");
		c->keep_alive = false;
		break;
	default:
		hs_close(c);	/* idle keep-alive connection */
	}
}

/*
 * The one teardown of a connection. A request still in flight is handed
 * to the proxy as abandoned (it cancels the upstream request and logs).
 */
static void
hs_close(struct hs_conn *c)
{
	if (c->req != NULL) {
		struct ig_request *r = c->req;

		c->req = NULL;
		r->conn = NULL;
		if (r->outcome == NULL)
			r->outcome = "client_abort";
		if (c->state == HS_BUSY)
			WSTAT_ADD(c->w, ST_CLIENT_ABORTS, 1);
		proxy_request_free(r);
	}
	hs_request_reset(c);
	ig_auth_memo_clear(&c->auth_memo);
	io_release(&c->io);
	hs_tq_unlink(c);
	WSTAT_SUB(c->w, ST_CONN_OPEN, 1);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->w->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	free(c);
}

struct ig_auth_memo *
hs_auth_memo(struct hs_conn *c)
{
	return &c->auth_memo;
}

/* Closes every connection of the worker (at its exit). */
void
hs_close_all(struct ig_worker *w)
{
	while (w->conns != NULL)
		hs_close(w->conns);
}

#define HS_ACCEPT_PAUSE_MS	100	/* out of descriptors: accept again after */

/*
 * accept() on L failed. Out of file descriptors (or kernel memory), the
 * listening socket stays readable: libevent would call accept again at
 * once, for ever, at full CPU, logging each time. So, as nginx and relayd
 * do, the listener pauses for HS_ACCEPT_PAUSE_MS (RESUME, armed here,
 * enables it again; the connections in hand go on and free descriptors),
 * and the error is logged at most once a second (*WARNED_NS). Returns
 * whether it paused. Also the admin listener's (admin.c).
 */
bool
hs_accept_failed(struct evconnlistener *l, struct event *resume,
    uint64_t *warned_ns)
{
	static const struct timeval pause = { 0, HS_ACCEPT_PAUSE_MS * 1000 };
	int e = EVUTIL_SOCKET_ERROR();
	bool scarce = gw_errno_scarce(e);
	uint64_t now = now_ns();

	if (now - *warned_ns >= 1000000000ULL) {
		*warned_ns = now;
		log_warn("accept: %s%s", strerror(e), scarce ? "; pausing "
		    "new connections (counted in infergate_accept_pauses_total)" :
		    "");
	}
	if (!scarce || resume == NULL)
		return false;
	evconnlistener_disable(l);
	evtimer_add(resume, &pause);
	return true;
}

void
hs_listener_error_cb(struct evconnlistener *l, void *arg)
{
	struct ig_listener *il = arg;

	if (hs_accept_failed(l, il->resume, &il->warned_ns))
		WSTAT_ADD(il->w, ST_ACCEPT_PAUSES, 1);
}

void
hs_listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ig_listener *il = arg;

	if (il->l != NULL)
		evconnlistener_enable(il->l);
}

void
hs_listener_cb(struct evconnlistener *l, int fd, struct sockaddr *sa,
    int socklen, void *arg)
{
	struct ig_listener *il = arg;
	struct ig_worker *w = il->w;
	struct hs_conn *c = NULL;
	struct ig_snapshot *snap;
	SSL *ssl = NULL;
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	snap = snapshot_current();
	if (il->tls != NULL) {
		if ((ssl = SSL_new(listener_tls(il, snap))) == NULL ||
		    SSL_set_fd(ssl, fd) != 1)
			goto fail;
		SSL_set_accept_state(ssl);
		SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
		    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
		    SSL_MODE_RELEASE_BUFFERS);
	}
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    io_init(&c->io, w, fd, ssl, false, &hs_io, c) == -1)
		goto fail;
	c->w = w;
	c->tq = -1;
	c->io.wtimeout_ms = HS_SEND_TIMEOUT * 1000;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr,
		    c->client_ip, sizeof(c->client_ip));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr,
		    c->client_ip, sizeof(c->client_ip));
	llhttp_init(&c->parser, HTTP_REQUEST, &hs_settings);
	/* Any digit.digit version, as http-parser took it: 1.x is served,
	 * the rest answered 505 (hs_on_headers_complete), not refused as
	 * malformed. The only lenient flag: framing stays strict. llhttp 8.1
	 * has the flag but not yet its setter (llhttp_set_lenient_version). */
	c->parser.lenient_flags |= LENIENT_VERSION;
	c->parser.data = c;
	c->state = HS_IDLE;
	c->scanning = true;
	c->in_max = snap->conf->limits.max_header_bytes + 65536;
	hs_timer_arm(c, snap->conf->limits.keepalive_timeout_ms);
	snapshot_unref(snap);
	c->next = w->conns;
	if (w->conns != NULL)
		w->conns->prev = c;
	w->conns = c;
	WSTAT_ADD(w, ST_CONN_ACCEPTED, 1);
	WSTAT_ADD(w, ST_CONN_OPEN, 1);
	return;
fail:
	snapshot_unref(snap);
	free(c);
	SSL_free(ssl);
	evutil_closesocket(fd);
}

/* --- the response side ----------------------------------------------- */

static const char *
hs_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 417: return "Expectation Failed";
	case 422: return "Unprocessable Entity";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

/*
 * Writes the status line and headers. body_len >= 0: a Content-Length
 * body follows; -1: a streamed body, chunked (or close-delimited for an
 * HTTP/1.0 client). `extra` is preformatted "Name: value\r\n" lines or
 * NULL. Decides keep-alive for this response.
 */
void
hs_response_start(struct hs_conn *c, int status, const char *extra,
    size_t extralen, int64_t body_len)
{
	struct evbuffer *out = c->io.out;
	struct ig_request *r = c->req;
	const struct ig_limits_conf *lim = hs_limits(c);
	struct evbuffer_iovec v;
	struct ig_fmt f;

	if (c->nrequests >= lim->max_requests_per_connection &&
	    lim->max_requests_per_connection != 0)
		c->keep_alive = false;
	if (c->w->stopping)
		c->keep_alive = false;
	c->chunked_out = body_len < 0 && c->parser.http_minor >= 1;
	c->close_delimited = body_len < 0 && !c->chunked_out;
	if (c->close_delimited)
		c->keep_alive = false;
	/*
	 * The head in one piece of the output: EXTRA plus at most 220 bytes
	 * of our own (status line, Date, x-request-id, framing).
	 */
	if (evbuffer_reserve_space(out, (ev_ssize_t)(extralen + 256), &v,
	    1) < 1) {
		/* Out of memory: no head, so nothing of this response
		 * (hs_body, hs_response_end), and the connection closes. */
		c->out_failed = true;
		c->keep_alive = false;
		v.iov_base = NULL;
		v.iov_len = 0;
	}
	f = (struct ig_fmt)IG_FMT_INIT(v.iov_base, v.iov_len);
	if (c->parser.http_minor >= 1)
		ig_fmt_lit(&f, "HTTP/1.1 ");
	else
		ig_fmt_lit(&f, "HTTP/1.0 ");
	ig_fmt_u64(&f, (uint64_t)status);
	ig_fmt_lit(&f, " ");
	ig_fmt_cstr(&f, hs_reason(status));
	ig_fmt_lit(&f, "\r\n");
	ig_fmt_mem(&f, extra, extralen);
	/* Ours when the backend's is not passed on (RFC 9110 6.6.1). */
	if (r == NULL || !r->backend_date)
		ig_fmt_mem(&f, worker_date(c->w), IG_DATE_LEN);
	if (r != NULL && r->id[0] != '\0') {
		ig_fmt_lit(&f, "x-request-id: ");
		ig_fmt_cstr(&f, r->id);
		ig_fmt_lit(&f, "\r\n");
	}
	if (body_len >= 0) {
		ig_fmt_lit(&f, "Content-Length: ");
		ig_fmt_u64(&f, (uint64_t)body_len);
		ig_fmt_lit(&f, "\r\n");
	} else if (c->chunked_out)
		ig_fmt_lit(&f, "Transfer-Encoding: chunked\r\n");
	if (!c->keep_alive)
		ig_fmt_lit(&f, "Connection: close\r\n\r\n");
	else if (c->parser.http_minor == 0)
		ig_fmt_lit(&f, "Connection: keep-alive\r\n\r\n");
	else
		ig_fmt_lit(&f, "\r\n");
	if (v.iov_base != NULL) {
		v.iov_len = f.len;
		evbuffer_commit_space(out, &v, 1);
	}
	if (r != NULL) {
		r->status = status;
		r->resp_started = true;
		if (status >= 500)
			WSTAT_ADD(c->w, ST_RESP_5XX, 1);
		else if (status >= 400)
			WSTAT_ADD(c->w, ST_RESP_4XX, 1);
		else
			WSTAT_ADD(c->w, ST_RESP_2XX, 1);
	}
	io_schedule_flush(&c->io);
}

/*
 * Body bytes: DATA (copied) or, when DATA is NULL, the whole of BUF
 * (moved, not copied), framed as one chunk when the response is chunked.
 */
static void
hs_body(struct hs_conn *c, const void *data, struct evbuffer *buf, size_t len)
{
	struct evbuffer *out = c->io.out;
	char size[24];

	if (len == 0 || c->out_failed)
		return;
	if (c->req != NULL)
		c->req->bytes_out += len;
	if (c->chunked_out) {
		struct ig_fmt f = IG_FMT_INIT(size, sizeof(size));

		ig_fmt_hex(&f, len);
		ig_fmt_lit(&f, "\r\n");
		evbuffer_add(out, size, f.len);
	}
	if (data != NULL)
		evbuffer_add(out, data, len);
	else
		evbuffer_add_buffer(out, buf);
	if (c->chunked_out)
		evbuffer_add(out, "\r\n", 2);
	io_schedule_flush(&c->io);
}

void
hs_response_body(struct hs_conn *c, const void *data, size_t len)
{
	hs_body(c, data, NULL, len);
}

/* Moves a whole buffer to the output without copying it. */
void
hs_response_body_buffer(struct hs_conn *c, struct evbuffer *buf)
{
	hs_body(c, NULL, buf, evbuffer_get_length(buf));
}

/*
 * The response is complete. The request is freed here (and logged): the
 * caller must not touch it afterwards. The next pipelined request, if
 * any, is parsed from the event loop, never from inside this call.
 */
void
hs_response_end(struct hs_conn *c)
{
	struct ig_request *r = c->req;

	if (c->chunked_out && !c->out_failed)
		evbuffer_add(c->io.out, "0\r\n\r\n", 5);
	c->chunked_out = false;
	c->req = NULL;
	if (r != NULL) {
		r->conn = NULL;
		if (r->outcome == NULL)
			r->outcome = "ok";
		proxy_request_free(r);
	}
	io_schedule_flush(&c->io);
	if (!c->keep_alive) {
		c->state = HS_CLOSING;	/* closed once flushed (hs_on_drain) */
		return;
	}
	c->state = HS_IDLE;
	hs_request_reset(c);
	io_pause_read(&c->io, false);
	if (evbuffer_get_length(c->io.in) > 0) {
		if (!c->feeding)
			io_schedule_read(&c->io);
	} else {
		struct ig_snapshot *snap = snapshot_current();

		hs_timer_arm(c, snap->conf->limits.keepalive_timeout_ms);
		snapshot_unref(snap);
	}
}

/* The response broke after it started: close without a clean end. */
void
hs_response_abort(struct hs_conn *c)
{
	struct ig_request *r = c->req;

	c->req = NULL;
	c->keep_alive = false;
	c->chunked_out = false;
	if (r != NULL) {
		r->conn = NULL;
		proxy_request_free(r);
	}
	c->state = HS_CLOSING;
	io_schedule_flush(&c->io);
}

bool
hs_output_full(struct hs_conn *c)
{
	return evbuffer_get_length(c->io.out) > HS_OUT_HIGH;
}

/*
 * Refuses the request being received with an OpenAI error and closes the
 * connection after it (the request stream can no longer be trusted),
 * except for refusals decided at the end of a well-framed request.
 */
static void
hs_refuse(struct hs_conn *c, int status, const char *code, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (c->state != HS_BUSY)	/* not at a message boundary */
		c->keep_alive = false;
	c->state = HS_BUSY;
	hs_tq_unlink(c);
	WSTAT_ADD(c->w, ST_BAD_REQUESTS, 1);
	if (c->req == NULL) {	/* no memory even for the request */
		c->keep_alive = false;
		c->state = HS_CLOSING;
		io_schedule_flush(&c->io);
		return;
	}
	c->req->outcome = "refused";
	c->req->logged = true;	/* also when refused before its dispatch */
	c->req->allow = status == 405 ? c->allow : NULL;
	proxy_send_error(c->req, status, status >= 500 ? "server_error" :
	    "invalid_request_error", code, NULL, "%s", msg);
}
