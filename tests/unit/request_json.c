/*
 * Transitional: admission's request parsing and the two body edits (the
 * output cap, stream usage) over a jansson tree, as they were before
 * request.c and request_edit.c scanned and spliced the raw bytes. Kept
 * while gateway/admit.c calls them, and as the reference the differential
 * test and the fuzzer hold the new functions to; move it under tests/ when
 * the gateway stops calling it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "infergate/admission.h"
#include "json_oracle.h"

static int
request_fail(struct ig_request_error *err, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
request_fail(struct ig_request_error *err, const char *param, const char *fmt, ...)
{
	va_list		 ap;

	err->code = "invalid_value";
	err->admission = true;
	snprintf(err->param, sizeof(err->param), "%s", param);
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -1;
}

/* A token cap: a positive integer, or null/absent (returns 0, *has 0). */
static int
request_cap(const json_t *body, const char *name, bool *has, uint64_t *v,
    struct ig_request_error *err)
{
	const json_t	*j = json_object_get(body, name);

	*has = false;
	if (j == NULL || json_is_null(j))
		return 0;
	if (!json_is_integer(j) || json_integer_value(j) < 1)
		return request_fail(err, name, "'%s' must be a positive integer",
		    name);
	*has = true;
	*v = (uint64_t)json_integer_value(j);
	return 0;
}

/* One chat message's content: a string, null, or an array of parts. */
static int
request_content(const json_t *content, size_t i, struct ig_request_info *req,
    struct ig_request_error *err)
{
	char		 param[96];
	const json_t	*part, *text;
	size_t		 j;

	if (content == NULL || json_is_null(content))
		return 0;	/* assistant turns with tool_calls */
	if (json_is_string(content)) {
		req->prompt_bytes += json_string_length(content);
		return 0;
	}
	snprintf(param, sizeof(param), "messages[%zu].content", i);
	if (!json_is_array(content))
		return request_fail(err, param,
		    "'%s' must be a string or an array of content parts", param);
	json_array_foreach(content, j, part) {
		snprintf(param, sizeof(param), "messages[%zu].content[%zu]", i, j);
		if (!json_is_object(part) ||
		    !json_is_string(json_object_get(part, "type")))
			return request_fail(err, param,
			    "'%s' must be an object with a 'type'", param);
		if (strcmp(json_string_value(json_object_get(part, "type")),
		    "text") != 0)
			continue;	/* images, audio: settled by usage */
		text = json_object_get(part, "text");
		if (!json_is_string(text)) {
			snprintf(param, sizeof(param),
			    "messages[%zu].content[%zu].text", i, j);
			return request_fail(err, param, "'%s' must be a string",
			    param);
		}
		req->prompt_bytes += json_string_length(text);
	}
	return 0;
}

static int
request_messages(const json_t *body, struct ig_request_info *req,
    struct ig_request_error *err)
{
	const json_t	*msgs = json_object_get(body, "messages"), *m;
	char		 param[96];
	size_t		 i;

	if (!json_is_array(msgs) || json_array_size(msgs) == 0)
		return request_fail(err, "messages",
		    "'messages' must be a non-empty array");
	json_array_foreach(msgs, i, m) {
		snprintf(param, sizeof(param), "messages[%zu]", i);
		if (!json_is_object(m))
			return request_fail(err, param, "'%s' must be an object",
			    param);
		if (!json_is_string(json_object_get(m, "role"))) {
			snprintf(param, sizeof(param), "messages[%zu].role", i);
			return request_fail(err, param, "'%s' must be a string",
			    param);
		}
		if (request_content(json_object_get(m, "content"), i, req, err) == -1)
			return -1;
		req->messages++;
	}
	return 0;
}

/* A token id list: an array of non-negative integers. */
static bool
request_token_ids(const json_t *a)
{
	const json_t	*v;
	size_t		 i;

	json_array_foreach(a, i, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return false;
	}
	return true;
}

/*
 * `prompt` (completions) or `input` (embeddings): a string, an array of
 * strings, an array of token ids, or an array of token id arrays.
 */
static int
request_prompt(const json_t *body, const char *name, struct ig_request_info *req,
    struct ig_request_error *err)
{
	const json_t	*p = json_object_get(body, name), *v;
	char		 param[96];
	size_t		 i;

	if (json_is_string(p)) {
		req->prompt_bytes += json_string_length(p);
		return 0;
	}
	if (!json_is_array(p) || json_array_size(p) == 0)
		return request_fail(err, name, "'%s' must be a string or a "
		    "non-empty array", name);
	if (request_token_ids(p)) {
		req->prompt_token_ids += json_array_size(p);
		return 0;
	}
	json_array_foreach(p, i, v) {
		if (json_is_string(v))
			req->prompt_bytes += json_string_length(v);
		else if (json_is_array(v) && request_token_ids(v))
			req->prompt_token_ids += json_array_size(v);
		else {
			snprintf(param, sizeof(param), "%s[%zu]", name, i);
			return request_fail(err, param, "'%s' must be a string or "
			    "an array of token ids", param);
		}
	}
	return 0;
}

static int
request_stream(const json_t *body, struct ig_request_info *req,
    struct ig_request_error *err)
{
	const json_t	*s = json_object_get(body, "stream"), *so, *iu;

	if (s != NULL && !json_is_null(s)) {
		if (!json_is_boolean(s))
			return request_fail(err, "stream",
			    "'stream' must be a boolean");
		req->stream = json_is_true(s);
	}
	so = json_object_get(body, "stream_options");
	if (so == NULL || json_is_null(so))
		return 0;
	if (!json_is_object(so))
		return request_fail(err, "stream_options",
		    "'stream_options' must be an object");
	iu = json_object_get(so, "include_usage");
	if (iu != NULL && !json_is_null(iu) && !json_is_boolean(iu))
		return request_fail(err, "stream_options.include_usage",
		    "'stream_options.include_usage' must be a boolean");
	req->client_usage = json_is_true(iu);
	return 0;
}

/* A choice count ("n", "best_of"): 1..IG_CHOICES_MAX or null/absent. */
static int
request_choices(const json_t *body, const char *name, uint64_t *choices,
    struct ig_request_error *err)
{
	const json_t	*j = json_object_get(body, name);

	if (j == NULL || json_is_null(j))
		return 0;
	if (!json_is_integer(j) || json_integer_value(j) < 1 ||
	    json_integer_value(j) > IG_CHOICES_MAX)
		return request_fail(err, name, "'%s' must be an integer from 1 "
		    "to %d", name, IG_CHOICES_MAX);
	if ((uint64_t)json_integer_value(j) > *choices)
		*choices = (uint64_t)json_integer_value(j);
	return 0;
}

static int
request_caps(const json_t *body, struct ig_request_info *req,
    struct ig_request_error *err)
{
	bool		 has_mt, has_mct = false;
	uint64_t	 mt = 0, mct = 0;

	req->choices = 1;
	if (request_choices(body, "n", &req->choices, err) == -1 ||
	    (req->endpoint == IG_EP_COMPLETIONS &&
	    request_choices(body, "best_of", &req->choices, err) == -1))
		return -1;

	if (request_cap(body, "max_tokens", &has_mt, &mt, err) == -1)
		return -1;
	if (req->endpoint == IG_EP_CHAT &&
	    request_cap(body, "max_completion_tokens", &has_mct, &mct, err) == -1)
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

int
ig_request_parse_json(const json_t *body, enum ig_endpoint ep,
    struct ig_request_info *req, struct ig_request_error *err)
{
	const json_t	*model;

	memset(req, 0, sizeof(*req));
	memset(err, 0, sizeof(*err));
	req->endpoint = ep;
	if (!json_is_object(body))
		return request_fail(err, "", "the request body must be a JSON object");
	model = json_object_get(body, "model");
	if (!json_is_string(model) || json_string_length(model) == 0)
		return request_fail(err, "model",
		    "you must provide a model parameter");
	req->model = json_string_value(model);
	req->model_len = json_string_length(model);
	switch (ep) {
	case IG_EP_CHAT:
		if (request_messages(body, req, err) == -1)
			return -1;
		break;
	case IG_EP_COMPLETIONS:
		if (request_prompt(body, "prompt", req, err) == -1)
			return -1;
		break;
	case IG_EP_EMBEDDINGS:
		return request_prompt(body, "input", req, err);
	}
	if (request_stream(body, req, err) == -1)
		return -1;
	return request_caps(body, req, err);
}

int
ig_request_set_max_tokens_json(json_t *body, const struct ig_request_info *req,
    uint64_t max_tokens)
{
	json_t		*v;

	if (req->endpoint == IG_EP_EMBEDDINGS)
		return 0;
	if (req->max_field == IG_MAX_COMPLETION_TOKENS) {
		v = json_integer((json_int_t)max_tokens);
		if (json_object_set_new(body, "max_completion_tokens", v) == -1)
			return -1;
		/* A max_tokens sent beside it must not exceed the cap either. */
		v = json_object_get(body, "max_tokens");
		if (v == NULL || json_is_null(v))
			return 0;
	}
	return json_object_set_new(body, "max_tokens",
	    json_integer((json_int_t)max_tokens));
}

int
ig_request_force_usage_json(json_t *body, const struct ig_request_info *req)
{
	json_t		*so;

	if (!req->stream || req->endpoint == IG_EP_EMBEDDINGS)
		return 0;
	so = json_object_get(body, "stream_options");
	if (!json_is_object(so)) {
		if ((so = json_object()) == NULL ||
		    json_object_set_new(body, "stream_options", so) == -1)
			return -1;
	}
	return json_object_set_new(so, "include_usage", json_true());
}
