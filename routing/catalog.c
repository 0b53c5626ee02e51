/*
 * The model catalog: client model names -> model (pool, upstream name),
 * pools -> backends with resolved addresses. Built once per config load.
 */
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

static int
catalog_resolve(struct ig_backend *b, char **err)
{
	struct addrinfo hints, *res;
	char host[112], port[16];
	int rc;

	if (b->conf->address != NULL) {
		if (catalog_split_address(b->conf->address, host, sizeof(host),
		    port, sizeof(port)) == -1) {
			if (asprintf(err, "backend %s: bad address",
			    b->conf->address) == -1)
				*err = NULL;
			return -1;
		}
	} else {
		snprintf(host, sizeof(host), "%s", b->conf->dns);
		snprintf(port, sizeof(port), "%llu",
		    (unsigned long long)b->conf->port);
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
	snprintf(b->name, sizeof(b->name), "%s", b->host);
	return 0;
}

struct ig_catalog *
ig_catalog_create(const struct ig_config *conf, char **err)
{
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
		p->nbackends = p->conf->nbackends;
		p->backends = calloc(p->nbackends + 1, sizeof(*p->backends));
		if (p->backends == NULL)
			goto nomem;
		for (j = 0; j < p->nbackends; j++) {
			p->backends[j].conf = &p->conf->backends[j];
			p->backends[j].index = j;
			if (catalog_resolve(&p->backends[j], err) == -1)
				goto fail;
			if ((p->backends[j].state =
			    ig_bstate_get(p->backends[j].name)) == NULL)
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
	size_t i;

	if (cat == NULL)
		return;
	for (i = 0; cat->pools != NULL && i < cat->npools; i++)
		free(cat->pools[i].backends);
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

struct ig_pool *
ig_catalog_pool_at(const struct ig_catalog *cat, size_t i)
{
	return i < cat->npools ? &cat->pools[i] : NULL;
}
