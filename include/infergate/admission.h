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
 *   ig_request_parse(body, len, endpoint, &req, &perr)
 *                                              -> or 400 perr.code, .param
 *   (routing: model allowed?                   -> 403 model_not_allowed / 404)
 *   perr again, if it was admission's          -> 400 perr.code, .param
 *   ig_request_estimate_input(&req, model)     -> estimated input tokens
 *   ig_policy_request(limits, over, in, &req, ctx, &out, &res)
 *                                              -> or 400 (res has the error)
 *   ig_request_edit(body, len, &req, &edits, &pieces)
 *        edits: upstream model name, out.max_tokens if out.set_body,
 *        force_usage if req.stream && !req.client_usage
 *   ig_store_admit(...)                        (store.h)
 *   ig_usage_event() / ig_usage_parse() on the response
 */
#ifndef INFERGATE_ADMISSION_H
#define INFERGATE_ADMISSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "infergate/config.h"


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
 * wiped. The key itself is neither copied nor kept (ig_auth_lookup_memo
 * keeps it, for the connection that sent it).
 */
const struct ig_tenant_conf *ig_auth_lookup(const struct ig_auth *,
		    const char *key, size_t keylen);

/*
 * The last key a keep-alive connection authenticated with, so that its
 * next requests with the same key skip the hash: the key's bytes (kept by
 * the connection, wiped when it changes or is cleared), its tenant, and
 * the table it was found in (a serial, unique per ig_auth_create(); a
 * reload's new table never matches). Zero-initialised = empty.
 */
struct ig_auth_memo {
	uint64_t	 serial;	/* 0: empty */
	const struct ig_tenant_conf *tenant;
	char		*key;
	size_t		 keylen;
	size_t		 cap;
};

/*
 * ig_auth_lookup() through MEMO: a key equal (in constant time) to the
 * memo's, in the same table, gives the memo's tenant without hashing; a
 * key found by the hash replaces the memo's. A key not found leaves the
 * memo as it was. The lengths are compared first: the time taken can
 * tell a client whether its key is as long as the last one accepted on
 * its connection, nothing more.
 */
const struct ig_tenant_conf *ig_auth_lookup_memo(const struct ig_auth *,
		    struct ig_auth_memo *, const char *key, size_t keylen);
void		 ig_auth_memo_clear(struct ig_auth_memo *);

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

/* --- request parsing and estimation (admission/request.c) ------------- */

enum ig_endpoint {
	IG_EP_CHAT,		/* /v1/chat/completions */
	IG_EP_COMPLETIONS,	/* /v1/completions */
	IG_EP_EMBEDDINGS	/* /v1/embeddings */
};

/* Where the client put its output cap. */
enum ig_max_field { IG_MAX_NONE, IG_MAX_TOKENS, IG_MAX_COMPLETION_TOKENS };

/* A value's bytes in the request body: [off, off + len); len 0: absent. */
struct ig_span {
	size_t		 off;
	size_t		 len;
};

#define IG_MODEL_MAX	255	/* bytes of a model name that had escapes */

/*
 * What routing and admission need from a request body, and where
 * ig_request_edit() changes it. MODEL points into the body, which must
 * outlive the struct, or (when the JSON string had escapes) into
 * MODEL_BUF, decoded and NUL-terminated: so the struct is not to be copied.
 * In the body MODEL is not NUL-terminated: print it with "%.*s" and
 * (int)model_len (bounded, for "%.128s": model_len < 128 ? model_len : 128).
 */
/* "n" and "best_of" at most this (the OpenAI API's own bound on n). */
#define IG_CHOICES_MAX	128

struct ig_request_info {
	enum ig_endpoint endpoint;
	const char	*model;		/* decoded, model_len bytes */
	size_t		 model_len;
	bool		 stream;	/* "stream": true, and not embeddings */
	enum ig_max_field max_field;	/* the field the client used */
	uint64_t	 max_tokens;	/* the larger of the two when both */
	/* completions generated: n, or best_of when larger (completions);
	 * max_tokens is per choice, the reservation is for all of them */
	uint64_t	 choices;
	bool		 client_usage;	/* stream_options.include_usage: true */
	uint64_t	 prompt_bytes;	/* text bytes of the prompt, decoded */
	uint64_t	 prompt_token_ids;	/* prompts given as token ids */
	uint64_t	 messages;	/* chat messages (0 otherwise) */
	/* the body's layout, for ig_request_edit() */
	struct ig_span	 at_model;	/* the "model" value, quotes included */
	struct ig_span	 at_max_tokens;
	struct ig_span	 at_max_completion_tokens;
	struct ig_span	 at_stream_options;
	struct ig_span	 at_include_usage;	/* in an object stream_options */
	bool		 stream_options_empty;	/* stream_options is {} */
	size_t		 close;		/* the offset of the body's final '}' */
	bool		 empty;		/* the body is {} */
	char		 model_buf[IG_MODEL_MAX + 1];
};

/*
 * Why a body is refused: CODE is the OpenAI error code, PARAM the
 * parameter ("" for none: JSON null), MESSAGE the text. CODE is NULL only
 * when memory ran out (503 server_error). ADMISSION: an error of
 * admission's checks, which the gateway answers only for a request with a
 * tenant (see ig_request_parse).
 */
struct ig_request_error {
	const char	*code;
	bool		 admission;
	char		 param[96];	/* "messages[2].content", "max_tokens" */
	char		 message[192];
};

/*
 * Scans the raw request body (BODY, LEN bytes, not NUL-terminated) once,
 * without jansson and without allocating (unless it has more than 512 JSON
 * tokens). It accepts exactly the bodies json_loadb(JSON_REJECT_DUPLICATES)
 * accepts that are objects. The checks, in order, and their errors:
 *
 *   invalid_json                ""      an empty body; invalid JSON
 *                                       ("invalid JSON body: <what> at byte
 *                                       <n>"); not an object
 *   missing_required_parameter  model   no "model"
 *   invalid_type                model   "model" not a string (null either)
 *   invalid_value               model   "model" with escapes decoding to
 *                                       more than IG_MODEL_MAX bytes
 *   invalid_type                stream  "stream" not a boolean nor null,
 *                                       whatever the endpoint
 * then admission's (err->admission set, code invalid_value): "model" is
 * "", then messages (chat) / prompt (completions) / input (embeddings),
 * then (not embeddings) stream_options and its include_usage, max_tokens,
 * max_completion_tokens (chat), each named by PARAM.
 *
 * Returns 0 with *REQ filled, or -1 with *ERR filled. With err->admission
 * the body is otherwise sound and REQ's model, stream and layout are
 * filled (its counts may be partial), so that the gateway, as before:
 *
 *   rc = ig_request_parse(body, len, ep, &req, &err);
 *   rc == -1 && !err.admission   -> 400 invalid_request_error err.code
 *                                   err.param err.message (503 if no code)
 *   resolve req.model, model_len -> 404 model_not_found, 403, 400 no_route
 *   rc == -1 && tenant           -> 400 invalid_request_error err.code ...
 *   rc == -1, no tenant          -> forwarded as it came
 */
int		 ig_request_parse(const char *body, size_t len, enum ig_endpoint,
		    struct ig_request_info *req, struct ig_request_error *err);

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

/* The edits the gateway makes to a body before it forwards it. */
struct ig_request_edits {
	const char	*model;		/* the new "model" (UTF-8), NULL: kept */
	size_t		 model_len;
	bool		 set_max_tokens;	/* the output cap to write */
	uint64_t	 max_tokens;
	bool		 force_usage;	/* ask the backend for stream usage */
};

/* A piece of an edited body. */
struct ig_splice {
	const char	*p;
	size_t		 len;
};

#define IG_SPLICE_MAX	16

/* An edited body: the pieces, in order, and what they may point into. */
struct ig_request_body {
	struct ig_splice piece[IG_SPLICE_MAX];
	size_t		 npieces;
	size_t		 len;		/* the pieces' total length */
	size_t		 used;		/* of buf */
	char		 buf[512];	/* numbers, an escaped model name */
};

/*
 * The body BODY (LEN bytes, which ig_request_parse() scanned into REQ)
 * with EDITS made, as pieces whose concatenation is the new body (for
 * writev() or evbuffer_add() each). Values are replaced where they are,
 * the client's order and blanks kept; a member added goes last, compact.
 * The edits are those the jansson functions made:
 *
 *   model           "model" becomes EDITS->model, JSON-escaped
 *   set_max_tokens  not for embeddings: MAX_TOKENS into the field the
 *                   client used (max_completion_tokens, and max_tokens too
 *                   when it was sent and not null), else into max_tokens
 *                   (replaced, or added); written as an int64_t
 *   force_usage     only for a streamed request, not for embeddings:
 *                   "include_usage": true merged into stream_options,
 *                   keeping the client's other keys; stream_options
 *                   {"include_usage":true} when absent or not an object
 *
 * No edit: one piece, the whole body. The pieces point into BODY, into
 * EDITS->model, into static text and into OUT->buf: all of them must
 * outlive the write. Returns 0, or -1 (nothing usable in OUT) when the
 * model name is not valid UTF-8 or its escaped form does not fit
 * OUT->buf (a name that needs no escaping never is copied).
 */
int		 ig_request_edit(const char *body, size_t len,
		    const struct ig_request_info *req,
		    const struct ig_request_edits *edits,
		    struct ig_request_body *out);

/* --- usage in responses (admission/usage.c) ---------------------------- */

/*
 * A response's usage object, as admit_read_usage() reads it: JSON (LEN
 * bytes) starts with the object (blanks allowed before it) and the bytes
 * after it are not read (jansson's JSON_DISABLE_EOF_CHECK); a key sent
 * twice counts once, the last. When prompt_tokens or total_tokens is an
 * integer, sets
 *
 *   *PROMPT      prompt_tokens, or 0
 *   *COMPLETION  completion_tokens, or else total_tokens - *PROMPT (an
 *                absent total counting 0; modulo 2^64)
 *
 * (integers are int64_t converted to uint64_t) and returns 0; otherwise,
 * or when the object is not valid JSON, returns -1 and sets nothing.
 */
int		 ig_usage_parse(const char *json, size_t len, uint64_t *prompt,
		    uint64_t *completion);

/* One streamed chunk, as admit_sse_event() needs it. */
struct ig_usage_event {
	bool		 choices;	/* "choices" is a non-empty array */
	bool		 no_choices;	/* "choices" is [] */
	bool		 usage;		/* "usage" is an object */
	bool		 usage_known;	/* and ig_usage_parse() read it: */
	uint64_t	 prompt;
	uint64_t	 completion;
};

/*
 * One SSE event's data (the bytes after "data:", a chat.completion.chunk):
 * all of DATA must be one JSON object or array, blanks around it; a key
 * sent twice counts once, the last. Returns 0 with *EV filled, or -1 with
 * *EV zeroed when DATA is not that. The gateway then, as before: counts
 * EV->prompt and EV->completion when usage_known; does not forward the
 * chunk when usage && no_choices and the client did not ask for usage;
 * counts one more chunk of output when choices.
 */
int		 ig_usage_event(const char *data, size_t len,
		    struct ig_usage_event *ev);

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
/* "low", "normal", "high": the config's words, the header's, the log's. */
const char	*ig_priority_name(enum ig_priority);

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
