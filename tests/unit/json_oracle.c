/*
 * The jansson reference (json_oracle.h).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_oracle.h"

static int
oracle_fail(struct ig_request_error *err, const char *code, const char *param,
    const char *message)
{
	err->code = code;
	err->admission = false;
	snprintf(err->param, sizeof(err->param), "%s", param);
	snprintf(err->message, sizeof(err->message), "%s", message);
	return -1;
}

/*
 * json_loadb() except for one quirk the scanner does not copy: jansson
 * drops a NUL byte right after a number or a literal (its stream reader
 * takes the NUL it put back for the byte after the token as "nothing
 * buffered" and reads on), so that [1\0] passes. The scanner refuses
 * every NUL byte.
 */
static json_t *
oracle_load(const char *b, size_t len, size_t flags)
{
	json_error_t	 e;
	json_t		*j = json_loadb(b, len, flags, &e);

	/* e.position: the bytes read, the dropped NULs not counted */
	if (j != NULL && memchr(b, '\0', (size_t)e.position) != NULL) {
		json_decref(j);
		return NULL;
	}
	return j;
}

bool
oracle_accepts(const char *body, size_t len)
{
	json_t		*j = oracle_load(body, len, JSON_REJECT_DUPLICATES);
	bool		 ok = json_is_object(j);

	json_decref(j);
	return ok;
}

int
oracle_parse(const char *body, size_t len, enum ig_endpoint ep,
    struct ig_request_info *req, struct ig_request_error *err, json_t **tree)
{
	json_t		*j, *model, *stream;
	int		 rc;

	memset(req, 0, sizeof(*req));
	memset(err, 0, sizeof(*err));
	req->endpoint = ep;
	*tree = NULL;
	/* gateway/proxy.c, proxy_request() */
	if (len == 0)
		return oracle_fail(err, "invalid_json", "",
		    "the request body must be a JSON object");
	j = oracle_load(body, len, JSON_REJECT_DUPLICATES);
	if (j == NULL || !json_is_object(j)) {
		rc = oracle_fail(err, "invalid_json", "", j != NULL ?
		    "invalid JSON body: not an object" : "invalid JSON body: ");
		json_decref(j);
		return rc;
	}
	*tree = j;
	model = json_object_get(j, "model");
	if (!json_is_string(model))
		return oracle_fail(err, model ? "invalid_type" :
		    "missing_required_parameter", "model", model ?
		    "'model' must be a string" :
		    "you must provide a model parameter");
	stream = json_object_get(j, "stream");
	if (stream != NULL && !json_is_boolean(stream) && !json_is_null(stream))
		return oracle_fail(err, "invalid_type", "stream",
		    "'stream' must be a boolean");
	/* gateway/admit.c, admit_start() */
	rc = ig_request_parse_json(j, ep, req, err);
	req->model = json_string_value(model);
	req->model_len = json_string_length(model);
	req->stream = json_is_true(stream) && ep != IG_EP_EMBEDDINGS;
	return rc;
}

static bool
oracle_same_error(const struct ig_request_error *a,
    const struct ig_request_error *b)
{
	static const char invalid[] = "invalid JSON body: ";

	if ((a->code == NULL) != (b->code == NULL) ||
	    (a->code != NULL && strcmp(a->code, b->code) != 0) ||
	    a->admission != b->admission || strcmp(a->param, b->param) != 0)
		return false;
	/* jansson's own texts differ from the scanner's */
	if (strcmp(b->message, invalid) == 0)
		return strncmp(a->message, invalid, sizeof(invalid) - 1) == 0 &&
		    strcmp(a->message, "invalid JSON body: not an object") != 0;
	return strcmp(a->message, b->message) == 0;
}

static bool
oracle_same_info(const struct ig_request_info *a,
    const struct ig_request_info *b)
{
	return a->endpoint == b->endpoint && a->stream == b->stream &&
	    a->max_field == b->max_field && a->max_tokens == b->max_tokens &&
	    a->choices == b->choices &&
	    a->client_usage == b->client_usage &&
	    a->prompt_bytes == b->prompt_bytes &&
	    a->prompt_token_ids == b->prompt_token_ids &&
	    a->messages == b->messages;
}

static char *
oracle_join(const struct ig_request_body *out)
{
	char		*s = malloc(out->len + 1);
	size_t		 i, n = 0;

	if (s == NULL)
		abort();
	for (i = 0; i < out->npieces; i++) {
		memcpy(s + n, out->piece[i].p, out->piece[i].len);
		n += out->piece[i].len;
	}
	s[n] = '\0';
	return n == out->len ? s : (free(s), NULL);
}

/* TREE edited by jansson and BODY spliced agree on EDITS. */
static const char *
oracle_check_edit(const char *body, size_t len, json_t *tree,
    const struct ig_request_info *req, const struct ig_request_info *oreq,
    const struct ig_request_edits *edits)
{
	struct ig_request_body out;
	json_t		*want = json_deep_copy(tree), *got;
	const char	*what = NULL;
	char		*s;

	if (edits->model != NULL)
		json_object_set_new(want, "model", json_stringn(edits->model,
		    edits->model_len));
	if (edits->set_max_tokens)
		ig_request_set_max_tokens_json(want, oreq, edits->max_tokens);
	if (edits->force_usage)
		ig_request_force_usage_json(want, oreq);
	if (ig_request_edit(body, len, req, edits, &out) == -1) {
		json_decref(want);
		return "ig_request_edit failed";
	}
	if (out.npieces > IG_SPLICE_MAX)
		what = "too many pieces";
	else if ((s = oracle_join(&out)) == NULL)
		what = "pieces do not add up to len";
	else {
		got = json_loadb(s, out.len, JSON_REJECT_DUPLICATES, NULL);
		if (got == NULL)
			what = "edited body is not valid JSON";
		else if (!json_equal(got, want))
			what = "edited body differs from jansson's";
		else if (edits->model == NULL && !edits->set_max_tokens &&
		    !edits->force_usage && (out.npieces != 1 ||
		    out.piece[0].p != body))
			what = "no edit is not one piece";
		json_decref(got);
		free(s);
	}
	json_decref(want);
	return what;
}

static const char *
oracle_check_edits(const char *body, size_t len, json_t *tree,
    const struct ig_request_info *req, const struct ig_request_info *oreq,
    bool admission_error)
{
	static const char esc[] = "up\"st\\re\x01\nam-\xc3\xa9";
	const struct ig_request_edits sets[] = {
		{ NULL, 0, false, 0, false },
		{ "upstream-model", 14, false, 0, false },
		{ esc, sizeof(esc) - 1, false, 0, false },
		{ NULL, 0, true, 100, false },
		{ NULL, 0, false, 0, true },
		{ "m", 1, true, 1ULL << 40, true },
		{ esc, sizeof(esc) - 1, true, 7, true },
	};
	const char	*what;
	size_t		 i;

	for (i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
		/* with a refusal of admission only the model is rewritten */
		if (admission_error && (sets[i].set_max_tokens ||
		    sets[i].force_usage))
			continue;
		if ((what = oracle_check_edit(body, len, tree, req, oreq,
		    &sets[i])) != NULL)
			return what;
	}
	return NULL;
}

const char *
oracle_check_request(const char *body, size_t len, enum ig_endpoint ep)
{
	struct ig_request_info req, oreq;
	struct ig_request_error err, oerr;
	const char	*what = NULL;
	json_t		*tree;
	int		 rc, orc;

	rc = ig_request_parse(body, len, ep, &req, &err);
	orc = oracle_parse(body, len, ep, &oreq, &oerr, &tree);
	/* a deliberate limit of the scanner: long escaped model names */
	if (rc == -1 && strcmp(err.message, "'model' is too long") == 0) {
		json_decref(tree);
		return req.model_len > IG_MODEL_MAX ? NULL : "model too long?";
	}
	if (rc != orc)
		what = rc == 0 ? "accepted, jansson refused" :
		    "refused, jansson accepted";
	else if (rc == -1 && !oracle_same_error(&err, &oerr))
		what = "not the same error";
	else if (rc == 0 && !oracle_same_info(&req, &oreq))
		what = "not the same info";
	else if ((rc == 0 || err.admission) && (req.model_len !=
	    oreq.model_len || memcmp(req.model, oreq.model, req.model_len) != 0 ||
	    req.stream != oreq.stream))
		what = "not the same model or stream";
	else if (rc == 0 || err.admission)
		what = oracle_check_edits(body, len, tree, &req, &oreq,
		    rc == -1);
	json_decref(tree);
	return what;
}

/* gateway/admit.c, admit_read_usage() */
static bool
oracle_read_usage(json_t *usage, uint64_t *prompt, uint64_t *completion)
{
	json_t		*p = json_object_get(usage, "prompt_tokens");
	json_t		*c = json_object_get(usage, "completion_tokens");
	json_t		*t = json_object_get(usage, "total_tokens");

	if (!json_is_integer(p) && !json_is_integer(t))
		return false;
	*prompt = json_is_integer(p) ? json_integer_value(p) : 0;
	if (json_is_integer(c))
		*completion = json_integer_value(c);
	else
		*completion = json_integer_value(t) - *prompt;
	return true;
}

const char *
oracle_check_usage(const char *data, size_t len)
{
	struct ig_usage_event ev;
	uint64_t	 p = 1, c = 2, op = 1, oc = 2;
	json_t		*o, *usage, *choices;
	bool		 known, oknown;
	const char	*what = NULL;

	/* admit_response_done(): the usage object, and what may follow */
	known = ig_usage_parse(data, len, &p, &c) == 0;
	o = oracle_load(data, len, JSON_DISABLE_EOF_CHECK);
	oknown = o != NULL && oracle_read_usage(o, &op, &oc);
	json_decref(o);
	if (known != oknown || p != op || c != oc)
		return "ig_usage_parse differs";
	/* admit_sse_event(): one chunk */
	o = oracle_load(data, len, 0);
	if ((ig_usage_event(data, len, &ev) == 0) != (o != NULL))
		what = "ig_usage_event: not the same JSON";
	usage = json_object_get(o, "usage");
	choices = json_object_get(o, "choices");
	op = oc = 0;
	oknown = json_is_object(usage) && oracle_read_usage(usage, &op, &oc);
	if (what == NULL && (ev.usage != json_is_object(usage) ||
	    ev.usage_known != oknown || (oknown && (ev.prompt != op ||
	    ev.completion != oc)) ||
	    ev.choices != (json_is_array(choices) && json_array_size(choices) > 0) ||
	    ev.no_choices != (json_is_array(choices) &&
	    json_array_size(choices) == 0)))
		what = "ig_usage_event differs";
	json_decref(o);
	return what;
}
