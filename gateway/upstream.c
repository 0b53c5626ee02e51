/*
 * The upstream side: HTTP/1.1 connections to backends, kept alive in a
 * pool per worker per backend address (so that pooled connections
 * survive a reload that keeps the backend), responses parsed with
 * llhttp and handed to the request's up_events.
 *
 * A connection is either busy (c->req set) or idle in its backend's list.
 * An idle connection keeps reading: any byte or EOF from the backend
 * means it is no longer usable, and it is closed at once rather than
 * handed to the next request. A connection is freed only through
 * up_conn_free(); inside a parser callback it is marked dead and freed
 * when the parser returns (hiredis's REDIS_IN_CALLBACK).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <llhttp.h>
#include <openssl/ssl.h>

#include "infergate/log.h"
#include "gateway.h"

#define UP_MAX_HEADERS		100
#define UP_HEADER_BYTES		(32 * 1024)
/* A response head, counted whole (line ends, whitespace: what llhttp does
 * not bound), past this is refused, as http-parser's limit did. */
#define UP_HEAD_MAX		(2 * 1024 * 1024)
#define UP_IDLE_TIMEOUT		60	/* seconds an idle connection is kept */

struct up_backend;

struct up_conn {
	struct ig_io	 io;
	struct up_backend *home;
	struct ig_request *req;		/* NULL when idle */
	const struct up_events *ev;
	llhttp_t	 parser;
	TAILQ_ENTRY(up_conn) entry;
	struct event	*timer;		/* the phase deadline, lazily re-armed */
	uint64_t	 deadline;	/* now_ns(); 0: none */
	uint64_t	 timer_at;	/* when the timer fires; 0: not armed */
	uint64_t	 idle_ms;	/* between response bytes */
	uint64_t	 first_byte_ms;
	uint64_t	 connect_ms;
	size_t		 keep_max;	/* the pool's keepalive_connections */
	size_t		 req_len;	/* the request's bytes, queued by up_start */
	bool		 connected;
	bool		 got_bytes;	/* any byte of a response */
	bool		 headers_done;
	bool		 complete;
	bool		 trailing;	/* bytes after the response */
	bool		 in_cb;
	bool		 dead;
	bool		 in_value;
	size_t		 nhdrs;
	size_t		 hdr_used;
	size_t		 head_bytes;	/* fed before the head was complete */
	/* Only while a response head is parsed (not for the life of a
	 * stream or of an idle connection): see up_hdr_release(). */
	struct ig_header *hdrs;		/* UP_MAX_HEADERS */
	char		*hdrbuf;	/* UP_HEADER_BYTES */
};

TAILQ_HEAD(up_conn_list, up_conn);

/*
 * A backend address's connections on this worker: made on first use,
 * freed with its last connection, so that the list stays as short as the
 * addresses in use (DNS backends come and go with their pods).
 */
struct up_backend {
	char		 name[512];	/* the key: up_open */
	struct up_conn_list idle;
	size_t		 nidle;
	size_t		 nconns;	/* idle or in use */
	LIST_ENTRY(up_backend) entry;
	struct up_pool	*pool;
};

struct up_pool {
	struct ig_worker *w;
	LIST_HEAD(, up_backend) backends;
};

static const llhttp_settings_t up_settings;

static const struct io_handlers up_io;

/* A fresh response parser (a new connection, or one going back idle). */
static void
up_parser_init(struct up_conn *c)
{
	llhttp_init(&c->parser, HTTP_RESPONSE, &up_settings);
	/* Any digit.digit version, as http-parser took it; framing stays
	 * strict. llhttp 8.1 has the flag but not its setter. */
	c->parser.lenient_flags |= LENIENT_VERSION;
	c->parser.data = c;
}

struct up_pool *
up_pools_create(struct ig_worker *w)
{
	struct up_pool *p = calloc(1, sizeof(*p));

	if (p != NULL) {
		p->w = w;
		LIST_INIT(&p->backends);
	}
	return p;
}

/* Frees B once it has no connection left. */
static void
up_backend_unused(struct up_backend *b)
{
	if (b->nconns > 0)	/* the idle ones included */
		return;
	LIST_REMOVE(b, entry);
	free(b);
}

#define UP_HDR_BLOCK	(UP_MAX_HEADERS * sizeof(struct ig_header) + \
			    UP_HEADER_BYTES)

static void
up_hdr_release(struct up_conn *c)
{
	worker_block_put(c->io.w, WB_UPHDR, c->hdrs, UP_HDR_BLOCK);
	c->hdrs = NULL;
	c->hdrbuf = NULL;
}

/* The one teardown of a connection; deferred while its parser runs. */
static void
up_conn_free(struct up_conn *c)
{
	if (c->in_cb) {
		c->dead = true;
		return;
	}
	up_hdr_release(c);
	if (c->req == NULL && c->home != NULL && c->entry.tqe_prev != NULL) {
		TAILQ_REMOVE(&c->home->idle, c, entry);
		c->home->nidle--;
	}
	if (c->timer != NULL)
		event_free(c->timer);
	io_release(&c->io);
	if (c->home != NULL) {
		c->home->nconns--;
		up_backend_unused(c->home);
	}
	free(c);
}

void
up_pools_free(struct up_pool *p)
{
	struct up_backend *b;
	struct up_conn *c;

	if (p == NULL)
		return;
	while ((b = LIST_FIRST(&p->backends)) != NULL) {
		while ((c = TAILQ_FIRST(&b->idle)) != NULL) {
			TAILQ_REMOVE(&b->idle, c, entry);
			c->home = NULL;
			up_conn_free(c);
		}
		LIST_REMOVE(b, entry);
		free(b);
	}
	free(p);
}

static struct up_backend *
up_backend_get(struct up_pool *p, const char *name)
{
	struct up_backend *b;

	LIST_FOREACH(b, &p->backends, entry)
		if (strcmp(b->name, name) == 0)
			return b;
	if ((b = calloc(1, sizeof(*b))) == NULL)
		return NULL;
	snprintf(b->name, sizeof(b->name), "%s", name);
	TAILQ_INIT(&b->idle);
	b->pool = p;
	LIST_INSERT_HEAD(&p->backends, b, entry);
	return b;
}

/* Arms the timer for c->deadline unless it already fires by then. */
static void
up_timer_arm(struct up_conn *c)
{
	struct timeval tv;
	uint64_t now, d;

	if (c->deadline == 0 || (c->timer_at != 0 && c->timer_at <= c->deadline))
		return;
	now = now_ns();
	d = c->deadline > now ? c->deadline - now : 0;
	tv.tv_sec = d / 1000000000ULL;
	tv.tv_usec = (d % 1000000000ULL) / 1000 + 1;
	c->timer_at = c->deadline;
	evtimer_add(c->timer, &tv);
}

/*
 * Sets the phase deadline MS from now (0: none), or the request's own
 * deadline when that comes first. The timer is re-armed only when the
 * deadline moves earlier than it fires: a deadline pushed back by every
 * read (idle) costs no timer operation; the timer finds it moved when it
 * fires and waits for the rest.
 */
static void
up_deadline(struct up_conn *c, uint64_t ms)
{
	struct ig_request *r = c->req;

	c->deadline = ms ? now_ns() + ms * 1000000ULL : 0;
	if (r != NULL && r->deadline_ns != 0 &&
	    (c->deadline == 0 || r->deadline_ns < c->deadline))
		c->deadline = r->deadline_ns;
	up_timer_arm(c);
}

/* Detaches the request from its connection: neither refers to the other. */
static struct ig_request *
up_detach(struct up_conn *c)
{
	struct ig_request *r = c->req;

	if (r != NULL)
		r->up = NULL;
	c->req = NULL;
	return r;
}

/* Puts a finished connection back in its backend's idle list, or closes it. */
static void
up_release(struct up_conn *c, bool reusable)
{
	/* A reply that came before the whole request was written leaves the
	 * connection mid-request: it is closed, never pooled. */
	if (!reusable || c->trailing || c->home->nidle >= c->keep_max ||
	    evbuffer_get_length(c->io.in) > 0 || io_output_pending(&c->io) ||
	    c->home->pool->w->stopping) {
		up_conn_free(c);
		return;
	}
	up_parser_init(c);
	c->ev = NULL;
	up_deadline(c, UP_IDLE_TIMEOUT * 1000);
	TAILQ_INSERT_HEAD(&c->home->idle, c, entry);
	c->home->nidle++;
}

/*
 * Ends the request's use of the connection and reports to the proxy:
 * complete (the connection goes back to the pool when the response
 * allows) or an error (the connection is closed). The report is the last
 * thing done: the proxy may free the request in it.
 */
static void
up_finish(struct up_conn *c, const char *errstr, bool timeout)
{
	const struct up_events *ev = c->ev;
	bool before = !c->got_bytes;
	/* a byte of the request left for the backend: it may be at work */
	bool sent = evbuffer_get_length(c->io.out) < c->req_len;
	struct ig_request *r = up_detach(c);

	if (errstr == NULL) {
		bool keep = llhttp_should_keep_alive(&c->parser);

		up_release(c, keep);
		if (r != NULL)
			ev->on_complete(r);
		return;
	}
	up_conn_free(c);
	if (r != NULL)
		ev->on_error(r, errstr, timeout, before, sent);
}

static void
up_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct up_conn *c = arg;
	struct ig_request *r = c->req;
	uint64_t now = now_ns();

	c->timer_at = 0;
	if (c->deadline == 0)
		return;
	if (now < c->deadline) {	/* moved back since: wait for the rest */
		up_timer_arm(c);
		return;
	}
	if (r == NULL) {		/* idle in the pool for too long */
		up_conn_free(c);
		return;
	}
	up_finish(c, r->deadline_ns != 0 && now >= r->deadline_ns ?
	    "request deadline exceeded" : !c->connected ? "connect timeout" :
	    !c->headers_done ? "no response in time" :
	    "backend idle for too long", true);
}

static int
up_on_message_begin(llhttp_t *p)
{
	struct up_conn *c = p->data;

	c->nhdrs = c->hdr_used = 0;
	c->in_value = false;
	if (c->hdrs == NULL) {
		c->hdrs = worker_block_get(c->io.w, WB_UPHDR, UP_HDR_BLOCK);
		if (c->hdrs == NULL)
			return -1;
		c->hdrbuf = (char *)(c->hdrs + UP_MAX_HEADERS);
	}
	return 0;
}

static int
up_hdr_add(struct up_conn *c, const char *at, size_t len)
{
	if (c->hdr_used + len > UP_HEADER_BYTES)
		return -1;
	memcpy(c->hdrbuf + c->hdr_used, at, len);
	c->hdr_used += len;
	return 0;
}

static int
up_on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct up_conn *c = p->data;

	if (c->headers_done)	/* a chunked body's trailer: not passed on */
		return 0;
	if (c->nhdrs == 0 || c->in_value) {
		if (c->nhdrs == UP_MAX_HEADERS)
			return -1;
		c->hdrs[c->nhdrs].name = c->hdrbuf + c->hdr_used;
		c->hdrs[c->nhdrs].namelen = 0;
		c->hdrs[c->nhdrs].value = c->hdrbuf + c->hdr_used;
		c->hdrs[c->nhdrs].valuelen = 0;
		c->nhdrs++;
		c->in_value = false;
	}
	c->hdrs[c->nhdrs - 1].namelen += len;
	return up_hdr_add(c, at, len);
}

static int
up_on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct up_conn *c = p->data;
	struct ig_header *h;

	if (c->headers_done)	/* a trailer; c->hdrs is released */
		return 0;
	h = &c->hdrs[c->nhdrs - 1];
	if (!c->in_value) {
		if (h->namelen == 0)	/* llhttp passes ": v" as a header */
			return -1;
		h->value = c->hdrbuf + c->hdr_used;
		c->in_value = true;
	}
	h->valuelen += len;
	return up_hdr_add(c, at, len);
}

static int
up_on_headers_complete(llhttp_t *p)
{
	struct up_conn *c = p->data;

	if (p->status_code < 200)	/* 1xx: the real response follows */
		return 0;
	c->headers_done = true;
	/* From now on the backend may pause between chunks, up to idle. */
	up_deadline(c, c->idle_ms);
	if (c->req != NULL)
		c->ev->on_headers(c->req, p->status_code, c->hdrs, c->nhdrs);
	up_hdr_release(c);	/* the proxy keeps what it needs */
	return c->req == NULL || c->dead ? -1 : 0;
}

static int
up_on_body(llhttp_t *p, const char *at, size_t len)
{
	struct up_conn *c = p->data;

	if (c->req != NULL)
		c->ev->on_body(c->req, at, len);
	return c->req == NULL || c->dead ? -1 : 0;
}

static int
up_on_message_complete(llhttp_t *p)
{
	struct up_conn *c = p->data;

	if (!c->headers_done)	/* end of a 1xx */
		return 0;
	c->complete = true;
	return HPE_PAUSED;	/* up_feed finishes the request */
}

static const llhttp_settings_t up_settings = {
	.on_message_begin = up_on_message_begin,
	.on_header_field = up_on_header_field,
	.on_header_value = up_on_header_value,
	.on_headers_complete = up_on_headers_complete,
	.on_body = up_on_body,
	.on_message_complete = up_on_message_complete,
};

/* Runs the parser over `len` bytes; *nparsed: how many it took. */
static llhttp_errno_t
up_parse(struct up_conn *c, const char *data, size_t len, size_t *nparsed)
{
	llhttp_errno_t e;

	c->in_cb = true;
	e = llhttp_execute(&c->parser, data, len);
	c->in_cb = false;
	*nparsed = e == HPE_OK ? len :
	    (size_t)(llhttp_get_error_pos(&c->parser) - data);
	return e;
}

/* The backend closed: a body delimited by the close ends here. */
static llhttp_errno_t
up_parse_eof(struct up_conn *c)
{
	llhttp_errno_t e;

	c->in_cb = true;
	e = llhttp_finish(&c->parser);
	c->in_cb = false;
	return e;
}

/*
 * Parses response bytes. Returns -1 when the connection is gone (freed,
 * or finished and pooled: either way the caller must not touch it).
 */
static int
up_feed(struct up_conn *c, const char *data, size_t len, size_t *used)
{
	llhttp_errno_t e;

	e = up_parse(c, data, len, used);
	if (c->dead) {
		up_conn_free(c);
		return -1;
	}
	if (e != HPE_OK && e != HPE_PAUSED) {
		up_finish(c, c->req == NULL ? "cancelled" :
		    llhttp_get_error_reason(&c->parser), false);
		return -1;
	}
	if (!c->headers_done && (c->head_bytes += *used) > UP_HEAD_MAX) {
		up_finish(c, "response header section too large", false);
		return -1;
	}
	if (c->complete) {
		c->trailing = *used < len;	/* bytes after the reply */
		up_finish(c, NULL, false);
		return -1;
	}
	return 0;
}

static int
up_on_read(struct ig_io *io, void *arg, const char *data, size_t len)
{
	struct up_conn *c = arg;
	struct evbuffer_iovec v;
	size_t n;

	if (c->req == NULL) {
		/* A backend that speaks while idle has nothing we want to hear. */
		up_conn_free(c);
		return -1;
	}
	c->got_bytes = true;
	if (c->headers_done)
		up_deadline(c, c->idle_ms);
	if (data != NULL) {
		if (up_feed(c, data, len, &n) == -1)
			return -1;
		io_consumed(io, n);
		return 0;
	}
	while (evbuffer_peek(io->in, -1, NULL, &v, 1) > 0) {
		if (up_feed(c, v.iov_base, v.iov_len, &n) == -1)
			return -1;
		evbuffer_drain(io->in, n);
	}
	return 0;
}

static int
up_on_event(struct ig_io *io, void *arg, int what)
{
	struct up_conn *c = arg;
	llhttp_errno_t e;

	if (what == IO_CONNECTED) {
		c->connected = true;	/* TCP_NODELAY was set before connect() */
		if (c->req != NULL)
			up_deadline(c, c->first_byte_ms);
		return 0;
	}
	if (c->req == NULL) {
		up_conn_free(c);
		return -1;
	}
	if (what == IO_EOF && c->headers_done && !c->complete) {
		/* A body delimited by the close of the connection ends here
		 * (its on_message_complete pauses: HPE_PAUSED). */
		e = up_parse_eof(c);
		if ((e == HPE_OK || e == HPE_PAUSED) && c->complete &&
		    !c->dead) {
			up_finish(c, NULL, false);
			return -1;
		}
	}
	if (what == IO_TIMEOUT)
		up_finish(c, !c->connected ? "connect timeout" :
		    "backend not reading the request", true);
	else if (what == IO_CONNECT_FAILED || !c->connected)
		up_finish(c, "connection refused", false);
	else
		up_finish(c, what == IO_EOF ? "backend closed the connection" :
		    "connection reset", false);
	return -1;
}

static const struct io_handlers up_io = {
	.on_read = up_on_read,
	.on_drain = NULL,	/* the request is written whole, then read */
	.on_event = up_on_event,
};

/* A new connection to BE, connecting. NULL when refused at once. */
static struct up_conn *
up_connect(struct ig_worker *w, struct up_backend *home,
    const struct ig_backend *be, struct ssl_ctx_st *tls,
    const struct ig_pool_conf *pc)
{
	struct up_conn *c;
	SSL *ssl = NULL;
	int fd, rc, one = 1;

	fd = socket(be->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1)
		return NULL;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	rc = connect(fd, (const struct sockaddr *)&be->addr, be->addrlen);
	if (rc == -1 && errno != EINPROGRESS)
		goto fail;
	if (tls != NULL) {
		if ((ssl = tls_client_ssl(tls, pc, be)) == NULL ||
		    SSL_set_fd(ssl, fd) != 1)
			goto fail;
		SSL_set_connect_state(ssl);
		SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
		    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		errno = ENOMEM;
		goto fail;
	}
	if ((c->timer = evtimer_new(w->base, up_timer_cb, c)) == NULL ||
	    io_init(&c->io, w, fd, ssl, rc == -1, &up_io, c) == -1) {
		if (c->timer != NULL)
			event_free(c->timer);
		free(c);
		errno = ENOMEM;
		goto fail;
	}
	c->home = home;
	home->nconns++;
	c->connected = rc == 0;
	up_parser_init(c);
	return c;
fail:
	rc = errno;	/* the caller tells a local shortage by it */
	SSL_free(ssl);
	close(fd);
	errno = rc;
	return NULL;
}

/*
 * Takes the most recently used idle connection to BE, or starts a new
 * one, for R, and returns the buffer the request is to be written into;
 * up_start() sends it. Returns NULL when no connection could even be
 * started (refused at once).
 */
struct evbuffer *
up_open(struct ig_request *r, struct ig_backend *be,
    const struct ig_pool_conf *pc, const struct up_events *ev)
{
	struct ig_worker *w = r->worker;
	struct up_backend *home;
	struct up_conn *c;
	struct ssl_ctx_st *tls = r->btls;
	char key[512];

	/* A failure before a connection is in hand is not the keep-alive
	 * race of a pooled one (proxy_on_error retries that at once). */
	r->up_reused = false;
	/* TLS and plain connections to one address are different pools, and
	 * TLS ones for different names (SNI, the certificate checked) or
	 * trust (a reload that changes the CA does not reuse connections
	 * the old one verified). */
	if (tls != NULL) {
		snprintf(key, sizeof(key), "tls:%016llx:%s@%s",
		    (unsigned long long)r->btls_fp, be->name,
		    pc->tls_server_name ? pc->tls_server_name : be->host);
		home = up_backend_get(w->upstreams, key);
	} else
		home = up_backend_get(w->upstreams, be->name);
	if (home == NULL)
		return NULL;
	if ((c = TAILQ_FIRST(&home->idle)) != NULL) {
		TAILQ_REMOVE(&home->idle, c, entry);
		home->nidle--;
		c->entry.tqe_prev = NULL;
		r->up_reused = true;
		WSTAT_ADD(w, ST_UP_REUSE, 1);
	} else {
		if ((c = up_connect(w, home, be, tls, pc)) == NULL) {
			up_backend_unused(home);
			return NULL;
		}
		WSTAT_ADD(w, ST_UP_CONNECT, 1);
	}
	c->req = r;
	c->ev = ev;
	c->keep_max = pc->keepalive_connections;
	c->idle_ms = pc->idle_timeout_ms;
	c->first_byte_ms = pc->first_byte_timeout_ms;
	c->connect_ms = pc->connect_timeout_ms;
	c->got_bytes = c->headers_done = c->complete = c->trailing = false;
	c->head_bytes = 0;
	r->up = c;
	return c->io.out;
}

/*
 * Sends what was written into up_open()'s buffer: connect and send within
 * the connect timeout; the response head within first_byte; then at most
 * idle between response bytes.
 */
void
up_start(struct ig_request *r)
{
	struct up_conn *c = r->up;

	c->req_len = evbuffer_get_length(c->io.out);
	up_deadline(c, c->connected ? c->first_byte_ms : c->connect_ms);
	io_schedule_flush(&c->io);
}

/* The request no longer wants the response: close, never pool. */
void
up_cancel(struct ig_request *r)
{
	struct up_conn *c = r->up;

	if (c == NULL)
		return;
	up_detach(c);
	up_conn_free(c);
}

/*
 * Backpressure from a slow client. While the response's reads are paused
 * the backend is not idle, we are: the idle timeout waits (the request's
 * deadline still runs, and the client's send timeout bounds a client
 * that never reads again), and starts over on resume, as nginx drops its
 * upstream read timer while the client blocks.
 */
void
up_pause(struct ig_request *r, bool paused)
{
	struct up_conn *c = r->up;

	if (c == NULL)
		return;
	io_pause_read(&c->io, paused);
	if (c->headers_done && !c->complete)
		up_deadline(c, paused ? 0 : c->idle_ms);
}
