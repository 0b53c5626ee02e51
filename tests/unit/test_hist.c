/*
 * The latency histograms (include/infergate/hist.h): which bucket an
 * observation lands in (Prometheus "le": a value equal to a bound is in
 * that bucket), the +Inf bucket, the sum, and the bounds of each kind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "infergate/hist.h"

#define MS	1000000ULL

static uint64_t
at(struct ig_hist *h, size_t i)
{
	return atomic_load(&h->n[i]);
}

static void
test_hist_buckets(void **state)
{
	struct ig_hist h;
	size_t n;
	const uint64_t *le = ig_hist_bounds(IG_HIST_REQUEST, &n);

	memset(&h, 0, sizeof(h));
	assert_int_equal(n, 15);
	assert_int_equal(le[0], 5 * MS);
	assert_int_equal(le[n - 1], 300000 * MS);
	ig_hist_observe(&h, IG_HIST_REQUEST, 0);		/* first bucket */
	ig_hist_observe(&h, IG_HIST_REQUEST, 5 * MS);		/* on the bound */
	ig_hist_observe(&h, IG_HIST_REQUEST, 5 * MS + 1);	/* the next */
	ig_hist_observe(&h, IG_HIST_REQUEST, 300000 * MS);	/* last bound */
	ig_hist_observe(&h, IG_HIST_REQUEST, 300000 * MS + 1);	/* +Inf */
	assert_int_equal(at(&h, 0), 2);
	assert_int_equal(at(&h, 1), 1);
	assert_int_equal(at(&h, n - 1), 1);
	assert_int_equal(at(&h, n), 1);
	/* the sum in us, each observation's rest below 1 us dropped */
	assert_int_equal(atomic_load(&h.sum_us),
	    (10 * MS + 600000 * MS) / 1000);
}

static void
test_hist_store_kind(void **state)
{
	struct ig_hist h;
	size_t i, n;
	const uint64_t *le = ig_hist_bounds(IG_HIST_STORE, &n);

	memset(&h, 0, sizeof(h));
	assert_int_equal(n, 13);
	for (i = 1; i < n; i++)
		assert_true(le[i - 1] < le[i]);
	assert_int_equal(le[0], MS / 10);
	assert_int_equal(le[n - 1], 1000 * MS);
	/* 300 us: over 250 us, within 500 us */
	ig_hist_observe(&h, IG_HIST_STORE, 300000);
	assert_int_equal(at(&h, 2), 1);
	/* over a second: +Inf, right after this kind's last bound */
	ig_hist_observe(&h, IG_HIST_STORE, 2000 * MS);
	assert_int_equal(at(&h, n), 1);
	assert_int_equal(at(&h, IG_HIST_BOUNDS), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hist_buckets),
		cmocka_unit_test(test_hist_store_kind),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
