/*
 * infergate: admission, the pure parts. API-key authentication, request
 * parsing and token estimation, the body edits the gateway makes before it
 * forwards a request, and the admission policy over plain numbers. Nothing
 * here does I/O; the budget store (infergate/store.h) is the asynchronous
 * part.
 *
 * The order the gateway calls things in, for one request:
 *
 *   ig_auth_key_from_header() over the request headers -> key
 *   ig_auth_lookup(auth, key)                  -> tenant, or 401 invalid_api_key
 *   (routing: model allowed?                   -> 403 model_not_allowed / 404)
 *   ig_request_parse(body, endpoint, &req, &perr) -> or 400 naming perr.param
 *   ig_request_estimate_input(&req, model)     -> estimated input tokens
 *   ig_policy_request(limits, over, in, &req, ctx, &out, &res)
 *                                              -> or 400 (res has the error)
 *   ig_request_set_max_tokens(body, &req, out.max_tokens)  if out.set_body
 *   ig_request_force_usage(body, &req)         if req.stream
 *   ig_store_admit(...)                        (store.h)
 */
#ifndef INFERGATE_ADMISSION_H
#define INFERGATE_ADMISSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "infergate/config.h"

struct json_t;			/* jansson's json_t */

/* --- authentication (admission/auth.c) --------------------------------- */

struct ig_auth;

/*
 * Builds the key table of a config's tenants: sha256(key) -> tenant. Built
 * once per config load; the tenants must outlive the table (they belong to
 * the same config). Returns NULL with *err malloc'd (caller frees) when a
 * key is listed twice.
 */
struct ig_auth	*ig_auth_create(const struct ig_tenant_conf *tenants,
		    size_t ntenants, char **err);
void		 ig_auth_free(struct ig_auth *);

/*
 * The tenant an API key belongs to, or NULL. The key is hashed (sha256) and
 * the digest compared in constant time (CRYPTO_memcmp); the digest copy is
 * wiped. The key itself is neither copied nor kept.
 */
const struct ig_tenant_conf *ig_auth_lookup(const struct ig_auth *,
		    const char *key, size_t keylen);

/*
 * If the header NAME (case-insensitive) carries an API key, points *key at
 * it inside VALUE (no copy), sets *keylen and returns 1; 0 otherwise.
 * Recognised: "Authorization: Bearer <key>" (scheme case-insensitive),
 * "api-key: <key>", "x-api-key: <key>". Surrounding blanks are ignored; an
 * empty key is no key.
 */
int		 ig_auth_key_from_header(const char *name, const char *value,
		    size_t valuelen, const char **key, size_t *keylen);

/* "sha256:<64 lowercase hex>" of a key into OUT (at least 72 bytes). */
void		 ig_auth_hash_hex(const char *key, size_t keylen, char out[72]);

/*
 * `infergate -k`: reads one key (a line; the trailing newline and CR are
 * not part of it) from IN and writes its "sha256:<hex>\n" line to OUT. The
 * line buffer is wiped. Returns 0, or -1 with *err malloc'd.
 */
int		 ig_auth_hash_line(FILE *in, FILE *out, char **err);

/* --- request parsing and estimation (admission/estimate.c) ------------- */

enum ig_endpoint {
	IG_EP_CHAT,		/* /v1/chat/completions */
	IG_EP_COMPLETIONS,	/* /v1/completions */
	IG_EP_EMBEDDINGS	/* /v1/embeddings */
};

/* Where the client put its output cap. */
enum ig_max_field { IG_MAX_NONE, IG_MAX_TOKENS, IG_MAX_COMPLETION_TOKENS };

/*
 * What admission needs from a request body. Strings point into the body
 * (json_t) and live as long as it does.
 */
struct ig_request_info {
	enum ig_endpoint endpoint;
	const char	*model;
	bool		 stream;
	enum ig_max_field max_field;	/* the field the client used */
	uint64_t	 max_tokens;	/* the larger of the two when both */
	bool		 client_usage;	/* stream_options.include_usage: true */
	uint64_t	 prompt_bytes;	/* text bytes of the prompt */
	uint64_t	 prompt_token_ids;	/* prompts given as token ids */
	uint64_t	 messages;	/* chat messages (0 otherwise) */
};

struct ig_request_error {
	char		 param[96];	/* "messages[2].content", "max_tokens" */
	char		 message[192];
};

/*
 * Reads the fields admission needs from a parsed request body. Returns 0,
 * or -1 with *err filled (the gateway answers 400 invalid_request_error
 * with err->param and err->message). Does not modify BODY.
 */
int		 ig_request_parse(const struct json_t *body, enum ig_endpoint,
		    struct ig_request_info *, struct ig_request_error *err);

/*
 * Estimated input tokens:
 *
 *   ceil(prompt_bytes / bytes_per_token)
 *     + tokens_per_message * messages
 *     + prompt_token_ids
 *
 * bytes_per_token <= 0 counts as 4 (the usual ratio for English text with
 * BPE tokenizers); MODEL may be NULL (4 and 0). Prompts already given as
 * token ids are counted exactly. Non-text parts (images, audio) are not
 * counted: they are model-specific and the backend's usage settles them.
 */
uint64_t	 ig_request_estimate_input(const struct ig_request_info *,
		    const struct ig_model_conf *model);

/*
 * Sets the output cap in BODY to MAX_TOKENS: in the field the client used
 * (both, when it sent both), else "max_tokens". Returns 0 or -1 (no
 * memory). Not for embeddings.
 */
int		 ig_request_set_max_tokens(struct json_t *body,
		    const struct ig_request_info *, uint64_t max_tokens);

/*
 * For a streamed request, merges "include_usage": true into
 * stream_options, keeping the client's other keys (creating the object
 * when absent). Whether the client asked itself is req->client_usage: when
 * false the gateway strips the final usage chunk. Returns 0 or -1. A
 * no-op returning 0 when the request does not stream.
 */
int		 ig_request_force_usage(struct json_t *body,
		    const struct ig_request_info *);

/* --- the policy (admission/policy.c) ----------------------------------- */

enum ig_limit {
	IG_LIMIT_NONE,
	IG_LIMIT_INPUT_TOKENS,		/* 400 context_length_exceeded */
	IG_LIMIT_OUTPUT_TOKENS,		/* 400 max_tokens_exceeded (reject) */
	IG_LIMIT_CONCURRENCY,		/* 429 concurrency_limit_exceeded */
	IG_LIMIT_RPM,			/* 429 rate_limit_exceeded */
	IG_LIMIT_TPM,			/* 429 rate_limit_exceeded */
	IG_LIMIT_DAILY,			/* 429 budget_exceeded */
	IG_LIMIT_STORE			/* 503 store_unavailable */
};

/* "max_input_tokens", ..., "store": for logs and metric labels. */
const char	*ig_limit_name(enum ig_limit);

/* Values of the x-ratelimit-* headers (OpenAI's), at admission. */
struct ig_ratelimit {
	bool		 has_requests;	/* requests_per_minute is set */
	uint64_t	 limit_requests;
	uint64_t	 remaining_requests;
	uint64_t	 reset_requests_ms;	/* until the window is empty */
	bool		 has_tokens;	/* tokens_per_minute is set */
	uint64_t	 limit_tokens;
	uint64_t	 remaining_tokens;
	uint64_t	 reset_tokens_ms;
};

/*
 * The outcome of admission. On a refusal the gateway answers STATUS with
 * the OpenAI error JSON {"error": {"message", "type", "param": null,
 * "code"}} and, when retry_after_s > 0, "Retry-After: <retry_after_s>".
 * Admitted responses carry the x-ratelimit-* headers (ig_ratelimit_format).
 */
struct ig_admit_result {
	bool		 admitted;
	enum ig_limit	 limit;		/* the limit that refused (or would) */
	int		 status;	/* 200, 400, 429, 503 */
	const char	*code;		/* NULL when admitted (and not shadow) */
	const char	*type;		/* OpenAI error type */
	const char	*param;		/* OpenAI error param, NULL: null */
	char		 message[160];
	uint64_t	 retry_after_s;	/* 0: no Retry-After */
	bool		 would_refuse;	/* shadow: admitted, but limit refused */
	bool		 degraded;	/* answered without the configured store */
	struct ig_ratelimit rl;
};

/* The output cap decided for a request (ig_policy_request). */
struct ig_output_decision {
	uint64_t	 max_tokens;	/* to reserve and to forward */
	bool		 set_body;	/* write max_tokens into the body */
	bool		 clamped;	/* the client asked for more than the cap */
};

/*
 * The checks that need no store, in order: max_input_tokens, then
 * max_output_tokens. INPUT is the estimate; REQ gives the client's cap.
 * When the client gave none, the tenant's max_output_tokens is set in the
 * body; with no tenant cap either, CONTEXT_TOKENS - INPUT is reserved when
 * the model's context is known (the backend's own default), else 0, and
 * the body is left alone. Over the cap: clamp (set_body, clamped; the
 * gateway adds "x-infergate-max-tokens-clamped: <cap>") or reject (400).
 *
 * Returns 0 with *OUT filled (and RES zeroed and admitted), or -1 with RES
 * filled with the refusal. In shadow mode (tenant->shadow) it never
 * returns -1: RES->would_refuse and RES->limit say what would have
 * refused, and the request goes on (an oversized max_tokens is clamped
 * anyway, that changes no outcome for the client but bounds the spend).
 */
int		 ig_policy_request(const struct ig_tenant_conf *tenant,
		    uint64_t input, const struct ig_request_info *req,
		    uint64_t context_tokens, struct ig_output_decision *out,
		    struct ig_admit_result *res);

/*
 * What a store knows about a tenant at admission, before this request:
 * plain numbers, so the decision is the same for every store. The minute
 * windows are sliding, in one-second buckets: a request at second S counts
 * against buckets S-60 .. S (61 buckets), which guarantees that no 60-second
 * interval, wherever it starts, ever holds more than the limit (the
 * earliest request of any interval ending at the admission lies in those
 * buckets), at the cost of refusing up to one second early.
 */
struct ig_policy_state {
	uint64_t	 now_ms;	/* the store's clock */
	uint64_t	 concurrent;	/* live leases */
	uint64_t	 lease_free_ms;	/* until the earliest lease expires */
	uint64_t	 win_requests;	/* in the sliding minute */
	uint64_t	 req_free_ms;	/* until one more request fits */
	uint64_t	 req_reset_ms;	/* until the window is empty */
	uint64_t	 win_tokens;
	uint64_t	 tok_free_ms;	/* until RESERVE more tokens fit */
	uint64_t	 tok_reset_ms;
	uint64_t	 day_tokens;	/* reserved or used today */
	uint64_t	 day_reset_ms;	/* until the budget day rolls */
};

/*
 * The store checks, in order: max_concurrent_requests,
 * requests_per_minute, tokens_per_minute, daily_token_budget, for a
 * reservation of RESERVE tokens. Fills RES (headers included) and returns
 * 1 when the store must take the lease and reserve (admitted, or shadow),
 * 0 when it refuses.
 */
int		 ig_policy_decide(const struct ig_tenant_limits *, bool shadow,
		    uint64_t reserve, const struct ig_policy_state *,
		    struct ig_admit_result *res);

/* The 503 store_unavailable refusal (Retry-After: 1). */
void		 ig_policy_store_unavailable(struct ig_admit_result *res);

/*
 * A duration the way OpenAI writes x-ratelimit-reset-*: "59ms", "1s",
 * "1.5s", "6m0s", "1h2m3s", "0s". Returns the length (snprintf's).
 */
int		 ig_ratelimit_format_reset(uint64_t ms, char *buf, size_t len);

/*
 * The x-ratelimit-* header lines ("name: value\r\n" each) of RL into BUF.
 * Returns the length written, or -1 if BUF is too small (512 bytes always
 * suffice).
 */
int		 ig_ratelimit_format(const struct ig_ratelimit *rl, char *buf,
		    size_t len);

/* Minute and day arithmetic shared by the stores (milliseconds). */
#define IG_WINDOW_BUCKETS	61	/* one-second buckets S-60 .. S */
uint64_t	 ig_policy_day(uint64_t now_ms, uint64_t day_offset_s);
uint64_t	 ig_policy_day_reset_ms(uint64_t now_ms, uint64_t day_offset_s);

#endif
