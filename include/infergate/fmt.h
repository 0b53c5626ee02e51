/*
 * infergate: bounded text building without printf, for the request path
 * (response heads, upstream heads, rate-limit headers), where snprintf's
 * format interpretation costs more than the rest of the formatting.
 *
 *   char buf[256];
 *   struct ig_fmt f = IG_FMT_INIT(buf, sizeof(buf));
 *   ig_fmt_cstr(&f, "Content-Length: ");
 *   ig_fmt_u64(&f, len);
 *   ig_fmt_lit(&f, "\r\n");
 *   if (f.overflow) ...;            f.len bytes at buf, NUL-terminated
 *
 * Appends that do not fit set `overflow` and write nothing; the text is
 * always NUL-terminated within the buffer.
 */
#ifndef INFERGATE_FMT_H
#define INFERGATE_FMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct ig_fmt {
	char		*buf;
	size_t		 len;
	size_t		 cap;		/* including the NUL */
	bool		 overflow;
};

#define IG_FMT_INIT(b, n)	{ (b), 0, (n), false }

static inline void
ig_fmt_mem(struct ig_fmt *f, const void *s, size_t n)
{
	if (f->overflow || f->len + n >= f->cap) {
		f->overflow = true;
		return;
	}
	memcpy(f->buf + f->len, s, n);
	f->len += n;
	f->buf[f->len] = '\0';
}

static inline void
ig_fmt_cstr(struct ig_fmt *f, const char *s)
{
	ig_fmt_mem(f, s, strlen(s));
}

/* A string literal: its length is known at compile time. */
#define ig_fmt_lit(f, s)	ig_fmt_mem((f), (s), sizeof(s) - 1)

/* The decimal digits of V into P (room for 20); returns how many. */
static inline size_t
ig_u64_digits(char *p, uint64_t v)
{
	char		 tmp[20];
	size_t		 n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	for (i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

/* Two digits at a time: the rate-limit headers carry a dozen numbers. */
static inline void
ig_fmt_u64(struct ig_fmt *f, uint64_t v)
{
	static const char pairs[] =
	    "00010203040506070809101112131415161718192021222324"
	    "25262728293031323334353637383940414243444546474849"
	    "50515253545556575859606162636465666768697071727374"
	    "75767778798081828384858687888990919293949596979899";
	char		 d[20];
	size_t		 n = sizeof(d), i;

	while (v >= 100) {
		i = (size_t)(v % 100) * 2;
		v /= 100;
		d[--n] = pairs[i + 1];
		d[--n] = pairs[i];
	}
	if (v >= 10) {
		d[--n] = pairs[v * 2 + 1];
		d[--n] = pairs[v * 2];
	} else
		d[--n] = (char)('0' + v);
	ig_fmt_mem(f, d + n, sizeof(d) - n);
}

/* V in lowercase hexadecimal, without leading zeros. */
static inline void
ig_fmt_hex(struct ig_fmt *f, uint64_t v)
{
	char		 d[16];
	size_t		 n = sizeof(d);

	do {
		d[--n] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v != 0);
	ig_fmt_mem(f, d + n, sizeof(d) - n);
}

#endif
