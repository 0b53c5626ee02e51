/*
 * The JSON scanner itself (admission/json_scan.c), where test_request.c
 * cannot reach it: the work it does on inputs built to make it slow.
 * (json_scan.h's names clash with jansson's, so not beside the oracle.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../admission/json_scan.h"

/*
 * Linear whatever the input: counted, not timed. The pass reads each byte
 * once by construction; what else the scanner does is in its steps (key
 * comparisons, tokens moved as the array grows), bounded here by n log n
 * at worst.
 */
static void
test_json_scan_linear(void **state)
{
	enum { DEEP = 100000, STRS = 1 << 20, KEYS = 100000 };
	struct json_scan js;
	char		*b = malloc(STRS + 64);
	size_t		 n, i;

	assert_non_null(b);
	/* 100k '[': refused at the 2049th, nothing past it read */
	memset(b, '[', DEEP);
	memset(b + DEEP, ']', DEEP);
	assert_int_equal(json_scan_parse(&js, b, 2 * DEEP, 0), -1);
	assert_string_equal(js.err, "nesting too deep");
	assert_int_equal(js.errpos, JSON_MAX_DEPTH);
	/* 1 MiB of one-letter strings: the token array doubles, copies < 2n */
	n = 0;
	b[n++] = '[';
	while (n < STRS)
		n += (size_t)sprintf(b + n, "\"a\",");
	b[n - 1] = ']';
	assert_int_equal(json_scan_parse(&js, b, n, 0), 0);
	assert_int_equal(js.ntok, 1 + (n - 1) / 4);
	assert_int_equal(json_size(&js, 0), (n - 1) / 4);
	assert_true(js.steps < 2 * (size_t)js.ntok);
	json_scan_free(&js);
	/* one string of 1 MiB: no step beyond the pass */
	b[0] = '[';
	b[1] = '"';
	memset(b + 2, 'a', STRS);
	memcpy(b + 2 + STRS, "\"]", 2);
	assert_int_equal(json_scan_parse(&js, b, STRS + 4, 0), 0);
	assert_int_equal(js.ntok, 2);
	assert_int_equal(json_size(&js, 1), STRS);
	assert_int_equal(js.steps, 0);
	json_scan_free(&js);
	free(b);

	/*
	 * 100k members in one object: heap-sorted keys, at most about
	 * 2n log2 n + 3n comparisons and the tokens copied (3.4M here;
	 * pairwise it would be 5G)
	 */
	b = malloc(KEYS * 16 + 64);
	assert_non_null(b);
	n = 0;
	b[n++] = '{';
	for (i = 0; i < KEYS; i++)
		n += (size_t)sprintf(b + n, "%s\"k%zu\":%zu", i ? "," : "",
		    (i * 7919) % KEYS, i);
	b[n++] = '}';
	assert_int_equal(json_scan_parse(&js, b, n, 0), 0);
	assert_int_equal(json_size(&js, 0), KEYS);
	assert_true(js.steps < 64 * (size_t)KEYS);
	json_scan_free(&js);
	/* ... and none with duplicates allowed */
	assert_int_equal(json_scan_parse(&js, b, n, JSON_SCAN_DUPS), 0);
	assert_true(js.steps < 2 * (size_t)js.ntok);
	json_scan_free(&js);
	/* the same key twice among them, found as cheaply */
	memcpy(b + n - 1, ",\"k5\":0}", 9);
	assert_int_equal(json_scan_parse(&js, b, n + 8, 0), -1);
	assert_string_equal(js.err, "duplicate key");
	assert_true(js.steps < 64 * (size_t)KEYS);
	free(b);

	/* 50k small objects: a few comparisons each */
	b = malloc(50000 * 32 + 64);
	assert_non_null(b);
	n = 0;
	b[n++] = '[';
	for (i = 0; i < 50000; i++)
		n += (size_t)sprintf(b + n, "%s{\"a\":1,\"b\":{},\"c\":2}",
		    i ? "," : "");
	b[n++] = ']';
	assert_int_equal(json_scan_parse(&js, b, n, 0), 0);
	assert_true(js.steps < 3 * 50000 + 2 * (size_t)js.ntok);
	json_scan_free(&js);
	free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_scan_linear),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
