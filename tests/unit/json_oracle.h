/*
 * The jansson reference for the raw-byte request scanner, shared by
 * tests/unit/test_request.c and tests/fuzz/fuzz_request.c: what the gateway
 * computed before ig_request_parse(), ig_request_edit(), ig_usage_parse()
 * and ig_usage_event() took over, and the checks that the two agree.
 */
#ifndef INFERGATE_JSON_ORACLE_H
#define INFERGATE_JSON_ORACLE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "infergate/admission.h"

/* The jansson path (tests/unit/request_json.c) */

/*
 * The parse and the edits over a jansson tree that ig_request_parse() and
 * ig_request_edit() replace, as the gateway
 * called them before: the reference the differential test and the fuzzer
 * check the new functions against (tests/unit/test_request.c,
 * tests/fuzz/fuzz_request.c). ig_request_parse_json() makes admission's checks
 * only (errors invalid_value, err->admission set), BODY being an object.
 */
int		 ig_request_parse_json(const struct json_t *body,
		    enum ig_endpoint, struct ig_request_info *,
		    struct ig_request_error *err);
int		 ig_request_set_max_tokens_json(struct json_t *body,
		    const struct ig_request_info *, uint64_t max_tokens);
int		 ig_request_force_usage_json(struct json_t *body,
		    const struct ig_request_info *);


/*
 * gateway/proxy.c's checks (JSON, model, stream), then
 * ig_request_parse_json(): the same contract as ig_request_parse(). *TREE
 * is the parsed body when the JSON was accepted (the caller decrefs), else
 * NULL.
 */
int		 oracle_parse(const char *body, size_t len, enum ig_endpoint,
		    struct ig_request_info *, struct ig_request_error *,
		    json_t **tree);

/*
 * Compares ig_request_parse() with oracle_parse() on BODY, then (when the
 * body was accepted) ig_request_edit() with the jansson edits for a few
 * edit sets. Returns NULL if they agree, else what differs (static text).
 */
const char	*oracle_check_request(const char *body, size_t len,
		    enum ig_endpoint);

/* The same for ig_usage_parse() and ig_usage_event() on DATA. */
const char	*oracle_check_usage(const char *data, size_t len);

/* Whether json_loadb(JSON_REJECT_DUPLICATES) accepts BODY as an object. */
bool		 oracle_accepts(const char *body, size_t len);

#endif
