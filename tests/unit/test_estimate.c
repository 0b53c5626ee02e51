/*
 * Request parsing, the input token estimate and the body edits
 * (admission/request.c, request_edit.c), as tables; test_request.c has
 * the scanner's own cases and the comparison with jansson.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "infergate/admission.h"

static int
parse(const char *text, enum ig_endpoint ep, struct ig_request_info *req,
    struct ig_request_error *err)
{
	return ig_request_parse(text, strlen(text), ep, req, err);
}

struct est_case {
	enum ig_endpoint ep;
	const char	*body;
	uint64_t	 bytes, ids, messages, input;	/* input at 4 B/token, 3/msg */
	enum ig_max_field field;
	uint64_t	 max_tokens;
	bool		 stream, usage;
};

static const struct est_case est_cases[] = {
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"hello world!\"}]}", 12, 0, 1, 3 + 3,
	    IG_MAX_NONE, 0, false, false },
	/* 13 bytes at 4 per token round up to 4 */
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"system\","
	    "\"content\":\"hello world!!\"},{\"role\":\"user\",\"content\":"
	    "[{\"type\":\"text\",\"text\":\"abcd\"},{\"type\":\"image_url\","
	    "\"image_url\":{\"url\":\"http://x\"}}]},{\"role\":\"assistant\","
	    "\"content\":null}],\"max_tokens\":50}", 17, 0, 3, 5 + 9,
	    IG_MAX_TOKENS, 50, false, false },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"\"}],\"max_completion_tokens\":7,\"stream\":true,"
	    "\"stream_options\":{\"include_usage\":true}}", 0, 0, 1, 3,
	    IG_MAX_COMPLETION_TOKENS, 7, true, true },
	/* both caps: the larger is reserved */
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"x\"}],\"max_completion_tokens\":7,\"max_tokens\":9,"
	    "\"stream\":false,\"max_tokens_x\":1}", 1, 0, 1, 4,
	    IG_MAX_COMPLETION_TOKENS, 9, false, false },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"12345678\","
	    "\"max_tokens\":null,\"stream\":true}", 8, 0, 0, 2,
	    IG_MAX_NONE, 0, true, false },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[\"1234\",\"12345\"],"
	    "\"max_tokens\":3}", 9, 0, 0, 3, IG_MAX_TOKENS, 3, false, false },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[1,2,3]}", 0, 3, 0, 3,
	    IG_MAX_NONE, 0, false, false },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[[1,2],[3],\"abcd\"]}",
	    4, 3, 0, 4, IG_MAX_NONE, 0, false, false },
	{ IG_EP_EMBEDDINGS, "{\"model\":\"m\",\"input\":\"abcdefgh\"}", 8, 0, 0,
	    2, IG_MAX_NONE, 0, false, false },
	{ IG_EP_EMBEDDINGS, "{\"model\":\"m\",\"input\":[\"ab\",\"cd\"]}", 4, 0,
	    0, 1, IG_MAX_NONE, 0, false, false },
};

static void
test_estimate_table(void **state)
{
	struct ig_model_conf model = { .bytes_per_token = 4,
	    .tokens_per_message = 3 };
	struct ig_request_info req;
	struct ig_request_error err;
	size_t		 i;

	for (i = 0; i < sizeof(est_cases) / sizeof(est_cases[0]); i++) {
		const struct est_case *c = &est_cases[i];

		if (parse(c->body, c->ep, &req, &err) != 0)
			fail_msg("case %zu: %s: %s", i, err.param, err.message);
		assert_int_equal(req.model_len, 1);
		assert_memory_equal(req.model, "m", 1);
		assert_int_equal(req.prompt_bytes, c->bytes);
		assert_int_equal(req.prompt_token_ids, c->ids);
		assert_int_equal(req.messages, c->messages);
		assert_int_equal(ig_request_estimate_input(&req, &model), c->input);
		assert_int_equal(req.max_field, c->field);
		assert_int_equal(req.max_tokens, c->max_tokens);
		assert_int_equal(req.stream, c->stream);
		assert_int_equal(req.client_usage, c->usage);
	}
}

static void
test_estimate_rule(void **state)
{
	struct ig_request_info req = { .prompt_bytes = 10, .messages = 2 };
	struct ig_model_conf m = { .bytes_per_token = 2.5,
	    .tokens_per_message = 4 };

	assert_int_equal(ig_request_estimate_input(&req, &m), 4 + 8);
	m.bytes_per_token = 3;		/* ceil(10/3) = 4 */
	assert_int_equal(ig_request_estimate_input(&req, &m), 4 + 8);
	/* no model, or no ratio: 4 bytes per token, no overhead */
	assert_int_equal(ig_request_estimate_input(&req, NULL), 3);
	m.bytes_per_token = 0;
	m.tokens_per_message = 0;
	assert_int_equal(ig_request_estimate_input(&req, &m), 3);
}

struct bad_case {
	enum ig_endpoint ep;
	const char	*body;
	const char	*param;
};

static const struct bad_case bad_cases[] = {
	{ IG_EP_CHAT, "[]", "" },
	{ IG_EP_CHAT, "{\"messages\":[]}", "model" },
	{ IG_EP_CHAT, "{\"model\":3,\"messages\":[]}", "model" },
	{ IG_EP_CHAT, "{\"model\":\"m\"}", "messages" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[]}", "messages" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":{}}", "messages" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[1]}", "messages[0]" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"content\":\"x\"}]}",
	    "messages[0].role" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"a\"},{\"role\":\"user\",\"content\":\"b\"},"
	    "{\"role\":\"user\",\"content\":5}]}", "messages[2].content" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":[{\"text\":\"x\"}]}]}", "messages[0].content[0]" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":[{\"type\":\"text\",\"text\":1}]}]}",
	    "messages[0].content[0].text" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"x\"}],\"max_tokens\":\"10\"}", "max_tokens" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"x\"}],\"max_tokens\":0}", "max_tokens" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"x\"}],\"max_tokens\":1.5}", "max_tokens" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"x\"}],\"max_completion_tokens\":-1}",
	    "max_completion_tokens" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"x\"}],\"stream\":\"yes\"}", "stream" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"x\"}],\"stream_options\":true}", "stream_options" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"x\"}],\"stream_options\":{\"include_usage\":1}}",
	    "stream_options.include_usage" },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\"}", "prompt" },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[\"a\",{}]}",
	    "prompt[1]" },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[[1,-2]]}",
	    "prompt[0]" },
	{ IG_EP_EMBEDDINGS, "{\"model\":\"m\",\"input\":5}", "input" },
	{ IG_EP_EMBEDDINGS, "{\"model\":\"m\",\"input\":[]}", "input" },
};

static void
test_estimate_errors(void **state)
{
	struct ig_request_info req;
	struct ig_request_error err;
	size_t		 i;

	for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		if (parse(bad_cases[i].body, bad_cases[i].ep, &req, &err) != -1)
			fail_msg("case %zu accepted: %s", i, bad_cases[i].body);
		assert_string_equal(err.param, bad_cases[i].param);
		assert_true(err.message[0] != '\0');
	}
}

/*
 * TEXT with the output cap MAX (if SET_MAX) and stream usage (if USAGE)
 * spliced in, re-serialized with sorted keys to compare.
 */
static char *
edit(const char *text, enum ig_endpoint ep, int set_max, uint64_t max,
    int usage, bool *client_usage)
{
	struct ig_request_info req;
	struct ig_request_error err;
	struct ig_request_edits edits = { NULL, 0, set_max, max, usage };
	struct ig_request_body out;
	char		 buf[1024];
	size_t		 i, n = 0;
	json_t		*body;
	char		*s;

	assert_int_equal(parse(text, ep, &req, &err), 0);
	assert_int_equal(ig_request_edit(text, strlen(text), &req, &edits,
	    &out), 0);
	for (i = 0; i < out.npieces; i++) {
		memcpy(buf + n, out.piece[i].p, out.piece[i].len);
		n += out.piece[i].len;
	}
	if (client_usage != NULL)
		*client_usage = req.client_usage;
	body = json_loadb(buf, n, JSON_REJECT_DUPLICATES, NULL);
	assert_non_null(body);
	s = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(body);
	return s;
}

#define MSG "\"messages\":[{\"content\":\"x\",\"role\":\"user\"}]"

static void
test_estimate_edits(void **state)
{
	char		*s;
	bool		 cu;

	/* absent: max_tokens is set */
	s = edit("{\"model\":\"m\"," MSG "}", IG_EP_CHAT, 1, 100, 0, NULL);
	assert_string_equal(s, "{\"max_tokens\":100," MSG ",\"model\":\"m\"}");
	free(s);
	/* the field the client used is the one clamped */
	s = edit("{\"max_completion_tokens\":5000," MSG ",\"model\":\"m\"}",
	    IG_EP_CHAT, 1, 100, 0, NULL);
	assert_string_equal(s,
	    "{\"max_completion_tokens\":100," MSG ",\"model\":\"m\"}");
	free(s);
	/* both sent: both bounded */
	s = edit("{\"max_completion_tokens\":5000,\"max_tokens\":6000," MSG
	    ",\"model\":\"m\"}", IG_EP_CHAT, 1, 100, 0, NULL);
	assert_string_equal(s, "{\"max_completion_tokens\":100,"
	    "\"max_tokens\":100," MSG ",\"model\":\"m\"}");
	free(s);
	s = edit("{\"max_tokens\":5000,\"model\":\"m\",\"prompt\":\"p\"}",
	    IG_EP_COMPLETIONS, 1, 10, 0, NULL);
	assert_string_equal(s, "{\"max_tokens\":10,\"model\":\"m\","
	    "\"prompt\":\"p\"}");
	free(s);
	/* usage merged into the client's stream_options, keeping its keys */
	s = edit("{" MSG ",\"model\":\"m\",\"stream\":true,\"stream_options\":"
	    "{\"continuous_usage_stats\":false}}", IG_EP_CHAT, 0, 0, 1, &cu);
	assert_false(cu);
	assert_string_equal(s, "{" MSG ",\"model\":\"m\",\"stream\":true,"
	    "\"stream_options\":{\"continuous_usage_stats\":false,"
	    "\"include_usage\":true}}");
	free(s);
	s = edit("{" MSG ",\"model\":\"m\",\"stream\":true}", IG_EP_CHAT, 0, 0,
	    1, &cu);
	assert_false(cu);
	assert_string_equal(s, "{" MSG ",\"model\":\"m\",\"stream\":true,"
	    "\"stream_options\":{\"include_usage\":true}}");
	free(s);
	s = edit("{" MSG ",\"model\":\"m\",\"stream\":true,\"stream_options\":"
	    "{\"include_usage\":true}}", IG_EP_CHAT, 0, 0, 1, &cu);
	assert_true(cu);
	free(s);
	/* not streaming: untouched */
	s = edit("{" MSG ",\"model\":\"m\"}", IG_EP_CHAT, 0, 0, 1, NULL);
	assert_string_equal(s, "{" MSG ",\"model\":\"m\"}");
	free(s);
	/* embeddings have no output cap */
	s = edit("{\"input\":\"x\",\"model\":\"m\"}", IG_EP_EMBEDDINGS, 1, 10, 1,
	    NULL);
	assert_string_equal(s, "{\"input\":\"x\",\"model\":\"m\"}");
	free(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_estimate_table),
		cmocka_unit_test(test_estimate_rule),
		cmocka_unit_test(test_estimate_errors),
		cmocka_unit_test(test_estimate_edits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
