/*
 * test_stream.c - the read/hash pipeline (lib/core/stream.c): on both the
 * one-thread and the threaded path every byte reaches consume() and
 * hash() once, in file order, after prepare(); an error on either thread
 * stops the pass and comes back with its own message; a file that shrinks
 * under the reader is an I/O error, not a hang.
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

#include <openssl/evp.h>

#include "core/core.h"
#include "core/file.h"
#include "core/platform.h"
#include "core/stream.h"

/* What the callbacks saw. Each side has its own state: they run at the
 * same time on different threads. */
struct seen {
	EVP_MD_CTX *hashed;   /* SHA-256 of the bytes hash() saw, in its order */
	EVP_MD_CTX *consumed; /* the same for consume() */
	uint64_t hash_next;   /* offset hash() expects next */
	uint64_t consume_next;
	bool in_order;
	bool unaligned;           /* consume() got a buffer not aligned for direct writes */
	uint64_t fail_consume_at; /* UINT64_MAX: never */
	uint64_t fail_hash_at;
	int hash_calls;
};

static char tmp_path[64];

/* A file of `len` bytes from a fixed xorshift sequence. */
static void write_file(size_t len)
{
	uint32_t x = 2463534242u;
	uint8_t *data = malloc(len);
	FILE *f;

	assert_non_null(data);
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		data[i] = (uint8_t)x;
	}
	/* Byte 5 is what prepare() must zero before anyone else sees it. */
	if (len > 5)
		data[5] = 0xAA;
	f = fopen(tmp_path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	free(data);
}

/* SHA-256 of the file with byte 5 zeroed: what both sides must see. */
static void expected_digest(size_t len, uint8_t out[32])
{
	uint8_t *data = malloc(len ? len : 1);
	FILE *f = fopen(tmp_path, "rb");

	assert_non_null(data);
	assert_non_null(f);
	assert_int_equal(fread(data, 1, len, f), len);
	fclose(f);
	if (len > 5)
		data[5] = 0;
	assert_int_equal(EVP_Digest(data, len, out, NULL, EVP_sha256(), NULL), 1);
	free(data);
}

static int cb_prepare(struct hs_ctx *ctx, void *arg, uint8_t *buf, size_t n, uint64_t off)
{
	(void)ctx;
	(void)arg;
	if (off <= 5 && off + n > 5)
		buf[5 - off] = 0;
	return 0;
}

static int cb_consume(struct hs_ctx *ctx, void *arg, const uint8_t *buf, size_t n, uint64_t off)
{
	struct seen *s = arg;

	if (off != s->consume_next)
		s->in_order = false;
	s->consume_next = off + n;
	if ((uintptr_t)buf % HS_OS_DIRECT_ALIGN != 0)
		s->unaligned = true;
	if (off >= s->fail_consume_at)
		return hs_error_set(ctx, HS_ERR_IO, "consume failed at %llu",
		                    (unsigned long long)off);
	EVP_DigestUpdate(s->consumed, buf, n);
	return 0;
}

static int cb_hash(struct hs_ctx *ctx, void *arg, const uint8_t *buf, size_t n, uint64_t off)
{
	struct seen *s = arg;

	s->hash_calls++;
	if (off != s->hash_next)
		s->in_order = false;
	s->hash_next = off + n;
	if (off >= s->fail_hash_at)
		return hs_error_set(ctx, HS_ERR_CRYPTO, "hash failed at %llu",
		                    (unsigned long long)off);
	EVP_DigestUpdate(s->hashed, buf, n);
	return 0;
}

static const struct hs_stream_ops ops = {
        .prepare = cb_prepare, .consume = cb_consume, .hash = cb_hash};

static void seen_init(struct seen *s)
{
	memset(s, 0, sizeof(*s));
	s->hashed = EVP_MD_CTX_new();
	s->consumed = EVP_MD_CTX_new();
	assert_non_null(s->hashed);
	assert_non_null(s->consumed);
	assert_int_equal(EVP_DigestInit_ex(s->hashed, EVP_sha256(), NULL), 1);
	assert_int_equal(EVP_DigestInit_ex(s->consumed, EVP_sha256(), NULL), 1);
	s->in_order = true;
	s->fail_consume_at = UINT64_MAX;
	s->fail_hash_at = UINT64_MAX;
}

static void seen_free(struct seen *s)
{
	EVP_MD_CTX_free(s->hashed);
	EVP_MD_CTX_free(s->consumed);
}

static int setup(void **state)
{
	int fd;

	(void)state;
	snprintf(tmp_path, sizeof(tmp_path), "/tmp/hs-test-stream-XXXXXX");
	fd = mkstemp(tmp_path);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(tmp_path);
	return 0;
}

/* Sizes around the thread threshold and the ring of buffers. */
static const size_t sizes[] = {
        0,
        1,
        HS_IO_CHUNK - 1,
        HS_IO_CHUNK + 7,
        HS_STREAM_THREAD_MIN - 1,
        HS_STREAM_THREAD_MIN,
        HS_STREAM_THREAD_MIN + 3 * HS_IO_CHUNK + 11,
        /* From 64 MiB the ring is deeper (stream.c STREAM_DEEP_MIN). */
        67 * HS_IO_CHUNK + 11,
};

static void test_every_byte_once_in_order(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct hs_ctx ctx = {0};
		struct hs_file in;
		struct seen s;
		uint8_t want[32], got_hash[32], got_consume[32];

		print_message("stream: %zu bytes\n", sizes[i]);
		write_file(sizes[i]);
		expected_digest(sizes[i], want);
		seen_init(&s);
		assert_int_equal(hs_file_open(&ctx, &in, tmp_path), 0);
		assert_int_equal(hs_stream_file(&ctx, &in, in.size, &ops, &s), 0);
		hs_file_close(&in);
		assert_true(s.in_order);
		/* The threaded path's buffers can be written past the cache. */
		if (sizes[i] >= HS_STREAM_THREAD_MIN)
			assert_false(s.unaligned);
		assert_int_equal(s.hash_next, sizes[i]);
		assert_int_equal(s.consume_next, sizes[i]);
		assert_int_equal(EVP_DigestFinal_ex(s.hashed, got_hash, NULL), 1);
		assert_int_equal(EVP_DigestFinal_ex(s.consumed, got_consume, NULL), 1);
		assert_memory_equal(got_hash, want, 32);
		assert_memory_equal(got_consume, want, 32);
		seen_free(&s);
	}
}

/* Errors from either side, early or at the last chunk, on both paths. */
static void test_errors_propagate(void **state)
{
	static const struct {
		size_t size;
		bool consume; /* else hash() fails */
		uint64_t at;
		int code;
		const char *message;
	} cases[] = {
	        {HS_IO_CHUNK * 3, true, HS_IO_CHUNK, HS_ERR_IO, "consume failed at 1048576"},
	        {HS_IO_CHUNK * 3, false, 0, HS_ERR_CRYPTO, "hash failed at 0"},
	        {HS_STREAM_THREAD_MIN + HS_IO_CHUNK, true, 0, HS_ERR_IO, "consume failed at 0"},
	        {HS_STREAM_THREAD_MIN + HS_IO_CHUNK, true, HS_STREAM_THREAD_MIN, HS_ERR_IO,
	         "consume failed at 8388608"},
	        {HS_STREAM_THREAD_MIN + HS_IO_CHUNK, false, 2 * HS_IO_CHUNK, HS_ERR_CRYPTO,
	         "hash failed at 2097152"},
	        {HS_STREAM_THREAD_MIN + HS_IO_CHUNK, false, HS_STREAM_THREAD_MIN, HS_ERR_CRYPTO,
	         "hash failed at 8388608"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct hs_ctx ctx = {0};
		struct hs_file in;
		struct seen s;

		write_file(cases[i].size);
		seen_init(&s);
		if (cases[i].consume)
			s.fail_consume_at = cases[i].at;
		else
			s.fail_hash_at = cases[i].at;
		assert_int_equal(hs_file_open(&ctx, &in, tmp_path), 0);
		assert_int_equal(hs_stream_file(&ctx, &in, in.size, &ops, &s), cases[i].code);
		hs_file_close(&in);
		assert_int_equal(ctx.error, cases[i].code);
		assert_string_equal(ctx.message, cases[i].message);
		/* The pass stopped: hash() did not run on to the end. */
		if (!cases[i].consume)
			assert_true(s.hash_next <= cases[i].at + HS_IO_CHUNK);
		seen_free(&s);
	}
}

/* The file shrinks after it was opened: the reader's short read is an I/O
 * error on both paths (the message names the file). */
static void test_file_shrinks(void **state)
{
	static const size_t sizes_shrink[] = {3 * HS_IO_CHUNK, HS_STREAM_THREAD_MIN + HS_IO_CHUNK};

	(void)state;
	for (size_t i = 0; i < 2; i++) {
		struct hs_ctx ctx = {0};
		struct hs_file in;
		struct seen s;

		write_file(sizes_shrink[i]);
		seen_init(&s);
		assert_int_equal(hs_file_open(&ctx, &in, tmp_path), 0);
		assert_int_equal(truncate(tmp_path, (off_t)(2 * HS_IO_CHUNK + 100)), 0);
		assert_int_equal(hs_stream_file(&ctx, &in, in.size, &ops, &s), HS_ERR_IO);
		hs_file_close(&in);
		assert_non_null(strstr(ctx.message, tmp_path));
		assert_non_null(strstr(ctx.message, "read failed"));
		seen_free(&s);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_every_byte_once_in_order, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_errors_propagate, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_file_shrinks, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
