/*
 * test_cfb.c - the compound-file reader and writer (lib/formats/cfb*.c) on
 * a small version 3 file built here byte by byte, its malformed variants
 * (each must give HS_ERR_FORMAT, never a crash or a hang), a write/read
 * round trip, and the MSI digest against the digests osslsigncode signed
 * into the committed fixtures.
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

#include <openssl/pkcs7.h>

#include "authenticode/asn1.h"
#include "core/core.h"
#include "core/file.h"
#include "formats/cfb.h"
#include "formats/format.h"

/*
 * The synthetic file, 512-byte sectors: 0 FAT, 1-2 directory, 3-10 stream
 * B (4096 bytes), 11 mini stream, 12 miniFAT. Directory: 0 root, 1 "A"
 * (100 bytes, mini 0-1), 2 "B", 3 storage "S", 4 "C" in S (64 bytes, mini
 * 2). Root child B; B.left A, B.right S; S.child C.
 */
#define SS       512
#define N_SECT   13
#define IMG_LEN  (SS * (N_SECT + 1))
#define END      0xfffffffeu
#define FREE     0xffffffffu
#define FATSECT  0xfffffffdu
#define NOSTREAM 0xffffffffu

static uint8_t img[IMG_LEN];

static void put32(uint32_t off, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		img[off + i] = (uint8_t)(v >> (8 * i));
}

static uint32_t sect(uint32_t s)
{
	return (s + 1) * SS;
}

static uint32_t fat_entry(uint32_t s)
{
	return sect(0) + 4 * s;
}

static uint32_t dirent(uint32_t id)
{
	return sect(1) + 128 * id;
}

static void ent(uint32_t id, const char *name, uint8_t type, uint32_t left, uint32_t right,
                uint32_t child, uint32_t start, uint32_t size)
{
	uint32_t d = dirent(id);
	size_t n = strlen(name);

	for (size_t i = 0; i < n; i++)
		img[d + 2 * i] = (uint8_t)name[i];
	img[d + 0x40] = (uint8_t)(2 * n + 2);
	img[d + 0x42] = type;
	img[d + 0x43] = 1;
	put32(d + 0x44, left);
	put32(d + 0x48, right);
	put32(d + 0x4c, child);
	img[d + 0x50] = (uint8_t)(0x40 + id); /* a CLSID byte */
	put32(d + 0x74, start);
	put32(d + 0x78, size);
}

static void build(void)
{
	static const uint8_t magic[8] = {0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1};

	memset(img, 0, sizeof(img));
	memcpy(img, magic, 8);
	img[0x18] = 0x3e, img[0x1a] = 3, img[0x1c] = 0xfe, img[0x1d] = 0xff, img[0x1e] = 9;
	img[0x20] = 6;
	put32(0x2c, 1), put32(0x30, 1), put32(0x38, 4096), put32(0x3c, 12), put32(0x40, 1);
	put32(0x44, END), put32(0x48, 0), put32(0x4c, 0);
	for (uint32_t i = 1; i < 109; i++)
		put32(0x4c + 4 * i, FREE);
	for (uint32_t s = 0; s < SS / 4; s++)
		put32(fat_entry(s), FREE);
	put32(fat_entry(0), FATSECT), put32(fat_entry(1), 2), put32(fat_entry(2), END);
	for (uint32_t s = 3; s < 10; s++)
		put32(fat_entry(s), s + 1);
	put32(fat_entry(10), END), put32(fat_entry(11), END), put32(fat_entry(12), END);
	for (uint32_t i = 0; i < 8; i++) /* unused directory slots */
		put32(dirent(i) + 0x44, NOSTREAM), put32(dirent(i) + 0x48, NOSTREAM),
		        put32(dirent(i) + 0x4c, NOSTREAM);
	ent(0, "Root Entry", 5, NOSTREAM, NOSTREAM, 2, 11, 512);
	ent(1, "A", 2, NOSTREAM, NOSTREAM, NOSTREAM, 0, 100);
	ent(2, "B", 2, 1, 3, NOSTREAM, 3, 4096);
	ent(3, "S", 1, NOSTREAM, NOSTREAM, 4, 0, 0);
	ent(4, "C", 2, NOSTREAM, NOSTREAM, NOSTREAM, 2, 64);
	for (uint32_t s = 0; s < SS / 4; s++)
		put32(sect(12) + 4 * s, FREE);
	put32(sect(12), 1), put32(sect(12) + 4, END), put32(sect(12) + 8, END);
	for (uint32_t i = 0; i < 100; i++) /* A in mini sectors 0-1 */
		img[sect(11) + i] = (uint8_t)('a' + i % 26);
	for (uint32_t i = 0; i < 64; i++) /* C in mini sector 2 */
		img[sect(11) + 128 + i] = 'c';
	for (uint32_t i = 0; i < 4096; i++)
		img[sect(3) + i] = (uint8_t)(i * 7);
}

struct fx {
	struct hs_ctx *ctx;
	char path[64];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(hs_ctx_new(&f->ctx), 0);
	snprintf(f->path, sizeof(f->path), "/tmp/hs-test-cfb-%ld.cfb", (long)getpid());
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

/* Writes img (len bytes) and opens it; returns hs_cfb_open's result. */
static int open_img(struct fx *f, struct hs_file *in, struct hs_cfb *cfb, size_t len)
{
	FILE *fp = fopen(f->path, "wb");

	assert_non_null(fp);
	assert_int_equal(fwrite(img, 1, len, fp), len);
	fclose(fp);
	hs_ctx_clear_error(f->ctx);
	assert_int_equal(hs_file_open(f->ctx, in, f->path), 0);
	return hs_cfb_open(f->ctx, cfb, in);
}

static int sink(struct hs_ctx *ctx, void *arg, const uint8_t *data, size_t len)
{
	(void)ctx;
	return hs_buf_append(arg, data, len);
}

static void check_good(struct fx *f, const struct hs_cfb *cfb)
{
	const struct hs_cfb_entry *root = &cfb->entries[0];
	const char *order = "ABS";
	struct hs_buf b = {0};

	assert_int_equal(cfb->n_entries, 5);
	assert_int_equal(root->n_kids, 3);
	for (int i = 0; i < 3; i++) /* hash order */
		assert_int_equal(cfb->entries[cfb->kids[root->first_kid + i]].name[0], order[i]);
	for (uint32_t i = 0; i < cfb->n_entries; i++) {
		const struct hs_cfb_entry *e = &cfb->entries[i];

		if (e->type != HS_CFB_STREAM)
			continue;
		b.len = 0;
		assert_int_equal(hs_cfb_read(f->ctx, cfb, i, sink, &b), 0);
		assert_int_equal(b.len, e->size);
		if (e->name[0] == 'A')
			assert_int_equal(b.data[99], 'a' + 99 % 26);
		if (e->name[0] == 'B')
			assert_int_equal(b.data[4095], (uint8_t)(4095 * 7));
		if (e->name[0] == 'C')
			assert_int_equal(b.data[63], 'c');
	}
	hs_buf_free(&b);
}

static void test_good(void **state)
{
	struct fx *f = *state;
	struct hs_file in;
	struct hs_cfb cfb;

	assert_int_equal(open_img(f, &in, &cfb, IMG_LEN), 0);
	check_good(f, &cfb);
	hs_cfb_close(&cfb);
	hs_file_close(&in);
}

/* Writing compacted and reading back gives the same entries and data. */
static void test_roundtrip(void **state)
{
	static const uint8_t name[] = {'N', 0, 'e', 0, 'w', 0, 0, 0};
	static const uint8_t drop_a[] = {'A', 0, 0, 0};
	const struct hs_cfb_new_stream drop = {drop_a, sizeof(drop_a), NULL, 0};
	const struct hs_cfb_new_stream add = {name, sizeof(name), (const uint8_t *)"hello", 5};
	struct fx *f = *state;
	struct hs_file in, in2;
	struct hs_cfb cfb, cfb2;
	struct hs_out out = {.fd = -1};
	char path2[80];

	assert_int_equal(open_img(f, &in, &cfb, IMG_LEN), 0);
	snprintf(path2, sizeof(path2), "%s.out", f->path);
	assert_int_equal(hs_out_open(f->ctx, &out, path2, 0600), 0);
	assert_int_equal(hs_cfb_write(f->ctx, &cfb, &out, &drop, 1, &add, 1), 0);
	assert_int_equal(hs_out_commit(f->ctx, &out), 0);
	hs_out_abort(&out);
	assert_int_equal(hs_file_open(f->ctx, &in2, path2), 0);
	assert_int_equal(hs_cfb_open(f->ctx, &cfb2, &in2), 0);
	assert_int_equal(cfb2.n_entries, 5);
	assert_true(hs_cfb_find_root_stream(&cfb2, name, sizeof(name)) > 0);
	assert_true(hs_cfb_find_root_stream(&cfb2, drop_a, sizeof(drop_a)) < 0);
	assert_memory_equal(cfb2.entries[0].clsid, cfb.entries[0].clsid, 16);
	hs_cfb_close(&cfb2);
	hs_file_close(&in2);
	unlink(path2);
	hs_cfb_close(&cfb);
	hs_file_close(&in);
}

struct bad_case {
	const char *name;
	void (*mutate)(void);
	size_t len;
};

static void m_dir_loop(void)
{
	put32(fat_entry(2), 1); /* directory chain 1 -> 2 -> 1 */
}
static void m_stream_loop(void)
{
	put32(fat_entry(6), 4); /* B: 3 4 5 6 4 ... */
}
static void m_mini_loop(void)
{
	put32(sect(12), 0); /* A: mini 0 -> 0 */
}
static void m_cross_link(void)
{
	put32(dirent(4) + 0x74, 1); /* C shares A's mini sector 1 */
}
static void m_sector_out_of_range(void)
{
	put32(dirent(2) + 0x74, 0x00fffff0);
}
static void m_fat_past_eof(void)
{
	put32(0x4c, 500); /* FAT sector beyond the file */
}
static void m_fat_count_huge(void)
{
	put32(0x2c, 0x7fffffff);
}
static void m_dir_start_huge(void)
{
	put32(0x30, 0xfffffff0);
}
static void m_tree_loop(void)
{
	put32(dirent(1) + 0x48, 2); /* A.right = B, B.left = A */
}
static void m_child_id_huge(void)
{
	put32(dirent(3) + 0x4c, 0x00ffffff);
}
static void m_stream_too_big(void)
{
	put32(dirent(2) + 0x78, 0x7fffffff);
}
static void m_name_len(void)
{
	img[dirent(1) + 0x40] = 66;
}
static void m_bad_type(void)
{
	img[dirent(4) + 0x42] = 7;
}
static void m_minifat_chain_loop(void)
{
	put32(fat_entry(12), 12);
}
static void m_dup_names(void)
{
	img[dirent(4)] = 'A'; /* fine inside S... */
	img[dirent(3)] = 'A'; /* ...but S named A duplicates A in the root */
	img[dirent(3) + 0x40] = 4;
}
static void m_none(void)
{
}

static void test_malformed(void **state)
{
	static const struct bad_case cases[] = {
	        {"directory chain loop", m_dir_loop, IMG_LEN},
	        {"stream chain loop", m_stream_loop, IMG_LEN},
	        {"mini chain loop", m_mini_loop, IMG_LEN},
	        {"cross-linked mini sectors", m_cross_link, IMG_LEN},
	        {"sector id out of range", m_sector_out_of_range, IMG_LEN},
	        {"FAT sector past EOF", m_fat_past_eof, IMG_LEN},
	        {"huge FAT count", m_fat_count_huge, IMG_LEN},
	        {"huge directory start", m_dir_start_huge, IMG_LEN},
	        {"directory tree loop", m_tree_loop, IMG_LEN},
	        {"huge child id", m_child_id_huge, IMG_LEN},
	        {"stream larger than file", m_stream_too_big, IMG_LEN},
	        {"name length", m_name_len, IMG_LEN},
	        {"entry type", m_bad_type, IMG_LEN},
	        {"miniFAT chain loop", m_minifat_chain_loop, IMG_LEN},
	        {"duplicate names", m_dup_names, IMG_LEN},
	        {"truncated in stream B", m_none, SS * 8},
	        {"header only", m_none, 512},
	        {"short header", m_none, 100},
	};
	struct fx *f = *state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct hs_file in;
		struct hs_cfb cfb;

		build();
		cases[i].mutate();
		print_message("case: %s\n", cases[i].name);
		assert_int_equal(open_img(f, &in, &cfb, cases[i].len), HS_ERR_FORMAT);
		assert_true(strlen(hs_ctx_message(f->ctx)) > 0);
		hs_file_close(&in);
	}
}

/* A storage that is its own child is a loop, not infinite recursion.
 * (Deep but loop-free nesting is refused in tests/e2e/test_msi.py.) */
static void test_storage_own_child(void **state)
{
	struct fx *f = *state;
	struct hs_file in;
	struct hs_cfb cfb;

	put32(dirent(3) + 0x4c, 3);
	assert_int_equal(open_img(f, &in, &cfb, IMG_LEN), HS_ERR_FORMAT);
	hs_file_close(&in);
}

/* The digest of each presigned fixture equals the digest osslsigncode
 * computed and signed into it (SpcIndirectDataContent). */
static void test_digest_vs_osslsigncode(void **state)
{
	static const char *const names[] = {"presigned.msi", "presigned-dse.msi"};
	struct fx *f = *state;
	const char *fix = getenv("HS_FIXTURES");

	if (fix == NULL)
		skip();
	for (size_t i = 0; i < 2; i++) {
		char *path = hs_strprintf("%s/msi/%s", fix, names[i]);
		uint8_t *der = NULL, *dg = NULL;
		size_t der_len = 0, dg_len = 0;
		const unsigned char *p;
		PKCS7 *p7;
		struct hs_spc_indirect spc;
		const ASN1_STRING *seq;

		assert_non_null(path);
		assert_int_equal(hs_extract_signature(f->ctx, path, &der, &der_len), 0);
		p = der;
		p7 = d2i_PKCS7(NULL, &p, (long)der_len);
		assert_non_null(p7);
		seq = p7->d.sign->contents->d.other->value.sequence;
		assert_int_equal(
		        hs_spc_indirect_parse(f->ctx, &spc, seq->data, (size_t)seq->length), 0);
		assert_string_equal(spc.data_type, HS_OID_SPC_SIPINFO);
		assert_int_equal(hs_digest_file(f->ctx, path, HS_DIGEST_SHA256, &dg, &dg_len), 0);
		assert_int_equal(dg_len, spc.digest_len);
		assert_memory_equal(dg, spc.digest, dg_len);
		hs_spc_indirect_free(&spc);
		PKCS7_free(p7);
		hs_free(der);
		hs_free(dg);
		free(path);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_good, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_storage_own_child, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_digest_vs_osslsigncode, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
