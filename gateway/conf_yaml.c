/*
 * The shared YAML config reader: libyaml events -> a tree of nodes with
 * their positions -> plain-data structs through key tables. See
 * include/infergate/conf_yaml.h for the contract.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <yaml.h>

#include "infergate/conf_yaml.h"
#include "infergate/config.h"

#define CY_MAX_DEPTH	64

static int	enum_err(struct cy_ctx *, const struct cy_node *, const char *,
	    const char *const *);

struct cy_doc {
	char		*file;
	struct cy_node	*root;
	struct cy_doc	*next;
};

void *
cy_xcalloc(size_t n, size_t size)
{
	void *p;

	if ((p = calloc(n ? n : 1, size ? size : 1)) == NULL) {
		fprintf(stderr, "infergate: config: out of memory\n");
		abort();
	}
	return p;
}

char *
cy_xstrdup(const char *s)
{
	char *p;

	if ((p = strdup(s)) == NULL) {
		fprintf(stderr, "infergate: config: out of memory\n");
		abort();
	}
	return p;
}

static void *
cy_xreallocarray(void *p, size_t n, size_t size)
{
	if ((p = reallocarray(p, n ? n : 1, size)) == NULL) {
		fprintf(stderr, "infergate: config: out of memory\n");
		abort();
	}
	return p;
}

void
cy_ctx_init(struct cy_ctx *ctx, const char *file)
{
	memset(ctx, 0, sizeof(*ctx));
	ctx->file = file;
}

static void
node_free(struct cy_node *n)
{
	size_t i;

	if (n == NULL)
		return;
	free(n->value);
	for (i = 0; i < n->n; i++) {
		if (n->kind == CY_SEQ)
			node_free(n->items[i]);
		else {
			node_free(n->pairs[i].key);
			node_free(n->pairs[i].value);
		}
	}
	free(n->items);
	free(n->pairs);
	free(n);
}

void
cy_ctx_clear(struct cy_ctx *ctx)
{
	struct cy_doc *d;

	while ((d = ctx->docs) != NULL) {
		ctx->docs = d->next;
		node_free(d->root);
		free(d->file);
		free(d);
	}
	ctx->at = NULL;
}

/* --- errors and the key path ------------------------------------------ */

static int	 err_vrecord(struct cy_ctx *, const char *, int, int,
		    const char *, const char *, va_list)
		    __attribute__((format(printf, 6, 0)));

static int
err_vrecord(struct cy_ctx *ctx, const char *file, int line, int col,
    const char *key, const char *fmt, va_list ap)
{
	char msg[1024];
	const char *sep1 = "", *sep2 = "";

	if (ctx->err != NULL)
		return -1;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (key != NULL && ctx->pathlen > 0)
		sep1 = ".";
	if (ctx->pathlen > 0 || key != NULL)
		sep2 = ": ";
	if (asprintf(&ctx->err, "%s:%d:%d: %s%s%s%s%s", file, line, col,
	    ctx->path, sep1, key ? key : "", sep2, msg) == -1) {
		fprintf(stderr, "infergate: config: out of memory\n");
		abort();
	}
	return -1;
}

static int	 err_vnode(struct cy_ctx *, const struct cy_node *,
		    const char *, const char *, va_list)
		    __attribute__((format(printf, 4, 0)));

static int
err_vnode(struct cy_ctx *ctx, const struct cy_node *n, const char *key,
    const char *fmt, va_list ap)
{
	if (n == NULL)
		n = ctx->at;
	if (n == NULL)
		return err_vrecord(ctx, ctx->file, 1, 1, key, fmt, ap);
	return err_vrecord(ctx, n->file, n->line, n->col, key, fmt, ap);
}

int
cy_err(struct cy_ctx *ctx, const struct cy_node *n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vnode(ctx, n, NULL, fmt, ap);
	va_end(ap);
	return -1;
}

int
cy_err_key(struct cy_ctx *ctx, const struct cy_node *n, const char *key,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vnode(ctx, n, key, fmt, ap);
	va_end(ap);
	return -1;
}

size_t
cy_push(struct cy_ctx *ctx, const char *key)
{
	size_t mark = ctx->pathlen;
	int n;

	n = snprintf(ctx->path + mark, sizeof(ctx->path) - mark, "%s%s",
	    mark > 0 ? "." : "", key);
	if (n < 0 || (size_t)n >= sizeof(ctx->path) - mark)
		ctx->pathlen = sizeof(ctx->path) - 1;
	else
		ctx->pathlen += n;
	return mark;
}

size_t
cy_push_index(struct cy_ctx *ctx, size_t i)
{
	size_t mark = ctx->pathlen;
	int n;

	n = snprintf(ctx->path + mark, sizeof(ctx->path) - mark, "[%zu]", i);
	if (n < 0 || (size_t)n >= sizeof(ctx->path) - mark)
		ctx->pathlen = sizeof(ctx->path) - 1;
	else
		ctx->pathlen += n;
	return mark;
}

void
cy_pop(struct cy_ctx *ctx, size_t mark)
{
	ctx->pathlen = mark;
	ctx->path[mark] = '\0';
}

/* --- parsing ------------------------------------------------------------ */

static struct cy_node *
node_new(enum cy_kind kind, const char *file, const yaml_mark_t *m)
{
	struct cy_node *n = cy_xcalloc(1, sizeof(*n));

	n->kind = kind;
	n->file = file;
	n->line = (int)m->line + 1;
	n->col = (int)m->column + 1;
	return n;
}

static int
parse_event(struct cy_ctx *ctx, yaml_parser_t *p, yaml_event_t *ev,
    const char *file)
{
	if (yaml_parser_parse(p, ev))
		return 0;
	if (ctx->err == NULL && asprintf(&ctx->err, "%s:%zu:%zu: %s%s%s%s",
	    file, p->problem_mark.line + 1, p->problem_mark.column + 1,
	    p->problem ? p->problem : "syntax error",
	    p->context ? " (" : "", p->context ? p->context : "",
	    p->context ? ")" : "") == -1)
		abort();
	return -1;
}

static int parse_node(struct cy_ctx *, yaml_parser_t *, yaml_event_t *,
    const char *, int, struct cy_node **);

/* Children of a mapping or a sequence, up to its end event. */
static int
parse_children(struct cy_ctx *ctx, yaml_parser_t *p, const char *file,
    int depth, struct cy_node *n)
{
	yaml_event_t ev;
	yaml_event_type_t end = n->kind == CY_MAP ?
	    YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT;
	struct cy_node *child;
	size_t cap = 0;

	for (;;) {
		if (parse_event(ctx, p, &ev, file) == -1)
			return -1;
		if (ev.type == end) {
			yaml_event_delete(&ev);
			return 0;
		}
		if (n->kind == CY_MAP && ev.type != YAML_SCALAR_EVENT) {
			if (asprintf(&ctx->err, "%s:%zu:%zu: keys must be "
			    "strings", file, ev.start_mark.line + 1,
			    ev.start_mark.column + 1) == -1)
				abort();
			yaml_event_delete(&ev);
			return -1;
		}
		child = NULL;
		if (parse_node(ctx, p, &ev, file, depth + 1, &child) == -1) {
			node_free(child);
			return -1;
		}
		if (n->kind == CY_SEQ) {
			if (n->n == cap) {
				cap = cap ? cap * 2 : 4;
				n->items = cy_xreallocarray(n->items, cap,
				    sizeof(*n->items));
			}
			n->items[n->n++] = child;
			continue;
		}
		if (n->n == cap) {
			cap = cap ? cap * 2 : 4;
			n->pairs = cy_xreallocarray(n->pairs, cap,
			    sizeof(*n->pairs));
		}
		n->pairs[n->n].key = child;
		n->pairs[n->n].value = NULL;
		n->n++;
		if (parse_event(ctx, p, &ev, file) == -1)
			return -1;
		if (parse_node(ctx, p, &ev, file, depth + 1,
		    &n->pairs[n->n - 1].value) == -1)
			return -1;
	}
}

/*
 * Builds the node that starts with ev (consumed) into *out. On failure *out
 * may hold a partial tree the caller frees.
 */
static int
parse_node(struct cy_ctx *ctx, yaml_parser_t *p, yaml_event_t *ev,
    const char *file, int depth, struct cy_node **out)
{
	struct cy_node *n;
	int rc = 0;

	if (depth > CY_MAX_DEPTH) {
		if (asprintf(&ctx->err, "%s:%zu:%zu: nested too deeply "
		    "(at most %d levels)", file, ev->start_mark.line + 1,
		    ev->start_mark.column + 1, CY_MAX_DEPTH) == -1)
			abort();
		yaml_event_delete(ev);
		return -1;
	}
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		n = node_new(CY_SCALAR, file, &ev->start_mark);
		if (memchr(ev->data.scalar.value, '\0',
		    ev->data.scalar.length) != NULL) {
			*out = n;
			yaml_event_delete(ev);
			return cy_err(ctx, n, "a string must not contain NUL");
		}
		n->value = cy_xstrdup((const char *)ev->data.scalar.value);
		n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
		*out = n;
		break;
	case YAML_ALIAS_EVENT:
		*out = node_new(CY_ALIAS, file, &ev->start_mark);
		break;
	case YAML_MAPPING_START_EVENT:
	case YAML_SEQUENCE_START_EVENT:
		n = node_new(ev->type == YAML_MAPPING_START_EVENT ? CY_MAP :
		    CY_SEQ, file, &ev->start_mark);
		*out = n;
		yaml_event_delete(ev);
		return parse_children(ctx, p, file, depth, n);
	default:
		if (asprintf(&ctx->err, "%s:%zu:%zu: unexpected YAML event",
		    file, ev->start_mark.line + 1,
		    ev->start_mark.column + 1) == -1)
			abort();
		rc = -1;
		break;
	}
	yaml_event_delete(ev);
	return rc;
}

/* Aliases are refused: they make a tree a graph (and a billion laughs). */
static int
find_alias(struct cy_ctx *ctx, const struct cy_node *n)
{
	size_t i, mark;
	int rc = 0;

	if (n->kind == CY_ALIAS)
		return cy_err(ctx, n, "aliases are not supported");
	for (i = 0; rc == 0 && i < n->n; i++) {
		if (n->kind == CY_SEQ) {
			mark = cy_push_index(ctx, i);
			rc = find_alias(ctx, n->items[i]);
		} else {
			mark = cy_push(ctx, n->pairs[i].key->value);
			rc = find_alias(ctx, n->pairs[i].value);
		}
		cy_pop(ctx, mark);
	}
	return rc;
}

static int
parse_stream(struct cy_ctx *ctx, yaml_parser_t *p, struct cy_doc *d)
{
	yaml_event_t ev;
	yaml_mark_t start = { 0, 0, 0 };
	int seen_doc = 0;

	for (;;) {
		if (parse_event(ctx, p, &ev, d->file) == -1)
			return -1;
		switch (ev.type) {
		case YAML_STREAM_START_EVENT:
		case YAML_DOCUMENT_END_EVENT:
			break;
		case YAML_STREAM_END_EVENT:
			yaml_event_delete(&ev);
			if (d->root == NULL)
				d->root = node_new(CY_MAP, d->file, &start);
			return 0;
		case YAML_DOCUMENT_START_EVENT:
			if (seen_doc++) {
				if (asprintf(&ctx->err, "%s:%zu:%zu: only one "
				    "YAML document is allowed", d->file,
				    ev.start_mark.line + 1,
				    ev.start_mark.column + 1) == -1)
					abort();
				yaml_event_delete(&ev);
				return -1;
			}
			break;
		default:
			/* parse_node() consumes ev */
			if (parse_node(ctx, p, &ev, d->file, 0, &d->root) == -1)
				return -1;
			continue;
		}
		yaml_event_delete(&ev);
	}
}

const struct cy_node *
cy_parse_file(struct cy_ctx *ctx, const char *file)
{
	yaml_parser_t p;
	struct cy_doc *d;
	FILE *fp;
	int rc;

	if ((fp = fopen(file, "r")) == NULL) {
		if (ctx->err == NULL &&
		    asprintf(&ctx->err, "%s: %s", file, strerror(errno)) == -1)
			abort();
		return NULL;
	}
	d = cy_xcalloc(1, sizeof(*d));
	d->file = cy_xstrdup(file);
	d->next = ctx->docs;
	ctx->docs = d;
	if (!yaml_parser_initialize(&p)) {
		fclose(fp);
		fprintf(stderr, "infergate: config: out of memory\n");
		abort();
	}
	yaml_parser_set_input_file(&p, fp);
	rc = parse_stream(ctx, &p, d);
	yaml_parser_delete(&p);
	fclose(fp);
	if (rc == -1)
		return NULL;
	if (find_alias(ctx, d->root) == -1)
		return NULL;
	return d->root;
}

bool
cy_is_null(const struct cy_node *n)
{
	return n == NULL || (n->kind == CY_SCALAR && n->plain &&
	    (n->value[0] == '\0' || strcmp(n->value, "~") == 0 ||
	    strcmp(n->value, "null") == 0 || strcmp(n->value, "Null") == 0 ||
	    strcmp(n->value, "NULL") == 0));
}

const struct cy_node *
cy_get(const struct cy_node *map, const char *key)
{
	size_t i;

	if (map == NULL || map->kind != CY_MAP)
		return NULL;
	for (i = 0; i < map->n; i++)
		if (strcmp(map->pairs[i].key->value, key) == 0)
			return cy_is_null(map->pairs[i].value) ?
			    NULL : map->pairs[i].value;
	return NULL;
}

/* --- scalar values ------------------------------------------------------ */

const char *
cy_fmt_duration(uint64_t ms, char *buf, size_t len)
{
	if (ms != 0 && ms % 3600000 == 0)
		snprintf(buf, len, "%" PRIu64 "h", ms / 3600000);
	else if (ms != 0 && ms % 60000 == 0)
		snprintf(buf, len, "%" PRIu64 "m", ms / 60000);
	else if (ms % 1000 == 0)
		snprintf(buf, len, "%" PRIu64 "s", ms / 1000);
	else
		snprintf(buf, len, "%" PRIu64 "ms", ms);
	return buf;
}

static int
parse_uint(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (*s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -2;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

static int
range_err(struct cy_ctx *ctx, const struct cy_node *n, const char *lo,
    const char *hi, bool has_lo, bool has_hi)
{
	if (has_lo && has_hi)
		return cy_err(ctx, n, "must be between %s and %s", lo, hi);
	if (has_lo)
		return cy_err(ctx, n, "must be at least %s", lo);
	return cy_err(ctx, n, "must be at most %s", hi);
}

static int
scalar_or_err(struct cy_ctx *ctx, const struct cy_node *n, const char *what)
{
	if (n->kind == CY_SCALAR)
		return 0;
	return cy_err(ctx, n, "expected %s", what);
}

/* Reads the scalar text s (from node n, NULL for a default) as k says. */
static int
read_value(struct cy_ctx *ctx, const struct cy_node *n, const char *s,
    const struct cy_key *k, void *obj)
{
	char *field = (char *)obj + k->off;
	char lo[32], hi[32], *end;
	uint64_t u;
	double d;
	size_t i;
	int rc;

	switch (k->type) {
	case CY_STRING:
		if (k->flags & CY_NONEMPTY && *s == '\0')
			return cy_err(ctx, n, "must not be empty");
		free(*(char **)field);
		*(char **)field = (k->flags & CY_PATH) && *s != '\0' ?
		    cy_resolve(n ? n->file : ctx->file, s) : cy_xstrdup(s);
		return 0;
	case CY_UINT:
		if ((rc = parse_uint(s, &u)) == -1)
			return cy_err(ctx, n, "expected a non-negative integer, "
			    "got \"%s\"", s);
		if (rc == -2 || u < k->min || u > k->max) {
			snprintf(lo, sizeof(lo), "%" PRIu64, k->min);
			snprintf(hi, sizeof(hi), "%" PRIu64, k->max);
			return range_err(ctx, n, lo, hi, k->min > 0,
			    k->max < UINT64_MAX);
		}
		*(uint64_t *)field = u;
		return 0;
	case CY_DURATION:
		if (ig_parse_duration(s, &u) == -1)
			return cy_err(ctx, n, "invalid duration \"%s\" "
			    "(expected e.g. 250ms, 5s, 2m, 1h)", s);
		if (u < k->min || u > k->max) {
			cy_fmt_duration(k->min, lo, sizeof(lo));
			cy_fmt_duration(k->max, hi, sizeof(hi));
			return range_err(ctx, n, lo, hi, k->min > 0,
			    k->max < UINT64_MAX);
		}
		*(uint64_t *)field = u;
		return 0;
	case CY_DOUBLE:
		errno = 0;
		d = strtod(s, &end);
		if (*s == '\0' || *end != '\0' || errno != 0 || !isfinite(d) ||
		    strchr("0123456789.", *s) == NULL)
			return cy_err(ctx, n, "expected a number, got \"%s\"", s);
		if (d < k->dmin || d > k->dmax) {
			snprintf(lo, sizeof(lo), "%g", k->dmin);
			snprintf(hi, sizeof(hi), "%g", k->dmax);
			return range_err(ctx, n, lo, hi, true, true);
		}
		*(double *)field = d;
		return 0;
	case CY_BOOL:
		if (strcmp(s, "true") == 0)
			*(bool *)field = true;
		else if (strcmp(s, "false") == 0)
			*(bool *)field = false;
		else
			return cy_err(ctx, n, "expected true or false, "
			    "got \"%s\"", s);
		return 0;
	case CY_ENUM:
		for (i = 0; k->names[i] != NULL; i++)
			if (strcmp(s, k->names[i]) == 0) {
				*(int *)field = (int)i;
				return 0;
			}
		return enum_err(ctx, n, s, k->names);
	default:
		abort();
	}
}

static int
enum_err(struct cy_ctx *ctx, const struct cy_node *n, const char *s,
    const char *const *names)
{
	char list[256];
	size_t i, len = 0;

	list[0] = '\0';
	for (i = 0; names[i] != NULL && len < sizeof(list); i++)
		len += snprintf(list + len, sizeof(list) - len, "%s%s",
		    i ? ", " : "", names[i]);
	return cy_err(ctx, n, "invalid value \"%s\" (expected one of: %s)",
	    s, list);
}

static const char *
type_name(enum cy_type t)
{
	switch (t) {
	case CY_UINT:
		return "a non-negative integer";
	case CY_DOUBLE:
		return "a number";
	case CY_BOOL:
		return "true or false";
	case CY_DURATION:
		return "a duration";
	default:
		return "a string";
	}
}

/* --- tables and lists --------------------------------------------------- */

static const struct cy_key *
key_find(const struct cy_key *keys, const char *name)
{
	for (; keys->name != NULL; keys++)
		if (strcmp(keys->name, name) == 0)
			return keys;
	return NULL;
}

int
cy_read_strlist(struct cy_ctx *ctx, const struct cy_node *n, char ***list,
    size_t *cnt)
{
	size_t i, mark;
	int rc = 0;

	if (n->kind != CY_SEQ)
		return cy_err(ctx, n, "expected a list");
	*list = cy_xreallocarray(*list, *cnt + n->n, sizeof(**list));
	for (i = 0; rc == 0 && i < n->n; i++) {
		mark = cy_push_index(ctx, i);
		if (n->items[i]->kind != CY_SCALAR)
			rc = cy_err(ctx, n->items[i], "expected a string");
		else if (cy_is_null(n->items[i]))
			rc = cy_err(ctx, n->items[i], "must not be empty");
		else
			(*list)[(*cnt)++] = cy_xstrdup(n->items[i]->value);
		cy_pop(ctx, mark);
	}
	return rc;
}

void
cy_free_strlist(char **list, size_t cnt)
{
	size_t i;

	for (i = 0; i < cnt; i++)
		free(list[i]);
	free(list);
}

/* Appends one element per item of the sequence n to the array k names. */
static int
read_list(struct cy_ctx *ctx, const struct cy_node *n, const struct cy_key *k,
    void *obj)
{
	char **arr = (char **)((char *)obj + k->off);
	size_t *cnt = (size_t *)((char *)obj + k->count_off);
	size_t i, mark;
	char *elem;
	int rc = 0;

	if (n->kind != CY_SEQ)
		return cy_err(ctx, n, "expected a list");
	if (n->n < k->min)
		return cy_err(ctx, n, "must have at least %" PRIu64 " %s",
		    k->min, k->min == 1 ? "entry" : "entries");
	*arr = cy_xreallocarray(*arr, *cnt + n->n, k->elemsize);
	memset(*arr + *cnt * k->elemsize, 0, n->n * k->elemsize);
	for (i = 0; rc == 0 && i < n->n; i++) {
		/* counted before it is read, so a failure frees it too */
		elem = *arr + (*cnt)++ * k->elemsize;
		mark = cy_push_index(ctx, i);
		rc = cy_read_table(ctx, n->items[i], k->sub, elem);
		if (rc == 0 && k->check != NULL)
			rc = k->check(ctx, n->items[i], elem);
		cy_pop(ctx, mark);
	}
	return rc;
}

static int
read_key(struct cy_ctx *ctx, const struct cy_node *n, const struct cy_key *k,
    void *obj)
{
	char *field = (char *)obj + k->off;
	char *def;
	int rc = 0;

	if (n == NULL && (k->flags & CY_REQUIRED))
		return cy_err(ctx, NULL, "required key is missing");
	switch (k->type) {
	case CY_EXTERNAL:
		return 0;
	case CY_CUSTOM:
		rc = k->read(ctx, n, obj);
		break;
	case CY_TABLE:
		if (n != NULL || !(k->flags & CY_OPTIONAL))
			rc = cy_read_table(ctx, n, k->sub, obj);
		break;
	case CY_LIST:
		/* the check is per element, in read_list() */
		return n == NULL ? 0 : read_list(ctx, n, k, obj);
	case CY_STRLIST:
		if (n != NULL)
			rc = cy_read_strlist(ctx, n, (char ***)field,
			    (size_t *)((char *)obj + k->count_off));
		else if (k->def != NULL) {
			def = cy_xstrdup(k->def);
			*(char ***)field = cy_xcalloc(1, sizeof(char *));
			**(char ***)field = def;
			*(size_t *)((char *)obj + k->count_off) = 1;
		}
		break;
	default:
		if (n == NULL)
			rc = k->def == NULL ? 0 : read_value(ctx, NULL, k->def,
			    k, obj);
		else if ((rc = scalar_or_err(ctx, n, type_name(k->type))) == 0)
			rc = read_value(ctx, n, n->value, k, obj);
		break;
	}
	if (rc == 0 && k->check != NULL)
		rc = k->check(ctx, n, obj);
	return rc;
}

int
cy_read_keys(struct cy_ctx *ctx, const struct cy_node *map,
    const struct cy_key *keys, void *obj)
{
	const struct cy_node *saved = ctx->at;
	const struct cy_key *k;
	size_t mark;
	int rc = 0;

	if (map != NULL)
		ctx->at = map;
	for (k = keys; rc == 0 && k->name != NULL; k++) {
		mark = cy_push(ctx, k->name);
		rc = read_key(ctx, cy_get(map, k->name), k, obj);
		cy_pop(ctx, mark);
	}
	ctx->at = saved;
	return rc;
}

int
cy_read_table(struct cy_ctx *ctx, const struct cy_node *map,
    const struct cy_key *keys, void *obj)
{
	const struct cy_node *saved = ctx->at, *key;
	size_t i, j;
	int rc = 0;

	if (map != NULL) {
		if (map->kind != CY_MAP)
			return cy_err(ctx, map, "expected a mapping");
		ctx->at = map;
		/* first every key in file order, so the first typo wins */
		for (i = 0; rc == 0 && i < map->n; i++) {
			key = map->pairs[i].key;
			if (key_find(keys, key->value) == NULL)
				rc = cy_err(ctx, key, "unknown key \"%s\"",
				    key->value);
			for (j = 0; rc == 0 && j < i; j++)
				if (strcmp(map->pairs[j].key->value,
				    key->value) == 0)
					rc = cy_err(ctx, key, "duplicate key "
					    "\"%s\"", key->value);
		}
	}
	ctx->at = saved;
	return rc == 0 ? cy_read_keys(ctx, map, keys, obj) : -1;
}

const char *
cy_table_diff(const struct cy_key *keys, const void *a, const void *b,
    char *buf, size_t len)
{
	const struct cy_key *k;
	const char *fa, *fb;
	size_t n;
	bool differ;

	for (k = keys; k->name != NULL; k++) {
		fa = (const char *)a + k->off;
		fb = (const char *)b + k->off;
		switch (k->type) {
		case CY_STRING:
			differ = strcmp(*(char *const *)fa ? *(char *const *)fa :
			    "", *(char *const *)fb ? *(char *const *)fb : "") != 0;
			break;
		case CY_UINT:
		case CY_DURATION:
			differ = *(const uint64_t *)fa != *(const uint64_t *)fb;
			break;
		case CY_DOUBLE:
			differ = *(const double *)fa != *(const double *)fb;
			break;
		case CY_BOOL:
			differ = *(const bool *)fa != *(const bool *)fb;
			break;
		case CY_ENUM:
			differ = *(const int *)fa != *(const int *)fb;
			break;
		case CY_TABLE:
			n = (size_t)snprintf(buf, len, "%s.", k->name);
			if (n >= len || cy_table_diff(k->sub, a, b, buf + n,
			    len - n) == NULL)
				continue;
			return buf;
		default:	/* lists, custom and external keys: the caller's */
			continue;
		}
		if (differ) {
			snprintf(buf, len, "%s", k->name);
			return buf;
		}
	}
	return NULL;
}

void
cy_free_table(const struct cy_key *keys, void *obj)
{
	const struct cy_key *k;
	char *field, *arr;
	size_t *cnt, i;

	for (k = keys; k->name != NULL; k++) {
		field = (char *)obj + k->off;
		switch (k->type) {
		case CY_STRING:
			free(*(char **)field);
			*(char **)field = NULL;
			break;
		case CY_TABLE:
			cy_free_table(k->sub, obj);
			break;
		case CY_LIST:
			arr = *(char **)field;
			cnt = (size_t *)((char *)obj + k->count_off);
			for (i = 0; i < *cnt; i++)
				cy_free_table(k->sub, arr + i * k->elemsize);
			free(arr);
			*(char **)field = NULL;
			*cnt = 0;
			break;
		case CY_STRLIST:
			cnt = (size_t *)((char *)obj + k->count_off);
			cy_free_strlist(*(char ***)field, *cnt);
			*(char ***)field = NULL;
			*cnt = 0;
			break;
		case CY_CUSTOM:
			if (k->release != NULL)
				k->release(obj);
			break;
		default:
			break;
		}
	}
}

/* --- shared validators -------------------------------------------------- */

char *
cy_resolve(const char *file, const char *rel)
{
	const char *slash;
	char *p;

	if (rel[0] == '/' || (slash = strrchr(file, '/')) == NULL)
		return cy_xstrdup(rel);
	if (asprintf(&p, "%.*s/%s", (int)(slash - file), file, rel) == -1)
		abort();
	return p;
}

const char *
cy_check_hostport(const char *s)
{
	char host[256];
	const char *port, *end, *c;
	struct in6_addr a6;
	uint64_t v;
	size_t len;

	if (s[0] == '[') {
		if ((end = strchr(s, ']')) == NULL)
			return "missing ']'";
		len = (size_t)(end - s - 1);
		if (len >= sizeof(host))
			return "host too long";
		memcpy(host, s + 1, len);
		host[len] = '\0';
		if (inet_pton(AF_INET6, host, &a6) != 1)
			return "invalid IPv6 address";
		if (end[1] != ':')
			return "missing port (expected host:port)";
		port = end + 2;
	} else {
		if ((end = strrchr(s, ':')) == NULL)
			return "missing port (expected host:port)";
		if (memchr(s, ':', (size_t)(end - s)) != NULL)
			return "an IPv6 address must be in brackets";
		if (end == s)
			return "missing host";
		if ((size_t)(end - s) >= sizeof(host))
			return "host too long";
		for (c = s; c < end; c++)
			if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ"
			    "RSTUVWXYZ0123456789.-_", *c) == NULL)
				return "invalid host name";
		port = end + 1;
	}
	if (parse_uint(port, &v) != 0 || v < 1 || v > 65535)
		return "port must be between 1 and 65535";
	return NULL;
}

int
cy_check_address(struct cy_ctx *ctx, const struct cy_node *n, const char *s)
{
	const char *why;

	if (s == NULL || (why = cy_check_hostport(s)) == NULL)
		return 0;
	return cy_err(ctx, n, "invalid address \"%s\": %s", s, why);
}

int
cy_check_readable(struct cy_ctx *ctx, const struct cy_node *n,
    const char *path)
{
	if (path == NULL || access(path, R_OK) == 0)
		return 0;
	return cy_err(ctx, n, "cannot read \"%s\": %s", path, strerror(errno));
}
