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

int
ig_usage_parse(const char *json, size_t len, uint64_t *prompt,
    uint64_t *completion)
{
	struct json_scan s;
	int		 rc = -1;

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
