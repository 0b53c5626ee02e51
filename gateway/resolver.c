/*
 * DNS backends (`dns`, `port`, `resolve_every`), on the main thread's
 * event base with c-ares (its sockets and timeout as libevent events):
 * every name is resolved (/etc/hosts first, read each time, for both
 * families; else DNS: A with resolv.conf's search list, then AAAA of the
 * name that answered, or with the search list when A had none; a
 * truncated UDP answer is asked again over TCP), when a config first
 * names it, then every
 * resolve_every, and each address it gives is a backend of its own, as
 * Envoy's STRICT_DNS clusters and nginx's `server ... resolve` do with a
 * Kubernetes headless Service.
 *
 *   - Answers with addresses replace the set; a name that does not exist
 *     or has no address in either family (NXDOMAIN, NODATA: a headless
 *     Service with no ready pod) empties it; a family whose lookup failed
 *     (timeout, SERVFAIL, no name server) keeps its addresses while the
 *     other's answer applies, and the lookup counts as failed, so a DNS
 *     outage never empties a pool and a server that drops AAAA queries
 *     does not freeze an IPv4 name.
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

#include <arpa/nameser.h>
#include <ares.h>
#include <netdb.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/util.h>

#include "infergate/config.h"
#include "infergate/log.h"
#include "infergate/routing.h"
#include "gateway.h"

#define RS_MAX_ADDRS	256	/* per name and family; more are ignored */

enum rs_result { RS_OK, RS_EMPTY, RS_FAILED, RS_NRESULTS };

static const char *const rs_result_names[RS_NRESULTS] = {
	[RS_OK] = "ok", [RS_EMPTY] = "empty", [RS_FAILED] = "failed" };

enum rs_fam { RS_V4, RS_V6, RS_NFAMS };

/* One family's lookup of a name: its result. */
struct rs_flookup {
	int		 af;		/* AF_INET, AF_INET6 */
	int		 status;	/* ARES_SUCCESS, ARES_ENODATA, ... */
	struct ig_addr	*addrs;		/* with ARES_SUCCESS */
	size_t		 naddrs;
};

struct rs_name {
	TAILQ_ENTRY(rs_name) entry;
	char		*host;
	uint64_t	 port;
	char		 label[272];	/* "host:port" */
	uint64_t	 every_ms;	/* the shortest resolve_every naming it */
	struct ig_addr	*addrs;		/* sorted, distinct */
	size_t		 naddrs;
	bool		 answered;	/* a first answer or failure came */
	bool		 querying;	/* its lookup is out */
	enum rs_fam	 step;		/* A, then AAAA */
	bool		 cut;		/* a new channel ended it: ask again */
	struct rs_flookup fam[RS_NFAMS];
	bool		 failing;	/* the last one failed (logged once) */
	bool		 too_many[RS_NFAMS];	/* addresses left out (logged
					 * once while it lasts) */
	bool		 changed;	/* since the last rs_notify */
	bool		 in_cur;	/* named by the published config */
	bool		 in_warm;	/* named by the config warming */
	bool		 dead;		/* forgotten: freed by its callback */
	struct event	*timer;
	uint64_t	 results[RS_NRESULTS];
	uint64_t	 changes;
};

TAILQ_HEAD(rs_list, rs_name);

/* A socket of c-ares's, watched for what it asks. */
struct rs_sock {
	LIST_ENTRY(rs_sock) entry;
	ares_socket_t	 fd;
	struct event	*ev;
};

static struct event_base *rs_base;
static ares_channel	 rs_ch;		/* NULL: none could be made */
static LIST_HEAD(, rs_sock) rs_socks = LIST_HEAD_INITIALIZER(rs_socks);
static struct event	*rs_tmo;	/* c-ares's next timeout */
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
rs_fam_clear(struct rs_name *nm)
{
	int f;

	for (f = 0; f < RS_NFAMS; f++) {
		free(nm->fam[f].addrs);
		nm->fam[f].addrs = NULL;
		nm->fam[f].naddrs = 0;
		nm->fam[f].status = ARES_SUCCESS;
	}
}

static void
rs_name_free(struct rs_name *nm)
{
	TAILQ_REMOVE(&rs_names, nm, entry);
	if (nm->timer != NULL)
		event_free(nm->timer);
	rs_fam_clear(nm);
	free(nm->addrs);
	free(nm->host);
	free(nm);
}

/*
 * Forgets NM: at once, or from its lookups' last callback (c-ares cancels
 * only a whole channel: they run to their answer or timeout).
 */
static void
rs_forget(struct rs_name *nm)
{
	if (nm->querying) {
		nm->dead = true;
		return;
	}
	rs_name_free(nm);
}

/* Arms the timer for c-ares's next timeout (none: disarmed). */
static void
rs_timeout_arm(void)
{
	struct timeval tv, *t;

	if (rs_ch == NULL || (t = ares_timeout(rs_ch, NULL, &tv)) == NULL)
		evtimer_del(rs_tmo);
	else
		evtimer_add(rs_tmo, t);
}

static void
rs_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	ares_process_fd(rs_ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	rs_timeout_arm();
}

/* S may be freed inside (c-ares closes the socket): not touched after. */
static void
rs_sock_cb(evutil_socket_t fd, short what, void *arg)
{
	ares_process_fd(rs_ch, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
	    (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	rs_timeout_arm();
}

/* c-ares opened, changed or closed (neither) the watch on socket FD. */
static void
rs_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct rs_sock *s;

	LIST_FOREACH(s, &rs_socks, entry)
		if (s->fd == fd)
			break;
	if (s != NULL && s->ev != NULL) {
		event_free(s->ev);
		s->ev = NULL;
	}
	if (!readable && !writable) {
		if (s != NULL) {
			LIST_REMOVE(s, entry);
			free(s);
		}
		return;
	}
	if (s == NULL && (s = calloc(1, sizeof(*s))) != NULL) {
		s->fd = fd;
		LIST_INSERT_HEAD(&rs_socks, s, entry);
	}
	if (s == NULL || (s->ev = event_new(rs_base, fd, EV_PERSIST |
	    (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0), rs_sock_cb,
	    s)) == NULL || event_add(s->ev, NULL) == -1)
		log_error("dns: cannot watch a resolver socket (out of memory); "
		    "its lookups will time out");
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
	nm->fam[RS_V4].af = AF_INET;
	nm->fam[RS_V6].af = AF_INET6;
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

/* Sorts A (N) and drops repeats; the count left. */
static size_t
rs_sort(struct ig_addr *a, size_t n)
{
	size_t i, k;

	qsort(a, n, sizeof(*a), rs_addr_cmp);
	for (i = 0, k = 0; k < n; k++)
		if (i == 0 || rs_addr_cmp(&a[i - 1], &a[k]) != 0)
			a[i++] = a[k];
	return i;
}

/*
 * The N addresses at RAW (of L's family, each 4 or 16 bytes apart, as a
 * hostent's or c-ares's ttl arrays hold them: STRIDE) into L, with NM's
 * port, sorted and distinct; -1 when out of memory.
 */
static int
rs_collect(struct rs_name *nm, struct rs_flookup *l,
    const unsigned char *raw, size_t stride, size_t n)
{
	struct ig_addr *a;
	size_t i;
	int f;

	f = l->af == AF_INET ? RS_V4 : RS_V6;
	if (n > RS_MAX_ADDRS && !nm->too_many[f])
		log_warn("dns %s: more than %d %s addresses; the first %d used",
		    nm->label, RS_MAX_ADDRS, f == RS_V4 ? "IPv4" : "IPv6",
		    RS_MAX_ADDRS);
	nm->too_many[f] = n > RS_MAX_ADDRS;
	if (n > RS_MAX_ADDRS)
		n = RS_MAX_ADDRS;
	if ((a = calloc(n + 1, sizeof(*a))) == NULL)
		return -1;
	for (i = 0; i < n; i++, raw += stride) {
		if (l->af == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&a[i].ss;

			sin->sin_family = AF_INET;
			sin->sin_port = htons((uint16_t)nm->port);
			memcpy(&sin->sin_addr, raw, sizeof(sin->sin_addr));
			a[i].len = sizeof(*sin);
		} else {
			struct sockaddr_in6 *sin6 =
			    (struct sockaddr_in6 *)&a[i].ss;

			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons((uint16_t)nm->port);
			memcpy(&sin6->sin6_addr, raw, sizeof(sin6->sin6_addr));
			a[i].len = sizeof(*sin6);
		}
	}
	free(l->addrs);
	l->addrs = a;
	l->naddrs = rs_sort(a, n);
	return 0;
}

/* A hostent of L's family (/etc/hosts) into L: an ARES_ status. */
static int
rs_collect_hostent(struct rs_name *nm, struct rs_flookup *l,
    const struct hostent *he)
{
	size_t n = 0, i, len = l->af == AF_INET ? 4 : 16;
	unsigned char *raw;
	int rv;

	if (he->h_addrtype != l->af || (size_t)he->h_length != len)
		return ARES_ENODATA;
	while (he->h_addr_list[n] != NULL)
		n++;
	if ((raw = malloc(n * len + 1)) == NULL)
		return ARES_ENOMEM;
	for (i = 0; i < n; i++)
		memcpy(raw + i * len, he->h_addr_list[i], len);
	rv = rs_collect(nm, l, raw, len, n) == -1 ? ARES_ENOMEM : ARES_SUCCESS;
	free(raw);
	return rv;
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
 * A lookup of NM is over: WHAT, with the set ADDRS (N, taken; for
 * RS_FAILED, NULL keeps the set); WHY says what went wrong.
 */
static void
rs_outcome(struct rs_name *nm, enum rs_result what, struct ig_addr *addrs,
    size_t n, const char *why)
{
	size_t before = nm->naddrs;

	nm->querying = false;
	nm->results[what]++;
	if (what == RS_FAILED) {
		if (!nm->failing)
			log_warn("dns %s: %s; the family that failed keeps "
			    "its addresses", nm->label, why);
		nm->failing = true;
	} else {
		if (nm->failing)
			log_info("dns %s: answering again", nm->label);
		nm->failing = false;
	}
	if (addrs != NULL || what != RS_FAILED) {
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
		}
	}
	nm->answered = true;
	rs_timer_arm(nm);
	event_active(rs_notify_ev, EV_TIMEOUT, 1);
}

/* Whether a lookup's STATUS is an answer (addresses or none), not a failure. */
static bool
rs_answered(int status)
{
	return status == ARES_SUCCESS || status == ARES_ENODATA ||
	    status == ARES_ENOTFOUND;
}

/*
 * Both lookups of NM are in: the families that answered give their
 * addresses (none for NXDOMAIN or NODATA), one that failed keeps its own.
 */
static void
rs_finish(struct rs_name *nm)
{
	struct ig_addr *a;
	size_t n = 0, i;
	const char *why = NULL;
	bool failed = false, any = false;
	int f;

	for (f = 0; f < RS_NFAMS; f++)
		n += rs_answered(nm->fam[f].status) ? nm->fam[f].naddrs :
		    nm->naddrs;
	if ((a = calloc(n + 1, sizeof(*a))) == NULL) {
		rs_fam_clear(nm);
		rs_outcome(nm, RS_FAILED, NULL, 0, "out of memory");
		return;
	}
	n = 0;
	for (f = 0; f < RS_NFAMS; f++) {
		const struct rs_flookup *l = &nm->fam[f];

		if (rs_answered(l->status)) {
			if (l->naddrs > 0)
				memcpy(a + n, l->addrs, l->naddrs * sizeof(*a));
			n += l->naddrs;
			any |= l->naddrs > 0;
			if (why == NULL && l->status != ARES_SUCCESS)
				why = l->status == ARES_ENOTFOUND ?
				    "no such name" : "no address";
			continue;
		}
		failed = true;
		why = ares_strerror(l->status);
		for (i = 0; i < nm->naddrs; i++)
			if (nm->addrs[i].ss.ss_family == l->af)
				a[n++] = nm->addrs[i];
	}
	rs_fam_clear(nm);
	n = rs_sort(a, n);
	if (failed)
		rs_outcome(nm, RS_FAILED, a, n, why);
	else if (any)
		rs_outcome(nm, RS_OK, a, n, NULL);
	else
		rs_outcome(nm, RS_EMPTY, a, 0, why != NULL ? why : "no record");
}

static void	 rs_dns_cb(void *, int, int, unsigned char *, int);

/*
 * The answer ABUF of NM's lookup of family L into L; *CANON gets the
 * name that answered (malloc'd, NULL without one). An ARES_ status.
 */
static int
rs_parse(struct rs_name *nm, struct rs_flookup *l, const unsigned char *abuf,
    int alen, char **canon)
{
	static struct ares_addrttl a4[RS_MAX_ADDRS + 1];
	static struct ares_addr6ttl a6[RS_MAX_ADDRS + 1];
	struct hostent *he = NULL;
	int n = RS_MAX_ADDRS + 1, rv;

	*canon = NULL;
	rv = l->af == AF_INET ? ares_parse_a_reply(abuf, alen, &he, a4, &n) :
	    ares_parse_aaaa_reply(abuf, alen, &he, a6, &n);
	if (rv == ARES_SUCCESS && n == 0)
		rv = ARES_ENODATA;
	if (rv == ARES_SUCCESS) {
		if (l->af == AF_INET)
			rv = rs_collect(nm, l, (const unsigned char *)&a4[0].ipaddr,
			    sizeof(a4[0]), (size_t)n);
		else
			rv = rs_collect(nm, l,
			    (const unsigned char *)&a6[0].ip6addr, sizeof(a6[0]),
			    (size_t)n);
		rv = rv == -1 ? ARES_ENOMEM : ARES_SUCCESS;
		if (rv == ARES_SUCCESS && he != NULL && he->h_name != NULL)
			*canon = strdup(he->h_name);
	}
	if (he != NULL)
		ares_free_hostent(he);
	return rv;
}

/*
 * A DNS answer for NM (ARG): A first, with the search list; then AAAA,
 * of the name whose A answered (so that both families are of one name),
 * or with the search list again when A had none. From c-ares, or inside
 * the call that asked.
 */
static void
rs_dns_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct rs_name *nm = arg;
	struct rs_flookup *l = &nm->fam[nm->step];
	char *canon = NULL;

	if (nm->dead) {
		rs_name_free(nm);
		return;
	}
	if (status == ARES_EDESTRUCTION) {	/* asked again on the new channel */
		nm->querying = false;
		nm->cut = true;
		rs_fam_clear(nm);
		return;
	}
	if (status == ARES_SUCCESS)
		status = rs_parse(nm, l, abuf, alen, &canon);
	l->status = status;
	if (nm->step == RS_V4 && status != ARES_ENOTFOUND) {
		nm->step = RS_V6;
		if (canon != NULL)
			ares_query(rs_ch, canon, ns_c_in, ns_t_aaaa, rs_dns_cb, nm);
		else
			ares_search(rs_ch, nm->host, ns_c_in, ns_t_aaaa, rs_dns_cb,
			    nm);
		free(canon);
		rs_timeout_arm();
		return;
	}
	free(canon);
	if (nm->step == RS_V4)		/* NXDOMAIN: no AAAA either */
		nm->fam[RS_V6].status = ARES_ENOTFOUND;
	rs_finish(nm);
}

/*
 * Looks NM up: /etc/hosts (read each time) for both families, and when
 * it has neither, DNS (rs_dns_cb). An IPv4 literal is its own answer.
 */
static void
rs_query(struct rs_name *nm)
{
	struct hostent *he;
	struct in_addr in;
	bool hit = false;
	int f;

	if (nm->querying || nm->dead)
		return;
	if (rs_ch == NULL) {
		rs_outcome(nm, RS_FAILED, NULL, 0, "no resolver");
		return;
	}
	rs_fam_clear(nm);
	nm->querying = true;
	nm->cut = false;
	if (inet_pton(AF_INET, nm->host, &in) == 1) {
		nm->fam[RS_V4].status = rs_collect(nm, &nm->fam[RS_V4],
		    (const unsigned char *)&in, sizeof(in), 1) == -1 ?
		    ARES_ENOMEM : ARES_SUCCESS;
		nm->fam[RS_V6].status = ARES_ENODATA;
		rs_finish(nm);
		return;
	}
	for (f = 0; f < RS_NFAMS; f++) {
		if (ares_gethostbyname_file(rs_ch, nm->host, nm->fam[f].af, &he)
		    == ARES_SUCCESS) {
			nm->fam[f].status = rs_collect_hostent(nm, &nm->fam[f],
			    he);
			ares_free_hostent(he);
			hit |= nm->fam[f].status != ARES_ENODATA;
		} else
			nm->fam[f].status = ARES_ENODATA;
	}
	if (hit) {
		rs_finish(nm);
		return;
	}
	rs_fam_clear(nm);
	nm->step = RS_V4;
	ares_search(rs_ch, nm->host, ns_c_in, ns_t_a, rs_dns_cb, nm);
	rs_timeout_arm();
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
 * The name servers of the section, for ares_set_servers_ports (the config
 * checked them). NULL: none given (resolv.conf's stand), or out of memory
 * (*ERR).
 */
static struct ares_addr_port_node *
rs_servers(const struct ig_resolver_conf *rc, bool *err)
{
	struct ares_addr_port_node *list = NULL, **tail = &list, *s;
	uint16_t port;
	size_t i;

	*err = false;
	for (i = 0; i < rc->nnameservers; i++) {
		if ((s = calloc(1, sizeof(*s))) == NULL) {
			*err = true;
			break;
		}
		if (ig_parse_nameserver(rc->nameservers[i], &s->family,
		    &s->addr, &port) == -1) {
			log_warn("dns: cannot use name server %s",
			    rc->nameservers[i]);
			free(s);
			continue;
		}
		s->udp_port = s->tcp_port = port;
		*tail = s;
		tail = &s->next;
	}
	if (*err)
		while ((s = list) != NULL) {
			list = s->next;
			free(s);
		}
	return *err ? NULL : list;
}

/*
 * Applies the resolver section: a new c-ares channel with its name
 * servers (resolv.conf's when none is given; its search list and ndots
 * either way), the timeout of a first attempt and the attempts. Lookups
 * in flight on the old channel are asked again on the new one.
 */
static void
rs_configure(const struct ig_resolver_conf *rc)
{
	struct ares_addr_port_node *servers, *s;
	struct ares_options o;
	struct rs_name *nm;
	ares_channel ch, old;
	char *text = rs_conf_text(rc);
	bool err;
	int rv = ARES_SUCCESS;

	if (text != NULL && rs_applied != NULL && strcmp(text, rs_applied) == 0) {
		free(text);
		return;
	}
	memset(&o, 0, sizeof(o));
	o.sock_state_cb = rs_sock_state_cb;
	o.timeout = (int)rc->timeout_ms;
	o.tries = (int)rc->attempts;
	servers = rs_servers(rc, &err);
	if (!err && (rv = ares_init_options(&ch, &o, ARES_OPT_SOCK_STATE_CB |
	    ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES)) == ARES_SUCCESS &&
	    servers != NULL && (rv = ares_set_servers_ports(ch, servers)) !=
	    ARES_SUCCESS)
		ares_destroy(ch);	/* not without the servers given */
	while ((s = servers) != NULL) {
		servers = s->next;
		free(s);
	}
	if (err || rv != ARES_SUCCESS) {
		log_error("dns: cannot set up the resolver: %s; %s", err ?
		    "out of memory" : ares_strerror(rv), rs_ch != NULL ?
		    "keeping the one in use" : "DNS backends get no address");
		free(text);
		return;
	}
	free(rs_applied);
	rs_applied = text;
	old = rs_ch;
	rs_ch = ch;
	if (old == NULL)
		return;
	ares_destroy(old);	/* its lookups end: cut, or freed when dead */
	TAILQ_FOREACH(nm, &rs_names, entry)
		if (nm->cut && !nm->dead) {
			nm->cut = false;
			rs_query(nm);
		}
}

/*
 * How long a lookup can take, for the warm-up's guard: c-ares gives each
 * name server the timeout, doubled each round, ATTEMPTS rounds, per name
 * it asks (each domain of the search list, then the name itself), for A
 * and then AAAA. At most a minute.
 */
static uint64_t
rs_lookup_ms(const struct ig_resolver_conf *rc)
{
	struct ares_addr_port_node *list = NULL, *s;
	struct ares_options o;
	uint64_t n = 0, names = 1, ms;
	int mask;

	if (rs_ch != NULL && ares_get_servers_ports(rs_ch, &list) ==
	    ARES_SUCCESS)
		for (s = list; s != NULL; s = s->next)
			n++;
	ares_free_data(list);
	if (rs_ch != NULL && ares_save_options(rs_ch, &o, &mask) ==
	    ARES_SUCCESS) {
		names += (uint64_t)(o.ndomains > 0 ? o.ndomains : 0);
		ares_destroy_options(&o);
	}
	if (n == 0)
		n = 1;
	ms = rc->timeout_ms * ((1ULL << rc->attempts) - 1) * n * names * 2;
	return ms < 60000 ? ms : 60000;
}

int
resolver_start(struct event_base *base, void (*changed)(void),
    void (*warm)(void))
{
	rs_base = base;
	rs_changed = changed;
	rs_warm = warm;
	/* The channel comes with the first config (rs_configure); an idle
	 * resolver keeps no event of its own. */
	if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS ||
	    (rs_notify_ev = event_new(base, -1, 0, rs_notify_cb, NULL)) == NULL ||
	    (rs_guard_ev = evtimer_new(base, rs_guard_cb, NULL)) == NULL ||
	    (rs_tmo = evtimer_new(base, rs_timeout_cb, NULL)) == NULL)
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
		rs_guard_ms = rs_lookup_ms(&conf->resolver) + 1000;
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
 * answers at all leaves c-ares waiting its rounds): the names left count
 * as failed.
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
	/* the lookups out end now (freeing their dead names), and the
	 * channel's sockets close (rs_sock_state_cb) */
	if (rs_ch != NULL)
		ares_destroy(rs_ch);
	rs_ch = NULL;
	while ((nm = TAILQ_FIRST(&rs_names)) != NULL)
		rs_name_free(nm);
	ares_library_cleanup();
	if (rs_tmo != NULL)
		event_free(rs_tmo);
	rs_tmo = NULL;
	if (rs_notify_ev != NULL)
		event_free(rs_notify_ev);
	rs_notify_ev = NULL;
	if (rs_guard_ev != NULL)
		event_free(rs_guard_ev);
	rs_guard_ev = NULL;
	free(rs_applied);
	rs_applied = NULL;
}
