/* test_core.c - context errors, buffers, digests and atomic outputs. */
#ifdef __linux__
#define _GNU_SOURCE /* O_DIRECT, to probe the file system */
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/core.h"
#include "core/codec.h"
#include "core/file.h"
#include "core/platform.h"

static void error_first_message_wins(void **state)
{
	struct hs_ctx *ctx;

	(void)state;
	assert_int_equal(hs_ctx_new(&ctx), 0);
	assert_int_equal(hs_error_set(ctx, HS_ERR_FORMAT, "first %d", 1), HS_ERR_FORMAT);
	assert_int_equal(hs_error_set(ctx, HS_ERR_IO, "second"), HS_ERR_IO);
	assert_string_equal(hs_ctx_message(ctx), "first 1");
	assert_int_equal(hs_ctx_error(ctx), HS_ERR_FORMAT);
	hs_ctx_clear_error(ctx);
	assert_string_equal(hs_ctx_message(ctx), "");
	hs_error_set(ctx, HS_ERR_IO, "line\none\r");
	assert_string_equal(hs_ctx_message(ctx), "line one ");
	hs_ctx_free(ctx);
}

static void buf_grows_and_detaches(void **state)
{
	struct hs_buf b = {0};
	uint8_t *data;
	size_t len;

	(void)state;
	for (int i = 0; i < 1000; i++)
		assert_int_equal(hs_buf_append(&b, "abc", 3), 0);
	assert_int_equal(b.len, 3000);
	assert_memory_equal(b.data + 2997, "abc", 3);
	hs_buf_detach(&b, &data, &len);
	assert_null(b.data);
	assert_int_equal(len, 3000);
	free(data);
	assert_int_equal(hs_buf_reserve(&b, SIZE_MAX), HS_ERR_NOMEM);
	hs_buf_free(&b);
}

static void digest_names(void **state)
{
	static const struct {
		const char *name;
		int ok;
		enum hs_digest want;
	} cases[] = {
	        {"sha1", 1, HS_DIGEST_SHA1},
	        {"SHA256", 1, HS_DIGEST_SHA256},
	        {"sha-384", 1, HS_DIGEST_SHA384},
	        {"sha512", 1, HS_DIGEST_SHA512},
	        {"md5", 0, 0},
	        {"", 0, 0},
	};
	enum hs_digest d;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = hs_digest_from_name(&d, cases[i].name);

		assert_int_equal(r == 0, cases[i].ok);
		if (cases[i].ok) {
			assert_int_equal(d, cases[i].want);
			assert_non_null(hs_digest_md(d));
		}
	}
	assert_string_equal(hs_digest_name(HS_DIGEST_SHA384), "sha384");
	assert_int_equal(hs_digest_from_nid(NID_sha256), HS_DIGEST_SHA256);
	assert_int_equal(hs_digest_from_nid(NID_md5), 0);
}

static void out_commit_and_abort(void **state)
{
	char dir[] = "/tmp/hs-test-XXXXXX", path[64], tmp[128];
	struct hs_ctx *ctx;
	struct hs_out o;
	struct stat st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/out.bin", dir);
	assert_int_equal(hs_ctx_new(&ctx), 0);

	assert_int_equal(hs_out_open(ctx, &o, path, 0640), 0);
	snprintf(tmp, sizeof(tmp), "%s", o.tmp_path);
	assert_int_equal(hs_out_write(ctx, &o, "hello", 5), 0);
	assert_int_equal(hs_out_zero(ctx, &o, 3), 0);
	assert_int_equal(hs_out_pwrite(ctx, &o, "J", 1, 0), 0);
	assert_int_equal(hs_out_pwrite(ctx, &o, "xx", 2, 7), HS_ERR_INVALID);
	hs_out_abort(&o);
	assert_int_equal(access(tmp, F_OK), -1);
	assert_int_equal(access(path, F_OK), -1);

	hs_ctx_clear_error(ctx);
	assert_int_equal(hs_out_open(ctx, &o, path, 0640), 0);
	assert_int_equal(hs_out_write(ctx, &o, "hello", 5), 0);
	assert_int_equal(hs_out_commit(ctx, &o), 0);
	hs_out_abort(&o);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 5);
	assert_int_equal(st.st_mode & 0777, 0640);
	unlink(path);
	rmdir(dir);
	hs_ctx_free(ctx);
}

/* Writes one output the way a large PE is signed: aligned 1 MiB appends
 * (past the page cache where the file system allows it), then unaligned
 * ones and a header patch, which switch back to cached writes. The bytes
 * on disk are what was written, either way; `buffered` forces the cached
 * path (fault point). Returns whether direct writes were in use. */
static bool out_large_roundtrip(const char *dir, bool buffered)
{
	const size_t chunk = HS_IO_CHUNK, tail = 5000;
	const size_t total = 3 * chunk + 100 + chunk + tail;
	char path[96];
	struct hs_ctx *ctx;
	struct hs_out o;
	uint8_t *want = malloc(total), *got = malloc(total);
	uint8_t *aligned = hs_os_alloc_aligned(chunk + HS_OS_DIRECT_ALIGN);
	bool direct;
	size_t at = 0;
	FILE *f;

	assert_non_null(want);
	assert_non_null(got);
	assert_non_null(aligned);
	for (size_t i = 0; i < total; i++)
		want[i] = (uint8_t)(i * 7 + i / 4096);
	snprintf(path, sizeof(path), "%s/large.bin", dir);
	if (buffered)
		setenv("HSMSIGN_FAULT", "buffered-output", 1);
	assert_int_equal(hs_ctx_new(&ctx), 0);
	assert_int_equal(hs_out_open(ctx, &o, path, 0644), 0);
	hs_out_expect(&o, HS_OUT_DIRECT_MIN);
	direct = o.direct;
	for (int i = 0; i < 3; i++, at += chunk) {
		memcpy(aligned, want + at, chunk);
		assert_int_equal(hs_out_write(ctx, &o, aligned, chunk), 0);
	}
	assert_int_equal(o.direct, direct);
	assert_int_equal(hs_out_write(ctx, &o, want + at, 100), 0);
	at += 100;
	assert_false(o.direct); /* unaligned: back to the page cache */
	memcpy(aligned, want + at, chunk);
	assert_int_equal(hs_out_write(ctx, &o, aligned, chunk), 0);
	at += chunk;
	assert_int_equal(hs_out_write(ctx, &o, want + at, tail), 0);
	memcpy(want + 300, "HEADER", 6);
	assert_int_equal(hs_out_pwrite(ctx, &o, "HEADER", 6, 300), 0);
	assert_int_equal(hs_out_commit(ctx, &o), 0);
	hs_out_abort(&o);
	unsetenv("HSMSIGN_FAULT");

	f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fread(got, 1, total, f), total);
	assert_int_equal(fgetc(f), EOF);
	fclose(f);
	assert_memory_equal(got, want, total);
	unlink(path);
	hs_os_free_aligned(aligned);
	free(want);
	free(got);
	hs_ctx_free(ctx);
	return direct;
}

/* hs_out_expect(): large outputs bypass the page cache where the file
 * system supports it, and the content is the same on both paths. */
static void out_direct_writes(void **state)
{
	char dir[] = "/tmp/hs-test-XXXXXX", probe[64];
	bool supported = false;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
#if defined(__linux__) && defined(O_DIRECT)
	/* Does this file system take O_DIRECT at all? Then hs_out must use it. */
	snprintf(probe, sizeof(probe), "%s/probe", dir);
	fd = open(probe, O_WRONLY | O_CREAT | O_DIRECT, 0600);
	supported = fd >= 0;
	if (fd >= 0)
		close(fd);
	unlink(probe);
#else
	(void)probe;
	(void)fd;
#endif
	print_message("O_DIRECT on %s: %s\n", dir, supported ? "yes" : "no");
	assert_int_equal(out_large_roundtrip(dir, false), supported);
	setenv("HSMSIGN_FAULT", "sign", 1);
	if (hs_fault("sign")) /* fault points compiled in */
		assert_false(out_large_roundtrip(dir, true));
	unsetenv("HSMSIGN_FAULT");
	rmdir(dir);
}

static void pread_is_bounded(void **state)
{
	char path[] = "/tmp/hs-test-XXXXXX";
	struct hs_ctx *ctx;
	struct hs_file f;
	uint8_t buf[8];
	int fd = mkstemp(path);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "12345678", 8), 8);
	close(fd);
	assert_int_equal(hs_ctx_new(&ctx), 0);
	assert_int_equal(hs_file_open(ctx, &f, path), 0);
	assert_int_equal(hs_file_pread(ctx, &f, buf, 8, 0), 0);
	assert_int_equal(hs_file_pread(ctx, &f, buf, 1, 8), HS_ERR_FORMAT);
	assert_int_equal(hs_file_pread(ctx, &f, buf, 2, 7), HS_ERR_FORMAT);
	assert_int_equal(hs_file_pread(ctx, &f, buf, 1, UINT64_MAX), HS_ERR_FORMAT);
	hs_file_close(&f);
	assert_int_equal(hs_file_open(ctx, &f, "/nonexistent/x"), HS_ERR_NOTFOUND);
	unlink(path);
	hs_ctx_free(ctx);
}

/* RFC 4648 section 10 vectors, both alphabets, and malformed input. */
static void base64_vectors(void **state)
{
	static const struct {
		const char *plain, *std, *url;
	} v[] = {
	        {"", "", ""},
	        {"f", "Zg==", "Zg"},
	        {"fo", "Zm8=", "Zm8"},
	        {"foo", "Zm9v", "Zm9v"},
	        {"foob", "Zm9vYg==", "Zm9vYg"},
	        {"fooba", "Zm9vYmE=", "Zm9vYmE"},
	        {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
	        {"\xfb\xff", "+/8=", "-_8"},
	};
	static const char *const bad[] = {"Zm9v YmFy", "Zm9v\n", "Z", "Zm9vY", "Zm*v", "Zm9v=Zg"};

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t n = strlen(v[i].plain);
		struct hs_buf e = {0}, u = {0}, d1 = {0}, d2 = {0};
		char *s;

		assert_int_equal(hs_base64_encode(&e, (const uint8_t *)v[i].plain, n, false), 0);
		assert_int_equal(hs_base64_encode(&u, (const uint8_t *)v[i].plain, n, true), 0);
		assert_int_equal(e.len, strlen(v[i].std));
		assert_memory_equal(e.data, v[i].std, e.len);
		assert_int_equal(u.len, strlen(v[i].url));
		assert_memory_equal(u.data, v[i].url, u.len);
		assert_int_equal(hs_base64_decode(&d1, v[i].std, strlen(v[i].std)), 0);
		assert_int_equal(hs_base64_decode(&d2, v[i].url, strlen(v[i].url)), 0);
		assert_int_equal(d1.len, n);
		assert_int_equal(d2.len, n);
		assert_memory_equal(d1.data, v[i].plain, n);
		assert_memory_equal(d2.data, v[i].plain, n);
		s = hs_b64url((const unsigned char *)v[i].plain, n);
		assert_string_equal(s, v[i].url);
		free(s);
		hs_buf_free(&e);
		hs_buf_free(&u);
		hs_buf_free(&d1);
		hs_buf_free(&d2);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct hs_buf d = {0};

		assert_int_equal(hs_base64_decode(&d, bad[i], strlen(bad[i])), HS_ERR_FORMAT);
		hs_buf_free(&d);
	}
}

/* Fault points with values (HSMSIGN_FAULT=point=N). */
static void fault_values(void **state)
{
	(void)state;
	setenv("HSMSIGN_FAULT", "sign,serve-sign-delay-ms=30,other=7", 1);
	if (!hs_fault("sign")) {
		/* A build with -DHSMSIGN_FAULT_INJECTION=OFF. */
		assert_int_equal(hs_fault_value("serve-sign-delay-ms"), -1);
		unsetenv("HSMSIGN_FAULT");
		skip();
	}
	assert_false(hs_fault("serve-sign-delay-ms"));
	assert_int_equal(hs_fault_value("serve-sign-delay-ms"), 30);
	assert_int_equal(hs_fault_value("other"), 7);
	assert_int_equal(hs_fault_value("sign"), -1);
	assert_int_equal(hs_fault_value("serve-sign-delay"), -1);
	setenv("HSMSIGN_FAULT", "serve-sign-delay-ms=3x", 1);
	assert_int_equal(hs_fault_value("serve-sign-delay-ms"), -1);
	setenv("HSMSIGN_FAULT", "serve-sign-delay-ms=99999999999999999999", 1);
	assert_int_equal(hs_fault_value("serve-sign-delay-ms"), -1);
	setenv("HSMSIGN_FAULT", "serve-sign-delay-ms=", 1);
	assert_int_equal(hs_fault_value("serve-sign-delay-ms"), -1);
	unsetenv("HSMSIGN_FAULT");
	assert_int_equal(hs_fault_value("serve-sign-delay-ms"), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(fault_values),
	        cmocka_unit_test(error_first_message_wins),
	        cmocka_unit_test(buf_grows_and_detaches),
	        cmocka_unit_test(digest_names),
	        cmocka_unit_test(out_commit_and_abort),
	        cmocka_unit_test(out_direct_writes),
	        cmocka_unit_test(pread_is_bounded),
	        cmocka_unit_test(base64_vectors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
