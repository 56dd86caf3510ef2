/*
 * test_pe.c - the PE format module against synthetic PE32 / PE32+ images
 * built in memory, checked with independent straightforward computations
 * (digest of the file with the excluded fields cut out, word-by-word
 * checksum), and against pesign on real PE files when they are present.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/obj_mac.h>

#include "core/core.h"
#include "core/file.h"
#include "core/stream.h"
#include "formats/format.h"

/* Layout of the synthetic image (see img_build). */
#define T_SIZE_OF_HEADERS 0x400
#define T_TEXT_OFF        0x400
#define T_TEXT_SIZE       0x1200 /* one full page and a partial one */
#define T_DATA_OFF        0x1600
#define T_DATA_SIZE       0x200
#define T_SECTIONS_END    0x1800
#define T_NSECTIONS       3 /* .text, .data, .bss (no raw data) */

struct img_spec {
	const char *name;
	bool plus;       /* PE32+ */
	uint32_t e;      /* e_lfanew; odd values test checksum parity */
	size_t overlay;  /* bytes after the last section */
	size_t sig_len;  /* DER content bytes of a fake signature, 0 unsigned */
	bool sig_no_pad; /* directory Size leaves out the last entry's padding */
};

struct img {
	uint8_t *data;
	size_t len;
	uint32_t e;
	bool plus;
	size_t checksum_off;
	size_t cert_dir_off;
	size_t cert_table_off; /* 0 if unsigned */
};

struct fixture {
	struct hs_ctx *ctx;
	char dir[64];
};

static uint32_t rng_state = 0x12345678;

static uint8_t rng_byte(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return (uint8_t)rng_state;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static size_t opt_header_size(bool plus)
{
	return plus ? 240 : 224;
}

/* Offset of NumberOfRvaAndSizes from e_lfanew. */
static size_t nrva_off(bool plus)
{
	return 24 + (plus ? 108 : 92);
}

static void put_section(uint8_t *s, const char *name, uint32_t raw_size, uint32_t raw_off)
{
	memset(s, 0, 40);
	memcpy(s, name, strlen(name));
	put32(s + 8, raw_size ? raw_size : 0x1000);
	put32(s + 16, raw_size);
	put32(s + 20, raw_off);
}

static void img_headers(struct img *im)
{
	uint8_t *p = im->data, *oh = p + im->e + 24;
	uint8_t *sec = oh + opt_header_size(im->plus);

	memcpy(p, "MZ", 2);
	put32(p + 0x3c, im->e);
	memcpy(p + im->e, "PE\0\0", 4);
	put16(p + im->e + 4, im->plus ? 0x8664 : 0x14c);
	put16(p + im->e + 6, T_NSECTIONS);
	put16(p + im->e + 20, (uint16_t)opt_header_size(im->plus));
	put16(oh, im->plus ? 0x20b : 0x10b);
	put32(oh + 32, 0x1000);
	put32(oh + 36, 0x200);
	put32(oh + 60, T_SIZE_OF_HEADERS);
	put32(oh + 64, 0xdeadbeef); /* stale checksum: must be ignored */
	put32(p + im->e + nrva_off(im->plus), 16);
	memset(p + im->cert_dir_off, 0, 8);
	put_section(sec, ".text", T_TEXT_SIZE, T_TEXT_OFF);
	put_section(sec + 40, ".data", T_DATA_SIZE, T_DATA_OFF);
	put_section(sec + 80, ".bss", 0, 0);
}

/* Appends WIN_CERTIFICATE { DER SEQUENCE of sig_len bytes } at an aligned offset. */
static void img_sign(struct img *im, const struct img_spec *sp)
{
	size_t der_len = 4 + sp->sig_len; /* 30 82 LL LL content */
	size_t dw = 8 + der_len, pad = (8 - dw % 8) % 8;
	size_t table_len = dw + (sp->sig_no_pad ? 0 : pad);
	uint8_t *w;

	im->cert_table_off = (im->len + 7) & ~(size_t)7;
	memset(im->data + im->len, 0, im->cert_table_off - im->len);
	w = im->data + im->cert_table_off;
	put32(w, (uint32_t)dw);
	put16(w + 4, 0x0200);
	put16(w + 6, 0x0002);
	w[8] = 0x30;
	w[9] = 0x82;
	w[10] = (uint8_t)(sp->sig_len >> 8);
	w[11] = (uint8_t)sp->sig_len;
	memset(w + 8 + der_len, 0, pad);
	im->len = im->cert_table_off + table_len;
	put32(im->data + im->cert_dir_off, (uint32_t)im->cert_table_off);
	put32(im->data + im->cert_dir_off + 4, (uint32_t)table_len);
}

static void img_build(struct img *im, const struct img_spec *sp)
{
	size_t cap = T_SECTIONS_END + sp->overlay + 16 + sp->sig_len + 16;

	memset(im, 0, sizeof(*im));
	im->data = malloc(cap);
	assert_non_null(im->data);
	for (size_t i = 0; i < cap; i++)
		im->data[i] = rng_byte();
	im->e = sp->e;
	im->plus = sp->plus;
	im->checksum_off = sp->e + 88;
	im->cert_dir_off = sp->e + nrva_off(sp->plus) + 4 + 4 * 8;
	im->len = T_SECTIONS_END + sp->overlay;
	img_headers(im);
	if (sp->sig_len > 0)
		img_sign(im, sp);
}

static void img_free(struct img *im)
{
	free(im->data);
	im->data = NULL;
}

/* --- independent reference computations ------------------------------- */

/* Authenticode digest the long way: copy the kept bytes, then hash. */
static size_t ref_digest(const struct img *im, const EVP_MD *md, uint8_t *out)
{
	size_t end = im->cert_table_off ? im->cert_table_off : im->len;
	uint8_t *kept = calloc(1, end + 8);
	size_t n = 0;
	unsigned int len = 0;

	assert_non_null(kept);
	for (size_t i = 0; i < end; i++) {
		if (i >= im->checksum_off && i < im->checksum_off + 4)
			continue;
		if (i >= im->cert_dir_off && i < im->cert_dir_off + 8)
			continue;
		kept[n++] = im->data[i];
	}
	if (!im->cert_table_off)
		n += (8 - end % 8) % 8; /* calloc'd zeros */
	assert_int_equal(EVP_Digest(kept, n, out, &len, md, NULL), 1);
	free(kept);
	return len;
}

/* CheckSumMappedFile word by word, with the CheckSum field as zeros. */
static uint32_t ref_checksum(const uint8_t *p, size_t n, size_t checksum_off)
{
	uint32_t sum = 0;

	for (size_t i = 0; i < n; i += 2) {
		uint32_t lo = p[i], hi = i + 1 < n ? p[i + 1] : 0;

		if (i >= checksum_off && i < checksum_off + 4)
			lo = 0;
		if (i + 1 >= checksum_off && i + 1 < checksum_off + 4)
			hi = 0;
		sum += lo | hi << 8;
		sum = (sum & 0xffff) + (sum >> 16);
	}
	return (sum & 0xffff) + (uint32_t)n;
}

/* --- plumbing ---------------------------------------------------------- */

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TMPDIR");

	assert_non_null(f);
	assert_int_equal(hs_ctx_new(&f->ctx), 0);
	snprintf(f->dir, sizeof(f->dir), "%s/test_pe.XXXXXX",
	         tmp && strlen(tmp) < 40 ? tmp : "/tmp");
	assert_non_null(mkdtemp(f->dir));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	DIR *d = opendir(f->dir);
	struct dirent *de;
	char path[512];

	while (d != NULL && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", f->dir, de->d_name);
		unlink(path);
	}
	if (d != NULL)
		closedir(d);
	rmdir(f->dir);
	hs_ctx_free(f->ctx);
	free(f);
	return 0;
}

static void write_file(const char *path, const uint8_t *p, size_t n)
{
	FILE *fp = fopen(path, "wb");

	assert_non_null(fp);
	assert_int_equal(fwrite(p, 1, n, fp), n);
	assert_int_equal(fclose(fp), 0);
}

static uint8_t *read_file(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	struct stat st;
	uint8_t *p;

	assert_non_null(fp);
	assert_int_equal(fstat(fileno(fp), &st), 0);
	p = malloc((size_t)st.st_size + 1);
	assert_non_null(p);
	assert_int_equal(fread(p, 1, (size_t)st.st_size, fp), (size_t)st.st_size);
	fclose(fp);
	*len = (size_t)st.st_size;
	return p;
}

/* Writes bytes to dir/name and opens them as a PE; returns open()'s result. */
static int pe_open_bytes(struct fixture *f, const char *name, const uint8_t *p, size_t n,
                         struct hs_file *file, char *path, size_t path_len, void **pe)
{
	snprintf(path, path_len, "%s/%s", f->dir, name);
	write_file(path, p, n);
	assert_int_equal(hs_file_open(f->ctx, file, path), 0);
	hs_ctx_clear_error(f->ctx);
	return hs_format_pe.open(f->ctx, file, pe);
}

/* --- probe ------------------------------------------------------------- */

static void test_probe(void **state)
{
	static const struct {
		const char *name;
		size_t len;
		uint32_t e;
		const char *magic;
		bool want;
	} cases[] = {
	        {"full PE", 512, 0x80, "MZ", true},
	        {"not MZ", 512, 0x80, "ZM", false},
	        {"one byte", 1, 0x80, "MZ", false},
	        {"MZ only", 2, 0x80, "MZ", true},
	        {"e_lfanew beyond window", 512, 0x10000, "MZ", true},
	        {"e_lfanew at window end", 512, 510, "MZ", true},
	        {"no PE signature", 512, 0x100, "MZ", false},
	};
	struct img_spec sp = {"probe", false, 0x80, 0, 0, false};
	struct img im;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		img_build(&im, &sp);
		memcpy(im.data, cases[i].magic, 2);
		put32(im.data + 0x3c, cases[i].e);
		print_message("probe: %s\n", cases[i].name);
		assert_int_equal(hs_format_pe.probe(im.data, cases[i].len), cases[i].want);
		img_free(&im);
	}
}

/* --- open -------------------------------------------------------------- */

static void test_open_valid(void **state)
{
	static const struct img_spec specs[] = {
	        {"PE32", false, 0x80, 5, 0, false},
	        {"PE32+", true, 0x80, 0, 0, false},
	        {"PE32 odd e_lfanew", false, 0x81, 3, 0, false},
	        {"PE32 signed", false, 0x80, 3, 300, false},
	        {"PE32+ signed", true, 0x80, 8, 301, false},
	        {"signed, Size without last padding", true, 0x80, 8, 301, true},
	};
	struct fixture *f = *state;
	char path[128];

	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		struct hs_file file;
		struct img im;
		void *pe = NULL;

		print_message("open: %s\n", specs[i].name);
		img_build(&im, &specs[i]);
		assert_int_equal(
		        pe_open_bytes(f, "valid", im.data, im.len, &file, path, sizeof(path), &pe),
		        0);
		assert_int_equal(hs_format_pe.is_signed(pe), specs[i].sig_len > 0);
		hs_format_pe.close(pe);
		hs_file_close(&file);
		img_free(&im);
	}
}

enum field_base { BASE_FILE, BASE_E, BASE_NRVA, BASE_CERT_DIR, BASE_CERT_TABLE };

struct malformation {
	const char *name;
	bool plus;
	bool is_signed;
	enum field_base base; /* what `off` is relative to */
	size_t off;
	int width; /* 2 or 4; 0: no write */
	uint32_t value;
	long resize; /* >0: keep this many bytes; <0: append -resize more */
	int want;
};

static size_t field_base(const struct img *im, enum field_base base)
{
	switch (base) {
	case BASE_E:
		return im->e;
	case BASE_NRVA:
		return im->e + nrva_off(im->plus);
	case BASE_CERT_DIR:
		return im->cert_dir_off;
	case BASE_CERT_TABLE:
		return im->cert_table_off;
	default:
		return 0;
	}
}

static void apply(struct img *im, const struct malformation *m)
{
	uint8_t *p = im->data + field_base(im, m->base) + m->off;

	if (m->width == 2)
		put16(p, (uint16_t)m->value);
	else if (m->width == 4)
		put32(p, m->value);
	if (m->resize > 0)
		im->len = (size_t)m->resize;
	else if (m->resize < 0)
		im->len += (size_t)-m->resize; /* img_build leaves slack */
}

static const struct malformation malformations[] = {
        {"one byte", false, false, BASE_FILE, 0, 0, 0, 1, HS_ERR_FORMAT},
        {"truncated DOS header", false, false, BASE_FILE, 0, 0, 0, 40, HS_ERR_FORMAT},
        {"not MZ", false, false, BASE_FILE, 0, 2, 0x4141, 0, HS_ERR_FORMAT},
        {"e_lfanew past EOF", false, false, BASE_FILE, 0x3c, 4, 0xffffff00, 0, HS_ERR_FORMAT},
        {"e_lfanew leaves no COFF header", false, false, BASE_FILE, 0x3c, 4, 0x17f0, 0,
         HS_ERR_FORMAT},
        {"no PE signature", false, false, BASE_E, 0, 4, 0x00004550 + 1, 0, HS_ERR_FORMAT},
        {"truncated COFF header", false, false, BASE_FILE, 0, 0, 0, 0x80 + 10, HS_ERR_FORMAT},
        {"truncated optional header", true, false, BASE_FILE, 0, 0, 0, 0x80 + 60, HS_ERR_FORMAT},
        {"bad optional magic", false, false, BASE_E, 24, 2, 0x107, 0, HS_ERR_FORMAT},
        {"SizeOfOptionalHeader tiny", false, false, BASE_E, 20, 2, 80, 0, HS_ERR_FORMAT},
        {"SizeOfOptionalHeader misses cert entry", true, false, BASE_E, 20, 2, 140, 0,
         HS_ERR_FORMAT},
        {"NumberOfRvaAndSizes 4", false, false, BASE_NRVA, 0, 4, 4, 0, HS_ERR_UNSUPPORTED},
        {"PE32+ NumberOfRvaAndSizes 0", true, false, BASE_NRVA, 0, 4, 0, 0, HS_ERR_UNSUPPORTED},
        {"section table past EOF", false, false, BASE_E, 6, 2, 0xffff, 0, HS_ERR_FORMAT},
        {"SizeOfOptionalHeader moves sections past EOF", true, false, BASE_E, 20, 2, 0xfff0, 0,
         HS_ERR_FORMAT},
        {"SizeOfHeaders past EOF", false, false, BASE_E, 24 + 60, 4, 0x100000, 0, HS_ERR_FORMAT},
        {"SizeOfHeaders inside headers", false, false, BASE_E, 24 + 60, 4, 0x40, 0, HS_ERR_FORMAT},
        {"cert offset past EOF", false, true, BASE_CERT_DIR, 0, 4, 0x7ffff8, 0, HS_ERR_FORMAT},
        {"cert size past EOF", false, true, BASE_CERT_DIR, 4, 4, 0x10000, 0, HS_ERR_FORMAT},
        {"cert size huge", true, true, BASE_CERT_DIR, 4, 4, 0xfffffff8, 0, HS_ERR_FORMAT},
        {"cert table not at EOF", false, true, BASE_CERT_DIR, 4, 4, 0x80, 0, HS_ERR_FORMAT},
        {"bytes after cert table", false, true, BASE_FILE, 0, 0, 0, -8, HS_ERR_FORMAT},
        {"cert offset unaligned", false, true, BASE_CERT_DIR, 0, 4, T_SECTIONS_END + 4, 0,
         HS_ERR_FORMAT},
        {"cert offset inside headers", false, true, BASE_CERT_DIR, 0, 4, 0x100, 0, HS_ERR_FORMAT},
        {"cert size 0 with offset", false, true, BASE_CERT_DIR, 4, 4, 0, 0, HS_ERR_FORMAT},
        {"dwLength past table", true, true, BASE_CERT_TABLE, 0, 4, 0x10000, 0, HS_ERR_FORMAT},
        {"dwLength below 8", true, true, BASE_CERT_TABLE, 0, 4, 4, 0, HS_ERR_FORMAT},
        {"second entry runs past table", true, true, BASE_CERT_TABLE, 0, 4, 208, 0, HS_ERR_FORMAT},
        {"revision 1.0", false, true, BASE_CERT_TABLE, 4, 2, 0x0100, 0, HS_ERR_UNSUPPORTED},
        {"X.509 entry", false, true, BASE_CERT_TABLE, 6, 2, 0x0001, 0, HS_ERR_UNSUPPORTED},
};

static void test_open_malformed(void **state)
{
	struct fixture *f = *state;
	char path[128];

	for (size_t i = 0; i < sizeof(malformations) / sizeof(malformations[0]); i++) {
		const struct malformation *m = &malformations[i];
		struct img_spec sp = {m->name, m->plus, 0x80, 5, m->is_signed ? 200 : 0, false};
		struct hs_file file;
		struct img im;
		void *pe = NULL;
		int r;

		img_build(&im, &sp);
		apply(&im, m);
		r = pe_open_bytes(f, "bad", im.data, im.len, &file, path, sizeof(path), &pe);
		print_message("open: %-45s -> %d %s\n", m->name, r, hs_ctx_message(f->ctx));
		assert_int_equal(r, m->want);
		assert_null(pe);
		assert_non_null(strstr(hs_ctx_message(f->ctx), path));
		hs_file_close(&file);
		img_free(&im);
	}
}

static void test_open_text_file(void **state)
{
	static const uint8_t text[] = "MZ is how this text file happens to start\n";
	struct fixture *f = *state;
	struct hs_file file;
	char path[128];
	void *pe = NULL;

	assert_int_equal(
	        pe_open_bytes(f, "text", text, sizeof(text) - 1, &file, path, sizeof(path), &pe),
	        HS_ERR_FORMAT);
	hs_file_close(&file);
}

/* --- digest, embed, extract, remove ------------------------------------ */

static const uint8_t *fake_pkcs7(size_t *len)
{
	static uint8_t der[4 + 333];

	der[0] = 0x30;
	der[1] = 0x82;
	der[2] = 333 >> 8;
	der[3] = 333 & 0xff;
	for (size_t i = 4; i < sizeof(der); i++)
		der[i] = (uint8_t)(i * 7 + 1);
	*len = sizeof(der);
	return der;
}

/* Runs digest() on dir/name; with out_name, copies to it and embeds pkcs7. */
static void run_digest(struct fixture *f, const char *in_path, const EVP_MD *md,
                       struct hs_indirect *ind, const char *out_name, const uint8_t *pkcs7,
                       size_t pkcs7_len)
{
	struct hs_digest_params params = {.md = md};
	struct hs_out out = {.fd = -1};
	struct hs_file file;
	char out_path[128];
	void *pe = NULL;

	assert_int_equal(hs_file_open(f->ctx, &file, in_path), 0);
	assert_int_equal(hs_format_pe.open(f->ctx, &file, &pe), 0);
	if (out_name != NULL) {
		snprintf(out_path, sizeof(out_path), "%s/%s", f->dir, out_name);
		assert_int_equal(hs_out_open(f->ctx, &out, out_path, 0644), 0);
	}
	assert_int_equal(
	        hs_format_pe.digest(f->ctx, pe, &params, ind, out_name != NULL ? &out : NULL), 0);
	if (out_name != NULL) {
		assert_int_equal(out.size % 8, 0);
		assert_int_equal(hs_format_pe.embed(f->ctx, pe, pkcs7, pkcs7_len, &out), 0);
		assert_int_equal(hs_out_commit(f->ctx, &out), 0);
		hs_out_abort(&out);
	}
	hs_format_pe.close(pe);
	hs_file_close(&file);
}

/* The signed output: layout, checksum, and the copy equals the input. */
static void check_signed_output(const struct img *im, const uint8_t *o, size_t olen,
                                const uint8_t *pkcs7, size_t pkcs7_len)
{
	size_t end = im->cert_table_off ? im->cert_table_off : im->len;
	size_t table_off = (end + 7) & ~(size_t)7;
	size_t dw = 8 + pkcs7_len + (8 - pkcs7_len % 8) % 8;

	assert_int_equal(olen, table_off + dw);
	assert_int_equal(get32(o + im->checksum_off), ref_checksum(o, olen, im->checksum_off));
	assert_int_equal(get32(o + im->cert_dir_off), table_off);
	assert_int_equal(get32(o + im->cert_dir_off + 4), dw);
	for (size_t i = 0; i < end; i++) {
		if (i >= im->checksum_off && i < im->checksum_off + 4)
			continue;
		if (i >= im->cert_dir_off && i < im->cert_dir_off + 8)
			continue;
		assert_int_equal(o[i], im->data[i]);
	}
	for (size_t i = end; i < table_off; i++)
		assert_int_equal(o[i], 0);
	assert_int_equal(get32(o + table_off), dw);
	assert_int_equal(get32(o + table_off + 4), 0x00020200);
	assert_memory_equal(o + table_off + 8, pkcs7, pkcs7_len);
}

/* Reopens a signed output: same digest, signature extracts back. */
static void check_reopen(struct fixture *f, const char *path, const EVP_MD *md,
                         const struct hs_indirect *first, const uint8_t *pkcs7, size_t pkcs7_len)
{
	struct hs_digest_params params = {.md = md};
	struct hs_indirect again = {0};
	struct hs_buf sig = {0};
	struct hs_file file;
	void *pe = NULL;

	assert_int_equal(hs_file_open(f->ctx, &file, path), 0);
	assert_int_equal(hs_format_pe.open(f->ctx, &file, &pe), 0);
	assert_true(hs_format_pe.is_signed(pe));
	assert_int_equal(hs_format_pe.digest(f->ctx, pe, &params, &again, NULL), 0);
	assert_memory_equal(again.digest, first->digest, first->digest_len);
	assert_int_equal(hs_format_pe.extract(f->ctx, pe, &sig), 0);
	assert_int_equal(sig.len, pkcs7_len);
	assert_memory_equal(sig.data, pkcs7, pkcs7_len);
	hs_buf_free(&sig);
	hs_indirect_free(&again);
	hs_format_pe.close(pe);
	hs_file_close(&file);
}

/* remove() gives back the padded unsigned image with a valid checksum. */
static void check_remove(struct fixture *f, const char *signed_path, const uint8_t *signed_img,
                         size_t checksum_off, size_t cert_dir_off)
{
	struct hs_out out = {.fd = -1};
	struct hs_file file;
	char out_path[128];
	void *pe = NULL;
	uint8_t *o;
	size_t olen;

	snprintf(out_path, sizeof(out_path), "%s/removed", f->dir);
	assert_int_equal(hs_file_open(f->ctx, &file, signed_path), 0);
	assert_int_equal(hs_format_pe.open(f->ctx, &file, &pe), 0);
	assert_int_equal(hs_out_open(f->ctx, &out, out_path, 0644), 0);
	assert_int_equal(hs_format_pe.remove(f->ctx, pe, &out), 0);
	assert_int_equal(hs_out_commit(f->ctx, &out), 0);
	hs_out_abort(&out);
	hs_format_pe.close(pe);
	hs_file_close(&file);
	o = read_file(out_path, &olen);
	assert_int_equal(olen, get32(signed_img + cert_dir_off));
	assert_int_equal(get32(o + cert_dir_off), 0);
	assert_int_equal(get32(o + cert_dir_off + 4), 0);
	assert_int_equal(get32(o + checksum_off), ref_checksum(o, olen, checksum_off));
	for (size_t i = 0; i < olen; i++) {
		if ((i >= checksum_off && i < checksum_off + 4) ||
		    (i >= cert_dir_off && i < cert_dir_off + 8))
			continue;
		assert_int_equal(o[i], signed_img[i]);
	}
	free(o);
}

static const struct img_spec digest_specs[] = {
        {"PE32 aligned", false, 0x80, 0, 0, false},
        {"PE32 +1", false, 0x80, 1, 0, false},
        {"PE32 +3", false, 0x80, 3, 0, false},
        {"PE32 +7", false, 0x80, 7, 0, false},
        {"PE32+ +13", true, 0x80, 13, 0, false},
        {"PE32+ +8", true, 0x80, 8, 0, false},
        {"PE32 odd e_lfanew +5", false, 0x81, 5, 0, false},
        {"PE32+ odd e_lfanew +2", true, 0x83, 2, 0, false},
        {"PE32+ multi-chunk overlay", true, 0x80, 2 * HS_IO_CHUNK + 3, 0, false},
        /* Long enough for the threaded stream, with the ring of chunk
         * buffers wrapping around and a partial last chunk. */
        {"PE32 threaded stream odd e_lfanew", false, 0x81,
         HS_STREAM_THREAD_MIN + 5 * HS_IO_CHUNK / 2 + 1, 0, false},
        {"PE32+ threaded stream re-sign", true, 0x80, HS_STREAM_THREAD_MIN + 3, 301, true},
        {"PE32 re-sign", false, 0x80, 3, 300, false},
        {"PE32+ re-sign odd e_lfanew", true, 0x81, 8, 211, true},
};

static void test_digest_embed(void **state)
{
	struct fixture *f = *state;
	const EVP_MD *mds[] = {EVP_sha256(), EVP_sha1()};
	char in_path[128], out_path[128];

	snprintf(in_path, sizeof(in_path), "%s/in", f->dir);
	snprintf(out_path, sizeof(out_path), "%s/signed", f->dir);
	for (size_t i = 0; i < sizeof(digest_specs) / sizeof(digest_specs[0]); i++) {
		for (size_t m = 0; m < 2; m++) {
			struct hs_indirect ind = {0};
			uint8_t want[EVP_MAX_MD_SIZE];
			size_t want_len, pkcs7_len, olen;
			const uint8_t *pkcs7 = fake_pkcs7(&pkcs7_len);
			struct img im;
			uint8_t *o;

			print_message("digest: %s %s\n", digest_specs[i].name,
			              EVP_MD_get0_name(mds[m]));
			img_build(&im, &digest_specs[i]);
			write_file(in_path, im.data, im.len);
			want_len = ref_digest(&im, mds[m], want);
			run_digest(f, in_path, mds[m], &ind, "signed", pkcs7, pkcs7_len);
			assert_int_equal(ind.digest_len, want_len);
			assert_memory_equal(ind.digest, want, want_len);
			assert_true(ind.data_der.len > 0);
			assert_int_equal(ind.page_hashes.len, 0);
			o = read_file(out_path, &olen);
			check_signed_output(&im, o, olen, pkcs7, pkcs7_len);
			check_reopen(f, out_path, mds[m], &ind, pkcs7, pkcs7_len);
			check_remove(f, out_path, o, im.checksum_off, im.cert_dir_off);
			free(o);
			hs_indirect_free(&ind);
			img_free(&im);
		}
	}
}

static void test_unsigned_ops(void **state)
{
	struct img_spec sp = {"unsigned", false, 0x80, 3, 0, false};
	struct fixture *f = *state;
	struct hs_out out = {.fd = -1};
	struct hs_buf sig = {0};
	struct hs_file file;
	char path[128], out_path[128];
	struct img im;
	void *pe = NULL;

	img_build(&im, &sp);
	assert_int_equal(
	        pe_open_bytes(f, "unsigned", im.data, im.len, &file, path, sizeof(path), &pe), 0);
	assert_false(hs_format_pe.is_signed(pe));
	assert_int_equal(hs_format_pe.extract(f->ctx, pe, &sig), HS_ERR_NOTFOUND);
	snprintf(out_path, sizeof(out_path), "%s/unsigned-out", f->dir);
	assert_int_equal(hs_out_open(f->ctx, &out, out_path, 0644), 0);
	assert_int_equal(hs_format_pe.remove(f->ctx, pe, &out), HS_ERR_NOTFOUND);
	/* embed without a digest() copy is an internal error, not a crash */
	assert_int_equal(hs_format_pe.embed(f->ctx, pe, (const uint8_t *)"x", 1, &out),
	                 HS_ERR_INVALID);
	hs_out_abort(&out);
	hs_format_pe.close(pe);
	hs_file_close(&file);
	img_free(&im);
}

/* An extracted signature with a non-DER blob is a format error. */
static void test_extract_bad_der(void **state)
{
	struct img_spec sp = {"bad der", false, 0x80, 3, 300, false};
	struct fixture *f = *state;
	struct hs_buf sig = {0};
	struct hs_file file;
	char path[128];
	struct img im;
	void *pe = NULL;

	img_build(&im, &sp);
	im.data[im.cert_table_off + 10] = 0xff; /* DER length > entry */
	assert_int_equal(
	        pe_open_bytes(f, "badder", im.data, im.len, &file, path, sizeof(path), &pe), 0);
	assert_int_equal(hs_format_pe.extract(f->ctx, pe, &sig), HS_ERR_FORMAT);
	hs_buf_free(&sig);
	hs_format_pe.close(pe);
	hs_file_close(&file);
	img_free(&im);
}

/* --- page hashes -------------------------------------------------------- */

/* Hash of file bytes [off, off+n) zero-padded to one 4096-byte page. */
static void ref_page(const struct img *im, size_t off, size_t n, const EVP_MD *md, uint8_t *out)
{
	uint8_t page[4096] = {0};
	unsigned int len;

	memcpy(page, im->data + off, n);
	assert_int_equal(EVP_Digest(page, sizeof(page), out, &len, md, NULL), 1);
}

/* Entry 0: headers without the two fields, zero-filled to 4096 - 12 bytes. */
static void ref_header_page(const struct img *im, const EVP_MD *md, uint8_t *out)
{
	uint8_t page[4096] = {0};
	size_t n = 0;
	unsigned int len;

	for (size_t i = 0; i < T_SIZE_OF_HEADERS; i++) {
		if (i >= im->checksum_off && i < im->checksum_off + 4)
			continue;
		if (i >= im->cert_dir_off && i < im->cert_dir_off + 8)
			continue;
		page[n++] = im->data[i];
	}
	assert_int_equal(EVP_Digest(page, 4096 - 12, out, &len, md, NULL), 1);
}

static void check_page_table(const struct img *im, const struct hs_indirect *ind, int nid)
{
	static const uint32_t offsets[] = {0, T_TEXT_OFF, T_TEXT_OFF + 4096, T_DATA_OFF,
	                                   T_SECTIONS_END};
	const EVP_MD *md = nid == NID_sha1 ? EVP_sha1() : EVP_sha256();
	size_t hlen = (size_t)EVP_MD_get_size(md), entry = 4 + hlen;
	const uint8_t *t = ind->page_hashes.data;
	uint8_t want[EVP_MAX_MD_SIZE], zeros[EVP_MAX_MD_SIZE] = {0};

	assert_int_equal(ind->page_hash_nid, nid);
	assert_int_equal(entry, nid == NID_sha1 ? 24 : 36);
	assert_int_equal(ind->page_hashes.len, 5 * entry);
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(get32(t + i * entry), offsets[i]);
	ref_header_page(im, md, want);
	assert_memory_equal(t + 4, want, hlen);
	ref_page(im, T_TEXT_OFF, 4096, md, want);
	assert_memory_equal(t + entry + 4, want, hlen);
	ref_page(im, T_TEXT_OFF + 4096, T_TEXT_SIZE - 4096, md, want);
	assert_memory_equal(t + 2 * entry + 4, want, hlen);
	ref_page(im, T_DATA_OFF, T_DATA_SIZE, md, want);
	assert_memory_equal(t + 3 * entry + 4, want, hlen);
	assert_memory_equal(t + 4 * entry + 4, zeros, hlen);
}

static void test_page_hashes(void **state)
{
	static const struct img_spec specs[] = {
	        {"PE32", false, 0x80, 5, 0, false},
	        {"PE32+ odd e_lfanew", true, 0x81, 0, 0, false},
	};
	static const int nids[] = {NID_sha256, NID_sha1, NID_sha384};
	struct fixture *f = *state;
	char in_path[128];

	snprintf(in_path, sizeof(in_path), "%s/in", f->dir);
	for (size_t i = 0; i < 2; i++) {
		for (size_t n = 0; n < 3; n++) {
			struct hs_digest_params params = {.md = EVP_sha256(),
			                                  .page_hash_nid = nids[n]};
			struct hs_indirect ind = {0};
			struct hs_file file;
			struct img im;
			void *pe = NULL;

			img_build(&im, &specs[i]);
			write_file(in_path, im.data, im.len);
			assert_int_equal(hs_file_open(f->ctx, &file, in_path), 0);
			assert_int_equal(hs_format_pe.open(f->ctx, &file, &pe), 0);
			assert_int_equal(hs_format_pe.digest(f->ctx, pe, &params, &ind, NULL), 0);
			/* anything but SHA-1 gives V2 (SHA-256) entries */
			check_page_table(&im, &ind, nids[n] == NID_sha1 ? NID_sha1 : NID_sha256);
			hs_indirect_free(&ind);
			hs_format_pe.close(pe);
			hs_file_close(&file);
			img_free(&im);
		}
	}
}

static void test_page_hash_errors(void **state)
{
	static const struct malformation cases[] = {
	        {"SizeOfHeaders above a page", false, false, BASE_E, 24 + 60, 4, 0x1400, 0,
	         HS_ERR_UNSUPPORTED},
	        {"section raw data past EOF", false, false, BASE_E, 24 + 224 + 16, 4, 0x100000, 0,
	         HS_ERR_FORMAT},
	};
	struct fixture *f = *state;
	char path[128];

	for (size_t i = 0; i < 2; i++) {
		struct img_spec sp = {"page", false, 0x80, 0, 0, false};
		struct hs_digest_params params = {.md = EVP_sha256(), .page_hash_nid = NID_sha256};
		struct hs_indirect ind = {0};
		struct hs_file file;
		struct img im;
		void *pe = NULL;

		img_build(&im, &sp);
		apply(&im, &cases[i]);
		assert_int_equal(
		        pe_open_bytes(f, "page", im.data, im.len, &file, path, sizeof(path), &pe),
		        0);
		assert_int_equal(hs_format_pe.digest(f->ctx, pe, &params, &ind, NULL),
		                 cases[i].want);
		print_message("page hashes: %s -> %s\n", cases[i].name, hs_ctx_message(f->ctx));
		hs_indirect_free(&ind);
		hs_format_pe.close(pe);
		hs_file_close(&file);
		img_free(&im);
	}
}

/* --- against pesign on real files --------------------------------------- */

/* SHA-256 digest that `pesign -h` prints for path, as hex; false if none. */
static bool pesign_hash(const char *path, char *hex, size_t hex_len)
{
	char cmd[1024], line[256];
	bool found = false;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "pesign -h -i '%s' 2>/dev/null", path);
	if ((p = popen(cmd, "r")) == NULL)
		return false;
	while (fgets(line, sizeof(line), p) != NULL) {
		if (strncmp(line, "hash: ", 6) == 0) {
			snprintf(hex, hex_len, "%.64s", line + 6);
			found = true;
		}
	}
	return pclose(p) == 0 && found;
}

static void check_against_pesign(struct fixture *f, const char *path)
{
	struct hs_digest_params params = {.md = EVP_sha256()};
	struct hs_indirect ind = {0};
	struct hs_file file;
	char want[65] = "", got[65];
	void *pe = NULL;

	if (!pesign_hash(path, want, sizeof(want))) {
		print_message("pesign: no hash for %s, skipped\n", path);
		return;
	}
	assert_int_equal(hs_file_open(f->ctx, &file, path), 0);
	assert_int_equal(hs_format_pe.open(f->ctx, &file, &pe), 0);
	assert_int_equal(hs_format_pe.digest(f->ctx, pe, &params, &ind, NULL), 0);
	for (size_t i = 0; i < 32; i++)
		snprintf(got + 2 * i, 3, "%02x", ind.digest[i]);
	print_message("pesign: %s %s\n", path, want);
	assert_string_equal(got, want);
	hs_indirect_free(&ind);
	hs_format_pe.close(pe);
	hs_file_close(&file);
}

static void test_pesign(void **state)
{
	static const char *const dir = "/usr/share/nsis/Stubs";
	struct fixture *f = *state;
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[512];
	int checked = 0;

	if (d == NULL || access("/usr/bin/pesign", X_OK) != 0) {
		if (d != NULL)
			closedir(d);
		skip();
	}
	while ((de = readdir(d)) != NULL) {
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		/* pesign pads differently; compare where no padding applies */
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size % 8 != 0)
			continue;
		check_against_pesign(f, path);
		checked++;
	}
	closedir(d);
	print_message("pesign: %d files compared\n", checked);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_probe),
	        cmocka_unit_test_setup_teardown(test_open_valid, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_open_malformed, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_open_text_file, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_digest_embed, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_unsigned_ops, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_extract_bad_der, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_page_hashes, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_page_hash_errors, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_pesign, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
