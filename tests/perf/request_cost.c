/*
 * Instructions per request on the hot path, old (jansson) against new
 * (raw-byte scan and splice), for the benchmark's body: counted by
 * callgrind, which is repeatable where wall-clock timing is not.
 *
 *   make request-cost
 *
 * runs each path N times under valgrind --tool=callgrind, counting only
 * inside the path_* function (--toggle-collect), and prints instructions
 * per request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "infergate/admission.h"
#include "../unit/json_oracle.h"

#define N	1000

static const char body[] = "{\"model\": \"bench-model\", \"max_tokens\": 16, "
    "\"messages\": [{\"role\": \"user\", \"content\": \"Say hello in one "
    "short sentence.\"}]}";

static const struct ig_model_conf model = { .bytes_per_token = 4,
    .tokens_per_message = 3 };

static volatile uint64_t sink;

/*
 * The jansson path: proxy_request's load and checks, admit_start's parse
 * and estimate, proxy_admitted's model rewrite and re-serialization.
 */
__attribute__((noinline)) static void
path_old(void)
{
	struct ig_request_info req;
	struct ig_request_error err;
	json_t		*j, *m, *s;
	char		*out;

	j = json_loadb(body, sizeof(body) - 1, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(j))
		abort();
	m = json_object_get(j, "model");
	s = json_object_get(j, "stream");
	if (!json_is_string(m) || (s != NULL && !json_is_boolean(s) &&
	    !json_is_null(s)))
		abort();
	if (ig_request_parse_json(j, IG_EP_CHAT, &req, &err) == -1)
		abort();
	sink += ig_request_estimate_input(&req, &model);
	json_object_set_new(j, "model", json_string("bench-model"));
	out = json_dumps(j, JSON_COMPACT);
	sink += strlen(out);
	free(out);
	json_decref(j);
}

/* The new path: one scan, the estimate, the model spliced in. */
__attribute__((noinline)) static void
path_new(void)
{
	static const struct ig_request_edits edits = { "bench-model", 11,
	    false, 0, false };
	struct ig_request_info req;
	struct ig_request_error err;
	struct ig_request_body out;

	if (ig_request_parse(body, sizeof(body) - 1, IG_EP_CHAT, &req,
	    &err) == -1)
		abort();
	sink += ig_request_estimate_input(&req, &model);
	if (ig_request_edit(body, sizeof(body) - 1, &req, &edits, &out) == -1)
		abort();
	sink += out.len;
}

int
main(int argc, char **argv)
{
	void		(*path)(void) = path_new;
	int		 i;

	if (argc > 1 && strcmp(argv[1], "old") == 0)
		path = path_old;
	for (i = 0; i < N; i++)
		path();
	printf("%d requests\n", N);
	return 0;
}
