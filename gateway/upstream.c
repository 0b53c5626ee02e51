/*
 * The upstream side: HTTP/1.1 connections to backends, kept alive in a
 * pool per worker per backend address (so that pooled connections
 * survive a reload that keeps the backend), responses parsed with
 * http-parser and handed to the request's up_events.
 *
 * A connection is either busy (c->req set) or idle in its backend's list.
 * An idle connection keeps reading: any byte or EOF from the backend
 * means it is no longer usable, and it is closed at once rather than
 * handed to the next request. A connection is freed only through
 * up_conn_free(); inside a parser callback it is marked dead and freed
 * when the parser returns (hiredis's REDIS_IN_CALLBACK).
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <http_parser.h>
#include <openssl/ssl.h>

#include "infergate/log.h"
#include "gateway.h"

#define UP_MAX_HEADERS		100
#define UP_HEADER_BYTES		(32 * 1024)
#define UP_IDLE_TIMEOUT		60	/* seconds an idle connection is kept */

struct up_backend;

struct up_conn {
	struct up_backend *home;
	struct bufferevent *bev;
	struct ig_request *req;		/* NULL when idle */
	const struct up_events *ev;
	http_parser	 parser;
	TAILQ_ENTRY(up_conn) entry;
	uint64_t	 idle_ms;	/* first_byte, then idle timeout */
	size_t		 keep_max;	/* the pool's keepalive_connections */
	bool		 connected;
	bool		 got_bytes;	/* any byte of a response */
	bool		 headers_done;
	bool		 complete;
	bool		 in_cb;
	bool		 dead;
	bool		 in_value;
	size_t		 nhdrs;
	size_t		 hdr_used;
	/* Only while a response head is parsed (not for the life of a
	 * stream or of an idle connection): see up_hdr_release(). */
	struct ig_header *hdrs;		/* UP_MAX_HEADERS */
	char		*hdrbuf;	/* UP_HEADER_BYTES */
};

TAILQ_HEAD(up_conn_list, up_conn);

struct up_backend {
	char		 name[176];
	struct up_conn_list idle;
	size_t		 nidle;
	struct up_backend *next;
	struct up_pool	*pool;
};

struct up_pool {
	struct ig_worker *w;
	struct up_backend *backends;
};

static const http_parser_settings up_settings;

struct up_pool *
up_pools_create(struct ig_worker *w)
{
	struct up_pool *p = calloc(1, sizeof(*p));

	if (p != NULL)
		p->w = w;
	return p;
}

static void
up_hdr_release(struct up_conn *c)
{
	free(c->hdrs);
	c->hdrs = NULL;
	c->hdrbuf = NULL;
}

static void
up_conn_free(struct up_conn *c)
{
	if (c->in_cb) {
		c->dead = true;
		return;
	}
	up_hdr_release(c);
	if (c->req == NULL && c->home != NULL && c->connected &&
	    c->entry.tqe_prev != NULL) {
		TAILQ_REMOVE(&c->home->idle, c, entry);
		c->home->nidle--;
	}
	bufferevent_free(c->bev);
	free(c);
}

void
up_pools_free(struct up_pool *p)
{
	struct up_backend *b, *next;
	struct up_conn *c;

	if (p == NULL)
		return;
	for (b = p->backends; b != NULL; b = next) {
		next = b->next;
		while ((c = TAILQ_FIRST(&b->idle)) != NULL)
			up_conn_free(c);
		free(b);
	}
	free(p);
}

static struct up_backend *
up_backend_get(struct up_pool *p, const char *name)
{
	struct up_backend *b;

	for (b = p->backends; b != NULL; b = b->next)
		if (strcmp(b->name, name) == 0)
			return b;
	if ((b = calloc(1, sizeof(*b))) == NULL)
		return NULL;
	snprintf(b->name, sizeof(b->name), "%s", name);
	TAILQ_INIT(&b->idle);
	b->pool = p;
	b->next = p->backends;
	p->backends = b;
	return b;
}

static void
up_set_read_timeout(struct up_conn *c, uint64_t ms, uint64_t write_ms)
{
	struct timeval rt = { ms / 1000, (ms % 1000) * 1000 };
	struct timeval wt = { write_ms / 1000, (write_ms % 1000) * 1000 };

	bufferevent_set_timeouts(c->bev, ms ? &rt : NULL, write_ms ? &wt : NULL);
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

static void
up_idle_event_cb(struct bufferevent *bev, short what, void *arg)
{
	up_conn_free(arg);
}

static void
up_idle_read_cb(struct bufferevent *bev, void *arg)
{
	/* A backend that speaks while idle has nothing we want to hear. */
	up_conn_free(arg);
}

/* Puts a finished connection back in its backend's idle list, or closes it. */
static void
up_release(struct up_conn *c, bool reusable)
{
	struct timeval tv = { UP_IDLE_TIMEOUT, 0 };

	if (!reusable || c->home->nidle >= c->keep_max ||
	    evbuffer_get_length(bufferevent_get_input(c->bev)) > 0 ||
	    c->home->pool->w->stopping) {
		up_conn_free(c);
		return;
	}
	http_parser_init(&c->parser, HTTP_RESPONSE);
	c->parser.data = c;
	c->ev = NULL;
	bufferevent_setcb(c->bev, up_idle_read_cb, NULL, up_idle_event_cb, c);
	bufferevent_set_timeouts(c->bev, &tv, NULL);
	bufferevent_enable(c->bev, EV_READ);
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
	struct ig_request *r = up_detach(c);

	if (errstr == NULL) {
		bool keep = http_should_keep_alive(&c->parser);

		up_release(c, keep);
		if (r != NULL)
			ev->on_complete(r);
		return;
	}
	up_conn_free(c);
	if (r != NULL)
		ev->on_error(r, errstr, timeout, before);
}

static int
up_on_message_begin(http_parser *p)
{
	struct up_conn *c = p->data;

	c->nhdrs = c->hdr_used = 0;
	c->in_value = false;
	if (c->hdrs == NULL) {
		c->hdrs = malloc(UP_MAX_HEADERS * sizeof(*c->hdrs) +
		    UP_HEADER_BYTES);
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
up_on_header_field(http_parser *p, const char *at, size_t len)
{
	struct up_conn *c = p->data;

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
up_on_header_value(http_parser *p, const char *at, size_t len)
{
	struct up_conn *c = p->data;
	struct ig_header *h = &c->hdrs[c->nhdrs - 1];

	if (!c->in_value) {
		h->value = c->hdrbuf + c->hdr_used;
		c->in_value = true;
	}
	h->valuelen += len;
	return up_hdr_add(c, at, len);
}

static int
up_on_headers_complete(http_parser *p)
{
	struct up_conn *c = p->data;

	if (p->status_code < 200)	/* 1xx: the real response follows */
		return 0;
	c->headers_done = true;
	/* From now on the backend may pause between chunks, up to idle. */
	up_set_read_timeout(c, c->idle_ms, 0);
	if (c->req != NULL)
		c->ev->on_headers(c->req, p->status_code, c->hdrs, c->nhdrs);
	up_hdr_release(c);	/* the proxy keeps what it needs */
	return c->req == NULL || c->dead ? -1 : 0;
}

static int
up_on_body(http_parser *p, const char *at, size_t len)
{
	struct up_conn *c = p->data;

	if (c->req != NULL)
		c->ev->on_body(c->req, at, len);
	return c->req == NULL || c->dead ? -1 : 0;
}

static int
up_on_message_complete(http_parser *p)
{
	struct up_conn *c = p->data;

	if (!c->headers_done)	/* end of a 1xx */
		return 0;
	c->complete = true;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings up_settings = {
	.on_message_begin = up_on_message_begin,
	.on_header_field = up_on_header_field,
	.on_header_value = up_on_header_value,
	.on_headers_complete = up_on_headers_complete,
	.on_body = up_on_body,
	.on_message_complete = up_on_message_complete,
};

/* Runs the parser over `len` bytes (len 0: the backend closed). */
static enum http_errno
up_parse(struct up_conn *c, const char *data, size_t len, size_t *nparsed)
{
	c->in_cb = true;
	*nparsed = http_parser_execute(&c->parser, &up_settings, data, len);
	c->in_cb = false;
	return HTTP_PARSER_ERRNO(&c->parser);
}

static void
up_read_cb(struct bufferevent *bev, void *arg)
{
	struct up_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_iovec v;
	enum http_errno e;
	size_t n;

	c->got_bytes = true;
	while (!c->complete && evbuffer_peek(in, -1, NULL, &v, 1) > 0) {
		e = up_parse(c, v.iov_base, v.iov_len, &n);
		evbuffer_drain(in, n);
		if (c->dead) {
			up_conn_free(c);
			return;
		}
		if (e == HPE_PAUSED)
			break;
		if (e != HPE_OK) {
			up_finish(c, c->req == NULL ? "cancelled" :
			    http_errno_description(e), false);
			return;
		}
	}
	if (c->complete)	/* bytes after the reply: up_release closes */
		up_finish(c, NULL, false);
}

static void
up_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct up_conn *c = arg;
	size_t n;
	int one = 1;

	if (what & BEV_EVENT_CONNECTED) {
		c->connected = true;
		setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY,
		    &one, sizeof(one));
		return;
	}
	if ((what & BEV_EVENT_EOF) && c->headers_done && !c->complete) {
		/* A body delimited by the close of the connection ends here. */
		if (up_parse(c, NULL, 0, &n) == HPE_OK && c->complete) {
			up_finish(c, NULL, false);
			return;
		}
	}
	if (what & BEV_EVENT_TIMEOUT)
		up_finish(c, !c->connected ? "connect timeout" :
		    !c->headers_done ? "no response in time" :
		    "backend idle for too long", true);
	else if (!c->connected)
		up_finish(c, "connection refused", false);
	else
		up_finish(c, (what & BEV_EVENT_EOF) ? "backend closed the connection"
		    : "connection reset", false);
}

/*
 * Sends `buf` (request head and body, consumed) to the backend: on the
 * most recently used idle connection when there is one, else on a new
 * connection. Returns -1 when no connection could even be started.
 */
int
up_send(struct ig_request *r, struct ig_backend *be,
    const struct ig_pool_conf *pc, struct evbuffer *buf,
    const struct up_events *ev)
{
	struct ig_worker *w = r->worker;
	struct up_backend *home;
	struct up_conn *c;

	struct ssl_ctx_st *tls = r->snap->pool_tls[r->model->pool->index];
	char key[176];

	/* TLS and plain connections to one address are different pools. */
	snprintf(key, sizeof(key), "%s%s", tls ? "tls:" : "", be->name);
	if ((home = up_backend_get(w->upstreams, key)) == NULL)
		return -1;
	if ((c = TAILQ_FIRST(&home->idle)) != NULL) {
		TAILQ_REMOVE(&home->idle, c, entry);
		home->nidle--;
		c->entry.tqe_prev = NULL;
		r->up_reused = true;
		WSTAT_ADD(w, ST_UP_REUSE, 1);
	} else {
		if ((c = calloc(1, sizeof(*c))) == NULL)
			return -1;
		c->home = home;
		if (tls != NULL) {
			SSL *ssl = tls_client_ssl(tls, pc, be);

			c->bev = ssl == NULL ? NULL : bufferevent_openssl_socket_new(
			    w->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
			    BEV_OPT_CLOSE_ON_FREE);
			if (c->bev == NULL && ssl != NULL)
				SSL_free(ssl);
		} else
			c->bev = bufferevent_socket_new(w->base, -1,
			    BEV_OPT_CLOSE_ON_FREE);
		if (c->bev == NULL) {
			free(c);
			return -1;
		}
		http_parser_init(&c->parser, HTTP_RESPONSE);
		c->parser.data = c;
		r->up_reused = false;
		WSTAT_ADD(w, ST_UP_CONNECT, 1);
	}
	c->req = r;
	c->ev = ev;
	c->keep_max = pc->keepalive_connections;
	c->idle_ms = pc->idle_timeout_ms;
	c->got_bytes = c->headers_done = c->complete = false;
	r->up = c;
	bufferevent_setcb(c->bev, up_read_cb, NULL, up_event_cb, c);
	/* Connect and send within connect timeout; the reply head within
	 * first_byte; then at most idle between chunks. */
	up_set_read_timeout(c, pc->first_byte_timeout_ms,
	    c->connected ? pc->first_byte_timeout_ms : pc->connect_timeout_ms);
	bufferevent_write_buffer(c->bev, buf);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (!c->connected && bufferevent_socket_connect(c->bev,
	    (struct sockaddr *)&be->addr, be->addrlen) == -1) {
		/* Refused at once (e.g. no route): reported from the loop
		 * would be nicer, but the caller handles -1 the same way. */
		up_detach(c);
		up_conn_free(c);
		return -1;
	}
	return 0;
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

void
up_pause(struct ig_request *r, bool paused)
{
	if (r->up == NULL)
		return;
	if (paused)
		bufferevent_disable(r->up->bev, EV_READ);
	else
		bufferevent_enable(r->up->bev, EV_READ);
}
