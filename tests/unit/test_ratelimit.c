/* test_ratelimit.c - the client-side token bucket (lib/core/ratelimit.c). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "core/ratelimit.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* rate, burst, acquisitions, and the least time they must take: the
 * first `burst` are free, each further one costs 1/rate seconds. */
static const struct {
	double rate, burst;
	int n;
	double min_s, max_s;
} vectors[] = {
        /* Upper bounds are loose (a loaded machine), but each is below
         * what the case would take if the bucket misbehaved. */
        {0, 0, 1000, 0.0, 0.5},   /* disabled: no waiting */
        {10, 10, 10, 0.0, 0.5},   /* within the burst (0.9 s without it) */
        {100, 10, 30, 0.19, 1.0}, /* 20 beyond the burst at 100/s */
        {50, 1, 11, 0.19, 1.0},   /* burst below 1 is raised to 1 */
};

static void test_single_thread(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		struct hs_ratelimit rl;
		double start, took;

		assert_int_equal(hs_ratelimit_init(&rl, vectors[i].rate, vectors[i].burst), 0);
		start = now_s();
		for (int k = 0; k < vectors[i].n; k++)
			hs_ratelimit_acquire(&rl);
		took = now_s() - start;
		assert_true(took >= vectors[i].min_s);
		assert_true(took <= vectors[i].max_s);
		hs_ratelimit_destroy(&rl);
	}
}

static void *take_ten(void *arg)
{
	for (int k = 0; k < 10; k++)
		hs_ratelimit_acquire(arg);
	return NULL;
}

/* Eight threads share one bucket: 80 tokens at 200/s after a burst of 5
 * take at least 75/200 s, however the threads interleave. */
static void test_shared_by_threads(void **state)
{
	struct hs_ratelimit rl;
	pthread_t threads[8];
	double start, took;

	(void)state;
	assert_int_equal(hs_ratelimit_init(&rl, 200, 5), 0);
	start = now_s();
	for (int i = 0; i < 8; i++)
		assert_int_equal(pthread_create(&threads[i], NULL, take_ten, &rl), 0);
	for (int i = 0; i < 8; i++)
		pthread_join(threads[i], NULL);
	took = now_s() - start;
	assert_true(took >= 0.37);
	assert_true(took < 3.0);
	assert_true(rl.waits >= 75);
	hs_ratelimit_destroy(&rl);
}

static void test_null_is_unlimited(void **state)
{
	(void)state;
	hs_ratelimit_acquire(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_single_thread),
	        cmocka_unit_test(test_shared_by_threads),
	        cmocka_unit_test(test_null_is_unlimited),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
