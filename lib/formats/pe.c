/*
 * pe.c - PE32 and PE32+ images (EXE, DLL, SYS, EFI, OCX): structure checks,
 * the linear Authenticode digest, page hashes, the PE checksum and the
 * attribute certificate table (authenticode.md section 1).
 *
 * All offsets below are file offsets; `e` is e_lfanew. The file is never
 * mapped or loaded whole: digest() and remove() stream it in HS_IO_CHUNK
 * chunks (core/stream.c, a few buffers), so memory does not grow with the
 * file.
 */
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <openssl/evp.h>
#include <openssl/obj_mac.h>

#include "authenticode/asn1.h"
#include "core/stream.h"
#include "formats/format.h"

#define PE_DOS_HEADER_LEN 64
#define PE_LFANEW_OFF     0x3c
#define PE_COFF_LEN       24 /* "PE\0\0" + IMAGE_FILE_HEADER */
#define PE_MAGIC_PE32     0x10b
#define PE_MAGIC_PE32PLUS 0x20b
#define PE_CHECKSUM_OFF   88 /* from e, the same in PE32 and PE32+ */
#define PE_CHECKSUM_LEN   4
#define PE_DIR_ENTRY_LEN  8
#define PE_CERT_DIR_INDEX 4
#define PE_MIN_DATA_DIRS  5
#define PE_SECTION_LEN    40
#define PE_PAGE_SIZE      4096

#define PE_WIN_CERT_HDR_LEN    8
#define PE_WIN_CERT_REVISION   0x0200 /* WIN_CERT_REVISION_2_0 */
#define PE_WIN_CERT_TYPE_PKCS7 0x0002 /* WIN_CERT_TYPE_PKCS_SIGNED_DATA */
/* Limits on untrusted input: real tables hold one entry (nesting is inside
 * the PKCS#7) and signatures of a few hundred KiB at most. */
#define PE_MAX_CERT_ENTRIES 64
#define PE_MAX_SIGNATURE    (64u * 1024 * 1024)

/*
 * PE checksum partial sum. The checksum adds 16-bit little-endian words at
 * even file offsets; keeping the bytes at even and odd offsets apart lets
 * any range be added in any order, whatever the parity of its start, and be
 * folded once at the end (folding is addition modulo 0xFFFF).
 */
struct pe_csum {
	uint64_t even; /* sum of bytes at even offsets (low halves of words) */
	uint64_t odd;  /* sum of bytes at odd offsets (high halves) */
};

/* A half-open byte range [start, end) of the file. */
struct pe_range {
	uint64_t start;
	uint64_t end;
};

struct pe_state {
	struct hs_file in; /* copy of the caller's; fd and path stay theirs */
	uint64_t e_lfanew;
	bool pe32plus;
	uint16_t nsections;
	uint64_t section_table_off;
	uint32_t size_of_headers;
	uint64_t checksum_off;
	uint64_t cert_dir_off;
	uint32_t cert_table_off; /* 0 when unsigned */
	uint32_t cert_table_size;
	/* Set by digest() when it copied the image, consumed by embed(). */
	bool copied;
	uint64_t copy_len;
	struct pe_csum csum;
};

static uint16_t pe_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t pe_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void pe_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void pe_put_le32(uint8_t *p, uint32_t v)
{
	pe_put_le16(p, (uint16_t)v);
	pe_put_le16(p + 2, (uint16_t)(v >> 16));
}

/* Zero bytes that bring `len` up to a multiple of 8. */
static size_t pe_pad8(uint64_t len)
{
	return (size_t)((8 - len % 8) % 8);
}

/* Sum of the four 16-bit lanes of x. */
static uint64_t pe_lanes(uint64_t x)
{
	return (x & 0xffff) + (x >> 16 & 0xffff) + (x >> 32 & 0xffff) + (x >> 48);
}

/*
 * Sums the byte pairs of an even-aligned run. This is the hot loop of a
 * digest pass, so it takes sixteen bytes at a time with SSE2, else on
 * little-endian hosts eight bytes at a time:
 * 16-bit lanes collect even and odd bytes and are flushed before they can
 * overflow (255 * 257 = 65535).
 */
static void pe_csum_pairs(struct pe_csum *c, const uint8_t *p, size_t pairs)
{
	size_t i = 0;

#if defined(__SSE2__)
	/* Sixteen bytes at a time: PSADBW adds the eight even (or odd) bytes
	 * into 64-bit lanes, which cannot overflow. */
	const __m128i low = _mm_set1_epi16(0x00ff), zero = _mm_setzero_si128();
	__m128i even16 = zero, odd16 = zero;
	uint64_t lanes[2];

	for (; pairs - i >= 8; i += 8) {
		__m128i x = _mm_loadu_si128((const __m128i *)(const void *)(p + 2 * i));

		even16 = _mm_add_epi64(even16, _mm_sad_epu8(_mm_and_si128(x, low), zero));
		odd16 = _mm_add_epi64(odd16, _mm_sad_epu8(_mm_srli_epi16(x, 8), zero));
	}
	_mm_storeu_si128((__m128i *)(void *)lanes, even16);
	c->even += lanes[0] + lanes[1];
	_mm_storeu_si128((__m128i *)(void *)lanes, odd16);
	c->odd += lanes[0] + lanes[1];
#endif
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	const uint64_t low_bytes = 0x00ff00ff00ff00ffULL;

	while (pairs - i >= 4) {
		size_t n = (pairs - i) / 4 < 257 ? (pairs - i) / 4 : 257;
		uint64_t even = 0, odd = 0, x;

		for (size_t k = 0; k < n; k++, i += 4) {
			memcpy(&x, p + 2 * i, sizeof(x));
			even += x & low_bytes;
			odd += x >> 8 & low_bytes;
		}
		c->even += pe_lanes(even);
		c->odd += pe_lanes(odd);
	}
#endif
	for (; i < pairs; i++) {
		c->even += p[2 * i];
		c->odd += p[2 * i + 1];
	}
}

static void pe_csum_add(struct pe_csum *c, const uint8_t *p, size_t n, uint64_t off)
{
	if (n > 0 && off % 2 == 1) {
		c->odd += p[0];
		p++;
		n--;
	}
	pe_csum_pairs(c, p, n / 2);
	if (n % 2 == 1)
		c->even += p[n - 1];
}

/* imagehlp CheckSumMappedFile: folded word sum plus the file length. */
static uint32_t pe_csum_finish(const struct pe_csum *c, uint64_t file_len)
{
	uint64_t sum = c->even + (c->odd << 8);

	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint32_t)sum + (uint32_t)file_len;
}

/*
 * Bounds-checked read of a header structure, with a message naming the
 * structure rather than only the offset.
 */
static int pe_read(struct hs_ctx *ctx, const struct pe_state *st, void *buf, size_t len,
                   uint64_t off, const char *what)
{
	if (off > st->in.size || len > st->in.size - off)
		return hs_error_set(
		        ctx, HS_ERR_FORMAT,
		        "%s: %s truncated: needs %zu bytes at offset %llu, file has %llu",
		        st->in.path, what, len, (unsigned long long)off,
		        (unsigned long long)st->in.size);
	return hs_file_pread(ctx, &st->in, buf, len, off);
}

/* The two header fields that neither the digest nor the checksum covers,
 * in file order: CheckSum, then the Certificate Table directory entry. */
static void pe_excluded(const struct pe_state *st, struct pe_range ex[2])
{
	ex[0].start = st->checksum_off;
	ex[0].end = st->checksum_off + PE_CHECKSUM_LEN;
	ex[1].start = st->cert_dir_off;
	ex[1].end = st->cert_dir_off + PE_DIR_ENTRY_LEN;
}

/* Where the hashed image ends: the certificate table, or EOF if none. */
static uint64_t pe_image_end(const struct pe_state *st)
{
	return st->cert_table_size != 0 ? st->cert_table_off : st->in.size;
}

/* --- probe and open --------------------------------------------------- */

/* "MZ", and "PE\0\0" at e_lfanew when it lies inside the probe window. */
static bool pe_probe(const uint8_t *head, size_t len)
{
	uint32_t e;

	if (len < 2 || head[0] != 'M' || head[1] != 'Z')
		return false;
	/* Beyond the window: claim it, so that open() says what is wrong. */
	if (len < PE_DOS_HEADER_LEN)
		return true;
	e = pe_le32(head + PE_LFANEW_OFF);
	if (e > len || len - e < 4)
		return true;
	return memcmp(head + e, "PE\0\0", 4) == 0;
}

static int pe_open_dos(struct hs_ctx *ctx, struct pe_state *st)
{
	uint8_t dos[PE_DOS_HEADER_LEN];
	int r;

	if ((r = pe_read(ctx, st, dos, sizeof(dos), 0, "DOS header")) < 0)
		return r;
	if (dos[0] != 'M' || dos[1] != 'Z')
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: not a PE file: no MZ signature",
		                    st->in.path);
	st->e_lfanew = pe_le32(dos + PE_LFANEW_OFF);
	if (st->e_lfanew > st->in.size || st->in.size - st->e_lfanew < PE_COFF_LEN)
		return hs_error_set(
		        ctx, HS_ERR_FORMAT,
		        "%s: e_lfanew 0x%llx points past the end of the file (%llu bytes)",
		        st->in.path, (unsigned long long)st->e_lfanew,
		        (unsigned long long)st->in.size);
	return 0;
}

/* Reads the PE signature and COFF header; *opt_size = SizeOfOptionalHeader. */
static int pe_open_coff(struct hs_ctx *ctx, struct pe_state *st, uint16_t *opt_size)
{
	uint8_t coff[PE_COFF_LEN];
	int r;

	if ((r = pe_read(ctx, st, coff, sizeof(coff), st->e_lfanew, "COFF header")) < 0)
		return r;
	if (memcmp(coff, "PE\0\0", 4) != 0)
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: not a PE file: no PE signature at e_lfanew 0x%llx",
		                    st->in.path, (unsigned long long)st->e_lfanew);
	st->nsections = pe_le16(coff + 6);
	*opt_size = pe_le16(coff + 20);
	st->section_table_off = st->e_lfanew + PE_COFF_LEN + *opt_size;
	return 0;
}

/*
 * Reads the optional header up to NumberOfRvaAndSizes and checks that the
 * Certificate Table entry exists; sets the field offsets.
 */
static int pe_open_optional(struct hs_ctx *ctx, struct pe_state *st, uint16_t opt_size)
{
	uint64_t oh = st->e_lfanew + PE_COFF_LEN;
	uint8_t opt[112]; /* PE32+ fields up to NumberOfRvaAndSizes */
	size_t nrva_off;
	uint32_t ndirs;
	int r;

	if ((r = pe_read(ctx, st, opt, 2, oh, "optional header")) < 0)
		return r;
	if (pe_le16(opt) != PE_MAGIC_PE32 && pe_le16(opt) != PE_MAGIC_PE32PLUS)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: unknown optional header magic 0x%x",
		                    st->in.path, pe_le16(opt));
	st->pe32plus = pe_le16(opt) == PE_MAGIC_PE32PLUS;
	nrva_off = st->pe32plus ? 108 : 92;
	if (opt_size < nrva_off + 4)
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: SizeOfOptionalHeader %u is too small for a %s header",
		                    st->in.path, opt_size, st->pe32plus ? "PE32+" : "PE32");
	if ((r = pe_read(ctx, st, opt, nrva_off + 4, oh, "optional header")) < 0)
		return r;
	ndirs = pe_le32(opt + nrva_off);
	if (ndirs < PE_MIN_DATA_DIRS)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "%s: cannot be signed: fewer than 5 data directories (%u)",
		                    st->in.path, ndirs);
	if (opt_size < nrva_off + 4 + PE_MIN_DATA_DIRS * PE_DIR_ENTRY_LEN)
		return hs_error_set(
		        ctx, HS_ERR_FORMAT,
		        "%s: SizeOfOptionalHeader %u leaves no room for the certificate "
		        "table entry",
		        st->in.path, opt_size);
	st->size_of_headers = pe_le32(opt + 60);
	st->checksum_off = st->e_lfanew + PE_CHECKSUM_OFF;
	st->cert_dir_off = oh + nrva_off + 4 + PE_CERT_DIR_INDEX * PE_DIR_ENTRY_LEN;
	return 0;
}

/* The section table and SizeOfHeaders must lie inside the file. */
static int pe_open_layout(struct hs_ctx *ctx, struct pe_state *st)
{
	uint64_t table_len = (uint64_t)st->nsections * PE_SECTION_LEN;

	if (st->section_table_off > st->in.size || table_len > st->in.size - st->section_table_off)
		return hs_error_set(
		        ctx, HS_ERR_FORMAT,
		        "%s: section table (%u sections at offset %llu) runs past the end "
		        "of the file",
		        st->in.path, st->nsections, (unsigned long long)st->section_table_off);
	if (st->size_of_headers > st->in.size ||
	    st->size_of_headers < st->cert_dir_off + PE_DIR_ENTRY_LEN)
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: SizeOfHeaders %u does not cover the PE headers or exceeds "
		                    "the file size",
		                    st->in.path, st->size_of_headers);
	return 0;
}

/* Reads the Certificate Table entry and checks where it points. */
static int pe_open_cert_dir(struct hs_ctx *ctx, struct pe_state *st)
{
	uint8_t dir[PE_DIR_ENTRY_LEN];
	uint64_t off, size;
	int r;

	if ((r = pe_read(ctx, st, dir, sizeof(dir), st->cert_dir_off, "certificate table entry")) <
	    0)
		return r;
	off = pe_le32(dir);
	size = pe_le32(dir + 4);
	if (off == 0 && size == 0)
		return 0;
	if (off == 0 || size == 0 || off % 8 != 0 || off < st->size_of_headers)
		return hs_error_set(
		        ctx, HS_ERR_FORMAT,
		        "%s: certificate table entry (offset %llu, size %llu) is invalid: "
		        "needs a nonzero size at an 8-aligned offset after the headers",
		        st->in.path, (unsigned long long)off, (unsigned long long)size);
	if (off > st->in.size || size > st->in.size - off)
		return hs_error_set(
		        ctx, HS_ERR_FORMAT,
		        "%s: certificate table (offset %llu, size %llu) runs past end of "
		        "file (%llu bytes)",
		        st->in.path, (unsigned long long)off, (unsigned long long)size,
		        (unsigned long long)st->in.size);
	if (off + size != st->in.size)
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: certificate table (offset %llu, size %llu) is followed by "
		                    "%llu bytes; it must end the file",
		                    st->in.path, (unsigned long long)off, (unsigned long long)size,
		                    (unsigned long long)(st->in.size - off - size));
	st->cert_table_off = (uint32_t)off;
	st->cert_table_size = (uint32_t)size;
	return 0;
}

/* Checks one WIN_CERTIFICATE header at `pos`, `left` bytes before the table
 * end; *step = its dwLength rounded up to 8. */
static int pe_check_win_cert(struct hs_ctx *ctx, const struct pe_state *st, uint64_t pos,
                             uint64_t left, uint64_t *step)
{
	uint8_t hdr[PE_WIN_CERT_HDR_LEN];
	uint32_t len;
	int r;

	if (left < sizeof(hdr))
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: certificate table ends inside an entry header at %llu",
		                    st->in.path, (unsigned long long)pos);
	if ((r = pe_read(ctx, st, hdr, sizeof(hdr), pos, "WIN_CERTIFICATE")) < 0)
		return r;
	len = pe_le32(hdr);
	if (len < sizeof(hdr) || len > left)
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: WIN_CERTIFICATE at %llu has dwLength %u, outside 8..%llu",
		                    st->in.path, (unsigned long long)pos, len,
		                    (unsigned long long)left);
	if (pe_le16(hdr + 4) != PE_WIN_CERT_REVISION || pe_le16(hdr + 6) != PE_WIN_CERT_TYPE_PKCS7)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "%s: WIN_CERTIFICATE at %llu has revision 0x%04x type 0x%04x; "
		                    "only 0x0200/0x0002 (PKCS#7) is supported",
		                    st->in.path, (unsigned long long)pos, pe_le16(hdr + 4),
		                    pe_le16(hdr + 6));
	*step = (uint64_t)len + pe_pad8(len);
	return 0;
}

/*
 * Walks the WIN_CERTIFICATE entries. Entries are spaced by dwLength rounded
 * up to 8; a last entry whose padding the directory Size leaves out is
 * accepted, since readers round dwLength up anyway (authenticode.md 1.3).
 */
static int pe_open_cert_table(struct hs_ctx *ctx, const struct pe_state *st)
{
	uint64_t pos = st->cert_table_off;
	uint64_t end = pos + st->cert_table_size;
	uint64_t step = 0;
	int r;

	for (unsigned n = 0; pos < end; n++, pos += step) {
		if (n == PE_MAX_CERT_ENTRIES)
			return hs_error_set(ctx, HS_ERR_FORMAT,
			                    "%s: certificate table has more than %d entries",
			                    st->in.path, PE_MAX_CERT_ENTRIES);
		if ((r = pe_check_win_cert(ctx, st, pos, end - pos, &step)) < 0)
			return r;
	}
	return 0;
}

static int pe_open(struct hs_ctx *ctx, const struct hs_file *in, void **state)
{
	struct pe_state *st = calloc(1, sizeof(*st));
	uint16_t opt_size = 0;
	int r;

	*state = NULL;
	if (st == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	st->in = *in;
	if ((r = pe_open_dos(ctx, st)) < 0 || (r = pe_open_coff(ctx, st, &opt_size)) < 0 ||
	    (r = pe_open_optional(ctx, st, opt_size)) < 0 || (r = pe_open_layout(ctx, st)) < 0 ||
	    (r = pe_open_cert_dir(ctx, st)) < 0 || (r = pe_open_cert_table(ctx, st)) < 0)
		goto out;
	*state = st;
	st = NULL;
	r = 0;
out:
	free(st);
	return r;
}

static bool pe_is_signed(void *state)
{
	const struct pe_state *st = state;

	return st->cert_table_size != 0;
}

static void pe_close(void *state)
{
	free(state);
}

/* --- the linear digest, the copy and the checksum --------------------- */

/* Hashes buf (file bytes [off, off+n)) except the excluded ranges. */
static int pe_hash_chunk(EVP_MD_CTX *md, const uint8_t *buf, size_t n, uint64_t off,
                         const struct pe_range ex[2])
{
	uint64_t pos = off, stop = off + n;

	for (int i = 0; i < 2; i++) {
		if (ex[i].end <= pos || ex[i].start >= stop)
			continue;
		if (ex[i].start > pos &&
		    !EVP_DigestUpdate(md, buf + (pos - off), ex[i].start - pos))
			return -1;
		pos = ex[i].end < stop ? ex[i].end : stop;
	}
	if (pos < stop && !EVP_DigestUpdate(md, buf + (pos - off), stop - pos))
		return -1;
	return 0;
}

/* Zeroes the parts of buf (file bytes [off, off+n)) in the excluded ranges. */
static void pe_zero_excluded(uint8_t *buf, size_t n, uint64_t off, const struct pe_range ex[2])
{
	for (int i = 0; i < 2; i++) {
		uint64_t a = ex[i].start > off ? ex[i].start : off;
		uint64_t b = ex[i].end < off + n ? ex[i].end : off + n;

		if (a < b)
			memset(buf + (a - off), 0, b - a);
	}
}

/* What one pass over the image feeds (see pe_stream). */
struct pe_pass {
	const struct pe_state *st;
	struct pe_range ex[2];
	EVP_MD_CTX *md;      /* may be NULL */
	struct hs_out *copy; /* may be NULL */
	struct pe_csum *csum;
};

/*
 * On the stream's reader thread (stream.c), right after the read: excluded
 * fields are hashed not at all, and summed and copied as zeros (embed()
 * and remove() fill them in); then the checksum. The checksum is summed
 * here, not with the digest (the slowest step, which bounds the pass when
 * the output is fast) nor with the copy (which bounds it when the disk is
 * slower than hashing: about 0.1 s of 0.8-1.0 s per GiB on the build VM,
 * docs/PERFORMANCE.md); the reader waits for free buffers most of a pass.
 */
static int pe_pass_prepare(struct hs_ctx *ctx, void *arg, uint8_t *buf, size_t n, uint64_t off)
{
	struct pe_pass *p = arg;

	(void)ctx;
	pe_zero_excluded(buf, n, off, p->ex);
	pe_csum_add(p->csum, buf, n, off);
	return 0;
}

/* The copy: on the stream's writer thread, at the same time as the digest. */
static int pe_pass_consume(struct hs_ctx *ctx, void *arg, const uint8_t *buf, size_t n,
                           uint64_t off)
{
	struct pe_pass *p = arg;

	(void)off;
	return hs_out_write(ctx, p->copy, buf, n);
}

/* The digest: on the calling thread. */
static int pe_pass_hash(struct hs_ctx *ctx, void *arg, const uint8_t *buf, size_t n, uint64_t off)
{
	struct pe_pass *p = arg;

	if (p->md != NULL && pe_hash_chunk(p->md, buf, n, off, p->ex) < 0)
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "%s: digest update failed", p->st->in.path);
	return 0;
}

/* With an output (sign, remove) and without one (verify, digest: no
 * writer thread). */
static const struct hs_stream_ops pe_pass_copy_ops = {
        .prepare = pe_pass_prepare,
        .consume = pe_pass_consume,
        .hash = pe_pass_hash,
};
static const struct hs_stream_ops pe_pass_ops = {
        .prepare = pe_pass_prepare,
        .hash = pe_pass_hash,
};

/* Zero padding of the unsigned image to 8 bytes: hashed and copied. */
static int pe_pad_image(struct hs_ctx *ctx, const struct pe_state *st, EVP_MD_CTX *md,
                        struct hs_out *copy, uint64_t end)
{
	static const uint8_t zeros[8];
	size_t pad = pe_pad8(end);

	if (pad == 0)
		return 0;
	if (md != NULL && !EVP_DigestUpdate(md, zeros, pad))
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "%s: digest update failed", st->in.path);
	if (copy != NULL)
		return hs_out_write(ctx, copy, zeros, pad);
	return 0;
}

/*
 * One streaming pass over the image [0, end) plus its padding to 8 bytes:
 * digest (md may be NULL), checksum partial sum, and copy (may be NULL).
 * The digest and the copy see the same buffers, so the output is exactly
 * what was hashed even if the input changes meanwhile; on large images
 * hashing runs in parallel with reading, summing and writing (stream.h).
 */
static int pe_stream(struct hs_ctx *ctx, const struct pe_state *st, EVP_MD_CTX *md,
                     struct hs_out *copy, struct pe_csum *csum)
{
	uint64_t end = pe_image_end(st);
	struct pe_pass pass = {.st = st, .md = md, .copy = copy, .csum = csum};
	int r;

	memset(csum, 0, sizeof(*csum));
	pe_excluded(st, pass.ex);
	if (copy != NULL)
		hs_out_expect(copy, end);
	if ((r = hs_stream_file(ctx, &st->in, end, copy != NULL ? &pe_pass_copy_ops : &pe_pass_ops,
	                        &pass)) < 0)
		return r;
	return pe_pad_image(ctx, st, md, copy, end);
}

/* The certificate table offset and size are 32-bit: refuse images that
 * could not hold one. */
static int pe_check_signable(struct hs_ctx *ctx, const struct pe_state *st)
{
	uint64_t end = pe_image_end(st);

	if (end + pe_pad8(end) > UINT32_MAX - PE_WIN_CERT_HDR_LEN)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "%s: cannot be signed: image of %llu bytes is too large for a "
		                    "certificate table",
		                    st->in.path, (unsigned long long)end);
	return 0;
}

/* Hashes the image with md into digest, digest_len (one pass, see pe_stream). */
static int pe_digest_image(struct hs_ctx *ctx, struct pe_state *st, const EVP_MD *md_alg,
                           struct hs_out *copy, uint8_t *digest, size_t *digest_len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int len = 0;
	int r;

	if (md == NULL || !EVP_DigestInit_ex(md, md_alg, NULL)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "%s: cannot start the digest", st->in.path);
		goto out;
	}
	if ((r = pe_stream(ctx, st, md, copy, &st->csum)) < 0)
		goto out;
	if (!EVP_DigestFinal_ex(md, digest, &len)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "%s: cannot finish the digest", st->in.path);
		goto out;
	}
	*digest_len = len;
	r = 0;
out:
	EVP_MD_CTX_free(md);
	return r;
}

/* --- page hashes (authenticode.md 1.6) ------------------------------- */

/*
 * Page hashes are computed in a second pass of positional reads, apart from
 * the streaming digest: pages follow the section table, not file order, and
 * need padding the linear digest does not have.
 */

/* Appends one table entry {offset, hash}; hash NULL gives the sentinel. */
static int pe_page_entry(struct hs_ctx *ctx, struct hs_buf *table, uint32_t off,
                         const uint8_t *hash, size_t hash_len)
{
	static const uint8_t zeros[EVP_MAX_MD_SIZE];
	uint8_t le[4];

	pe_put_le32(le, off);
	if (hs_buf_append(table, le, sizeof(le)) < 0 ||
	    hs_buf_append(table, hash != NULL ? hash : zeros, hash_len) < 0)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	return 0;
}

/* Hashes page[0, n) and appends the entry for file offset `off`. */
static int pe_page_hash(struct hs_ctx *ctx, const struct pe_state *st, const EVP_MD *md,
                        const uint8_t *page, size_t n, uint32_t off, struct hs_buf *table)
{
	uint8_t hash[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	if (!EVP_Digest(page, n, hash, &len, md, NULL))
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "%s: page hash failed", st->in.path);
	return pe_page_entry(ctx, table, off, hash, len);
}

/*
 * Entry 0: the headers [0, SizeOfHeaders) without CheckSum and the
 * Certificate Table entry, then zeros up to the page size, as osslsigncode
 * does (so 4096 - 12 bytes are hashed in all).
 */
static int pe_page_headers(struct hs_ctx *ctx, const struct pe_state *st, const EVP_MD *md,
                           uint8_t *page, struct hs_buf *table)
{
	size_t soh = st->size_of_headers, ck = (size_t)st->checksum_off;
	size_t cd = (size_t)st->cert_dir_off;
	size_t hashed = PE_PAGE_SIZE - PE_CHECKSUM_LEN - PE_DIR_ENTRY_LEN;
	int r;

	if (soh > PE_PAGE_SIZE)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "%s: page hashes need SizeOfHeaders <= %d, have %zu",
		                    st->in.path, PE_PAGE_SIZE, soh);
	memset(page, 0, PE_PAGE_SIZE);
	if ((r = pe_read(ctx, st, page, soh, 0, "headers")) < 0)
		return r;
	/* Close the gaps left by the two fields, cert entry first (it is later). */
	memmove(page + cd, page + cd + PE_DIR_ENTRY_LEN, soh - cd - PE_DIR_ENTRY_LEN);
	memmove(page + ck, page + ck + PE_CHECKSUM_LEN,
	        soh - PE_DIR_ENTRY_LEN - ck - PE_CHECKSUM_LEN);
	memset(page + soh - PE_CHECKSUM_LEN - PE_DIR_ENTRY_LEN, 0,
	       PE_PAGE_SIZE - soh + PE_CHECKSUM_LEN + PE_DIR_ENTRY_LEN);
	return pe_page_hash(ctx, st, md, page, hashed, 0, table);
}

/* Entries for every page of one section's raw data, the last zero-padded. */
static int pe_page_section(struct hs_ctx *ctx, const struct pe_state *st, const EVP_MD *md,
                           uint8_t *page, uint32_t raw_off, uint32_t raw_size, struct hs_buf *table)
{
	int r;

	for (uint32_t k = 0; k < raw_size; k += PE_PAGE_SIZE) {
		size_t n = raw_size - k < PE_PAGE_SIZE ? raw_size - k : PE_PAGE_SIZE;

		memset(page + n, 0, PE_PAGE_SIZE - n);
		if ((r = pe_read(ctx, st, page, n, (uint64_t)raw_off + k, "section data")) < 0)
			return r;
		if ((r = pe_page_hash(ctx, st, md, page, PE_PAGE_SIZE, raw_off + k, table)) < 0)
			return r;
		if (raw_size - k <= PE_PAGE_SIZE)
			break; /* k + PAGE_SIZE could wrap */
	}
	return 0;
}

/*
 * Checks every section's raw data lies inside the file and that the table
 * stays bounded by the file size (sections that overlap could otherwise
 * make it grow without limit).
 */
static int pe_check_sections(struct hs_ctx *ctx, const struct pe_state *st, const uint8_t *sections)
{
	uint64_t pages = 0;
	uint64_t max_pages = st->in.size / PE_PAGE_SIZE + st->nsections;

	for (unsigned i = 0; i < st->nsections; i++) {
		const uint8_t *s = sections + (size_t)i * PE_SECTION_LEN;
		uint64_t size = pe_le32(s + 16), off = pe_le32(s + 20);

		if (off + size > st->in.size || off + size > UINT32_MAX)
			return hs_error_set(ctx, HS_ERR_FORMAT,
			                    "%s: section %u raw data (offset %llu, size %llu) runs "
			                    "past end of file",
			                    st->in.path, i, (unsigned long long)off,
			                    (unsigned long long)size);
		pages += (size + PE_PAGE_SIZE - 1) / PE_PAGE_SIZE;
	}
	if (pages > max_pages)
		return hs_error_set(
		        ctx, HS_ERR_FORMAT, "%s: sections overlap: %llu pages in a %llu-byte file",
		        st->in.path, (unsigned long long)pages, (unsigned long long)st->in.size);
	return 0;
}

/* Hashes all sections in section-table order and appends the sentinel. */
static int pe_page_sections(struct hs_ctx *ctx, const struct pe_state *st, const EVP_MD *md,
                            uint8_t *page, const uint8_t *sections, struct hs_buf *table)
{
	uint32_t last_end = 0;
	int r;

	for (unsigned i = 0; i < st->nsections; i++) {
		const uint8_t *s = sections + (size_t)i * PE_SECTION_LEN;
		uint32_t size = pe_le32(s + 16), off = pe_le32(s + 20);

		if (size == 0)
			continue;
		if ((r = pe_page_section(ctx, st, md, page, off, size, table)) < 0)
			return r;
		last_end = off + size;
	}
	return pe_page_entry(ctx, table, last_end, NULL, (size_t)EVP_MD_get_size(md));
}

/* Builds the raw page hash table with the digest `nid` into *table. */
static int pe_page_hashes(struct hs_ctx *ctx, const struct pe_state *st, int nid,
                          struct hs_buf *table)
{
	const EVP_MD *md = EVP_get_digestbynid(nid);
	size_t sections_len = (size_t)st->nsections * PE_SECTION_LEN;
	uint8_t *page = malloc(PE_PAGE_SIZE);
	uint8_t *sections = malloc(sections_len ? sections_len : 1);
	int r;

	if (md == NULL || page == NULL || sections == NULL) {
		r = hs_error_set(ctx, md == NULL ? HS_ERR_CRYPTO : HS_ERR_NOMEM,
		                 "%s: cannot set up page hashes", st->in.path);
		goto out;
	}
	if ((r = pe_read(ctx, st, sections, sections_len, st->section_table_off, "section table")) <
	            0 ||
	    (r = pe_check_sections(ctx, st, sections)) < 0 ||
	    (r = pe_page_headers(ctx, st, md, page, table)) < 0 ||
	    (r = pe_page_sections(ctx, st, md, page, sections, table)) < 0)
		goto out;
	r = 0;
out:
	free(page);
	free(sections);
	return r;
}

/*
 * The Authenticode digest, the SpcPeImageData and, if asked, page hashes.
 * With copy, the unsigned image (checksum and certificate entry zeroed,
 * padded to 8) is written to copy for embed() to complete. `out` must be
 * zero-initialised or hold earlier results: its buffers are replaced.
 */
static int pe_digest(struct hs_ctx *ctx, void *state, const struct hs_digest_params *params,
                     struct hs_indirect *out, struct hs_out *copy)
{
	struct pe_state *st = state;
	struct hs_buf table = {0}, data = {0};
	int nid = 0;
	int r;

	hs_indirect_free(out);
	st->copied = false;
	if (copy != NULL && copy->size != 0) {
		r = hs_error_set(ctx, HS_ERR_INVALID, "internal: PE copy must start empty");
		goto out;
	}
	if (copy != NULL && (r = pe_check_signable(ctx, st)) < 0)
		goto out;
	if ((r = pe_digest_image(ctx, st, params->md, copy, out->digest, &out->digest_len)) < 0)
		goto out;
	if (params->page_hash_nid != 0) {
		nid = params->page_hash_nid == NID_sha1 ? NID_sha1 : NID_sha256;
		if ((r = pe_page_hashes(ctx, st, nid, &table)) < 0)
			goto out;
	}
	if ((r = hs_spc_pe_data(ctx, &data, nid, table.data, table.len)) < 0)
		goto out;
	out->data_der = data;
	out->page_hashes = table;
	out->page_hash_nid = nid;
	memset(&data, 0, sizeof(data));
	memset(&table, 0, sizeof(table));
	st->copied = copy != NULL;
	st->copy_len = copy != NULL ? copy->size : 0;
	r = 0;
out:
	hs_buf_free(&data);
	hs_buf_free(&table);
	return r;
}

/* --- embed, extract, remove ------------------------------------------ */

/* Writes bytes at the end of out and adds them to the checksum. */
static int pe_append(struct hs_ctx *ctx, struct hs_out *out, struct pe_csum *csum, const uint8_t *p,
                     size_t n)
{
	pe_csum_add(csum, p, n, out->size);
	return hs_out_write(ctx, out, p, n);
}

/* Overwrites a field that was summed as zero and adds its bytes to the sum. */
static int pe_patch(struct hs_ctx *ctx, struct hs_out *out, struct pe_csum *csum, const uint8_t *p,
                    size_t n, uint64_t off)
{
	if (csum != NULL)
		pe_csum_add(csum, p, n, off);
	return hs_out_pwrite(ctx, out, p, n, off);
}

/* Fills in the CheckSum field of the finished output. */
static int pe_write_checksum(struct hs_ctx *ctx, const struct pe_state *st, struct hs_out *out,
                             const struct pe_csum *csum)
{
	uint8_t le[4];

	pe_put_le32(le, pe_csum_finish(csum, out->size));
	return pe_patch(ctx, out, NULL, le, sizeof(le), st->checksum_off);
}

/* Appends one WIN_CERTIFICATE holding pkcs7, then fixes the headers. */
static int pe_embed(struct hs_ctx *ctx, void *state, const uint8_t *pkcs7, size_t len,
                    struct hs_out *out)
{
	static const uint8_t zeros[8];
	struct pe_state *st = state;
	struct pe_csum csum = st->csum;
	uint8_t hdr[PE_WIN_CERT_HDR_LEN], dir[PE_DIR_ENTRY_LEN];
	uint64_t table_off = out->size, table_len;
	int r;

	if (!st->copied || out->size != st->copy_len)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "internal: PE embed needs digest() to write the image first");
	table_len = PE_WIN_CERT_HDR_LEN + (uint64_t)len + pe_pad8(len);
	if (len > PE_MAX_SIGNATURE || table_off + table_len > UINT32_MAX)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "%s: signature of %zu bytes does not fit a certificate table",
		                    st->in.path, len);
	pe_put_le32(hdr, (uint32_t)table_len);
	pe_put_le16(hdr + 4, PE_WIN_CERT_REVISION);
	pe_put_le16(hdr + 6, PE_WIN_CERT_TYPE_PKCS7);
	pe_put_le32(dir, (uint32_t)table_off);
	pe_put_le32(dir + 4, (uint32_t)table_len);
	if ((r = pe_append(ctx, out, &csum, hdr, sizeof(hdr))) < 0 ||
	    (r = pe_append(ctx, out, &csum, pkcs7, len)) < 0 ||
	    (r = pe_append(ctx, out, &csum, zeros, pe_pad8(len))) < 0 ||
	    (r = pe_patch(ctx, out, &csum, dir, sizeof(dir), st->cert_dir_off)) < 0)
		return r;
	st->copied = false;
	return pe_write_checksum(ctx, st, out, &csum);
}

/*
 * Size of the DER TLV at the start of p, so that the zero padding after the
 * PKCS#7 is not returned with it. BER indefinite length keeps all n bytes
 * (its end-of-contents octets are zeros too). False if malformed.
 */
static bool pe_der_size(const uint8_t *p, size_t n, size_t *out)
{
	size_t len = 0, hdr = 2;

	if (n < 2 || p[0] != 0x30)
		return false;
	if (p[1] == 0x80) {
		*out = n;
		return true;
	}
	if (p[1] < 0x80) {
		len = p[1];
	} else {
		size_t k = p[1] & 0x7f;

		if (k > 4 || n < 2 + k)
			return false;
		for (size_t i = 0; i < k; i++)
			len = len << 8 | p[2 + i];
		hdr += k;
	}
	if (len > n - hdr)
		return false;
	*out = hdr + len;
	return true;
}

/* Appends the PKCS#7 of the first WIN_CERTIFICATE to out. */
static int pe_extract(struct hs_ctx *ctx, void *state, struct hs_buf *out)
{
	const struct pe_state *st = state;
	uint8_t hdr[PE_WIN_CERT_HDR_LEN];
	size_t len, der_len;
	int r;

	if (st->cert_table_size == 0)
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", st->in.path);
	/* open() checked this header and that dwLength fits the table. */
	if ((r = pe_read(ctx, st, hdr, sizeof(hdr), st->cert_table_off, "WIN_CERTIFICATE")) < 0)
		return r;
	len = pe_le32(hdr) - PE_WIN_CERT_HDR_LEN;
	if (len < 2)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: WIN_CERTIFICATE holds no signature",
		                    st->in.path);
	if (len > PE_MAX_SIGNATURE)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "%s: signature of %zu bytes is too large", st->in.path, len);
	if (hs_buf_reserve(out, len) < 0)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = pe_read(ctx, st, out->data + out->len, len,
	                 (uint64_t)st->cert_table_off + PE_WIN_CERT_HDR_LEN, "signature")) < 0)
		return r;
	if (!pe_der_size(out->data + out->len, len, &der_len))
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: signature is not a DER SEQUENCE that fits its "
		                    "WIN_CERTIFICATE (%zu bytes)",
		                    st->in.path, len);
	/* Only up to 7 zero bytes of padding may follow the DER: anything else
	 * is the extraneous data CVE-2013-3900 smuggles past the digest. */
	for (size_t i = der_len; i < len; i++)
		if (out->data[out->len + i] != 0 || len - der_len > 7)
			return hs_error_set(ctx, HS_ERR_FORMAT,
			                    "%s: unexpected data after the signature in its "
			                    "WIN_CERTIFICATE (%zu bytes)",
			                    st->in.path, len - der_len);
	out->len += der_len;
	return 0;
}

/* Writes the image without its certificate table, with a fresh checksum. */
static int pe_remove(struct hs_ctx *ctx, void *state, struct hs_out *out)
{
	const struct pe_state *st = state;
	struct pe_csum csum;
	int r;

	if (st->cert_table_size == 0)
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", st->in.path);
	if (out->size != 0)
		return hs_error_set(ctx, HS_ERR_INVALID, "internal: PE output must start empty");
	/* The table offset is 8-aligned, so pe_stream adds no padding. */
	if ((r = pe_stream(ctx, st, NULL, out, &csum)) < 0)
		return r;
	return pe_write_checksum(ctx, st, out, &csum);
}

const struct hs_format hs_format_pe = {
        .name = "pe",
        .probe = pe_probe,
        .open = pe_open,
        .is_signed = pe_is_signed,
        .digest = pe_digest,
        .embed = pe_embed,
        .extract = pe_extract,
        .remove = pe_remove,
        .close = pe_close,
};
