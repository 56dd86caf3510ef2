/*
 * appx.c - APPX/MSIX packages and bundles (authenticode.md section 9).
 *
 * The signature is the ZIP entry AppxSignature.p7x ("PKCX" + DER PKCS#7),
 * the last local record. The signed digest is a blob of tagged hashes:
 * APPX, AXPC (the local records before the signature), AXCD (the central
 * directory without the signature entry, and the end records), AXCT
 * ([Content_Types].xml uncompressed), AXBM (AppxBlockMap.xml) and, when
 * present, AXCI (AppxMetadata/CodeIntegrity.cat). The hash algorithm is the
 * block map's HashMethod. Local records are copied byte for byte; only
 * [Content_Types].xml is rewritten, to add (or on remove, drop) the
 * signature's Override, and the records after it (none, in packages made
 * by makeappx, where it comes last) shift by the size difference.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/x509.h>
#include <zlib.h>

#include "appx.h"
#include "authenticode/asn1.h"
#include "format.h"
#include "zip.h"

#define APPX_SIG_NAME        "AppxSignature.p7x"
#define APPX_CT_NAME         "[Content_Types].xml"
#define APPX_BM_NAME         "AppxBlockMap.xml"
#define APPX_CI_NAME         "AppxMetadata/CodeIntegrity.cat"
#define APPX_MANIFEST        "AppxManifest.xml"
#define APPX_BUNDLE_MANIFEST "AppxMetadata/AppxBundleManifest.xml"
#define APPX_CT_OVERRIDE                                                                           \
	"<Override PartName=\"/AppxSignature.p7x\" "                                               \
	"ContentType=\"application/vnd.ms-appx.signature\"/>"
/* Bounds for the entries read into memory. */
#define APPX_XML_MAX ((size_t)64 * 1024 * 1024)
#define APPX_SIG_MAX ((size_t)16 * 1024 * 1024)

static const uint8_t appx_package_uuid[16] = {0x4B, 0xDF, 0xC5, 0x0A, 0x07, 0xCE, 0xE2, 0x4D,
                                              0xB7, 0x6E, 0x23, 0xC8, 0x39, 0xA0, 0x9F, 0xD1};
static const uint8_t appx_bundle_uuid[16] = {0xB3, 0x58, 0x5F, 0x0F, 0xDE, 0xAA, 0x9A, 0x4B,
                                             0xA4, 0x34, 0x95, 0x74, 0x2D, 0x92, 0xEC, 0xEB};

struct appx_state {
	const struct hs_file *in;
	struct hs_zip zip;
	const EVP_MD *md; /* from the block map */
	bool bundle;
	long sig, ct, bm, ci;
	uint64_t local_end; /* start of the signature's record, or of the CD */
	struct hs_buf block_map, manifest, ct_xml;
	/* [Content_Types].xml as it will be in the output */
	bool ct_rewrite;
	struct hs_buf ct_new_xml, ct_record;
	uint32_t ct_crc;
	uint64_t ct_csize;
	int64_t delta; /* size change of the content types record */
};

/* Bytes go to a digest, an output, or both. */
struct appx_sink {
	EVP_MD_CTX *md;
	struct hs_out *out;
};

static bool appx_probe(const uint8_t *head, size_t len)
{
	(void)head;
	(void)len;
	return false; /* any ZIP: claimed by extension, see probe_name */
}

static bool appx_probe_name(const char *path)
{
	static const char *const exts[] = {".appx", ".msix", ".appxbundle", ".msixbundle"};
	size_t len = strlen(path);

	for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
		size_t el = strlen(exts[i]);

		if (len > el && strcasecmp(path + len - el, exts[i]) == 0)
			return true;
	}
	return false;
}

/* The value of attribute `name` in the first element whose tag ends in
 * `tag` (any namespace prefix), unescaped; NULL if absent. */
static char *appx_xml_attr(const char *xml, const char *tag, const char *name)
{
	size_t tl = strlen(tag), nl = strlen(name);

	for (const char *p = strstr(xml, tag); p != NULL; p = strstr(p + 1, tag)) {
		const char *end;

		if (p == xml || (p[-1] != '<' && p[-1] != ':') ||
		    (p[tl] != ' ' && p[tl] != '\t' && p[tl] != '\r' && p[tl] != '\n'))
			continue;
		if ((end = strchr(p, '>')) == NULL)
			return NULL;
		for (const char *a = p + tl; a + nl + 2 < end; a++) {
			const char *v, *q;

			if (strncmp(a, name, nl) != 0 ||
			    (a[-1] != ' ' && a[-1] != '\t' && a[-1] != '\n' && a[-1] != '\r'))
				continue;
			v = a + nl;
			while (*v == ' ')
				v++;
			if (*v++ != '=')
				continue;
			while (*v == ' ')
				v++;
			if ((*v != '"' && *v != '\'') || (q = strchr(v + 1, *v)) == NULL || q > end)
				return NULL;
			return strndup(v + 1, (size_t)(q - v - 1));
		}
		return NULL;
	}
	return NULL;
}

/* Replaces the five predefined XML entities in place. */
static void appx_xml_unescape(char *s)
{
	static const struct {
		const char *ent;
		char c;
	} ents[] = {
	        {"&amp;", '&'}, {"&quot;", '"'}, {"&apos;", '\''}, {"&lt;", '<'}, {"&gt;", '>'}};
	char *w = s;

	for (const char *r = s; *r != '\0';) {
		size_t i, n = sizeof(ents) / sizeof(ents[0]);

		for (i = 0; i < n && strncmp(r, ents[i].ent, strlen(ents[i].ent)) != 0; i++)
			;
		if (i < n) {
			*w++ = ents[i].c;
			r += strlen(ents[i].ent);
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
}

/* The block map's HashMethod decides the digest (user choice ignored). */
static int appx_block_map_md(struct hs_ctx *ctx, struct appx_state *st)
{
	static const struct {
		const char *uri;
		int nid;
	} methods[] = {{"http://www.w3.org/2001/04/xmlenc#sha256", NID_sha256},
	               {"http://www.w3.org/2001/04/xmldsig-more#sha384", NID_sha384},
	               {"http://www.w3.org/2001/04/xmlenc#sha512", NID_sha512}};
	char *uri = appx_xml_attr((const char *)st->block_map.data, "BlockMap", "HashMethod");
	int r = 0;

	if (uri == NULL)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: AppxBlockMap.xml has no HashMethod",
		                    st->in->path);
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strcmp(uri, methods[i].uri) == 0)
			st->md = hs_digest_md(hs_digest_from_nid(methods[i].nid));
	if (st->md == NULL)
		r = hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                 "%s: unsupported block map HashMethod %.100s", st->in->path, uri);
	free(uri);
	return r;
}

static int appx_read(struct hs_ctx *ctx, struct appx_state *st, long idx, size_t max,
                     struct hs_buf *out)
{
	return hs_zip_read(ctx, &st->zip, st->in, &st->zip.entries[idx], max, out);
}

/* Finds the parts every package has and checks the signature comes last. */
static int appx_find_parts(struct hs_ctx *ctx, struct appx_state *st)
{
	long manifest;

	st->sig = hs_zip_find(&st->zip, APPX_SIG_NAME);
	st->ct = hs_zip_find(&st->zip, APPX_CT_NAME);
	st->bm = hs_zip_find(&st->zip, APPX_BM_NAME);
	st->ci = hs_zip_find(&st->zip, APPX_CI_NAME);
	manifest = hs_zip_find(&st->zip, APPX_BUNDLE_MANIFEST);
	st->bundle = manifest >= 0;
	if (manifest < 0)
		manifest = hs_zip_find(&st->zip, APPX_MANIFEST);
	if (st->ct < 0 || st->bm < 0 || manifest < 0)
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: not an APPX/MSIX package ([Content_Types].xml, "
		                    "AppxBlockMap.xml or the manifest is missing)",
		                    st->in->path);
	st->local_end = st->zip.cd_offset;
	if (st->sig >= 0) {
		if (st->zip.entries[st->sig].span_end != st->zip.cd_offset)
			return hs_error_set(ctx, HS_ERR_FORMAT,
			                    "%s: AppxSignature.p7x is not the last entry",
			                    st->in->path);
		st->local_end = st->zip.entries[st->sig].local_off;
	}
	return appx_read(ctx, st, manifest, APPX_XML_MAX, &st->manifest);
}

static void appx_close(void *state)
{
	struct appx_state *st = state;

	if (st == NULL)
		return;
	hs_zip_close(&st->zip);
	hs_buf_free(&st->block_map);
	hs_buf_free(&st->manifest);
	hs_buf_free(&st->ct_xml);
	hs_buf_free(&st->ct_new_xml);
	hs_buf_free(&st->ct_record);
	free(st);
}

static int appx_open(struct hs_ctx *ctx, const struct hs_file *in, void **state)
{
	struct appx_state *st = calloc(1, sizeof(*st));
	int r;

	*state = NULL;
	if (st == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	st->in = in;
	if ((r = hs_zip_open(ctx, &st->zip, in)) < 0 || (r = appx_find_parts(ctx, st)) < 0 ||
	    (r = appx_read(ctx, st, st->bm, APPX_XML_MAX, &st->block_map)) < 0 ||
	    (r = appx_read(ctx, st, st->ct, APPX_XML_MAX, &st->ct_xml)) < 0 ||
	    (r = appx_block_map_md(ctx, st)) < 0)
		goto out;
	*state = st;
	st = NULL;
out:
	appx_close(st);
	return r;
}

static bool appx_is_signed(void *state)
{
	return ((struct appx_state *)state)->sig >= 0;
}

/* The content types text the output gets: with the signature Override
 * (add) or without ours (remove); false if it stays as it is. */
static int appx_ct_text(struct hs_ctx *ctx, struct appx_state *st, bool add, bool *changed)
{
	const char *xml = (const char *)st->ct_xml.data, *at;
	size_t olen = strlen(APPX_CT_OVERRIDE), pre;
	struct hs_buf *nx = &st->ct_new_xml;
	int r = 0;

	*changed = false;
	if (add && strstr(xml, "PartName=\"/AppxSignature.p7x\"") != NULL)
		return 0;
	at = add ? strstr(xml, "</Types>") : strstr(xml, APPX_CT_OVERRIDE);
	if (at == NULL)
		return add ? hs_error_set(ctx, HS_ERR_FORMAT,
		                          "%s: [Content_Types].xml has no </Types>", st->in->path)
		           : 0;
	pre = (size_t)(at - xml);
	if ((r = hs_buf_append(nx, xml, pre)) < 0 ||
	    (add && (r = hs_buf_append(nx, APPX_CT_OVERRIDE, olen)) < 0) ||
	    (r = hs_buf_append(nx, at + (add ? 0 : olen),
	                       st->ct_xml.len - pre - (add ? 0 : olen))) < 0)
		return hs_error_set(ctx, r, "out of memory");
	*changed = true;
	return 0;
}

/* Builds the new [Content_Types].xml local record (no data descriptor, no
 * extra field) with the same method, times and name as the old one. */
static int appx_ct_record(struct hs_ctx *ctx, struct appx_state *st)
{
	const struct hs_zip_entry *e = &st->zip.entries[st->ct];
	const uint8_t *rec = st->zip.cd.data + e->rec_off;
	struct hs_buf data = {0};
	uint8_t lh[30];
	int r;

	if (hs_le32(rec + 20) == 0xFFFFFFFF || hs_le32(rec + 24) == 0xFFFFFFFF)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "%s: zip64 sizes on [Content_Types].xml are not supported",
		                    st->in->path);
	if ((r = hs_file_pread(ctx, st->in, lh, sizeof(lh), e->local_off)) < 0)
		return r;
	if (e->method == 8)
		r = hs_zip_deflate(ctx, st->ct_new_xml.data, st->ct_new_xml.len, &data);
	else if ((r = hs_buf_append(&data, st->ct_new_xml.data, st->ct_new_xml.len)) < 0)
		hs_error_set(ctx, r, "out of memory");
	if (r < 0)
		goto out;
	st->ct_crc = hs_zip_crc32(st->ct_new_xml.data, st->ct_new_xml.len);
	st->ct_csize = data.len;
	hs_put16(lh + 6, hs_le16(lh + 6) & ~8u);
	hs_put32(lh + 14, st->ct_crc);
	hs_put32(lh + 18, (uint32_t)data.len);
	hs_put32(lh + 22, (uint32_t)st->ct_new_xml.len);
	hs_put16(lh + 28, 0);
	if ((r = hs_buf_append(&st->ct_record, lh, sizeof(lh))) < 0 ||
	    (r = hs_buf_append(&st->ct_record, e->name, e->name_len)) < 0 ||
	    (r = hs_buf_append(&st->ct_record, data.data, data.len)) < 0) {
		hs_error_set(ctx, r, "out of memory");
		goto out;
	}
	st->delta = (int64_t)st->ct_record.len - (int64_t)(e->span_end - e->local_off);
out:
	hs_buf_free(&data);
	return r;
}

/* Decides the output's content types (add or remove the Override). */
static int appx_ct_prepare(struct hs_ctx *ctx, struct appx_state *st, bool add)
{
	int r;

	hs_buf_free(&st->ct_new_xml);
	hs_buf_free(&st->ct_record);
	st->delta = 0;
	if ((r = appx_ct_text(ctx, st, add, &st->ct_rewrite)) < 0 || !st->ct_rewrite)
		return r;
	return appx_ct_record(ctx, st);
}

static int appx_sink_write(struct hs_ctx *ctx, struct appx_sink *s, const void *p, size_t len)
{
	if (s->md != NULL && !EVP_DigestUpdate(s->md, p, len))
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "digest update failed");
	return s->out != NULL ? hs_out_write(ctx, s->out, p, len) : 0;
}

/* Streams [from, to) of the input into the sink. */
static int appx_sink_copy(struct hs_ctx *ctx, const struct appx_state *st, struct appx_sink *s,
                          uint64_t from, uint64_t to)
{
	uint8_t *buf = malloc(HS_IO_CHUNK);
	int r = 0;

	if (buf == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	while (from < to && r == 0) {
		size_t n = to - from < HS_IO_CHUNK ? (size_t)(to - from) : HS_IO_CHUNK;

		if ((r = hs_file_pread(ctx, st->in, buf, n, from)) == 0)
			r = appx_sink_write(ctx, s, buf, n);
		from += n;
	}
	free(buf);
	return r;
}

/* The local records up to the signature, with the new content types. */
static int appx_write_locals(struct hs_ctx *ctx, const struct appx_state *st, struct appx_sink *s)
{
	const struct hs_zip_entry *ct = &st->zip.entries[st->ct];
	int r;

	if (!st->ct_rewrite)
		return appx_sink_copy(ctx, st, s, 0, st->local_end);
	if ((r = appx_sink_copy(ctx, st, s, 0, ct->local_off)) < 0 ||
	    (r = appx_sink_write(ctx, s, st->ct_record.data, st->ct_record.len)) < 0)
		return r;
	return appx_sink_copy(ctx, st, s, ct->span_end, st->local_end);
}

/* One central directory record, patched for the content types rewrite. */
static int appx_write_record(struct hs_ctx *ctx, const struct appx_state *st, size_t idx,
                             struct appx_sink *s)
{
	const struct hs_zip_entry *e = &st->zip.entries[idx];
	const struct hs_zip_entry *ct = &st->zip.entries[st->ct];
	uint8_t *rec = malloc(e->rec_len);
	uint64_t off = e->local_off;
	int r;

	if (rec == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	memcpy(rec, st->zip.cd.data + e->rec_off, e->rec_len);
	if (st->ct_rewrite && (long)idx == st->ct) {
		hs_put16(rec + 8, hs_le16(rec + 8) & ~8u);
		hs_put32(rec + 16, st->ct_crc);
		hs_put32(rec + 20, (uint32_t)st->ct_csize);
		hs_put32(rec + 24, (uint32_t)st->ct_new_xml.len);
	}
	if (st->ct_rewrite && e->local_off > ct->local_off)
		off = (uint64_t)((int64_t)off + st->delta);
	if (e->z64_off != 0)
		hs_put64(rec + (e->z64_off - e->rec_off), off);
	else if (off < 0xFFFFFFFF)
		hs_put32(rec + 42, (uint32_t)off);
	if (e->z64_off == 0 && off >= 0xFFFFFFFF)
		r = hs_error_set(ctx, HS_ERR_UNSUPPORTED, "%s: entry offset needs zip64",
		                 st->in->path);
	else
		r = appx_sink_write(ctx, s, rec, e->rec_len);
	free(rec);
	return r;
}

/* The zip64 end records (if the package has them) for a new CD. */
static int appx_write_zip64_end(struct hs_ctx *ctx, const struct appx_state *st,
                                struct appx_sink *s, uint64_t n, uint64_t cd_start,
                                uint64_t cd_size)
{
	uint8_t rec[56], loc[20];
	int r;

	memcpy(rec, st->zip.eocd64, sizeof(rec));
	hs_put64(rec + 24, n);
	hs_put64(rec + 32, n);
	hs_put64(rec + 40, cd_size);
	hs_put64(rec + 48, cd_start);
	memcpy(loc, st->zip.locator, sizeof(loc));
	hs_put64(loc + 8, cd_start + cd_size);
	if ((r = appx_sink_write(ctx, s, rec, sizeof(rec))) < 0 ||
	    (r = appx_sink_write(ctx, s, st->zip.eocd64_x.data, st->zip.eocd64_x.len)) < 0)
		return r;
	return appx_sink_write(ctx, s, loc, sizeof(loc));
}

/* The end of central directory record. Disk numbers are written as 0:
 * the APPX digest is defined over them as 0 (authenticode.md 9); fields
 * that defer to zip64 (all ones) stay so. */
static int appx_write_end(struct hs_ctx *ctx, const struct appx_state *st, struct appx_sink *s,
                          uint64_t n, uint64_t cd_start, uint64_t cd_size)
{
	const uint8_t *old = st->zip.eocd;
	uint8_t eocd[22] = {'P', 'K', 5, 6};
	int r;

	if (!st->zip.zip64 && (n > 0xFFFE || cd_start + cd_size >= 0xFFFFFFFF))
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "%s: the signed package would need zip64", st->in->path);
	if (st->zip.zip64 && (r = appx_write_zip64_end(ctx, st, s, n, cd_start, cd_size)) < 0)
		return r;
	hs_put16(eocd + 8, hs_le16(old + 8) == 0xFFFF ? 0xFFFF : (uint16_t)n);
	hs_put16(eocd + 10, hs_le16(old + 10) == 0xFFFF ? 0xFFFF : (uint16_t)n);
	hs_put32(eocd + 12, hs_le32(old + 12) == 0xFFFFFFFF ? 0xFFFFFFFF : (uint32_t)cd_size);
	hs_put32(eocd + 16, hs_le32(old + 16) == 0xFFFFFFFF ? 0xFFFFFFFF : (uint32_t)cd_start);
	hs_put16(eocd + 20, (uint16_t)st->zip.comment.len);
	if ((r = appx_sink_write(ctx, s, eocd, sizeof(eocd))) < 0)
		return r;
	return appx_sink_write(ctx, s, st->zip.comment.data, st->zip.comment.len);
}

/* Central directory without the old signature (plus sig_rec if given),
 * then the end records, for a CD starting at cd_start. */
static int appx_write_cd(struct hs_ctx *ctx, const struct appx_state *st, struct appx_sink *s,
                         const struct hs_buf *sig_rec, uint64_t cd_start)
{
	uint64_t n = 0, size = 0;
	int r;

	for (size_t i = 0; i < st->zip.n_entries; i++) {
		if ((long)i == st->sig)
			continue;
		if ((r = appx_write_record(ctx, st, i, s)) < 0)
			return r;
		n++;
		size += st->zip.entries[i].rec_len;
	}
	if (sig_rec != NULL) {
		if ((r = appx_sink_write(ctx, s, sig_rec->data, sig_rec->len)) < 0)
			return r;
		n++;
		size += sig_rec->len;
	}
	return appx_write_end(ctx, st, s, n, cd_start, size);
}

/* Appends tag || hash to the digest blob. */
static int appx_blob_add(struct hs_ctx *ctx, struct hs_indirect *ind, const char *tag,
                         EVP_MD_CTX *mc)
{
	unsigned int len = 0;

	if (ind->digest_len + 4 + EVP_MAX_MD_SIZE > sizeof(ind->digest))
		return hs_error_set(ctx, HS_ERR_INVALID, "internal: APPX digest blob too long");
	memcpy(ind->digest + ind->digest_len, tag, 4);
	if (!EVP_DigestFinal_ex(mc, ind->digest + ind->digest_len + 4, &len))
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "digest failed");
	ind->digest_len += 4 + len;
	return 0;
}

static int appx_blob_data(struct hs_ctx *ctx, const struct appx_state *st, struct hs_indirect *ind,
                          const char *tag, const struct hs_buf *data, EVP_MD_CTX *mc)
{
	if (!EVP_DigestInit_ex(mc, st->md, NULL) || !EVP_DigestUpdate(mc, data->data, data->len))
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "digest failed");
	return appx_blob_add(ctx, ind, tag, mc);
}

/* AXPC and AXCD: the records (copied to out when given) and the CD. */
static int appx_blob_zip(struct hs_ctx *ctx, const struct appx_state *st, struct hs_indirect *ind,
                         struct hs_out *copy, EVP_MD_CTX *mc)
{
	struct appx_sink s = {mc, copy};
	int r;

	if (!EVP_DigestInit_ex(mc, st->md, NULL))
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "digest init failed");
	if ((r = appx_write_locals(ctx, st, &s)) < 0 ||
	    (r = appx_blob_add(ctx, ind, "AXPC", mc)) < 0)
		return r;
	s.out = NULL;
	if (!EVP_DigestInit_ex(mc, st->md, NULL))
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "digest init failed");
	if ((r = appx_write_cd(ctx, st, &s, NULL, (uint64_t)((int64_t)st->local_end + st->delta))) <
	    0)
		return r;
	return appx_blob_add(ctx, ind, "AXCD", mc);
}

static int appx_digest(struct hs_ctx *ctx, void *state, const struct hs_digest_params *params,
                       struct hs_indirect *out, struct hs_out *copy)
{
	struct appx_state *st = state;
	struct hs_buf ci = {0};
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	int r;

	(void)params; /* the block map fixes the algorithm */
	out->digest_len = 0;
	out->md = st->md;
	if (mc == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	memcpy(out->digest, "APPX", 4);
	out->digest_len = 4;
	if ((r = appx_ct_prepare(ctx, st, true)) < 0 ||
	    (r = appx_blob_zip(ctx, st, out, copy, mc)) < 0 ||
	    (r = appx_blob_data(ctx, st, out, "AXCT",
	                        st->ct_rewrite ? &st->ct_new_xml : &st->ct_xml, mc)) < 0 ||
	    (r = appx_blob_data(ctx, st, out, "AXBM", &st->block_map, mc)) < 0)
		goto out;
	if (st->ci >= 0 && ((r = appx_read(ctx, st, st->ci, APPX_XML_MAX, &ci)) < 0 ||
	                    (r = appx_blob_data(ctx, st, out, "AXCI", &ci, mc)) < 0))
		goto out;
	r = hs_spc_sip_info(ctx, &out->data_der, 0x01010000,
	                    st->bundle ? appx_bundle_uuid : appx_package_uuid, NULL);
out:
	hs_buf_free(&ci);
	EVP_MD_CTX_free(mc);
	return r;
}

/* The signature's local record and its central directory record. */
static int appx_sig_records(struct hs_ctx *ctx, const uint8_t *p7, size_t len, uint64_t off,
                            struct hs_buf *local, struct hs_buf *central)
{
	static const char name[] = APPX_SIG_NAME;
	uint8_t lh[30] = {'P', 'K', 3, 4, 20, 0}, cd[46] = {'P', 'K', 1, 2, 45, 0, 20, 0};
	uint8_t z64[12] = {1, 0, 8, 0};
	uint32_t crc = (uint32_t)crc32(crc32(0L, NULL, 0), (const uint8_t *)"PKCX", 4);
	uint32_t size = (uint32_t)(len + 4);
	bool big = off >= 0xFFFFFFFF;
	int r;

	crc = (uint32_t)crc32(crc, p7, (uInt)len);
	/* Fixed date (1980-01-01): the same input signs to the same bytes. */
	hs_put16(lh + 12, 0x21);
	hs_put32(lh + 14, crc);
	hs_put32(lh + 18, size);
	hs_put32(lh + 22, size);
	hs_put16(lh + 26, sizeof(name) - 1);
	memcpy(cd + 12, lh + 10, 16);
	hs_put16(cd + 28, sizeof(name) - 1);
	hs_put16(cd + 30, big ? sizeof(z64) : 0);
	hs_put32(cd + 42, big ? 0xFFFFFFFF : (uint32_t)off);
	hs_put64(z64 + 4, off);
	if ((r = hs_buf_append(local, lh, sizeof(lh))) < 0 ||
	    (r = hs_buf_append(local, name, sizeof(name) - 1)) < 0 ||
	    (r = hs_buf_append(local, "PKCX", 4)) < 0 || (r = hs_buf_append(local, p7, len)) < 0 ||
	    (r = hs_buf_append(central, cd, sizeof(cd))) < 0 ||
	    (r = hs_buf_append(central, name, sizeof(name) - 1)) < 0 ||
	    (big && (r = hs_buf_append(central, z64, sizeof(z64))) < 0))
		return hs_error_set(ctx, r, "out of memory");
	return 0;
}

static int appx_embed(struct hs_ctx *ctx, void *state, const uint8_t *pkcs7, size_t len,
                      struct hs_out *out)
{
	struct appx_state *st = state;
	struct hs_buf local = {0}, central = {0};
	struct appx_sink s = {NULL, out};
	int r;

	if (len > APPX_SIG_MAX)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "signature too large for AppxSignature.p7x");
	if ((r = appx_sig_records(ctx, pkcs7, len, out->size, &local, &central)) < 0 ||
	    (r = hs_out_write(ctx, out, local.data, local.len)) < 0)
		goto out;
	r = appx_write_cd(ctx, st, &s, &central, out->size);
out:
	hs_buf_free(&local);
	hs_buf_free(&central);
	return r;
}

static int appx_extract(struct hs_ctx *ctx, void *state, struct hs_buf *out)
{
	struct appx_state *st = state;
	struct hs_buf raw = {0};
	int r;

	if (st->sig < 0)
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", st->in->path);
	if ((r = appx_read(ctx, st, st->sig, APPX_SIG_MAX, &raw)) < 0)
		goto out;
	if (raw.len <= 4 || memcmp(raw.data, "PKCX", 4) != 0)
		r = hs_error_set(ctx, HS_ERR_FORMAT, "%s: AppxSignature.p7x has no PKCX header",
		                 st->in->path);
	else if ((r = hs_buf_append(out, raw.data + 4, raw.len - 4)) < 0)
		hs_error_set(ctx, r, "out of memory");
out:
	hs_buf_free(&raw);
	return r;
}

static int appx_remove(struct hs_ctx *ctx, void *state, struct hs_out *out)
{
	struct appx_state *st = state;
	struct appx_sink s = {NULL, out};
	int r;

	if (st->sig < 0)
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", st->in->path);
	if ((r = appx_ct_prepare(ctx, st, false)) < 0 || (r = appx_write_locals(ctx, st, &s)) < 0)
		return r;
	return appx_write_cd(ctx, st, &s, NULL, out->size);
}

/* One attribute type=value of a distinguished name, normalised. */
struct appx_ava {
	char type[64]; /* dotted OID */
	char value[256];
};

/* The attribute type a Publisher names, as a dotted OID in out: the names
 * Windows writes (CertNameToStr: S for stateOrProvinceName, E for
 * emailAddress, ...) or "OID.1.2.3"; empty if unknown. */
static void appx_publisher_type(const char *type, char *out, size_t cap)
{
	static const struct {
		const char *name;
		int nid;
	} names[] = {{"CN", NID_commonName},
	             {"L", NID_localityName},
	             {"O", NID_organizationName},
	             {"OU", NID_organizationalUnitName},
	             {"E", NID_pkcs9_emailAddress},
	             {"C", NID_countryName},
	             {"S", NID_stateOrProvinceName},
	             {"ST", NID_stateOrProvinceName},
	             {"STREET", NID_streetAddress},
	             {"T", NID_title},
	             {"G", NID_givenName},
	             {"I", NID_initials},
	             {"SN", NID_surname},
	             {"DC", NID_domainComponent},
	             {"SERIALNUMBER", NID_serialNumber},
	             {"POSTALCODE", NID_postalCode}};

	out[0] = '\0';
	if (strncasecmp(type, "OID.", 4) == 0) {
		snprintf(out, cap, "%s", type + 4);
		return;
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcasecmp(type, names[i].name) == 0 &&
		    OBJ_obj2txt(out, (int)cap, OBJ_nid2obj(names[i].nid), 1) <= 0)
			out[0] = '\0';
}

/* Copies s[0..len) into out trimmed, unquoted, unescaped and with runs of
 * spaces collapsed (insignificant in X.500 names); false if it does not fit. */
static bool appx_norm_value(const char *s, size_t len, char *out, size_t cap)
{
	size_t w = 0;

	while (len > 0 && (*s == ' ' || *s == '\t'))
		s++, len--;
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (len >= 2 && s[0] == '"' && s[len - 1] == '"')
		s++, len -= 2;
	for (size_t i = 0; i < len; i++) {
		if ((s[i] == '\\' || (s[i] == '"' && i + 1 < len && s[i + 1] == '"')) &&
		    i + 1 < len)
			i++;
		else if (s[i] == ' ' && w > 0 && out[w - 1] == ' ')
			continue;
		if (w + 1 >= cap)
			return false;
		out[w++] = s[i];
	}
	out[w] = '\0';
	return true;
}

/* Splits a Publisher string ("CN=x, O=\"a, b\", C=US") into attributes. */
static size_t appx_parse_dn(const char *dn, struct appx_ava *out, size_t max)
{
	size_t n = 0;

	while (*dn != '\0') {
		const char *eq = strchr(dn, '='), *end = eq;
		bool quoted = false;
		char type[32];
		size_t tl;

		if (eq == NULL || n == max)
			return 0;
		for (end = eq + 1;
		     *end != '\0' && (quoted || (*end != ',' && *end != ';' && *end != '+'));
		     end++) {
			if (*end == '\\' && end[1] != '\0')
				end++;
			else if (*end == '"')
				quoted = !quoted;
		}
		while (*dn == ' ')
			dn++;
		tl = (size_t)(eq - dn);
		while (tl > 0 && dn[tl - 1] == ' ')
			tl--;
		if (tl == 0 || tl >= sizeof(type))
			return 0;
		memcpy(type, dn, tl);
		type[tl] = '\0';
		appx_publisher_type(type, out[n].type, sizeof(out[n].type));
		if (!appx_norm_value(eq + 1, (size_t)(end - eq - 1), out[n].value,
		                     sizeof(out[n].value)))
			return 0;
		n++;
		dn = *end != '\0' ? end + 1 : end;
	}
	return n;
}

/* The subject's attributes, most specific first as Windows prints them. */
static size_t appx_cert_dn(const X509_NAME *name, struct appx_ava *out, size_t max)
{
	int count = X509_NAME_entry_count(name);
	size_t n = 0;

	if (count < 0 || (size_t)count > max)
		return 0;
	for (int i = count - 1; i >= 0; i--) {
		const X509_NAME_ENTRY *ne = X509_NAME_get_entry(name, i);
		const ASN1_OBJECT *obj = X509_NAME_ENTRY_get_object(ne);
		unsigned char *utf8 = NULL;
		int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(ne));
		bool ok;

		if (len < 0)
			return 0;
		if (OBJ_obj2txt(out[n].type, sizeof(out[n].type), obj, 1) <= 0)
			out[n].type[0] = '\0'; /* matches no Publisher attribute */
		ok = appx_norm_value((const char *)utf8, (size_t)len, out[n].value,
		                     sizeof(out[n].value));
		OPENSSL_free(utf8);
		if (!ok)
			return 0;
		n++;
	}
	return n;
}

bool hs_appx_same_publisher(const char *publisher, const X509_NAME *subject)
{
	struct appx_ava a[16], b[16];
	size_t na = appx_parse_dn(publisher, a, 16), nb = appx_cert_dn(subject, b, 16);

	if (na == 0 || na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (a[i].type[0] == '\0' || strcmp(a[i].type, b[i].type) != 0 ||
		    strcasecmp(a[i].value, b[i].value) != 0)
			return false;
	return true;
}

/* Windows refuses to install a package whose manifest Publisher is not the
 * signer's subject, so signing one would only produce a broken package. */
static int appx_check_signer(struct hs_ctx *ctx, void *state, X509 *signer)
{
	struct appx_state *st = state;
	char *publisher = appx_xml_attr((const char *)st->manifest.data, "Identity", "Publisher");
	char subject[512] = "";
	BIO *bio = NULL;
	int r = 0;

	if (publisher == NULL)
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: the manifest has no Identity Publisher", st->in->path);
	appx_xml_unescape(publisher);
	if (hs_appx_same_publisher(publisher, X509_get_subject_name(signer)))
		goto out;
	if ((bio = BIO_new(BIO_s_mem())) != NULL &&
	    X509_NAME_print_ex(bio, X509_get_subject_name(signer), 0,
	                       (XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB & ~XN_FLAG_SEP_MASK) |
	                               XN_FLAG_SEP_CPLUS_SPC) >= 0)
		BIO_read(bio, subject, sizeof(subject) - 1);
	r = hs_error_set(ctx, HS_ERR_INVALID,
	                 "%s: manifest Publisher \"%.200s\" does not match the certificate subject "
	                 "\"%.200s\" (Windows would refuse to install the package)",
	                 st->in->path, publisher, subject);
out:
	BIO_free(bio);
	free(publisher);
	return r;
}

/* Windows reads one signature from AppxSignature.p7x: nothing to nest. */
static int appx_check_nesting(struct hs_ctx *ctx, void *state,
                              const struct hs_digest_params *primary, const EVP_MD *nested_md)
{
	(void)primary;
	(void)nested_md;
	return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
	                    "%s: APPX/MSIX packages carry one signature; nesting is not supported",
	                    ((struct appx_state *)state)->in->path);
}

const struct hs_format hs_format_appx = {
        .name = "appx",
        .probe = appx_probe,
        .open = appx_open,
        .is_signed = appx_is_signed,
        .digest = appx_digest,
        .embed = appx_embed,
        .extract = appx_extract,
        .remove = appx_remove,
        .close = appx_close,
        .probe_name = appx_probe_name,
        .check_nesting = appx_check_nesting,
        .check_signer = appx_check_signer,
        .digest_blob = true,
};
