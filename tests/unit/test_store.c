/*
 * The budget store: one suite of policy cases run against both
 * implementations (local, and redis against a redis-server this test
 * starts on a free port), then Redis failures: each on_store_failure mode
 * with Redis down or stopped, and Redis used again once it is back.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "infergate/store.h"
#include "../../admission/store_int.h"	/* a lease's kind */

/* --- redis-server ------------------------------------------------------ */

static int	 redis_port;
static pid_t	 redis_pid = -1;

static int
free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t	 len = sizeof(sin);
	int		 fd, port;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) == -1)
		return -1;
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

static redisContext *
redis_sync(void)
{
	struct timeval	 tv = { 1, 0 };
	redisContext	*c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);

	if (c != NULL && c->err != 0) {
		redisFree(c);
		return NULL;
	}
	return c;
}

static void
redis_cmd(const char *cmd)
{
	redisContext	*c = redis_sync();
	redisReply	*r;

	assert_non_null(c);
	r = redisCommand(c, cmd);
	assert_non_null(r);
	freeReplyObject(r);
	redisFree(c);
}

static int
redis_start(void)
{
	char		 port[16];
	redisContext	*c;
	int		 i;

	snprintf(port, sizeof(port), "%d", redis_port);
	if ((redis_pid = fork()) == -1) {
		redis_pid = -1;
		return -1;
	}
	if (redis_pid == 0) {
		/* Dies with the test, whatever happens to the test. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execlp("redis-server", "redis-server", "--port", port,
		    "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		    "--loglevel", "warning", (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 500; i++) {
		if ((c = redis_sync()) != NULL) {
			redisFree(c);
			return 0;
		}
		usleep(10000);
	}
	return -1;
}

/* Signals our redis-server only: never kill(-1) or a process group. */
static void
redis_signal(int sig)
{
	if (redis_pid > 0)
		kill(redis_pid, sig);
}

static void
redis_stop(void)
{
	if (redis_pid <= 0)
		return;
	kill(redis_pid, SIGCONT);
	kill(redis_pid, SIGKILL);
	waitpid(redis_pid, NULL, 0);
	redis_pid = -1;
}

static int
group_setup(void **state)
{
	if ((redis_port = free_port()) == -1)
		return -1;
	return redis_start();
}

static int
group_teardown(void **state)
{
	redis_stop();
	return 0;
}

/* --- the fixture: one store on one event base -------------------------- */

enum kind { KIND_LOCAL, KIND_REDIS, KIND_SLICES };
static enum kind kind_local = KIND_LOCAL, kind_redis = KIND_REDIS;
static enum kind kind_slices = KIND_SLICES;	/* redis, store.slices */

struct ctx {
	enum kind	 kind;
	struct event_base *base;
	struct ig_store	*store;
	struct ig_store_conf conf;
	char		 addr[32];
	char		 tenant[64];
	int		 seq;
};

struct waiter {
	int		 calls;
	struct ig_admit_result res;
	struct ig_lease	*lease;
};

static uint64_t
now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs the loop for MS, or until *DONE when DONE is given. */
static void
spin(struct ctx *c, int ms, const int *done)
{
	uint64_t	 end = now_ms() + (uint64_t)ms;

	while (now_ms() < end && (done == NULL || *done == 0)) {
		event_base_loop(c->base, EVLOOP_NONBLOCK);
		usleep(200);
	}
}

static void
conf_init(struct ctx *c, enum kind k)
{
	memset(&c->conf, 0, sizeof(c->conf));
	c->conf.type = k == KIND_LOCAL ? IG_STORE_LOCAL : IG_STORE_REDIS;
	c->conf.slices = k == KIND_SLICES;
	c->conf.slice_period_ms = 100;
	snprintf(c->addr, sizeof(c->addr), "127.0.0.1:%d", redis_port);
	c->conf.redis_address = c->addr;
	c->conf.redis_key_prefix = "igtest";
	c->conf.redis_timeout_ms = 500;	/* generous: sanitizer builds */
	c->conf.on_failure = IG_STORE_FAIL_CLOSED;
	c->conf.replicas = 1;
	c->conf.lease_ttl_ms = 120000;
}

static void
store_open(struct ctx *c)
{
	struct ig_store_stats st;
	char		*err = NULL;
	uint64_t	 end = now_ms() + 3000;

	c->store = ig_store_create(&c->conf, c->base, &err);
	if (c->store == NULL)
		fail_msg("ig_store_create: %s", err);
	if (c->kind == KIND_LOCAL)
		return;
	do {	/* connected and scripts loaded */
		spin(c, 5, NULL);
		ig_store_stats(c->store, &st);
	} while (st.degraded && now_ms() < end);
}

static int
ctx_setup(void **state)
{
	static int	 tenants;
	struct ctx	*c = calloc(1, sizeof(*c));

	c->kind = *(enum kind *)*state;
	c->base = event_base_new();
	snprintf(c->tenant, sizeof(c->tenant), "t%d-%ld-%d", (int)getpid(),
	    (long)time(NULL), ++tenants);
	conf_init(c, c->kind);
	*state = c;
	return 0;
}

static int
ctx_teardown(void **state)
{
	struct ctx	*c = *state;

	ig_store_free(c->store);
	event_base_free(c->base);
	free(c);
	/* A failed Redis test must not leave it stopped or down. */
	redis_signal(SIGCONT);
	if (redis_pid <= 0 && redis_start() == -1)
		return -1;
	return 0;
}

static void
on_admit(const struct ig_admit_result *res, struct ig_lease *lease, void *arg)
{
	struct waiter	*w = arg;

	w->calls++;
	w->res = *res;
	w->lease = lease;
}

struct want {
	uint64_t	 input, output;
	struct ig_tenant_limits limits;
	bool		 shadow;
	const char	*request_id;	/* NULL: a new one */
	const char	*tenant;	/* NULL: the test's */
};

/* One admission on STORE, waited for. Returns the lease (NULL: refused). */
static struct ig_lease *
admit_on(struct ctx *c, struct ig_store *store, const struct want *w,
    struct ig_admit_result *res)
{
	struct ig_admit_req req;
	struct waiter	 wt = { 0 };
	struct ig_store_op *op;
	char		 id[64];

	snprintf(id, sizeof(id), "req-%d", ++c->seq);
	memset(&req, 0, sizeof(req));
	req.tenant = w->tenant != NULL ? w->tenant : c->tenant;
	req.request_id = w->request_id != NULL ? w->request_id : id;
	req.limits = w->limits;
	req.shadow = w->shadow;
	req.input_tokens = w->input;
	req.output_tokens = w->output;
	op = ig_store_admit(store, &req, on_admit, &wt);
	assert_non_null(op);
	assert_int_equal(wt.calls, 0);	/* never from inside admit */
	spin(c, 3000, &wt.calls);
	assert_int_equal(wt.calls, 1);
	*res = wt.res;
	assert_int_equal(res->admitted, wt.lease != NULL);
	return wt.lease;
}

static struct ig_lease *
admit(struct ctx *c, const struct want *w, struct ig_admit_result *res)
{
	return admit_on(c, c->store, w, res);
}

static void
settle(struct ctx *c, struct ig_lease *l, uint64_t actual)
{
	ig_store_settle(c->store, l, actual);
	if (c->kind != KIND_LOCAL)
		spin(c, 20, NULL);	/* fire and forget: let it land */
}

static void
assert_refused(const struct ig_admit_result *r, enum ig_limit limit,
    int status, const char *code)
{
	assert_false(r->admitted);
	assert_int_equal(r->limit, limit);
	assert_int_equal(r->status, status);
	assert_string_equal(r->code, code);
	assert_true(r->message[0] != '\0');
}

/* --- the shared policy cases ------------------------------------------- */

static void
test_concurrency(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 10, .output = 10,
	    .limits.max_concurrent_requests = 2 };
	struct ig_admit_result r;
	struct ig_lease	*a, *b, *d;

	store_open(c);
	a = admit(c, &w, &r);
	assert_non_null(a);
	assert_false(r.degraded);
	b = admit(c, &w, &r);
	assert_non_null(b);
	/* above the bound: refused, Retry-After until the earliest lease ends */
	assert_null(admit(c, &w, &r));
	assert_refused(&r, IG_LIMIT_CONCURRENCY, 429,
	    "concurrency_limit_exceeded");
	assert_in_range(r.retry_after_s, 119, 120);
	/* a settlement frees the slot */
	settle(c, a, 15);
	d = admit(c, &w, &r);
	assert_non_null(d);
	settle(c, b, 15);
	settle(c, d, 15);
}

static void
test_rpm(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 1, .limits.requests_per_minute = 3 };
	struct ig_admit_result r;
	int		 i;

	store_open(c);
	for (i = 0; i < 3; i++) {
		struct ig_lease *l = admit(c, &w, &r);

		assert_non_null(l);
		assert_true(r.rl.has_requests);
		assert_false(r.rl.has_tokens);
		assert_int_equal(r.rl.limit_requests, 3);
		assert_int_equal(r.rl.remaining_requests, 2 - i);
		assert_in_range(r.rl.reset_requests_ms, 60000, 61000);
		/* settled requests still count in the minute */
		settle(c, l, 1);
	}
	assert_null(admit(c, &w, &r));
	assert_refused(&r, IG_LIMIT_RPM, 429, "rate_limit_exceeded");
	assert_in_range(r.retry_after_s, 59, 61);
	assert_int_equal(r.rl.remaining_requests, 0);
}

static void
test_tpm(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 40, .output = 20,
	    .limits.tokens_per_minute = 100 };
	struct ig_admit_result r;
	struct ig_lease	*a, *b;

	store_open(c);
	a = admit(c, &w, &r);
	assert_non_null(a);
	assert_int_equal(r.rl.remaining_tokens, 40);
	w.input = 30;
	w.output = 11;		/* 60 + 41 > 100 */
	assert_null(admit(c, &w, &r));
	assert_refused(&r, IG_LIMIT_TPM, 429, "rate_limit_exceeded");
	assert_in_range(r.retry_after_s, 59, 61);
	assert_int_equal(r.rl.remaining_tokens, 40);
	w.output = 10;		/* exactly at the bound */
	b = admit(c, &w, &r);
	assert_non_null(b);
	assert_int_equal(r.rl.remaining_tokens, 0);
	settle(c, a, IG_USAGE_UNKNOWN);
	settle(c, b, IG_USAGE_UNKNOWN);
	w.input = 1;
	w.output = 0;
	assert_null(admit(c, &w, &r));
	assert_int_equal(r.limit, IG_LIMIT_TPM);
}

static void
test_daily(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 50, .output = 50,
	    .limits.daily_token_budget = 250 };
	struct ig_admit_result r;
	struct ig_lease	*a, *b;

	store_open(c);
	a = admit(c, &w, &r);
	assert_non_null(a);
	b = admit(c, &w, &r);
	assert_non_null(b);
	w.output = 51;		/* 200 + 101 > 250 */
	assert_null(admit(c, &w, &r));
	assert_refused(&r, IG_LIMIT_DAILY, 429, "budget_exceeded");
	assert_in_range(r.retry_after_s, 1, 86400);
	/* the real usage was lower: room again */
	settle(c, a, 30);
	settle(c, b, 30);
	a = admit(c, &w, &r);
	assert_non_null(a);
	settle(c, a, 101);
	w.output = 100;		/* 161 + 150 > 250 */
	assert_null(admit(c, &w, &r));
	assert_int_equal(r.limit, IG_LIMIT_DAILY);
}

static void
test_settle_lowers_remaining(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 100, .output = 400,
	    .limits.tokens_per_minute = 1000 };
	struct ig_admit_result r;
	struct ig_lease	*a, *b;

	store_open(c);
	a = admit(c, &w, &r);
	assert_non_null(a);
	assert_int_equal(ig_lease_reserved(a), 500);
	assert_int_equal(r.rl.remaining_tokens, 500);
	settle(c, a, 120);
	w.input = 10;
	w.output = 0;
	b = admit(c, &w, &r);
	assert_non_null(b);
	assert_int_equal(r.rl.remaining_tokens, 1000 - 120 - 10);
	/* unknown usage: the reservation stands */
	settle(c, b, IG_USAGE_UNKNOWN);
	b = admit(c, &w, &r);
	assert_int_equal(r.rl.remaining_tokens, 1000 - 120 - 10 - 10);
	/* settling twice is harmless */
	settle(c, b, 0);
	b = admit(c, &w, &r);
	assert_int_equal(r.rl.remaining_tokens, 1000 - 120 - 10 - 10);
	settle(c, b, 10);
}

static void
test_lease_idempotent(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 10, .output = 10, .request_id = "same",
	    .limits.max_concurrent_requests = 1,
	    .limits.requests_per_minute = 10 };
	struct ig_admit_result r;
	struct ig_lease	*a, *b;

	store_open(c);
	a = admit(c, &w, &r);
	assert_non_null(a);
	assert_int_equal(r.rl.remaining_requests, 9);
	/* the same request id again: the lease it holds, nothing counted */
	b = admit(c, &w, &r);
	assert_non_null(b);
	assert_int_equal(r.rl.remaining_requests, 9);
	w.request_id = NULL;
	assert_null(admit(c, &w, &r));
	assert_int_equal(r.limit, IG_LIMIT_CONCURRENCY);
	settle(c, a, 20);
	settle(c, b, 20);	/* already settled: nothing */
	a = admit(c, &w, &r);
	assert_non_null(a);
	assert_int_equal(r.rl.remaining_requests, 8);
	settle(c, a, 20);
}

static void
test_lease_expiry(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 1, .limits.max_concurrent_requests = 1 };
	struct ig_admit_result r;
	struct ig_lease	*a, *b;

	c->conf.lease_ttl_ms = 300;
	store_open(c);
	assert_int_equal(ig_store_renew_ms(c->store), 100);
	a = admit(c, &w, &r);	/* a gateway that dies holding it */
	assert_non_null(a);
	assert_null(admit(c, &w, &r));
	assert_int_equal(r.retry_after_s, 1);
	spin(c, 400, NULL);
	b = admit(c, &w, &r);
	assert_non_null(b);
	/* renewed, it outlives its first ttl */
	spin(c, 200, NULL);
	ig_store_renew(c->store, b);
	spin(c, 200, NULL);
	assert_null(admit(c, &w, &r));
	assert_int_equal(r.limit, IG_LIMIT_CONCURRENCY);
	settle(c, b, 1);
	settle(c, a, 1);	/* expired: nothing left to settle */
	b = admit(c, &w, &r);
	assert_non_null(b);
	settle(c, b, 1);
}

static void
test_cancel(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 5, .output = 5,
	    .limits.max_concurrent_requests = 1,
	    .limits.tokens_per_minute = 100 };
	struct ig_admit_req req = { .tenant = c->tenant,
	    .request_id = "doomed", .input_tokens = 5, .output_tokens = 5 };
	struct waiter	 wt = { 0 };
	struct ig_admit_result r;
	struct ig_store_op *op;
	struct ig_lease	*a;

	store_open(c);
	req.limits = w.limits;
	op = ig_store_admit(c->store, &req, on_admit, &wt);
	assert_non_null(op);
	ig_store_cancel(op);
	spin(c, 100, NULL);
	assert_int_equal(wt.calls, 0);
	/* the slot and the tokens are free again */
	a = admit(c, &w, &r);
	assert_non_null(a);
	assert_int_equal(r.rl.remaining_tokens, 90);
	settle(c, a, 10);
}

static void
test_shadow(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 1, .shadow = true,
	    .limits.requests_per_minute = 1 };
	struct ig_admit_result r;
	struct ig_lease	*a, *b;

	store_open(c);
	a = admit(c, &w, &r);
	assert_non_null(a);
	assert_false(r.would_refuse);
	b = admit(c, &w, &r);
	assert_non_null(b);
	assert_true(r.admitted);
	assert_true(r.would_refuse);
	assert_int_equal(r.limit, IG_LIMIT_RPM);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.code, "rate_limit_exceeded");
	assert_int_equal(r.retry_after_s, 0);
	settle(c, a, 1);
	settle(c, b, 1);
	/* shadow requests are counted: a real one is now refused */
	w.shadow = false;
	assert_null(admit(c, &w, &r));
	assert_int_equal(r.limit, IG_LIMIT_RPM);
}

static void
test_order(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 10, .output = 0, .limits = { 0, 0,
	    1, 10, 1, 10 } };
	struct ig_admit_result r;
	struct ig_lease	*a;

	store_open(c);
	a = admit(c, &w, &r);	/* uses every limit up */
	assert_non_null(a);
	assert_null(admit(c, &w, &r));
	assert_int_equal(r.limit, IG_LIMIT_CONCURRENCY);
	settle(c, a, 10);
	assert_null(admit(c, &w, &r));
	assert_int_equal(r.limit, IG_LIMIT_RPM);
	w.limits.requests_per_minute = 0;
	assert_null(admit(c, &w, &r));
	assert_int_equal(r.limit, IG_LIMIT_TPM);
	w.limits.tokens_per_minute = 0;
	assert_null(admit(c, &w, &r));
	assert_int_equal(r.limit, IG_LIMIT_DAILY);
	w.limits.daily_token_budget = 0;
	a = admit(c, &w, &r);
	assert_non_null(a);
	settle(c, a, 10);
}

/* --- batches: what one loop iteration asks, taken in order -------------- */

struct many {
	struct waiter	 w[16];
	struct ig_store_op *op[16];
	char		 id[16][32];
};

/* N admissions issued in one loop iteration (one batch), then answered. */
static void
admit_many(struct ctx *c, const struct want *w, int n, struct many *m,
    const char *same_id)
{
	struct ig_admit_req req;
	int		 i, done;
	uint64_t	 end = now_ms() + 3000;

	memset(m, 0, sizeof(*m));
	for (i = 0; i < n; i++) {
		snprintf(m->id[i], sizeof(m->id[i]), "many-%d", ++c->seq);
		memset(&req, 0, sizeof(req));
		req.tenant = c->tenant;
		req.request_id = same_id != NULL ? same_id : m->id[i];
		req.limits = w->limits;
		req.shadow = w->shadow;
		req.input_tokens = w->input;
		req.output_tokens = w->output;
		m->op[i] = ig_store_admit(c->store, &req, on_admit, &m->w[i]);
		assert_non_null(m->op[i]);
	}
	do {
		event_base_loop(c->base, EVLOOP_NONBLOCK);
		for (i = done = 0; i < n; i++)
			done += m->w[i].calls;
		if (done < n)
			usleep(200);
	} while (done < n && now_ms() < end);
	for (i = 0; i < n; i++) {
		assert_int_equal(m->w[i].calls, 1);
		assert_int_equal(m->w[i].res.admitted, m->w[i].lease != NULL);
	}
}

static void
test_batch_in_order(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 10, .output = 10,
	    .limits.max_concurrent_requests = 5,
	    .limits.requests_per_minute = 100,
	    .limits.tokens_per_minute = 1000 };
	struct ig_admit_result r;
	struct ig_lease	*l;
	struct many	 m;
	int		 i;

	store_open(c);
	admit_many(c, &w, 8, &m, NULL);
	/* each saw the state the ones before it left */
	for (i = 0; i < 5; i++) {
		assert_true(m.w[i].res.admitted);
		assert_false(m.w[i].res.degraded);
		assert_int_equal(m.w[i].res.rl.remaining_requests, 99 - i);
		assert_int_equal(m.w[i].res.rl.remaining_tokens,
		    1000 - 20 * (i + 1));
	}
	for (i = 5; i < 8; i++) {
		assert_refused(&m.w[i].res, IG_LIMIT_CONCURRENCY, 429,
		    "concurrency_limit_exceeded");
		assert_int_equal(m.w[i].res.rl.remaining_requests, 95);
		assert_in_range(m.w[i].res.retry_after_s, 119, 120);
	}
	/* settled in one iteration, with less than reserved */
	for (i = 0; i < 5; i++)
		ig_store_settle(c->store, m.w[i].lease, 4);
	spin(c, 20, NULL);
	l = admit(c, &w, &r);
	assert_non_null(l);
	assert_int_equal(r.rl.remaining_requests, 94);
	assert_int_equal(r.rl.remaining_tokens, 1000 - 5 * 4 - 20);
	settle(c, l, 20);
}

/* The same request id twice in one iteration: one lease, counted once. */
static void
test_batch_same_id(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 1, .limits.max_concurrent_requests = 2,
	    .limits.requests_per_minute = 10 };
	struct ig_admit_result r;
	struct ig_lease	*l;
	struct many	 m;

	store_open(c);
	admit_many(c, &w, 3, &m, "twice");
	assert_true(m.w[0].res.admitted);
	assert_true(m.w[1].res.admitted);
	assert_true(m.w[2].res.admitted);
	assert_int_equal(m.w[0].res.rl.remaining_requests, 9);
	assert_int_equal(m.w[1].res.rl.remaining_requests, 9);
	assert_int_equal(m.w[2].res.rl.remaining_requests, 9);
	/* one lease held: room for one more */
	l = admit(c, &w, &r);
	assert_non_null(l);
	assert_null(admit(c, &w, &r));
	assert_int_equal(r.limit, IG_LIMIT_CONCURRENCY);
	settle(c, l, 1);
	/* the retried ones settle nothing; the first one releases it */
	ig_store_settle(c->store, m.w[2].lease, 1);
	ig_store_settle(c->store, m.w[1].lease, 1);
	spin(c, 20, NULL);
	l = admit(c, &w, &r);
	assert_non_null(l);
	assert_null(admit(c, &w, &r));
	settle(c, m.w[0].lease, 1);
	settle(c, l, 1);
}

/* A settlement and a new admission of its request id in one iteration. */
static void
test_batch_settle_then_admit(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 5, .request_id = "again",
	    .limits.max_concurrent_requests = 1,
	    .limits.requests_per_minute = 10 };
	struct ig_admit_req req = { .tenant = c->tenant,
	    .request_id = "again", .input_tokens = 5 };
	struct waiter	 wt = { 0 };
	struct ig_admit_result r;
	struct ig_lease	*a;

	store_open(c);
	a = admit(c, &w, &r);
	assert_non_null(a);
	assert_int_equal(r.rl.remaining_requests, 9);
	req.limits = w.limits;
	ig_store_settle(c->store, a, 5);
	assert_non_null(ig_store_admit(c->store, &req, on_admit, &wt));
	spin(c, 3000, &wt.calls);
	assert_int_equal(wt.calls, 1);
	/* a new request (counted), not the lease just released */
	assert_true(wt.res.admitted);
	assert_int_equal(wt.res.rl.remaining_requests, 8);
	w.request_id = NULL;
	assert_null(admit(c, &w, &r));
	assert_int_equal(r.limit, IG_LIMIT_CONCURRENCY);
	settle(c, wt.lease, 5);
}

/* A lease that expired settles nothing, whoever holds its slot now. */
static void
test_expired_lease_settles_nothing(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 1, .limits.max_concurrent_requests = 1 };
	struct ig_admit_result r;
	struct ig_lease	*a, *b;

	c->conf.lease_ttl_ms = 200;
	store_open(c);
	a = admit(c, &w, &r);
	assert_non_null(a);
	spin(c, 300, NULL);
	b = admit(c, &w, &r);
	assert_non_null(b);
	settle(c, a, 1);	/* expired: b keeps its lease */
	assert_null(admit(c, &w, &r));
	assert_int_equal(r.limit, IG_LIMIT_CONCURRENCY);
	settle(c, b, 1);
	b = admit(c, &w, &r);
	assert_non_null(b);
	settle(c, b, 1);
}

/* Admissions made while the connection is being set up wait for it. */
static void
test_waits_for_connection(void **state)
{
	struct ctx	*c = *state;
	struct ig_admit_req req = { .tenant = c->tenant,
	    .request_id = "early", .input_tokens = 1,
	    .limits.requests_per_minute = 5 };
	struct waiter	 wt = { 0 };
	char		*err = NULL;

	c->store = ig_store_create(&c->conf, c->base, &err);
	assert_non_null(c->store);
	assert_non_null(ig_store_admit(c->store, &req, on_admit, &wt));
	spin(c, 3000, &wt.calls);
	assert_int_equal(wt.calls, 1);
	assert_true(wt.res.admitted);
	assert_false(wt.res.degraded);
	assert_int_equal(wt.res.rl.remaining_requests, 4);
	settle(c, wt.lease, 1);
}

/* Redis's clock, in seconds. */
static uint64_t
redis_time(redisContext *rc)
{
	redisReply	*rep = redisCommand(rc, "TIME");
	uint64_t	 s;

	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
	s = strtoull(rep->element[0]->str, NULL, 10);
	freeReplyObject(rep);
	return s;
}

/*
 * The minute slides: a bucket older than 60 s leaves the running sums
 * (and the hash), a younger one still counts, and a refusal's Retry-After
 * is when enough of the window has left it.
 */
static void
test_window_slides(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 10,
	    .limits.requests_per_minute = 4,
	    .limits.tokens_per_minute = 1000 };
	struct ig_admit_result r;
	struct ig_lease	*l;
	redisContext	*rc;
	redisReply	*rep;
	uint64_t	 s;

	store_open(c);
	rc = redis_sync();
	assert_non_null(rc);
	s = redis_time(rc);
	/* as if the tenant had been busy 85 s and 40 s ago */
	rep = redisCommand(rc, "HSET igtest:{%s}:s hi %llu R 6 T 600 "
	    "r%llu 4 t%llu 400 r%llu 2 t%llu 200", c->tenant,
	    (unsigned long long)s - 30, (unsigned long long)s - 85,
	    (unsigned long long)s - 85, (unsigned long long)s - 40,
	    (unsigned long long)s - 40);
	freeReplyObject(rep);
	l = admit(c, &w, &r);
	assert_non_null(l);
	assert_int_equal(r.rl.remaining_requests, 4 - 2 - 1);
	assert_int_equal(r.rl.remaining_tokens, 1000 - 200 - 10);
	rep = redisCommand(rc, "HEXISTS igtest:{%s}:s r%llu", c->tenant,
	    (unsigned long long)s - 85);
	assert_int_equal(rep->integer, 0);
	freeReplyObject(rep);
	settle(c, l, 10);
	l = admit(c, &w, &r);
	assert_non_null(l);
	settle(c, l, 10);
	/* 4 in the window: the next fits when the bucket of s-40 leaves */
	assert_null(admit(c, &w, &r));
	assert_refused(&r, IG_LIMIT_RPM, 429, "rate_limit_exceeded");
	assert_in_range(r.retry_after_s, 19, 22);
	assert_int_equal(r.rl.remaining_requests, 0);
	assert_in_range(r.rl.reset_requests_ms, 59000, 61000);
	/* long idle: everything left */
	rep = redisCommand(rc, "HSET igtest:{%s}:s hi %llu", c->tenant,
	    (unsigned long long)s - 200);
	freeReplyObject(rep);
	l = admit(c, &w, &r);
	assert_non_null(l);
	assert_int_equal(r.rl.remaining_requests, 3);
	assert_int_equal(r.rl.remaining_tokens, 990);
	settle(c, l, 10);
	redisFree(rc);
}

/*
 * Admissions whose replies were lost (Redis stopped, the connection
 * dropped) are released when Redis is back: whether they ran before the
 * release or not, nothing stays reserved.
 */
static void
test_lost_replies_release_tokens(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 100,
	    .limits.tokens_per_minute = 1000,
	    .limits.max_concurrent_requests = 5 };
	struct ig_store_stats st;
	struct ig_admit_result r;
	struct ig_lease	*l;
	uint64_t	 t0;
	int		 i;

	c->conf.on_failure = IG_STORE_FAIL_OPEN;
	c->conf.redis_timeout_ms = 50;
	store_open(c);
	redis_signal(SIGSTOP);
	for (i = 0; i < 4; i++) {
		l = admit(c, &w, &r);
		assert_non_null(l);
		assert_true(r.degraded);
		settle(c, l, 1);
	}
	redis_signal(SIGCONT);
	t0 = now_ms();
	do {
		spin(c, 10, NULL);
		ig_store_stats(c->store, &st);
	} while (st.degraded && now_ms() - t0 < 3000);
	assert_false(st.degraded);
	spin(c, 200, NULL);
	w.input = 10;
	l = admit(c, &w, &r);
	assert_non_null(l);
	assert_false(r.degraded);
	assert_int_equal(r.rl.remaining_tokens, 990);
	settle(c, l, 10);
}

/* --- Redis failures ---------------------------------------------------- */

static void
degraded_case(struct ctx *c, enum ig_store_failure mode)
{
	struct want	 w = { .input = 1, .limits.max_concurrent_requests = 4 };
	struct ig_store_stats st;
	struct ig_admit_result r;
	struct ig_lease	*l[3];
	int		 i;

	c->conf.on_failure = mode;
	c->conf.replicas = 2;
	c->conf.redis_timeout_ms = 100;
	store_open(c);
	ig_store_stats(c->store, &st);
	assert_false(st.degraded);
	redis_stop();
	for (i = 0; i < 3; i++) {
		l[i] = admit(c, &w, &r);
		assert_true(r.degraded);
	}
	ig_store_stats(c->store, &st);
	assert_true(st.degraded);
	assert_true(st.fallbacks >= 3);
	switch (mode) {
	case IG_STORE_FAIL_CLOSED:
		for (i = 0; i < 3; i++)
			assert_null(l[i]);
		assert_refused(&r, IG_LIMIT_STORE, 503, "store_unavailable");
		assert_int_equal(r.retry_after_s, 1);
		break;
	case IG_STORE_FAIL_OPEN:
		for (i = 0; i < 3; i++)
			assert_non_null(l[i]);
		break;
	case IG_STORE_FAIL_LOCAL:
		/* 4 concurrent across 2 replicas: 2 here */
		assert_non_null(l[0]);
		assert_non_null(l[1]);
		assert_null(l[2]);
		assert_int_equal(r.limit, IG_LIMIT_CONCURRENCY);
		break;
	}
	for (i = 0; i < 3; i++)
		if (l[i] != NULL)
			settle(c, l[i], 1);
	/* Redis back: used again within a second */
	assert_int_equal(redis_start(), 0);
	{
		uint64_t t0 = now_ms();

		do {
			spin(c, 10, NULL);
			ig_store_stats(c->store, &st);
		} while (st.degraded && now_ms() - t0 < 3000);
		assert_false(st.degraded);
		assert_true(now_ms() - t0 < 1200);
	}
	l[0] = admit(c, &w, &r);
	assert_non_null(l[0]);
	assert_false(r.degraded);
	settle(c, l[0], 1);
}

static void
test_down_closed(void **state)
{
	degraded_case(*state, IG_STORE_FAIL_CLOSED);
}

static void
test_down_open(void **state)
{
	degraded_case(*state, IG_STORE_FAIL_OPEN);
}

static void
test_down_local(void **state)
{
	degraded_case(*state, IG_STORE_FAIL_LOCAL);
}

/* A Redis that stops answering (SIGSTOP) keeps its connection open. */
static void
test_stalled(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 1, .limits.max_concurrent_requests = 1 };
	struct ig_store_stats st;
	struct ig_admit_result r;
	struct ig_lease	*l;
	uint64_t	 t0;
	int		 i;

	c->conf.on_failure = IG_STORE_FAIL_OPEN;
	c->conf.redis_timeout_ms = 50;
	store_open(c);
	assert_true(redis_pid > 0);
	redis_signal(SIGSTOP);
	/* Each admission times out; the connection is dropped once a round
	 * trip has waited 3 timeouts and 250 ms (REDIS_STALL_*). */
	for (i = 0; i < 20; i++) {
		t0 = now_ms();
		l = admit(c, &w, &r);
		assert_non_null(l);
		assert_true(r.degraded);
		assert_true(now_ms() - t0 < 400);
		settle(c, l, 1);
		ig_store_stats(c->store, &st);
		if (st.degraded)
			break;
	}
	assert_true(st.timeouts >= 1);
	assert_true(st.degraded);
	redis_signal(SIGCONT);
	t0 = now_ms();
	do {
		spin(c, 10, NULL);
		ig_store_stats(c->store, &st);
	} while (st.degraded && now_ms() - t0 < 3000);
	assert_false(st.degraded);
	/* the lease granted after the timeout was released, not leaked */
	spin(c, 100, NULL);
	l = admit(c, &w, &r);
	assert_non_null(l);
	assert_false(r.degraded);
	settle(c, l, 1);
}

/*
 * A Redis that stops answering while nothing is admitted: the watch's
 * PING finds it (REDIS_WATCH_MS, then the stall limit), not the first
 * admissions after the quiet time; it is used again once it answers.
 */
static void
test_stalled_while_idle(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 1, .limits.max_concurrent_requests = 1 };
	struct ig_store_stats st;
	struct ig_admit_result r;
	struct ig_lease	*l;
	uint64_t	 t0;

	c->conf.on_failure = IG_STORE_FAIL_OPEN;
	c->conf.redis_timeout_ms = 50;
	store_open(c);
	l = admit(c, &w, &r);
	assert_non_null(l);
	assert_false(r.degraded);
	settle(c, l, 1);
	spin(c, 100, NULL);
	redis_signal(SIGSTOP);
	t0 = now_ms();
	do {
		spin(c, 20, NULL);
		ig_store_stats(c->store, &st);
	} while (!st.degraded && now_ms() - t0 < 4000);
	redis_signal(SIGCONT);
	assert_true(st.degraded);
	assert_int_equal(st.timeouts, 0);	/* nothing was admitted */
	t0 = now_ms();
	do {
		spin(c, 10, NULL);
		ig_store_stats(c->store, &st);
	} while (st.degraded && now_ms() - t0 < 3000);
	assert_false(st.degraded);
	l = admit(c, &w, &r);
	assert_non_null(l);
	assert_false(r.degraded);
	settle(c, l, 1);
}

/*
 * A reply that is only late (Redis stopped for less than the stall
 * limit): the admissions that waited too long get their fallback, the
 * connection stays, and the next admission is answered by Redis.
 */
static void
test_late_reply(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 1, .limits.max_concurrent_requests = 5 };
	struct ig_store_stats st0, st;
	struct ig_admit_result r;
	struct ig_admit_req req;
	struct waiter	 wt[4];
	struct ig_lease	*l;
	char		 id[4][24];
	int		 i;

	c->conf.on_failure = IG_STORE_FAIL_OPEN;
	c->conf.redis_timeout_ms = 50;
	store_open(c);
	l = admit(c, &w, &r);
	assert_non_null(l);
	assert_false(r.degraded);
	settle(c, l, 1);
	ig_store_stats(c->store, &st0);
	redis_signal(SIGSTOP);
	/* Four admissions in one batch: all four time out at once (three
	 * used to be enough to drop the connection). */
	memset(wt, 0, sizeof(wt));
	memset(&req, 0, sizeof(req));
	req.tenant = c->tenant;
	req.limits = w.limits;
	req.input_tokens = 1;
	for (i = 0; i < 4; i++) {
		snprintf(id[i], sizeof(id[i]), "late-%d", i);
		req.request_id = id[i];
		assert_non_null(ig_store_admit(c->store, &req, on_admit, &wt[i]));
	}
	spin(c, 3000, &wt[3].calls);
	for (i = 0; i < 4; i++) {
		assert_int_equal(wt[i].calls, 1);
		assert_true(wt[i].res.degraded);
	}
	usleep(30 * 1000);		/* stopped ~80 ms in all: late, not dead */
	redis_signal(SIGCONT);
	for (i = 0; i < 4; i++)
		settle(c, wt[i].lease, 1);
	spin(c, 200, NULL);
	ig_store_stats(c->store, &st);
	assert_true(st.timeouts > st0.timeouts);
	assert_int_equal(st.reconnects, st0.reconnects);
	assert_false(st.degraded);
	l = admit(c, &w, &r);
	assert_non_null(l);
	assert_false(r.degraded);
	settle(c, l, 1);
}

/* SCRIPT FLUSH under a connected store: NOSCRIPT, re-sent with EVAL. */
static void
test_noscript(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 1, .limits.requests_per_minute = 5 };
	struct ig_admit_result r;
	struct ig_lease	*l;

	store_open(c);
	redis_cmd("SCRIPT FLUSH");
	l = admit(c, &w, &r);
	assert_non_null(l);
	assert_false(r.degraded);
	redis_cmd("SCRIPT FLUSH");
	settle(c, l, 1);
	l = admit(c, &w, &r);
	assert_non_null(l);
	assert_int_equal(r.rl.remaining_requests, 3);
	settle(c, l, 1);
}

/* The keys carry the tenant as a hash tag. */
static void
test_keys(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 1 };
	struct ig_admit_result r;
	struct ig_lease	*l;
	redisContext	*rc;
	redisReply	*rep;

	store_open(c);
	l = admit(c, &w, &r);
	assert_non_null(l);
	rc = redis_sync();
	assert_non_null(rc);
	rep = redisCommand(rc, "ZSCORE igtest:{%s}:leases req-1", c->tenant);
	assert_int_equal(rep->type, REDIS_REPLY_STRING);
	freeReplyObject(rep);
	settle(c, l, 1);
	rep = redisCommand(rc, "EXISTS igtest:{%s}:leases", c->tenant);
	freeReplyObject(rep);
	rep = redisCommand(rc, "ZSCORE igtest:{%s}:leases req-1", c->tenant);
	assert_int_equal(rep->type, REDIS_REPLY_NIL);
	freeReplyObject(rep);
	redisFree(rc);
}

/* --- store.slices ------------------------------------------------------ */

/* A second store (another worker) on the same base, connected. */
static struct ig_store *
store_second(struct ctx *c)
{
	struct ig_store_stats st;
	struct ig_store	*s;
	char		*err = NULL;
	uint64_t	 end = now_ms() + 3000;

	if ((s = ig_store_create(&c->conf, c->base, &err)) == NULL)
		fail_msg("ig_store_create: %s", err);
	do {
		spin(c, 5, NULL);
		ig_store_stats(s, &st);
	} while (st.degraded && now_ms() < end);
	return s;
}

/* Drains STORE (a worker's exit): what its slices hold goes back. */
static void
store_drained(struct ctx *c, struct ig_store *s)
{
	uint64_t	 end = now_ms() + 3000;

	ig_store_drain(s);
	while (ig_store_busy(s) && now_ms() < end)
		spin(c, 5, NULL);
	assert_false(ig_store_busy(s));
}

/* The tenant's numbers in Redis: R, T, today's tokens, live leases. */
static void
tenant_numbers(struct ctx *c, uint64_t *req, uint64_t *tok, uint64_t *day,
    uint64_t *leases)
{
	redisContext	*rc = redis_sync();
	redisReply	*rep;
	uint64_t	 d = (uint64_t)time(NULL) / 86400, now;

	assert_non_null(rc);
	rep = redisCommand(rc, "HMGET igtest:{%s}:s R T d%llu", c->tenant,
	    (unsigned long long)d);
	assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
	*req = rep->element[0]->str ? strtoull(rep->element[0]->str, NULL,
	    10) : 0;
	*tok = rep->element[1]->str ? strtoull(rep->element[1]->str, NULL,
	    10) : 0;
	*day = rep->element[2]->str ? strtoull(rep->element[2]->str, NULL,
	    10) : 0;
	freeReplyObject(rep);
	rep = redisCommand(rc, "TIME");
	assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
	now = strtoull(rep->element[0]->str, NULL, 10) * 1000 +
	    strtoull(rep->element[1]->str, NULL, 10) / 1000;
	freeReplyObject(rep);
	/* live ones: those expired but not yet swept are not */
	rep = redisCommand(rc, "ZCOUNT igtest:{%s}:leases (%llu +inf",
	    c->tenant, (unsigned long long)now);
	*leases = (uint64_t)rep->integer;
	freeReplyObject(rep);
	redisFree(rc);
}

/*
 * Once the slice holds a grant, admissions are answered without Redis:
 * they go on while it is stopped, and none is degraded.
 */
static void
test_slice_without_round_trip(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 3, .output = 2,
	    .limits.max_concurrent_requests = 1000,
	    .limits.requests_per_minute = 1000000,
	    .limits.tokens_per_minute = 100000000 };
	struct ig_store_stats st0, st1;
	struct ig_admit_result r;
	struct ig_lease	*l[20];
	struct many	 m;
	int		 i, k;

	c->conf.slice_period_ms = 1000;
	store_open(c);
	/* demand: the first go through Redis, their asks size the slice */
	for (k = 0; k < 4; k++) {
		admit_many(c, &w, 16, &m, NULL);
		for (i = 0; i < 16; i++)
			ig_store_settle(c->store, m.w[i].lease, 5);
		spin(c, 30, NULL);
	}
	ig_store_stats(c->store, &st0);
	assert_true(st0.slice_asks >= 1);
	redis_signal(SIGSTOP);
	for (i = 0; i < 20; i++) {
		l[i] = admit(c, &w, &r);
		assert_non_null(l[i]);
		assert_false(r.degraded);
		assert_int_equal(r.rl.limit_requests, 1000000);
	}
	ig_store_stats(c->store, &st1);
	assert_int_equal(st1.slice_admissions - st0.slice_admissions, 20);
	assert_int_equal(st1.fallbacks, st0.fallbacks);
	redis_signal(SIGCONT);
	for (i = 0; i < 20; i++)
		ig_store_settle(c->store, l[i], 5);
	store_drained(c, c->store);
}

/*
 * Two workers' slices and the admissions they send to Redis never take
 * more than the limit between them; after both drain, Redis holds the
 * real usage (requests, tokens, no lease).
 */
static void
test_slice_two_workers_rpm(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 2, .output = 2,
	    .limits.requests_per_minute = 40 };
	struct ig_admit_result r;
	struct ig_store	*s2;
	struct ig_lease	*l;
	uint64_t	 req, tok, day, leases;
	int		 i, admitted = 0;

	store_open(c);
	s2 = store_second(c);
	for (i = 0; i < 100; i++) {
		l = admit_on(c, i % 2 ? s2 : c->store, &w, &r);
		if (l == NULL) {
			assert_refused(&r, IG_LIMIT_RPM, 429,
			    "rate_limit_exceeded");
			continue;
		}
		admitted++;
		ig_store_settle(i % 2 ? s2 : c->store, l, 3);
	}
	assert_int_equal(admitted, 40);
	store_drained(c, c->store);
	store_drained(c, s2);
	tenant_numbers(c, &req, &tok, &day, &leases);
	assert_int_equal(req, 40);
	assert_int_equal(tok, 40 * 3);
	assert_int_equal(day, 40 * 3);
	assert_int_equal(leases, 0);
	ig_store_free(s2);
}

/*
 * The same for concurrency; a slot one worker's slice frees is of use to
 * the other soon after, not a period later (at the limit a slice gives a
 * freed slot back at once).
 */
static void
test_slice_two_workers_concurrency(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 1, .limits.max_concurrent_requests = 16 };
	struct ig_admit_result r;
	struct ig_store	*s2;
	struct ig_lease	*a[32], *b[32], *x = NULL;
	uint64_t	 req, tok, day, leases, end;
	int		 i, na = 0, nb = 0, k = -1;

	c->conf.slice_period_ms = 1000;	/* idle slots would wait that long */
	store_open(c);
	s2 = store_second(c);
	/* the first worker's demand: its slice takes slots (16 / 8 = 2) */
	for (i = 0; i < 12; i++) {
		a[na++] = admit(c, &w, &r);
		assert_non_null(a[na - 1]);
		spin(c, 10, NULL);
	}
	/* the second takes what is left, and no more */
	for (i = 0; i < 20; i++) {
		if ((b[nb] = admit_on(c, s2, &w, &r)) != NULL)
			nb++;
		else
			assert_int_equal(r.limit, IG_LIMIT_CONCURRENCY);
	}
	assert_int_equal(na + nb, 16);
	for (i = 0; i < na; i++)
		if (a[i]->where == LEASE_SLICE)
			k = i;
	assert_true(k >= 0);
	assert_null(admit_on(c, s2, &w, &r));
	ig_store_settle(c->store, a[k], 1);
	a[k] = NULL;
	end = now_ms() + 500;
	while (x == NULL && now_ms() < end) {
		x = admit_on(c, s2, &w, &r);
		if (x == NULL)
			spin(c, 10, NULL);
	}
	assert_non_null(x);
	ig_store_settle(s2, x, 1);
	for (i = 0; i < na; i++)
		if (a[i] != NULL)
			ig_store_settle(c->store, a[i], 1);
	for (i = 0; i < nb; i++)
		ig_store_settle(s2, b[i], 1);
	store_drained(c, c->store);
	store_drained(c, s2);
	tenant_numbers(c, &req, &tok, &day, &leases);
	assert_int_equal(leases, 0);
	assert_int_equal(req, 17);
	ig_store_free(s2);
}

/* Many requests, mostly from the slice: Redis ends with the exact usage. */
static void
test_slice_exact_usage(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 20, .output = 10,
	    .limits.max_concurrent_requests = 1000,
	    .limits.requests_per_minute = 1000000,
	    .limits.tokens_per_minute = 1000000000,
	    .limits.daily_token_budget = 1000000000 };
	struct ig_store_stats st;
	struct many	 m;
	uint64_t	 req, tok, day, leases;
	int		 i, k;

	store_open(c);
	for (k = 0; k < 10; k++) {
		admit_many(c, &w, 16, &m, NULL);
		for (i = 0; i < 16; i++) {
			assert_true(m.w[i].res.admitted);
			ig_store_settle(c->store, m.w[i].lease,
			    i == 0 ? IG_USAGE_UNKNOWN : 7);
		}
		spin(c, 10, NULL);
	}
	ig_store_stats(c->store, &st);
	assert_true(st.slice_admissions > 80);
	store_drained(c, c->store);
	tenant_numbers(c, &req, &tok, &day, &leases);
	assert_int_equal(req, 160);
	/* one in 16 kept its reservation (usage unknown) */
	assert_int_equal(tok, 10 * (30 + 15 * 7));
	assert_int_equal(day, tok);
	assert_int_equal(leases, 0);
}

/*
 * An ask whose reply is lost after it ran (the connection dropped while
 * Redis was stopped) is sent again, and the script runs it once: what it
 * granted is charged once and given back once.
 */
static void
test_slice_lost_ask_runs_once(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 1 };
	struct ig_store_stats st0, st;
	struct ig_admit_result r;
	struct ig_lease	*l[16];
	struct many	 m;
	uint64_t	 req, tok, day, leases, t0;
	int		 i;

	c->conf.on_failure = IG_STORE_FAIL_OPEN;
	c->conf.redis_timeout_ms = 50;
	c->conf.slice_period_ms = 2000;
	store_open(c);
	/* four through Redis; their ask grants 4 x 2000 / 500 + 1 = 17 */
	admit_many(c, &w, 4, &m, NULL);
	for (i = 0; i < 4; i++)
		l[i] = m.w[i].lease;
	spin(c, 50, NULL);
	ig_store_stats(c->store, &st0);
	redis_signal(SIGSTOP);
	/* from the grant; past half of it the next ask goes, and stalls */
	for (i = 4; i < 14; i++) {
		l[i] = admit(c, &w, &r);
		assert_non_null(l[i]);
		assert_false(r.degraded);
	}
	ig_store_stats(c->store, &st);
	assert_int_equal(st.slice_admissions, st0.slice_admissions + 10);
	assert_int_equal(st.slice_asks, st0.slice_asks + 1);
	/* dropped, not answering (the watch: within about a second) */
	t0 = now_ms();
	do {
		spin(c, 10, NULL);
		ig_store_stats(c->store, &st);
	} while (!st.degraded && now_ms() - t0 < 3000);
	assert_true(st.degraded);
	redis_signal(SIGCONT);		/* the lost ask runs now */
	t0 = now_ms();
	do {
		spin(c, 10, NULL);
		ig_store_stats(c->store, &st);
	} while ((st.degraded || st.slice_asks < st0.slice_asks + 2) &&
	    now_ms() - t0 < 3000);
	assert_false(st.degraded);
	assert_true(st.slice_asks >= st0.slice_asks + 2);	/* sent again */
	for (i = 0; i < 14; i++)
		ig_store_settle(c->store, l[i], 1);
	store_drained(c, c->store);
	/* the grant of the ask that ran twice was charged once */
	tenant_numbers(c, &req, &tok, &day, &leases);
	assert_int_equal(req, 14);
	assert_int_equal(tok, 14);
	assert_int_equal(leases, 0);
}

/* HGET of the tenant's counters hash, as a number (0 when absent). */
static uint64_t
tenant_field(const char *tenant, const char *field)
{
	redisContext	*rc = redis_sync();
	redisReply	*rep;
	uint64_t	 v;

	assert_non_null(rc);
	rep = redisCommand(rc, "HGET igtest:{%s}:s %s", tenant, field);
	v = rep->type == REDIS_REPLY_STRING ? strtoull(rep->str, NULL, 10) : 0;
	freeReplyObject(rep);
	redisFree(rc);
	return v;
}

/*
 * An ask that goes alone (no admission beside it) carries its slice's
 * limits, not those of whatever batch the struct served before (here
 * another tenant's, with no rate limit): its grants stay under the limit.
 */
static void
test_slice_ask_alone_has_its_limits(void **state)
{
	struct ctx	*c = *state;
	char		 other[80];
	struct want	 x = { .input = 1, .tenant = other,
	    .limits.tokens_per_minute = 1000000000 };
	struct want	 y = { .input = 1, .output = 1,
	    .limits.requests_per_minute = 200 };
	struct ig_admit_result r;
	struct ig_lease	*l;
	struct many	 m;
	int		 i, k, admitted = 0;

	snprintf(other, sizeof(other), "%s-x", c->tenant);
	store_open(c);
	for (k = 0; k < 30; k++) {
		if ((l = admit(c, &x, &r)) != NULL)
			ig_store_settle(c->store, l, 1);
		admit_many(c, &y, 8, &m, NULL);
		for (i = 0; i < 8; i++)
			if (m.w[i].lease != NULL) {
				admitted++;
				ig_store_settle(c->store, m.w[i].lease, 2);
			}
		spin(c, 5, NULL);
		assert_true(tenant_field(c->tenant, "R") <= 200);
	}
	assert_int_equal(admitted, 200);
	store_drained(c, c->store);
	assert_int_equal(tenant_field(c->tenant, "R"), 200);
}

/*
 * A concurrency limit under 8 gives a slice no slot, and a slice without
 * a slot admits nothing: it is granted no requests or tokens either
 * (they would only count against the admissions through Redis).
 */
static void
test_slice_no_slot_no_grant(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 1, .limits.max_concurrent_requests = 4,
	    .limits.requests_per_minute = 80 };
	struct ig_admit_result r;
	struct ig_store_stats st;
	struct ig_lease	*l;
	int		 i;

	store_open(c);
	for (i = 0; i < 20; i++) {
		l = admit(c, &w, &r);
		assert_non_null(l);
		settle(c, l, 1);
	}
	ig_store_stats(c->store, &st);
	assert_int_equal(st.slice_admissions, 0);
	assert_int_equal(tenant_field(c->tenant, "R"), 20);
}

/*
 * A grant's tokens are its day's: one made just before the budget day
 * rolls is not used after it (they would count against the day before).
 */
static void
test_slice_grant_ends_with_its_day(void **state)
{
	struct ctx	*c = *state;
	struct want	 w = { .input = 6, .output = 4,
	    .limits.max_concurrent_requests = 1000,
	    .limits.requests_per_minute = 1000000,
	    .limits.daily_token_budget = 1000000000 };
	struct ig_admit_result r;
	struct ig_lease	*l;
	struct many	 m;
	redisContext	*rc;
	redisReply	*rep;
	uint64_t	 t = (uint64_t)time(NULL), day, used;
	int		 i, k;

	/* the budget day rolls 2 s from now (at a second's start) */
	c->conf.day_offset_s = (t + 2) % 86400;
	c->conf.slice_period_ms = 10000;
	store_open(c);
	for (k = 0; k < 3; k++) {
		admit_many(c, &w, 8, &m, NULL);
		for (i = 0; i < 8; i++)
			ig_store_settle(c->store, m.w[i].lease, 10);
		spin(c, 20, NULL);
	}
	while ((uint64_t)time(NULL) < t + 2)
		spin(c, 20, NULL);
	spin(c, 300, NULL);
	day = ((uint64_t)time(NULL) - c->conf.day_offset_s) / 86400;
	for (i = 0; i < 10; i++) {
		l = admit(c, &w, &r);
		assert_non_null(l);
		ig_store_settle(c->store, l, 10);
	}
	store_drained(c, c->store);
	rc = redis_sync();
	assert_non_null(rc);
	rep = redisCommand(rc, "HGET igtest:{%s}:s d%llu", c->tenant,
	    (unsigned long long)day);
	assert_int_equal(rep->type, REDIS_REPLY_STRING);
	used = strtoull(rep->str, NULL, 10);
	freeReplyObject(rep);
	redisFree(rc);
	assert_int_equal(used, 10 * 10);
}

/* The batch script with only ASK (writer feed...): its reply. */
static redisReply *
script_ask(redisContext *rc, const char *tenant, const char *seq,
    const char *want_req, const char *delta_sec, const char *delta)
{
	char		 keys[4][128], day[24];
	const char	*argv[32];
	size_t		 n = 0;

	snprintf(keys[0], sizeof(keys[0]), "igtest:{%s}:leases", tenant);
	snprintf(keys[1], sizeof(keys[1]), "igtest:{%s}:s", tenant);
	snprintf(keys[2], sizeof(keys[2]), "igtest:{%s}:gone", tenant);
	snprintf(keys[3], sizeof(keys[3]), "igtest:{%s}:w:feedfeedfeedfeed",
	    tenant);
	argv[n++] = "EVAL";
	argv[n++] = store_redis_batch_script();
	argv[n++] = "4";
	argv[n++] = keys[0]; argv[n++] = keys[1];
	argv[n++] = keys[2]; argv[n++] = keys[3];
	/* ttl, day offset, no settlement, admission or group; rpm 1000 */
	argv[n++] = "120000"; argv[n++] = "0"; argv[n++] = "0";
	argv[n++] = "0"; argv[n++] = "0"; argv[n++] = "0";
	argv[n++] = "1000"; argv[n++] = "0"; argv[n++] = "0";
	argv[n++] = "0";
	/* the ask: writer, seq, no slot, requests and tokens wanted */
	argv[n++] = "feedfeedfeedfeed"; argv[n++] = seq;
	argv[n++] = "0"; argv[n++] = "0"; argv[n++] = "0";
	argv[n++] = want_req; argv[n++] = want_req;
	if (delta_sec != NULL) {
		snprintf(day, sizeof(day), "%llu", (unsigned long long)
		    (strtoull(delta_sec, NULL, 10) / 86400));
		argv[n++] = delta_sec; argv[n++] = day;
		argv[n++] = delta; argv[n++] = delta;
	}
	return redisCommandArgv(rc, (int)n, argv, NULL);
}

/*
 * A late copy of an older ask (a dropped connection's data, read after
 * the asks that followed it ran) runs not at all; the same ask again
 * answers its first run's grant.
 */
static void
test_slice_stale_ask_runs_not(void **state)
{
	struct ctx	*c = *state;
	redisContext	*rc = redis_sync();
	redisReply	*rep;
	char		 sec[24];

	assert_non_null(rc);
	rep = script_ask(rc, c->tenant, "2", "10", NULL, NULL);
	assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
	assert_int_equal(rep->elements, 1 + 8);
	snprintf(sec, sizeof(sec), "%lld", rep->element[1]->integer);
	assert_int_equal(rep->element[3]->integer, 10);	/* granted */
	freeReplyObject(rep);
	assert_int_equal(tenant_field(c->tenant, "R"), 10);
	/* the next gives it back and is granted as much */
	rep = script_ask(rc, c->tenant, "3", "10", sec, "-10");
	assert_int_equal(rep->element[3]->integer, 10);
	freeReplyObject(rep);
	assert_int_equal(tenant_field(c->tenant, "R"), 10);
	/* the same again: its first grant, nothing run */
	rep = script_ask(rc, c->tenant, "3", "10", sec, "-10");
	assert_int_equal(rep->element[3]->integer, 10);
	freeReplyObject(rep);
	assert_int_equal(tenant_field(c->tenant, "R"), 10);
	/* the older one, late: nothing */
	rep = script_ask(rc, c->tenant, "2", "10", NULL, NULL);
	assert_int_equal(rep->element[3]->integer, 0);
	freeReplyObject(rep);
	assert_int_equal(tenant_field(c->tenant, "R"), 10);
	redisFree(rc);
}

#define BOTH(f)								\
	cmocka_unit_test_prestate_setup_teardown(f, ctx_setup,		\
	    ctx_teardown, &kind_local),					\
	cmocka_unit_test_prestate_setup_teardown(f, ctx_setup,		\
	    ctx_teardown, &kind_redis)
#define REDIS(f)							\
	cmocka_unit_test_prestate_setup_teardown(f, ctx_setup,		\
	    ctx_teardown, &kind_redis)
#define SLICES(f)							\
	cmocka_unit_test_prestate_setup_teardown(f, ctx_setup,		\
	    ctx_teardown, &kind_slices)
#define ALL(f)	BOTH(f), SLICES(f)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		ALL(test_concurrency),
		ALL(test_rpm),
		ALL(test_tpm),
		ALL(test_daily),
		ALL(test_settle_lowers_remaining),
		ALL(test_lease_idempotent),
		ALL(test_lease_expiry),
		ALL(test_cancel),
		ALL(test_shadow),
		ALL(test_order),
		ALL(test_batch_in_order),
		/* a batch sent early (the same id twice) while the slice's ask is
		 * out sees its grant counted: not run with slices */
		BOTH(test_batch_same_id),
		ALL(test_batch_settle_then_admit),
		ALL(test_expired_lease_settles_nothing),
		REDIS(test_waits_for_connection),
		REDIS(test_window_slides),
		REDIS(test_lost_replies_release_tokens),
		REDIS(test_keys),
		REDIS(test_noscript),
		REDIS(test_down_closed),
		REDIS(test_down_open),
		REDIS(test_down_local),
		REDIS(test_stalled),
		REDIS(test_stalled_while_idle),
		REDIS(test_late_reply),
		SLICES(test_slice_without_round_trip),
		SLICES(test_slice_two_workers_rpm),
		SLICES(test_slice_two_workers_concurrency),
		SLICES(test_slice_exact_usage),
		SLICES(test_slice_lost_ask_runs_once),
		SLICES(test_slice_ask_alone_has_its_limits),
		SLICES(test_slice_no_slot_no_grant),
		SLICES(test_slice_grant_ends_with_its_day),
		SLICES(test_slice_stale_ask_runs_not),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
