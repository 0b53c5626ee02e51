/*
 * DNS backends (`dns`, `port`, `resolve_every`), on the main thread's
 * event base with libevent's evdns: every name is resolved (A and AAAA,
 * /etc/hosts first) when a config first names it, then every
 * resolve_every, and each address it gives is a backend of its own, as
 * Envoy's STRICT_DNS clusters and nginx's `server ... resolve` do with a
 * Kubernetes headless Service.
 *
 *   - An answer with addresses replaces the set; a name that does not
 *     exist or has no address (NXDOMAIN, NODATA: a headless Service with
 *     no ready pod) empties it; a failure (timeout, SERVFAIL, no name
 *     server) keeps the last set, so a DNS outage never empties a pool.
 *   - A set that changed rebuilds the routing catalog of the published
 *     config (rs_changed: main.c derives a snapshot that shares the rest)
 *     and publishes it; requests in flight keep their backend.
 *   - A config is published only once every name it adds has had a first
 *     answer or failure (rs_warm), so a start or a reload never opens a
 *     pool empty just because its name was not looked up yet (Envoy's
 *     cluster warming). The start waits in its own loop for that
 *     (resolver_wait); a reload waits on the main loop.
 *
 * Names are keyed by "host:port"; a name neither the published config nor
 * the one warming uses is forgotten (its query, if any, is cancelled and
 * the entry freed from its callback).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "infergate/config.h"
#include "infergate/log.h"
#include "infergate/routing.h"
#include "gateway.h"

#define RS_MAX_ADDRS	256	/* per name; more are ignored */
#define RS_EVDNS_MAX	32	/* what libevent 2.1 keeps of an A answer */

enum rs_result { RS_OK, RS_EMPTY, RS_FAILED, RS_NRESULTS };

static const char *const rs_result_names[RS_NRESULTS] = {
	[RS_OK] = "ok", [RS_EMPTY] = "empty", [RS_FAILED] = "failed" };

struct rs_name {
	TAILQ_ENTRY(rs_name) entry;
	char		*host;
	uint64_t	 port;
	char		 label[272];	/* "host:port" */
	uint64_t	 every_ms;	/* the shortest resolve_every naming it */
	struct ig_addr	*addrs;		/* sorted, distinct */
	size_t		 naddrs;
	bool		 answered;	/* a first answer or failure came */
	bool		 querying;
	bool		 failing;	/* the last one failed (logged once) */
	bool		 changed;	/* since the last rs_notify */
	bool		 in_cur;	/* named by the published config */
	bool		 in_warm;	/* named by the config warming */
	bool		 dead;		/* forgotten: freed by its callback */
	struct evdns_getaddrinfo_request *req;
	struct evdns_request *classify;	/* see rs_classify_cb */
	bool		 classify_v6;	/* it is the AAAA one */
	struct event	*timer;
	uint64_t	 results[RS_NRESULTS];
	uint64_t	 changes;
};

TAILQ_HEAD(rs_list, rs_name);

static struct event_base *rs_base;
static struct evdns_base *rs_dns;
static struct event	*rs_notify_ev;
static struct event	*rs_guard_ev;	/* bounds a warm-up */
static uint64_t		 rs_guard_ms;
static struct rs_list	 rs_names = TAILQ_HEAD_INITIALIZER(rs_names);
static void		(*rs_changed)(void);
static void		(*rs_warm)(void);
static bool		 rs_warming;
static char		*rs_applied;	/* the resolver section applied, as text */

static void	 rs_query(struct rs_name *);
static void	 rs_timer_cb(evutil_socket_t, short, void *);
static void	 rs_guard_cb(evutil_socket_t, short, void *);
static int	 rs_timer_arm(struct rs_name *);

static void
rs_name_free(struct rs_name *nm)
{
	TAILQ_REMOVE(&rs_names, nm, entry);
	if (nm->timer != NULL)
		event_free(nm->timer);
	free(nm->addrs);
	free(nm->host);
	free(nm);
}

/* Forgets NM: at once, or from its query's callback. */
static void
rs_forget(struct rs_name *nm)
{
	if (nm->req != NULL || nm->classify != NULL) {
		nm->dead = true;
		if (nm->req != NULL)
			evdns_getaddrinfo_cancel(nm->req);
		else
			evdns_cancel_request(rs_dns, nm->classify);
		return;
	}
	rs_name_free(nm);
}

static struct rs_name *
rs_find(const char *host, uint64_t port)
{
	struct rs_name *nm;

	TAILQ_FOREACH(nm, &rs_names, entry)
		if (!nm->dead && nm->port == port && strcmp(nm->host, host) == 0)
			return nm;
	return NULL;
}

static struct rs_name *
rs_name_new(const char *host, uint64_t port)
{
	struct rs_name *nm;

	if ((nm = calloc(1, sizeof(*nm))) == NULL ||
	    (nm->host = strdup(host)) == NULL ||
	    (nm->timer = evtimer_new(rs_base, rs_timer_cb, nm)) == NULL) {
		if (nm != NULL)
			free(nm->host);
		free(nm);
		log_error("dns %s: out of memory", host);
		return NULL;
	}
	nm->port = port;
	snprintf(nm->label, sizeof(nm->label), "%s:%llu", host,
	    (unsigned long long)port);
	TAILQ_INSERT_TAIL(&rs_names, nm, entry);
	return nm;
}

static int
rs_addr_cmp(const void *a, const void *b)
{
	const struct ig_addr *x = a, *y = b;

	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return memcmp(&x->ss, &y->ss, x->len);
}

/*
 * The addresses of answer RES (each with NM's port), sorted and distinct,
 * into *OUT (malloc'd); returns how many, or -1 when out of memory.
 */
static ssize_t
rs_collect(const struct rs_name *nm, const struct evutil_addrinfo *res,
    struct ig_addr **out)
{
	const struct evutil_addrinfo *ai;
	struct ig_addr *a;
	size_t n = 0, i, k;

	for (ai = res; ai != NULL; ai = ai->ai_next)
		n++;
	if (n > RS_MAX_ADDRS)
		n = RS_MAX_ADDRS;
	if ((a = calloc(n + 1, sizeof(*a))) == NULL)
		return -1;
	for (ai = res, i = 0; ai != NULL && i < n; ai = ai->ai_next) {
		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    ai->ai_addrlen > sizeof(a[i].ss))
			continue;
		memset(&a[i].ss, 0, sizeof(a[i].ss));
		memcpy(&a[i].ss, ai->ai_addr, ai->ai_addrlen);
		a[i].len = ai->ai_addrlen;
		if (ai->ai_family == AF_INET)
			((struct sockaddr_in *)&a[i].ss)->sin_port =
			    htons((uint16_t)nm->port);
		else
			((struct sockaddr_in6 *)&a[i].ss)->sin6_port =
			    htons((uint16_t)nm->port);
		i++;
	}
	qsort(a, i, sizeof(*a), rs_addr_cmp);
	for (n = 0, k = 0; k < i; k++)
		if (n == 0 || rs_addr_cmp(&a[n - 1], &a[k]) != 0)
			a[n++] = a[k];
	*out = a;
	return (ssize_t)n;
}

/* NM's set is now ADDRS (taken); whether it changed. */
static bool
rs_set(struct rs_name *nm, struct ig_addr *addrs, size_t n)
{
	bool same = n == nm->naddrs && (n == 0 ||
	    memcmp(addrs, nm->addrs, n * sizeof(*addrs)) == 0);

	if (same) {
		free(addrs);
		return false;
	}
	free(nm->addrs);
	nm->addrs = addrs;
	nm->naddrs = n;
	return true;
}

/*
 * A lookup of NM is over: WHAT, with the set ADDRS (N, taken) for RS_OK
 * and RS_EMPTY; WHY says what went wrong otherwise.
 */
static void
rs_outcome(struct rs_name *nm, enum rs_result what, struct ig_addr *addrs,
    size_t n, const char *why)
{
	size_t before = nm->naddrs;

	nm->querying = false;
	nm->results[what]++;
	if (what == RS_FAILED) {
		free(addrs);
		if (!nm->failing)
			log_warn("dns %s: %s; keeping its %zu address%s",
			    nm->label, why, nm->naddrs,
			    nm->naddrs == 1 ? "" : "es");
		nm->failing = true;
	} else {
		if (nm->failing)
			log_info("dns %s: answering again", nm->label);
		nm->failing = false;
		if (rs_set(nm, addrs, n)) {
			nm->changes++;
			nm->changed = true;
			if (nm->naddrs == 0)
				log_warn("dns %s: no address (%s); was %zu",
				    nm->label, why, before);
			else
				log_info("dns %s: %zu address%s (was %zu)",
				    nm->label, nm->naddrs,
				    nm->naddrs == 1 ? "" : "es", before);
			if (nm->naddrs >= RS_EVDNS_MAX)
				log_warn("dns %s: %zu addresses, as many as the "
				    "resolver takes of a name: more may be left "
				    "out", nm->label, nm->naddrs);
		}
	}
	nm->answered = true;
	rs_timer_arm(nm);
	event_active(rs_notify_ev, EV_TIMEOUT, 1);
}

/*
 * The A (then AAAA) lookup that tells a failed getaddrinfo apart:
 * libevent 2.1's reports a name with no address (NODATA) as EAI_FAIL,
 * like a timeout or SERVFAIL. NXDOMAIN, or NODATA for both, empties the
 * set; anything else keeps it.
 */
static void
rs_classify_cb(int result, char type, int count, int ttl, void *addresses,
    void *arg)
{
	struct rs_name *nm = arg;

	nm->classify = NULL;
	if (nm->dead) {
		rs_name_free(nm);
		return;
	}
	if (result == DNS_ERR_CANCEL) {
		nm->querying = false;
		rs_timer_arm(nm);
		return;
	}
	/* No A: the same for AAAA, or an IPv6-only name whose AAAA failed
	 * would count as empty. (An error's callback has no type.) */
	if (result == DNS_ERR_NODATA && !nm->classify_v6 &&
	    (nm->classify = evdns_base_resolve_ipv6(rs_dns, nm->host, 0,
	    rs_classify_cb, nm)) != NULL) {
		nm->classify_v6 = true;
		return;
	}
	if (result == DNS_ERR_NOTEXIST || (result == DNS_ERR_NODATA &&
	    nm->classify_v6))
		rs_outcome(nm, RS_EMPTY, NULL, 0, evdns_err_to_string(result));
	else
		rs_outcome(nm, RS_FAILED, NULL, 0, result == DNS_ERR_NONE ?
		    "answers disagree" : evdns_err_to_string(result));
}

static void
rs_answer_cb(int result, struct evutil_addrinfo *res, void *arg)
{
	struct rs_name *nm = arg;
	struct ig_addr *addrs = NULL;
	ssize_t n = 0;

	nm->req = NULL;
	if (nm->dead || result == EVUTIL_EAI_CANCEL) {
		if (res != NULL)
			evutil_freeaddrinfo(res);
		if (nm->dead)
			rs_name_free(nm);
		else
			nm->querying = false;
		return;
	}
	if (result == 0 && (n = rs_collect(nm, res, &addrs)) == -1)
		result = EVUTIL_EAI_MEMORY;
	if (res != NULL)
		evutil_freeaddrinfo(res);
	if (result == EVUTIL_EAI_FAIL) {
		/* NODATA, or a real failure: ask again, A then AAAA */
		nm->classify_v6 = false;
		nm->classify = evdns_base_resolve_ipv4(rs_dns, nm->host, 0,
		    rs_classify_cb, nm);
		if (nm->classify == NULL)
			rs_outcome(nm, RS_FAILED, NULL, 0,
			    evutil_gai_strerror(result));
		return;
	}
	if (result == 0 && n > 0)
		rs_outcome(nm, RS_OK, addrs, (size_t)n, NULL);
	else if (result == 0 || result == EVUTIL_EAI_NONAME ||
	    result == EVUTIL_EAI_NODATA)
		rs_outcome(nm, RS_EMPTY, addrs, 0, result == 0 ? "no record" :
		    evutil_gai_strerror(result));
	else
		rs_outcome(nm, RS_FAILED, addrs, 0,
		    evutil_gai_strerror(result));
}

static void
rs_query(struct rs_name *nm)
{
	struct evutil_addrinfo hints;
	struct evdns_getaddrinfo_request *req;
	char port[8];

	if (nm->querying || nm->dead)
		return;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	snprintf(port, sizeof(port), "%llu", (unsigned long long)nm->port);
	nm->querying = true;
	/* An answer known at once (a numeric host, /etc/hosts) calls back
	 * from inside and returns NULL. */
	req = evdns_getaddrinfo(rs_dns, nm->host, port, &hints, rs_answer_cb,
	    nm);
	if (nm->querying)
		nm->req = req;
}

static void
rs_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	rs_query(arg);
}

static int
rs_timer_arm(struct rs_name *nm)
{
	struct timeval tv = { nm->every_ms / 1000, (nm->every_ms % 1000) * 1000 };

	return event_add(nm->timer, &tv);
}

/* Whether every name the warming config uses has had a first answer. */
static bool
rs_warm_done(void)
{
	struct rs_name *nm;

	TAILQ_FOREACH(nm, &rs_names, entry)
		if (nm->in_warm && !nm->answered)
			return false;
	return true;
}

/*
 * After answers, from the loop (never from inside a query or a call of
 * main.c's): the published config's catalog is rebuilt when one of its
 * names changed; the warming config is published when its names all
 * answered.
 */
static void
rs_notify_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rs_name *nm;
	bool changed = false;

	TAILQ_FOREACH(nm, &rs_names, entry) {
		if (nm->changed && nm->in_cur)
			changed = true;
		nm->changed = false;
	}
	if (rs_warming && rs_warm_done()) {
		rs_warming = false;
		rs_warm();	/* publishes it: the sets are as fresh as can be */
	} else if (changed)
		rs_changed();
}

/* The resolver section as text, to tell whether a reload changed it. */
static char *
rs_conf_text(const struct ig_resolver_conf *rc)
{
	struct evbuffer *b = evbuffer_new();
	char *s = NULL;
	size_t i, len;

	if (b == NULL)
		return NULL;
	evbuffer_add_printf(b, "%llu %llu", (unsigned long long)rc->timeout_ms,
	    (unsigned long long)rc->attempts);
	for (i = 0; i < rc->nnameservers; i++)
		evbuffer_add_printf(b, " %s", rc->nameservers[i]);
	len = evbuffer_get_length(b);
	if ((s = malloc(len + 1)) != NULL) {
		evbuffer_remove(b, s, len);
		s[len] = '\0';
	}
	evbuffer_free(b);
	return s;
}

/*
 * Applies the resolver section: name servers (resolv.conf's when none is
 * given; its search list, ndots and /etc/hosts either way), the timeout
 * of an attempt and the attempts. Queries in flight are sent again to the
 * new servers.
 */
static void
rs_configure(const struct ig_resolver_conf *rc)
{
	char *text = rs_conf_text(rc), v[32];
	size_t i;
	/* /etc/hosts once: evdns adds to its table, never clears it */
	int flags = DNS_OPTION_SEARCH | DNS_OPTION_MISC |
	    (rs_applied == NULL ? DNS_OPTION_HOSTSFILE : 0);

	if (text != NULL && rs_applied != NULL && strcmp(text, rs_applied) == 0) {
		free(text);
		return;
	}
	free(rs_applied);
	rs_applied = text;
	evdns_base_clear_nameservers_and_suspend(rs_dns);
	if (rc->nnameservers == 0)
		flags |= DNS_OPTION_NAMESERVERS;
	if (evdns_base_resolv_conf_parse(rs_dns, flags, "/etc/resolv.conf") != 0 &&
	    rc->nnameservers == 0)
		log_warn("dns: /etc/resolv.conf gave no name server; DNS "
		    "backends resolve from /etc/hosts only");
	for (i = 0; i < rc->nnameservers; i++)
		if (evdns_base_nameserver_ip_add(rs_dns, rc->nameservers[i]) != 0)
			log_warn("dns: cannot use name server %s",
			    rc->nameservers[i]);
	snprintf(v, sizeof(v), "%.3f", rc->timeout_ms / 1000.0);
	evdns_base_set_option(rs_dns, "timeout:", v);
	/* an A answer waits at most this long for its AAAA (and back) */
	evdns_base_set_option(rs_dns, "getaddrinfo-allow-skew:", v);
	snprintf(v, sizeof(v), "%llu", (unsigned long long)rc->attempts);
	evdns_base_set_option(rs_dns, "attempts:", v);
	evdns_base_resume(rs_dns);
}

int
resolver_start(struct event_base *base, void (*changed)(void),
    void (*warm)(void))
{
	rs_base = base;
	rs_changed = changed;
	rs_warm = warm;
	/* No name server yet (rs_configure adds them); an idle resolver
	 * keeps no event of its own. */
	if ((rs_dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE)) ==
	    NULL || (rs_notify_ev = event_new(base, -1, 0, rs_notify_cb,
	    NULL)) == NULL || (rs_guard_ev = evtimer_new(base, rs_guard_cb,
	    NULL)) == NULL)
		return -1;
	return 0;
}

/*
 * CONF is to be published: applies its resolver section, starts resolving
 * the names it adds, and forgets those neither it nor the published config
 * uses. Returns how many of its names have no first answer yet: 0, CONF
 * can be published now (then resolver_published); else rs_warm says when
 * (resolver_wait at the start), within the resolver's timeout times its
 * attempts and a second.
 */
size_t
resolver_prepare(const struct ig_config *conf)
{
	struct rs_name *nm, *next;
	size_t i, j, pending = 0;
	struct timeval tv;

	rs_configure(&conf->resolver);
	TAILQ_FOREACH(nm, &rs_names, entry)
		nm->in_warm = false;
	for (i = 0; i < conf->npools; i++)
		for (j = 0; j < conf->pools[i].nbackends; j++) {
			const struct ig_backend_conf *bc =
			    &conf->pools[i].backends[j];

			if (bc->dns == NULL)
				continue;
			if ((nm = rs_find(bc->dns, bc->port)) == NULL &&
			    (nm = rs_name_new(bc->dns, bc->port)) == NULL)
				continue;
			/* the shortest interval of the backends naming it */
			if (!nm->in_warm || bc->resolve_every_ms < nm->every_ms)
				nm->every_ms = bc->resolve_every_ms;
			nm->in_warm = true;
		}
	for (nm = TAILQ_FIRST(&rs_names); nm != NULL; nm = next) {
		next = TAILQ_NEXT(nm, entry);
		if (nm->dead)
			continue;
		if (!nm->in_cur && !nm->in_warm) {
			rs_forget(nm);
			continue;
		}
		if (!nm->in_warm)	/* until CONF is published */
			continue;
		rs_timer_arm(nm);	/* the interval in force from now */
		if (!nm->answered) {
			rs_query(nm);
			if (!nm->answered)
				pending++;
		}
	}
	rs_warming = pending > 0;
	if (rs_warming) {
		rs_guard_ms = conf->resolver.timeout_ms * conf->resolver.attempts +
		    1000;
		tv.tv_sec = rs_guard_ms / 1000;
		tv.tv_usec = (rs_guard_ms % 1000) * 1000;
		event_add(rs_guard_ev, &tv);
	}
	return pending;
}

/*
 * The warm-up is over: the config prepared was PUBLISHED (its names are
 * the published ones now), or refused; names no config uses are forgotten.
 */
static void
rs_warm_end(bool published)
{
	struct rs_name *nm, *next;

	for (nm = TAILQ_FIRST(&rs_names); nm != NULL; nm = next) {
		next = TAILQ_NEXT(nm, entry);
		if (nm->dead)
			continue;
		if (published)
			nm->in_cur = nm->in_warm;
		nm->in_warm = false;
		if (!nm->in_cur)
			rs_forget(nm);
	}
	rs_warming = false;
	event_del(rs_guard_ev);
}

void
resolver_published(void)
{
	rs_warm_end(true);
}

/* The config prepared will not be published (a reload refused). */
void
resolver_abandon(void)
{
	rs_warm_end(false);
}

/*
 * A warm-up took longer than the resolver can (no name server that
 * answers at all leaves evdns waiting): the names left count as failed.
 */
static void
rs_guard_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rs_name *nm;

	TAILQ_FOREACH(nm, &rs_names, entry)
		if (nm->in_warm && !nm->answered && !nm->dead) {
			/* counted when its lookup ends */
			log_warn("dns %s: no answer in %llu ms; going on without "
			    "its addresses", nm->label,
			    (unsigned long long)rs_guard_ms);
			nm->answered = true;
			nm->failing = true;
		}
	event_active(rs_notify_ev, EV_TIMEOUT, 1);
}

/* The start: runs the loop until the names prepared have answered. */
void
resolver_wait(void)
{
	while (!rs_warm_done())
		event_base_loop(rs_base, EVLOOP_ONCE);
}

/* ig_dns_lookup_fn for the catalog: the set known for HOST:PORT. */
size_t
resolver_lookup(const char *host, uint64_t port, const struct ig_addr **addrs,
    void *arg)
{
	const struct rs_name *nm = rs_find(host, port);

	if (nm == NULL)
		return 0;
	*addrs = nm->addrs;
	return nm->naddrs;
}

enum rs_family { RS_ADDRESSES, RS_RESOLUTIONS, RS_CHANGES, RS_NFAMILIES };

/* /metrics: infergate_dns_* per name. */
void
resolver_metrics(struct evbuffer *b)
{
	static const struct {
		const char	*name, *type, *help;
	} fam[RS_NFAMILIES] = {
		[RS_ADDRESSES] = { "infergate_dns_addresses", "gauge",
		    "Addresses the DNS backend's name has now (each is a "
		    "backend)." },
		[RS_RESOLUTIONS] = { "infergate_dns_resolutions_total",
		    "counter", "DNS lookups of the name by result: ok, empty "
		    "(no such name or no address: the set is emptied), failed "
		    "(the set is kept)." },
		[RS_CHANGES] = { "infergate_dns_changes_total", "counter",
		    "Times the name's set of addresses changed." },
	};
	const struct rs_name *nm;
	int f, r;

	for (f = 0; f < RS_NFAMILIES && !TAILQ_EMPTY(&rs_names); f++) {
		evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n",
		    fam[f].name, fam[f].help, fam[f].name, fam[f].type);
		TAILQ_FOREACH(nm, &rs_names, entry) {
			if (nm->dead)
				continue;
			if (f == RS_RESOLUTIONS)
				for (r = 0; r < RS_NRESULTS; r++)
					evbuffer_add_printf(b, "%s{name=\"%s\","
					    "result=\"%s\"} %llu\n", fam[f].name,
					    nm->label, rs_result_names[r],
					    (unsigned long long)nm->results[r]);
			else
				evbuffer_add_printf(b, "%s{name=\"%s\"} %llu\n",
				    fam[f].name, nm->label, (unsigned long long)
				    (f == RS_ADDRESSES ? nm->naddrs : nm->changes));
		}
	}
}

/* At exit: queries in flight are cancelled, everything freed. */
void
resolver_stop(void)
{
	struct rs_name *nm, *next;
	int spins;

	/* nothing is published or rebuilt from here on */
	if (rs_notify_ev != NULL)
		event_del(rs_notify_ev);
	if (rs_guard_ev != NULL)
		event_del(rs_guard_ev);
	rs_warming = false;
	TAILQ_FOREACH(nm, &rs_names, entry)
		nm->in_cur = nm->in_warm = false;

	for (nm = TAILQ_FIRST(&rs_names); nm != NULL; nm = next) {
		next = TAILQ_NEXT(nm, entry);
		rs_forget(nm);
	}
	/* A cancelled query calls back from the loop (deferred). */
	for (spins = 0; !TAILQ_EMPTY(&rs_names) && spins < 100; spins++)
		event_base_loop(rs_base, EVLOOP_NONBLOCK);
	while ((nm = TAILQ_FIRST(&rs_names)) != NULL)
		rs_name_free(nm);	/* never called back: leaked by evdns */
	if (rs_dns != NULL)
		evdns_base_free(rs_dns, 0);
	rs_dns = NULL;
	if (rs_notify_ev != NULL)
		event_free(rs_notify_ev);
	rs_notify_ev = NULL;
	if (rs_guard_ev != NULL)
		event_free(rs_guard_ev);
	rs_guard_ev = NULL;
	free(rs_applied);
	rs_applied = NULL;
}
