/*
 * The strict JSON scanner (json_scan.h): one pass over the bytes.
 *
 * An iterative descent: scan_doc() reads a value, then what follows it
 * (blanks, a separator, closing brackets), and so on to the end of the
 * document's value. The open containers are a stack linked through their
 * tokens' parent fields (replaced by the next sibling's index as each one
 * closes), so the depth costs no recursion and no memory of its own.
 * Strings are read sixteen bytes at a time (SSE2; else eight) up to the
 * first byte that needs care (a quote, a backslash, a control character,
 * a non-ASCII byte), which is the only one looked at on its own;
 * numbers are checked and their value taken in the same walk. The keys of
 * the open objects are a stack beside the tokens; an object's keys are
 * checked for duplicates when it closes.
 */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "json_scan.h"

/* 2^1024 - 2^970: the least magnitude strtod() rounds up to infinity. */
static const char real_limit[] =
    "179769313486231580793728971405303415079934132710037826936173778980444"
    "968292764750946649017977587207096330286416692887910946555547851940402"
    "630657488671505820681908902000708383676273854845817711531764475730270"
    "069855571366959622842914819860834936475292719074168444365510704342711"
    "559699508093042880177904174497792";

/* Byte classes (scan_class) */
#define C_BLANK		0x1	/* blank between tokens */
#define C_PLAIN		0x2	/* string text as it stands: ASCII, not a
				   control character, '"' or '\\' */
#define C_DELIM		0x4	/* may follow a number or a literal */

static const unsigned char scan_class[256] = {
	['\t'] = C_BLANK | C_DELIM, ['\n'] = C_BLANK | C_DELIM,
	['\r'] = C_BLANK | C_DELIM, [' '] = C_BLANK | C_PLAIN | C_DELIM,
	['!'] = C_PLAIN, ['#' ... '+'] = C_PLAIN, [','] = C_PLAIN | C_DELIM,
	['-' ... '['] = C_PLAIN, [']'] = C_PLAIN | C_DELIM,
	['^' ... '|'] = C_PLAIN, ['}'] = C_PLAIN | C_DELIM,
	['~' ... 0x7F] = C_PLAIN,
};

static int
scan_fail(struct json_scan *s, const char *what, size_t at)
{
	s->err = what;
	s->errpos = at;
	return -1;
}

/*
 * Fails at P (before E), where WHAT was expected: or at the end of the
 * input, or at a NUL byte.
 */
static int
scan_fail_at(struct json_scan *s, const char *p, const char *e,
    const char *what)
{
	if (p == e)
		what = "unexpected end of input";
	else if (*p == '\0')
		what = "NUL byte";
	return scan_fail(s, what, (size_t)(p - s->b));
}

static inline const char *
scan_blanks(const char *p, const char *e)
{
	if (p < e && (unsigned char)*p > ' ')	/* most often */
		return p;
	while (p < e && (scan_class[(unsigned char)*p] & C_BLANK))
		p++;
	return p;
}

static inline bool
scan_digit(char c)
{
	return (unsigned char)(c - '0') < 10;
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
 * The escape at P (a backslash, before E, in the string whose quote is at
 * Q): returns the bytes it takes and sets *DEC to the bytes it decodes
 * to; 0 if jansson refuses it (an unknown escape, reported at Q; \u0000,
 * a surrogate half not in a pair).
 */
static size_t
scan_escape(struct json_scan *s, const char *p, const char *e,
    const char *q, size_t *dec)
{
	const char	*what = "invalid escape", *at = q;
	int		 v, w;

	*dec = 1;
	if (e - p < 2)
		goto fail;
	switch (p[1]) {
	case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r':
	case 't':
		return 2;
	case 'u':
		break;
	default:
		goto fail;
	}
	if (e - p < 6 || (v = scan_hex4(p + 2)) == -1)
		goto fail;
	what = "\\u0000 in a string";
	at = p;
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
	scan_fail(s, what, (size_t)(at - s->b));
	return 0;
}

/*
 * The first byte at or after P (before E) that is not plain string text
 * (C_PLAIN), or E. Sixteen bytes at a time with SSE2: a byte is flagged
 * when equal to '"' or '\\', or below 0x20 as a signed byte (which takes
 * in those at or above 0x80). Then eight at a time: a word's byte is
 * flagged when below 0x20 or at or above 0x80, or equal to '"' or '\\'
 * (zero after an XOR); a borrow flags only bytes above the one it came
 * from, so the lowest flag is exact.
 */
static inline const char *
scan_plain(const char *p, const char *e)
{
	const uint64_t	 ones = 0x0101010101010101ULL, high = ones << 7;
	uint64_t	 w, q, bs, hit;
#ifdef __SSE2__
	const __m128i	 quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'),
			 space = _mm_set1_epi8(0x20);
	__m128i		 x;
	int		 m;

	for (; e - p >= 16; p += 16) {
		x = _mm_loadu_si128((const __m128i *)(const void *)p);
		m = _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(
		    _mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, bslash)),
		    _mm_cmplt_epi8(x, space)));
		if (m != 0)
			return p + __builtin_ctz((unsigned int)m);
	}
#endif
	for (; e - p >= 8; p += 8) {
		memcpy(&w, p, 8);
		q = w ^ (ones * '"');
		bs = w ^ (ones * '\\');
		hit = ((w - ones * 0x20) | w | ((q - ones) & ~q) |
		    ((bs - ones) & ~bs)) & high;
		if (hit != 0) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
			return p + (__builtin_ctzll(hit) >> 3);
#else
			break;
#endif
		}
	}
	while (p < e && (scan_class[(unsigned char)*p] & C_PLAIN))
		p++;
	return p;
}

/*
 * Tokens beyond the locals: twice as many, in one block with room for
 * the keys (a key is followed by its value, so the open objects' keys
 * are never more than half the tokens, plus one).
 */
static __attribute__((noinline)) int
scan_grow(struct json_scan *s)
{
	size_t		 cap = (size_t)s->cap * 2;
	struct json_tok	*tok;
	void		*heap;

	if (cap > INT_MAX)
		cap = INT_MAX;
	heap = malloc(cap * sizeof(*tok) + (cap / 2 + 1) * sizeof(int));
	if (heap == NULL) {
		s->nomem = true;
		return scan_fail(s, "out of memory", 0);
	}
	tok = heap;
	memcpy(tok, s->tok, (size_t)s->ntok * sizeof(*tok));
	if (s->keys != NULL) {
		memcpy(tok + cap, s->keys, (size_t)s->nkeys * sizeof(int));
		s->keys = (int *)(tok + cap);
	}
	s->steps += (size_t)s->ntok;
	free(s->heap);
	s->heap = heap;
	s->tok = tok;
	s->cap = (int)cap;
	return 0;
}

/* A new token of TYPE at byte P, in container PARENT; its index or -1. */
static inline int
scan_tok(struct json_scan *s, int type, const char *p, int parent)
{
	struct json_tok	*t;

	if (s->ntok == s->cap && scan_grow(s) == -1)
		return -1;
	t = &s->tok[s->ntok];
	t->type = type;
	t->start = (int)(p - s->b);
	t->parent = parent;
	return s->ntok++;
}

/*
 * The string opening at *PP (its quote), a token in container PARENT;
 * *PP then after its closing quote. Returns the token, or -1.
 */
static inline __attribute__((always_inline)) int
scan_string(struct json_scan *s, const char **pp, const char *e, int parent)
{
	const char	*p = *pp + 1;
	size_t		 saved = 0, n, dec;
	unsigned char	 c;
	int		 i;

	if ((i = scan_tok(s, JSON_TOK_STRING, p, parent)) == -1)
		return -1;
	for (;;) {
		if ((p = scan_plain(p, e)) == e)
			return scan_fail_at(s, p, e, NULL);
		if ((c = (unsigned char)*p) == '"')
			break;
		if (c == '\\') {
			if ((n = scan_escape(s, p, e, *pp, &dec)) == 0)
				return -1;
			saved += n - dec;
		} else if (c >= 0x80) {
			if ((n = scan_utf8((const unsigned char *)p,
			    (const unsigned char *)e)) == 0)
				return scan_fail(s, "invalid UTF-8",
				    (size_t)(p - s->b));
		} else
			return scan_fail_at(s, p, e,
			    "control character in a string");
		p += n;
	}
	s->tok[i].end = (int)(p - s->b);
	s->tok[i].size = s->tok[i].end - s->tok[i].start - (int)saved;
	*pp = p + 1;
	return i;
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

	for (; (p < e && scan_digit(*p)); p++)
		if (nz == NULL && *p != '0')
			nz = p;
	int_end = p;
	if (p < e && *p == '.')
		for (p++; (p < e && scan_digit(*p)); p++)
			if (nz == NULL && *p != '0')
				nz = p;
	digits_end = p;
	if (nz == NULL)
		return false;		/* zero */
	x = nz < int_end ? int_end - nz : -(nz - int_end - 1);
	if (p < e) {			/* the exponent */
		if (*++p == '-' || *p == '+')
			neg = *p++ == '-';
		for (; (p < e && scan_digit(*p)); p++)
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
 * The number at *PP as jansson lexes it: -?(0|[1-9][0-9]*)(.[0-9]+)?
 * ([eE][+-]?[0-9]+)?, an integer (no fraction, no exponent) in int64_t's
 * range, its value into IVAL, or a real that does not overflow a double.
 * Returns its kind and moves *PP past it; -1 if it is refused.
 */
static inline int
scan_number(struct json_scan *s, const char **pp, const char *e,
    int64_t *ival)
{
	const char	*p = *pp, *d, *q;
	uint64_t	 v = 0;
	bool		 neg = *p == '-', exp = false;

	d = q = p + neg;
	if (q < e && *q == '0')
		q++;
	else if (q < e && scan_digit(*q))
		do
			v = v * 10 + (uint64_t)(*q++ - '0');
		while (q < e && scan_digit(*q));
	else
		return scan_fail(s, "invalid number", (size_t)(p - s->b));
	if (q == e || (*q != '.' && *q != 'e' && *q != 'E')) {
		/* 19 digits do not overflow V; more are out of range */
		if (q - d > 19 || v > (uint64_t)INT64_MAX + neg)
			return scan_fail(s, "integer out of range",
			    (size_t)(p - s->b));
		/* -2^63 has no positive counterpart */
		*ival = neg && v != 0 ? -(int64_t)(v - 1) - 1 : (int64_t)v;
		*pp = q;
		return JSON_INT;
	}
	if (*q == '.') {
		if (++q == e || !scan_digit(*q))
			return scan_fail(s, "invalid number", (size_t)(p - s->b));
		while (q < e && scan_digit(*q))
			q++;
	}
	if (q < e && (*q == 'e' || *q == 'E')) {
		if (++q < e && (*q == '+' || *q == '-'))
			q++;
		if (q == e || !scan_digit(*q))
			return scan_fail(s, "invalid number", (size_t)(p - s->b));
		while (q < e && scan_digit(*q))
			q++;
		exp = true;
	}
	/* below 10^308 without an exponent: no overflow */
	if ((exp || q - d > 300) && scan_real_overflows(d, q))
		return scan_fail(s, "number out of range", (size_t)(p - s->b));
	*pp = q;
	return JSON_REAL;
}

/*
 * The scalar at *PP (not a string), a token in container PARENT; *PP then
 * after it. Returns 0 or -1.
 */
static inline int
scan_scalar(struct json_scan *s, const char **pp, const char *e, int parent)
{
	const char	*p = *pp;
	int64_t		 ival = 0;
	int		 kind, n, i;

	switch (*p) {
	case 't':
		kind = JSON_TRUE;
		n = e - p >= 4 && memcmp(p, "true", 4) == 0 ? 4 : 0;
		break;
	case 'f':
		kind = JSON_FALSE;
		n = e - p >= 5 && memcmp(p, "false", 5) == 0 ? 5 : 0;
		break;
	case 'n':
		kind = JSON_NULL;
		n = e - p >= 4 && memcmp(p, "null", 4) == 0 ? 4 : 0;
		break;
	case '-': case '0': case '1': case '2': case '3': case '4': case '5':
	case '6': case '7': case '8': case '9':
		if ((kind = scan_number(s, pp, e, &ival)) == -1)
			return -1;
		n = (int)(*pp - p);
		break;
	default:
		return scan_fail_at(s, p, e, "unexpected character");
	}
	/* jansson lexes on to a delimiter: the same refusal, at the start */
	if (n != 0 && p + n < e && !(scan_class[(unsigned char)p[n]] & C_DELIM)) {
		if (p[n] == '\0')
			return scan_fail(s, "NUL byte", (size_t)(p + n - s->b));
		n = 0;
	}
	if (n == 0)
		return scan_fail(s, kind == JSON_INT || kind == JSON_REAL ?
		    "invalid number" : "invalid literal", (size_t)(p - s->b));
	if ((i = scan_tok(s, JSON_TOK_PRIMITIVE, p, parent)) == -1)
		return -1;
	s->tok[i].end = (int)(p - s->b) + n;
	s->tok[i].size = kind;
	s->tok[i].ival = ival;
	*pp = p + n;
	return 0;
}

/*
 * The key at *PP (blanks skipped) of open object OBJ, and the ':' after
 * it; *PP then at the value (blanks skipped). Returns 0 or -1.
 */
static inline int
scan_key(struct json_scan *s, const char **pp, const char *e, int obj)
{
	const char	*p = *pp;
	int		 i;

	if (p == e || *p != '"')
		return scan_fail_at(s, p, e, p < e && (*p == '{' || *p == '[') ?
		    "expected a string key" : "unexpected character");
	if ((i = scan_string(s, &p, e, obj)) == -1)
		return -1;
	if (s->keys != NULL)
		s->keys[s->nkeys++] = i;
	p = scan_blanks(p, e);
	if (p == e || *p != ':')
		return scan_fail_at(s, p, e, "expected ':'");
	*pp = scan_blanks(p + 1, e);
	return 0;
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
scan_raw(const struct json_tok *t)
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
	const struct json_tok *ta = &s->tok[a], *tb = &s->tok[b];
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

/*
 * After the top value, which ends before P: the end of the document in
 * PREFIX mode, else only blanks may follow.
 */
static int
scan_end(struct json_scan *s, const char *p, const char *e)
{
	if (s->flags & JSON_SCAN_PREFIX) {
		s->len = (size_t)(p - s->b);
		return 0;
	}
	if ((p = scan_blanks(p, e)) == e)
		return 0;
	/* a second value, or what cannot start one */
	return scan_fail_at(s, p, e, strchr("{[\"-0123456789tfn", *p) != NULL ?
	    "data after the value" : "unexpected character");
}

/* Whether checked strings A and B decode to the same bytes. */
static inline bool
scan_str_same(const struct json_scan *s, int a, int b)
{
	const struct json_tok *ta = &s->tok[a], *tb = &s->tok[b];

	if (ta->size != tb->size)
		return false;
	if (scan_raw(ta) && scan_raw(tb))
		return memcmp(s->b + ta->start, s->b + tb->start,
		    (size_t)ta->size) == 0;
	return scan_str_cmp(s, a, b) == 0;
}

static void
scan_sift(struct json_scan *s, int *k, size_t root, size_t n)
{
	size_t		 child;
	int		 tmp;

	while ((child = 2 * root + 1) < n) {
		s->steps += 2;
		if (child + 1 < n && scan_str_cmp(s, k[child], k[child + 1]) < 0)
			child++;
		if (scan_str_cmp(s, k[root], k[child]) >= 0)
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
 * No two of one object's keys K[0..N) are the same. A few keys (a
 * request's usual lot) are compared pairwise; more are heap-sorted
 * (O(n log n) whatever the keys, no memory) and equal neighbours are
 * duplicates.
 */
static int
scan_dups(struct json_scan *s, int *k, size_t n)
{
	size_t		 i, j;
	int		 tmp;

	if (n <= 8) {
		s->steps += n * (n - 1) / 2;
		for (i = 1; i < n; i++)
			for (j = 0; j < i; j++)
				if (scan_str_same(s, k[j], k[i]))
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
	s->steps += n;
	for (i = 1; i < n; i++)
		if (scan_str_cmp(s, k[i - 1], k[i]) == 0)
			return scan_dup(s, k[i - 1], k[i]);
	return 0;
}

/*
 * Closes container I at P (its bracket): counts its last member or
 * element, checks an object's keys, and points it at its next sibling.
 * Returns its enclosing container (-1 at the top), or -2.
 */
static inline int
scan_close(struct json_scan *s, int i, const char *p)
{
	struct json_tok	*t = &s->tok[i];
	int		 up = t->parent, base;

	if (s->ntok > i + 1)
		t->size++;
	if (t->type == JSON_TOK_OBJECT && s->keys != NULL) {
		base = t->end;		/* scan_open() left it there */
		if (s->nkeys - base > 1 &&
		    scan_dups(s, s->keys + base, (size_t)(s->nkeys - base)) == -1)
			return -2;
		s->nkeys = base;
	}
	t->end = (int)(p - s->b) + 1;
	t->parent = s->ntok;
	return up;
}

/*
 * Opens the container at P in container PARENT; its index or -1. Its end
 * holds, while it is open, where its keys begin among the open objects'.
 */
static inline int
scan_open(struct json_scan *s, const char *p, int parent)
{
	int		 i;

	if ((i = scan_tok(s, *p == '{' ? JSON_TOK_OBJECT : JSON_TOK_ARRAY, p,
	    parent)) == -1)
		return -1;
	s->tok[i].size = 0;
	s->tok[i].end = s->nkeys;
	return i;
}

/*
 * The document: a value, then what follows it (a ',' and the next value,
 * or the closing brackets of the containers it ends), until the top one
 * closes. CUR is the innermost open container, OBJ whether it is an
 * object, DEPTH how many are open.
 */
static int
scan_doc(struct json_scan *s)
{
	const char	*p, *e = s->b + s->len, *comma;
	int		 cur = -1, depth = 0, i;
	bool		 obj = false;

	p = scan_blanks(s->b, e);
	if (p == e || (*p != '{' && *p != '['))
		return scan_fail_at(s, p, e, "expected '{' or '['");
	for (;;) {
		/* a value at P: jansson counts scalars in the depth too */
		if (depth >= JSON_MAX_DEPTH)
			return scan_fail(s, "nesting too deep",
			    (size_t)(p - s->b));
		if (p == e)
			return scan_fail_at(s, p, e, NULL);
		switch (*p) {
		case '{':
		case '[':
			if ((i = scan_open(s, p, cur)) == -1)
				return -1;
			cur = i;
			depth++;
			obj = *p == '{';
			p = scan_blanks(p + 1, e);
			if (p < e && *p == (obj ? '}' : ']'))
				goto after;
			if (obj)
				goto key;
			continue;
		case '"':
			if (scan_string(s, &p, e, cur) == -1)
				return -1;
			break;
		default:
			if (scan_scalar(s, &p, e, cur) == -1)
				return -1;
		}
		p = scan_blanks(p, e);
after:
		/* after a value, blanks skipped: close what it ends */
		while (p < e && *p == (obj ? '}' : ']')) {
			if ((cur = scan_close(s, cur, p)) == -2)
				return -1;
			depth--;
			p++;
			if (cur == -1)
				return scan_end(s, p, e);
			obj = s->tok[cur].type == JSON_TOK_OBJECT;
			p = scan_blanks(p, e);
		}
		if (p == e || *p != ',')
			return scan_fail_at(s, p, e, p < e && (*p == '}' ||
			    *p == ']') ? "unexpected character" : "expected ','");
		s->tok[cur].size++;
		comma = p;
		p = scan_blanks(p + 1, e);
		if (p < e && (*p == '}' || *p == ']'))
			return scan_fail(s, "unexpected character",
			    (size_t)(comma - s->b));
		if (!obj)
			continue;
key:
		if (scan_key(s, &p, e, cur) == -1)
			return -1;
	}
}

int
json_scan_parse(struct json_scan *s, const char *b, size_t len,
    unsigned int flags)
{
	s->b = b;
	s->len = len;
	s->tok = s->tok_local;
	s->ntok = 0;
	s->cap = JSON_SCAN_LOCAL;
	s->keys = flags & JSON_SCAN_DUPS ? NULL : s->keys_local;
	s->nkeys = 0;
	s->steps = 0;
	s->err = NULL;
	s->errpos = 0;
	s->nomem = false;
	s->heap = NULL;
	s->flags = flags;
	if (len >= INT_MAX)
		return scan_fail(s, "too long", 0);
	if (scan_doc(s) == -1) {
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
	const struct json_tok *t = &s->tok[i];
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
	for (m = 0; m < nm; m++, key = json_next(s, key + 1)) {
		const struct json_tok *t = &s->tok[key];
		const char	*kb = s->b + t->start;
		size_t		 len = (size_t)t->size;

		/* a raw key is told from most names by its first byte */
		for (k = 0; k < n; k++)
			if (len == names[k].len && (!scan_raw(t) ? json_scan_str_eq(
			    s, key, names[k].s, len) : len == 0 || (*kb ==
			    names[k].s[0] && memcmp(kb, names[k].s, len) == 0))) {
				val[k] = key + 1;
				break;
			}
	}
}

void
json_scan_unescape(const struct json_scan *s, int i, char *out)
{
	const struct json_tok *t = &s->tok[i];
	const char	*p = s->b + t->start, *e = s->b + t->end;
	unsigned char	 u[4];
	size_t		 n;

	while (p < e) {
		n = scan_unit(&p, u);
		memcpy(out, u, n);
		out += n;
	}
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
