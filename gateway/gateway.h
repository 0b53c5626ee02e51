/*
 * gateway/ internal interfaces: the worker, the config snapshot, the
 * request, and the seams between the HTTP server side (http_server.c), the
 * proxy logic (proxy.c) and the upstream client side (upstream.c).
 *
 * Ownership: a client connection (struct hs_conn) owns at most one
 * struct ig_request at a time; the request owns its upstream connection
 * while it uses it. A request is freed only by proxy_request_free(),
 * called by the server side when the response is handed off or the client
 * is gone.
 */
#ifndef INFERGATE_GATEWAY_H
#define INFERGATE_GATEWAY_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/queue.h>
#include <time.h>

#include "infergate/admission.h"
#include "infergate/config.h"
#include "infergate/hist.h"
#include "infergate/routing.h"

struct event_base;
struct event;
struct evbuffer;
struct evconnlistener;
struct hs_conn;
struct up_conn;
struct up_pool;
struct ig_store;
struct ig_store_op;
struct ig_lease;
struct ig_io;
struct ssl_st;

/* --- socket I/O (io.c): both sides, plain or TLS, no bufferevents ----- */

enum io_what { IO_EOF = 1, IO_ERROR, IO_TIMEOUT, IO_CONNECT_FAILED,
	IO_CONNECTED };

/*
 * Each returns 0, or -1 when the owner released the io inside it.
 *   on_read   DATA/LEN: new bytes in the worker's read buffer (io->in is
 *             empty); the owner parses what it can and says how much
 *             with io_consumed(), the rest is kept in io->in. DATA NULL:
 *             the input is in io->in, which the owner drains itself.
 *   on_drain  output was written and at most 16 KiB of it waits; NULL
 *             for an owner that does not care.
 *   on_event  one of enum io_what; after anything but IO_CONNECTED the
 *             io neither reads nor writes any more: release it.
 */
struct io_handlers {
	int	(*on_read)(struct ig_io *, void *arg, const char *data,
		    size_t len);
	int	(*on_drain)(struct ig_io *, void *arg);
	int	(*on_event)(struct ig_io *, void *arg, int what);
};

struct ig_io {
	struct ig_worker *w;
	int		 fd;
	uint32_t	 flags;
	uint32_t	 wtimeout_ms;	/* pending output makes no progress */
	struct ssl_st	*ssl;
	struct event	*rev;		/* persistent: read interest */
	struct event	*wev;		/* only while output waits */
	struct evbuffer	*in;		/* what the owner left unparsed */
	struct evbuffer	*out;		/* written at the end of the event */
	const struct io_handlers *h;
	void		*arg;
	LIST_ENTRY(ig_io) dirty;	/* the worker's flush list */
	size_t		 rused;		/* io_consumed() of this read */
	size_t		 ssl_wlen;	/* a TLS write to repeat */
};

int		 io_init(struct ig_io *, struct ig_worker *, int fd,
		    struct ssl_st *, bool connecting, const struct io_handlers *,
		    void *arg);
void		 io_release(struct ig_io *);
void		 io_consumed(struct ig_io *, size_t);
void		 io_schedule_flush(struct ig_io *);
void		 io_schedule_read(struct ig_io *);
void		 io_pause_read(struct ig_io *, bool paused);
bool		 io_output_pending(const struct ig_io *);
void		 io_flush_cb(int fd, short what, void *arg);	/* worker's */
void		 io_flush_all(struct ig_worker *);

/* --- snapshots: one config and everything built from it --------------- */

struct ig_snapshot {
	atomic_int	 refcnt;
	uint64_t	 generation;
	struct ig_config *conf;
	struct ig_catalog *catalog;
	struct ssl_ctx_st **pool_tls;	/* per pool index; NULL: plain */
	uint64_t	*pool_tls_fp;	/* per pool index: tls_client_ctx()'s */
	struct ssl_ctx_st **listen_tls;	/* per listen index; NULL: plain */
	uint64_t	*listen_fp;	/* per listen index: tls_server_ctx()'s */
	/* per running listener (the start's listen index): the context of
	 * its handshakes (workers_listen_tls); NULL: plain */
	struct ssl_ctx_st **run_tls;
	size_t		 nrun;
	struct ig_auth	*auth;		/* NULL: no tenants, no authentication */
	struct snap_shared *shared;	/* owns the TLS contexts and auth */
};

struct ig_snapshot *snapshot_create(struct ig_config *conf, char **err);
struct ig_snapshot *snapshot_derive(struct ig_snapshot *, char **err);
struct ig_snapshot *snapshot_current(void);	/* returns a reference */
struct ig_snapshot *snapshot_peek(void);	/* the thread's, no reference */
void		 snapshot_publish(struct ig_snapshot *);	/* takes the ref */
struct ig_snapshot *snapshot_ref(struct ig_snapshot *);
void		 snapshot_unref(struct ig_snapshot *);
void		 snapshot_thread_done(void);
void		 snapshot_clear(void);

/* --- counters, per worker, summed when /metrics is read -------------- */

enum ig_stat {
	ST_CONN_ACCEPTED, ST_CONN_OPEN, ST_REQUESTS, ST_REQ_INFLIGHT,
	ST_RESP_2XX, ST_RESP_4XX, ST_RESP_5XX,
	ST_UP_CONNECT, ST_UP_REUSE, ST_UP_ERRORS, ST_UP_RETRIES,
	ST_CLIENT_ABORTS, ST_STREAMS, ST_BAD_REQUESTS,
	ST_BYTES_IN, ST_BYTES_OUT, ST_AUTH_FAILURES, ST_ACCEPT_PAUSES,
	ST_UP_NO_SOCKET,
	ST_MAX
};

/* --- workers -------------------------------------------------------- */

/*
 * Blocks too large for malloc's per-thread cache that every request
 * takes and gives back (header arenas): kept per worker, no locks.
 */
enum wblock_kind { WB_ARENA, WB_UPHDR, WB_REQUEST, WB_MAX };

struct wblock_cache {
	void		*head;		/* free blocks, linked by their first word */
	size_t		 size;		/* of every block in the list */
	unsigned	 n;
};

TAILQ_HEAD(ig_request_q, ig_request);

struct ig_worker {
	unsigned	 id;
	pthread_t	 thread;
	struct event_base *base;
	struct ig_listener *listeners;
	size_t		 nlisteners;
	int		 ctl_fd;	/* eventfd: the main thread's wake-up */
	struct event	*ctl;		/* reads it: shutdown */
	struct event	*drain;		/* polls for the end of in-flight work */
	uint64_t	 drain_deadline;	/* now_ns() value */
	atomic_int	 stopping;
	atomic_int	 done;		/* its loop has ended */
	struct up_pool	*upstreams;	/* per backend address */
	struct ig_store	*store;		/* tenant budgets */
	struct hs_conn	*conns;		/* open client connections */
	struct hs_conn	*tq_head[3];	/* phase timeouts: idle, head, body */
	struct hs_conn	*tq_tail[3];
	struct event	*tq_timer;
	uint64_t	 tq_when;	/* when tq_timer fires; 0: not armed */
	struct event	*grant;		/* queue.c: a pool slot came free */
	struct event	*kick;		/* another worker's freed slot */
	int		 kick_fd;	/* eventfd of kick */
	struct pool_queue *queues;	/* per pool with requests waiting */
	struct ig_request_q parked;	/* waiting for a backend (when_empty) */
	struct event	*flush;		/* io.c: writes at the end of a batch */
	bool		 flush_active;
	LIST_HEAD(, ig_io) dirty;	/* connections with output to write */
	time_t		 date_t;	/* the second `date` is for */
	char		 date[48];	/* "Date: ...\r\n" (worker_date) */
	char		*rbuf;		/* every read lands here first */
	size_t		 rbuf_size;
	struct wblock_cache blocks[WB_MAX];
	struct evbuffer	*evbufs[64];	/* empty ones, for requests to reuse */
	unsigned	 nevbufs;
	_Atomic uint64_t rejects[IG_LIMIT_STORE + 1];	/* by limit */
	_Atomic uint64_t would_reject[IG_LIMIT_STORE + 1];	/* shadow */
	_Atomic uint64_t tokens_in;	/* settled prompt tokens */
	_Atomic uint64_t tokens_out;	/* settled completion tokens */
	unsigned	 rr_cursor;	/* balance: round_robin */
	unsigned	 p2c_seed;	/* balance: least_inflight */
	uint64_t	 next_request_seq;
	_Atomic uint64_t stats[ST_MAX];	/* written by this worker only */
	struct ig_hist	 store_hist;	/* admissions the store answered */
};

#define WSTAT_ADD(w, s, n) \
	atomic_fetch_add_explicit(&(w)->stats[(s)], (n), memory_order_relaxed)
#define WSTAT_SUB(w, s, n) \
	atomic_fetch_sub_explicit(&(w)->stats[(s)], (n), memory_order_relaxed)

/* "Date: <IMF-fixdate>\r\n" of now (IG_DATE_LEN bytes), formatted once a
 * second. */
#define IG_DATE_LEN	37
const char	*worker_date(struct ig_worker *);

/* A block of SIZE bytes (uninitialised) and its return; NULL: no memory. */
void		*worker_block_get(struct ig_worker *, enum wblock_kind, size_t size);
void		 worker_block_put(struct ig_worker *, enum wblock_kind, void *,
		    size_t size);

/*
 * An empty evbuffer, and its return (emptied; NULL is ignored): a
 * request's body, buffered response and SSE remainder reuse the worker's
 * instead of allocating and initialising three per request.
 */
struct evbuffer	*worker_evbuffer_get(struct ig_worker *);
void		 worker_evbuffer_put(struct ig_worker *, struct evbuffer *);

/*
 * The end of a read or write event: answers the store holds for the loop
 * are delivered, then what the event produced is written.
 */
void		 worker_after_io(struct ig_worker *);

int		 workers_start(struct ig_snapshot *, char **err);
/*
 * Stopping: workers_drain() tells every worker to close its listeners and
 * finish (its requests, then its store's work in hand, for GRACE_MS at
 * most) and returns at once; workers_running() counts the ones not done
 * yet; workers_join() waits for them all.
 */
void		 workers_drain(uint64_t grace_ms);
size_t		 workers_running(void);
void		 workers_join(void);
void		 workers_free(void);
size_t		 workers_count(void);
struct ig_worker *worker_at(size_t);
uint64_t	 workers_stat(enum ig_stat);
/* The sum over workers of the _Atomic uint64_t at OFFSET in ig_worker. */
uint64_t	 workers_sum(size_t offset);

/* --- requests -------------------------------------------------------- */

enum gw_endpoint { EP_UNKNOWN, EP_CHAT, EP_COMPLETIONS, EP_EMBEDDINGS,
	EP_MODELS };

struct ig_header {
	const char	*name;
	const char	*value;
	uint32_t	 namelen;
	uint32_t	 valuelen;
};

struct ig_request {
	struct hs_conn	*conn;		/* NULL once the client is gone */
	struct ig_worker *worker;
	struct ig_snapshot *snap;
	enum gw_endpoint ep;
	const char	*path;
	unsigned	 method;	/* llhttp's enum llhttp_method */
	bool		 method_known;	/* the request line's method was read */
	char		 id[48];	/* X-Request-Id */
	char		 lease_id[33];	/* our own unique name: the lease's */
	char		 client_ip[48];	/* the peer's */
	char		 forwarded_ip[48];	/* behind trusted proxies; "" */
	bool		 xff_trusted;	/* the peer is a trusted proxy */
	const struct ig_header *headers;	/* valid while conn is set */
	size_t		 nheaders;
	struct evbuffer	*body;		/* the request body as received */
	struct ig_request_body *edited;	/* the body as forwarded; NULL: body */
	const struct ig_model *model;	/* after routing: has a pool */
	const struct ig_model *routed_from;	/* the model the client named */
	const struct ig_model *fell_back_from;	/* its pool was full */
	/* pool capacity (queue.c) */
	struct ig_cap	*cap;		/* the pool slot held; NULL: none */
	struct pool_queue *queue;	/* waiting in it; NULL: not */
	TAILQ_ENTRY(ig_request) qentry;
	struct event	*qtimer;	/* queue.max_wait */
	uint64_t	 t_queued;	/* now_ns() when queued */
	uint64_t	 queue_ns;	/* time spent waiting */
	enum ig_priority priority;
	bool		 parked;	/* in worker->parked */
	bool		 pooled;	/* reached pool_enter */
	struct ig_bstate *attempt_on;	/* counted in flight to it */
	const char	*last_error;	/* of the last failed attempt */
	struct ig_cap	*retry_cap;	/* counted in its retry budget */
	bool		 last_timeout;
	struct ig_backend *backend;
	/* Where the attempt's backend is from: the pool as the published
	 * snapshot has it (proxy_pool_now); bsnap NULL: the request's own. */
	struct ig_snapshot *bsnap;
	const struct ig_pool *bpool;
	struct ssl_ctx_st *btls;	/* the pool's TLS context; NULL: plain */
	uint64_t	 btls_fp;	/* its settings' fingerprint */
	struct up_conn	*up;
	uint64_t	 deadline_ns;	/* pools.*.timeouts.request; 0: none */
	uint64_t	 tried;		/* backends that failed this request */
	unsigned	 attempts;
	bool		 streaming;	/* the response goes out as a stream */
	bool		 resp_started;	/* status line sent to the client */
	struct evbuffer	*resp;		/* a buffered (non-streaming) reply */
	int		 status;
	uint64_t	 bytes_in;
	uint64_t	 bytes_out;
	uint64_t	 t_start;	/* monotonic ns */
	uint64_t	 t_first_byte;	/* the backend's response head */
	uint64_t	 t_first_token;	/* a stream's first body bytes */
	uint64_t	 t_admit;	/* the store's admission asked */
	const char	*allow;		/* Allow header of a 405 */
	char		*resp_head;	/* backend headers kept for the client */
	size_t		 resp_head_len;
	bool		 dispatched;	/* a whole request reached the proxy */
	bool		 logged;	/* answered: in the access log even undispatched */
	bool		 backend_date;	/* the backend's Date is passed on */
	bool		 up_reused;	/* sent on a pooled connection */
	bool		 paused;	/* backend reads paused: client is slow */
	/* admission (admit.c) */
	const struct ig_tenant_conf *tenant;
	struct ig_request_info info;
	uint64_t	 input_est;	/* estimated input tokens */
	uint64_t	 max_tokens;	/* the output cap reserved */
	struct ig_store_op *admit_op;	/* waiting for the store */
	struct ig_lease	*lease;		/* admitted: settle once */
	struct event	*renew;		/* lease renewal of long streams */
	struct ig_ratelimit rl;		/* x-ratelimit-* for the client */
	bool		 rl_headers;	/* admitted: send rl and the clamp */
	uint64_t	 retry_after_s;	/* refused: Retry-After; 0: none */
	bool		 clamped;	/* max_tokens lowered to the tenant's cap */
	bool		 set_max_tokens;	/* write max_tokens into the body */
	bool		 force_usage;	/* ask the backend for stream usage */
	const char	*would_refuse;	/* shadow: the limit that would have */
	const char	*refused_by;	/* the limit that refused */
	struct evbuffer	*sse;		/* a partial SSE event being read */
	bool		 sse_raw;	/* the stream is passed on unread */
	uint64_t	 tokens_sent;	/* content chunks passed to the client */
	uint64_t	 usage_prompt;	/* from the backend's usage */
	uint64_t	 usage_completion;
	bool		 usage_known;
	bool		 usage_estimated;	/* charged from the chunks sent */
	bool		 failed_before_output;
	const char	*outcome;	/* how it ended, for the log */
	const char	*error_code;
};

/*
 * Monotonic ns. Inside a socket event now_hold() has read the clock once
 * for all of its work (about ten reads per request otherwise), the store
 * answers delivered at its end (worker_after_io) included; elsewhere
 * (timers, hiredis's own callbacks, the flush event) every call reads it.
 */
uint64_t	 now_ns(void);
extern __thread uint64_t now_held;

static inline void
now_hold(void)
{
	now_held = 0;
	now_held = now_ns();
}

static inline void
now_release(void)
{
	now_held = 0;
}

/*
 * Whether errno value E is the gateway's own shortage (no descriptor, no
 * kernel memory) rather than a peer's failure: accept, a backend
 * connection and a health check all treat it so.
 */
static inline bool
gw_errno_scarce(int e)
{
	return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}

/* Whether the N bytes at S are LOWER (lowercase ASCII) in any case. */
static inline bool
gw_caseeq(const char *s, const char *lower, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if ((unsigned)(c - 'A') < 26)
			c += 'a' - 'A';
		if (c != (unsigned char)lower[i])
			return false;
	}
	return true;
}

/* proxy.c: called by the server side */
void		 proxy_request(struct ig_request *);	/* a complete request */
void		 proxy_client_writable(struct ig_request *);	/* output drained */
void		 proxy_request_free(struct ig_request *);
/* Admitted, with a pool slot (queue.c): body edits, then the backend. */
void		 proxy_dispatch(struct ig_request *);

/* queue.c: pool capacity and the priority queue */
int		 pool_worker_init(struct ig_worker *);
void		 pool_worker_free(struct ig_worker *);
void		 pool_enter(struct ig_request *);	/* admitted */
void		 pool_leave(struct ig_request *);	/* being freed */
void		 pool_no_backend(struct ig_request *);	/* when_empty */
void		 pool_wake_all(void);	/* a backend came up */

/* resolver.c: DNS backends, on the main thread's base */
struct ig_addr;
int		 resolver_start(struct event_base *, void (*changed)(void),
		    void (*warm)(void));
size_t		 resolver_prepare(const struct ig_config *);
void		 resolver_published(void);
void		 resolver_abandon(void);
void		 resolver_wait(void);
size_t		 resolver_lookup(const char *host, uint64_t port,
		    const struct ig_addr **, void *arg);
void		 resolver_metrics(struct evbuffer *);
void		 resolver_stop(void);

/* health.c: active health checks, on the main thread's base */
int		 health_start(struct event_base *);
void		 health_stop(void);
/* proxy.c: to a backend of the request's pool (a parked one, again). */
void		 proxy_forward(struct ig_request *);
const struct ig_pool *proxy_pool_now(struct ig_request *);
void		 proxy_send_error(struct ig_request *, int status, const char *type,
		    const char *code, const char *param, const char *fmt, ...)
		    __attribute__((format(printf, 6, 7)));

/* http_server.c: the response side, called by proxy.c */
void		 hs_close_all(struct ig_worker *);
bool		 hs_accept_failed(struct evconnlistener *, struct event *resume,
		    uint64_t *warned_ns);
void		 hs_listener_error_cb(struct evconnlistener *, void *);
void		 hs_listener_resume_cb(int fd, short what, void *arg);
void		 hs_listener_cb(struct evconnlistener *, int fd,
		    struct sockaddr *, int socklen, void *arg);
/* Status line + headers; body_len -1 means a chunked (streamed) body. */
void		 hs_response_start(struct hs_conn *, int status,
		    const char *extra, size_t extralen, int64_t body_len);
void		 hs_response_body(struct hs_conn *, const void *, size_t);
void		 hs_response_body_buffer(struct hs_conn *, struct evbuffer *);
void		 hs_response_end(struct hs_conn *);
void		 hs_response_abort(struct hs_conn *);	/* close, no clean end */
bool		 hs_output_full(struct hs_conn *);
struct ig_auth_memo *hs_auth_memo(struct hs_conn *);	/* see admission.h */
const struct ig_header *hs_find_header(const struct ig_request *,
		    const char *name);

/*
 * client_addr.c: trusted_proxies. client_addr_resolve() sets
 * r->xff_trusted when the peer is a trusted proxy, and r->forwarded_ip to
 * the client its X-Forwarded-For names (see client_addr.c for the walk).
 */
void		 client_addr_resolve(struct ig_request *);
bool		 client_addr_is_xff(const struct ig_header *);
/* ADDR (4 or 16 bytes of FAMILY) is in one of the N blocks of CIDRS. */
bool		 client_addr_in(const struct ig_cidr *cidrs, size_t n,
		    int family, const void *addr);

/* upstream.c: connections to backends, pooled per worker per backend */
struct up_events {
	/* The response's status line and headers arrived. */
	void	(*on_headers)(struct ig_request *, int status,
		    const struct ig_header *, size_t n);
	void	(*on_body)(struct ig_request *, const char *, size_t);
	void	(*on_complete)(struct ig_request *);
	/* errstr: what failed; before_response: no byte of a response came;
	 * sent: a byte of the request was written to the backend */
	void	(*on_error)(struct ig_request *, const char *errstr,
		    bool timeout, bool before_response, bool sent);
};
struct up_pool	*up_pools_create(struct ig_worker *);
void		 up_pools_free(struct up_pool *);
/*
 * Takes a pooled or new connection to the backend for the request and
 * returns the buffer to write the request head and body into (NULL: no
 * connection could be started); up_start() sends it. Events come back
 * through `ev`.
 */
struct evbuffer	*up_open(struct ig_request *, struct ig_backend *,
		    const struct ig_pool_conf *, const struct up_events *ev);
void		 up_start(struct ig_request *);
void		 up_cancel(struct ig_request *);	/* close, never pooled */
void		 up_pause(struct ig_request *, bool paused);	/* backpressure */

/* tls.c */
struct ssl_ctx_st;
struct ssl_st;
struct ssl_ctx_st *tls_server_ctx(const struct ig_listen_conf *,
		    struct ssl_ctx_st *prev, uint64_t prev_fp, uint64_t *fp,
		    char **err);
struct ssl_ctx_st *tls_client_ctx(const struct ig_pool_conf *, uint64_t *fp,
		    char **err);
struct ssl_st	*tls_client_ssl(struct ssl_ctx_st *, const struct ig_pool_conf *,
		    const struct ig_backend *);

/*
 * A listening socket of a worker: plain, or TLS. A TLS listener's
 * handshakes take the current snapshot's run_tls context for it (a
 * reload re-reads certificate and key); TLS is the start's.
 */
struct ig_listener {
	struct ig_worker *w;
	struct ssl_ctx_st *tls;
	size_t		 index;		/* in the start's listen list */
	struct evconnlistener *l;
	struct event	*resume;	/* accepting again after a pause */
	uint64_t	 warned_ns;	/* the last accept error logged */
};

struct ssl_ctx_st *listener_tls(const struct ig_listener *,
		    const struct ig_snapshot *);	/* worker.c */
int		 workers_listen_tls(const struct ig_config *,
		    struct ssl_ctx_st **listen_tls, const struct ig_snapshot *prev,
		    struct ssl_ctx_st ***run_tls, size_t *nrun);	/* worker.c */
void		 workers_listen_check(const struct ig_config *);	/* worker.c */
void		 workers_store_check(const struct ig_config *);	/* worker.c */

/* admin.c */
int		 admin_start(struct event_base *, const char *address, char **err);
void		 admin_stop(void);
void		 admin_set_ready(bool);
/* main.c: the graceful stop of SIGTERM (POST /admin/drain); idempotent. */
void		 gateway_drain(const char *why);
extern uint64_t	 admin_reloads_ok;
extern uint64_t	 admin_reloads_failed;

/* admit.c: authentication, admission, settlement */
int		 admit_auth(struct ig_request *);	/* -1: answered 401 */
bool		 admit_model_allowed(const struct ig_request *, const char *name);
void		 admit_start(struct ig_request *);	/* then proxy_admitted() */
void		 admit_stream_body(struct ig_request *, const char *, size_t);
void		 admit_response_done(struct ig_request *);	/* non-streaming */
void		 admit_finish(struct ig_request *);	/* at request free */
/* The headers admission adds to the response, at most ADMIT_HDRS_MAX. */
#define ADMIT_HDRS_MAX	512
size_t		 admit_headers(const struct ig_request *, char *, size_t);
void		 proxy_admitted(struct ig_request *);

/* access_log.c */
void		 access_log_request(const struct ig_request *);

#endif
