/*
 * infergate-sim: the HTTP/1.1 server side of the model-server simulator.
 *
 * One listener and the connections it accepted, on one event base. Requests
 * are parsed with http_parser and handed whole (headers and body) to the
 * request callback, one at a time per connection; pipelined requests wait in
 * the input buffer until the current response has ended. Keep-alive, chunked
 * streaming responses, and a close callback when a client goes away while its
 * request is still being answered. Stream chunks are written at once when
 * nothing is queued before them.
 */
#ifndef INFERGATE_SIM_HTTP_H
#define INFERGATE_SIM_HTTP_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct sockaddr;
struct json_t;

struct sim_http;		/* the listener and its connections */
struct sim_http_conn;		/* one accepted connection */

struct sim_http_request {
	int		 method;	/* enum http_method */
	const char	*url;		/* as sent, NUL-terminated */
	size_t		 path_len;	/* bytes of url before any '?' */
	struct json_t	*headers;	/* object: lower-cased name -> value */
	const char	*body;
	size_t		 body_len;
	long long	 rx_ns;		/* CLOCK_MONOTONIC ns: see below */
};

/*
 * A complete request arrived. The request and everything it points to are
 * only valid for the duration of the callback (copy the headers object to
 * keep it: it is cleared for the next request). The callback answers at once with sim_http_reply(), or later: it
 * then ties its own state to the connection with sim_http_set_arg().
 */
typedef void	(*sim_http_request_cb)(struct sim_http_conn *,
		    const struct sim_http_request *, void *arg);
/*
 * The connection is going away (client closed, error, or sim_http_free())
 * while a request with conn_arg set was unanswered. The callback owns
 * conn_arg and must not touch the connection.
 */
typedef void	(*sim_http_close_cb)(void *conn_arg, void *arg);

struct sim_http	*sim_http_new(struct event_base *, const struct sockaddr *,
		    int socklen, sim_http_request_cb, sim_http_close_cb,
		    void *arg, char **err);
void		 sim_http_free(struct sim_http *);
uint64_t	 sim_http_connections(const struct sim_http *);
/*
 * Connections accepted from now on ask the kernel for receive times
 * (SO_TIMESTAMPNS): a request's rx_ns is then when the bytes that completed
 * it arrived in the socket, not when the loop got round to reading them
 * (the default).
 */
void		 sim_http_rx_stamps(struct sim_http *, int on);

void		 sim_http_set_arg(struct sim_http_conn *, void *conn_arg);

/* A whole response with Content-Length; ends the request. */
void		 sim_http_reply(struct sim_http_conn *, int status,
		    const char *ctype, const void *body, size_t len);
/* A streaming response: the head, one chunk per write, then the end. */
void		 sim_http_stream_start(struct sim_http_conn *, int status,
		    const char *ctype);
void		 sim_http_stream_write(struct sim_http_conn *, const void *,
		    size_t);
void		 sim_http_stream_end(struct sim_http_conn *);
/*
 * The head of a response announcing content_length bytes, and only the first
 * len of them (fault injection).
 */
void		 sim_http_reply_partial(struct sim_http_conn *, int status,
		    const char *ctype, size_t content_length, const void *body,
		    size_t len);
/*
 * Close the connection once what was written so far is flushed, without
 * ending the response properly; ends the request, no close callback.
 */
void		 sim_http_abort(struct sim_http_conn *);

#endif
