/*
 * cab.c - Microsoft cabinet files (MS-CAB) signed the way signtool does
 * (authenticode.md section 6): a 20-byte reserve area in CFHEADER holds the
 * signature's offset and size, and the DER PKCS#7 (padded to 8 bytes) is
 * appended at cbCabinet, which does not count it.
 *
 * An unsigned cabinet gets the reserve inserted after offset 36, so every
 * later offset (cbCabinet, coffFiles, each CFFOLDER.coffCabStart) grows by
 * 24. The digest is computed over the signed layout, whether or not the
 * input already has it, in one streaming pass that also writes the output.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/err.h>

#include "authenticode/asn1.h"
#include "formats/format.h"

#define CAB_HDR_LEN        36 /* CFHEADER without the optional fields */
#define CAB_SIGNED_HDR_LEN 60 /* + cbCFHeader, cbCFFolder, cbCFData, abReserve[20] */
#define CAB_RESERVE_LEN    20
#define CAB_SHIFT          (CAB_SIGNED_HDR_LEN - CAB_HDR_LEN)
#define CAB_FOLDER_LEN     8

#define CAB_FLAG_PREV    0x0001
#define CAB_FLAG_NEXT    0x0002
#define CAB_FLAG_RESERVE 0x0004

#define CAB_OFF_CABINET   8
#define CAB_OFF_FILES     16
#define CAB_OFF_FOLDERS   26
#define CAB_OFF_FLAGS     30
#define CAB_OFF_SIG       44 /* signature offset, then size, in abReserve */
#define CAB_MAX_SIGNATURE (64u * 1024 * 1024)

struct cab_state {
	struct hs_file in; /* copy of the caller's; fd and path stay theirs */
	uint8_t hdr[CAB_HDR_LEN];
	bool has_reserve; /* the 20-byte signature reserve is present */
	uint8_t cb_folder, cb_data;
	uint16_t n_folders;
	uint64_t folders_off;  /* input offset of the first CFFOLDER */
	struct hs_buf folders; /* the CFFOLDER table as read */
	uint32_t cabinet_end;  /* input cbCabinet */
	uint32_t sig_off, sig_len;
	bool copied; /* digest() wrote the signed layout, embed() may finish */
	uint64_t copy_len;
};

/* The bytes of the signed layout the digest skips: reserved1 (the old
 * header checksum), cbCFHeader..cbCFData, and the signature offset/size
 * plus the unused tail of abReserve (authenticode.md 6). */
static const struct {
	unsigned start, end;
} cab_unhashed[] = {{4, 8}, {36, 40}, {42, CAB_SIGNED_HDR_LEN}};

static uint16_t cab_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t cab_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void cab_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void cab_put_le32(uint8_t *p, uint32_t v)
{
	cab_put_le16(p, (uint16_t)v);
	cab_put_le16(p + 2, (uint16_t)(v >> 16));
}

static size_t cab_pad8(uint64_t len)
{
	return (size_t)((8 - len % 8) % 8);
}

static bool cab_probe(const uint8_t *head, size_t len)
{
	return len >= 4 && memcmp(head, "MSCF", 4) == 0;
}

/* --- open ------------------------------------------------------------ */

/* Reads the optional reserve fields; only the signature reserve is known. */
static int cab_open_reserve(struct hs_ctx *ctx, struct cab_state *st)
{
	uint8_t res[4 + CAB_RESERVE_LEN];
	int r;

	if (st->in.size < sizeof(res) + CAB_HDR_LEN)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: CAB reserve header truncated",
		                    st->in.path);
	if ((r = hs_file_pread(ctx, &st->in, res, sizeof(res), CAB_HDR_LEN)) < 0)
		return r;
	if (cab_le16(res) != CAB_RESERVE_LEN || cab_le32(res + 4) != 0x00100000)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "%s: CAB reserve area (%u bytes) is not a signature reserve",
		                    st->in.path, cab_le16(res));
	st->has_reserve = true;
	st->cb_folder = res[2];
	st->cb_data = res[3];
	st->sig_off = cab_le32(res + CAB_OFF_SIG - CAB_HDR_LEN);
	st->sig_len = cab_le32(res + CAB_OFF_SIG + 4 - CAB_HDR_LEN);
	return 0;
}

/* The signature, if any, must sit at cbCabinet and end the file; without
 * one nothing may follow the cabinet (it would be lost). */
static int cab_open_signature(struct hs_ctx *ctx, struct cab_state *st)
{
	if (st->sig_off == 0 && st->sig_len == 0) {
		if (st->cabinet_end != st->in.size)
			return hs_error_set(ctx, HS_ERR_FORMAT,
			                    "%s: cbCabinet %u does not match the file size %llu",
			                    st->in.path, st->cabinet_end,
			                    (unsigned long long)st->in.size);
		return 0;
	}
	if (st->sig_off != st->cabinet_end || st->sig_len == 0 ||
	    (uint64_t)st->sig_off + st->sig_len != st->in.size || st->sig_len > CAB_MAX_SIGNATURE)
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: CAB signature (offset %u, size %u) must follow cbCabinet "
		                    "%u and end the file (%llu bytes)",
		                    st->in.path, st->sig_off, st->sig_len, st->cabinet_end,
		                    (unsigned long long)st->in.size);
	return 0;
}

/* Reads the CFFOLDER table and checks every offset in it. */
static int cab_open_folders(struct hs_ctx *ctx, struct cab_state *st)
{
	size_t entry = CAB_FOLDER_LEN + st->cb_folder;
	size_t len = (size_t)st->n_folders * entry;
	uint64_t end = st->folders_off + len;
	uint32_t files = cab_le32(st->hdr + CAB_OFF_FILES);
	int r;

	if (end > st->cabinet_end || files < end || files > st->cabinet_end)
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: CAB folder table (%u entries) or coffFiles %u lies "
		                    "outside the cabinet (%u bytes)",
		                    st->in.path, st->n_folders, files, st->cabinet_end);
	if (hs_buf_reserve(&st->folders, len ? len : 1) < 0)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = hs_file_pread(ctx, &st->in, st->folders.data, len, st->folders_off)) < 0)
		return r;
	st->folders.len = len;
	for (size_t i = 0; i < st->n_folders; i++) {
		uint32_t start = cab_le32(st->folders.data + i * entry);

		if (start < end || start > st->cabinet_end)
			return hs_error_set(
			        ctx, HS_ERR_FORMAT,
			        "%s: CAB folder %zu starts at %u, outside the data area",
			        st->in.path, i, start);
	}
	return 0;
}

static int cab_open_header(struct hs_ctx *ctx, struct cab_state *st)
{
	uint16_t flags;
	int r;

	if (st->in.size < CAB_HDR_LEN)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: CAB header truncated (%llu bytes)",
		                    st->in.path, (unsigned long long)st->in.size);
	if ((r = hs_file_pread(ctx, &st->in, st->hdr, CAB_HDR_LEN, 0)) < 0)
		return r;
	if (memcmp(st->hdr, "MSCF", 4) != 0)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: not a cabinet: no MSCF signature",
		                    st->in.path);
	flags = cab_le16(st->hdr + CAB_OFF_FLAGS);
	if (flags & (CAB_FLAG_PREV | CAB_FLAG_NEXT))
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "%s: cabinet is part of a multi-cabinet set; only single "
		                    "cabinets can be signed",
		                    st->in.path);
	if ((flags & CAB_FLAG_RESERVE) && (r = cab_open_reserve(ctx, st)) < 0)
		return r;
	st->folders_off = st->has_reserve ? CAB_SIGNED_HDR_LEN : CAB_HDR_LEN;
	st->n_folders = cab_le16(st->hdr + CAB_OFF_FOLDERS);
	st->cabinet_end = cab_le32(st->hdr + CAB_OFF_CABINET);
	if (st->cabinet_end > st->in.size || st->cabinet_end < st->folders_off)
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: cbCabinet %u is outside the file (%llu bytes)",
		                    st->in.path, st->cabinet_end, (unsigned long long)st->in.size);
	return 0;
}

static void cab_close(void *state)
{
	struct cab_state *st = state;

	if (st == NULL)
		return;
	hs_buf_free(&st->folders);
	free(st);
}

static int cab_open(struct hs_ctx *ctx, const struct hs_file *in, void **state)
{
	struct cab_state *st = calloc(1, sizeof(*st));
	int r;

	*state = NULL;
	if (st == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	st->in = *in;
	if ((r = cab_open_header(ctx, st)) < 0 || (r = cab_open_signature(ctx, st)) < 0 ||
	    (r = cab_open_folders(ctx, st)) < 0) {
		cab_close(st);
		return r;
	}
	*state = st;
	return 0;
}

static bool cab_is_signed(void *state)
{
	const struct cab_state *st = state;

	return st->sig_len != 0;
}

/* --- digest and copy ------------------------------------------------- */

/* Offsets grow by this much in the signed layout. */
static uint32_t cab_shift(const struct cab_state *st)
{
	return st->has_reserve ? 0 : CAB_SHIFT;
}

/* The 60-byte signed header, signature offset and size zero. */
static void cab_signed_header(const struct cab_state *st, uint8_t out[CAB_SIGNED_HDR_LEN])
{
	uint32_t shift = cab_shift(st);

	memset(out, 0, CAB_SIGNED_HDR_LEN);
	memcpy(out, st->hdr, CAB_HDR_LEN);
	cab_put_le32(out + CAB_OFF_CABINET, st->cabinet_end + shift);
	cab_put_le32(out + CAB_OFF_FILES, cab_le32(st->hdr + CAB_OFF_FILES) + shift);
	cab_put_le16(out + CAB_OFF_FLAGS, cab_le16(st->hdr + CAB_OFF_FLAGS) | CAB_FLAG_RESERVE);
	cab_put_le16(out + 36, CAB_RESERVE_LEN);
	out[38] = st->cb_folder;
	out[39] = st->cb_data;
	cab_put_le16(out + 42, 0x0010); /* structure 2: offset, size, 8 unused */
}

/* The folder table with every coffCabStart moved by delta (mod 2^32). */
static void cab_shift_folders(const struct cab_state *st, uint8_t *table, uint32_t delta)
{
	size_t entry = CAB_FOLDER_LEN + st->cb_folder;

	memcpy(table, st->folders.data, st->folders.len);
	for (size_t i = 0; i < st->n_folders; i++)
		cab_put_le32(table + i * entry, cab_le32(table + i * entry) + delta);
}

/* Hashes (md may be NULL) and copies (copy may be NULL) one buffer. */
static int cab_emit(struct hs_ctx *ctx, const struct cab_state *st, EVP_MD_CTX *md,
                    struct hs_out *copy, const void *p, size_t n)
{
	if (md != NULL && n > 0 && !EVP_DigestUpdate(md, p, n))
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "%s: digest update failed", st->in.path);
	return copy != NULL ? hs_out_write(ctx, copy, p, n) : 0;
}

/* The signed header: copied whole, hashed without the skipped fields. */
static int cab_emit_header(struct hs_ctx *ctx, const struct cab_state *st, EVP_MD_CTX *md,
                           struct hs_out *copy)
{
	uint8_t hdr[CAB_SIGNED_HDR_LEN];
	unsigned pos = 0;
	int r;

	cab_signed_header(st, hdr);
	for (size_t i = 0; i < sizeof(cab_unhashed) / sizeof(cab_unhashed[0]); i++) {
		if ((r = cab_emit(ctx, st, md, NULL, hdr + pos, cab_unhashed[i].start - pos)) < 0)
			return r;
		pos = cab_unhashed[i].end;
	}
	return copy != NULL ? hs_out_write(ctx, copy, hdr, sizeof(hdr)) : 0;
}

/* Streams input [start, end) into the digest and the copy. */
static int cab_emit_range(struct hs_ctx *ctx, const struct cab_state *st, EVP_MD_CTX *md,
                          struct hs_out *copy, uint64_t start, uint64_t end)
{
	uint8_t *buf = malloc(HS_IO_CHUNK);
	size_t n;
	int r = 0;

	if (buf == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	for (uint64_t pos = start; r == 0 && pos < end; pos += n) {
		n = end - pos < HS_IO_CHUNK ? (size_t)(end - pos) : HS_IO_CHUNK;
		if ((r = hs_file_pread(ctx, &st->in, buf, n, pos)) == 0)
			r = cab_emit(ctx, st, md, copy, buf, n);
	}
	free(buf);
	return r;
}

/* One pass over the signed layout: header, folders, then the rest of the
 * cabinet (files and data blocks) up to cbCabinet. */
static int cab_stream(struct hs_ctx *ctx, const struct cab_state *st, EVP_MD_CTX *md,
                      struct hs_out *copy)
{
	uint8_t *table = malloc(st->folders.len ? st->folders.len : 1);
	int r;

	if (table == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	cab_shift_folders(st, table, cab_shift(st));
	if ((r = cab_emit_header(ctx, st, md, copy)) == 0 &&
	    (r = cab_emit(ctx, st, md, copy, table, st->folders.len)) == 0)
		r = cab_emit_range(ctx, st, md, copy, st->folders_off + st->folders.len,
		                   st->cabinet_end);
	free(table);
	return r;
}

static int cab_digest(struct hs_ctx *ctx, void *state, const struct hs_digest_params *params,
                      struct hs_indirect *out, struct hs_out *copy)
{
	struct cab_state *st = state;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int len = 0;
	int r;

	hs_indirect_free(out);
	st->copied = false;
	if ((uint64_t)st->cabinet_end + cab_shift(st) + CAB_MAX_SIGNATURE > UINT32_MAX) {
		r = hs_error_set(ctx, HS_ERR_UNSUPPORTED, "%s: cabinet too large to be signed",
		                 st->in.path);
		goto out;
	}
	if (md == NULL || !EVP_DigestInit_ex(md, params->md, NULL)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "%s: cannot start the digest", st->in.path);
		goto out;
	}
	/* An unsigned cabinet as it stands: all but reserved1, as Windows'
	 * catalog hash and osslsigncode compute it. */
	if (params->as_is && copy == NULL && !st->has_reserve) {
		if (!EVP_DigestUpdate(md, st->hdr, 4)) {
			r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "%s: digest failed", st->in.path);
			goto out;
		}
		if ((r = cab_emit_range(ctx, st, md, NULL, 8, st->in.size)) < 0)
			goto out;
	} else if ((r = cab_stream(ctx, st, md, copy)) < 0) {
		goto out;
	}
	if (!EVP_DigestFinal_ex(md, out->digest, &len)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "%s: cannot finish the digest", st->in.path);
		goto out;
	}
	out->digest_len = len;
	if ((r = hs_spc_obsolete_link_data(ctx, &out->data_der, HS_OID_SPC_CAB_DATA)) < 0)
		goto out;
	st->copied = copy != NULL;
	st->copy_len = copy != NULL ? copy->size : 0;
out:
	EVP_MD_CTX_free(md);
	return r;
}

/* --- embed, extract, remove ------------------------------------------ */

/* Appends the signature at cbCabinet and records where it is. */
static int cab_embed(struct hs_ctx *ctx, void *state, const uint8_t *pkcs7, size_t len,
                     struct hs_out *out)
{
	static const uint8_t zeros[8];
	struct cab_state *st = state;
	uint64_t sig_off = out->size;
	uint8_t loc[8];
	int r;

	if (!st->copied || out->size != st->copy_len)
		return hs_error_set(
		        ctx, HS_ERR_INVALID,
		        "internal: CAB embed needs digest() to write the cabinet first");
	if (len > CAB_MAX_SIGNATURE || sig_off + len + 8 > UINT32_MAX)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "%s: signature of %zu bytes does not fit the cabinet",
		                    st->in.path, len);
	cab_put_le32(loc, (uint32_t)sig_off);
	cab_put_le32(loc + 4, (uint32_t)(len + cab_pad8(len)));
	if ((r = hs_out_write(ctx, out, pkcs7, len)) < 0 ||
	    (r = hs_out_write(ctx, out, zeros, cab_pad8(len))) < 0)
		return r;
	st->copied = false;
	return hs_out_pwrite(ctx, out, loc, sizeof(loc), CAB_OFF_SIG);
}

/* Length of the DER TLV at the start of p[0..n), or 0 if malformed. */
static size_t cab_der_len(const uint8_t *p, size_t n)
{
	const unsigned char *q = p;
	long len;
	int tag, xclass;

	if (n > INT32_MAX || (ASN1_get_object(&q, &len, &tag, &xclass, (long)n) & 0x80) ||
	    len < 0 || (size_t)(q - p) + (size_t)len > n) {
		ERR_clear_error();
		return 0;
	}
	return (size_t)(q - p) + (size_t)len;
}

static int cab_extract(struct hs_ctx *ctx, void *state, struct hs_buf *out)
{
	const struct cab_state *st = state;
	size_t der_len;
	uint8_t *p;
	int r;

	if (st->sig_len == 0)
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", st->in.path);
	if (hs_buf_reserve(out, st->sig_len) < 0)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	p = out->data + out->len;
	if ((r = hs_file_pread(ctx, &st->in, p, st->sig_len, st->sig_off)) < 0)
		return r;
	der_len = cab_der_len(p, st->sig_len);
	if (der_len == 0 || st->sig_len - der_len > 7)
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: CAB signature is not one DER value padded to 8 bytes",
		                    st->in.path);
	for (size_t i = der_len; i < st->sig_len; i++)
		if (p[i] != 0)
			return hs_error_set(ctx, HS_ERR_FORMAT,
			                    "%s: unexpected data after the CAB signature",
			                    st->in.path);
	out->len += der_len;
	return 0;
}

/* The header without the reserve: offsets back by 24, flag cleared. */
static int cab_write_plain_header(struct hs_ctx *ctx, const struct cab_state *st,
                                  struct hs_out *out)
{
	uint8_t hdr[CAB_HDR_LEN];

	memcpy(hdr, st->hdr, sizeof(hdr));
	cab_put_le32(hdr + CAB_OFF_CABINET, st->cabinet_end - CAB_SHIFT);
	cab_put_le32(hdr + CAB_OFF_FILES, cab_le32(st->hdr + CAB_OFF_FILES) - CAB_SHIFT);
	cab_put_le16(hdr + CAB_OFF_FLAGS, cab_le16(st->hdr + CAB_OFF_FLAGS) & ~CAB_FLAG_RESERVE);
	return hs_out_write(ctx, out, hdr, sizeof(hdr));
}

/*
 * Writes the cabinet without its signature. The reserve goes too (as
 * osslsigncode does), restoring the unsigned layout, unless folder or data
 * reserves need the flag: then only the signature fields are zeroed.
 */
static int cab_remove(struct hs_ctx *ctx, void *state, struct hs_out *out)
{
	const struct cab_state *st = state;
	uint8_t *table = NULL;
	int r;

	if (st->sig_len == 0)
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", st->in.path);
	if (st->cb_folder != 0 || st->cb_data != 0)
		return cab_stream(ctx, st, NULL, out);
	if ((table = malloc(st->folders.len ? st->folders.len : 1)) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	cab_shift_folders(st, table, (uint32_t)-CAB_SHIFT);
	if ((r = cab_write_plain_header(ctx, st, out)) == 0 &&
	    (r = hs_out_write(ctx, out, table, st->folders.len)) == 0)
		r = cab_emit_range(ctx, st, NULL, out, st->folders_off + st->folders.len,
		                   st->cabinet_end);
	free(table);
	return r;
}

const struct hs_format hs_format_cab = {
        .name = "cab",
        .probe = cab_probe,
        .open = cab_open,
        .is_signed = cab_is_signed,
        .digest = cab_digest,
        .embed = cab_embed,
        .extract = cab_extract,
        .remove = cab_remove,
        .close = cab_close,
};
