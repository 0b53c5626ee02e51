/*
 * Usage in responses, over the raw bytes (json_scan.h): a buffered
 * response's usage object, and the chunks of a streamed one. Read as the
 * gateway read them with jansson: duplicate keys allowed, the last one
 * counting.
 */
#include <string.h>

#include "infergate/admission.h"
#include "json_scan.h"

static const struct json_name count_names[] = {
	JSON_NAME("prompt_tokens"), JSON_NAME("completion_tokens"),
	JSON_NAME("total_tokens")
};

static const struct json_name event_names[] = {
	JSON_NAME("usage"), JSON_NAME("choices")
};

/* The counts of usage object U, as admit_read_usage() took them. */
static int
usage_read(const struct json_scan *s, int u, uint64_t *prompt,
    uint64_t *completion)
{
	int		 v[3];
	bool		 p, c, t;

	json_scan_members(s, u, count_names, 3, v);
	p = v[0] != -1 && json_kind(s, v[0]) == JSON_INT;
	c = v[1] != -1 && json_kind(s, v[1]) == JSON_INT;
	t = v[2] != -1 && json_kind(s, v[2]) == JSON_INT;
	if (!p && !t)
		return -1;
	*prompt = p ? (uint64_t)json_scan_int(s, v[0]) : 0;
	if (c)
		*completion = (uint64_t)json_scan_int(s, v[1]);
	else
		*completion = (t ? (uint64_t)json_scan_int(s, v[2]) : 0) -
		    *prompt;
	return 0;
}

/*
 * The fast path of ig_usage_parse, for the usage object every buffered
 * response ends with: one pass over a flat object of plain members
 * (printable ASCII keys without escapes; values that are non-negative
 * integers of at most 18 digits, null, true or false), which is a subset
 * of JSON where a single pass decides exactly as the strict scan would.
 * Returns 0 (counts found), -1 (such an object without them), or 1 for
 * anything else (nested details, strings, reals, escapes...): the strict
 * scan decides then.
 */
enum { UF_PROMPT, UF_COMPLETION, UF_TOTAL };

static bool
uf_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A plain key from its opening quote; P after its closing one, or NULL. */
static const char *
uf_key(const char *p, const char *e)
{
	for (p++; p < e; p++) {
		if (*p == '"')
			return p + 1;
		if (*p == '\\' || (unsigned char)*p < 0x20 ||
		    (unsigned char)*p > 0x7e)
			return NULL;
	}
	return NULL;
}

static int
usage_fast(const char *p, const char *e, uint64_t *prompt,
    uint64_t *completion)
{
	uint64_t	 v[3] = { 0, 0, 0 };
	bool		 has[3] = { false, false, false };
	const char	*k, *ke;
	int		 which;

	while (p < e && uf_blank(*p))
		p++;
	if (p == e || *p++ != '{')
		return 1;
	for (;;) {
		while (p < e && uf_blank(*p))
			p++;
		if (p < e && *p == '}' && !has[0] && !has[1] && !has[2])
			break;
		if (p == e || *p != '"')
			return 1;
		k = p + 1;
		if ((p = uf_key(p, e)) == NULL)
			return 1;
		ke = p - 1;
		which = ke - k == 13 && memcmp(k, "prompt_tokens", 13) == 0 ?
		    UF_PROMPT : ke - k == 17 && memcmp(k, "completion_tokens",
		    17) == 0 ? UF_COMPLETION : ke - k == 12 &&
		    memcmp(k, "total_tokens", 12) == 0 ? UF_TOTAL : -1;
		while (p < e && uf_blank(*p))
			p++;
		if (p == e || *p++ != ':')
			return 1;
		while (p < e && uf_blank(*p))
			p++;
		if (p == e)
			return 1;
		if (*p >= '0' && *p <= '9') {
			uint64_t n = 0;
			const char *d = p;

			for (; p < e && *p >= '0' && *p <= '9'; p++)
				n = n * 10 + (uint64_t)(*p - '0');
			/* 18 digits always fit; a leading zero, a fraction or
			 * an exponent is for the strict scan. */
			if (p - d > 18 || (*d == '0' && p - d > 1) ||
			    (p < e && (*p == '.' || *p == 'e' || *p == 'E')))
				return 1;
			if (which != -1) {
				v[which] = n;
				has[which] = true;
			}
		} else if (which != -1)
			return 1;	/* a count that is not a plain integer */
		else if (e - p >= 4 && memcmp(p, "null", 4) == 0)
			p += 4;
		else if (e - p >= 4 && memcmp(p, "true", 4) == 0)
			p += 4;
		else if (e - p >= 5 && memcmp(p, "false", 5) == 0)
			p += 5;
		else
			return 1;
		while (p < e && uf_blank(*p))
			p++;
		if (p < e && *p == ',') {
			p++;
			continue;
		}
		if (p < e && *p == '}')
			break;
		return 1;
	}
	if (!has[UF_PROMPT] && !has[UF_TOTAL])
		return -1;
	*prompt = v[UF_PROMPT];
	*completion = has[UF_COMPLETION] ? v[UF_COMPLETION] :
	    v[UF_TOTAL] - *prompt;
	return 0;
}

int
ig_usage_parse(const char *json, size_t len, uint64_t *prompt,
    uint64_t *completion)
{
	struct json_scan s;
	int		 rc;

	if ((rc = usage_fast(json, json + len, prompt, completion)) != 1)
		return rc;
	rc = -1;

	if (json_scan_parse(&s, json, len, JSON_SCAN_DUPS |
	    JSON_SCAN_PREFIX) == -1)
		return -1;
	if (json_kind(&s, 0) == JSON_OBJECT)
		rc = usage_read(&s, 0, prompt, completion);
	json_scan_free(&s);
	return rc;
}

int
ig_usage_event(const char *data, size_t len, struct ig_usage_event *ev)
{
	struct json_scan s;
	int		 v[2];

	memset(ev, 0, sizeof(*ev));
	if (json_scan_parse(&s, data, len, JSON_SCAN_DUPS) == -1)
		return -1;
	if (json_kind(&s, 0) == JSON_OBJECT) {
		json_scan_members(&s, 0, event_names, 2, v);
		if (v[0] != -1 && json_kind(&s, v[0]) == JSON_OBJECT) {
			ev->usage = true;
			ev->usage_known = usage_read(&s, v[0], &ev->prompt,
			    &ev->completion) == 0;
		}
		if (v[1] != -1 && json_kind(&s, v[1]) == JSON_ARRAY) {
			ev->choices = json_size(&s, v[1]) > 0;
			ev->no_choices = json_size(&s, v[1]) == 0;
		}
	}
	json_scan_free(&s);
	return 0;
}
