/*
 * The strict JSON scanner (json_scan.h), three passes over the bytes:
 *
 *   scan_feed    brackets and string boundaries only, ahead of jsmn: what
 *                must be refused before jsmn sees it, and where to stop
 *                jsmn so that it stays linear (see SCAN_RUN)
 *   jsmn         the tokens (strict mode, parent links)
 *   scan_check   every byte jsmn let through, as jansson would judge it;
 *                then scan_dups over the keys
 *
 * The only file that compiles jsmn.
 */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSON_SCAN_IMPL
#include "json_scan.h"

/* 2^1024 - 2^970: the least magnitude strtod() rounds up to infinity. */
static const char real_limit[] =
    "179769313486231580793728971405303415079934132710037826936173778980444"
    "968292764750946649017977587207096330286416692887910946555547851940402"
    "630657488671505820681908902000708383676273854845817711531764475730270"
    "069855571366959622842914819860834936475292719074168444365510704342711"
    "559699508093042880177904174497792";

/* The pass over the tokens. */
struct scan_state {
	int		 cur;		/* the innermost open container, or -1 */
	int		 open;		/* containers open */
	size_t		 pos;		/* the byte after the last one checked */
};

static int
scan_fail(struct json_scan *s, const char *what, size_t at)
{
	s->err = what;
	s->errpos = at;
	return -1;
}

static bool
scan_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool
scan_digit(const char *p, const char *e)
{
	return p < e && *p >= '0' && *p <= '9';
}

/*
 * Bytes [FROM, TO) between two tokens: blanks, with the separator SEP
 * (':' or ',') among them unless SEP is 0.
 */
static int
scan_gap(struct json_scan *s, size_t from, size_t to, char sep)
{
	const char	*b = s->b;

	while (from < to && scan_blank(b[from]))
		from++;
	if (sep != 0) {
		if (from == to || b[from] != sep)
			return scan_fail(s, sep == ':' ? "expected ':'" :
			    "expected ','", from);
		from++;
		while (from < to && scan_blank(b[from]))
			from++;
	}
	if (from != to)
		return scan_fail(s, b[from] == '\0' ? "NUL byte" :
		    "unexpected character", from);
	return 0;
}

/* Four hex digits at P, or -1. */
static int
scan_hex4(const char *p)
{
	int		 v = 0, i;

	for (i = 0; i < 4; i++) {
		char	 c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

/*
 * The length of the valid UTF-8 sequence at P (before E), 0 if invalid,
 * as jansson's utf8_check_first() and utf8_check_full() judge it: no
 * overlong form, no surrogate half, nothing above U+10FFFF.
 */
static size_t
scan_utf8(const unsigned char *p, const unsigned char *e)
{
	unsigned int	 c = p[0], v;
	size_t		 n, i;

	if (c < 0xC2 || c > 0xF4)
		return 0;
	n = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
	if ((size_t)(e - p) < n)
		return 0;
	v = c & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
	for (i = 1; i < n; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		v = v << 6 | (p[i] & 0x3F);
	}
	if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) ||
	    (n == 3 && v < 0x800) || (n == 4 && v < 0x10000))
		return 0;
	return n;
}

/*
 * The escape at P (a backslash, before E): returns the bytes it takes and
 * sets *DEC to the bytes it decodes to; 0 if jansson refuses it (an
 * unknown escape, \u0000, a surrogate half not in a pair).
 */
static size_t
scan_escape(struct json_scan *s, const char *p, const char *e, size_t *dec)
{
	const char	*what = "invalid escape";
	int		 v, w;

	*dec = 1;
	if (e - p >= 2 && p[1] != '\0' && strchr("\"\\/bfnrt", p[1]) != NULL)
		return 2;
	if (e - p < 6 || p[1] != 'u' || (v = scan_hex4(p + 2)) == -1)
		goto fail;
	what = "\\u0000 in a string";
	if (v == 0)
		goto fail;
	if (v < 0xD800 || v > 0xDFFF) {
		*dec = v < 0x80 ? 1 : v < 0x800 ? 2 : 3;
		return 6;
	}
	what = "invalid surrogate pair";
	if (v > 0xDBFF || e - p < 12 || p[6] != '\\' || p[7] != 'u' ||
	    (w = scan_hex4(p + 8)) < 0xDC00 || w > 0xDFFF)
		goto fail;
	*dec = 4;
	return 12;
fail:
	scan_fail(s, what, (size_t)(p - s->b));
	return 0;
}

/*
 * The first byte at or after P (before E) that is not plain string text:
 * a control character, a backslash or a non-ASCII byte. Eight bytes at a
 * time: a word's byte is flagged when below 0x20, equal to '\\' (zero
 * after the XOR) or with its top bit set.
 */
static const char *
scan_plain(const char *p, const char *e)
{
	const uint64_t	 ones = 0x0101010101010101ULL, high = ones << 7;
	uint64_t	 w, bs;

	for (; e - p >= 8; p += 8) {
		memcpy(&w, p, 8);
		bs = w ^ (ones * '\\');
		if ((((w - ones * 0x20) & ~w) | ((bs - ones) & ~bs) | w) & high)
			break;
	}
	while (p < e && (unsigned char)*p >= 0x20 &&
	    (unsigned char)*p < 0x80 && *p != '\\')
		p++;
	return p;
}

/* Checks string token T and sets its size to its decoded length. */
static int
scan_string(struct json_scan *s, jsmntok_t *t)
{
	const char	*p = s->b + t->start, *e = s->b + t->end;
	size_t		 saved = 0, n, dec;

	while ((p = scan_plain(p, e)) < e) {
		unsigned char	 c = (unsigned char)*p;

		if (c == '\\') {
			if ((n = scan_escape(s, p, e, &dec)) == 0)
				return -1;
			saved += n - dec;
		} else if (c < 0x20)
			return scan_fail(s, "control character in a string",
			    (size_t)(p - s->b));
		else if ((n = scan_utf8((const unsigned char *)p,
		    (const unsigned char *)e)) == 0)
			return scan_fail(s, "invalid UTF-8", (size_t)(p - s->b));
		p += n;
	}
	t->size = t->end - t->start - (int)saved;
	return 0;
}

/*
 * Whether strtod() overflows on a real whose digits start at D (after any
 * '-') and which ends at E, the grammar checked: whether its magnitude is
 * at least real_limit. With the value written 0.DDD * 10^x (D the digits
 * from the first non-zero one), x <= 308 is below DBL_MAX, x >= 310 above
 * the limit, and x == 309 compares the digits with the limit's.
 */
static bool
scan_real_overflows(const char *d, const char *e)
{
	const char	*p = d, *nz = NULL, *int_end, *digits_end;
	long long	 x, ex = 0;
	bool		 neg = false;
	size_t		 i;

	for (; scan_digit(p, e); p++)
		if (nz == NULL && *p != '0')
			nz = p;
	int_end = p;
	if (p < e && *p == '.')
		for (p++; scan_digit(p, e); p++)
			if (nz == NULL && *p != '0')
				nz = p;
	digits_end = p;
	if (nz == NULL)
		return false;		/* zero */
	x = nz < int_end ? int_end - nz : -(nz - int_end - 1);
	if (p < e) {			/* the exponent */
		if (*++p == '-' || *p == '+')
			neg = *p++ == '-';
		for (; scan_digit(p, e); p++)
			if (ex < 1000000000000LL)
				ex = ex * 10 + (*p - '0');
	}
	x += neg ? -ex : ex;
	if (x != 309)
		return x > 309;
	for (i = 0, p = nz; i < sizeof(real_limit) - 1; i++) {
		char	 c = '0';

		if (p < digits_end && *p == '.')
			p++;
		if (p < digits_end)
			c = *p++;
		if (c != real_limit[i])
			return c > real_limit[i];
	}
	return true;
}

/*
 * A number as jansson lexes it: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?
 * [0-9]+)?, an integer (no fraction, no exponent) in int64_t's range, a
 * real that does not overflow a double.
 */
static int
scan_number(struct json_scan *s, jsmntok_t *t)
{
	const char	*p = s->b + t->start, *e = s->b + t->end, *d, *q;
	bool		 real = false;

	d = q = p + (*p == '-');
	if (q < e && *q == '0')
		q++;
	else if (scan_digit(q, e))
		while (scan_digit(q, e))
			q++;
	else
		return scan_fail(s, "invalid number", (size_t)t->start);
	if (q < e && *q == '.') {
		if (!scan_digit(++q, e))
			return scan_fail(s, "invalid number", (size_t)t->start);
		while (scan_digit(q, e))
			q++;
		real = true;
	}
	if (q < e && (*q == 'e' || *q == 'E')) {
		if (++q < e && (*q == '+' || *q == '-'))
			q++;
		if (!scan_digit(q, e))
			return scan_fail(s, "invalid number", (size_t)t->start);
		while (scan_digit(q, e))
			q++;
		real = true;
	}
	if (q != e)
		return scan_fail(s, "invalid number", (size_t)t->start);
	if (real) {
		if (scan_real_overflows(d, e))
			return scan_fail(s, "number out of range",
			    (size_t)t->start);
		t->size = JSON_REAL;
	} else {
		if (e - d > 19 || (e - d == 19 && memcmp(d, d > p ?
		    "9223372036854775808" : "9223372036854775807", 19) > 0))
			return scan_fail(s, "integer out of range",
			    (size_t)t->start);
		t->size = JSON_INT;
	}
	return 0;
}

/* true, false, null, or a number; its kind into its size. */
static int
scan_primitive(struct json_scan *s, jsmntok_t *t)
{
	const char	*p = s->b + t->start;
	int		 n = t->end - t->start;

	if (n == 4 && memcmp(p, "true", 4) == 0)
		t->size = JSON_TRUE;
	else if (n == 5 && memcmp(p, "false", 5) == 0)
		t->size = JSON_FALSE;
	else if (n == 4 && memcmp(p, "null", 4) == 0)
		t->size = JSON_NULL;
	else if (*p == '-' || (*p >= '0' && *p <= '9'))
		return scan_number(s, t);
	else
		return scan_fail(s, "invalid literal", (size_t)t->start);
	return 0;
}

/*
 * Closes the innermost open container: only blanks may stand between its
 * last child and its bracket. NEXT is the token after it.
 */
static int
scan_close(struct json_scan *s, struct scan_state *st, int next)
{
	jsmntok_t	*t = &s->tok[st->cur];

	if (scan_gap(s, st->pos, (size_t)t->end - 1, 0) == -1)
		return -1;
	if (t->type == JSMN_OBJECT) {
		if (t->size % 2 != 0)
			return scan_fail(s, "expected ':'", (size_t)t->end - 1);
		t->size /= 2;
	}
	st->pos = (size_t)t->end;
	st->cur = t->parent;
	st->open--;
	t->parent = next;
	return 0;
}

/*
 * Places token J in its container (closing those that ended before it):
 * checks the separator before it, that a key is a string, the depth (a
 * key is no value to jansson's depth count).
 */
static int
scan_place(struct json_scan *s, struct scan_state *st, int j)
{
	jsmntok_t	*t = &s->tok[j], *c;
	size_t		 at = json_begin(s, j);
	bool		 key = false;
	char		 sep = 0;

	while (st->cur != -1 && (size_t)s->tok[st->cur].end <= at)
		if (scan_close(s, st, j) == -1)
			return -1;
	if (st->cur != -1) {
		c = &s->tok[st->cur];
		key = c->type == JSMN_OBJECT && c->size % 2 == 0;
		sep = c->type == JSMN_OBJECT && !key ? ':' :
		    c->size > 0 ? ',' : 0;
		c->size++;
	}
	if (scan_gap(s, st->pos, at, sep) == -1)
		return -1;
	if (st->cur == -1 && j != 0)
		return scan_fail(s, "data after the value", at);
	if (st->cur == -1 && t->type != JSMN_OBJECT && t->type != JSMN_ARRAY)
		return scan_fail(s, "expected '{' or '['", at);
	if (key && t->type != JSMN_STRING)
		return scan_fail(s, "expected a string key", at);
	if (!key && st->open >= JSON_MAX_DEPTH)
		return scan_fail(s, "nesting too deep", at);
	if (key && s->keys != NULL)
		s->keys[s->nkeys++] = j;
	t->parent = st->cur;
	return 0;
}

/* The pass over jsmn's tokens. */
static int
scan_check(struct json_scan *s)
{
	struct scan_state st = { -1, 0, 0 };
	int		 j;

	for (j = 0; j < s->ntok; j++) {
		jsmntok_t	*t = &s->tok[j];

		if (scan_place(s, &st, j) == -1)
			return -1;
		switch (t->type) {
		case JSMN_OBJECT:
		case JSMN_ARRAY:
			t->size = 0;
			st.cur = j;
			st.open++;
			st.pos = (size_t)t->start + 1;
			break;
		case JSMN_STRING:
			if (scan_string(s, t) == -1)
				return -1;
			st.pos = (size_t)t->end + 1;
			break;
		default:
			if (scan_primitive(s, t) == -1)
				return -1;
			st.pos = (size_t)t->end;
		}
	}
	while (st.cur != -1)
		if (scan_close(s, &st, s->ntok) == -1)
			return -1;
	if (s->ntok == 0)
		return scan_gap(s, 0, s->len, 0) == -1 ? -1 :
		    scan_fail(s, "unexpected end of input", s->len);
	return scan_gap(s, st.pos, s->len, 0);
}

/* One decoded unit (a byte, an escape, a pair) of a checked string. */
static size_t
scan_unit(const char **pp, unsigned char u[4])
{
	const char	*p = *pp;
	unsigned int	 v;

	if (*p != '\\') {
		*pp = p + 1;
		u[0] = (unsigned char)*p;
		return 1;
	}
	*pp = p + 2;
	switch (p[1]) {
	case 'b':	u[0] = '\b'; return 1;
	case 'f':	u[0] = '\f'; return 1;
	case 'n':	u[0] = '\n'; return 1;
	case 'r':	u[0] = '\r'; return 1;
	case 't':	u[0] = '\t'; return 1;
	case 'u':	break;
	default:	u[0] = (unsigned char)p[1]; return 1;
	}
	v = (unsigned int)scan_hex4(p + 2);
	*pp = p + 6;
	if (v >= 0xD800 && v <= 0xDBFF) {
		v = 0x10000 + ((v - 0xD800) << 10) +
		    ((unsigned int)scan_hex4(p + 8) - 0xDC00);
		*pp = p + 12;
	}
	if (v < 0x80) {
		u[0] = (unsigned char)v;
		return 1;
	}
	if (v < 0x800) {
		u[0] = (unsigned char)(0xC0 | v >> 6);
		u[1] = (unsigned char)(0x80 | (v & 0x3F));
		return 2;
	}
	if (v < 0x10000) {
		u[0] = (unsigned char)(0xE0 | v >> 12);
		u[1] = (unsigned char)(0x80 | (v >> 6 & 0x3F));
		u[2] = (unsigned char)(0x80 | (v & 0x3F));
		return 3;
	}
	u[0] = (unsigned char)(0xF0 | v >> 18);
	u[1] = (unsigned char)(0x80 | (v >> 12 & 0x3F));
	u[2] = (unsigned char)(0x80 | (v >> 6 & 0x3F));
	u[3] = (unsigned char)(0x80 | (v & 0x3F));
	return 4;
}

/* A checked string's decoded bytes, one at a time. */
struct scan_cursor {
	const char	*p, *e;
	unsigned char	 u[4];
	size_t		 n, i;
};

static int
scan_cursor_next(struct scan_cursor *c)
{
	if (c->i == c->n) {
		if (c->p == c->e)
			return -1;
		c->n = scan_unit(&c->p, c->u);
		c->i = 0;
	}
	return c->u[c->i++];
}

static bool
scan_raw(const jsmntok_t *t)
{
	return t->size == t->end - t->start;
}

/*
 * Checked strings A and B ordered by decoded length, then decoded bytes:
 * an order in which equal keys are neighbours, cheap to compute.
 */
static int
scan_str_cmp(const struct json_scan *s, int a, int b)
{
	const jsmntok_t	*ta = &s->tok[a], *tb = &s->tok[b];
	struct scan_cursor ca, cb;
	int		 x, y;

	if (ta->size != tb->size)
		return ta->size < tb->size ? -1 : 1;
	if (scan_raw(ta) && scan_raw(tb))
		return memcmp(s->b + ta->start, s->b + tb->start,
		    (size_t)ta->size);
	ca = (struct scan_cursor){ s->b + ta->start, s->b + ta->end, {0}, 0, 0 };
	cb = (struct scan_cursor){ s->b + tb->start, s->b + tb->end, {0}, 0, 0 };
	do {
		x = scan_cursor_next(&ca);
		y = scan_cursor_next(&cb);
	} while (x == y && x != -1);
	return x - y;
}

/* Keys ordered by their object, then as scan_str_cmp() orders them. */
static int
scan_key_cmp(const struct json_scan *s, int a, int b)
{
	int		 pa = s->tok[a].parent, pb = s->tok[b].parent;

	if (pa != pb)
		return pa < pb ? -1 : 1;
	return scan_str_cmp(s, a, b);
}

static void
scan_sift(const struct json_scan *s, int *k, size_t root, size_t n)
{
	size_t		 child;
	int		 tmp;

	while ((child = 2 * root + 1) < n) {
		if (child + 1 < n && scan_key_cmp(s, k[child], k[child + 1]) < 0)
			child++;
		if (scan_key_cmp(s, k[root], k[child]) >= 0)
			return;
		tmp = k[root];
		k[root] = k[child];
		k[child] = tmp;
		root = child;
	}
}

static int
scan_dup(struct json_scan *s, int a, int b)
{
	return scan_fail(s, "duplicate key", json_begin(s, a > b ? a : b));
}

/*
 * No object has a key twice. A few keys (a request's usual lot) are
 * compared pairwise; more are heap-sorted (O(n log n) whatever the keys,
 * no memory) and equal neighbours are duplicates.
 */
static int
scan_dups(struct json_scan *s)
{
	int		*k = s->keys, tmp;
	size_t		 n = (size_t)s->nkeys, i, j;

	if (n <= 16) {
		for (i = 1; i < n; i++)
			for (j = 0; j < i; j++)
				if (scan_key_cmp(s, k[j], k[i]) == 0)
					return scan_dup(s, k[j], k[i]);
		return 0;
	}
	for (i = n / 2; i-- > 0;)
		scan_sift(s, k, i, n);
	for (i = n; i-- > 1;) {
		tmp = k[0];
		k[0] = k[i];
		k[i] = tmp;
		scan_sift(s, k, 0, i);
	}
	for (i = 1; i < n; i++)
		if (scan_key_cmp(s, k[i - 1], k[i]) == 0)
			return scan_dup(s, k[i - 1], k[i]);
	return 0;
}

/*
 * jsmn walks up from the last token through every closed one to find the
 * container a closing bracket closes: in a run of closing brackets the
 * k-th walks k steps, quadratic over deep documents (4 MB of arrays 2000
 * deep took seconds). So jsmn is stopped after every SCAN_RUN closing
 * brackets in a row (scan_feed()) and the last token pointed straight at
 * its nearest open ancestor (scan_shortcut()): a walk is then at most
 * about SCAN_RUN steps. Our pass sets the parents anew.
 */
#define SCAN_RUN	32

/* The pass ahead of jsmn (scan_feed()). */
struct scan_feed {
	size_t		 pos;
	int		 depth;		/* brackets open */
	bool		 closed;	/* the value has ended */
};

/*
 * The first '"', backslash or NUL at or after I (before LEN), or LEN:
 * eight bytes at a time, a byte flagged when zero after an XOR. The
 * lowest flag is exact (a borrow only flags bytes above a zero byte).
 */
static size_t
scan_quote(const char *b, size_t i, size_t len)
{
	const uint64_t	 ones = 0x0101010101010101ULL, high = ones << 7;
	uint64_t	 w, q, bs, hit;

	for (; len - i >= 8; i += 8) {
		memcpy(&w, b + i, 8);
		q = w ^ (ones * '"');
		bs = w ^ (ones * '\\');
		hit = (((w - ones) & ~w) | ((q - ones) & ~q) |
		    ((bs - ones) & ~bs)) & high;
		if (hit != 0) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
			return i + (size_t)(__builtin_ctzll(hit) >> 3);
#else
			break;
#endif
		}
	}
	while (i < len && b[i] != '"' && b[i] != '\\' && b[i] != '\0')
		i++;
	return i;
}

/* The closing quote of the string opened before I, a NUL in it, or LEN. */
static size_t
scan_skip_string(const char *b, size_t i, size_t len)
{
	while ((i = scan_quote(b, i, len)) < len && b[i] == '\\')
		if ((i += 2) >= len)
			return len;
	return i;
}

/*
 * Brackets and string boundaries ahead of jsmn (skipping escapes as jsmn
 * does): refuses at once a NUL byte (where jsmn would stop as at the end),
 * nesting beyond 2048, a bracket closing nothing, a second value; sets
 * *LIMIT to where jsmn stops next: after SCAN_RUN closing brackets in a
 * row, or at the end (in PREFIX mode the first value's end, which becomes
 * S->len).
 */
static int
scan_feed(struct json_scan *s, struct scan_feed *f, size_t *limit)
{
	const char	*b = s->b;
	size_t		 i;
	int		 run = 0;

	for (i = f->pos; i < s->len; i++) {
		switch (b[i]) {
		case '"':
			if ((i = scan_skip_string(b, i + 1, s->len)) < s->len &&
			    b[i] == '\0')
				return scan_fail(s, "NUL byte", i);
			run = 0;
			break;
		case '{':
		case '[':
			if (f->closed)
				return scan_fail(s, "data after the value", i);
			if (++f->depth > JSON_MAX_DEPTH)
				return scan_fail(s, "nesting too deep", i);
			run = 0;
			break;
		case '}':
		case ']':
			if (f->depth == 0)
				return scan_fail(s, "unexpected character", i);
			if (--f->depth == 0) {
				f->closed = true;
				if (s->flags & JSON_SCAN_PREFIX)
					s->len = i + 1;
			} else if (++run == SCAN_RUN) {
				*limit = f->pos = i + 1;
				return 0;
			}
			break;
		case ' ': case '\t': case '\n': case '\r': case ',': case ':':
			break;
		case '\0':
			return scan_fail(s, "NUL byte", i);
		default:
			if (f->depth == 0 && (s->flags & JSON_SCAN_PREFIX))
				return scan_fail(s, "expected '{' or '['", i);
			run = 0;
		}
	}
	*limit = f->pos = s->len;
	return 0;
}

/* Points the last token at its nearest open ancestor (see SCAN_RUN). */
static void
scan_shortcut(jsmntok_t *tok, const jsmn_parser *p)
{
	int		 last = (int)p->toknext - 1, a;

	if (last < 0)
		return;
	for (a = tok[last].parent; a != -1 && tok[a].end != -1;)
		a = tok[a].parent;
	tok[last].parent = a;
}

/* What jsmn refused, and where. */
static int
scan_jsmn_error(struct json_scan *s, const jsmn_parser *p, int rc)
{
	if (rc == JSMN_ERROR_PART)
		return scan_fail(s, "unexpected end of input", s->len);
	if (p->pos < s->len && s->b[p->pos] == '"')
		return scan_fail(s, "invalid escape", p->pos);
	return scan_fail(s, "unexpected character", p->pos);
}

/*
 * jsmn over the bytes into TOK (NTOK of them), stopped where scan_feed()
 * says. Returns the number of tokens, -1 (S->err set), or -2 when NTOK
 * is too few (S->len then final).
 */
static int
scan_jsmn(struct json_scan *s, jsmntok_t *tok, unsigned int ntok)
{
	struct scan_feed f = { 0, 0, false };
	jsmn_parser	 p;
	size_t		 limit;
	int		 n;

	jsmn_init(&p);
	do {
		if (scan_feed(s, &f, &limit) == -1)
			return -1;
		n = jsmn_parse(&p, s->b, limit, tok, ntok);
		if (n == JSMN_ERROR_NOMEM) {
			while (limit < s->len)
				if (scan_feed(s, &f, &limit) == -1)
					return -1;
			return -2;
		}
		if (n == JSMN_ERROR_INVAL)
			break;
		scan_shortcut(tok, &p);
	} while (limit < s->len);
	if (n < 0)
		return scan_jsmn_error(s, &p, n);
	return n;
}

/* Tokens beyond the locals: N of them and their keys, in one block. */
static int
scan_alloc(struct json_scan *s, int n)
{
	size_t		 ntok = (size_t)n;

	s->heap = malloc(ntok * sizeof(jsmntok_t) +
	    (ntok / 2 + 1) * sizeof(int));
	if (s->heap == NULL) {
		s->nomem = true;
		return scan_fail(s, "out of memory", 0);
	}
	s->tok = s->heap;
	if (s->keys != NULL)
		s->keys = (int *)(s->tok + ntok);
	return 0;
}

/* jsmn over the locals; over the heap when they are too few. */
static int
scan_tokens(struct json_scan *s)
{
	jsmn_parser	 p;
	int		 n;

	if ((n = scan_jsmn(s, s->tok, JSON_SCAN_LOCAL)) == -2) {
		/* counting only: no walks, linear */
		jsmn_init(&p);
		if ((n = jsmn_parse(&p, s->b, s->len, NULL, 0)) < 0)
			return scan_jsmn_error(s, &p, n);
		if (scan_alloc(s, n) == -1)
			return -1;
		if ((n = scan_jsmn(s, s->tok, (unsigned int)n)) == -2)
			return scan_fail(s, "unexpected character", 0);
	}
	if (n < 0)
		return -1;
	s->ntok = n;
	return 0;
}

int
json_scan_parse(struct json_scan *s, const char *b, size_t len,
    unsigned int flags)
{
	s->b = b;
	s->len = len;
	s->tok = s->tok_local;
	s->ntok = 0;
	s->keys = flags & JSON_SCAN_DUPS ? NULL : s->keys_local;
	s->nkeys = 0;
	s->err = NULL;
	s->errpos = 0;
	s->nomem = false;
	s->heap = NULL;
	s->flags = flags;
	if (len >= INT_MAX)
		return scan_fail(s, "too long", 0);
	if (scan_tokens(s) == -1 || scan_check(s) == -1 ||
	    (s->keys != NULL && scan_dups(s) == -1)) {
		json_scan_free(s);
		return -1;
	}
	return 0;
}

void
json_scan_free(struct json_scan *s)
{
	free(s->heap);
	s->heap = NULL;
	s->tok = s->tok_local;
}

bool
json_scan_str_eq(const struct json_scan *s, int i, const char *name,
    size_t len)
{
	const jsmntok_t	*t = &s->tok[i];
	struct scan_cursor c;
	size_t		 k;

	if ((size_t)t->size != len)
		return false;
	if (scan_raw(t))
		return memcmp(s->b + t->start, name, len) == 0;
	c = (struct scan_cursor){ s->b + t->start, s->b + t->end, {0}, 0, 0 };
	for (k = 0; k < len; k++)
		if (scan_cursor_next(&c) != (unsigned char)name[k])
			return false;
	return true;
}

void
json_scan_members(const struct json_scan *s, int obj,
    const struct json_name *names, size_t n, int *val)
{
	size_t		 m, k, nm = json_size(s, obj);
	int		 key = obj + 1;

	for (k = 0; k < n; k++)
		val[k] = -1;
	for (m = 0; m < nm; m++, key = json_next(s, key + 1))
		for (k = 0; k < n; k++)
			if ((size_t)s->tok[key].size == names[k].len &&
			    json_scan_str_eq(s, key, names[k].s, names[k].len)) {
				val[k] = key + 1;
				break;
			}
}

void
json_scan_unescape(const struct json_scan *s, int i, char *out)
{
	const jsmntok_t	*t = &s->tok[i];
	const char	*p = s->b + t->start, *e = s->b + t->end;
	unsigned char	 u[4];
	size_t		 n;

	while (p < e) {
		n = scan_unit(&p, u);
		memcpy(out, u, n);
		out += n;
	}
}

int64_t
json_scan_int(const struct json_scan *s, int i)
{
	const char	*p = s->b + s->tok[i].start, *e = s->b + s->tok[i].end;
	bool		 neg = *p == '-';
	int64_t		 v = 0;

	/* accumulated negative: INT64_MIN has no positive counterpart */
	for (p += neg; p < e; p++)
		v = v * 10 - (*p - '0');
	return neg ? v : -v;
}

bool
json_utf8_valid(const char *p, size_t n)
{
	const unsigned char *u = (const unsigned char *)p, *e = u + n;
	size_t		 k;

	while (u < e) {
		if (*u < 0x80)
			k = 1;
		else if ((k = scan_utf8(u, e)) == 0)
			return false;
		u += k;
	}
	return true;
}
