/*
 * The `store`, `tenants` and `tenant_files` sections of the config: key
 * tables for the first pass, the tenant files the globs name, then the
 * relations between tenants (duplicate ids and keys, unknown models).
 */
#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infergate/admission.h"
#include "infergate/admission_conf.h"
#include "infergate/conf_yaml.h"
#include "infergate/config.h"
#include "infergate/log.h"

_Static_assert(sizeof(enum ig_store_type) == sizeof(int), "enum size");
_Static_assert(sizeof(enum ig_store_failure) == sizeof(int), "enum size");
_Static_assert(sizeof(enum ig_priority) == sizeof(int), "enum size");
_Static_assert(sizeof(enum ig_over_limit) == sizeof(int), "enum size");

#define ID_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" \
	"0123456789_.-"
#define PASSWORD_MAX	4096
#define DAY_MS		(24ULL * 3600 * 1000)

/* --- store -------------------------------------------------------------- */

static int
check_redis_address(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	const char *a = ((struct ig_config *)obj)->store.redis_address;

	if (a == NULL)
		return 0;
	if (strncmp(a, "unix:", 5) == 0)
		return a[5] == '\0' ? cy_err(ctx, n, "invalid address \"%s\": "
		    "missing socket path", a) : 0;
	return cy_check_address(ctx, n, a);
}

/*
 * Reads the password at load, so a bad file fails the load (or the reload)
 * rather than the first Redis connection. One line; a trailing newline is
 * not part of it.
 */
static int
check_password_file(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	struct ig_store_conf *st = &((struct ig_config *)obj)->store;
	char buf[PASSWORD_MAX + 1];
	size_t len;
	FILE *fp;
	int rc = 0;

	if (st->redis_password_file == NULL)
		return 0;
	if (st->redis_password_file[0] == '\0') {	/* "": none */
		free(st->redis_password_file);
		st->redis_password_file = NULL;
		return 0;
	}
	if ((fp = fopen(st->redis_password_file, "r")) == NULL)
		return cy_err(ctx, n, "cannot read \"%s\": %s",
		    st->redis_password_file, strerror(errno));
	len = fread(buf, 1, sizeof(buf), fp);
	if (ferror(fp))
		rc = cy_err(ctx, n, "cannot read \"%s\": %s",
		    st->redis_password_file, strerror(errno));
	fclose(fp);
	while (rc == 0 && len > 0 && (buf[len - 1] == '\n' ||
	    buf[len - 1] == '\r'))
		len--;
	if (rc == 0 && len > PASSWORD_MAX)
		rc = cy_err(ctx, n, "\"%s\": password longer than %d bytes",
		    st->redis_password_file, PASSWORD_MAX);
	else if (rc == 0 && len == 0)
		rc = cy_err(ctx, n, "\"%s\" is empty",
		    st->redis_password_file);
	else if (rc == 0 && memchr(buf, '\0', len) != NULL)
		rc = cy_err(ctx, n, "\"%s\": the password contains a NUL byte",
		    st->redis_password_file);
	if (rc == 0) {
		buf[len] = '\0';
		st->redis_password = cy_xstrdup(buf);
	}
	explicit_bzero(buf, sizeof(buf));
	return rc;
}

static int
check_key_prefix(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	const char *p = ((struct ig_config *)obj)->store.redis_key_prefix;
	size_t len = strlen(p);

	/* no braces: the keys carry the tenant as the Cluster hash tag */
	if (len >= 1 && len <= 64 && strspn(p, ID_CHARS ":") == len)
		return 0;
	return cy_err(ctx, n, "invalid key prefix \"%s\" (1 to 64 of "
	    "A-Z a-z 0-9 _ . - :)", p);
}

/* day_offset: a duration from 00:00 UTC, in whole seconds, under a day. */
static int
read_day_offset(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	uint64_t ms;

	if (n == NULL)
		return 0;
	if (n->kind != CY_SCALAR)
		return cy_err(ctx, n, "expected a duration");
	if (ig_parse_duration(n->value, &ms) == -1)
		return cy_err(ctx, n, "invalid duration \"%s\" (expected e.g. "
		    "250ms, 5s, 2m, 1h)", n->value);
	if (ms >= DAY_MS)
		return cy_err(ctx, n, "must be less than 24h");
	if (ms % 1000 != 0)
		return cy_err(ctx, n, "must be a whole number of seconds");
	((struct ig_config *)obj)->store.day_offset_s = ms / 1000;
	return 0;
}

static int
check_store(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	const struct ig_store_conf *st = &((struct ig_config *)obj)->store;
	const struct cy_node *redis = cy_get(n, "redis");

	if (st->type == IG_STORE_REDIS && st->redis_address == NULL)
		return cy_err_key(ctx, redis ? redis : n, "redis.address",
		    "required when type is redis");
	if (st->slices && st->type != IG_STORE_REDIS)
		return cy_err_key(ctx, cy_get(n, "slices"), "slices",
		    "only with type redis (the local store answers without "
		    "a round trip)");
	if (st->slices && st->slice_period_ms * 3 > st->lease_ttl_ms)
		return cy_err_key(ctx, cy_get(n, "slice_period") ?
		    cy_get(n, "slice_period") : cy_get(n, "slices"),
		    "slice_period", "at most a third of lease_ttl (a slice's "
		    "slots are renewed at least once a period)");
	return 0;
}

#define STORE(f)	offsetof(struct ig_config, store.f)

static const struct cy_key redis_keys[] = {
	{ .name = "address", .type = CY_STRING, .flags = CY_NONEMPTY,
	  .off = STORE(redis_address), .check = check_redis_address },
	{ .name = "password_file", .type = CY_STRING, .flags = CY_PATH,
	  .off = STORE(redis_password_file), .check = check_password_file },
	{ .name = "database", .type = CY_UINT, .def = "0", .min = 0,
	  .max = 65535, .off = STORE(redis_database) },
	{ .name = "timeout", .type = CY_DURATION, .def = "5ms", .min = 1,
	  .max = UINT64_MAX, .off = STORE(redis_timeout_ms) },
	{ .name = "key_prefix", .type = CY_STRING, .def = "ig",
	  .off = STORE(redis_key_prefix), .check = check_key_prefix },
	{ .name = NULL }
};

static const char *const store_types[] = { "local", "redis", NULL };
static const char *const store_failures[] = { "closed", "open", "local",
	NULL };

static const struct cy_key store_keys[] = {
	{ .name = "type", .type = CY_ENUM, .def = "local", .names = store_types,
	  .off = STORE(type) },
	{ .name = "redis", .type = CY_TABLE, .sub = redis_keys },
	{ .name = "on_store_failure", .type = CY_ENUM, .def = "closed",
	  .names = store_failures, .off = STORE(on_failure) },
	{ .name = "replicas", .type = CY_UINT, .def = "1", .min = 1,
	  .max = 1000, .off = STORE(replicas) },
	{ .name = "lease_ttl", .type = CY_DURATION, .def = "120s", .min = 1000,
	  .max = UINT64_MAX, .off = STORE(lease_ttl_ms) },
	{ .name = "day_offset", .type = CY_CUSTOM, .read = read_day_offset },
	{ .name = "slices", .type = CY_BOOL, .def = "false",
	  .off = STORE(slices) },
	{ .name = "slice_period", .type = CY_DURATION, .def = "1s",
	  .min = 100, .max = 60000, .off = STORE(slice_period_ms) },
	{ .name = NULL }
};

/* --- tenants ------------------------------------------------------------ */

static int
check_tenant_id(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	const char *id = ((struct ig_tenant_conf *)obj)->id;
	size_t len = strlen(id);

	if (len >= 1 && len <= 64 && strspn(id, ID_CHARS) == len)
		return 0;
	return cy_err(ctx, n, "invalid tenant id \"%s\" (1 to 64 of "
	    "A-Z a-z 0-9 _ . -)", id);
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* "sha256:<64 lowercase hex>" -> 32 bytes. */
static int
parse_key_hash(const char *s, uint8_t out[32])
{
	int i, hi, lo;

	if (strncmp(s, "sha256:", 7) != 0 || strlen(s) != 7 + 64)
		return -1;
	for (i = 0, s += 7; i < 32; i++) {
		if ((hi = hexval(s[2 * i])) == -1 ||
		    (lo = hexval(s[2 * i + 1])) == -1)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static int
read_tenant_keys(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	struct ig_tenant_conf *t = obj;
	size_t i, mark;
	int rc = 0;

	if (n->kind != CY_SEQ)
		return cy_err(ctx, n, "expected a list");
	if (n->n == 0)
		return cy_err(ctx, n, "must have at least 1 entry");
	t->keys = cy_xcalloc(n->n, sizeof(*t->keys));
	for (i = 0; rc == 0 && i < n->n; i++) {
		mark = cy_push_index(ctx, i);
		if (n->items[i]->kind != CY_SCALAR)
			rc = cy_err(ctx, n->items[i], "expected a string");
		else if (parse_key_hash(n->items[i]->value,
		    t->keys[t->nkeys]) == -1)
			rc = cy_err(ctx, n->items[i], "invalid key hash "
			    "(expected \"sha256:\" and 64 lowercase hex "
			    "digits; `infergate -k` prints it)");
		else
			t->nkeys++;
		cy_pop(ctx, mark);
	}
	return rc;
}

/* What a tenant holds beyond its table: the key hashes and its file. */
static void
release_tenant(void *obj)
{
	struct ig_tenant_conf *t = obj;

	free(t->keys);
	free(t->file);
	t->keys = NULL;
	t->file = NULL;
	t->nkeys = 0;
}

static int
check_tenant_models(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	const struct ig_tenant_conf *t = obj;
	size_t i;

	for (i = 0; t->nmodels > 1 && i < t->nmodels; i++)
		if (strcmp(t->models[i], "*") == 0)
			return cy_err(ctx, n->items[i], "\"*\" must be the "
			    "only entry");
	return 0;
}

/* Per tenant: where it was defined, and max_priority against priority. */
static int
check_tenant(struct cy_ctx *ctx, const struct cy_node *n, void *obj)
{
	struct ig_tenant_conf *t = obj;
	const struct cy_node *mp = cy_get(n, "max_priority");

	t->file = cy_xstrdup(n->file);
	t->line = n->line;
	if (mp == NULL)
		t->max_priority = t->priority;
	else if (t->max_priority < t->priority)
		return cy_err_key(ctx, mp, "max_priority", "\"%s\" is lower "
		    "than priority \"%s\"", ig_priority_name(t->max_priority),
		    ig_priority_name(t->priority));
	return 0;
}

static const char *const priorities[] = { "low", "normal", "high", NULL };
static const char *const over_limit[] = { "clamp", "reject", NULL };

#define TENANT(f)	offsetof(struct ig_tenant_conf, f)
#define TLIMIT(n)	{ .name = #n, .type = CY_UINT, .def = "0", \
	.max = UINT64_MAX, .off = TENANT(limits.n) }

static const struct cy_key tenant_limit_keys[] = {
	TLIMIT(max_input_tokens),
	TLIMIT(max_output_tokens),
	TLIMIT(max_concurrent_requests),
	TLIMIT(daily_token_budget),
	TLIMIT(requests_per_minute),
	TLIMIT(tokens_per_minute),
	{ .name = NULL }
};

static const struct cy_key tenant_keys[] = {
	{ .name = "id", .type = CY_STRING, .flags = CY_REQUIRED,
	  .off = TENANT(id), .check = check_tenant_id },
	{ .name = "keys", .type = CY_CUSTOM, .flags = CY_REQUIRED,
	  .read = read_tenant_keys, .release = release_tenant },
	{ .name = "tier", .type = CY_STRING, .flags = CY_NONEMPTY,
	  .off = TENANT(tier) },
	{ .name = "models", .type = CY_STRLIST, .def = "*",
	  .off = TENANT(models), .count_off = TENANT(nmodels),
	  .check = check_tenant_models },
	{ .name = "priority", .type = CY_ENUM, .def = "normal",
	  .names = priorities, .off = TENANT(priority) },
	{ .name = "max_priority", .type = CY_ENUM, .names = priorities,
	  .off = TENANT(max_priority) },
	{ .name = "on_output_over_limit", .type = CY_ENUM, .def = "clamp",
	  .names = over_limit, .off = TENANT(on_output_over_limit) },
	{ .name = "shadow", .type = CY_BOOL, .def = "false",
	  .off = TENANT(shadow) },
	{ .name = "limits", .type = CY_TABLE, .sub = tenant_limit_keys },
	{ .name = NULL }
};

#define TENANTS_KEY(fl) { .name = "tenants", .type = CY_LIST, .flags = fl, \
	.off = offsetof(struct ig_config, tenants), \
	.count_off = offsetof(struct ig_config, ntenants), \
	.elemsize = sizeof(struct ig_tenant_conf), .sub = tenant_keys, \
	.check = check_tenant }

static const struct cy_key admission_keys[] = {
	{ .name = "store", .type = CY_TABLE, .sub = store_keys,
	  .check = check_store },
	TENANTS_KEY(0),
	{ .name = "tenant_files", .type = CY_STRLIST,
	  .off = offsetof(struct ig_config, tenant_files),
	  .count_off = offsetof(struct ig_config, ntenant_files) },
	{ .name = NULL }
};

/* A tenant file holds one key: its list of tenants. */
static const struct cy_key tenant_file_keys[] = {
	TENANTS_KEY(CY_REQUIRED),
	{ .name = NULL }
};

/* --- tenant files ------------------------------------------------------- */

/* Where each tenant came from: its node and its index in that list. */
struct tenant_src {
	const struct cy_node *node;
	size_t		 idx;
};

struct tenant_srcs {
	struct tenant_src *v;
	size_t		 n;
};

/* Records the nodes of the tenants cfg gained from list since before. */
static void
note_tenants(struct tenant_srcs *ts, const struct cy_node *list,
    size_t before, const struct ig_config *cfg)
{
	size_t i;

	ts->v = reallocarray(ts->v, cfg->ntenants ? cfg->ntenants : 1,
	    sizeof(*ts->v));
	if (ts->v == NULL)
		abort();
	for (i = before; i < cfg->ntenants; i++) {
		ts->v[i].node = list->items[i - before];
		ts->v[i].idx = i - before;
	}
	ts->n = cfg->ntenants;
}

static int
read_tenant_file(struct cy_ctx *ctx, const char *path, struct ig_config *cfg,
    struct tenant_srcs *ts)
{
	const struct cy_node *root;
	size_t before = cfg->ntenants;

	if ((root = cy_parse_file(ctx, path)) == NULL ||
	    cy_read_table(ctx, root, tenant_file_keys, cfg) == -1)
		return -1;
	note_tenants(ts, cy_get(root, "tenants"), before, cfg);
	return 0;
}

/*
 * Expands each tenant_files glob (relative to the main file) and reads the
 * files in order, each once. A glob that matches nothing is only a warning:
 * an empty tenants.d/ is a valid start.
 */
static int
read_tenant_files(struct cy_ctx *ctx, const struct cy_node *root,
    struct ig_config *cfg, struct tenant_srcs *ts)
{
	const struct cy_node *globs = cy_get(root, "tenant_files");
	char *pattern, **seen = NULL;
	size_t i, j, k, nseen = 0, mark;
	glob_t g;
	int rc = 0, grc;

	for (i = 0; rc == 0 && i < cfg->ntenant_files; i++) {
		pattern = cy_resolve(globs->file, cfg->tenant_files[i]);
		memset(&g, 0, sizeof(g));
		grc = glob(pattern, 0, NULL, &g);
		if (grc == GLOB_NOMATCH)
			log_warn("%s:%d:%d: tenant_files[%zu]: \"%s\" matches "
			    "no file", globs->items[i]->file,
			    globs->items[i]->line, globs->items[i]->col, i,
			    pattern);
		else if (grc != 0) {
			mark = cy_push(ctx, "tenant_files");
			cy_push_index(ctx, i);
			rc = cy_err(ctx, globs->items[i], "cannot expand \"%s\"",
			    pattern);
			cy_pop(ctx, mark);
		}
		for (j = 0; rc == 0 && grc == 0 && j < g.gl_pathc; j++) {
			for (k = 0; k < nseen; k++)
				if (strcmp(seen[k], g.gl_pathv[j]) == 0)
					break;
			if (k < nseen)
				continue;
			seen = reallocarray(seen, nseen + 1, sizeof(*seen));
			if (seen == NULL)
				abort();
			seen[nseen++] = cy_xstrdup(g.gl_pathv[j]);
			rc = read_tenant_file(ctx, g.gl_pathv[j], cfg, ts);
		}
		globfree(&g);
		free(pattern);
	}
	cy_free_strlist(seen, nseen);
	return rc;
}

/* --- second pass -------------------------------------------------------- */

struct tref {
	const char	*id;
	const uint8_t	*key;
	size_t		 t, k;
};

static int
tref_cmp_id(const void *a, const void *b)
{
	const struct tref *x = a, *y = b;
	int c = strcmp(x->id, y->id);

	return c ? c : x->t < y->t ? -1 : x->t > y->t;
}

static int
tref_cmp_key(const void *a, const void *b)
{
	const struct tref *x = a, *y = b;
	int c = memcmp(x->key, y->key, 32);

	if (c != 0)
		return c;
	if (x->t != y->t)
		return x->t < y->t ? -1 : 1;
	return x->k < y->k ? -1 : x->k > y->k;
}

/* Pushes "tenants[idx]" for tenant t; returns the mark to pop to. */
static size_t
push_tenant(struct cy_ctx *ctx, const struct tenant_srcs *ts, size_t t)
{
	size_t mark = cy_push(ctx, "tenants");

	cy_push_index(ctx, ts->v[t].idx);
	return mark;
}

static int
check_dup_ids(struct cy_ctx *ctx, const struct ig_config *cfg,
    const struct tenant_srcs *ts)
{
	const struct cy_node *n, *prev;
	struct tref *r;
	size_t i, mark;
	int rc = 0;

	r = cy_xcalloc(cfg->ntenants, sizeof(*r));
	for (i = 0; i < cfg->ntenants; i++) {
		r[i].id = cfg->tenants[i].id;
		r[i].t = i;
	}
	qsort(r, cfg->ntenants, sizeof(*r), tref_cmp_id);
	for (i = 1; rc == 0 && i < cfg->ntenants; i++) {
		if (strcmp(r[i - 1].id, r[i].id) != 0)
			continue;
		n = cy_get(ts->v[r[i].t].node, "id");
		prev = cy_get(ts->v[r[i - 1].t].node, "id");
		mark = push_tenant(ctx, ts, r[i].t);
		rc = cy_err_key(ctx, n, "id", "duplicate tenant id \"%s\" "
		    "(also at %s:%d:%d)", r[i].id, prev->file, prev->line,
		    prev->col);
		cy_pop(ctx, mark);
	}
	free(r);
	return rc;
}

static int
check_dup_keys(struct cy_ctx *ctx, const struct ig_config *cfg,
    const struct tenant_srcs *ts)
{
	const struct cy_node *n, *prev;
	struct tref *r;
	size_t i, k, nr = 0, mark;
	int rc = 0;

	for (i = 0; i < cfg->ntenants; i++)
		nr += cfg->tenants[i].nkeys;
	r = cy_xcalloc(nr, sizeof(*r));
	for (nr = 0, i = 0; i < cfg->ntenants; i++)
		for (k = 0; k < cfg->tenants[i].nkeys; k++, nr++) {
			r[nr].id = cfg->tenants[i].id;
			r[nr].key = cfg->tenants[i].keys[k];
			r[nr].t = i;
			r[nr].k = k;
		}
	qsort(r, nr, sizeof(*r), tref_cmp_key);
	for (i = 1; rc == 0 && i < nr; i++) {
		if (memcmp(r[i - 1].key, r[i].key, 32) != 0)
			continue;
		n = cy_get(ts->v[r[i].t].node, "keys")->items[r[i].k];
		prev = cy_get(ts->v[r[i - 1].t].node, "keys")->items[r[i - 1].k];
		mark = push_tenant(ctx, ts, r[i].t);
		cy_push(ctx, "keys");
		cy_push_index(ctx, r[i].k);
		rc = cy_err(ctx, n, "key hash also used by tenant \"%s\" "
		    "(%s:%d:%d)", r[i - 1].id, prev->file, prev->line,
		    prev->col);
		cy_pop(ctx, mark);
	}
	free(r);
	return rc;
}

static int
check_tenant_refs(struct cy_ctx *ctx, const struct ig_config *cfg,
    const struct tenant_srcs *ts)
{
	const struct ig_tenant_conf *t;
	size_t i, j, mark;

	for (i = 0; i < cfg->ntenants; i++) {
		t = &cfg->tenants[i];
		for (j = 0; j < t->nmodels; j++) {
			if (strcmp(t->models[j], "*") == 0 ||
			    ig_config_model(cfg, t->models[j]) != NULL)
				continue;
			mark = push_tenant(ctx, ts, i);
			cy_push(ctx, "models");
			cy_push_index(ctx, j);
			cy_err(ctx, cy_get(ts->v[i].node, "models")->items[j],
			    "unknown model \"%s\"", t->models[j]);
			cy_pop(ctx, mark);
			return -1;
		}
	}
	return 0;
}

int
admission_conf_read(struct cy_ctx *ctx, const struct cy_node *root,
    struct ig_config *cfg)
{
	struct tenant_srcs ts = { NULL, 0 };
	int rc;

	rc = cy_read_keys(ctx, root, admission_keys, cfg);
	if (rc == 0 && cfg->ntenants > 0)
		note_tenants(&ts, cy_get(root, "tenants"), 0, cfg);
	if (rc == 0)
		rc = read_tenant_files(ctx, root, cfg, &ts);
	if (rc == 0)
		rc = check_dup_ids(ctx, cfg, &ts);
	if (rc == 0)
		rc = check_dup_keys(ctx, cfg, &ts);
	if (rc == 0)
		rc = check_tenant_refs(ctx, cfg, &ts);
	free(ts.v);
	return rc;
}

void
admission_conf_free(struct ig_config *cfg)
{
	cy_free_table(admission_keys, cfg);
	if (cfg->store.redis_password != NULL) {
		explicit_bzero(cfg->store.redis_password,
		    strlen(cfg->store.redis_password));
		free(cfg->store.redis_password);
		cfg->store.redis_password = NULL;
	}
}

int
admission_store_copy(struct ig_config *dst, const struct ig_config *src)
{
	const struct ig_store_conf *s = &src->store;
	struct ig_store_conf *d = &dst->store;

	*d = *s;
	d->redis_address = d->redis_password_file = d->redis_password =
	    d->redis_key_prefix = NULL;
	if ((s->redis_address != NULL &&
	    (d->redis_address = strdup(s->redis_address)) == NULL) ||
	    (s->redis_password_file != NULL && (d->redis_password_file =
	    strdup(s->redis_password_file)) == NULL) ||
	    (s->redis_password != NULL &&
	    (d->redis_password = strdup(s->redis_password)) == NULL) ||
	    (s->redis_key_prefix != NULL &&
	    (d->redis_key_prefix = strdup(s->redis_key_prefix)) == NULL)) {
		admission_conf_free(dst);
		return -1;
	}
	return 0;
}

const char *
admission_store_changed(const struct ig_config *a,
    const struct ig_config *b, char *buf, size_t len)
{
	const char *key;
	const char *pa = a->store.redis_password, *pb = b->store.redis_password;

	if ((key = cy_table_diff(store_keys, a, b, buf, len)) != NULL)
		return key;
	/* what the keys read that the table does not hold */
	if (strcmp(pa != NULL ? pa : "", pb != NULL ? pb : "") != 0)
		return "redis.password_file";
	if (a->store.day_offset_s != b->store.day_offset_s)
		return "day_offset";
	return NULL;
}
