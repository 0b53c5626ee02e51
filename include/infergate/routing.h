/*
 * infergate routing: the model catalog and the pools of backends built from
 * one config. Immutable once built; shared read-only by every worker thread.
 * Runtime per-backend state that must survive a reload (health, pooled
 * connections) is keyed by the backend's address string elsewhere.
 */
#ifndef INFERGATE_ROUTING_H
#define INFERGATE_ROUTING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "infergate/config.h"

struct ig_catalog;
struct ig_bstate;

struct ig_backend {
	const struct ig_backend_conf *conf;
	struct ig_bstate *state;	/* shared by name, see capacity.h */
	char		 name[160];	/* "host:port", the key of runtime state */
	char		 host[272];	/* for the Host header: a DNS name's */
	struct sockaddr_storage addr;
	socklen_t	 addrlen;
	unsigned	 index;		/* in its pool */
};

struct ig_cap;

struct ig_pool {
	const struct ig_pool_conf *conf;
	struct ig_cap	*cap;		/* shared by name, see capacity.h */
	struct ig_backend *backends;
	size_t		 nbackends;
	unsigned	 index;		/* in the catalog */
};

struct ig_model {
	const struct ig_model_conf *conf;
	struct ig_pool	*pool;		/* NULL for a virtual model */
	size_t		 namelen;
};

/* One address a DNS name gave (port included). */
struct ig_addr {
	struct sockaddr_storage ss;
	socklen_t	 len;
};

/*
 * The addresses DNS gave HOST for PORT so far: sets *addrs, returns how
 * many (0: none yet, or the name has none).
 */
typedef size_t (*ig_dns_lookup_fn)(const char *host, uint64_t port,
		    const struct ig_addr **addrs, void *arg);

/*
 * Builds the catalog of a config: resolves static backend addresses
 * (numeric or by getaddrinfo, once, at load); a DNS backend is one
 * backend per address LOOKUP gives for it (none when LOOKUP is NULL).
 * Returns NULL with *err set (malloc'd) on failure. The catalog points
 * into the config, which must outlive it.
 */
struct ig_catalog *ig_catalog_create(const struct ig_config *,
		    ig_dns_lookup_fn lookup, void *arg, char **err);
/*
 * The same from the config of BASE (built from it; NULL: built anew):
 * the DNS backends' addresses from LOOKUP as they are now, the static
 * ones BASE's. PUB, the published catalog (NULL: none yet), says which
 * backends join a serving pool with health checks (catalog.c).
 */
struct ig_catalog *ig_catalog_derive(const struct ig_config *,
		    const struct ig_catalog *base, const struct ig_catalog *pub,
		    ig_dns_lookup_fn lookup, void *arg, char **err);
void		 ig_catalog_free(struct ig_catalog *);

/* The model a client named, or NULL. */
const struct ig_model *ig_catalog_model(const struct ig_catalog *,
		    const char *name, size_t len);
size_t		 ig_catalog_nmodels(const struct ig_catalog *);
const struct ig_model *ig_catalog_model_at(const struct ig_catalog *, size_t);
size_t		 ig_catalog_npools(const struct ig_catalog *);
struct ig_pool	*ig_catalog_pool_at(const struct ig_catalog *, size_t);
struct ig_pool	*ig_catalog_pool_named(const struct ig_catalog *, const char *);

/*
 * Picks a backend of the pool for a request, skipping those whose bit is
 * set in `exclude` (the first 64 backends can be excluded: those that
 * already failed this request) and those that are not ready (ejected, or
 * down by the pool's own health checks). least_inflight (and
 * queue_depth, which needs scrape_metrics) takes the one with fewer
 * requests in flight per weight of two drawn at random (power of two
 * choices, *seed); round_robin goes round (*cursor), each backend
 * taking as many turns in a row as its weight. Both belong to the
 * calling worker, so no lock is taken. When every candidate left is only
 * ejected, they are used anyway (a pool is never emptied by passive
 * ejection alone); NULL when none is left, *all_down set when the reason
 * is the health checks.
 */
struct ig_backend *ig_balancer_pick(const struct ig_pool *, unsigned *cursor,
		    unsigned *seed, uint64_t exclude, uint64_t now_ns,
		    bool *all_down);
/* Whether a request to the pool would find a backend not down by checks. */
bool		 ig_pool_has_backend(const struct ig_pool *);

#endif
