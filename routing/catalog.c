/*
 * The model catalog: client model names -> model (pool, upstream name),
 * pools -> backends with resolved addresses. Built once per config load,
 * and again (from the same config) when a DNS backend's addresses change.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infergate/capacity.h"
#include "infergate/routing.h"

struct ig_catalog {
	struct ig_model	*models;
	size_t		 nmodels;
	struct ig_model	**table;	/* open addressing by name */
	size_t		 tablesize;
	struct ig_pool	*pools;
	size_t		 npools;
};

static uint64_t
catalog_hash(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ULL;	/* FNV-1a */

	while (len--) {
		h ^= (unsigned char)*s++;
		h *= 1099511628211ULL;
	}
	return h;
}

/* Splits "host:port" / "[v6]:port"; 0 on success. */
static int
catalog_split_address(const char *address, char *host, size_t hostlen,
    char *port, size_t portlen)
{
	const char *colon, *h = address;
	size_t hl;

	if (*h == '[') {
		const char *end = strchr(h, ']');
		if (end == NULL || end[1] != ':')
			return -1;
		h++;
		hl = end - h;
		colon = end + 1;
	} else {
		if ((colon = strrchr(h, ':')) == NULL)
			return -1;
		hl = colon - h;
	}
	if (hl == 0 || hl >= hostlen || strlen(colon + 1) >= portlen)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

/* A static backend: "host:port", numeric or by getaddrinfo, at load. */
static int
catalog_resolve(struct ig_backend *b, char **err)
{
	struct addrinfo hints, *res;
	char host[112], port[16];
	int rc;

	if (catalog_split_address(b->conf->address, host, sizeof(host),
	    port, sizeof(port)) == -1) {
		if (asprintf(err, "backend %s: bad address",
		    b->conf->address) == -1)
			*err = NULL;
		return -1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		if (asprintf(err, "backend %s:%s: %s", host, port,
		    gai_strerror(rc)) == -1)
			*err = NULL;
		return -1;
	}
	memcpy(&b->addr, res->ai_addr, res->ai_addrlen);
	b->addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	if (strchr(host, ':') != NULL)
		snprintf(b->host, sizeof(b->host), "[%s]:%s", host, port);
	else
		snprintf(b->host, sizeof(b->host), "%s:%s", host, port);
	memcpy(b->name, b->host, sizeof(b->name) - 1);	/* host is < 112 + 18 */
	return 0;
}

/*
 * One address of a DNS backend: named by the address (the key of its
 * runtime state: each address is a backend of its own), the Host header
 * the name's.
 */
static void
catalog_dns_backend(struct ig_backend *b, const struct ig_addr *a)
{
	char ip[INET6_ADDRSTRLEN];
	const void *in;

	memcpy(&b->addr, &a->ss, a->len);
	b->addrlen = a->len;
	in = a->ss.ss_family == AF_INET6 ?
	    (const void *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr :
	    (const void *)&((const struct sockaddr_in *)&a->ss)->sin_addr;
	if (inet_ntop(a->ss.ss_family, in, ip, sizeof(ip)) == NULL)
		snprintf(ip, sizeof(ip), "?");
	snprintf(b->name, sizeof(b->name), a->ss.ss_family == AF_INET6 ?
	    "[%s]:%llu" : "%s:%llu", ip, (unsigned long long)b->conf->port);
	snprintf(b->host, sizeof(b->host), "%s:%llu", b->conf->dns,
	    (unsigned long long)b->conf->port);
}

/* BASE's backend of the same config entry (a static one), or NULL. */
static const struct ig_backend *
catalog_static_of(const struct ig_pool *base, const struct ig_backend_conf *bc)
{
	size_t i;

	for (i = 0; base != NULL && i < base->nbackends; i++)
		if (base->backends[i].conf == bc)
			return &base->backends[i];
	return NULL;
}

/*
 * The pool's backends: a static one each (its address from BASE, the
 * same pool of the catalog this one is derived from, when there is one:
 * static names are resolved once, at load), a DNS one per address it has.
 */
static int
catalog_pool_backends(struct ig_pool *p, ig_dns_lookup_fn lookup, void *arg,
    const struct ig_pool *base, char **err)
{
	const struct ig_backend *b0;
	const struct ig_addr *addrs;
	size_t i, k, n, total = 0;

	for (i = 0; i < p->conf->nbackends; i++)
		total += p->conf->backends[i].dns == NULL ? 1 :
		    lookup == NULL ? 0 : lookup(p->conf->backends[i].dns,
		    p->conf->backends[i].port, &addrs, arg);
	if ((p->backends = calloc(total + 1, sizeof(*p->backends))) == NULL)
		return -1;
	for (i = 0; i < p->conf->nbackends; i++) {
		const struct ig_backend_conf *bc = &p->conf->backends[i];

		n = bc->dns == NULL ? 1 : lookup == NULL ? 0 :
		    lookup(bc->dns, bc->port, &addrs, arg);
		for (k = 0; k < n && p->nbackends < total; k++) {
			struct ig_backend *b = &p->backends[p->nbackends];

			b->conf = bc;
			b->index = p->nbackends;
			if (bc->dns != NULL)
				catalog_dns_backend(b, &addrs[k]);
			else if ((b0 = catalog_static_of(base, bc)) != NULL) {
				b->addr = b0->addr;
				b->addrlen = b0->addrlen;
				memcpy(b->name, b0->name, sizeof(b->name));
				memcpy(b->host, b0->host, sizeof(b->host));
			} else if (catalog_resolve(b, err) == -1)
				return -1;
			if ((b->state = ig_bstate_get(b->name)) == NULL)
				return -1;
			p->nbackends++;
		}
	}
	return 0;
}

/* PUB's pool named as P, or NULL. */
static const struct ig_pool *
catalog_pool_named(const struct ig_catalog *pub, const struct ig_pool *p)
{
	size_t i;

	for (i = 0; pub != NULL && i < pub->npools; i++)
		if (strcmp(pub->pools[i].conf->name, p->conf->name) == 0)
			return &pub->pools[i];
	return NULL;
}

static bool
catalog_pool_has(const struct ig_pool *q, const char *name)
{
	size_t i;

	for (i = 0; i < q->nbackends; i++)
		if (strcmp(q->backends[i].name, name) == 0)
			return true;
	return false;
}

/*
 * A backend that joins a pool already serving, one of the published
 * catalog PUB with health checks that did not have it (a reload or a DNS
 * change adds it), is pending: down until its first check passes, as
 * Envoy holds a new host back, so that a model server still loading gets
 * nothing. A backend of a pool PUB does not have (at start, a pool a
 * reload adds) starts ready, so that a new pool is never empty before its
 * first checks; so does one whose checks have a result already (another
 * pool checks the address). Its state is one for every pool that has the
 * address: it is pending only if every pool with checks that has it
 * holds it back. BUILD tells this build's marks from older ones.
 */
static void
catalog_mark_joins(struct ig_catalog *cat, const struct ig_catalog *pub,
    uint64_t build)
{
	const struct ig_pool *p, *q;
	size_t i, j;

	if (pub == NULL)	/* the start: every pool is new */
		return;
	for (i = 0; i < cat->npools; i++) {
		p = &cat->pools[i];
		if (p->conf->health_path == NULL)
			continue;
		q = catalog_pool_named(pub, p);
		for (j = 0; j < p->nbackends; j++)
			ig_bstate_mark(p->backends[j].state, build, q != NULL &&
			    !catalog_pool_has(q, p->backends[j].name) &&
			    !ig_bstate_checked(p->backends[j].state));
	}
	for (i = 0; i < cat->npools; i++)
		for (j = 0; j < cat->pools[i].nbackends; j++)
			if (ig_bstate_joins(cat->pools[i].backends[j].state,
			    build))
				ig_bstate_pending(cat->pools[i].backends[j].state);
}

struct ig_catalog *
ig_catalog_create(const struct ig_config *conf, ig_dns_lookup_fn lookup,
    void *arg, char **err)
{
	return ig_catalog_derive(conf, NULL, NULL, lookup, arg, err);
}

struct ig_catalog *
ig_catalog_derive(const struct ig_config *conf, const struct ig_catalog *base,
    const struct ig_catalog *pub, ig_dns_lookup_fn lookup, void *arg,
    char **err)
{
	static uint64_t builds;	/* catalogs are built on the main thread */
	struct ig_catalog *cat;
	size_t i, j;

	*err = NULL;
	if ((cat = calloc(1, sizeof(*cat))) == NULL)
		goto nomem;
	cat->npools = conf->npools;
	if ((cat->pools = calloc(conf->npools + 1, sizeof(*cat->pools))) == NULL)
		goto nomem;
	for (i = 0; i < conf->npools; i++) {
		struct ig_pool *p = &cat->pools[i];

		p->conf = &conf->pools[i];
		p->index = i;
		if ((p->cap = ig_cap_get(p->conf->name)) == NULL)
			goto nomem;
		if (catalog_pool_backends(p, lookup, arg, base != NULL &&
		    i < base->npools ? &base->pools[i] : NULL, err) == -1) {
			if (*err != NULL)
				goto fail;
			goto nomem;
		}
	}
	cat->nmodels = conf->nmodels;
	cat->tablesize = 16;
	while (cat->tablesize < conf->nmodels * 2)
		cat->tablesize *= 2;
	cat->models = calloc(conf->nmodels + 1, sizeof(*cat->models));
	cat->table = calloc(cat->tablesize, sizeof(*cat->table));
	if (cat->models == NULL || cat->table == NULL)
		goto nomem;
	for (i = 0; i < conf->nmodels; i++) {
		struct ig_model *m = &cat->models[i];
		uint64_t h;

		m->conf = &conf->models[i];
		m->namelen = strlen(m->conf->name);
		for (j = 0; m->conf->pool != NULL && j < cat->npools; j++)
			if (strcmp(cat->pools[j].conf->name, m->conf->pool) == 0)
				m->pool = &cat->pools[j];
		h = catalog_hash(m->conf->name, m->namelen);
		for (j = h & (cat->tablesize - 1); cat->table[j] != NULL;
		    j = (j + 1) & (cat->tablesize - 1))
			;
		cat->table[j] = m;
	}
	catalog_mark_joins(cat, pub, ++builds);
	return cat;
nomem:
	if (*err == NULL && (*err = strdup("out of memory")) == NULL)
		*err = NULL;
fail:
	ig_catalog_free(cat);
	return NULL;
}

void
ig_catalog_free(struct ig_catalog *cat)
{
	size_t i, j;

	if (cat == NULL)
		return;
	for (i = 0; cat->pools != NULL && i < cat->npools; i++) {
		for (j = 0; j < cat->pools[i].nbackends; j++)
			ig_bstate_put(cat->pools[i].backends[j].state);
		free(cat->pools[i].backends);
	}
	free(cat->pools);
	free(cat->models);
	free(cat->table);
	free(cat);
}

const struct ig_model *
ig_catalog_model(const struct ig_catalog *cat, const char *name, size_t len)
{
	size_t j;

	for (j = catalog_hash(name, len) & (cat->tablesize - 1);
	    cat->table[j] != NULL; j = (j + 1) & (cat->tablesize - 1)) {
		const struct ig_model *m = cat->table[j];
		if (m->namelen == len && memcmp(m->conf->name, name, len) == 0)
			return m;
	}
	return NULL;
}

size_t
ig_catalog_nmodels(const struct ig_catalog *cat)
{
	return cat->nmodels;
}

const struct ig_model *
ig_catalog_model_at(const struct ig_catalog *cat, size_t i)
{
	return i < cat->nmodels ? &cat->models[i] : NULL;
}

size_t
ig_catalog_npools(const struct ig_catalog *cat)
{
	return cat->npools;
}

/* The pool named NAME, or NULL (a handful of pools: a linear search). */
struct ig_pool *
ig_catalog_pool_named(const struct ig_catalog *cat, const char *name)
{
	size_t i;

	for (i = 0; i < cat->npools; i++)
		if (strcmp(cat->pools[i].conf->name, name) == 0)
			return &cat->pools[i];
	return NULL;
}

struct ig_pool *
ig_catalog_pool_at(const struct ig_catalog *cat, size_t i)
{
	return i < cat->npools ? &cat->pools[i] : NULL;
}
