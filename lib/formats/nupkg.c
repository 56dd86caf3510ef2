/*
 * nupkg.c - NuGet packages: the author signature (NuGet "Package Signatures
 * Technical Details").
 *
 * Not Authenticode: the signature is a CMS SignedData whose id-data content
 * is the text "Version:1\n\n<hash OID>-Hash:<base64>\n\n", stored as the
 * last ZIP entry `.signature.p7s` (stored, no data descriptor). The hash is
 * over the package as if unsigned: every local record before the signature,
 * the central directory without the signature's record, and the end record
 * with its counts, size and offset as they were before signing. So the
 * package bytes are kept and the signature is only appended; the engine
 * builds the CMS (authenticode/cms.c) because the format sets plain_cms.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>

#include "core/codec.h"
#include "format.h"
#include "zip.h"

#define NUPKG_SIG_NAME ".signature.p7s"
#define NUPKG_SIG_MAX  ((size_t)16 * 1024 * 1024)

struct nupkg_state {
	const struct hs_file *in;
	struct hs_zip zip;
	long sig;
	uint64_t local_end; /* start of the signature's record, or of the CD */
};

struct nupkg_sink {
	EVP_MD_CTX *md;
	struct hs_out *out;
};

static bool nupkg_probe(const uint8_t *head, size_t len)
{
	(void)head;
	(void)len;
	return false; /* any ZIP: claimed by extension, see probe_name */
}

static bool nupkg_probe_name(const char *path)
{
	size_t len = strlen(path);

	return len > 6 && strcasecmp(path + len - 6, ".nupkg") == 0;
}

/* A .nuspec at the root is what makes a ZIP a NuGet package. */
static bool nupkg_has_nuspec(const struct hs_zip *zip)
{
	for (size_t i = 0; i < zip->n_entries; i++) {
		const struct hs_zip_entry *e = &zip->entries[i];

		if (e->name_len > 7 && memchr(e->name, '/', e->name_len) == NULL &&
		    strncasecmp(e->name + e->name_len - 7, ".nuspec", 7) == 0)
			return true;
	}
	return false;
}

/* The signature must be the last local record and the last CD record. */
static int nupkg_check_layout(struct hs_ctx *ctx, struct nupkg_state *st)
{
	const struct hs_zip_entry *e;

	if (st->zip.zip64)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "%s: zip64 NuGet packages are not supported", st->in->path);
	if (!nupkg_has_nuspec(&st->zip))
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: not a NuGet package (no .nuspec)",
		                    st->in->path);
	st->sig = hs_zip_find(&st->zip, NUPKG_SIG_NAME);
	st->local_end = st->zip.cd_offset;
	if (st->sig < 0)
		return 0;
	e = &st->zip.entries[st->sig];
	if (e->span_end != st->zip.cd_offset || e->rec_off + e->rec_len != st->zip.cd.len ||
	    e->method != 0)
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: .signature.p7s is not the last, stored entry",
		                    st->in->path);
	st->local_end = e->local_off;
	return 0;
}

static void nupkg_close(void *state)
{
	struct nupkg_state *st = state;

	if (st == NULL)
		return;
	hs_zip_close(&st->zip);
	free(st);
}

static int nupkg_open(struct hs_ctx *ctx, const struct hs_file *in, void **state)
{
	struct nupkg_state *st = calloc(1, sizeof(*st));
	int r;

	*state = NULL;
	if (st == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	st->in = in;
	if ((r = hs_zip_open(ctx, &st->zip, in)) < 0 || (r = nupkg_check_layout(ctx, st)) < 0)
		goto out;
	*state = st;
	st = NULL;
out:
	nupkg_close(st);
	return r;
}

static bool nupkg_is_signed(void *state)
{
	return ((struct nupkg_state *)state)->sig >= 0;
}

static int nupkg_write(struct hs_ctx *ctx, struct nupkg_sink *s, const void *p, size_t len)
{
	if (s->md != NULL && !EVP_DigestUpdate(s->md, p, len))
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "digest update failed");
	return s->out != NULL ? hs_out_write(ctx, s->out, p, len) : 0;
}

/* Streams the local records before the signature into the sink. */
static int nupkg_write_locals(struct hs_ctx *ctx, const struct nupkg_state *st,
                              struct nupkg_sink *s)
{
	uint8_t *buf = malloc(HS_IO_CHUNK);
	uint64_t off = 0;
	int r = 0;

	if (buf == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	while (off < st->local_end && r == 0) {
		size_t n = st->local_end - off < HS_IO_CHUNK ? (size_t)(st->local_end - off)
		                                             : HS_IO_CHUNK;

		if ((r = hs_file_pread(ctx, st->in, buf, n, off)) == 0)
			r = nupkg_write(ctx, s, buf, n);
		off += n;
	}
	free(buf);
	return r;
}

/* The central directory without the old signature, plus sig_rec (may be
 * NULL), and an end record for a CD at cd_start. Disk numbers are 0, which
 * is all NuGet accepts. */
static int nupkg_write_cd(struct hs_ctx *ctx, const struct nupkg_state *st, struct nupkg_sink *s,
                          const struct hs_buf *sig_rec, uint64_t cd_start)
{
	uint8_t eocd[22] = {'P', 'K', 5, 6};
	uint64_t n = 0, size = 0;
	int r;

	for (size_t i = 0; i < st->zip.n_entries; i++) {
		const struct hs_zip_entry *e = &st->zip.entries[i];

		if ((long)i == st->sig)
			continue;
		if ((r = nupkg_write(ctx, s, st->zip.cd.data + e->rec_off, e->rec_len)) < 0)
			return r;
		n++;
		size += e->rec_len;
	}
	if (sig_rec != NULL && (r = nupkg_write(ctx, s, sig_rec->data, sig_rec->len)) < 0)
		return r;
	n += sig_rec != NULL;
	size += sig_rec != NULL ? sig_rec->len : 0;
	if (n > 0xFFFE || cd_start + size >= 0xFFFFFFFF)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "%s: the signed package would need zip64", st->in->path);
	hs_put16(eocd + 8, (uint16_t)n);
	hs_put16(eocd + 10, (uint16_t)n);
	hs_put32(eocd + 12, (uint32_t)size);
	hs_put32(eocd + 16, (uint32_t)cd_start);
	hs_put16(eocd + 20, (uint16_t)st->zip.comment.len);
	if ((r = nupkg_write(ctx, s, eocd, sizeof(eocd))) < 0)
		return r;
	return nupkg_write(ctx, s, st->zip.comment.data, st->zip.comment.len);
}

/* "Version:1\n\n<OID>-Hash:<base64>\n\n", the signed content. */
static int nupkg_content(struct hs_ctx *ctx, const EVP_MD *md, const uint8_t *hash, size_t len,
                         struct hs_buf *out)
{
	struct hs_buf b64 = {0};
	char oid[64], *text = NULL;
	int r;

	if (OBJ_obj2txt(oid, sizeof(oid), OBJ_nid2obj(EVP_MD_get_type(md)), 1) <= 0)
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "no OID for %s", EVP_MD_get0_name(md));
	if ((r = hs_base64_encode(&b64, hash, len, false)) < 0 ||
	    (r = hs_buf_append(&b64, "", 1)) < 0 ||
	    (text = hs_strprintf("Version:1\n\n%s-Hash:%s\n\n", oid, (char *)b64.data)) == NULL ||
	    (r = hs_buf_append(out, text, strlen(text))) < 0)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	free(text);
	hs_buf_free(&b64);
	return r;
}

static int nupkg_digest(struct hs_ctx *ctx, void *state, const struct hs_digest_params *params,
                        struct hs_indirect *out, struct hs_out *copy)
{
	struct nupkg_state *st = state;
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	struct nupkg_sink s = {mc, copy};
	unsigned int len = 0;
	int r;

	if (mc == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if (EVP_MD_get_type(params->md) == NID_sha1) {
		r = hs_error_set(ctx, HS_ERR_INVALID, "NuGet signatures need SHA-256 or stronger");
		goto out;
	}
	if (!EVP_DigestInit_ex(mc, params->md, NULL)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "digest init failed");
		goto out;
	}
	if ((r = nupkg_write_locals(ctx, st, &s)) < 0)
		goto out;
	s.out = NULL;
	if ((r = nupkg_write_cd(ctx, st, &s, NULL, st->local_end)) < 0)
		goto out;
	if (!EVP_DigestFinal_ex(mc, out->digest, &len)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "digest failed");
		goto out;
	}
	out->digest_len = len;
	out->content_oid = "1.2.840.113549.1.7.1"; /* id-data */
	r = nupkg_content(ctx, params->md, out->digest, len, &out->content_der);
out:
	EVP_MD_CTX_free(mc);
	return r;
}

/* The signature's local record (stored, no descriptor, no extra field)
 * and its central directory record. */
static int nupkg_sig_records(struct hs_ctx *ctx, const uint8_t *p7, size_t len, uint64_t off,
                             struct hs_buf *local, struct hs_buf *central)
{
	static const char name[] = NUPKG_SIG_NAME;
	uint8_t lh[30] = {'P', 'K', 3, 4, 20, 0}, cd[46] = {'P', 'K', 1, 2, 20, 0, 20, 0};
	int r;

	hs_put16(lh + 12, 0x21); /* 1980-01-01: the same input signs to the same bytes */
	hs_put32(lh + 14, hs_zip_crc32(p7, len));
	hs_put32(lh + 18, (uint32_t)len);
	hs_put32(lh + 22, (uint32_t)len);
	hs_put16(lh + 26, sizeof(name) - 1);
	memcpy(cd + 12, lh + 10, 16);
	hs_put16(cd + 28, sizeof(name) - 1);
	hs_put32(cd + 42, (uint32_t)off);
	if ((r = hs_buf_append(local, lh, sizeof(lh))) < 0 ||
	    (r = hs_buf_append(local, name, sizeof(name) - 1)) < 0 ||
	    (r = hs_buf_append(local, p7, len)) < 0 ||
	    (r = hs_buf_append(central, cd, sizeof(cd))) < 0 ||
	    (r = hs_buf_append(central, name, sizeof(name) - 1)) < 0)
		return hs_error_set(ctx, r, "out of memory");
	return 0;
}

static int nupkg_embed(struct hs_ctx *ctx, void *state, const uint8_t *pkcs7, size_t len,
                       struct hs_out *out)
{
	struct nupkg_state *st = state;
	struct hs_buf local = {0}, central = {0};
	struct nupkg_sink s = {NULL, out};
	int r;

	if (len > NUPKG_SIG_MAX || out->size >= 0xFFFFFFFF)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED, "%s: package or signature too large",
		                    st->in->path);
	if ((r = nupkg_sig_records(ctx, pkcs7, len, out->size, &local, &central)) < 0 ||
	    (r = hs_out_write(ctx, out, local.data, local.len)) < 0)
		goto out;
	r = nupkg_write_cd(ctx, st, &s, &central, out->size);
out:
	hs_buf_free(&local);
	hs_buf_free(&central);
	return r;
}

static int nupkg_extract(struct hs_ctx *ctx, void *state, struct hs_buf *out)
{
	struct nupkg_state *st = state;

	if (st->sig < 0)
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", st->in->path);
	return hs_zip_read(ctx, &st->zip, st->in, &st->zip.entries[st->sig], NUPKG_SIG_MAX, out);
}

static int nupkg_remove(struct hs_ctx *ctx, void *state, struct hs_out *out)
{
	struct nupkg_state *st = state;
	struct nupkg_sink s = {NULL, out};
	int r;

	if (st->sig < 0)
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", st->in->path);
	if ((r = nupkg_write_locals(ctx, st, &s)) < 0)
		return r;
	return nupkg_write_cd(ctx, st, &s, NULL, out->size);
}

/* A package has one primary signature (NuGet forbids cosigning). */
static int nupkg_check_nesting(struct hs_ctx *ctx, void *state,
                               const struct hs_digest_params *primary, const EVP_MD *nested_md)
{
	(void)primary;
	(void)nested_md;
	return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
	                    "%s: NuGet packages carry one signature; nesting is not supported",
	                    ((struct nupkg_state *)state)->in->path);
}

const struct hs_format hs_format_nupkg = {
        .name = "nupkg",
        .probe = nupkg_probe,
        .open = nupkg_open,
        .is_signed = nupkg_is_signed,
        .digest = nupkg_digest,
        .embed = nupkg_embed,
        .extract = nupkg_extract,
        .remove = nupkg_remove,
        .close = nupkg_close,
        .probe_name = nupkg_probe_name,
        .check_nesting = nupkg_check_nesting,
        .plain_cms = true,
        .replace_explicit = true,
};
