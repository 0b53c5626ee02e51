/*
 * Loading the configuration: one YAML file -> a node tree -> each module's
 * section -> cross-checks -> an immutable, reference-counted struct
 * ig_config. This file owns the top-level keys (listen, admin, workers, log,
 * limits, shutdown_grace); routing/routing_conf.c and
 * admission/admission_conf.c own the rest.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "infergate/admission_conf.h"
#include "infergate/conf_yaml.h"
#include "infergate/config.h"
#include "infergate/routing_conf.h"

_Static_assert(sizeof(enum ig_log_level) == sizeof(int), "enum size");

#define MS_S	1000ULL
#define KIB	1024ULL
#define MIB	(1024ULL * 1024)
#define GIB	(1024ULL * 1024 * 1024)

/*
 * "250ms", "5s", "2m", "1h" and combinations in decreasing units ("1h30m",
 * "1m30s"); "0" alone is zero. Returns 0 with *ms set, or -1 on anything
 * else, including an overflow of 64-bit milliseconds.
 */
int
ig_parse_duration(const char *s, uint64_t *ms)
{
	uint64_t total = 0, v, mult, last = UINT64_MAX;

	if (s == NULL || *s == '\0')
		return -1;
	if (strcmp(s, "0") == 0) {
		*ms = 0;
		return 0;
	}
	while (*s != '\0') {
		if (!isdigit((unsigned char)*s))
			return -1;
		for (v = 0; isdigit((unsigned char)*s); s++) {
			if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
				return -1;
			v = v * 10 + (uint64_t)(*s - '0');
		}
		if (strncmp(s, "ms", 2) == 0) {
			mult = 1;
			s += 2;
		} else if (*s == 's')
			mult = 1000, s++;
		else if (*s == 'm')
			mult = 60 * 1000, s++;
		else if (*s == 'h')
			mult = 3600 * 1000, s++;
		else
			return -1;
		if (mult >= last)
			return -1;
		last = mult;
		if (v > (UINT64_MAX - total) / mult)
			return -1;
		total += v * mult;
	}
	*ms = total;
	return 0;
}

/* --- the top-level keys ------------------------------------------------- */

static int
check_listen_address(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	return cy_check_address(ctx, n, ((struct ig_listen_conf *)obj)->address);
}

static int
check_tls_certificate(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	return cy_check_readable(ctx, n,
	    ((struct ig_listen_conf *)obj)->tls_certificate);
}

static int
check_tls_key(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	return cy_check_readable(ctx, n, ((struct ig_listen_conf *)obj)->tls_key);
}

static const struct cy_key listen_tls_keys[] = {
	{ .name = "certificate", .type = CY_STRING,
	  .flags = CY_REQUIRED | CY_PATH | CY_NONEMPTY,
	  .off = offsetof(struct ig_listen_conf, tls_certificate),
	  .check = check_tls_certificate },
	{ .name = "key", .type = CY_STRING,
	  .flags = CY_REQUIRED | CY_PATH | CY_NONEMPTY,
	  .off = offsetof(struct ig_listen_conf, tls_key),
	  .check = check_tls_key },
	{ .name = NULL }
};

static const struct cy_key listen_keys[] = {
	{ .name = "address", .type = CY_STRING, .flags = CY_REQUIRED,
	  .off = offsetof(struct ig_listen_conf, address),
	  .check = check_listen_address },
	{ .name = "tls", .type = CY_TABLE, .flags = CY_OPTIONAL,
	  .sub = listen_tls_keys },
	{ .name = NULL }
};

static int
check_admin_address(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	return cy_check_address(ctx, n, ((struct ig_config *)obj)->admin_address);
}

static const struct cy_key admin_keys[] = {
	{ .name = "address", .type = CY_STRING, .def = "127.0.0.1:9090",
	  .off = offsetof(struct ig_config, admin_address),
	  .check = check_admin_address },
	{ .name = NULL }
};

/* workers: "auto" (the online CPUs, at most 256) or 1..256. */
static int
read_workers(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	struct ig_config *cfg = obj;
	long ncpu;
	char *end;
	unsigned long v;

	if (n == NULL || (n->kind == CY_SCALAR && strcmp(n->value, "auto") == 0)) {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		cfg->workers = ncpu < 1 ? 1 : ncpu > 256 ? 256 : (uint64_t)ncpu;
		return 0;
	}
	if (n->kind != CY_SCALAR || !isdigit((unsigned char)n->value[0]))
		return cy_err(ctx, n, "expected \"auto\" or a number between "
		    "1 and 256");
	v = strtoul(n->value, &end, 10);
	if (*end != '\0' || v < 1 || v > 256)
		return cy_err(ctx, n, "expected \"auto\" or a number between "
		    "1 and 256");
	cfg->workers = v;
	return 0;
}

/* Log paths other than "-" and "off" are relative to the config file. */
static int
resolve_log(const struct cy_node *n, const char *file, char **path)
{
	char *p;

	if (n == NULL || strcmp(*path, "-") == 0 || strcmp(*path, "off") == 0)
		return 0;
	p = cy_resolve(file, *path);
	free(*path);
	*path = p;
	return 0;
}

static int
check_access_log(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	return resolve_log(n, n ? n->file : NULL,
	    &((struct ig_config *)obj)->log.access_log);
}

static int
check_error_log(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	return resolve_log(n, n ? n->file : NULL,
	    &((struct ig_config *)obj)->log.error_log);
}

static const char *const log_levels[] = { "error", "warn", "info", "debug",
	NULL };

static const struct cy_key log_keys[] = {
	{ .name = "level", .type = CY_ENUM, .def = "info", .names = log_levels,
	  .off = offsetof(struct ig_config, log.level) },
	{ .name = "access_log", .type = CY_STRING, .flags = CY_NONEMPTY,
	  .def = "-", .off = offsetof(struct ig_config, log.access_log),
	  .check = check_access_log },
	{ .name = "error_log", .type = CY_STRING, .flags = CY_NONEMPTY,
	  .def = "-", .off = offsetof(struct ig_config, log.error_log),
	  .check = check_error_log },
	{ .name = NULL }
};

#define LIMIT(n, f, d, lo, hi) { .name = n, .type = CY_UINT, .def = d, \
	.off = offsetof(struct ig_config, limits.f), .min = lo, .max = hi }
#define LIMIT_MS(n, f, d) { .name = n, .type = CY_DURATION, .def = d, \
	.off = offsetof(struct ig_config, limits.f), .min = 1, \
	.max = UINT64_MAX }

static const struct cy_key limits_keys[] = {
	LIMIT("max_header_bytes", max_header_bytes, "16384", KIB, MIB),
	LIMIT("max_headers", max_headers, "100", 1, 1000),
	LIMIT("max_body_bytes", max_body_bytes, "4194304", 1, GIB),
	LIMIT_MS("header_timeout", header_timeout_ms, "10s"),
	LIMIT_MS("body_timeout", body_timeout_ms, "30s"),
	LIMIT_MS("keepalive_timeout", keepalive_timeout_ms, "75s"),
	LIMIT("max_requests_per_connection", max_requests_per_connection,
	    "10000", 0, UINT64_MAX),
	LIMIT("max_response_bytes", max_response_bytes, "67108864", KIB, GIB),
	{ .name = NULL }
};

int
ig_parse_nameserver(const char *s, int *family, void *addr, uint16_t *portp)
{
	char host[64];
	const char *port = NULL, *end;
	size_t hl;
	long p = 53;

	if (*s == '[') {
		if ((end = strchr(s, ']')) == NULL || (end[1] != '\0' &&
		    end[1] != ':'))
			return -1;
		hl = end - s - 1;
		s++;
		port = end[1] == ':' ? end + 2 : NULL;
	} else if ((end = strchr(s, ':')) != NULL && strchr(end + 1, ':') == NULL) {
		hl = end - s;
		port = end + 1;
	} else
		hl = strlen(s);
	if (hl == 0 || hl >= sizeof(host))
		return -1;
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (port != NULL) {
		if (!isdigit((unsigned char)*port) || strlen(port) > 5)
			return -1;
		p = strtol(port, NULL, 10);
		if (p < 1 || p > 65535 || strspn(port, "0123456789") != strlen(port))
			return -1;
	}
	*portp = (uint16_t)p;
	if (inet_pton(AF_INET, host, addr) == 1)
		*family = AF_INET;
	else if (inet_pton(AF_INET6, host, addr) == 1)
		*family = AF_INET6;
	else
		return -1;
	return 0;
}

int
ig_parse_cidr(const char *s, struct ig_cidr *out)
{
	char addr[64], *end;
	const char *slash = strchr(s, '/');
	size_t len = slash != NULL ? (size_t)(slash - s) : strlen(s);
	unsigned long bits;
	unsigned i;

	memset(out, 0, sizeof(*out));
	if (len == 0 || len >= sizeof(addr))
		return -1;
	memcpy(addr, s, len);
	addr[len] = '\0';
	if (inet_pton(AF_INET, addr, out->addr) == 1)
		out->family = AF_INET;
	else if (inet_pton(AF_INET6, addr, out->addr) == 1)
		out->family = AF_INET6;
	else
		return -1;
	bits = out->family == AF_INET ? 32 : 128;
	if (slash != NULL) {
		if (!isdigit((unsigned char)slash[1]))
			return -1;
		bits = strtoul(slash + 1, &end, 10);
		if (*end != '\0' || bits > (out->family == AF_INET ? 32u : 128u))
			return -1;
	}
	out->bits = (unsigned)bits;
	/* the host bits of "10.1.2.3/8" say nothing: 10.0.0.0/8 */
	for (i = 0; i < 16; i++) {
		if (i * 8 >= bits)
			out->addr[i] = 0;
		else if (i * 8 + 8 > bits)
			out->addr[i] &= (uint8_t)(0xff << (8 - (bits - i * 8)));
	}
	return 0;
}

static bool
nameserver_ok(const char *s)
{
	unsigned char addr[sizeof(struct in6_addr)];
	uint16_t port;
	int family;

	return ig_parse_nameserver(s, &family, addr, &port) == 0;
}

static int
check_nameservers(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	const struct ig_resolver_conf *rc = &((struct ig_config *)obj)->resolver;
	size_t i;

	for (i = 0; i < rc->nnameservers; i++)
		if (!nameserver_ok(rc->nameservers[i]))
			return cy_err(ctx, n != NULL && n->kind == CY_SEQ &&
			    i < n->n ? n->items[i] : n, "\"%s\" is not "
			    "an IP address with an optional port (the name "
			    "servers are not themselves resolved)",
			    rc->nameservers[i]);
	return 0;
}

static const struct cy_key resolver_keys[] = {
	{ .name = "nameservers", .type = CY_STRLIST,
	  .off = offsetof(struct ig_config, resolver.nameservers),
	  .count_off = offsetof(struct ig_config, resolver.nnameservers),
	  .check = check_nameservers },
	{ .name = "timeout", .type = CY_DURATION, .def = "2s", .min = 100,
	  .max = 60 * MS_S, .off = offsetof(struct ig_config, resolver.timeout_ms) },
	{ .name = "attempts", .type = CY_UINT, .def = "2", .min = 1, .max = 10,
	  .off = offsetof(struct ig_config, resolver.attempts) },
	{ .name = NULL }
};

/* trusted_proxies: a list of "address" or "address/bits", both families. */
static int
read_trusted_proxies(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	struct ig_config *cfg = obj;
	size_t i;

	if (n == NULL)
		return 0;
	if (n->kind != CY_SEQ)
		return cy_err(ctx, n, "must be a list of addresses or CIDR "
		    "blocks");
	if (n->n == 0)
		return 0;
	if ((cfg->trusted_proxies = calloc(n->n,
	    sizeof(*cfg->trusted_proxies))) == NULL)
		return cy_err(ctx, n, "out of memory");
	for (i = 0; i < n->n; i++) {
		const struct cy_node *e = n->items[i];

		if (e->kind != CY_SCALAR || ig_parse_cidr(e->value,
		    &cfg->trusted_proxies[i]) == -1)
			return cy_err(ctx, e, "\"%s\" is not an IP address or a "
			    "CIDR block (10.0.0.0/8, fd00::/8)",
			    e->kind == CY_SCALAR ? e->value : "(not a string)");
		cfg->ntrusted_proxies++;
	}
	return 0;
}

static void
release_trusted_proxies(void *obj)
{
	struct ig_config *cfg = obj;

	free(cfg->trusted_proxies);
	cfg->trusted_proxies = NULL;
	cfg->ntrusted_proxies = 0;
}

static const struct cy_key top_keys[] = {
	{ .name = "listen", .type = CY_LIST, .flags = CY_REQUIRED, .min = 1,
	  .off = offsetof(struct ig_config, listen),
	  .count_off = offsetof(struct ig_config, nlisten),
	  .elemsize = sizeof(struct ig_listen_conf), .sub = listen_keys },
	{ .name = "admin", .type = CY_TABLE, .sub = admin_keys },
	{ .name = "workers", .type = CY_CUSTOM, .read = read_workers },
	{ .name = "log", .type = CY_TABLE, .sub = log_keys },
	{ .name = "limits", .type = CY_TABLE, .sub = limits_keys },
	{ .name = "shutdown_grace", .type = CY_DURATION, .def = "60s",
	  .off = offsetof(struct ig_config, shutdown_grace_ms),
	  .max = UINT64_MAX },
	{ .name = "resolver", .type = CY_TABLE, .sub = resolver_keys },
	{ .name = "trusted_proxies", .type = CY_CUSTOM,
	  .read = read_trusted_proxies, .release = release_trusted_proxies },
	{ .name = "store", .type = CY_EXTERNAL },	/* admission_conf.c */
	{ .name = "tenants", .type = CY_EXTERNAL },
	{ .name = "tenant_files", .type = CY_EXTERNAL },
	{ .name = "pools", .type = CY_EXTERNAL },	/* routing_conf.c */
	{ .name = "models", .type = CY_EXTERNAL },
	{ .name = NULL }
};

/* --- cross-checks ------------------------------------------------------- */

static bool
is_wildcard(const char *host, size_t len)
{
	return (len == 7 && strncmp(host, "0.0.0.0", 7) == 0) ||
	    (len == 4 && strncmp(host, "[::]", 4) == 0);
}

/* Would binding both a and b (valid host:port) clash? */
static bool
same_endpoint(const char *a, const char *b)
{
	const char *pa = strrchr(a, ':'), *pb = strrchr(b, ':');
	size_t la = (size_t)(pa - a), lb = (size_t)(pb - b);

	if (strcmp(pa, pb) != 0)
		return false;
	return (la == lb && strncmp(a, b, la) == 0) ||
	    is_wildcard(a, la) || is_wildcard(b, lb);
}

static const struct cy_node *
listen_address_node(const struct cy_node *root, size_t i)
{
	const struct cy_node *l = cy_get(root, "listen");

	return cy_get(l->items[i], "address");
}

/* The second pass over the top-level keys: addresses that would clash. */
static int
config_check(struct cy_ctx *ctx, const struct cy_node *root,
    const struct ig_config *cfg)
{
	const struct cy_node *n, *prev;
	size_t i, j, mark;
	int rc = 0;

	for (i = 0; rc == 0 && i < cfg->nlisten; i++) {
		for (j = 0; j < i; j++)
			if (same_endpoint(cfg->listen[i].address,
			    cfg->listen[j].address))
				break;
		if (j == i)
			continue;
		n = listen_address_node(root, i);
		prev = listen_address_node(root, j);
		mark = cy_push(ctx, "listen");
		cy_push_index(ctx, i);
		rc = cy_err_key(ctx, n, "address", "\"%s\" clashes with "
		    "listen[%zu].address \"%s\" (%s:%d:%d)",
		    cfg->listen[i].address, j, cfg->listen[j].address,
		    prev->file, prev->line, prev->col);
		cy_pop(ctx, mark);
	}
	for (i = 0; rc == 0 && i < cfg->nlisten; i++) {
		if (!same_endpoint(cfg->admin_address, cfg->listen[i].address))
			continue;
		prev = listen_address_node(root, i);
		mark = cy_push(ctx, "admin");
		rc = cy_err_key(ctx, cy_get(cy_get(root, "admin"), "address"),
		    "address", "\"%s\" clashes with listen[%zu].address \"%s\" "
		    "(%s:%d:%d): the admin endpoints are never served on a "
		    "client listener", cfg->admin_address, i,
		    cfg->listen[i].address, prev->file, prev->line, prev->col);
		cy_pop(ctx, mark);
	}
	return rc;
}

/* --- the whole ---------------------------------------------------------- */

static void
config_free(struct ig_config *cfg)
{
	cy_free_table(top_keys, cfg);
	routing_conf_free(cfg);
	admission_conf_free(cfg);
	free(cfg->path);
	free(cfg);
}

/*
 * Builds a whole config off to the side; nothing global is touched, so a
 * failed reload leaves the running config as it was.
 */
struct ig_config *
ig_config_load(const char *file, char **err)
{
	struct ig_config *cfg;
	const struct cy_node *root;
	struct cy_ctx ctx;

	*err = NULL;
	cy_ctx_init(&ctx, file);
	cfg = cy_xcalloc(1, sizeof(*cfg));
	cfg->refcnt = 1;
	cfg->path = cy_xstrdup(file);
	if ((root = cy_parse_file(&ctx, file)) == NULL)
		goto fail;
	ctx.at = root;
	if (cy_read_table(&ctx, root, top_keys, cfg) == -1 ||
	    routing_conf_read(&ctx, root, cfg) == -1 ||
	    admission_conf_read(&ctx, root, cfg) == -1 ||
	    config_check(&ctx, root, cfg) == -1)
		goto fail;
	cy_ctx_clear(&ctx);
	return cfg;
fail:
	cy_ctx_clear(&ctx);
	config_free(cfg);
	*err = ctx.err;
	return NULL;
}

struct ig_config *
ig_config_ref(struct ig_config *cfg)
{
	__atomic_add_fetch(&cfg->refcnt, 1, __ATOMIC_RELAXED);
	return cfg;
}

/* The last reference frees the config (wiping the redis password). */
void
ig_config_unref(struct ig_config *cfg)
{
	if (cfg == NULL)
		return;
	if (__atomic_sub_fetch(&cfg->refcnt, 1, __ATOMIC_ACQ_REL) == 0)
		config_free(cfg);
}

/* A handful of pools and models: a linear search is the fastest there is. */
const struct ig_pool_conf *
ig_config_pool(const struct ig_config *cfg, const char *name)
{
	size_t i;

	for (i = 0; i < cfg->npools; i++)
		if (strcmp(cfg->pools[i].name, name) == 0)
			return &cfg->pools[i];
	return NULL;
}

const struct ig_model_conf *
ig_config_model(const struct ig_config *cfg, const char *name)
{
	size_t i;

	for (i = 0; i < cfg->nmodels; i++)
		if (strcmp(cfg->models[i].name, name) == 0)
			return &cfg->models[i];
	return NULL;
}
