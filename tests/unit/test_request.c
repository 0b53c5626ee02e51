/*
 * The raw-byte request scanner (admission/json_scan.c, request.c), the
 * spliced edits (request_edit.c) and the usage readers (usage.c): tables
 * of cases, then a differential test against jansson (json_oracle.c) over
 * a corpus of generated valid and invalid documents.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "infergate/admission.h"
#include "json_oracle.h"

#define MSG	"\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"

static int
parse(const char *body, enum ig_endpoint ep, struct ig_request_info *req,
    struct ig_request_error *err)
{
	return ig_request_parse(body, strlen(body), ep, req, err);
}

/* --- refusals ---------------------------------------------------------- */

struct bad_case {
	enum ig_endpoint ep;
	const char	*body;
	const char	*code;
	bool		 admission;
	const char	*param;
	const char	*message;
};

static const struct bad_case bad_cases[] = {
	{ IG_EP_CHAT, "", "invalid_json", false, "",
	    "the request body must be a JSON object" },
	{ IG_EP_CHAT, "[]", "invalid_json", false, "",
	    "invalid JSON body: not an object" },
	{ IG_EP_CHAT, "[{\"model\":\"m\"}]", "invalid_json", false, "",
	    "invalid JSON body: not an object" },
	{ IG_EP_CHAT, "\"x\"", "invalid_json", false, "",
	    "invalid JSON body: expected '{' or '[' at byte 0" },
	{ IG_EP_CHAT, "{\"model\":\"m\",}", "invalid_json", false, "",
	    "invalid JSON body: unexpected character at byte 12" },
	{ IG_EP_CHAT, "{\"model\":\"m\"", "invalid_json", false, "",
	    "invalid JSON body: unexpected end of input at byte 12" },
	{ IG_EP_CHAT, "{\"model\" \"m\"}", "invalid_json", false, "",
	    "invalid JSON body: expected ':' at byte 9" },
	{ IG_EP_CHAT, "{\"model\":\"m\" \"stream\":true}", "invalid_json",
	    false, "", "invalid JSON body: expected ',' at byte 13" },
	{ IG_EP_CHAT, "{\"model\":\"m\"} x", "invalid_json", false, "",
	    "invalid JSON body: unexpected character at byte 14" },
	{ IG_EP_CHAT, "{\"model\":\"m\"}{}", "invalid_json", false, "",
	    "invalid JSON body: data after the value at byte 13" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"model\":\"n\"}", "invalid_json",
	    false, "", "invalid JSON body: duplicate key at byte 13" },
	{ IG_EP_CHAT, "{\"model\":\"a\tb\"}", "invalid_json", false, "",
	    "invalid JSON body: control character in a string at byte 11" },
	{ IG_EP_CHAT, "{\"model\":\"a\\qb\"}", "invalid_json", false, "",
	    "invalid JSON body: invalid escape at byte 9" },
	{ IG_EP_CHAT, "{\"model\":\"\\ud800\"}", "invalid_json", false, "",
	    "invalid JSON body: invalid surrogate pair at byte 10" },
	{ IG_EP_CHAT, "{\"model\":\"\\u0000\"}", "invalid_json", false, "",
	    "invalid JSON body: \\u0000 in a string at byte 10" },
	{ IG_EP_CHAT, "{\"model\":\"\xc3\"}", "invalid_json", false, "",
	    "invalid JSON body: invalid UTF-8 at byte 10" },
	{ IG_EP_CHAT, "{\"max_tokens\":01}", "invalid_json", false, "",
	    "invalid JSON body: invalid number at byte 14" },
	{ IG_EP_CHAT, "{\"max_tokens\":9223372036854775808}", "invalid_json",
	    false, "", "invalid JSON body: integer out of range at byte 14" },
	{ IG_EP_CHAT, "{\"max_tokens\":1e400}", "invalid_json", false, "",
	    "invalid JSON body: number out of range at byte 14" },
	{ IG_EP_CHAT, "{\"stream\":tru}", "invalid_json", false, "",
	    "invalid JSON body: invalid literal at byte 10" },
	{ IG_EP_CHAT, "{1:2}", "invalid_json", false, "",
	    "invalid JSON body: unexpected character at byte 1" },
	/* the gateway's own checks, before any model is looked up */
	{ IG_EP_CHAT, "{\"messages\":[]}", "missing_required_parameter", false,
	    "model", "you must provide a model parameter" },
	{ IG_EP_CHAT, "{\"model\":3,\"messages\":[]}", "invalid_type", false,
	    "model", "'model' must be a string" },
	{ IG_EP_CHAT, "{\"model\":null}", "invalid_type", false, "model",
	    "'model' must be a string" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"stream\":\"yes\"}", "invalid_type",
	    false, "stream", "'stream' must be a boolean" },
	{ IG_EP_EMBEDDINGS, "{\"model\":\"m\",\"input\":\"x\",\"stream\":1}",
	    "invalid_type", false, "stream", "'stream' must be a boolean" },
	/* the stream check comes before admission's checks */
	{ IG_EP_CHAT, "{\"model\":\"\",\"stream\":0}", "invalid_type", false,
	    "stream", "'stream' must be a boolean" },
	/* admission's */
	{ IG_EP_CHAT, "{\"model\":\"\"," MSG "}", "invalid_value", true,
	    "model", "you must provide a model parameter" },
	{ IG_EP_CHAT, "{\"model\":\"m\"}", "invalid_value", true, "messages",
	    "'messages' must be a non-empty array" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[]}", "invalid_value",
	    true, "messages", "'messages' must be a non-empty array" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":{}}", "invalid_value",
	    true, "messages", "'messages' must be a non-empty array" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[1]}", "invalid_value",
	    true, "messages[0]", "'messages[0]' must be an object" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"content\":\"x\"}]}",
	    "invalid_value", true, "messages[0].role",
	    "'messages[0].role' must be a string" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"a\"},{\"role\":\"user\",\"content\":\"b\"},"
	    "{\"role\":\"user\",\"content\":5}]}", "invalid_value", true,
	    "messages[2].content", "'messages[2].content' must be a string or "
	    "an array of content parts" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":[{\"text\":\"x\"}]}]}", "invalid_value", true,
	    "messages[0].content[0]",
	    "'messages[0].content[0]' must be an object with a 'type'" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":[\"x\"]}]}", "invalid_value", true,
	    "messages[0].content[0]",
	    "'messages[0].content[0]' must be an object with a 'type'" },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":[{\"type\":\"text\",\"text\":1}]}]}", "invalid_value",
	    true, "messages[0].content[0].text",
	    "'messages[0].content[0].text' must be a string" },
	{ IG_EP_CHAT, "{\"model\":\"m\"," MSG ",\"stream_options\":true}",
	    "invalid_value", true, "stream_options",
	    "'stream_options' must be an object" },
	{ IG_EP_CHAT, "{\"model\":\"m\"," MSG ",\"stream_options\":"
	    "{\"include_usage\":1}}", "invalid_value", true,
	    "stream_options.include_usage",
	    "'stream_options.include_usage' must be a boolean" },
	{ IG_EP_CHAT, "{\"model\":\"m\"," MSG ",\"max_tokens\":\"10\"}",
	    "invalid_value", true, "max_tokens",
	    "'max_tokens' must be a positive integer" },
	{ IG_EP_CHAT, "{\"model\":\"m\"," MSG ",\"max_tokens\":0}",
	    "invalid_value", true, "max_tokens",
	    "'max_tokens' must be a positive integer" },
	{ IG_EP_CHAT, "{\"model\":\"m\"," MSG ",\"max_tokens\":1.5}",
	    "invalid_value", true, "max_tokens",
	    "'max_tokens' must be a positive integer" },
	{ IG_EP_CHAT, "{\"model\":\"m\"," MSG ",\"max_tokens\":1e2}",
	    "invalid_value", true, "max_tokens",
	    "'max_tokens' must be a positive integer" },
	{ IG_EP_CHAT, "{\"model\":\"m\"," MSG ",\"max_completion_tokens\":-1}",
	    "invalid_value", true, "max_completion_tokens",
	    "'max_completion_tokens' must be a positive integer" },
	/* max_tokens is checked before max_completion_tokens */
	{ IG_EP_CHAT, "{\"model\":\"m\"," MSG ",\"max_completion_tokens\":-1,"
	    "\"max_tokens\":-1}", "invalid_value", true, "max_tokens",
	    "'max_tokens' must be a positive integer" },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\"}", "invalid_value", true,
	    "prompt", "'prompt' must be a string or a non-empty array" },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[\"a\",{}]}",
	    "invalid_value", true, "prompt[1]",
	    "'prompt[1]' must be a string or an array of token ids" },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[[1,-2]]}",
	    "invalid_value", true, "prompt[0]",
	    "'prompt[0]' must be a string or an array of token ids" },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[[1,2.0]]}",
	    "invalid_value", true, "prompt[0]",
	    "'prompt[0]' must be a string or an array of token ids" },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"p\","
	    "\"max_tokens\":0}", "invalid_value", true, "max_tokens",
	    "'max_tokens' must be a positive integer" },
	{ IG_EP_EMBEDDINGS, "{\"model\":\"m\",\"input\":5}", "invalid_value",
	    true, "input", "'input' must be a string or a non-empty array" },
	{ IG_EP_EMBEDDINGS, "{\"model\":\"m\",\"input\":[]}", "invalid_value",
	    true, "input", "'input' must be a string or a non-empty array" },
};

static void
test_request_errors(void **state)
{
	struct ig_request_info req;
	struct ig_request_error err;
	size_t		 i;

	for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *c = &bad_cases[i];

		if (parse(c->body, c->ep, &req, &err) != -1)
			fail_msg("case %zu accepted: %s", i, c->body);
		assert_string_equal(err.code, c->code);
		assert_int_equal(err.admission, c->admission);
		assert_string_equal(err.param, c->param);
		assert_string_equal(err.message, c->message);
		/* every one of them is also what the jansson path decides */
		if (oracle_check_request(c->body, strlen(c->body), c->ep))
			fail_msg("case %zu: %s", i, oracle_check_request(c->body,
			    strlen(c->body), c->ep));
	}
}

/* Admission refusals leave the model, stream and layout usable. */
static void
test_request_admission_error(void **state)
{
	static const char body[] = "{\"stream\":true,\"model\":\"m\\u0031\","
	    "\"messages\":[]}";
	struct ig_request_info req;
	struct ig_request_error err;

	assert_int_equal(parse(body, IG_EP_CHAT, &req, &err), -1);
	assert_true(err.admission);
	assert_int_equal(req.model_len, 2);
	assert_memory_equal(req.model, "m1", 2);
	assert_true(req.stream);
	assert_int_equal(req.at_model.off, 23);
	assert_int_equal(req.at_model.len, 9);
	assert_int_equal(req.close, sizeof(body) - 2);
}

/* n and best_of: how many completions the reservation is for. */
static void
test_request_choices(void **state)
{
	static const struct {
		enum ig_endpoint ep;
		const char	*extra;
		int		 rc;
		uint64_t	 choices;
		const char	*param;
	} cases[] = {
		{ IG_EP_CHAT, "", 0, 1, NULL },
		{ IG_EP_CHAT, ",\"n\":null", 0, 1, NULL },
		{ IG_EP_CHAT, ",\"n\":4", 0, 4, NULL },
		{ IG_EP_CHAT, ",\"n\":128", 0, 128, NULL },
		{ IG_EP_CHAT, ",\"best_of\":9", 0, 1, NULL },	/* not chat's */
		{ IG_EP_CHAT, ",\"n\":129", -1, 0, "n" },
		{ IG_EP_CHAT, ",\"n\":0", -1, 0, "n" },
		{ IG_EP_CHAT, ",\"n\":2.5", -1, 0, "n" },
		{ IG_EP_CHAT, ",\"n\":\"2\"", -1, 0, "n" },
		{ IG_EP_COMPLETIONS, ",\"n\":2,\"best_of\":5", 0, 5, NULL },
		{ IG_EP_COMPLETIONS, ",\"best_of\":3", 0, 3, NULL },
		{ IG_EP_COMPLETIONS, ",\"n\":6,\"best_of\":2", 0, 6, NULL },
		{ IG_EP_COMPLETIONS, ",\"best_of\":1000", -1, 0, "best_of" },
	};
	struct ig_request_info req;
	struct ig_request_error err;
	char body[256];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(body, sizeof(body), "{\"model\":\"m\",%s%s}",
		    cases[i].ep == IG_EP_CHAT ? MSG : "\"prompt\":\"x\"",
		    cases[i].extra);
		assert_int_equal(parse(body, cases[i].ep, &req, &err),
		    cases[i].rc);
		if (cases[i].rc == 0)
			assert_int_equal(req.choices, cases[i].choices);
		else {
			assert_true(err.admission);
			assert_string_equal(err.code, "invalid_value");
			assert_string_equal(err.param, cases[i].param);
		}
		assert_null(oracle_check_request(body, strlen(body),
		    cases[i].ep));
	}
}

/* --- what is read ------------------------------------------------------ */

struct info_case {
	enum ig_endpoint ep;
	const char	*body;
	uint64_t	 bytes, ids, messages;
	enum ig_max_field field;
	uint64_t	 max_tokens;
	bool		 stream, usage;
};

static const struct info_case info_cases[] = {
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"hello world!\"}]}", 12, 0, 1, IG_MAX_NONE, 0,
	    false, false },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"system\","
	    "\"content\":\"hello world!!\"},{\"role\":\"user\",\"content\":"
	    "[{\"type\":\"text\",\"text\":\"abcd\"},{\"type\":\"image_url\","
	    "\"image_url\":{\"url\":\"http://x\"}}]},{\"role\":\"assistant\","
	    "\"content\":null},{\"role\":\"tool\"}],\"max_tokens\":50}", 17, 0,
	    4, IG_MAX_TOKENS, 50, false, false },
	/* decoded bytes: \n is 1, \u00e9 is 2, a surrogate pair 4 */
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"a\\nb\\u00e9\\ud83d\\ude00\xc3\xa9\"}]}",
	    3 + 2 + 4 + 2, 0, 1, IG_MAX_NONE, 0, false, false },
	/* "type": "te\u0078t" is text */
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"r\\u006fle\":\"user\","
	    "\"content\":[{\"type\":\"te\\u0078t\",\"text\":\"abc\"}]}]}", 3, 0,
	    1, IG_MAX_NONE, 0, false, false },
	{ IG_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"\"}],\"max_completion_tokens\":7,\"stream\":true,"
	    "\"stream_options\":{\"include_usage\":true}}", 0, 0, 1,
	    IG_MAX_COMPLETION_TOKENS, 7, true, true },
	/* both caps: the larger is reserved */
	{ IG_EP_CHAT, "{\"model\":\"m\"," MSG ",\"max_completion_tokens\":7,"
	    "\"max_tokens\":9,\"stream\":false,\"max_tokens_x\":1}", 1, 0, 1,
	    IG_MAX_COMPLETION_TOKENS, 9, false, false },
	{ IG_EP_CHAT, "{\"model\":\"m\"," MSG ",\"max_tokens\":"
	    "9223372036854775807,\"stream\":null,\"stream_options\":null}", 1,
	    0, 1, IG_MAX_TOKENS, 9223372036854775807ULL, false, false },
	{ IG_EP_CHAT, "{\"model\":\"m\"," MSG ",\"max_tokens\":null,"
	    "\"max_completion_tokens\":null,\"stream\":true,\"stream_options\":"
	    "{\"include_usage\":null}}", 1, 0, 1, IG_MAX_NONE, 0, true, false },
	/* completions: max_completion_tokens is not theirs */
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"12345678\","
	    "\"max_tokens\":null,\"max_completion_tokens\":\"x\","
	    "\"stream\":true}", 8, 0, 0, IG_MAX_NONE, 0, true, false },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[\"1234\",\"12345\"],"
	    "\"max_tokens\":3}", 9, 0, 0, IG_MAX_TOKENS, 3, false, false },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[1,2,-0,3]}", 0, 4, 0,
	    IG_MAX_NONE, 0, false, false },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[[1,2],[],[3],\"abcd\"]}",
	    4, 3, 0, IG_MAX_NONE, 0, false, false },
	/* embeddings: neither stream, stream_options nor caps are read */
	{ IG_EP_EMBEDDINGS, "{\"model\":\"m\",\"input\":\"abcdefgh\","
	    "\"stream\":true,\"stream_options\":1,\"max_tokens\":\"x\"}", 8, 0,
	    0, IG_MAX_NONE, 0, false, false },
	{ IG_EP_EMBEDDINGS, "{\"model\":\"m\",\"input\":[\"ab\",\"cd\"]}", 4, 0,
	    0, IG_MAX_NONE, 0, false, false },
	{ IG_EP_EMBEDDINGS, "{\"model\":\"m\",\"input\":[[5,6,7]]}", 0, 3, 0,
	    IG_MAX_NONE, 0, false, false },
	/* blanks everywhere */
	{ IG_EP_CHAT, " \t\r\n{ \"model\" :\n\"m\" , \"messages\" : [ { \"role\""
	    " : \"user\" , \"content\" : \"xy\" } ] , \"max_tokens\" : 5 }\n ",
	    2, 0, 1, IG_MAX_TOKENS, 5, false, false },
};

static void
test_request_info(void **state)
{
	struct ig_request_info req;
	struct ig_request_error err;
	size_t		 i;

	for (i = 0; i < sizeof(info_cases) / sizeof(info_cases[0]); i++) {
		const struct info_case *c = &info_cases[i];

		if (parse(c->body, c->ep, &req, &err) != 0)
			fail_msg("case %zu: %s: %s", i, err.param, err.message);
		assert_int_equal(req.model_len, 1);
		assert_memory_equal(req.model, "m", 1);
		assert_int_equal(req.prompt_bytes, c->bytes);
		assert_int_equal(req.prompt_token_ids, c->ids);
		assert_int_equal(req.messages, c->messages);
		assert_int_equal(req.max_field, c->field);
		assert_int_equal(req.max_tokens, c->max_tokens);
		assert_int_equal(req.stream, c->stream);
		assert_int_equal(req.client_usage, c->usage);
		if (oracle_check_request(c->body, strlen(c->body), c->ep))
			fail_msg("case %zu: %s", i, oracle_check_request(c->body,
			    strlen(c->body), c->ep));
	}
}

static void
test_request_model(void **state)
{
	struct ig_request_info req;
	struct ig_request_error err;
	char		 body[700], name[300];
	const char	*b;

	/* no escape: the name points into the body, not NUL-terminated */
	b = "{\"model\":\"gpt-4o\"," MSG "}";
	assert_int_equal(parse(b, IG_EP_CHAT, &req, &err), 0);
	assert_ptr_equal(req.model, b + 10);
	assert_int_equal(req.model_len, 6);
	assert_int_equal(req.at_model.off, 9);
	assert_int_equal(req.at_model.len, 8);
	/* escapes: decoded into model_buf, NUL-terminated */
	b = "{\"model\":\"gpt\\u002d4o \\\"x\\\" \\u00e9\\ud83d\\ude00\"," MSG "}";
	assert_int_equal(parse(b, IG_EP_CHAT, &req, &err), 0);
	assert_ptr_equal(req.model, req.model_buf);
	assert_int_equal(req.model_len, strlen("gpt-4o \"x\" \xc3\xa9"
	    "\xf0\x9f\x98\x80"));
	assert_string_equal(req.model, "gpt-4o \"x\" \xc3\xa9\xf0\x9f\x98\x80");
	/* the longest escaped name, then one byte too many */
	memset(name, 'a', sizeof(name));
	snprintf(body, sizeof(body), "{\"model\":\"\\u0041%.*s\"," MSG "}",
	    IG_MODEL_MAX - 1, name);
	assert_int_equal(parse(body, IG_EP_CHAT, &req, &err), 0);
	assert_int_equal(req.model_len, IG_MODEL_MAX);
	assert_int_equal(req.model[0], 'A');
	snprintf(body, sizeof(body), "{\"model\":\"\\u0041%.*s\"," MSG "}",
	    IG_MODEL_MAX, name);
	assert_int_equal(parse(body, IG_EP_CHAT, &req, &err), -1);
	assert_string_equal(err.code, "invalid_value");
	assert_false(err.admission);
	assert_string_equal(err.param, "model");
	/* without escapes any length is fine */
	snprintf(body, sizeof(body), "{\"model\":\"%.*s\"," MSG "}", 290, name);
	assert_int_equal(parse(body, IG_EP_CHAT, &req, &err), 0);
	assert_int_equal(req.model_len, 290);
}

/* Numbers at jansson's limits: int64_t integers, reals below overflow. */
static void
test_request_numbers(void **state)
{
	static const struct {
		const char	*num;
		bool		 json;		/* jansson accepts it */
	} nums[] = {
		{ "0", true }, { "-0", true }, { "-0.0", true }, { "01", false },
		{ "-01", false }, { "00", false }, { "1.", false },
		{ ".5", false }, { "-", false }, { "+1", false }, { "1e", false },
		{ "1e+", false }, { "1E+2", true }, { "1e-2", true },
		{ "1.5e07", true }, { "0x10", false }, { "1_000", false },
		{ "Infinity", false }, { "NaN", false }, { "--1", false },
		{ "9223372036854775807", true }, { "9223372036854775808", false },
		{ "-9223372036854775808", true },
		{ "-9223372036854775809", false },
		{ "18446744073709551616", false },
		{ "1e400", false }, { "-1e400", false }, { "1e-400", true },
		{ "0e99999999999999999999", true },
		{ "1e99999999999999999999", false },
		{ "1.7976931348623157e308", true },
		{ "1.7976931348623158e308", true },
		{ "1.797693134862315807937289714053034150799341327710736e308",
		    false },
		{ "1.79769313486231580793728971405303415079934132710037e308",
		    true },
		{ "179769313486231580793728971405303415079934132710037826936173778"
		  "980444968292764750946649017977587207096330286416692887910946555"
		  "547851940402630657488671505820681908902000708383676273854845817"
		  "711531764475730270069855571366959622842914819860834936475292719"
		  "074168444365510704342711559699508093042880177904174497791.9",
		    true },
		{ "179769313486231580793728971405303415079934132710037826936173778"
		  "980444968292764750946649017977587207096330286416692887910946555"
		  "547851940402630657488671505820681908902000708383676273854845817"
		  "711531764475730270069855571366959622842914819860834936475292719"
		  "074168444365510704342711559699508093042880177904174497792.0",
		    false },
		{ "0.0000000000000000000000000000001e339", true },
		{ "0.0000000000000000000000000000001e340", false },
		{ "0.0000000000000000000000000000001797e339", true },
		{ "0.00000000000000000000000000000017977e339", false },
		{ "-00.5", false }, { "1.5.5", false }, { "1e5e5", false },
		{ "1.8e308", false }, { "-1.8e308", false },
	};
	char		 body[600];
	size_t		 i;

	for (i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		snprintf(body, sizeof(body), "{\"model\":\"m\",\"x\":[%s]}",
		    nums[i].num);
		if (oracle_accepts(body, strlen(body)) != nums[i].json)
			fail_msg("jansson is not as the table says: %s",
			    nums[i].num);
		if (oracle_check_request(body, strlen(body), IG_EP_EMBEDDINGS))
			fail_msg("%s: %s", nums[i].num, oracle_check_request(body,
			    strlen(body), IG_EP_EMBEDDINGS));
	}
}

/* Duplicates are refused in any object, decoded; elsewhere they are not. */
static void
test_request_duplicates(void **state)
{
	static const struct {
		const char	*body;
		bool		 dup;
	} cases[] = {
		{ "{\"model\":\"m\",\"a\":{\"b\":1,\"b\":2}}", true },
		{ "{\"model\":\"m\",\"a\":[{\"b\":1},{\"b\":{\"c\":[{\"d\":1,"
		    "\"e\":2,\"d\":3}]}}]}", true },
		{ "{\"model\":\"m\",\"a\":1,\"\\u0061\":2}", true },
		{ "{\"model\":\"m\",\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}",
		    true },
		{ "{\"model\":\"m\",\"a\\/\":1,\"a/\":2}", true },
		{ "{\"model\":\"m\",\"\":1,\"\":2}", true },
		{ "{\"model\":\"m\",\"a\":{\"a\":{\"a\":1}},\"b\":{\"a\":2}}",
		    false },
		{ "{\"model\":\"m\",\"a\":1,\"a \":2,\"A\":3,\"\\u00e9\":4,"
		    "\"e\":5}", false },
		{ "{\"model\":\"m\",\"ab\":1,\"a\":2,\"abc\":3,\"\\u0061b\\u0063d\":4}",
		    false },
	};
	size_t		 i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char	*b = cases[i].body;
		struct ig_request_info req;
		struct ig_request_error err;
		int		 rc = parse(b, IG_EP_EMBEDDINGS, &req, &err);

		if (cases[i].dup) {
			assert_int_equal(rc, -1);
			assert_non_null(strstr(err.message, "duplicate key"));
		} else
			assert_string_equal(err.code, "invalid_value");
		if (oracle_check_request(b, strlen(b), IG_EP_EMBEDDINGS))
			fail_msg("case %zu: %s", i, oracle_check_request(b,
			    strlen(b), IG_EP_EMBEDDINGS));
	}
}

/* A body of many keys in one object, and of many tokens (the heap path). */
static void
test_request_large(void **state)
{
	enum { N = 20000 };
	struct ig_request_info req;
	struct ig_request_error err;
	char		*b = malloc(N * 16 + 64);
	size_t		 n, i;

	assert_non_null(b);
	n = (size_t)sprintf(b, "{\"model\":\"m\",\"prompt\":[");
	for (i = 0; i < N; i++)
		n += (size_t)sprintf(b + n, "%s%zu", i ? "," : "", i);
	n += (size_t)sprintf(b + n, "]");
	for (i = 0; i < 2000; i++)
		n += (size_t)sprintf(b + n, ",\"k%zu\":%zu", i, i);
	n += (size_t)sprintf(b + n, "}");
	assert_int_equal(ig_request_parse(b, n, IG_EP_COMPLETIONS, &req, &err),
	    0);
	assert_int_equal(req.prompt_token_ids, N);
	assert_null(oracle_check_request(b, n, IG_EP_COMPLETIONS));
	/* the same key twice among the 2000 */
	memcpy(b + n - 1, ",\"k1999\":0}", 11);
	n += 10;
	assert_int_equal(ig_request_parse(b, n, IG_EP_COMPLETIONS, &req, &err),
	    -1);
	assert_non_null(strstr(err.message, "duplicate key"));
	assert_null(oracle_check_request(b, n, IG_EP_COMPLETIONS));
	free(b);
}

/* jansson's depth limit: 2048 values deep, keys not counted. */
static void
test_request_depth(void **state)
{
	static const char *const inner[] = { "", "1", "{}", "{\"a\":1}" };
	char		*b = malloc(3 * 2100 + 64);
	size_t		 n, i, k, depth;

	assert_non_null(b);
	for (k = 0; k < sizeof(inner) / sizeof(inner[0]); k++)
		for (depth = 2044; depth <= 2050; depth++) {
			n = (size_t)sprintf(b, "{\"model\":\"m\",\"x\":");
			for (i = 2; i < depth; i++)
				b[n++] = '[';
			n += (size_t)sprintf(b + n, "%s", inner[k]);
			for (i = 2; i < depth; i++)
				b[n++] = ']';
			b[n++] = '}';
			if (oracle_check_request(b, n, IG_EP_CHAT))
				fail_msg("depth %zu, %s: %s", depth, inner[k],
				    oracle_check_request(b, n, IG_EP_CHAT));
		}
	free(b);
}

/*
 * Deep blocks one after another, closed in long runs (the scanner's
 * jsmn-based predecessor walked quadratically over them, seconds for 4 MB).
 * Objects, keys and strings with escapes among the brackets.
 */
static void
test_request_deep_runs(void **state)
{
	static const char *const opens[] = {
		"[", "{\"k\\\"\":[", "[\"\\\\\",{\"a\":"
	};
	static const char *const closes[] = { "]", "]}", "}]" };
	enum { CAP = 1 << 19 };
	char		*b = malloc(CAP + 64);
	size_t		 n, i, k, depth;

	assert_non_null(b);
	for (k = 0; k < 3; k++) {
		n = (size_t)sprintf(b, "{\"model\":\"m\",\"input\":[");
		for (depth = 3; n + depth * 24 < CAP; depth = depth * 7 % 1000 + 40) {
			for (i = 0; i < depth; i++)
				n += (size_t)sprintf(b + n, "%s", opens[k]);
			b[n++] = '1';
			for (i = 0; i < depth; i++)
				n += (size_t)sprintf(b + n, "%s", closes[k]);
			b[n++] = ',';
		}
		n += (size_t)sprintf(b + n, "\"end\"]}");
		if (oracle_check_request(b, n, IG_EP_EMBEDDINGS))
			fail_msg("%zu: %s", k, oracle_check_request(b, n,
			    IG_EP_EMBEDDINGS));
		assert_true(oracle_accepts(b, n));
		/* and one bracket too many at the end */
		b[n - 1] = ']';
		b[n++] = '}';
		assert_false(oracle_accepts(b, n));
		assert_null(oracle_check_request(b, n, IG_EP_EMBEDDINGS));
	}
	free(b);
}

/* --- edits ------------------------------------------------------------- */

static char *
splice(const char *body, enum ig_endpoint ep, const char *model,
    bool set_max, uint64_t max, bool usage)
{
	struct ig_request_edits edits = { model, model ? strlen(model) : 0,
	    set_max, max, usage };
	struct ig_request_info req;
	struct ig_request_error err;
	struct ig_request_body out;
	size_t		 i, n = 0;
	char		*s;

	if (parse(body, ep, &req, &err) != 0)
		fail_msg("%s: %s", body, err.message);
	assert_int_equal(ig_request_edit(body, strlen(body), &req, &edits,
	    &out), 0);
	assert_true(out.npieces <= IG_SPLICE_MAX);
	s = malloc(out.len + 1);
	assert_non_null(s);
	for (i = 0; i < out.npieces; i++) {
		memcpy(s + n, out.piece[i].p, out.piece[i].len);
		n += out.piece[i].len;
	}
	assert_int_equal(n, out.len);
	s[n] = '\0';
	assert_null(oracle_check_request(body, strlen(body), ep));
	return s;
}

struct splice_case {
	enum ig_endpoint ep;
	const char	*body;
	const char	*model;
	bool		 set_max;
	uint64_t	 max;
	bool		 usage;
	const char	*want;
};

#define M	"{\"model\":\"m\"," MSG

static const struct splice_case splice_cases[] = {
	/* nothing to do */
	{ IG_EP_CHAT, M "}", NULL, false, 0, false, M "}" },
	/* the model, escaped when it must be */
	{ IG_EP_CHAT, M "}", "upstream/x", false, 0, false,
	    "{\"model\":\"upstream/x\"," MSG "}" },
	{ IG_EP_CHAT, "{ \"model\" : \"m\\u0031\" ," MSG "}", "a\"b\\c\n\x01\xc3\xa9",
	    false, 0, false,
	    "{ \"model\" : \"a\\\"b\\\\c\\u000a\\u0001\xc3\xa9\" ," MSG "}" },
	/* max_tokens: added, replaced, the client's field, both fields */
	{ IG_EP_CHAT, M "}", NULL, true, 100, false, M ",\"max_tokens\":100}" },
	{ IG_EP_CHAT, M " \n}", NULL, true, 100, false,
	    M " \n,\"max_tokens\":100}" },
	{ IG_EP_CHAT, M ",\"max_tokens\":5000}", NULL, true, 100, false,
	    M ",\"max_tokens\":100}" },
	{ IG_EP_CHAT, M ",\"max_tokens\":null}", NULL, true, 100, false,
	    M ",\"max_tokens\":100}" },
	{ IG_EP_CHAT, "{\"max_completion_tokens\" : 5000 ," MSG ",\"model\":\"m\"}",
	    NULL, true, 100, false,
	    "{\"max_completion_tokens\" : 100 ," MSG ",\"model\":\"m\"}" },
	{ IG_EP_CHAT, M ",\"max_completion_tokens\":5000,\"max_tokens\":6000}",
	    NULL, true, 100, false,
	    M ",\"max_completion_tokens\":100,\"max_tokens\":100}" },
	{ IG_EP_CHAT, M ",\"max_tokens\":6000,\"max_completion_tokens\":5000}",
	    NULL, true, 100, false,
	    M ",\"max_tokens\":100,\"max_completion_tokens\":100}" },
	{ IG_EP_CHAT, M ",\"max_completion_tokens\":5000,\"max_tokens\":null}",
	    NULL, true, 100, false,
	    M ",\"max_completion_tokens\":100,\"max_tokens\":null}" },
	{ IG_EP_CHAT, M ",\"max_completion_tokens\":null,\"max_tokens\":9}",
	    NULL, true, 100, false,
	    M ",\"max_completion_tokens\":null,\"max_tokens\":100}" },
	{ IG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"p\","
	    "\"max_completion_tokens\":9}", NULL, true, 10, false,
	    "{\"model\":\"m\",\"prompt\":\"p\",\"max_completion_tokens\":9,"
	    "\"max_tokens\":10}" },
	/* a cap beyond int64_t is written as jansson wrote it */
	{ IG_EP_CHAT, M "}", NULL, true, 18446744073709551615ULL, false,
	    M ",\"max_tokens\":-1}" },
	/* stream usage: absent, {}, { }, other keys, false, null */
	{ IG_EP_CHAT, M ",\"stream\":true}", NULL, false, 0, true,
	    M ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}" },
	{ IG_EP_CHAT, M ",\"stream\":true,\"stream_options\":{}}", NULL, false,
	    0, true, M ",\"stream\":true,\"stream_options\":"
	    "{\"include_usage\":true}}" },
	{ IG_EP_CHAT, M ",\"stream\":true,\"stream_options\":{ \t}}", NULL,
	    false, 0, true, M ",\"stream\":true,\"stream_options\":"
	    "{ \t\"include_usage\":true}}" },
	{ IG_EP_CHAT, M ",\"stream\":true,\"stream_options\":"
	    "{\"continuous_usage_stats\":false }}", NULL, false, 0, true,
	    M ",\"stream\":true,\"stream_options\":"
	    "{\"continuous_usage_stats\":false ,\"include_usage\":true}}" },
	{ IG_EP_CHAT, M ",\"stream\":true,\"stream_options\":"
	    "{\"include_usage\":false,\"x\":1}}", NULL, false, 0, true,
	    M ",\"stream\":true,\"stream_options\":"
	    "{\"include_usage\":true,\"x\":1}}" },
	{ IG_EP_CHAT, M ",\"stream\":true,\"stream_options\":"
	    "{\"include_usage\":null}}", NULL, false, 0, true,
	    M ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}" },
	{ IG_EP_CHAT, M ",\"stream_options\":null,\"stream\":true}", NULL,
	    false, 0, true, M ",\"stream_options\":{\"include_usage\":true},"
	    "\"stream\":true}" },
	/* not streamed, or embeddings: neither cap nor usage */
	{ IG_EP_CHAT, M ",\"stream\":false}", NULL, false, 0, true,
	    M ",\"stream\":false}" },
	{ IG_EP_EMBEDDINGS, "{\"model\":\"m\",\"input\":\"x\",\"stream\":true}",
	    "e", true, 10, true, "{\"model\":\"e\",\"input\":\"x\","
	    "\"stream\":true}" },
	/* keys written with escapes are the same keys */
	{ IG_EP_CHAT, "{\"m\\u006fdel\":\"m\",\"max\\u005ftokens\":3,"
	    "\"stream\":true,\"stream\\u005foptions\":{\"include\\u005fusage\""
	    ":false}," MSG "}", "n", true, 9, true,
	    "{\"m\\u006fdel\":\"n\",\"max\\u005ftokens\":9,\"stream\":true,"
	    "\"stream\\u005foptions\":{\"include\\u005fusage\":true}," MSG "}" },
	/* everything at once, blanks everywhere */
	{ IG_EP_CHAT, "\n{ \"stream\" : true , \"model\" : \"m\" , \"messages\""
	    " : [ { \"role\" : \"user\" , \"content\" : \"x\" } ] }\r\n", "big",
	    true, 7, true, "\n{ \"stream\" : true , \"model\" : \"big\" , "
	    "\"messages\" : [ { \"role\" : \"user\" , \"content\" : \"x\" } ] "
	    ",\"max_tokens\":7,\"stream_options\":{\"include_usage\":true}}\r\n" },
	{ IG_EP_CHAT, "{\"max_tokens\":1,\"stream_options\":{\"a\":[]},"
	    "\"stream\":true,\"model\":\"m\"," MSG "}", "n", true, 2, true,
	    "{\"max_tokens\":2,\"stream_options\":{\"a\":[],\"include_usage\":"
	    "true},\"stream\":true,\"model\":\"n\"," MSG "}" },
};

static void
test_request_splice(void **state)
{
	size_t		 i;

	for (i = 0; i < sizeof(splice_cases) / sizeof(splice_cases[0]); i++) {
		const struct splice_case *c = &splice_cases[i];
		char		*s = splice(c->body, c->ep, c->model,
		    c->set_max, c->max, c->usage);

		if (strcmp(s, c->want) != 0)
			fail_msg("case %zu:\n got %s\nwant %s", i, s, c->want);
		free(s);
	}
}

/* The layout alone decides: members added to {} take no comma. */
static void
test_request_splice_empty(void **state)
{
	struct ig_request_info req;
	struct ig_request_edits edits = { NULL, 0, true, 3, true };
	struct ig_request_body out;
	char		 s[128];
	size_t		 i, n = 0;

	memset(&req, 0, sizeof(req));
	req.endpoint = IG_EP_CHAT;
	req.stream = true;
	req.close = 2;
	req.empty = true;
	assert_int_equal(ig_request_edit("{ }", 3, &req, &edits, &out), 0);
	for (i = 0; i < out.npieces; i++) {
		memcpy(s + n, out.piece[i].p, out.piece[i].len);
		n += out.piece[i].len;
	}
	s[n] = '\0';
	assert_string_equal(s, "{ \"max_tokens\":3,\"stream_options\":"
	    "{\"include_usage\":true}}");
	/* a model name that is not UTF-8 is refused */
	edits.model = "\xff";
	edits.model_len = 1;
	assert_int_equal(ig_request_edit("{ }", 3, &req, &edits, &out), -1);
}

/* A name too long to escape into the buffer is refused, not cut. */
static void
test_request_splice_long_model(void **state)
{
	struct ig_request_info req;
	struct ig_request_error err;
	struct ig_request_edits edits = { NULL, 0, false, 0, false };
	struct ig_request_body out;
	char		 name[2000];

	memset(name, '"', sizeof(name));
	assert_int_equal(parse(M "}", IG_EP_CHAT, &req, &err), 0);
	edits.model = name;
	edits.model_len = sizeof(name);
	assert_int_equal(ig_request_edit(M "}", strlen(M "}"), &req, &edits,
	    &out), -1);
	/* needing no escape, any length is referenced in place */
	memset(name, 'x', sizeof(name));
	assert_int_equal(ig_request_edit(M "}", strlen(M "}"), &req, &edits,
	    &out), 0);
	assert_int_equal(out.len, strlen(M "}") - 1 + sizeof(name));
}

/* --- usage ------------------------------------------------------------- */

static void
test_usage_parse(void **state)
{
	static const struct {
		const char	*json;
		int		 rc;
		uint64_t	 prompt, completion;
	} cases[] = {
		{ "{\"prompt_tokens\":5,\"completion_tokens\":7,"
		    "\"total_tokens\":12}", 0, 5, 7 },
		{ "{\"prompt_tokens\":5,\"total_tokens\":12}], \"x\": 1}", 0, 5, 7 },
		{ " \n{\"total_tokens\":12}", 0, 0, 12 },
		{ "{\"prompt_tokens\":5}", 0, 5, (uint64_t)-5 },
		{ "{\"prompt_tokens\":5,\"prompt_tokens\":6,"
		    "\"completion_tokens\":1}", 0, 6, 1 },
		{ "{\"prompt_tokens\":-1,\"completion_tokens\":1}", 0,
		    (uint64_t)-1, 1 },
		{ "{\"prompt_tokens\":5.0,\"completion_tokens\":7}", -1, 0, 0 },
		{ "{\"completion_tokens\":7}", -1, 0, 0 },
		{ "{\"prompt_tokens\":5,\"completion_tokens\":7", -1, 0, 0 },
		{ "{\"prompt_tokens\":5,\"x\":1e999}", -1, 0, 0 },
		{ "[{\"prompt_tokens\":5}]", -1, 0, 0 },
		{ "\"prompt_tokens\"", -1, 0, 0 },
		{ "", -1, 0, 0 },
		{ "{\"prompt_tokens\":1,\"total_tokens\":3,\"details\":"
		    "{\"cached\":{\"x\":\"}\"}}}garbage{", 0, 1, 2 },
		/* the edges of usage_fast's plain subset, and past them */
		{ "{\"prompt_tokens\":05,\"total_tokens\":6}", -1, 0, 0 },
		{ "{\"prompt_tokens\":123456789012345678,"
		    "\"completion_tokens\":1}", 0, 123456789012345678ULL, 1 },
		{ "{\"prompt_tokens\":1234567890123456789,"
		    "\"completion_tokens\":1}", 0, 1234567890123456789ULL, 1 },
		{ "{\"prompt_tokens\":1,\"x\":nullx}", -1, 0, 0 },
		{ "{\"prompt_tokens\":1,\"x\":null,\"y\":true,\"z\":false,"
		    "\"total_tokens\":3}", 0, 1, 2 },
		{ "{\"prompt_tokens\":1,\"k\xc3\xa9\":2,\"total_tokens\":3}",
		    0, 1, 2 },
		{ "{\"prompt_tokens\":1,\"k\xc3\":2,\"total_tokens\":3}",
		    -1, 0, 0 },
		{ "{\"prompt_\\u0074okens\":4,\"total_tokens\":6}", 0, 4, 2 },
		{ "{ }", -1, 0, 0 },
		{ "{\"prompt_tokens\":1,}", -1, 0, 0 },
		{ " { \"prompt_tokens\" : 2 , \"total_tokens\" : 5 } ", 0, 2, 3 },
		{ "{\"prompt_tokens\":2,\"total_tokens\":5,"
		    "\"prompt_tokens_details\":null}", 0, 2, 3 },
	};
	uint64_t	 p, c;
	size_t		 i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char	*j = cases[i].json;

		p = c = 0;
		assert_int_equal(ig_usage_parse(j, strlen(j), &p, &c),
		    cases[i].rc);
		assert_int_equal(p, cases[i].prompt);
		assert_int_equal(c, cases[i].completion);
		if (oracle_check_usage(j, strlen(j)))
			fail_msg("case %zu: %s", i, oracle_check_usage(j,
			    strlen(j)));
	}
}

static void
test_usage_event(void **state)
{
	static const struct {
		const char	*data;
		int		 rc;
		bool		 choices, no_choices, usage, known;
		uint64_t	 prompt, completion;
	} cases[] = {
		{ " {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}", 0, true,
		    false, false, false, 0, 0 },
		{ " {\"choices\":[],\"usage\":{\"prompt_tokens\":3,"
		    "\"completion_tokens\":4}}\r\n", 0, false, true, true, true,
		    3, 4 },
		{ "{\"choices\":[{}],\"usage\":{\"prompt_tokens\":3,"
		    "\"completion_tokens\":4}}", 0, true, false, true, true, 3, 4 },
		{ "{\"choices\":[],\"usage\":{}}", 0, false, true, true, false,
		    0, 0 },
		{ "{\"choices\":[],\"usage\":null}", 0, false, true, false, false,
		    0, 0 },
		{ "{\"choices\":{},\"usage\":{\"total_tokens\":2}}", 0, false,
		    false, true, true, 0, 2 },
		{ "{\"choices\":[1],\"choices\":[]}", 0, false, true, false,
		    false, 0, 0 },
		{ "[{\"choices\":[1]}]", 0, false, false, false, false, 0, 0 },
		{ " [DONE]", -1, false, false, false, false, 0, 0 },
		{ "{\"choices\":[]} {}", -1, false, false, false, false, 0, 0 },
	};
	struct ig_usage_event ev;
	size_t		 i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char	*d = cases[i].data;

		assert_int_equal(ig_usage_event(d, strlen(d), &ev), cases[i].rc);
		assert_int_equal(ev.choices, cases[i].choices);
		assert_int_equal(ev.no_choices, cases[i].no_choices);
		assert_int_equal(ev.usage, cases[i].usage);
		assert_int_equal(ev.usage_known, cases[i].known);
		assert_int_equal(ev.prompt, cases[i].prompt);
		assert_int_equal(ev.completion, cases[i].completion);
		if (oracle_check_usage(d, strlen(d)))
			fail_msg("case %zu: %s", i, oracle_check_usage(d,
			    strlen(d)));
	}
}

/* --- the differential corpus ------------------------------------------ */

static const char *const bases[] = {
	"{\"model\": \"bench-model\", \"max_tokens\": 16, \"messages\": "
	    "[{\"role\": \"user\", \"content\": \"Say hello in one short "
	    "sentence.\"}]}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be "
	    "brief\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\","
	    "\"text\":\"hi \\u00e9\\ud83d\\ude00\"},{\"type\":\"image_url\","
	    "\"image_url\":{\"url\":\"http://x\"}}]},{\"role\":\"assistant\","
	    "\"content\":null}],\"max_completion_tokens\":7,\"max_tokens\":9,"
	    "\"stream\":true,\"stream_options\":{\"include_usage\":false,"
	    "\"x\":1}}",
	"{\"model\":\"m\",\"prompt\":[[1,2],[3],\"abcd\"],\"max_tokens\":null,"
	    "\"stream\":true,\"stream_options\":{}}",
	"{\"model\":\"m\",\"input\":[\"ab\",\"cd\"],\"encoding_format\":"
	    "\"float\"}",
	" { \"model\" : \"m\\\"x\" , \"stream\" : true , \"stream_options\" :"
	    " { } , \"messages\" : [ { \"role\" : \"user\" , \"content\" :"
	    " \"x\" } ] , \"n\" : [ 1.5e3 , -0 , 0.25E-3 , true , false , null ] }"
	    "\n",
	"{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],"
	    "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,"
	    "\"total_tokens\":12}}",
	/* strings across the scanner's 16- and 8-byte reads; nine keys and
	   more (sorted for the duplicate check), one escaped */
	"{\"model\":\"m\",\"input\":[\"0123456789abcdef\\u00e9xyz\\\"0123456"
	    "789abcde\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 end\",{\"k1\":1,\"k2\":2,"
	    "\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9,"
	    "\"k\\u0030\":10}],\"x\":-12.5e-3,\"y\":\"0123456789abcdef01234\"}",
};

/* Bytes and texts the mutations put into the bases. */
static const char *const bits[] = {
	"\0", "\x01", "\x1f", "\x7f", "\n", "\t", " ", "\"", "\\", "{", "}",
	"[", "]", ",", ":", "0", "-", ".", "e", "u", "\x80", "\xc3", "\xff",
	"\xc3\xa9", "\xe2\x82", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80",
	"\xf0\x9f\x98\x80", "\xef\xbb\xbf", "\xc1\xbf", "\xc2\x80", "\xdf\xbf",
	"\xe0\x80\xaf", "\xe0\x9f\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf",
	"\xed\xbf\xbf", "\xee\x80\x80", "\xef\xbf\xbf", "\xf0\x80\x80\xaf",
	"\xf0\x8f\xbf\xbf", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf",
	"\xf5\x80\x80\x80", "\xe2\x82\xac\xe2", "\\udbff\\udfff", "\\udc00", "\\u", "\\ud83d", "\\ude00",
	"\\ud83d\\ude00", "\\ud83d\\u0041", "\\u0000", "\\u00e9", "\\x",
	"\\u12", "\\U0041", "\\/", "01", "1.", ".5", "-0", "1e400", "-1e400",
	"1e-400", "9223372036854775808", "-9223372036854775809", "1E+2", "00",
	"+1", "NaN", "true", "nul", "\"model\":\"x\",", "\"max_tokens\":1,",
	"\"stream\":1,", "\"\\u006dodel\":\"y\",", ",\"a\":1", ",{}", ",[]",
	"\"a\":{\"b\":1,\"b\":2},",
};

struct corpus {
	size_t		 docs, accepted;
};

static void
corpus_check(struct corpus *c, const char *b, size_t len)
{
	int		 ep;

	c->docs++;
	c->accepted += oracle_accepts(b, len);
	for (ep = IG_EP_CHAT; ep <= IG_EP_EMBEDDINGS; ep++)
		if (oracle_check_request(b, len, ep))
			fail_msg("%s (endpoint %d): %.*s", oracle_check_request(b,
			    len, ep), ep, (int)len, b);
	if (oracle_check_usage(b, len))
		fail_msg("%s: %.*s", oracle_check_usage(b, len), (int)len, b);
}

/* BASE with [at, at + cut) replaced by the LEN bytes of WHAT. */
static void
corpus_mutant(struct corpus *c, const char *base, size_t at, size_t cut,
    const char *what, size_t len)
{
	char		 b[1024];
	size_t		 n = strlen(base);

	memcpy(b, base, at);
	memcpy(b + at, what, len);
	memcpy(b + at + len, base + at + cut, n - at - cut);
	corpus_check(c, b, n - cut + len);
}

static void
test_request_differential(void **state)
{
	struct corpus	 c = { 0, 0 };
	uint32_t	 rnd = 1;
	size_t		 i, k, at, n, len;

	for (i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
		n = strlen(bases[i]);
		for (at = 0; at <= n; at++)	/* every truncation */
			corpus_check(&c, bases[i], at);
		for (k = 0; k < sizeof(bits) / sizeof(bits[0]); k++) {
			len = k == 0 ? 1 : strlen(bits[k]);
			/* inserted, and replacing a byte, at random places */
			for (at = 0; at < 24; at++) {
				rnd = rnd * 1103515245 + 12345;
				corpus_mutant(&c, bases[i], (rnd >> 8) % n, 0,
				    bits[k], len);
				rnd = rnd * 1103515245 + 12345;
				corpus_mutant(&c, bases[i], (rnd >> 8) % n, 1,
				    bits[k], len);
			}
		}
		for (at = 0; at < n; at++)	/* every byte deleted */
			corpus_mutant(&c, bases[i], at, 1, "", 0);
	}
	print_message("differential: %zu documents, %zu accepted by jansson\n",
	    c.docs, c.accepted);
	assert_true(c.accepted >= 300);
	assert_true(c.docs - c.accepted >= 300);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_errors),
		cmocka_unit_test(test_request_admission_error),
		cmocka_unit_test(test_request_choices),
		cmocka_unit_test(test_request_info),
		cmocka_unit_test(test_request_model),
		cmocka_unit_test(test_request_numbers),
		cmocka_unit_test(test_request_duplicates),
		cmocka_unit_test(test_request_large),
		cmocka_unit_test(test_request_depth),
		cmocka_unit_test(test_request_deep_runs),
		cmocka_unit_test(test_request_splice),
		cmocka_unit_test(test_request_splice_empty),
		cmocka_unit_test(test_request_splice_long_model),
		cmocka_unit_test(test_usage_parse),
		cmocka_unit_test(test_usage_event),
		cmocka_unit_test(test_request_differential),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
