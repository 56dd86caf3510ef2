/*
 * test_verify.c - hs_verify_file()'s contract at its edges: which inputs are
 * errors and which are verdicts, status names, and freeing. Signed files and
 * tampering are covered end to end (tests/e2e/test_verify_failures.py).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hsmsign.h"

struct fixture {
	struct hs_ctx *ctx;
	char dir[64];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (f == NULL || hs_ctx_new(&f->ctx) < 0)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/hs-verify-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	rmdir(f->dir);
	hs_ctx_free(f->ctx);
	free(f);
	return 0;
}

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *fp = fopen(path, "wb");

	assert_non_null(fp);
	assert_int_equal(fwrite(p, 1, n, fp), n);
	assert_int_equal(fclose(fp), 0);
}

static void test_status_names(void **state)
{
	const char *names[HS_VERIFY_NO_EKU + 1];

	(void)state;
	for (int s = HS_VERIFY_OK; s <= HS_VERIFY_NO_EKU; s++) {
		names[s] = hs_verify_status_name((enum hs_verify_status)s);
		assert_non_null(names[s]);
		assert_true(strlen(names[s]) > 0);
		for (int t = HS_VERIFY_OK; t < s; t++)
			assert_string_not_equal(names[s], names[t]);
	}
	assert_string_equal(hs_verify_status_name(HS_VERIFY_DIGEST_MISMATCH), "digest mismatch");
	assert_string_equal(hs_verify_status_name((enum hs_verify_status)99), "unknown");
	hs_verify_result_free(NULL);
}

/* A file that cannot be opened is an error, not a verdict. */
static void test_missing_file(void **state)
{
	struct fixture *f = *state;
	struct hs_verify_result *res = (void *)1;
	char path[128];

	snprintf(path, sizeof(path), "%s/absent.exe", f->dir);
	assert_int_equal(hs_verify_file(f->ctx, path, NULL, &res), HS_ERR_NOTFOUND);
	assert_null(res);
	assert_true(strlen(hs_ctx_message(f->ctx)) > 0);
	hs_ctx_clear_error(f->ctx);
}

/* Readable files that are no known format: a MALFORMED verdict whose
 * reason is the message, and a clean context. */
static const struct {
	const char *name;
	const char *bytes;
	size_t len;
} not_pe[] = {
        {"empty", "", 0},
        {"text", "hello, world\n", 13},
        {"mz only", "MZ", 2},
        {"truncated dos header", "MZ\0\0\0\0\0\0", 8},
};

static void test_unreadable_formats(void **state)
{
	struct fixture *f = *state;
	char path[128];

	snprintf(path, sizeof(path), "%s/input.bin", f->dir);
	for (size_t i = 0; i < sizeof(not_pe) / sizeof(not_pe[0]); i++) {
		struct hs_verify_result *res = NULL;

		write_file(path, not_pe[i].bytes, not_pe[i].len);
		assert_int_equal(hs_verify_file(f->ctx, path, NULL, &res), 0);
		assert_non_null(res);
		assert_int_equal(res->status, HS_VERIFY_MALFORMED);
		assert_int_equal(res->count, 1);
		assert_int_equal(res->sigs[0].status, HS_VERIFY_MALFORMED);
		assert_int_equal(res->sigs[0].depth, 0);
		assert_non_null(res->sigs[0].reason);
		assert_null(strchr(res->sigs[0].reason, '\n'));
		assert_int_equal(hs_ctx_error(f->ctx), 0);
		hs_verify_result_free(res);
	}
	unlink(path);
}

/* A trust store that does not load is a configuration error. */
static void test_bad_ca_file(void **state)
{
	struct fixture *f = *state;
	struct hs_verify_opts opts = HS_VERIFY_OPTS_INIT;
	struct hs_verify_result *res = NULL;
	char path[128], ca[128];

	snprintf(path, sizeof(path), "%s/input.bin", f->dir);
	snprintf(ca, sizeof(ca), "%s/roots.pem", f->dir);
	write_file(path, "MZ", 2);
	write_file(ca, "not a certificate\n", 18);
	opts.ca_file = ca;
	assert_int_equal(hs_verify_file(f->ctx, path, &opts, &res), HS_ERR_INVALID);
	assert_null(res);
	assert_non_null(strstr(hs_ctx_message(f->ctx), "roots.pem"));
	hs_ctx_clear_error(f->ctx);
	unlink(path);
	unlink(ca);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_status_names),
	        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_unreadable_formats, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_bad_ca_file, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
