/*
 * libFuzzer target: the raw-byte request scanner against jansson. Each
 * input is checked as a request body for the three endpoints (parse
 * decision, error, info, and the spliced edits against jansson's), as the
 * messages of a chat body, and as a usage object and an SSE chunk; any
 * disagreement aborts.
 *
 *   make fuzz && build/fuzz/fuzz_request -dict=tests/fuzz/json.dict \
 *       -max_total_time=600 build/fuzz/corpus tests/fuzz/corpus
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_oracle.h"

int	 LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
check(const char *what, const char *body, size_t len, int ep)
{
	if (what == NULL)
		return;
	fprintf(stderr, "disagreement (endpoint %d): %s\n", ep, what);
	fwrite(body, 1, len, stderr);
	fputc('\n', stderr);
	abort();
}

/* DATA as the messages of a chat request: reaches admission's checks. */
static void
check_wrapped(const char *data, size_t size)
{
	static const char head[] = "{\"model\":\"m\",\"stream\":true,"
	    "\"messages\":[";
	static const char tail[] = "]}";
	char		*b = malloc(sizeof(head) + size + sizeof(tail));
	size_t		 n = 0;

	if (b == NULL)
		abort();
	memcpy(b, head, sizeof(head) - 1);
	n += sizeof(head) - 1;
	memcpy(b + n, data, size);
	n += size;
	memcpy(b + n, tail, sizeof(tail) - 1);
	n += sizeof(tail) - 1;
	check(oracle_check_request(b, n, IG_EP_CHAT), b, n, IG_EP_CHAT);
	free(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char	*b = (const char *)data;
	int		 ep;

	for (ep = IG_EP_CHAT; ep <= IG_EP_EMBEDDINGS; ep++)
		check(oracle_check_request(b, size, ep), b, size, ep);
	check_wrapped(b, size);
	check(oracle_check_usage(b, size), b, size, -1);
	return 0;
}
