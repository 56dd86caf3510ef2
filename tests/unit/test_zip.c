/*
 * test_zip.c - the package ZIP reader (lib/formats/zip.c) on a two-entry
 * archive built here byte by byte, and its malformed variants: each must
 * fail with HS_ERR_FORMAT (never a crash, an over-read or a hang).
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

#include "core/core.h"
#include "core/file.h"
#include "formats/zip.h"

/* Layout: local a.txt @0 (30+5+5), local b.txt @40 (30+5+6), CD @81
 * (2 x 51 bytes), EOCD @183. */
#define A_OFF    0
#define B_OFF    40
#define CD_OFF   81
#define CD_LEN   102
#define EOCD_OFF (CD_OFF + CD_LEN)
#define IMG_LEN  (EOCD_OFF + 22)

static uint8_t img[IMG_LEN];

static void local(size_t off, const char *name, const char *data)
{
	size_t dl = strlen(data);

	memcpy(img + off, "PK\3\4", 4);
	hs_put16(img + off + 4, 20);
	hs_put32(img + off + 14, hs_zip_crc32((const uint8_t *)data, dl));
	hs_put32(img + off + 18, (uint32_t)dl);
	hs_put32(img + off + 22, (uint32_t)dl);
	hs_put16(img + off + 26, 5);
	memcpy(img + off + 30, name, 5);
	memcpy(img + off + 35, data, dl);
}

static void central(size_t off, const char *name, const char *data, uint32_t local_off)
{
	size_t dl = strlen(data);

	memcpy(img + off, "PK\1\2", 4);
	hs_put16(img + off + 4, 20);
	hs_put16(img + off + 6, 20);
	hs_put32(img + off + 16, hs_zip_crc32((const uint8_t *)data, dl));
	hs_put32(img + off + 20, (uint32_t)dl);
	hs_put32(img + off + 24, (uint32_t)dl);
	hs_put16(img + off + 28, 5);
	hs_put32(img + off + 42, local_off);
	memcpy(img + off + 46, name, 5);
}

static void build(void)
{
	memset(img, 0, sizeof(img));
	local(A_OFF, "a.txt", "hello");
	local(B_OFF, "b.txt", "world!");
	central(CD_OFF, "a.txt", "hello", A_OFF);
	central(CD_OFF + 51, "b.txt", "world!", B_OFF);
	memcpy(img + EOCD_OFF, "PK\5\6", 4);
	hs_put16(img + EOCD_OFF + 8, 2);
	hs_put16(img + EOCD_OFF + 10, 2);
	hs_put32(img + EOCD_OFF + 12, CD_LEN);
	hs_put32(img + EOCD_OFF + 16, CD_OFF);
}

struct fx {
	struct hs_ctx *ctx;
	char path[64];
	struct hs_file in;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(hs_ctx_new(&f->ctx), 0);
	snprintf(f->path, sizeof(f->path), "/tmp/hs-test-zip-%ld.zip", (long)getpid());
	build();
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	unlink(f->path);
	hs_ctx_free(f->ctx);
	free(f);
	return 0;
}

/* Writes img[0..len) and opens it as a ZIP. */
static int open_img(struct fx *f, struct hs_zip *zip, size_t len)
{
	FILE *fp = fopen(f->path, "wb");

	assert_non_null(fp);
	assert_int_equal(fwrite(img, 1, len, fp), len);
	fclose(fp);
	hs_ctx_clear_error(f->ctx);
	assert_int_equal(hs_file_open(f->ctx, &f->in, f->path), 0);
	return hs_zip_open(f->ctx, zip, &f->in);
}

static void test_good(void **state)
{
	struct fx *f = *state;
	struct hs_zip zip;
	struct hs_buf b = {0};
	long i;

	assert_int_equal(open_img(f, &zip, IMG_LEN), 0);
	assert_int_equal(zip.n_entries, 2);
	assert_false(zip.zip64);
	i = hs_zip_find(&zip, "b.txt");
	assert_int_equal(i, 1);
	assert_int_equal(hs_zip_find(&zip, "c.txt"), -1);
	assert_int_equal(zip.entries[0].span_end, B_OFF);
	assert_int_equal(zip.entries[1].span_end, CD_OFF);
	assert_int_equal(hs_zip_read(f->ctx, &zip, &f->in, &zip.entries[i], 100, &b), 0);
	assert_int_equal(b.len, 6);
	assert_memory_equal(b.data, "world!", 6);
	hs_buf_free(&b);
	/* The size bound is enforced before anything is read. */
	assert_int_equal(hs_zip_read(f->ctx, &zip, &f->in, &zip.entries[i], 5, &b),
	                 HS_ERR_UNSUPPORTED);
	hs_buf_free(&b);
	hs_zip_close(&zip);
	hs_file_close(&f->in);
}

/* Each row patches a 16- or 32-bit field (or the length) of a fresh image. */
struct bad {
	const char *what;
	size_t off;
	int width; /* 2, 4, or 0: truncate to `value` bytes */
	uint32_t value;
	bool at_read; /* fails when b.txt is read, not at open */
};

static const struct bad bad_cases[] = {
        {"truncated below an EOCD", 0, 0, 21, false},
        {"EOCD cut off", 0, 0, IMG_LEN - 1, false},
        {"comment length past EOF", EOCD_OFF + 20, 2, 1, false},
        {"CD offset past its end", EOCD_OFF + 16, 4, CD_OFF + 1, false},
        {"CD size larger than the file", EOCD_OFF + 12, 4, 0x7fffffff, false},
        {"more entries than the CD holds", EOCD_OFF + 10, 2, 3, false},
        {"fewer entries than the CD holds", EOCD_OFF + 10, 2, 1, false},
        {"zero entries", EOCD_OFF + 10, 2, 0, false},
        {"bad CD signature", CD_OFF + 51, 4, 0x02014b51, false},
        {"name past the CD", CD_OFF + 51 + 28, 2, 0xffff, false},
        {"local records overlap", CD_OFF + 51 + 42, 4, 10, false},
        {"local offset past the CD", CD_OFF + 51 + 42, 4, 0xfffffff0, false},
        {"compressed size past the next record", CD_OFF + 20, 4, 50, false},
        {"zip64 offset without extra field", CD_OFF + 42, 4, 0xffffffff, false},
        {"wrong CRC", CD_OFF + 51 + 16, 4, 0x12345678, true},
        {"local name length mismatch", B_OFF + 26, 2, 4, true},
        {"local extra field past the data", B_OFF + 28, 2, 100, true},
};

static void test_malformed(void **state)
{
	struct fx *f = *state;

	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad *c = &bad_cases[i];
		struct hs_zip zip;
		struct hs_buf b = {0};
		size_t len = IMG_LEN;
		int r;

		build();
		if (c->width == 2)
			hs_put16(img + c->off, (uint16_t)c->value);
		else if (c->width == 4)
			hs_put32(img + c->off, c->value);
		else
			len = c->value;
		r = open_img(f, &zip, len);
		if (c->at_read && r == 0) {
			r = hs_zip_read(f->ctx, &zip, &f->in, &zip.entries[1], 100, &b);
			hs_buf_free(&b);
			hs_zip_close(&zip);
		}
		if (r != HS_ERR_FORMAT)
			fail_msg("%s: got %d, want HS_ERR_FORMAT", c->what, r);
		hs_file_close(&f->in);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_good, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
