/*
 * A strict JSON scanner over raw bytes, shared by request.c and usage.c.
 * Not a public header.
 *
 * One pass over the bytes (an iterative descent, the open containers
 * linked through their tokens, no recursion) checks every byte as
 * jansson's json_loadb() judges it and writes a flat array of tokens in
 * document order, each a byte span: separators and brackets in their
 * places, numbers by the JSON grammar and within jansson's range (integers
 * in int64_t, reals that strtod() does not overflow), strings without raw
 * control characters, with valid escapes and surrogate pairs, valid UTF-8
 * and no \u0000, nesting at most 2048 deep, no duplicate key in any
 * object (unless JSON_SCAN_DUPS), and only blanks after the value; except
 * that a NUL byte is refused wherever it is (jansson drops one right after
 * a number or a literal). Linear in the bytes whatever they are; nothing
 * is allocated unless the document has more than JSON_SCAN_LOCAL tokens.
 *
 * After json_scan_parse() the token fields mean:
 *   type, start, end  enum json_tok_type; the bytes [start, end), a
 *             string's span excluding its quotes
 *   size      object: members; array: elements; string: decoded length in
 *             bytes; primitive: its enum json_kind
 *   parent    string, primitive: the enclosing container (-1 at the top);
 *             object, array: the index after its last descendant (its next
 *             sibling), so that walking a container's children is O(1) each
 *   ival      JSON_INT primitive: its value
 * Token 0 is the document's value; a member's value follows its key.
 */
#ifndef INFERGATE_JSON_SCAN_H
#define INFERGATE_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define JSON_SCAN_LOCAL		512	/* tokens on the stack */
#define JSON_MAX_DEPTH		2048	/* jansson's JSON_PARSER_MAX_DEPTH */

/* json_scan_parse() flags */
#define JSON_SCAN_DUPS		0x1	/* duplicate keys allowed, the last wins */
#define JSON_SCAN_PREFIX	0x2	/* the first value only (jansson's
					   JSON_DISABLE_EOF_CHECK) */

enum json_kind {
	JSON_OBJECT, JSON_ARRAY, JSON_STRING,
	JSON_NULL, JSON_TRUE, JSON_FALSE, JSON_INT, JSON_REAL
};

enum json_tok_type {
	JSON_TOK_OBJECT = 1, JSON_TOK_ARRAY, JSON_TOK_STRING, JSON_TOK_PRIMITIVE
};

struct json_tok {
	int		 type;		/* enum json_tok_type */
	int		 start, end;
	int		 size;
	int		 parent;
	int64_t		 ival;
};

struct json_scan {
	const char	*b;
	size_t		 len;		/* PREFIX: up to the end of the value */
	unsigned int	 flags;
	struct json_tok	*tok;
	int		 ntok;
	int		 cap;		/* tokens TOK has room for */
	int		*keys;		/* the open objects' keys (duplicate check) */
	int		 nkeys;
	size_t		 steps;		/* work beyond the pass over the bytes: key
					   comparisons, tokens moved (tests) */
	const char	*err;		/* what is wrong (static text) */
	size_t		 errpos;	/* the byte it was found at */
	bool		 nomem;		/* failed for want of memory */
	void		*heap;		/* tokens and keys beyond the locals */
	struct json_tok	 tok_local[JSON_SCAN_LOCAL];
	int		 keys_local[JSON_SCAN_LOCAL / 2 + 1];
};

/* A member name to look up, with its length. */
struct json_name {
	const char	*s;
	size_t		 len;
};
#define JSON_NAME(s)	{ s, sizeof(s) - 1 }

/*
 * Scans B (LEN bytes) into S. Returns 0; or -1 with S->err and S->errpos
 * saying what is wrong and where (or S->nomem), holding nothing. On
 * success S refers to B, which must outlive it, and json_scan_free()
 * releases what it holds.
 */
int		 json_scan_parse(struct json_scan *s, const char *b, size_t len,
		    unsigned int flags);
void		 json_scan_free(struct json_scan *s);

/*
 * The values of object OBJ's members named NAMES[0..N) into VAL[0..N)
 * (-1: absent; the last one if a name repeats). Keys are compared
 * decoded, as jansson compares them.
 */
void		 json_scan_members(const struct json_scan *s, int obj,
		    const struct json_name *names, size_t n, int *val);

/* Whether string token I decodes to the LEN bytes of NAME. */
bool		 json_scan_str_eq(const struct json_scan *s, int i,
		    const char *name, size_t len);

/* Decodes string token I into OUT (its size bytes; no NUL added). */
void		 json_scan_unescape(const struct json_scan *s, int i, char *out);

/* Whether the N bytes at P are valid UTF-8 (as jansson judges it). */
bool		 json_utf8_valid(const char *p, size_t n);

/* The value of a JSON_INT token (in range: the scan checked it). */
static inline int64_t
json_scan_int(const struct json_scan *s, int i)
{
	return s->tok[i].ival;
}

static inline enum json_kind
json_kind(const struct json_scan *s, int i)
{
	switch (s->tok[i].type) {
	case JSON_TOK_OBJECT:	return JSON_OBJECT;
	case JSON_TOK_ARRAY:	return JSON_ARRAY;
	case JSON_TOK_STRING:	return JSON_STRING;
	default:		return (enum json_kind)s->tok[i].size;
	}
}

/* The token after I and its descendants: I's next sibling, if any. */
static inline int
json_next(const struct json_scan *s, int i)
{
	const struct json_tok *t = &s->tok[i];

	return t->type == JSON_TOK_OBJECT || t->type == JSON_TOK_ARRAY ? t->parent :
	    i + 1;
}

/* Members, elements, or a string's decoded length. */
static inline size_t
json_size(const struct json_scan *s, int i)
{
	return (size_t)s->tok[i].size;
}

/* Where token I's text begins and ends (a string's quotes included). */
static inline size_t
json_begin(const struct json_scan *s, int i)
{
	const struct json_tok *t = &s->tok[i];

	return (size_t)(t->type == JSON_TOK_STRING ? t->start - 1 : t->start);
}

static inline size_t
json_end(const struct json_scan *s, int i)
{
	const struct json_tok *t = &s->tok[i];

	return (size_t)(t->type == JSON_TOK_STRING ? t->end + 1 : t->end);
}

#endif
