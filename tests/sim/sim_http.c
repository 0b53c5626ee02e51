/*
 * infergate-sim: HTTP/1.1 server side (see sim_http.h).
 *
 * Each connection writes through a bufferevent with deferred callbacks,
 * so nothing here frees a connection from inside a call made by the
 * simulator: a connection is freed only at the tail of its own callbacks
 * (EOF or error on read or write, or output drained while closing) and by
 * sim_http_free(). It reads with an event of its own and recvmsg() (into
 * its own input buffer), for the receive time of each request: the
 * kernel's (SO_TIMESTAMPNS) when sim_http_rx_stamps() asked for it.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <http_parser.h>
#include <jansson.h>

#include "sim_http.h"

#define SIM_HTTP_MAX_URL	8192
#define SIM_HTTP_MAX_HEADER	16384
#define SIM_HTTP_MAX_HEADERS	128
#define SIM_HTTP_MAX_BODY	(64 * 1024 * 1024)
#define SIM_HTTP_BACKLOG	4096
#define SIM_HTTP_READ		65536		/* bytes per recvmsg() */
/* input piling up behind a busy request stops being read at this */
#define SIM_HTTP_MAX_INPUT	(SIM_HTTP_MAX_BODY + 65536)

enum conn_state {
	CONN_READING,		/* parsing the next request */
	CONN_BUSY,		/* a request is being answered */
	CONN_CLOSING,		/* flushing, then close */
};

struct strbuf {
	char	*p;
	size_t	 len;
	size_t	 cap;
};

struct sim_http_conn {
	LIST_ENTRY(sim_http_conn) entry;
	struct sim_http		*http;
	struct bufferevent	*bev;		/* writes only */
	struct event		*ev_read;
	struct evbuffer		*in;
	long long		 rx_ns;		/* the last read's receive time */
	http_parser		 parser;
	enum conn_state		 state;
	void			*arg;		/* the simulator's, per request */

	/* the request being read */
	struct strbuf		 url;
	struct strbuf		 hfield;
	struct strbuf		 hvalue;
	int			 in_value;
	json_t			*headers;
	struct evbuffer		*body;
	int			 too_large;
	int			 keepalive;
	int			 http11;
	int			 chunked;	/* response uses chunked coding */
};

struct sim_http {
	struct event_base	*base;
	struct evconnlistener	*listener;
	sim_http_request_cb	 on_request;
	sim_http_close_cb	 on_close;
	void			*arg;
	int			 rx_stamps;	/* SO_TIMESTAMPNS on accept */
	uint64_t		 connections;
	LIST_HEAD(, sim_http_conn) conns;
};

static int	on_message_begin(http_parser *);
static int	on_url(http_parser *, const char *, size_t);
static int	on_header_field(http_parser *, const char *, size_t);
static int	on_header_value(http_parser *, const char *, size_t);
static int	on_headers_complete(http_parser *);
static int	on_body(http_parser *, const char *, size_t);
static int	on_message_complete(http_parser *);

static const http_parser_settings parser_settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

static int
strbuf_add(struct strbuf *b, const char *at, size_t n, size_t limit)
{
	size_t	 cap;
	char	*p;

	if (b->len + n > limit)
		return -1;
	if (b->len + n + 1 > b->cap) {
		cap = b->cap ? b->cap : 64;
		while (cap < b->len + n + 1)
			cap *= 2;
		if ((p = realloc(b->p, cap)) == NULL)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, at, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static void
strbuf_reset(struct strbuf *b)
{
	b->len = 0;
	if (b->p != NULL)
		b->p[0] = '\0';
}

static const char *
http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Status";
	}
}

/* Forget the request just answered (or abandoned) and its parse state. */
static void
conn_reset_request(struct sim_http_conn *c)
{
	strbuf_reset(&c->url);
	strbuf_reset(&c->hfield);
	strbuf_reset(&c->hvalue);
	c->in_value = 0;
	json_object_clear(c->headers);
	evbuffer_drain(c->body, evbuffer_get_length(c->body));
	c->too_large = 0;
}

/*
 * The only place a connection is freed. A request still unanswered is handed
 * to the close callback, which owns its state from then on.
 */
static void
conn_free(struct sim_http_conn *c)
{
	struct sim_http	*h = c->http;
	void		*arg = c->arg;

	LIST_REMOVE(c, entry);
	c->arg = NULL;
	event_free(c->ev_read);
	bufferevent_free(c->bev);
	evbuffer_free(c->in);
	free(c->url.p);
	free(c->hfield.p);
	free(c->hvalue.p);
	json_decref(c->headers);
	evbuffer_free(c->body);
	free(c);
	if (arg != NULL)
		h->on_close(arg, h->arg);
}

/* Stop reading; the write callback frees the connection once flushed. */
static void
conn_close_after_flush(struct sim_http_conn *c)
{
	c->state = CONN_CLOSING;
	c->arg = NULL;
	event_del(c->ev_read);
	bufferevent_trigger(c->bev, EV_WRITE,
	    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

/* The response has ended: read the next request, or close. */
static void
conn_response_done(struct sim_http_conn *c)
{
	c->arg = NULL;
	if (!c->keepalive) {
		conn_close_after_flush(c);
		return;
	}
	c->state = CONN_READING;
	conn_reset_request(c);
	/* a pipelined request may already be waiting in the input */
	if (evbuffer_get_length(c->in) > 0)
		bufferevent_trigger(c->bev, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

/* The head of a response, into out. */
static void
conn_write_head(struct sim_http_conn *c, struct evbuffer *out, int status,
    const char *ctype, long long content_length)
{
	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nServer: infergate-sim\r\n",
	    status, http_reason(status));
	if (ctype != NULL)
		evbuffer_add_printf(out, "Content-Type: %s\r\n", ctype);
	c->chunked = 0;
	if (content_length >= 0)
		evbuffer_add_printf(out, "Content-Length: %lld\r\n",
		    content_length);
	else if (c->http11) {
		c->chunked = 1;
		evbuffer_add_printf(out, "Transfer-Encoding: chunked\r\n"
		    "Cache-Control: no-cache\r\n");
	} else
		c->keepalive = 0;	/* HTTP/1.0: the body ends at close */
	if (!c->keepalive)
		evbuffer_add_printf(out, "Connection: close\r\n");
	else if (!c->http11)
		evbuffer_add_printf(out, "Connection: keep-alive\r\n");
	evbuffer_add(out, "\r\n", 2);
}

/*
 * Write iov at once when nothing is queued before it, so that a stream event
 * leaves when it is written (and a --stamp is the time of the write), not at
 * the next turn of the loop. What the socket does not take, or everything
 * when output is queued, goes through the bufferevent; so do errors, which
 * the bufferevent then meets on its own write and reports.
 */
static void
conn_write_now(struct sim_http_conn *c, const struct iovec *iov, int n)
{
	struct evbuffer	*out = bufferevent_get_output(c->bev);
	ssize_t		 w = 0;
	size_t		 skip;
	int		 i;

	if (c->state == CONN_BUSY && evbuffer_get_length(out) == 0 &&
	    (w = writev(bufferevent_getfd(c->bev), iov, n)) == -1)
		w = 0;
	for (i = 0; i < n; i++) {
		skip = (size_t)w < iov[i].iov_len ? (size_t)w : iov[i].iov_len;
		w -= (ssize_t)skip;
		if (skip < iov[i].iov_len)
			evbuffer_add(out, (const char *)iov[i].iov_base + skip,
			    iov[i].iov_len - skip);
	}
}

/* A parse failure: a plain error, then close. */
static void
conn_fail(struct sim_http_conn *c, int status, const char *msg)
{
	size_t	 len = strlen(msg);

	c->keepalive = 0;
	c->http11 = 1;
	conn_write_head(c, bufferevent_get_output(c->bev), status, "text/plain",
	    (long long)len);
	bufferevent_write(c->bev, msg, len);
	conn_close_after_flush(c);
}

static void
conn_dispatch(struct sim_http_conn *c)
{
	struct sim_http_request	 req;
	struct sim_http		*h = c->http;

	c->state = CONN_BUSY;
	req.method = c->parser.method;
	req.url = c->url.p != NULL ? c->url.p : "";
	req.path_len = strcspn(req.url, "?");
	req.headers = c->headers;
	req.body_len = evbuffer_get_length(c->body);
	req.body = req.body_len ?
	    (const char *)evbuffer_pullup(c->body, -1) : "";
	req.rx_ns = c->rx_ns;
	h->on_request(c, &req, h->arg);
}

/* Parse what the input holds, dispatching complete requests one by one. */
static void
conn_parse(struct sim_http_conn *c)
{
	struct evbuffer		*in = c->in;
	struct evbuffer_iovec	 v;
	enum http_errno		 e;
	size_t			 n;

	while (c->state == CONN_READING) {
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
			break;
		n = http_parser_execute(&c->parser, &parser_settings,
		    v.iov_base, v.iov_len);
		e = HTTP_PARSER_ERRNO(&c->parser);
		evbuffer_drain(in, n);
		if (e == HPE_PAUSED) {
			/* on_message_complete paused after one request */
			http_parser_pause(&c->parser, 0);
			conn_dispatch(c);
		} else if (e != HPE_OK) {
			if (c->too_large)
				conn_fail(c, 413, "request too large\n");
			else
				conn_fail(c, 400, "bad request\n");
		}
	}
	/* reading was paused on a full input that has drained since */
	if (c->state != CONN_CLOSING && evbuffer_get_length(in) <
	    SIM_HTTP_MAX_INPUT && !event_pending(c->ev_read, EV_READ, NULL))
		event_add(c->ev_read, NULL);
}

/*
 * When what msg brought arrived, in CLOCK_MONOTONIC ns: the kernel's
 * receive time if the socket stamps (in CLOCK_REALTIME, shifted by the
 * clocks' offset now), else now.
 */
static long long
conn_rx_time(struct msghdr *msg)
{
	struct cmsghdr	*cm;
	struct timespec	 mono, real, ts;

	clock_gettime(CLOCK_MONOTONIC, &mono);
	for (cm = CMSG_FIRSTHDR(msg); cm != NULL; cm = CMSG_NXTHDR(msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET ||
		    cm->cmsg_type != SCM_TIMESTAMPNS)
			continue;
		memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
		clock_gettime(CLOCK_REALTIME, &real);
		return ((long long)ts.tv_sec - real.tv_sec + mono.tv_sec) *
		    1000000000LL + ts.tv_nsec - real.tv_nsec + mono.tv_nsec;
	}
	return (long long)mono.tv_sec * 1000000000LL + mono.tv_nsec;
}

/*
 * The connection is readable: one recvmsg() into the input, parsed unless a
 * request is being answered (pipelined input waits). EOF or an error frees
 * the connection; a full input pauses reading until conn_parse() drains it.
 */
static void
conn_recv_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sim_http_conn	*c = arg;
	struct evbuffer		*in = c->in;
	struct evbuffer_iovec	 v[2];
	struct iovec		 iov[2];
	struct msghdr		 msg;
	union {
		char		 buf[CMSG_SPACE(sizeof(struct timespec))];
		struct cmsghdr	 align;
	}			 cmsg;
	ssize_t			 n;
	size_t			 left;
	int			 i, nv;

	if ((nv = evbuffer_reserve_space(in, SIM_HTTP_READ, v, 2)) < 1) {
		conn_free(c);		/* out of memory */
		return;
	}
	for (i = 0; i < nv; i++) {
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len;
	}
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = iov;
	msg.msg_iovlen = (size_t)nv;
	msg.msg_control = cmsg.buf;
	msg.msg_controllen = sizeof(cmsg.buf);
	n = recvmsg(fd, &msg, MSG_DONTWAIT);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return;
	if (n <= 0) {
		conn_free(c);
		return;
	}
	c->rx_ns = conn_rx_time(&msg);
	for (i = 0, left = (size_t)n; i < nv; i++) {
		v[i].iov_len = left < v[i].iov_len ? left : v[i].iov_len;
		left -= v[i].iov_len;
	}
	evbuffer_commit_space(in, v, nv);
	if (evbuffer_get_length(in) >= SIM_HTTP_MAX_INPUT)
		event_del(c->ev_read);
	if (c->state == CONN_READING)
		conn_parse(c);
}

/* Pipelined input, once the response before it has ended (a trigger). */
static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct sim_http_conn	*c = arg;

	if (c->state == CONN_READING)
		conn_parse(c);
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct sim_http_conn	*c = arg;

	if (c->state == CONN_CLOSING &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_free(c);
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct sim_http_conn	*c = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		conn_free(c);
}

static int
conn_commit_header(struct sim_http_conn *c)
{
	json_t	*old, *v;
	char	*joined;
	size_t	 i;

	c->in_value = 0;
	for (i = 0; i < c->hfield.len; i++)
		c->hfield.p[i] = (char)tolower((unsigned char)c->hfield.p[i]);
	while (c->hvalue.len > 0 && (c->hvalue.p[c->hvalue.len - 1] == ' ' ||
	    c->hvalue.p[c->hvalue.len - 1] == '\t'))
		c->hvalue.p[--c->hvalue.len] = '\0';
	if (c->hfield.len == 0 ||
	    json_object_size(c->headers) >= SIM_HTTP_MAX_HEADERS)
		return -1;
	old = json_object_get(c->headers, c->hfield.p);
	if (old != NULL) {
		if (asprintf(&joined, "%s, %s", json_string_value(old),
		    c->hvalue.p ? c->hvalue.p : "") == -1)
			return -1;
		v = json_string(joined);
		free(joined);
	} else
		v = json_string(c->hvalue.p ? c->hvalue.p : "");
	/* a value that is not UTF-8 cannot be shown as JSON: leave it out */
	if (v != NULL)
		json_object_set_new(c->headers, c->hfield.p, v);
	strbuf_reset(&c->hfield);
	strbuf_reset(&c->hvalue);
	return 0;
}

static int
on_message_begin(http_parser *p)
{
	conn_reset_request(p->data);
	return 0;
}

static int
on_url(http_parser *p, const char *at, size_t n)
{
	struct sim_http_conn	*c = p->data;

	return strbuf_add(&c->url, at, n, SIM_HTTP_MAX_URL);
}

static int
on_header_field(http_parser *p, const char *at, size_t n)
{
	struct sim_http_conn	*c = p->data;

	if (c->in_value && conn_commit_header(c) == -1)
		return -1;
	return strbuf_add(&c->hfield, at, n, SIM_HTTP_MAX_HEADER);
}

static int
on_header_value(http_parser *p, const char *at, size_t n)
{
	struct sim_http_conn	*c = p->data;

	c->in_value = 1;
	return strbuf_add(&c->hvalue, at, n, SIM_HTTP_MAX_HEADER);
}

static int
on_headers_complete(http_parser *p)
{
	struct sim_http_conn	*c = p->data;
	const char		*expect;

	if (c->in_value && conn_commit_header(c) == -1)
		return -1;
	if (p->content_length != ULLONG_MAX &&
	    p->content_length > SIM_HTTP_MAX_BODY) {
		c->too_large = 1;
		return -1;
	}
	/* curl waits a second for this before sending a large body */
	expect = json_string_value(json_object_get(c->headers, "expect"));
	if (expect != NULL && strcasecmp(expect, "100-continue") == 0 &&
	    p->http_major == 1 && p->http_minor >= 1)
		bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	return 0;
}

static int
on_body(http_parser *p, const char *at, size_t n)
{
	struct sim_http_conn	*c = p->data;

	if (evbuffer_get_length(c->body) + n > SIM_HTTP_MAX_BODY) {
		c->too_large = 1;
		return -1;
	}
	return evbuffer_add(c->body, at, n);
}

static int
on_message_complete(http_parser *p)
{
	struct sim_http_conn	*c = p->data;

	c->keepalive = http_should_keep_alive(p);
	c->http11 = p->http_major == 1 && p->http_minor >= 1;
	http_parser_pause(p, 1);
	return 0;
}

static void
http_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int socklen, void *arg)
{
	struct sim_http		*h = arg;
	struct sim_http_conn	*c;
	int			 one = 1;

	h->connections++;
	/* each SSE event must leave as it is written, not wait for an ACK */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (h->rx_stamps)
		(void)setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one,
		    sizeof(one));
	if ((c = calloc(1, sizeof(*c))) == NULL)
		goto fail;
	c->http = h;
	c->headers = json_object();
	c->body = evbuffer_new();
	c->in = evbuffer_new();
	c->bev = bufferevent_socket_new(h->base, fd,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	c->ev_read = event_new(h->base, fd, EV_READ | EV_PERSIST, conn_recv_cb,
	    c);
	if (c->headers == NULL || c->body == NULL || c->in == NULL ||
	    c->bev == NULL || c->ev_read == NULL || event_add(c->ev_read, NULL) == -1)
		goto fail;
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	c->state = CONN_READING;
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb,
	    c);
	LIST_INSERT_HEAD(&h->conns, c, entry);
	return;
fail:
	fprintf(stderr, "infergate-sim: cannot set up a connection\n");
	if (c != NULL && c->ev_read != NULL)
		event_free(c->ev_read);
	if (c != NULL && c->bev != NULL)
		bufferevent_free(c->bev);
	else
		evutil_closesocket(fd);
	if (c != NULL) {
		json_decref(c->headers);
		if (c->body != NULL)
			evbuffer_free(c->body);
		if (c->in != NULL)
			evbuffer_free(c->in);
	}
	free(c);
}

static void
http_accept_error_cb(struct evconnlistener *l, void *arg)
{
	int	 e = EVUTIL_SOCKET_ERROR();

	/* out of descriptors: libevent retries on the next loop, say why */
	fprintf(stderr, "infergate-sim: accept: %s\n",
	    evutil_socket_error_to_string(e));
}

/*
 * Listen on sa. Returns the server, or NULL with *err set (static text).
 * The caller frees it with sim_http_free().
 */
struct sim_http *
sim_http_new(struct event_base *base, const struct sockaddr *sa, int socklen,
    sim_http_request_cb on_request, sim_http_close_cb on_close, void *arg,
    char **err)
{
	struct sim_http	*h;

	if ((h = calloc(1, sizeof(*h))) == NULL) {
		*err = "out of memory";
		return NULL;
	}
	h->base = base;
	h->on_request = on_request;
	h->on_close = on_close;
	h->arg = arg;
	LIST_INIT(&h->conns);
	h->listener = evconnlistener_new_bind(base, http_accept_cb, h,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, SIM_HTTP_BACKLOG, sa,
	    socklen);
	if (h->listener == NULL) {
		*err = strerror(errno);
		free(h);
		return NULL;
	}
	evconnlistener_set_error_cb(h->listener, http_accept_error_cb);
	return h;
}

/* Close the listener and every connection (close callbacks run). */
void
sim_http_free(struct sim_http *h)
{
	struct sim_http_conn	*c;

	if (h == NULL)
		return;
	while ((c = LIST_FIRST(&h->conns)) != NULL)
		conn_free(c);
	evconnlistener_free(h->listener);
	free(h);
}

uint64_t
sim_http_connections(const struct sim_http *h)
{
	return h->connections;
}

/*
 * On the listener too: accepted sockets inherit it, so a request that
 * arrives before the accept is stamped, and the kernel stamps packets
 * from now on (it only starts to once a socket asks).
 */
void
sim_http_rx_stamps(struct sim_http *h, int on)
{
	h->rx_stamps = on;
	(void)setsockopt(evconnlistener_get_fd(h->listener), SOL_SOCKET,
	    SO_TIMESTAMPNS, &on, sizeof(on));
}

void
sim_http_set_arg(struct sim_http_conn *c, void *conn_arg)
{
	c->arg = conn_arg;
}

void
sim_http_reply(struct sim_http_conn *c, int status, const char *ctype,
    const void *body, size_t len)
{
	conn_write_head(c, bufferevent_get_output(c->bev), status, ctype,
	    (long long)len);
	if (len > 0)
		bufferevent_write(c->bev, body, len);
	conn_response_done(c);
}

void
sim_http_reply_partial(struct sim_http_conn *c, int status, const char *ctype,
    size_t content_length, const void *body, size_t len)
{
	conn_write_head(c, bufferevent_get_output(c->bev), status, ctype,
	    (long long)content_length);
	if (len > 0)
		bufferevent_write(c->bev, body, len);
}

/*
 * The head goes out at once too, or the first event, written soon after,
 * would queue behind it (it does when the head cannot be built apart).
 */
void
sim_http_stream_start(struct sim_http_conn *c, int status, const char *ctype)
{
	struct evbuffer	*head = evbuffer_new();
	struct iovec	 iov;

	conn_write_head(c, head != NULL ? head : bufferevent_get_output(c->bev),
	    status, ctype, -1);
	if (head == NULL)
		return;
	iov.iov_len = evbuffer_get_length(head);
	iov.iov_base = evbuffer_pullup(head, -1);
	conn_write_now(c, &iov, 1);
	evbuffer_free(head);
}

void
sim_http_stream_write(struct sim_http_conn *c, const void *data, size_t len)
{
	struct iovec	 iov[3];
	char		 size[24];
	int		 n = 0;

	if (len == 0)
		return;		/* an empty chunk would end the body */
	if (c->chunked) {
		iov[n].iov_base = size;
		iov[n++].iov_len = (size_t)snprintf(size, sizeof(size),
		    "%zx\r\n", len);
	}
	iov[n].iov_base = (void *)data;
	iov[n++].iov_len = len;
	if (c->chunked) {
		iov[n].iov_base = "\r\n";
		iov[n++].iov_len = 2;
	}
	conn_write_now(c, iov, n);
}

/* The end of the body leaves at once, like the events before it. */
void
sim_http_stream_end(struct sim_http_conn *c)
{
	struct iovec	 iov = { "0\r\n\r\n", 5 };

	if (c->chunked)
		conn_write_now(c, &iov, 1);
	conn_response_done(c);
}

void
sim_http_abort(struct sim_http_conn *c)
{
	conn_close_after_flush(c);
}
