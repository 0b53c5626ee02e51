/*
 * Authentication (admission/auth.c), the policy table and the header
 * values (admission/policy.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "infergate/admission.h"
#include "infergate/fmt.h"

/* --- auth -------------------------------------------------------------- */

static void
sha(const char *key, uint8_t out[32])
{
	unsigned int	 n = 32;

	EVP_Digest(key, strlen(key), out, &n, EVP_sha256(), NULL);
}

static void
test_auth_lookup(void **state)
{
	uint8_t		 ka[2][32], kb[1][32];
	struct ig_tenant_conf t[2] = {
		{ .id = "acme", .keys = ka, .nkeys = 2 },
		{ .id = "beta", .keys = kb, .nkeys = 1 },
	};
	struct ig_auth	*auth;
	char		*err;

	sha("sk-acme-1", ka[0]);
	sha("sk-acme-2", ka[1]);
	sha("sk-beta", kb[0]);
	auth = ig_auth_create(t, 2, &err);
	assert_non_null(auth);
	assert_ptr_equal(ig_auth_lookup(auth, "sk-acme-1", 9), &t[0]);
	assert_ptr_equal(ig_auth_lookup(auth, "sk-acme-2", 9), &t[0]);
	assert_ptr_equal(ig_auth_lookup(auth, "sk-beta", 7), &t[1]);
	assert_null(ig_auth_lookup(auth, "sk-beta ", 8));
	assert_null(ig_auth_lookup(auth, "sk-bet", 6));
	assert_null(ig_auth_lookup(auth, "", 0));
	assert_null(ig_auth_lookup(auth, NULL, 0));
	ig_auth_free(auth);

	/* one key for two tenants is a config error */
	sha("sk-acme-1", kb[0]);
	assert_null(ig_auth_create(t, 2, &err));
	assert_non_null(err);
	assert_non_null(strstr(err, "acme"));
	free(err);

	/* no tenants: every key is unknown */
	auth = ig_auth_create(NULL, 0, &err);
	assert_non_null(auth);
	assert_null(ig_auth_lookup(auth, "x", 1));
	ig_auth_free(auth);
}

/* The connection's memo: same key, same table only; a reload's table never. */
static void
test_auth_memo(void **state)
{
	uint8_t		 ka[1][32], kb[1][32];
	struct ig_tenant_conf t[2] = {
		{ .id = "acme", .keys = ka, .nkeys = 1 },
		{ .id = "beta", .keys = kb, .nkeys = 1 },
	};
	struct ig_auth_memo m = { 0 };
	struct ig_auth	*auth, *reloaded;
	char		*err;

	sha("sk-acme-1", ka[0]);
	sha("sk-beta-1", kb[0]);
	auth = ig_auth_create(t, 2, &err);
	assert_non_null(auth);
	assert_ptr_equal(ig_auth_lookup_memo(auth, &m, "sk-acme-1", 9), &t[0]);
	assert_int_equal(m.keylen, 9);
	assert_memory_equal(m.key, "sk-acme-1", 9);
	assert_ptr_equal(m.tenant, &t[0]);
	/* a hit: the memo's tenant, even with the table's entry gone */
	m.tenant = &t[1];
	assert_ptr_equal(ig_auth_lookup_memo(auth, &m, "sk-acme-1", 9), &t[1]);
	m.tenant = &t[0];
	/* same length, other bytes: looked up, not the memo's tenant */
	assert_null(ig_auth_lookup_memo(auth, &m, "sk-acme-2", 9));
	assert_memory_equal(m.key, "sk-acme-1", 9);	/* a miss keeps it */
	assert_ptr_equal(ig_auth_lookup_memo(auth, &m, "sk-beta-1", 9), &t[1]);
	assert_memory_equal(m.key, "sk-beta-1", 9);
	assert_null(ig_auth_lookup_memo(auth, &m, "sk-beta-", 8));
	assert_null(ig_auth_lookup_memo(auth, &m, NULL, 0));

	/* reloaded without beta's key: the memo's bytes match, the table not */
	reloaded = ig_auth_create(t, 1, &err);
	assert_non_null(reloaded);
	assert_null(ig_auth_lookup_memo(reloaded, &m, "sk-beta-1", 9));
	assert_ptr_equal(ig_auth_lookup_memo(reloaded, &m, "sk-acme-1", 9),
	    &t[0]);
	/* a longer key takes a bigger copy */
	sha("sk-beta-1-much-longer-than-before", kb[0]);
	ig_auth_free(reloaded);
	reloaded = ig_auth_create(t, 2, &err);
	assert_ptr_equal(ig_auth_lookup_memo(reloaded, &m,
	    "sk-beta-1-much-longer-than-before", 33), &t[1]);
	assert_memory_equal(m.key, "sk-beta-1-much-longer-than-before", 33);
	ig_auth_memo_clear(&m);
	assert_null(m.key);
	assert_int_equal(m.serial, 0);
	ig_auth_free(reloaded);
	ig_auth_free(auth);
}

static void
test_auth_many(void **state)
{
	enum { N = 500 };
	static uint8_t	 keys[N][32];
	static struct ig_tenant_conf t[N];
	struct ig_auth	*auth;
	char		 k[32], *err;
	int		 i;

	for (i = 0; i < N; i++) {
		snprintf(k, sizeof(k), "key-%d", i);
		sha(k, keys[i]);
		t[i].id = "t";
		t[i].keys = &keys[i];
		t[i].nkeys = 1;
	}
	auth = ig_auth_create(t, N, &err);
	assert_non_null(auth);
	for (i = 0; i < N; i++) {
		snprintf(k, sizeof(k), "key-%d", i);
		assert_ptr_equal(ig_auth_lookup(auth, k, strlen(k)), &t[i]);
	}
	assert_null(ig_auth_lookup(auth, "key-500", 7));
	ig_auth_free(auth);
}

static void
test_auth_headers(void **state)
{
	static const struct {
		const char *name, *value, *key;
	} cases[] = {
		{ "Authorization", "Bearer sk-1", "sk-1" },
		{ "authorization", "bearer   sk-1  ", "sk-1" },
		{ "AUTHORIZATION", "BEARER\tsk-1", "sk-1" },
		{ "Authorization", "Basic dXNlcjpw", NULL },
		{ "Authorization", "Bearer", NULL },
		{ "Authorization", "Bearer   ", NULL },
		{ "Authorization", "Bearersk-1", NULL },
		{ "api-key", "sk-2", "sk-2" },
		{ "Api-Key", " sk-2 ", "sk-2" },
		{ "x-api-key", "sk-3", "sk-3" },
		{ "X-API-KEY", "", NULL },
		{ "x-api-keys", "sk-3", NULL },
		{ "cookie", "sk-3", NULL },
	};
	const char	*key;
	size_t		 i, len;
	int		 rc;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		rc = ig_auth_key_from_header(cases[i].name, cases[i].value,
		    strlen(cases[i].value), &key, &len);
		if (cases[i].key == NULL) {
			assert_int_equal(rc, 0);
			continue;
		}
		assert_int_equal(rc, 1);
		assert_int_equal(len, strlen(cases[i].key));
		assert_memory_equal(key, cases[i].key, len);
	}
}

static void
test_auth_hash_line(void **state)
{
	char		 in[] = "test\r\n", out[128] = "", *err;
	FILE		*fi = fmemopen(in, strlen(in), "r");
	FILE		*fo = fmemopen(out, sizeof(out), "w");

	assert_int_equal(ig_auth_hash_line(fi, fo, &err), 0);
	fclose(fo);
	fclose(fi);
	/* the reference's example: sha256("test") */
	assert_string_equal(out, "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"
	    "2b0b822cd15d6c15b0f00a08\n");

	fi = fmemopen(in, 0 + 1, "r");	/* "t" */
	fo = fmemopen(out, sizeof(out), "w");
	assert_int_equal(ig_auth_hash_line(fi, fo, &err), 0);
	fclose(fo);
	fclose(fi);
	fi = fmemopen((char[]){ "\n" }, 1, "r");
	fo = fmemopen(out, sizeof(out), "w");
	assert_int_equal(ig_auth_hash_line(fi, fo, &err), -1);
	assert_non_null(err);
	free(err);
	fclose(fo);
	fclose(fi);
}

/* --- policy: the request checks ---------------------------------------- */

struct req_case {
	uint64_t	 max_in, max_out;
	enum ig_over_limit over;
	bool		 shadow;
	uint64_t	 input;
	enum ig_max_field field;
	uint64_t	 asked, context;
	/* expected */
	int		 rc;
	enum ig_limit	 limit;
	int		 status;
	const char	*code;
	uint64_t	 max_tokens;
	bool		 set_body, clamped, would;
};

static const struct req_case req_cases[] = {
	/* max_input_tokens: below, at, above */
	{ 100, 0, IG_OVER_CLAMP, false, 99, IG_MAX_TOKENS, 10, 0,
	    0, IG_LIMIT_NONE, 200, NULL, 10, false, false, false },
	{ 100, 0, IG_OVER_CLAMP, false, 100, IG_MAX_TOKENS, 10, 0,
	    0, IG_LIMIT_NONE, 200, NULL, 10, false, false, false },
	{ 100, 0, IG_OVER_CLAMP, false, 101, IG_MAX_TOKENS, 10, 0,
	    -1, IG_LIMIT_INPUT_TOKENS, 400, "context_length_exceeded", 0,
	    false, false, false },
	/* the input check comes before the output check */
	{ 100, 5, IG_OVER_REJECT, false, 101, IG_MAX_TOKENS, 10, 0,
	    -1, IG_LIMIT_INPUT_TOKENS, 400, "context_length_exceeded", 0,
	    false, false, false },
	/* max_output_tokens: below, at, above (clamp, reject) */
	{ 0, 50, IG_OVER_REJECT, false, 10, IG_MAX_TOKENS, 49, 0,
	    0, IG_LIMIT_NONE, 200, NULL, 49, false, false, false },
	{ 0, 50, IG_OVER_REJECT, false, 10, IG_MAX_TOKENS, 50, 0,
	    0, IG_LIMIT_NONE, 200, NULL, 50, false, false, false },
	{ 0, 50, IG_OVER_CLAMP, false, 10, IG_MAX_COMPLETION_TOKENS, 51, 0,
	    0, IG_LIMIT_NONE, 200, NULL, 50, true, true, false },
	{ 0, 50, IG_OVER_REJECT, false, 10, IG_MAX_TOKENS, 51, 0,
	    -1, IG_LIMIT_OUTPUT_TOKENS, 400, "max_tokens_exceeded", 0,
	    false, false, false },
	/* absent: the tenant cap is set in the body */
	{ 0, 50, IG_OVER_CLAMP, false, 10, IG_MAX_NONE, 0, 0,
	    0, IG_LIMIT_NONE, 200, NULL, 50, true, false, false },
	/* no cap at all: the rest of the model's context, body untouched */
	{ 0, 0, IG_OVER_CLAMP, false, 10, IG_MAX_NONE, 0, 8192,
	    0, IG_LIMIT_NONE, 200, NULL, 8182, false, false, false },
	{ 0, 0, IG_OVER_CLAMP, false, 10, IG_MAX_NONE, 0, 0,
	    0, IG_LIMIT_NONE, 200, NULL, 0, false, false, false },
	/* shadow: never refused, the reason kept; oversized caps clamped */
	{ 100, 0, IG_OVER_CLAMP, true, 101, IG_MAX_TOKENS, 10, 0,
	    0, IG_LIMIT_INPUT_TOKENS, 200, "context_length_exceeded", 10,
	    false, false, true },
	{ 0, 50, IG_OVER_REJECT, true, 10, IG_MAX_TOKENS, 51, 0,
	    0, IG_LIMIT_OUTPUT_TOKENS, 200, "max_tokens_exceeded", 50,
	    true, true, true },
};

static void
test_policy_request(void **state)
{
	struct ig_tenant_conf t;
	struct ig_request_info req;
	struct ig_output_decision out;
	struct ig_admit_result res;
	size_t		 i;

	for (i = 0; i < sizeof(req_cases) / sizeof(req_cases[0]); i++) {
		const struct req_case *c = &req_cases[i];

		memset(&t, 0, sizeof(t));
		memset(&req, 0, sizeof(req));
		t.limits.max_input_tokens = c->max_in;
		t.limits.max_output_tokens = c->max_out;
		t.on_output_over_limit = c->over;
		t.shadow = c->shadow;
		req.endpoint = IG_EP_CHAT;
		req.max_field = c->field;
		req.max_tokens = c->asked;
		if (ig_policy_request(&t, c->input, &req, c->context, &out,
		    &res) != c->rc)
			fail_msg("case %zu: rc", i);
		assert_int_equal(res.limit, c->limit);
		assert_int_equal(res.status, c->status);
		assert_int_equal(res.admitted, c->rc == 0);
		assert_int_equal(res.would_refuse, c->would);
		if (c->code == NULL)
			assert_null(res.code);
		else
			assert_string_equal(res.code, c->code);
		if (c->rc == 0) {
			assert_int_equal(out.max_tokens, c->max_tokens);
			assert_int_equal(out.set_body, c->set_body);
			assert_int_equal(out.clamped, c->clamped);
		} else
			assert_true(res.message[0] != '\0');
		assert_int_equal(res.retry_after_s, 0);
	}
	/* the param names the field the client used */
	memset(&t, 0, sizeof(t));
	t.limits.max_output_tokens = 5;
	t.on_output_over_limit = IG_OVER_REJECT;
	req.max_field = IG_MAX_COMPLETION_TOKENS;
	req.max_tokens = 6;
	assert_int_equal(ig_policy_request(&t, 1, &req, 0, &out, &res), -1);
	assert_string_equal(res.param, "max_completion_tokens");
	/* embeddings reserve no output */
	req.endpoint = IG_EP_EMBEDDINGS;
	req.max_field = IG_MAX_NONE;
	assert_int_equal(ig_policy_request(&t, 1, &req, 100, &out, &res), 0);
	assert_int_equal(out.max_tokens, 0);
	assert_false(out.set_body);
}

/* --- policy: the store checks ------------------------------------------ */

struct decide_case {
	struct ig_tenant_limits l;
	bool		 shadow;
	uint64_t	 reserve;
	struct ig_policy_state st;
	int		 take;
	enum ig_limit	 limit;
	int		 status;
	const char	*code;
	uint64_t	 retry;
};

#define NOW	1700000000500ULL	/* half a second into a second */

static const struct decide_case decide_cases[] = {
	/* nothing set: admitted */
	{ { 0 }, false, 10, { .now_ms = NOW }, 1, IG_LIMIT_NONE, 200, NULL, 0 },
	/* concurrency: below, at (refused), with Retry-After from the lease */
	{ { .max_concurrent_requests = 2 }, false, 10,
	    { .now_ms = NOW, .concurrent = 1 }, 1, IG_LIMIT_NONE, 200, NULL, 0 },
	{ { .max_concurrent_requests = 2 }, false, 10,
	    { .now_ms = NOW, .concurrent = 2, .lease_free_ms = 4200 }, 0,
	    IG_LIMIT_CONCURRENCY, 429, "concurrency_limit_exceeded", 5 },
	/* rpm: the limit-th request is admitted, the next one refused */
	{ { .requests_per_minute = 3 }, false, 10,
	    { .now_ms = NOW, .win_requests = 2 }, 1, IG_LIMIT_NONE, 200, NULL, 0 },
	{ { .requests_per_minute = 3 }, false, 10,
	    { .now_ms = NOW, .win_requests = 3, .req_free_ms = 12001 }, 0,
	    IG_LIMIT_RPM, 429, "rate_limit_exceeded", 13 },
	/* tpm: at the bound admitted, one over refused */
	{ { .tokens_per_minute = 100 }, false, 10,
	    { .now_ms = NOW, .win_tokens = 90 }, 1, IG_LIMIT_NONE, 200, NULL, 0 },
	{ { .tokens_per_minute = 100 }, false, 11,
	    { .now_ms = NOW, .win_tokens = 90, .tok_free_ms = 30000 }, 0,
	    IG_LIMIT_TPM, 429, "rate_limit_exceeded", 30 },
	/* daily budget */
	{ { .daily_token_budget = 1000 }, false, 100,
	    { .now_ms = NOW, .day_tokens = 900 }, 1, IG_LIMIT_NONE, 200, NULL, 0 },
	{ { .daily_token_budget = 1000 }, false, 101,
	    { .now_ms = NOW, .day_tokens = 900, .day_reset_ms = 3600000 }, 0,
	    IG_LIMIT_DAILY, 429, "budget_exceeded", 3600 },
	/* the order: concurrency before rpm before tpm before the day */
	{ { 1, 1, 1, 1, 1, 1 }, false, 5,
	    { .now_ms = NOW, .concurrent = 1, .win_requests = 1,
	    .win_tokens = 1, .day_tokens = 1 }, 0, IG_LIMIT_CONCURRENCY, 429,
	    "concurrency_limit_exceeded", 1 },
	{ { 0, 0, 5, 100, 1, 100 }, false, 5,
	    { .now_ms = NOW, .win_requests = 1, .win_tokens = 100,
	    .day_tokens = 100 }, 0, IG_LIMIT_RPM, 429, "rate_limit_exceeded", 1 },
	{ { 0, 0, 5, 100, 10, 100 }, false, 5,
	    { .now_ms = NOW, .win_requests = 1, .win_tokens = 100,
	    .day_tokens = 100 }, 0, IG_LIMIT_TPM, 429, "rate_limit_exceeded", 1 },
	/* shadow: taken, the reason kept */
	{ { .requests_per_minute = 3 }, true, 10,
	    { .now_ms = NOW, .win_requests = 3, .req_free_ms = 12001 }, 1,
	    IG_LIMIT_RPM, 200, "rate_limit_exceeded", 0 },
};

static void
test_policy_decide(void **state)
{
	struct ig_admit_result res;
	size_t		 i;

	for (i = 0; i < sizeof(decide_cases) / sizeof(decide_cases[0]); i++) {
		const struct decide_case *c = &decide_cases[i];

		if (ig_policy_decide(&c->l, c->shadow, c->reserve, &c->st,
		    &res) != c->take)
			fail_msg("case %zu: take", i);
		assert_int_equal(res.admitted, c->take);
		assert_int_equal(res.limit, c->limit);
		assert_int_equal(res.status, c->status);
		assert_int_equal(res.retry_after_s, c->retry);
		assert_int_equal(res.would_refuse, c->shadow && c->limit != 0);
		if (c->code == NULL)
			assert_null(res.code);
		else
			assert_string_equal(res.code, c->code);
	}
}

/* ig_fmt: numbers at every digit-pair boundary, and what does not fit. */
static void
test_fmt(void **state)
{
	static const uint64_t v[] = { 0, 7, 9, 10, 42, 99, 100, 101, 999, 1000,
	    12345, 100000000, 1000000000000ULL, 18446744073709551615ULL };
	char buf[32], want[32];
	struct ig_fmt f;
	size_t i;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		f = (struct ig_fmt)IG_FMT_INIT(buf, sizeof(buf));
		ig_fmt_u64(&f, v[i]);
		snprintf(want, sizeof(want), "%llu", (unsigned long long)v[i]);
		assert_false(f.overflow);
		assert_string_equal(buf, want);
		assert_int_equal(f.len, strlen(want));
	}
	f = (struct ig_fmt)IG_FMT_INIT(buf, 6);
	ig_fmt_lit(&f, "ab");
	ig_fmt_u64(&f, 123456);		/* does not fit: nothing of it */
	assert_true(f.overflow);
	assert_string_equal(buf, "ab");
	ig_fmt_lit(&f, "c");		/* nothing after an overflow */
	assert_string_equal(buf, "ab");
}

static void
test_policy_headers(void **state)
{
	struct ig_tenant_limits l = { .requests_per_minute = 600,
	    .tokens_per_minute = 1000 };
	struct ig_policy_state st = { .now_ms = NOW, .win_requests = 10,
	    .win_tokens = 400, .req_reset_ms = 30000, .tok_reset_ms = 20000 };
	struct ig_admit_result res;

	/* admitted: this request counts; the window empties 60.5 s from now */
	assert_int_equal(ig_policy_decide(&l, false, 100, &st, &res), 1);
	assert_true(res.rl.has_requests && res.rl.has_tokens);
	assert_int_equal(res.rl.limit_requests, 600);
	assert_int_equal(res.rl.remaining_requests, 589);
	assert_int_equal(res.rl.reset_requests_ms, 60500);
	assert_int_equal(res.rl.limit_tokens, 1000);
	assert_int_equal(res.rl.remaining_tokens, 500);
	assert_int_equal(res.rl.reset_tokens_ms, 60500);
	/* refused: nothing taken, the window's own reset */
	assert_int_equal(ig_policy_decide(&l, false, 700, &st, &res), 0);
	assert_int_equal(res.rl.remaining_requests, 590);
	assert_int_equal(res.rl.remaining_tokens, 600);
	assert_int_equal(res.rl.reset_tokens_ms, 20000);
	/* never below zero */
	l.tokens_per_minute = 300;
	st.win_tokens = 400;
	ig_policy_decide(&l, true, 10, &st, &res);
	assert_int_equal(res.rl.remaining_tokens, 0);
	/* unset limits carry no headers */
	l.requests_per_minute = 0;
	l.tokens_per_minute = 0;
	ig_policy_decide(&l, false, 10, &st, &res);
	assert_false(res.rl.has_requests || res.rl.has_tokens);
}

static void
test_policy_store_unavailable(void **state)
{
	struct ig_admit_result res;

	ig_policy_store_unavailable(&res);
	assert_false(res.admitted);
	assert_int_equal(res.status, 503);
	assert_string_equal(res.code, "store_unavailable");
	assert_int_equal(res.retry_after_s, 1);
	assert_int_equal(res.limit, IG_LIMIT_STORE);
}

static void
test_policy_day(void **state)
{
	/* 2023-11-14T22:13:20Z */
	uint64_t	 t = 1700000000000ULL;

	assert_int_equal(ig_policy_day(t, 0), 19675);
	assert_int_equal(ig_policy_day_reset_ms(t, 0),
	    (19676ULL * 86400 * 1000) - t);
	/* a day starting at 23:00 UTC has not rolled yet at 22:13 */
	assert_int_equal(ig_policy_day(t, 23 * 3600), 19674);
	assert_int_equal(ig_policy_day_reset_ms(t, 23 * 3600),
	    (46 * 60 + 40) * 1000);
	/* at 23:00 it has */
	assert_int_equal(ig_policy_day(19675ULL * 86400000 + 23 * 3600000,
	    23 * 3600), 19675);
}

static void
test_ratelimit_format(void **state)
{
	static const struct {
		uint64_t	 ms;
		const char	*s;
	} cases[] = {
		{ 0, "0s" }, { 1, "1ms" }, { 59, "59ms" }, { 999, "999ms" },
		{ 1000, "1s" }, { 1500, "1.5s" }, { 1234, "1.234s" },
		{ 1230, "1.23s" }, { 59000, "59s" }, { 60000, "1m0s" },
		{ 360000, "6m0s" }, { 61500, "1m1.5s" }, { 3600000, "1h0m0s" },
		{ 3723000, "1h2m3s" }, { 86400000, "24h0m0s" },
	};
	struct ig_ratelimit rl = { .has_requests = true, .limit_requests = 60,
	    .remaining_requests = 59, .reset_requests_ms = 1000,
	    .has_tokens = true, .limit_tokens = 150000,
	    .remaining_tokens = 149984, .reset_tokens_ms = 6 };
	char		 buf[512];
	size_t		 i;
	int		 n;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ig_ratelimit_format_reset(cases[i].ms, buf, sizeof(buf));
		assert_string_equal(buf, cases[i].s);
	}
	n = ig_ratelimit_format(&rl, buf, sizeof(buf));
	assert_int_equal(n, (int)strlen(buf));
	assert_string_equal(buf,
	    "x-ratelimit-limit-requests: 60\r\n"
	    "x-ratelimit-remaining-requests: 59\r\n"
	    "x-ratelimit-reset-requests: 1s\r\n"
	    "x-ratelimit-limit-tokens: 150000\r\n"
	    "x-ratelimit-remaining-tokens: 149984\r\n"
	    "x-ratelimit-reset-tokens: 6ms\r\n");
	assert_int_equal(ig_ratelimit_format(&rl, buf, 40), -1);
	rl.has_requests = false;
	rl.has_tokens = false;
	assert_int_equal(ig_ratelimit_format(&rl, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_auth_lookup),
		cmocka_unit_test(test_auth_memo),
		cmocka_unit_test(test_auth_many),
		cmocka_unit_test(test_auth_headers),
		cmocka_unit_test(test_auth_hash_line),
		cmocka_unit_test(test_policy_request),
		cmocka_unit_test(test_policy_decide),
		cmocka_unit_test(test_fmt),
		cmocka_unit_test(test_policy_headers),
		cmocka_unit_test(test_policy_store_unavailable),
		cmocka_unit_test(test_policy_day),
		cmocka_unit_test(test_ratelimit_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
