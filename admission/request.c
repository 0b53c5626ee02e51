/*
 * Request parsing for routing and admission, over the raw body bytes
 * (json_scan.h), and the input token estimate. Only the fields admission
 * needs are read; the rest of the body is the backend's business and
 * passes through untouched.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "infergate/admission.h"
#include "json_scan.h"

/* The body's members we read, by index into request_names. */
enum {
	F_MODEL, F_STREAM, F_MESSAGES, F_PROMPT, F_INPUT, F_STREAM_OPTIONS,
	F_MAX_TOKENS, F_MAX_COMPLETION_TOKENS, F_CHOICES, F_BEST_OF, F_N
};

static const struct json_name request_names[F_N] = {
	JSON_NAME("model"), JSON_NAME("stream"), JSON_NAME("messages"),
	JSON_NAME("prompt"), JSON_NAME("input"), JSON_NAME("stream_options"),
	JSON_NAME("max_tokens"), JSON_NAME("max_completion_tokens"),
	JSON_NAME("n"), JSON_NAME("best_of"),
};

static const struct json_name message_names[] = {
	JSON_NAME("role"), JSON_NAME("content")
};
static const struct json_name part_names[] = {
	JSON_NAME("type"), JSON_NAME("text")
};
static const struct json_name usage_names[] = {
	JSON_NAME("include_usage")
};

/* One body being read. */
struct request_scan {
	struct json_scan js;
	int		 f[F_N];	/* the members' value tokens, -1 */
	int		 include_usage;	/* stream_options.include_usage, -1 */
};

static int
request_fail(struct ig_request_error *err, const char *code, bool admission,
    const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int
request_fail(struct ig_request_error *err, const char *code, bool admission,
    const char *param, const char *fmt, ...)
{
	va_list		 ap;

	err->code = code;
	err->admission = admission;
	snprintf(err->param, sizeof(err->param), "%s", param);
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -1;
}

/* admission's refusals: invalid_value, answered only with a tenant */
#define request_refuse(err, param, ...) \
	request_fail(err, "invalid_value", true, param, __VA_ARGS__)

static bool
request_is(const struct json_scan *s, int i, enum json_kind k)
{
	return i != -1 && json_kind(s, i) == k;
}

static bool
request_absent(const struct json_scan *s, int i)
{
	return i == -1 || json_kind(s, i) == JSON_NULL;
}

/* The body is JSON, an object. */
static int
request_json(struct json_scan *s, const char *body, size_t len,
    struct ig_request_error *err)
{
	if (len == 0)
		return request_fail(err, "invalid_json", false, "",
		    "the request body must be a JSON object");
	if (json_scan_parse(s, body, len, 0) == -1) {
		if (s->nomem)
			return request_fail(err, NULL, false, "",
			    "out of memory");
		return request_fail(err, "invalid_json", false, "",
		    "invalid JSON body: %s at byte %zu", s->err, s->errpos);
	}
	if (json_kind(s, 0) != JSON_OBJECT) {
		json_scan_free(s);
		return request_fail(err, "invalid_json", false, "",
		    "invalid JSON body: not an object");
	}
	return 0;
}

static struct ig_span
request_span(const struct json_scan *s, int i)
{
	struct ig_span	 sp = { 0, 0 };

	if (i != -1) {
		sp.off = json_begin(s, i);
		sp.len = json_end(s, i) - sp.off;
	}
	return sp;
}

/* "model": present, a string, decoded (in place when it can be). */
static int
request_model(const struct request_scan *rs, struct ig_request_info *req,
    struct ig_request_error *err)
{
	const struct json_scan *s = &rs->js;
	int		 m = rs->f[F_MODEL];

	if (m == -1)
		return request_fail(err, "missing_required_parameter", false,
		    "model", "you must provide a model parameter");
	if (json_kind(s, m) != JSON_STRING)
		return request_fail(err, "invalid_type", false, "model",
		    "'model' must be a string");
	req->model_len = json_size(s, m);
	req->at_model = request_span(s, m);
	if (req->model_len == req->at_model.len - 2) {
		req->model = s->b + req->at_model.off + 1;
		return 0;
	}
	if (req->model_len > IG_MODEL_MAX)
		return request_fail(err, "invalid_value", false, "model",
		    "'model' is too long");
	json_scan_unescape(s, m, req->model_buf);
	req->model_buf[req->model_len] = '\0';
	req->model = req->model_buf;
	return 0;
}

static int
request_stream(const struct request_scan *rs, struct ig_request_info *req,
    struct ig_request_error *err)
{
	const struct json_scan *s = &rs->js;
	int		 v = rs->f[F_STREAM];

	if (!request_absent(s, v) && !request_is(s, v, JSON_TRUE) &&
	    !request_is(s, v, JSON_FALSE))
		return request_fail(err, "invalid_type", false, "stream",
		    "'stream' must be a boolean");
	req->stream = request_is(s, v, JSON_TRUE) &&
	    req->endpoint != IG_EP_EMBEDDINGS;
	return 0;
}

/* Where ig_request_edit() will change the body. */
static void
request_layout(struct request_scan *rs, struct ig_request_info *req)
{
	const struct json_scan *s = &rs->js;
	int		 so = rs->f[F_STREAM_OPTIONS];

	req->at_max_tokens = request_span(s, rs->f[F_MAX_TOKENS]);
	req->at_max_completion_tokens =
	    request_span(s, rs->f[F_MAX_COMPLETION_TOKENS]);
	req->at_stream_options = request_span(s, so);
	rs->include_usage = -1;
	if (request_is(s, so, JSON_OBJECT)) {
		json_scan_members(s, so, usage_names, 1, &rs->include_usage);
		req->at_include_usage = request_span(s, rs->include_usage);
		req->stream_options_empty = json_size(s, so) == 0;
	}
	req->close = json_end(s, 0) - 1;
	req->empty = json_size(s, 0) == 0;
}

/* One chat message's content: a string, null, or an array of parts. */
static int
request_content(const struct json_scan *s, int c, size_t i,
    struct ig_request_info *req, struct ig_request_error *err)
{
	char		 param[96];
	int		 part, v[2] = { -1, -1 };
	size_t		 j, n;

	if (request_absent(s, c))
		return 0;	/* assistant turns with tool_calls */
	if (json_kind(s, c) == JSON_STRING) {
		req->prompt_bytes += json_size(s, c);
		return 0;
	}
	snprintf(param, sizeof(param), "messages[%zu].content", i);
	if (json_kind(s, c) != JSON_ARRAY)
		return request_refuse(err, param,
		    "'%s' must be a string or an array of content parts", param);
	n = json_size(s, c);
	for (j = 0, part = c + 1; j < n; j++, part = json_next(s, part)) {
		if (json_kind(s, part) == JSON_OBJECT)
			json_scan_members(s, part, part_names, 2, v);
		if (json_kind(s, part) != JSON_OBJECT ||
		    !request_is(s, v[0], JSON_STRING)) {
			snprintf(param, sizeof(param),
			    "messages[%zu].content[%zu]", i, j);
			return request_refuse(err, param,
			    "'%s' must be an object with a 'type'", param);
		}
		if (!json_scan_str_eq(s, v[0], "text", 4))
			continue;	/* images, audio: settled by usage */
		if (!request_is(s, v[1], JSON_STRING)) {
			snprintf(param, sizeof(param),
			    "messages[%zu].content[%zu].text", i, j);
			return request_refuse(err, param,
			    "'%s' must be a string", param);
		}
		req->prompt_bytes += json_size(s, v[1]);
	}
	return 0;
}

static int
request_messages(const struct json_scan *s, int msgs,
    struct ig_request_info *req, struct ig_request_error *err)
{
	char		 param[96];
	int		 m, v[2];
	size_t		 i, n;

	if (!request_is(s, msgs, JSON_ARRAY) || json_size(s, msgs) == 0)
		return request_refuse(err, "messages",
		    "'messages' must be a non-empty array");
	n = json_size(s, msgs);
	for (i = 0, m = msgs + 1; i < n; i++, m = json_next(s, m)) {
		if (json_kind(s, m) != JSON_OBJECT) {
			snprintf(param, sizeof(param), "messages[%zu]", i);
			return request_refuse(err, param,
			    "'%s' must be an object", param);
		}
		json_scan_members(s, m, message_names, 2, v);
		if (!request_is(s, v[0], JSON_STRING)) {
			snprintf(param, sizeof(param), "messages[%zu].role", i);
			return request_refuse(err, param,
			    "'%s' must be a string", param);
		}
		if (request_content(s, v[1], i, req, err) == -1)
			return -1;
		req->messages++;
	}
	return 0;
}

/* A token id list: an array of non-negative integers. */
static bool
request_token_ids(const struct json_scan *s, int a)
{
	size_t		 i, n = json_size(s, a);
	int		 v;

	for (i = 0, v = a + 1; i < n; i++, v = json_next(s, v))
		if (json_kind(s, v) != JSON_INT || json_scan_int(s, v) < 0)
			return false;
	return true;
}

/*
 * `prompt` (completions) or `input` (embeddings): a string, an array of
 * strings, an array of token ids, or an array of token id arrays.
 */
static int
request_prompt(const struct json_scan *s, int p, const char *name,
    struct ig_request_info *req, struct ig_request_error *err)
{
	char		 param[96];
	size_t		 i, n;
	int		 v;

	if (request_is(s, p, JSON_STRING)) {
		req->prompt_bytes += json_size(s, p);
		return 0;
	}
	if (!request_is(s, p, JSON_ARRAY) || json_size(s, p) == 0)
		return request_refuse(err, name, "'%s' must be a string or a "
		    "non-empty array", name);
	n = json_size(s, p);
	if (request_token_ids(s, p)) {
		req->prompt_token_ids += n;
		return 0;
	}
	for (i = 0, v = p + 1; i < n; i++, v = json_next(s, v)) {
		if (json_kind(s, v) == JSON_STRING)
			req->prompt_bytes += json_size(s, v);
		else if (json_kind(s, v) == JSON_ARRAY && request_token_ids(s, v))
			req->prompt_token_ids += json_size(s, v);
		else {
			snprintf(param, sizeof(param), "%s[%zu]", name, i);
			return request_refuse(err, param, "'%s' must be a string "
			    "or an array of token ids", param);
		}
	}
	return 0;
}

static int
request_stream_options(const struct request_scan *rs,
    struct ig_request_info *req, struct ig_request_error *err)
{
	const struct json_scan *s = &rs->js;
	int		 so = rs->f[F_STREAM_OPTIONS], iu = rs->include_usage;

	if (request_absent(s, so))
		return 0;
	if (json_kind(s, so) != JSON_OBJECT)
		return request_refuse(err, "stream_options",
		    "'stream_options' must be an object");
	if (!request_absent(s, iu) && !request_is(s, iu, JSON_TRUE) &&
	    !request_is(s, iu, JSON_FALSE))
		return request_refuse(err, "stream_options.include_usage",
		    "'stream_options.include_usage' must be a boolean");
	req->client_usage = request_is(s, iu, JSON_TRUE);
	return 0;
}

/* A token cap: a positive integer, or null/absent (returns 0, *has 0). */
static int
request_cap(const struct json_scan *s, int v, const char *name, bool *has,
    uint64_t *cap, struct ig_request_error *err)
{
	*has = false;
	if (request_absent(s, v))
		return 0;
	if (json_kind(s, v) != JSON_INT || json_scan_int(s, v) < 1)
		return request_refuse(err, name, "'%s' must be a positive integer",
		    name);
	*has = true;
	*cap = (uint64_t)json_scan_int(s, v);
	return 0;
}

/* A choice count ("n", "best_of"): 1..IG_CHOICES_MAX or null/absent. */
static int
request_choices(const struct json_scan *s, int v, const char *name,
    uint64_t *choices, struct ig_request_error *err)
{
	if (request_absent(s, v))
		return 0;
	if (json_kind(s, v) != JSON_INT || json_scan_int(s, v) < 1 ||
	    json_scan_int(s, v) > IG_CHOICES_MAX)
		return request_refuse(err, name, "'%s' must be an integer from 1 "
		    "to %d", name, IG_CHOICES_MAX);
	if ((uint64_t)json_scan_int(s, v) > *choices)
		*choices = (uint64_t)json_scan_int(s, v);
	return 0;
}

static int
request_caps(const struct request_scan *rs, struct ig_request_info *req,
    struct ig_request_error *err)
{
	bool		 has_mt, has_mct = false;
	uint64_t	 mt = 0, mct = 0;

	req->choices = 1;
	if (request_choices(&rs->js, rs->f[F_CHOICES], "n", &req->choices,
	    err) == -1 || (req->endpoint == IG_EP_COMPLETIONS &&
	    request_choices(&rs->js, rs->f[F_BEST_OF], "best_of",
	    &req->choices, err) == -1))
		return -1;

	if (request_cap(&rs->js, rs->f[F_MAX_TOKENS], "max_tokens", &has_mt,
	    &mt, err) == -1)
		return -1;
	if (req->endpoint == IG_EP_CHAT && request_cap(&rs->js,
	    rs->f[F_MAX_COMPLETION_TOKENS], "max_completion_tokens", &has_mct,
	    &mct, err) == -1)
		return -1;
	/* Both sent: backends differ on which wins; reserve the larger. */
	if (has_mct) {
		req->max_field = IG_MAX_COMPLETION_TOKENS;
		req->max_tokens = mct > mt ? mct : mt;
	} else if (has_mt) {
		req->max_field = IG_MAX_TOKENS;
		req->max_tokens = mt;
	}
	return 0;
}

/* Admission's checks, in the order the jansson version made them. */
static int
request_admission(const struct request_scan *rs, struct ig_request_info *req,
    struct ig_request_error *err)
{
	const struct json_scan *s = &rs->js;

	if (req->model_len == 0)
		return request_refuse(err, "model",
		    "you must provide a model parameter");
	switch (req->endpoint) {
	case IG_EP_CHAT:
		if (request_messages(s, rs->f[F_MESSAGES], req, err) == -1)
			return -1;
		break;
	case IG_EP_COMPLETIONS:
		if (request_prompt(s, rs->f[F_PROMPT], "prompt", req, err) == -1)
			return -1;
		break;
	case IG_EP_EMBEDDINGS:
		return request_prompt(s, rs->f[F_INPUT], "input", req, err);
	}
	if (request_stream_options(rs, req, err) == -1)
		return -1;
	return request_caps(rs, req, err);
}

int
ig_request_parse(const char *body, size_t len, enum ig_endpoint ep,
    struct ig_request_info *req, struct ig_request_error *err)
{
	struct request_scan rs;
	int		 rc = -1;

	memset(req, 0, offsetof(struct ig_request_info, model_buf));
	req->model_buf[0] = '\0';
	err->code = NULL;
	err->admission = false;
	err->param[0] = err->message[0] = '\0';
	req->endpoint = ep;
	if (request_json(&rs.js, body, len, err) == -1)
		return -1;
	json_scan_members(&rs.js, 0, request_names, F_N, rs.f);
	if (request_model(&rs, req, err) == -1 ||
	    request_stream(&rs, req, err) == -1)
		goto done;
	request_layout(&rs, req);
	rc = request_admission(&rs, req, err);
done:
	json_scan_free(&rs.js);
	return rc;
}

uint64_t
ig_request_estimate_input(const struct ig_request_info *req,
    const struct ig_model_conf *model)
{
	double		 bpt = model != NULL ? model->bytes_per_token : 0;
	uint64_t	 per_msg = model != NULL ? model->tokens_per_message : 0;

	if (!(bpt > 0))
		bpt = 4;
	return (uint64_t)ceil((double)req->prompt_bytes / bpt) +
	    per_msg * req->messages + req->prompt_token_ids;
}
