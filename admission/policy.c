/*
 * The admission policy over plain numbers: which limit refuses, with which
 * status, code and Retry-After, and the x-ratelimit-* header values. Every
 * store gathers an ig_policy_state and calls ig_policy_decide(), so the
 * local and the Redis store cannot disagree on a decision (the Redis Lua
 * script makes the same comparisons atomically before it writes).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "infergate/admission.h"
#include "infergate/fmt.h"

const char *
ig_priority_name(enum ig_priority p)
{
	switch (p) {
	case IG_PRIO_LOW:	return "low";
	case IG_PRIO_NORMAL:	return "normal";
	case IG_PRIO_HIGH:	return "high";
	}
	return "unknown";
}

const char *
ig_limit_name(enum ig_limit l)
{
	switch (l) {
	case IG_LIMIT_NONE:		return "none";
	case IG_LIMIT_INPUT_TOKENS:	return "max_input_tokens";
	case IG_LIMIT_OUTPUT_TOKENS:	return "max_output_tokens";
	case IG_LIMIT_CONCURRENCY:	return "max_concurrent_requests";
	case IG_LIMIT_RPM:		return "requests_per_minute";
	case IG_LIMIT_TPM:		return "tokens_per_minute";
	case IG_LIMIT_DAILY:		return "daily_token_budget";
	case IG_LIMIT_STORE:		return "store";
	}
	return "unknown";
}

static void
policy_admitted(struct ig_admit_result *res)
{
	memset(res, 0, sizeof(*res));
	res->admitted = true;
	res->status = 200;
}

/*
 * Records that LIMIT refuses. In shadow mode only the first such limit is
 * noted and the request stays admitted; otherwise RES becomes the refusal.
 */
static void
policy_refuse(struct ig_admit_result *res, bool shadow, enum ig_limit limit,
    uint64_t retry_ms, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void
policy_refuse(struct ig_admit_result *res, bool shadow, enum ig_limit limit,
    uint64_t retry_ms, const char *fmt, ...)
{
	va_list		 ap;

	if (res->limit != IG_LIMIT_NONE)
		return;		/* shadow: the first limit is the reason */
	res->limit = limit;
	switch (limit) {
	case IG_LIMIT_INPUT_TOKENS:
		res->status = 400;
		res->code = "context_length_exceeded";
		res->type = "invalid_request_error";
		res->param = "messages";
		break;
	case IG_LIMIT_OUTPUT_TOKENS:
		res->status = 400;
		res->code = "max_tokens_exceeded";
		res->type = "invalid_request_error";
		res->param = "max_tokens";
		break;
	case IG_LIMIT_CONCURRENCY:
		res->status = 429;
		res->code = "concurrency_limit_exceeded";
		res->type = "rate_limit_error";
		break;
	case IG_LIMIT_RPM:
	case IG_LIMIT_TPM:
		res->status = 429;
		res->code = "rate_limit_exceeded";
		res->type = "rate_limit_error";
		break;
	case IG_LIMIT_DAILY:
		res->status = 429;
		res->code = "budget_exceeded";
		res->type = "rate_limit_error";
		break;
	case IG_LIMIT_STORE:
	case IG_LIMIT_NONE:
		res->status = 503;
		res->code = "store_unavailable";
		res->type = "server_error";
		break;
	}
	if (res->status == 429 || res->status == 503)
		res->retry_after_s = retry_ms == 0 ? 1 : (retry_ms + 999) / 1000;
	va_start(ap, fmt);
	vsnprintf(res->message, sizeof(res->message), fmt, ap);
	va_end(ap);
	if (shadow) {
		/* Keep the reason for the log; the client sees a 200 path. */
		res->would_refuse = true;
		res->status = 200;
		res->retry_after_s = 0;
	} else
		res->admitted = false;
}

static void
policy_output(const struct ig_tenant_conf *t, uint64_t input,
    const struct ig_request_info *req, uint64_t context_tokens,
    struct ig_output_decision *out, struct ig_admit_result *res)
{
	uint64_t	 cap = t->limits.max_output_tokens;
	const char	*field;

	memset(out, 0, sizeof(*out));
	if (req->endpoint == IG_EP_EMBEDDINGS)
		return;
	if (req->max_field == IG_MAX_NONE) {
		if (cap != 0) {
			out->max_tokens = cap;
			out->set_body = true;
		} else if (context_tokens > input)
			out->max_tokens = context_tokens - input;
		return;
	}
	out->max_tokens = req->max_tokens;
	if (cap == 0 || req->max_tokens <= cap)
		return;
	if (t->on_output_over_limit == IG_OVER_REJECT) {
		field = req->max_field == IG_MAX_COMPLETION_TOKENS ?
		    "max_completion_tokens" : "max_tokens";
		policy_refuse(res, t->shadow, IG_LIMIT_OUTPUT_TOKENS, 0,
		    "'%s' is %" PRIu64 ", more than this key may ask for "
		    "(%" PRIu64 ")", field, req->max_tokens, cap);
		if (res->limit == IG_LIMIT_OUTPUT_TOKENS)
			res->param = field;
		if (!res->admitted)
			return;
	}
	out->max_tokens = cap;
	out->set_body = true;
	out->clamped = true;
}

int
ig_policy_request(const struct ig_tenant_conf *t, uint64_t input,
    const struct ig_request_info *req, uint64_t context_tokens,
    struct ig_output_decision *out, struct ig_admit_result *res)
{
	uint64_t	 max_in = t->limits.max_input_tokens;

	policy_admitted(res);
	memset(out, 0, sizeof(*out));
	if (max_in != 0 && input > max_in) {
		policy_refuse(res, t->shadow, IG_LIMIT_INPUT_TOKENS, 0,
		    "This request has about %" PRIu64 " input tokens, more "
		    "than this key may send (%" PRIu64 ")", input, max_in);
		if (!res->admitted)
			return -1;
	}
	policy_output(t, input, req, context_tokens, out, res);
	return res->admitted ? 0 : -1;
}

static uint64_t
policy_sub(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

/* Until the current one-second bucket leaves the sliding window. */
static uint64_t
policy_window_reset_now(uint64_t now_ms)
{
	return (now_ms / 1000 + IG_WINDOW_BUCKETS) * 1000 - now_ms;
}

static void
policy_headers(const struct ig_tenant_limits *l, uint64_t reserve,
    const struct ig_policy_state *st, bool taken, struct ig_ratelimit *rl)
{
	uint64_t	 used;

	memset(rl, 0, sizeof(*rl));
	if (l->requests_per_minute != 0) {
		rl->has_requests = true;
		rl->limit_requests = l->requests_per_minute;
		used = st->win_requests + (taken ? 1 : 0);
		rl->remaining_requests = policy_sub(l->requests_per_minute, used);
		rl->reset_requests_ms = taken ?
		    policy_window_reset_now(st->now_ms) : st->req_reset_ms;
	}
	if (l->tokens_per_minute != 0) {
		rl->has_tokens = true;
		rl->limit_tokens = l->tokens_per_minute;
		used = st->win_tokens + (taken ? reserve : 0);
		rl->remaining_tokens = policy_sub(l->tokens_per_minute, used);
		rl->reset_tokens_ms = taken && reserve > 0 ?
		    policy_window_reset_now(st->now_ms) : st->tok_reset_ms;
	}
}

int
ig_policy_decide(const struct ig_tenant_limits *l, bool shadow,
    uint64_t reserve, const struct ig_policy_state *st,
    struct ig_admit_result *res)
{
	policy_admitted(res);
	if (l->max_concurrent_requests != 0 &&
	    st->concurrent >= l->max_concurrent_requests)
		policy_refuse(res, shadow, IG_LIMIT_CONCURRENCY,
		    st->lease_free_ms, "Too many concurrent requests for this "
		    "key (limit %" PRIu64 ")", l->max_concurrent_requests);
	else if (l->requests_per_minute != 0 &&
	    st->win_requests + 1 > l->requests_per_minute)
		policy_refuse(res, shadow, IG_LIMIT_RPM, st->req_free_ms,
		    "Rate limit reached for requests per minute (limit %"
		    PRIu64 ")", l->requests_per_minute);
	else if (l->tokens_per_minute != 0 &&
	    st->win_tokens + reserve > l->tokens_per_minute)
		policy_refuse(res, shadow, IG_LIMIT_TPM, st->tok_free_ms,
		    "Rate limit reached for tokens per minute (limit %" PRIu64
		    ", this request reserves %" PRIu64 ")",
		    l->tokens_per_minute, reserve);
	else if (l->daily_token_budget != 0 &&
	    st->day_tokens + reserve > l->daily_token_budget)
		policy_refuse(res, shadow, IG_LIMIT_DAILY, st->day_reset_ms,
		    "Daily token budget exhausted (budget %" PRIu64 ", used %"
		    PRIu64 ", this request reserves %" PRIu64 ")",
		    l->daily_token_budget, st->day_tokens, reserve);
	policy_headers(l, reserve, st, res->admitted, &res->rl);
	return res->admitted;
}

void
ig_policy_store_unavailable(struct ig_admit_result *res)
{
	memset(res, 0, sizeof(*res));
	policy_refuse(res, false, IG_LIMIT_STORE, 1000,
	    "The budget store is unavailable; retry shortly");
}

/* The x-ratelimit-reset-* form of MS (see ig_ratelimit_format_reset). */
static void
policy_fmt_reset(struct ig_fmt *f, uint64_t ms)
{
	uint64_t	 h = ms / 3600000, m = ms / 60000 % 60;
	uint64_t	 s = ms / 1000 % 60, frac = ms % 1000;
	char		 fs[4];
	size_t		 nf = 0;

	if (ms < 1000) {
		ig_fmt_u64(f, ms);
		if (ms == 0)
			ig_fmt_lit(f, "s");
		else
			ig_fmt_lit(f, "ms");
		return;
	}
	if (frac != 0) {	/* ".5", ".25", ".125": no trailing zeros */
		fs[nf++] = '.';
		fs[nf++] = (char)('0' + frac / 100);
		if (frac % 100 != 0)
			fs[nf++] = (char)('0' + frac / 10 % 10);
		if (frac % 10 != 0)
			fs[nf++] = (char)('0' + frac % 10);
	}
	if (h != 0) {
		ig_fmt_u64(f, h);
		ig_fmt_lit(f, "h");
	}
	if (h != 0 || m != 0) {
		ig_fmt_u64(f, m);
		ig_fmt_lit(f, "m");
	}
	ig_fmt_u64(f, s);
	ig_fmt_mem(f, fs, nf);
	ig_fmt_lit(f, "s");
}

int
ig_ratelimit_format_reset(uint64_t ms, char *buf, size_t len)
{
	struct ig_fmt	 f = IG_FMT_INIT(buf, len);

	policy_fmt_reset(&f, ms);
	return f.overflow ? -1 : (int)f.len;
}

/* Three x-ratelimit-*-KIND lines: limit, remaining, reset (KIND: a literal). */
#define policy_fmt_limit(f, kind, limit, remaining, reset_ms) do {	\
	ig_fmt_lit((f), "x-ratelimit-limit-" kind ": ");		\
	ig_fmt_u64((f), (limit));					\
	ig_fmt_lit((f), "\r\nx-ratelimit-remaining-" kind ": ");	\
	ig_fmt_u64((f), (remaining));					\
	ig_fmt_lit((f), "\r\nx-ratelimit-reset-" kind ": ");		\
	policy_fmt_reset((f), (reset_ms));				\
	ig_fmt_lit((f), "\r\n");					\
} while (0)

int
ig_ratelimit_format(const struct ig_ratelimit *rl, char *buf, size_t len)
{
	struct ig_fmt	 f = IG_FMT_INIT(buf, len);

	if (len == 0)
		return -1;
	buf[0] = '\0';
	if (rl->has_requests)
		policy_fmt_limit(&f, "requests", rl->limit_requests,
		    rl->remaining_requests, rl->reset_requests_ms);
	if (rl->has_tokens)
		policy_fmt_limit(&f, "tokens", rl->limit_tokens,
		    rl->remaining_tokens, rl->reset_tokens_ms);
	return f.overflow ? -1 : (int)f.len;
}

uint64_t
ig_policy_day(uint64_t now_ms, uint64_t day_offset_s)
{
	uint64_t	 s = now_ms / 1000;

	return s >= day_offset_s ? (s - day_offset_s) / 86400 : 0;
}

uint64_t
ig_policy_day_reset_ms(uint64_t now_ms, uint64_t day_offset_s)
{
	uint64_t	 end;

	end = ((ig_policy_day(now_ms, day_offset_s) + 1) * 86400 +
	    day_offset_s) * 1000;
	return end - now_ms;
}
