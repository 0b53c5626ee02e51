/*
 * The `pools` and `models` sections of the config: key tables for the first
 * pass, then the relations between models and pools (second pass).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infergate/conf_yaml.h"
#include "infergate/config.h"
#include "infergate/routing_conf.h"

_Static_assert(sizeof(enum ig_balance) == sizeof(int), "enum size");
_Static_assert(sizeof(enum ig_when_empty) == sizeof(int), "enum size");

#define NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" \
	"0123456789_.-"

/* --- pools -------------------------------------------------------------- */

static int
check_backend_address(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	return cy_check_address(ctx, n, ((struct ig_backend_conf *)obj)->address);
}

static int
check_backend_dns(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	const char *dns = ((struct ig_backend_conf *)obj)->dns;

	if (dns == NULL || (strlen(dns) <= 253 &&
	    strspn(dns, NAME_CHARS) == strlen(dns)))
		return 0;
	return cy_err(ctx, n, "invalid DNS name \"%s\"", dns);
}

/* A backend is an address, or a DNS name with a port: one or the other. */
static int
check_backend(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	const struct ig_backend_conf *b = obj;

	if (b->address != NULL && b->dns != NULL)
		return cy_err_key(ctx, cy_get(n, "dns"), "dns",
		    "address and dns are mutually exclusive");
	if (b->address == NULL && b->dns == NULL)
		return cy_err(ctx, n, "either address or dns is required");
	if (b->dns != NULL && cy_get(n, "port") == NULL)
		return cy_err_key(ctx, n, "port", "required with dns");
	if (b->address != NULL && cy_get(n, "port") != NULL)
		return cy_err_key(ctx, cy_get(n, "port"), "port",
		    "only used with dns (the port is part of address)");
	if (b->address != NULL && cy_get(n, "resolve_every") != NULL)
		return cy_err_key(ctx, cy_get(n, "resolve_every"),
		    "resolve_every", "only used with dns");
	return 0;
}

static const struct cy_key backend_keys[] = {
	{ .name = "address", .type = CY_STRING,
	  .off = offsetof(struct ig_backend_conf, address),
	  .check = check_backend_address },
	{ .name = "dns", .type = CY_STRING, .flags = CY_NONEMPTY,
	  .off = offsetof(struct ig_backend_conf, dns),
	  .check = check_backend_dns },
	{ .name = "port", .type = CY_UINT, .min = 1, .max = 65535,
	  .off = offsetof(struct ig_backend_conf, port) },
	{ .name = "resolve_every", .type = CY_DURATION, .def = "5s",
	  .min = 100, .max = UINT64_MAX,
	  .off = offsetof(struct ig_backend_conf, resolve_every_ms) },
	{ .name = "weight", .type = CY_UINT, .def = "1", .min = 1, .max = 1000,
	  .off = offsetof(struct ig_backend_conf, weight) },
	{ .name = NULL }
};

static int
check_http_path(struct cy_ctx *ctx, const struct cy_node *n, const char *p)
{
	if (p == NULL || (p[0] == '/' && strpbrk(p, " \t\r\n") == NULL))
		return 0;
	return cy_err(ctx, n, "invalid path \"%s\" (expected an absolute "
	    "path such as /metrics)", p);
}

static int
check_scrape_path(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	return check_http_path(ctx, n, ((struct ig_pool_conf *)obj)->scrape_path);
}

static int
check_health_path(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	return check_http_path(ctx, n, ((struct ig_pool_conf *)obj)->health_path);
}

#define POOL(f)		offsetof(struct ig_pool_conf, f)
#define POOL_MS(n, f, d, lo) { .name = n, .type = CY_DURATION, .def = d, \
	.off = POOL(f), .min = lo, .max = UINT64_MAX }
#define POOL_UINT(n, f, d, lo, hi) { .name = n, .type = CY_UINT, .def = d, \
	.off = POOL(f), .min = lo, .max = hi }

static const struct cy_key scrape_keys[] = {
	{ .name = "path", .type = CY_STRING, .def = "/metrics",
	  .off = POOL(scrape_path), .check = check_scrape_path },
	POOL_MS("interval", scrape_interval_ms, "1s", 100),
	{ .name = NULL }
};

static const struct cy_key health_keys[] = {
	{ .name = "path", .type = CY_STRING, .def = "/v1/models",
	  .off = POOL(health_path), .check = check_health_path },
	POOL_MS("interval", health_interval_ms, "2s", 100),
	POOL_MS("timeout", health_timeout_ms, "1s", 1),
	POOL_UINT("healthy_after", healthy_after, "2", 1, 100),
	POOL_UINT("unhealthy_after", unhealthy_after, "3", 1, 100),
	{ .name = NULL }
};

static const struct cy_key ejection_keys[] = {
	POOL_UINT("after", eject_after, "3", 0, 100),
	POOL_UINT("after_5xx", eject_after_5xx, "0", 0, 100),
	POOL_MS("duration", eject_ms, "10s", 100),
	{ .name = NULL }
};

static const struct cy_key queue_keys[] = {
	POOL_UINT("max_waiting", queue_max_waiting, "256", 0, 1000000),
	POOL_MS("max_wait", queue_max_wait_ms, "5s", 0),
	{ .name = NULL }
};

static const struct cy_key timeouts_keys[] = {
	POOL_MS("connect", connect_timeout_ms, "1s", 1),
	POOL_MS("first_byte", first_byte_timeout_ms, "60s", 1),
	POOL_MS("idle", idle_timeout_ms, "30s", 1),
	POOL_MS("request", request_timeout_ms, "600s", 1),
	{ .name = NULL }
};

static const struct cy_key retries_keys[] = {
	POOL_UINT("max_per_request", retries_max_per_request, "1", 0, 10),
	{ .name = "budget", .type = CY_DOUBLE, .def = "0.2", .dmin = 0,
	  .dmax = 1, .off = POOL(retries_budget) },
	{ .name = NULL }
};

static int
check_tls_ca(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	return cy_check_readable(ctx, n, ((struct ig_pool_conf *)obj)->tls_ca);
}

/* A host name: at most 253 bytes, as DNS has it. */
static int
check_tls_server_name(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	const char *s = ((struct ig_pool_conf *)obj)->tls_server_name;

	if (s != NULL && strlen(s) > 253)
		return cy_err(ctx, n, "a server name has at most 253 bytes");
	return 0;
}

static int
check_pool_tls(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	((struct ig_pool_conf *)obj)->tls_enabled = n != NULL;
	return 0;
}

static const struct cy_key pool_tls_keys[] = {
	{ .name = "ca", .type = CY_STRING, .flags = CY_PATH | CY_NONEMPTY,
	  .off = POOL(tls_ca), .check = check_tls_ca },
	{ .name = "server_name", .type = CY_STRING, .flags = CY_NONEMPTY,
	  .off = POOL(tls_server_name), .check = check_tls_server_name },
	{ .name = NULL }
};

static const char *const balance_names[] = { "least_inflight", "round_robin",
	"queue_depth", NULL };
static const char *const when_empty_names[] = { "queue", "fallback", "fail",
	NULL };

static const struct cy_key pool_keys[] = {
	{ .name = "backends", .type = CY_LIST, .flags = CY_REQUIRED, .min = 1,
	  .off = POOL(backends), .count_off = POOL(nbackends),
	  .elemsize = sizeof(struct ig_backend_conf), .sub = backend_keys,
	  .check = check_backend },
	{ .name = "balance", .type = CY_ENUM, .def = "least_inflight",
	  .names = balance_names, .off = POOL(balance) },
	{ .name = "scrape_metrics", .type = CY_TABLE, .flags = CY_OPTIONAL,
	  .sub = scrape_keys },
	{ .name = "health", .type = CY_TABLE, .flags = CY_OPTIONAL,
	  .sub = health_keys },
	{ .name = "ejection", .type = CY_TABLE, .sub = ejection_keys },
	POOL_UINT("max_inflight", max_inflight, "0", 0, 1000000),
	{ .name = "queue", .type = CY_TABLE, .sub = queue_keys },
	{ .name = "when_empty", .type = CY_ENUM, .def = "queue",
	  .names = when_empty_names, .off = POOL(when_empty) },
	{ .name = "timeouts", .type = CY_TABLE, .sub = timeouts_keys },
	{ .name = "retries", .type = CY_TABLE, .sub = retries_keys },
	POOL_UINT("keepalive_connections", keepalive_connections, "256", 0,
	    10000),
	{ .name = "tls", .type = CY_TABLE, .flags = CY_OPTIONAL,
	  .sub = pool_tls_keys, .check = check_pool_tls },
	{ .name = NULL }
};

static void
release_pools(void *obj)
{
	struct ig_config *cfg = obj;
	size_t i;

	for (i = 0; i < cfg->npools; i++) {
		cy_free_table(pool_keys, &cfg->pools[i]);
		free(cfg->pools[i].name);
	}
	free(cfg->pools);
	cfg->pools = NULL;
	cfg->npools = 0;
}

/* pools: a mapping of pool name -> pool. */
static int
read_pools(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	struct ig_config *cfg = obj;
	struct ig_pool_conf *pool;
	const struct cy_node *key, *val;
	size_t i, j, mark;
	int rc = 0;

	if (n == NULL)
		return 0;
	if (n->kind != CY_MAP)
		return cy_err(ctx, n, "expected a mapping of pool names to pools");
	cfg->pools = cy_xcalloc(n->n, sizeof(*cfg->pools));
	for (i = 0; rc == 0 && i < n->n; i++) {
		key = n->pairs[i].key;
		val = n->pairs[i].value;
		for (j = 0; j < i; j++)
			if (strcmp(n->pairs[j].key->value, key->value) == 0)
				return cy_err(ctx, key, "duplicate pool \"%s\"",
				    key->value);
		if (key->value[0] == '\0' || strlen(key->value) > 64 ||
		    strspn(key->value, NAME_CHARS) != strlen(key->value))
			return cy_err(ctx, key, "invalid pool name \"%s\" (1 to "
			    "64 of A-Z a-z 0-9 _ . -)", key->value);
		pool = &cfg->pools[cfg->npools++];
		pool->name = cy_xstrdup(key->value);
		mark = cy_push(ctx, key->value);
		if (cy_is_null(val))
			rc = cy_err(ctx, val, "expected a mapping");
		else
			rc = cy_read_table(ctx, val, pool_keys, pool);
		cy_pop(ctx, mark);
	}
	return rc;
}

/* --- models ------------------------------------------------------------- */

static int
check_model_name(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	const unsigned char *p, *name;

	name = (const unsigned char *)((struct ig_model_conf *)obj)->name;
	for (p = name; *p != '\0'; p++)
		if (*p <= ' ' || *p >= 0x7f)
			break;
	if (*p == '\0' && p != name && p - name <= 256)
		return 0;
	return cy_err(ctx, n, "invalid model name \"%s\" (1 to 256 printable "
	    "characters, no spaces)", (const char *)name);
}

static int
check_when(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	((struct ig_route_conf *)obj)->has_max_input_tokens =
	    cy_get(n, "max_input_tokens") != NULL;
	return 0;
}

static const struct cy_key when_keys[] = {
	{ .name = "max_input_tokens", .type = CY_UINT, .max = UINT64_MAX,
	  .off = offsetof(struct ig_route_conf, max_input_tokens) },
	{ .name = "tier", .type = CY_STRING, .flags = CY_NONEMPTY,
	  .off = offsetof(struct ig_route_conf, tier) },
	{ .name = "tenant", .type = CY_STRING, .flags = CY_NONEMPTY,
	  .off = offsetof(struct ig_route_conf, tenant) },
	{ .name = NULL }
};

static const struct cy_key route_keys[] = {
	{ .name = "when", .type = CY_TABLE, .flags = CY_OPTIONAL,
	  .sub = when_keys, .check = check_when },
	{ .name = "model", .type = CY_STRING, .flags = CY_REQUIRED | CY_NONEMPTY,
	  .off = offsetof(struct ig_route_conf, model) },
	{ .name = NULL }
};

/* A model has a pool or routes, not both; only a pool model falls back. */
static int
check_model(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	const struct ig_model_conf *m = obj;

	if (m->pool != NULL && m->routes != NULL)
		return cy_err_key(ctx, cy_get(n, "route"), "route",
		    "pool and route are mutually exclusive");
	if (m->pool == NULL && m->routes == NULL)
		return cy_err(ctx, n, "either pool or route is required");
	if (m->routes != NULL && cy_get(n, "fallback") != NULL)
		return cy_err_key(ctx, cy_get(n, "fallback"), "fallback",
		    "only for a model with a pool (a routed model uses the "
		    "fallbacks of the model it picks)");
	if (m->routes != NULL && m->upstream_model != NULL)
		return cy_err_key(ctx, cy_get(n, "upstream_model"),
		    "upstream_model", "only for a model with a pool");
	return 0;
}

#define MODEL(f)	offsetof(struct ig_model_conf, f)

static const struct cy_key model_keys[] = {
	{ .name = "name", .type = CY_STRING, .flags = CY_REQUIRED,
	  .off = MODEL(name), .check = check_model_name },
	{ .name = "pool", .type = CY_STRING, .flags = CY_NONEMPTY,
	  .off = MODEL(pool) },
	{ .name = "route", .type = CY_LIST, .min = 1, .off = MODEL(routes),
	  .count_off = MODEL(nroutes), .sub = route_keys,
	  .elemsize = sizeof(struct ig_route_conf) },
	{ .name = "upstream_model", .type = CY_STRING, .flags = CY_NONEMPTY,
	  .off = MODEL(upstream_model) },
	{ .name = "context_tokens", .type = CY_UINT, .def = "0", .min = 0,
	  .max = 100000000, .off = MODEL(context_tokens) },
	{ .name = "bytes_per_token", .type = CY_DOUBLE, .def = "4", .dmin = 0.5,
	  .dmax = 64, .off = MODEL(bytes_per_token) },
	{ .name = "tokens_per_message", .type = CY_UINT, .def = "4", .min = 0,
	  .max = 1000, .off = MODEL(tokens_per_message) },
	{ .name = "fallback", .type = CY_STRLIST, .off = MODEL(fallback),
	  .count_off = MODEL(nfallback) },
	{ .name = NULL }
};

static const struct cy_key routing_keys[] = {
	{ .name = "pools", .type = CY_CUSTOM, .read = read_pools,
	  .release = release_pools },
	{ .name = "models", .type = CY_LIST, .off = offsetof(struct ig_config,
	  models), .count_off = offsetof(struct ig_config, nmodels),
	  .elemsize = sizeof(struct ig_model_conf), .sub = model_keys,
	  .check = check_model },
	{ .name = NULL }
};

/* --- second pass -------------------------------------------------------- */

#define NONE	((size_t)-1)

static size_t
model_index(const struct ig_config *cfg, const char *name)
{
	size_t i;

	for (i = 0; i < cfg->nmodels; i++)
		if (strcmp(cfg->models[i].name, name) == 0)
			return i;
	return NONE;
}

enum edge { EDGE_FALLBACK, EDGE_ROUTE };

static size_t
edge_count(const struct ig_model_conf *m, enum edge e)
{
	return e == EDGE_FALLBACK ? m->nfallback : m->nroutes;
}

static const char *
edge_target(const struct ig_model_conf *m, enum edge e, size_t k)
{
	return e == EDGE_FALLBACK ? m->fallback[k] : m->routes[k].model;
}

/* The node of model i's k-th edge, with the path pushed onto ctx. */
static const struct cy_node *
edge_node(struct cy_ctx *ctx, const struct cy_node *root, size_t i,
    enum edge e, size_t k)
{
	const struct cy_node *m = cy_get(root, "models")->items[i];

	cy_push(ctx, "models");
	cy_push_index(ctx, i);
	if (e == EDGE_FALLBACK) {
		cy_push(ctx, "fallback");
		cy_push_index(ctx, k);
		return cy_get(m, "fallback")->items[k];
	}
	cy_push(ctx, "route");
	cy_push_index(ctx, k);
	cy_push(ctx, "model");
	return cy_get(cy_get(m, "route")->items[k], "model");
}

struct walk {
	struct cy_ctx	*ctx;
	const struct cy_node *root;
	const struct ig_config *cfg;
	enum edge	 e;
	unsigned char	*color;		/* 0 new, 1 on the stack, 2 done */
	size_t		*stack;
	size_t		 depth;
};

/* Depth-first search; a back edge is a cycle, reported with its members. */
static int
find_cycle(struct walk *w, size_t i)
{
	const struct ig_model_conf *m = &w->cfg->models[i];
	char chain[1024];
	size_t k, t, s, len, mark;

	w->color[i] = 1;
	w->stack[w->depth++] = i;
	for (k = 0; k < edge_count(m, w->e); k++) {
		t = model_index(w->cfg, edge_target(m, w->e, k));
		if (w->color[t] == 2)
			continue;
		if (w->color[t] == 0) {
			if (find_cycle(w, t) == -1)
				return -1;
			continue;
		}
		for (s = 0; w->stack[s] != t; s++)
			;
		for (len = 0, chain[0] = '\0'; s < w->depth; s++)
			len += snprintf(chain + len, len < sizeof(chain) ?
			    sizeof(chain) - len : 0, "%s -> ",
			    w->cfg->models[w->stack[s]].name);
		mark = w->ctx->pathlen;
		cy_err(w->ctx, edge_node(w->ctx, w->root, i, w->e, k),
		    "%s: %s%s", w->e == EDGE_FALLBACK ? "fallback cycle" :
		    "route loop", chain, w->cfg->models[t].name);
		cy_pop(w->ctx, mark);
		return -1;
	}
	w->depth--;
	w->color[i] = 2;
	return 0;
}

static int
check_edges(struct cy_ctx *ctx, const struct cy_node *root,
    const struct ig_config *cfg, size_t i, enum edge e)
{
	const struct ig_model_conf *m = &cfg->models[i];
	const struct cy_node *n;
	const char *name;
	size_t k, t, mark;

	for (k = 0; k < edge_count(m, e); k++) {
		name = edge_target(m, e, k);
		t = model_index(cfg, name);
		if (t != NONE && (e == EDGE_ROUTE || (t != i &&
		    cfg->models[t].pool != NULL)))
			continue;
		mark = ctx->pathlen;
		n = edge_node(ctx, root, i, e, k);
		if (t == NONE)
			cy_err(ctx, n, "unknown model \"%s\"", name);
		else if (t == i)
			cy_err(ctx, n, "a model cannot fall back to itself");
		else
			cy_err(ctx, n, "\"%s\" is a routed model; a fallback "
			    "must name a model with a pool", name);
		cy_pop(ctx, mark);
		return -1;
	}
	return 0;
}

static int
check_model_refs(struct cy_ctx *ctx, const struct cy_node *root,
    const struct ig_config *cfg, size_t i)
{
	const struct ig_model_conf *m = &cfg->models[i];
	const struct cy_node *mn = cy_get(root, "models")->items[i], *n, *prev;
	size_t j, mark;
	int rc = 0;

	mark = cy_push(ctx, "models");
	cy_push_index(ctx, i);
	for (j = 0; rc == 0 && j < i; j++) {
		if (strcmp(cfg->models[j].name, m->name) != 0)
			continue;
		n = cy_get(mn, "name");
		prev = cy_get(cy_get(root, "models")->items[j], "name");
		rc = cy_err_key(ctx, n, "name", "duplicate model \"%s\" (also "
		    "at %s:%d:%d)", m->name, prev->file, prev->line, prev->col);
	}
	if (rc == 0 && m->pool != NULL && ig_config_pool(cfg, m->pool) == NULL)
		rc = cy_err_key(ctx, cy_get(mn, "pool"), "pool",
		    "unknown pool \"%s\"", m->pool);
	cy_pop(ctx, mark);
	if (rc == 0)
		rc = check_edges(ctx, root, cfg, i, EDGE_FALLBACK);
	if (rc == 0)
		rc = check_edges(ctx, root, cfg, i, EDGE_ROUTE);
	return rc;
}

static int
routing_check(struct cy_ctx *ctx, const struct cy_node *root,
    const struct ig_config *cfg)
{
	struct walk w = { ctx, root, cfg, EDGE_FALLBACK, NULL, NULL, 0 };
	size_t i;
	int rc = 0;

	for (i = 0; rc == 0 && i < cfg->nmodels; i++)
		rc = check_model_refs(ctx, root, cfg, i);
	w.color = cy_xcalloc(cfg->nmodels, 1);
	w.stack = cy_xcalloc(cfg->nmodels, sizeof(*w.stack));
	for (w.e = EDGE_FALLBACK; rc == 0 && w.e <= EDGE_ROUTE; w.e++) {
		memset(w.color, 0, cfg->nmodels);
		for (i = 0; rc == 0 && i < cfg->nmodels; i++)
			if (w.color[i] == 0)
				rc = find_cycle(&w, i);
	}
	free(w.color);
	free(w.stack);
	return rc;
}

int
routing_conf_read(struct cy_ctx *ctx, const struct cy_node *root,
    struct ig_config *cfg)
{
	if (cy_read_keys(ctx, root, routing_keys, cfg) == -1)
		return -1;
	return routing_check(ctx, root, cfg);
}

void
routing_conf_free(struct ig_config *cfg)
{
	cy_free_table(routing_keys, cfg);
}
