/*
 * storeload: drives one ig_store the way a busy gateway worker does, to
 * measure what the store costs per request on both sides of the wire.
 *
 *   storeload [-r host:port] [-p redis-pid] [-n requests] [-c in-flight]
 *             [-b per-iteration] [-t tenants] [-C max-concurrent]
 *             [-R requests-per-minute] [-S]
 *
 * Keeps C admissions in flight (one tenant, or T round-robin), settles each
 * admitted request as soon as its answer arrives and admits the next one,
 * until N requests were answered. -b B completes at most B requests per
 * event-loop iteration (the rest wait for the next one), to see how the
 * store behaves when a loop iteration carries few requests; 0 (the
 * default) completes every answer at once. Without -r the local store is
 * used. The limits are the bench's (every check runs, none refuses)
 * unless -C or -R set one low, to measure refusals. -S turns
 * store.slices on (period 1s).
 *
 * Prints the driver's own CPU per request (the gateway side: the store,
 * hiredis, libevent) and, with -p or through INFO, redis-server's CPU per
 * request (admission + settlement). CPU time, not wall-clock time, is the
 * measure: the machine is shared.
 *
 * Built by `make storeload` (build/bench/storeload); not part of make test.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "infergate/store.h"

struct load {
	struct event_base *base;
	struct ig_store	*store;
	struct event	*drain;		/* -b: the next iteration's share */
	uint64_t	 want, sent, answered, admitted, refused, degraded;
	unsigned	 batch;		/* -b */
	unsigned	 ntenants;
	char		 tenant[16][48];
	struct ig_tenant_limits limits;
	struct ig_lease	**ready;	/* answered, waiting for -b */
	size_t		 nready, capready;
	uint64_t	 seq;
};

static void	 load_next(struct load *);

static void
load_finish(struct load *ld, struct ig_lease *lease)
{
	if (lease != NULL)
		ig_store_settle(ld->store, lease, 25);
	load_next(ld);
}

static void
on_admit(const struct ig_admit_result *res, struct ig_lease *lease, void *arg)
{
	struct load	*ld = arg;
	struct timeval	 zero = { 0, 0 };

	ld->answered++;
	if (res->admitted)
		ld->admitted++;
	else
		ld->refused++;
	if (res->degraded)
		ld->degraded++;
	if (ld->batch == 0) {
		load_finish(ld, lease);
		return;
	}
	if (ld->nready == ld->capready) {
		ld->capready = ld->capready ? ld->capready * 2 : 64;
		ld->ready = realloc(ld->ready, ld->capready * sizeof(*ld->ready));
		if (ld->ready == NULL)
			abort();
	}
	ld->ready[ld->nready++] = lease;
	evtimer_add(ld->drain, &zero);
}

/* -b: completes at most B answered requests in this loop iteration. */
static void
load_drain(evutil_socket_t fd, short what, void *arg)
{
	struct load	*ld = arg;
	struct timeval	 zero = { 0, 0 };
	size_t		 n = ld->nready < ld->batch ? ld->nready : ld->batch;
	size_t		 i;
	struct ig_lease	*take[256];

	if (n > 256)
		n = 256;
	memcpy(take, ld->ready, n * sizeof(*take));
	memmove(ld->ready, ld->ready + n, (ld->nready - n) * sizeof(*take));
	ld->nready -= n;
	if (ld->nready > 0)
		evtimer_add(ld->drain, &zero);
	for (i = 0; i < n; i++)
		load_finish(ld, take[i]);
}

static void
load_next(struct load *ld)
{
	struct ig_admit_req req;
	char		 id[48];

	if (ld->sent >= ld->want) {
		if (ld->answered >= ld->want)
			event_base_loopbreak(ld->base);
		return;
	}
	ld->sent++;
	snprintf(id, sizeof(id), "storeload-%ld-%" PRIu64, (long)getpid(),
	    ++ld->seq);
	memset(&req, 0, sizeof(req));
	req.tenant = ld->tenant[ld->seq % ld->ntenants];
	req.request_id = id;
	req.limits = ld->limits;
	req.input_tokens = 10;
	req.output_tokens = 20;
	if (ig_store_admit(ld->store, &req, on_admit, ld) == NULL) {
		fprintf(stderr, "storeload: ig_store_admit: out of memory\n");
		exit(1);
	}
}

static double
cpu_self_us(void)
{
	struct rusage	 ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
	    ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

/* utime + stime of PID from /proc, in microseconds; -1 when unreadable. */
static double
cpu_pid_us(long pid)
{
	char		 path[64], buf[1024], *p;
	unsigned long	 ut, st;
	FILE		*f;
	size_t		 n;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* after "pid (comm) ": state is field 3, utime 14, stime 15 */
	if ((p = strrchr(buf, ')')) == NULL ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
	    &ut, &st) != 2)
		return -1;
	return (double)(ut + st) * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

/* used_cpu_sys + used_cpu_user of the Redis at ADDR, from INFO cpu. */
static double
cpu_info_us(const char *addr)
{
	char		 host[64];
	const char	*colon = strrchr(addr, ':'), *p;
	redisContext	*c;
	redisReply	*r;
	double		 us = -1, v;

	if (colon == NULL || (size_t)(colon - addr) >= sizeof(host))
		return -1;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	if ((c = redisConnect(host, atoi(colon + 1))) == NULL || c->err) {
		redisFree(c);
		return -1;
	}
	if ((r = redisCommand(c, "INFO cpu")) != NULL &&
	    r->type == REDIS_REPLY_STRING) {
		us = 0;
		if ((p = strstr(r->str, "used_cpu_sys:")) != NULL &&
		    sscanf(p + 13, "%lf", &v) == 1)
			us += v * 1e6;
		if ((p = strstr(r->str, "used_cpu_user:")) != NULL &&
		    sscanf(p + 14, "%lf", &v) == 1)
			us += v * 1e6;
	}
	freeReplyObject(r);
	redisFree(c);
	return us;
}

int
main(int argc, char **argv)
{
	struct load	 ld;
	struct ig_store_conf conf;
	struct ig_store_stats st;
	const char	*addr = NULL;
	long		 pid = 0;
	unsigned	 conc = 50, i;
	double		 c0, c1, r0 = -1, r1 = -1;
	char		*err = NULL;
	int		 ch;
	bool		 slices = false;

	memset(&ld, 0, sizeof(ld));
	ld.want = 200000;
	ld.ntenants = 1;
	/* The bench's limits: every check runs, none refuses. */
	ld.limits.max_concurrent_requests = 100000;
	ld.limits.requests_per_minute = 100000000;
	ld.limits.tokens_per_minute = 1000000000000ULL;
	ld.limits.daily_token_budget = 1000000000000ULL;
	while ((ch = getopt(argc, argv, "r:p:n:c:b:t:C:R:S")) != -1) {
		switch (ch) {
		case 'r': addr = optarg; break;
		case 'p': pid = atol(optarg); break;
		case 'n': ld.want = strtoull(optarg, NULL, 10); break;
		case 'c': conc = (unsigned)atoi(optarg); break;
		case 'b': ld.batch = (unsigned)atoi(optarg); break;
		case 't': ld.ntenants = (unsigned)atoi(optarg); break;
		case 'C':
			ld.limits.max_concurrent_requests =
			    strtoull(optarg, NULL, 10);
			break;
		case 'R':
			ld.limits.requests_per_minute =
			    strtoull(optarg, NULL, 10);
			break;
		case 'S': slices = true; break;
		default:
			fprintf(stderr, "usage: storeload [-r host:port] "
			    "[-p redis-pid] [-n requests] [-c in-flight] "
			    "[-b per-iteration] [-t tenants] "
			    "[-C max-concurrent] [-R requests-per-minute] "
			    "[-S]\n");
			return 2;
		}
	}
	if (ld.ntenants < 1 || ld.ntenants > 16)
		ld.ntenants = 1;
	for (i = 0; i < ld.ntenants; i++)
		snprintf(ld.tenant[i], sizeof(ld.tenant[i]), "load-%ld-%ld-%u",
		    (long)getpid(), (long)time(NULL), i);
	memset(&conf, 0, sizeof(conf));
	conf.type = addr != NULL ? IG_STORE_REDIS : IG_STORE_LOCAL;
	conf.redis_address = (char *)addr;
	conf.redis_timeout_ms = 2000;
	conf.on_failure = IG_STORE_FAIL_CLOSED;
	conf.replicas = 1;
	conf.lease_ttl_ms = 120000;
	conf.slices = slices;
	conf.slice_period_ms = 1000;
	ld.base = event_base_new();
	ld.drain = evtimer_new(ld.base, load_drain, &ld);
	if ((ld.store = ig_store_create(&conf, ld.base, &err)) == NULL) {
		fprintf(stderr, "storeload: %s\n", err);
		return 1;
	}
	if (addr != NULL) {
		struct timeval	 tick = { 0, 10000 };

		for (i = 0; i < 300; i++) {
			ig_store_stats(ld.store, &st);
			if (!st.degraded)
				break;
			event_base_loopexit(ld.base, &tick);
			event_base_dispatch(ld.base);
		}
		if (st.degraded) {
			fprintf(stderr, "storeload: redis %s not ready\n", addr);
			return 1;
		}
		r0 = pid > 0 ? cpu_pid_us(pid) : cpu_info_us(addr);
	}
	c0 = cpu_self_us();
	for (i = 0; i < conc; i++)
		load_next(&ld);
	event_base_dispatch(ld.base);
	c1 = cpu_self_us();
	if (addr != NULL) {
		/* let the last settlements land before reading Redis's CPU */
		struct timeval	 tick = { 0, 200000 };

		event_base_loopexit(ld.base, &tick);
		event_base_dispatch(ld.base);
		/* as a draining worker: what the slices hold goes back */
		ig_store_drain(ld.store);
		for (i = 0; i < 250 && ig_store_busy(ld.store); i++) {
			tick.tv_usec = 20000;
			event_base_loopexit(ld.base, &tick);
			event_base_dispatch(ld.base);
		}
		r1 = pid > 0 ? cpu_pid_us(pid) : cpu_info_us(addr);
	}
	printf("requests %" PRIu64 " admitted %" PRIu64 " refused %" PRIu64
	    " degraded %" PRIu64 "\n", ld.answered, ld.admitted, ld.refused,
	    ld.degraded);
	printf("driver cpu %.3f us/request\n", (c1 - c0) / (double)ld.answered);
	ig_store_stats(ld.store, &st);
	if (slices)
		printf("slices: %" PRIu64 " admissions, %" PRIu64 " asks\n",
		    st.slice_admissions, st.slice_asks);
	if (r0 >= 0 && r1 >= 0)
		printf("redis cpu %.3f us/request\n",
		    (r1 - r0) / (double)ld.answered);
	ig_store_free(ld.store);
	event_free(ld.drain);
	event_base_free(ld.base);
	free(ld.ready);
	return 0;
}
