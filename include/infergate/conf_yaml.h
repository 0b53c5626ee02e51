/*
 * infergate: the shared, table-driven YAML config reader (on libyaml).
 *
 * A file is parsed whole into a tree of nodes that keep their file, line and
 * column (1-based). Each module then describes its section as a table of
 * struct cy_key (name, type, bounds, default, validator), as Redis's
 * static_configs[] and nginx's ngx_command_t do, and cy_read_table() fills a
 * plain-data struct from a mapping node. Every error is one line,
 *
 *	FILE:LINE:COL: KEY.PATH: message
 *
 * where FILE is the path as given, KEY.PATH the dotted path of the key at
 * fault ("pools.small.timeouts.connect", "listen[1].address"). Only the first
 * error is kept; readers stop at it.
 *
 * Out of memory while loading a config aborts the process: a config is read
 * at start and on reload, where there is nothing sensible to fall back to.
 */
#ifndef INFERGATE_CONF_YAML_H
#define INFERGATE_CONF_YAML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cy_kind { CY_SCALAR, CY_MAP, CY_SEQ, CY_ALIAS };

struct cy_pair;

struct cy_node {
	enum cy_kind	 kind;
	const char	*file;		/* owned by the document */
	int		 line;		/* 1-based */
	int		 col;
	char		*value;		/* CY_SCALAR */
	bool		 plain;		/* unquoted scalar */
	struct cy_node	**items;	/* CY_SEQ */
	struct cy_pair	*pairs;		/* CY_MAP */
	size_t		 n;		/* items or pairs */
};

struct cy_pair {
	struct cy_node	*key;		/* always a scalar */
	struct cy_node	*value;
};

struct cy_doc;

#define CY_PATH_MAX	512

/* The state of one load: the path being read, the first error, the trees. */
struct cy_ctx {
	const char	*file;		/* the main file, as given */
	const struct cy_node *at;	/* innermost node present, for errors */
	char		 path[CY_PATH_MAX];
	size_t		 pathlen;
	char		*err;		/* first error, malloc'd */
	struct cy_doc	*docs;		/* every file parsed, freed by cy_ctx_clear */
};

enum cy_type {
	CY_STRING,	/* char * */
	CY_UINT,	/* uint64_t, min..max */
	CY_DOUBLE,	/* double, dmin..dmax */
	CY_BOOL,	/* bool: true | false */
	CY_DURATION,	/* uint64_t milliseconds, min..max */
	CY_ENUM,	/* an enum (int-sized): index into names[] */
	CY_TABLE,	/* a mapping read with sub into the same struct */
	CY_LIST,	/* a sequence of mappings read with sub into an array */
	CY_STRLIST,	/* a sequence of strings: char ** */
	CY_CUSTOM,	/* read() does it all; release() frees it */
	CY_EXTERNAL,	/* accepted here, read by another module */
};

#define CY_REQUIRED	0x01	/* missing is an error */
#define CY_PATH		0x02	/* string: resolved against the file's dir */
#define CY_NONEMPTY	0x04	/* string: "" is an error */
#define CY_OPTIONAL	0x08	/* table: absent means no defaults either */

typedef int (*cy_check_fn)(struct cy_ctx *, const struct cy_node *, void *);

struct cy_key {
	const char	*name;
	enum cy_type	 type;
	unsigned	 flags;
	size_t		 off;		/* of the field in the struct */
	size_t		 count_off;	/* CY_LIST, CY_STRLIST: the size_t count */
	const char	*def;		/* default, written as in YAML; NULL: none */
	uint64_t	 min, max;	/* CY_UINT, CY_DURATION; CY_LIST: min entries */
	double		 dmin, dmax;	/* CY_DOUBLE */
	const char *const *names;	/* CY_ENUM, NULL-terminated */
	const struct cy_key *sub;	/* CY_TABLE, CY_LIST */
	size_t		 elemsize;	/* CY_LIST */
	/*
	 * Called after the value is stored (node NULL when the key is
	 * absent); for CY_LIST once per element, with the element. obj is
	 * the struct the table fills (the element for CY_LIST).
	 */
	cy_check_fn	 check;
	cy_check_fn	 read;		/* CY_CUSTOM; node NULL when absent */
	void		(*release)(void *obj);	/* CY_CUSTOM: frees what read() made */
};

void		 cy_ctx_init(struct cy_ctx *, const char *file);
/* Frees the parsed trees; ctx->err stays for the caller. */
void		 cy_ctx_clear(struct cy_ctx *);

/*
 * Parses FILE into a tree owned by ctx (until cy_ctx_clear). Aliases are
 * refused. Returns the root (an empty mapping for an empty file), or NULL
 * with ctx->err set.
 */
const struct cy_node *cy_parse_file(struct cy_ctx *, const char *file);

/*
 * Fills obj from the mapping node (NULL: absent, defaults only) with keys.
 * Unknown and duplicate keys are errors. Returns 0, or -1 with ctx->err set;
 * whatever was allocated is reachable from obj either way, so
 * cy_free_table() releases it.
 */
int		 cy_read_table(struct cy_ctx *, const struct cy_node *,
		    const struct cy_key *, void *obj);
void		 cy_free_table(const struct cy_key *, void *obj);
/*
 * The first key of KEYS (into its CY_TABLE keys, "table.key") whose value
 * differs between the structs A and B, written into BUF (LEN bytes) and
 * returned; NULL when all are equal. Lists, CY_CUSTOM and CY_EXTERNAL
 * keys are the caller's to compare.
 */
const char	*cy_table_diff(const struct cy_key *, const void *a,
		    const void *b, char *buf, size_t len);
/*
 * Reads keys from map (NULL: defaults only) without refusing the other keys
 * of map: for a module reading its own keys out of a mapping whose table
 * lives elsewhere (the top level). Same returns as cy_read_table().
 */
int		 cy_read_keys(struct cy_ctx *, const struct cy_node *,
		    const struct cy_key *, void *obj);

/* Reads a sequence of strings into a malloc'd array (appends). */
int		 cy_read_strlist(struct cy_ctx *, const struct cy_node *,
		    char ***, size_t *);
void		 cy_free_strlist(char **, size_t);

/* The path: push a key or an index, then pop back to the returned mark. */
size_t		 cy_push(struct cy_ctx *, const char *key);
size_t		 cy_push_index(struct cy_ctx *, size_t);
void		 cy_pop(struct cy_ctx *, size_t mark);

/*
 * Records "FILE:LINE:COL: PATH: message" for node (NULL: the innermost node
 * present) unless an error is already recorded. Returns -1. cy_err_key
 * appends ".key" to the path for this one message.
 */
int		 cy_err(struct cy_ctx *, const struct cy_node *,
		    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int		 cy_err_key(struct cy_ctx *, const struct cy_node *,
		    const char *key, const char *fmt, ...)
		    __attribute__((format(printf, 4, 5)));

/* The value of key in a mapping; NULL when absent or null ("", ~, null). */
const struct cy_node *cy_get(const struct cy_node *map, const char *key);
bool		 cy_is_null(const struct cy_node *);

/* REL against the directory of the file node came from; malloc'd. */
char		*cy_resolve(const char *file, const char *rel);

/*
 * "host:port" or "[v6]:port", port 1..65535. Returns NULL if valid, else
 * a static reason.
 */
const char	*cy_check_hostport(const char *);
/* A check: the string field at node is a host:port address. */
int		 cy_check_address(struct cy_ctx *, const struct cy_node *,
		    const char *);
/* A check: the file exists and can be read. */
int		 cy_check_readable(struct cy_ctx *, const struct cy_node *,
		    const char *path);

/* Milliseconds as the shortest duration string ("250ms", "5s", "2m"). */
const char	*cy_fmt_duration(uint64_t ms, char *buf, size_t len);

void		*cy_xcalloc(size_t, size_t);
char		*cy_xstrdup(const char *);

#endif
