/*
 * catalog.c - making catalogs and looking files up in them (authenticode.md
 * section 8). A catalog's CTL lists members:
 *
 *   CTL ::= SEQUENCE { SEQUENCE { catalogList 1.3.6.1.4.1.311.12.1.1 },
 *                      listIdentifier OCTET STRING, thisUpdate UTCTime,
 *                      SEQUENCE { memberAlgorithm (12.1.2 v1, 12.1.3 v2), NULL },
 *                      SEQUENCE OF Member }
 *   Member ::= SEQUENCE { tag OCTET STRING (the digest in upper-case hex,
 *                         UTF-16LE with a NUL), SET OF Attribute }
 *
 * as makecat writes them, with three attributes per member: the file name
 * (CAT_NAMEVALUE "File"), the subject interface package (CAT_MEMBERINFO)
 * and SpcIndirectDataContent carrying the digest. A member's digest is the
 * file's Authenticode digest when hsmsign knows its format (the SIP Windows
 * uses), else the hash of the whole file (the "flat" SIP).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/err.h>

#include "authenticode/asn1.h"
#include "core/codec.h"
#include "formats/catalog.h"
#include "formats/format.h"

#define CAT_MAX_MEMBERS 100000

/* DER contents of the OIDs used here. */
static const uint8_t oid_list[] = {0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x0c, 0x01, 0x01};
static const uint8_t oid_member_v1[] = {0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x0c, 0x01, 0x02};
static const uint8_t oid_member_v2[] = {0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x0c, 0x01, 0x03};
static const uint8_t oid_name_value[] = {0x2b, 0x06, 0x01, 0x04, 0x01,
                                         0x82, 0x37, 0x0c, 0x02, 0x01};
static const uint8_t oid_member_info[] = {0x2b, 0x06, 0x01, 0x04, 0x01,
                                          0x82, 0x37, 0x0c, 0x02, 0x02};
static const uint8_t oid_indirect[] = {0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x04};

/* SIP GUIDs named in CAT_MEMBERINFO for the formats without SpcSipInfo. */
#define CAT_SIP_PE   "{C689AAB8-8E78-11D0-8C47-00C04FC295EE}"
#define CAT_SIP_CAB  "{C689AABA-8E78-11D0-8C47-00C04FC295EE}"
#define CAT_SIP_FLAT "{DE351A42-8E59-11D0-8C47-00C04FC295EE}"

/* --- DER writing ------------------------------------------------------- */

/* Appends tag, definite length and contents. */
static int der_put(struct hs_buf *out, uint8_t tag, const void *c, size_t len)
{
	uint8_t hdr[6] = {tag};
	size_t n = 2;

	if (len < 0x80) {
		hdr[1] = (uint8_t)len;
	} else {
		size_t k = len > 0xffffff ? 4 : len > 0xffff ? 3 : len > 0xff ? 2 : 1;

		hdr[1] = (uint8_t)(0x80 | k);
		for (size_t i = 0; i < k; i++)
			hdr[2 + i] = (uint8_t)(len >> (8 * (k - 1 - i)));
		n += k;
	}
	if (hs_buf_append(out, hdr, n) < 0 || hs_buf_append(out, c, len) < 0)
		return HS_ERR_NOMEM;
	return 0;
}

/* Wraps buf's bytes in one TLV, in place. */
static int der_wrap(struct hs_buf *buf, uint8_t tag)
{
	struct hs_buf w = {0};
	int r = der_put(&w, tag, buf->data, buf->len);

	hs_buf_free(buf);
	*buf = w;
	return r;
}

/* UTF-8 text as UTF-16 (big-endian for BMPString, else little-endian). */
static int der_utf16(struct hs_buf *out, const char *text, bool little, bool nul)
{
	ASN1_STRING *s = NULL;
	int r = 0;

	if (ASN1_mbstring_copy(&s, (const unsigned char *)text, -1, MBSTRING_UTF8,
	                       B_ASN1_BMPSTRING) <= 0) {
		ERR_clear_error();
		return HS_ERR_INVALID;
	}
	for (int i = 0; r == 0 && i + 1 < s->length; i += 2) {
		uint8_t two[2] = {s->data[i + (little ? 1 : 0)], s->data[i + (little ? 0 : 1)]};

		r = hs_buf_append(out, two, 2);
	}
	if (r == 0 && nul)
		r = hs_buf_append(out, "\0\0", 2);
	ASN1_STRING_free(s);
	return r;
}

/* SEQUENCE { OID, SET { value } } */
static int der_attr(struct hs_buf *out, const uint8_t *oid, size_t oid_len, const struct hs_buf *v)
{
	struct hs_buf a = {0}, set = {0};
	int r;

	if ((r = der_put(&a, 0x06, oid, oid_len)) == 0 &&
	    (r = der_put(&set, 0x31, v->data, v->len)) == 0 &&
	    (r = hs_buf_append(&a, set.data, set.len)) == 0)
		r = der_put(out, 0x30, a.data, a.len);
	hs_buf_free(&a);
	hs_buf_free(&set);
	return r;
}

/* --- a member's digest ------------------------------------------------ */

struct cat_member {
	struct hs_indirect ind; /* digest and SpcIndirectDataContent data */
	char sip[40];           /* CAT_MEMBERINFO GUID text */
};

/* "{XXXXXXXX-XXXX-...}" from the 16 stored GUID bytes of an SpcSipInfo
 * (the OCTET STRING of 16 bytes after the type OID in data_der). */
static void cat_sip_guid(struct cat_member *m)
{
	const uint8_t *d = m->ind.data_der.data, *g = NULL;

	for (size_t i = 14; g == NULL && i + 18 <= m->ind.data_der.len; i++)
		if (d[i] == 0x04 && d[i + 1] == 0x10)
			g = d + i + 2;
	if (g == NULL) {
		snprintf(m->sip, sizeof(m->sip), "%s", CAT_SIP_FLAT);
		return;
	}
	snprintf(m->sip, sizeof(m->sip),
	         "{%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-%02X%02X%02X%02X%02X%02X}", g[3],
	         g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13],
	         g[14], g[15]);
}

/* The hash of the whole file (the flat SIP). */
static int cat_flat_digest(struct hs_ctx *ctx, const struct hs_file *f, const EVP_MD *md,
                           struct cat_member *m)
{
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	uint8_t *buf = malloc(HS_IO_CHUNK);
	unsigned int len = 0;
	size_t n;
	int r = 0;

	if (mc == NULL || buf == NULL || !EVP_DigestInit_ex(mc, md, NULL)) {
		r = hs_error_ssl(ctx, HS_ERR_NOMEM, "cannot start the digest");
		goto out;
	}
	for (uint64_t pos = 0; r == 0 && pos < f->size; pos += n) {
		n = f->size - pos < HS_IO_CHUNK ? (size_t)(f->size - pos) : HS_IO_CHUNK;
		if ((r = hs_file_pread(ctx, f, buf, n, pos)) == 0 && !EVP_DigestUpdate(mc, buf, n))
			r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "digest failed");
	}
	if (r == 0 && !EVP_DigestFinal_ex(mc, m->ind.digest, &len))
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "digest failed");
	m->ind.digest_len = len;
	if (r == 0)
		r = hs_spc_obsolete_link_data(ctx, &m->ind.data_der, HS_OID_SPC_CAB_DATA);
	snprintf(m->sip, sizeof(m->sip), "%s", CAT_SIP_FLAT);
out:
	free(buf);
	EVP_MD_CTX_free(mc);
	return r;
}

/* The digest Windows' SIP for the file computes: its format's as the file
 * stands, else flat. Catalogs listed in catalogs are flat files. */
static int cat_member_digest(struct hs_ctx *ctx, const char *path, const EVP_MD *md,
                             struct cat_member *m)
{
	struct hs_digest_params params = {.md = md, .as_is = 1};
	const struct hs_format *fmt = NULL;
	struct hs_file f;
	void *state = NULL;
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = hs_file_open(ctx, &f, path)) < 0)
		return r;
	/* Scripts are listed by the hash of their bytes, as makecat does
	 * (osslsigncode checks members that way, tests/files/unsigned.cat). */
	r = hs_format_detect(ctx, &f, &fmt);
	if (r == HS_ERR_FORMAT || fmt == &hs_format_cat || fmt == &hs_format_script) {
		hs_ctx_clear_error(ctx);
		r = cat_flat_digest(ctx, &f, md, m);
		goto out;
	}
	if (r < 0 || (r = fmt->open(ctx, &f, &state)) < 0 ||
	    (r = fmt->digest(ctx, state, &params, &m->ind, NULL)) < 0)
		goto out;
	if (fmt == &hs_format_pe)
		snprintf(m->sip, sizeof(m->sip), "%s", CAT_SIP_PE);
	else if (fmt == &hs_format_cab)
		snprintf(m->sip, sizeof(m->sip), "%s", CAT_SIP_CAB);
	else
		cat_sip_guid(m);
out:
	if (state != NULL)
		fmt->close(state);
	hs_file_close(&f);
	return r;
}

/* --- creating -------------------------------------------------------- */

/* The member tag: the digest in upper-case hex, UTF-16LE, NUL-ended. */
static int cat_tag(struct hs_buf *out, const struct cat_member *m)
{
	char hex[2 * EVP_MAX_MD_SIZE + 1];

	for (size_t i = 0; i < m->ind.digest_len; i++)
		snprintf(hex + 2 * i, 3, "%02X", m->ind.digest[i]);
	hex[2 * m->ind.digest_len] = '\0';
	return der_utf16(out, hex, true, true);
}

/* The three attribute values of a member, DER-encoded in `a` (3 bufs). */
static int cat_attr_values(struct hs_ctx *ctx, const struct cat_member *m, const char *name,
                           const EVP_MD *md, struct hs_buf v[3])
{
	static const uint8_t flags[] = {0x02, 0x04, 0x10, 0x01, 0x00, 0x01}; /* 0x10010001 */
	static const uint8_t version[] = {0x02, 0x02, 0x02, 0x00};           /* 512 */
	struct hs_buf s = {0};
	int r;

	if ((r = der_utf16(&s, "File", false, false)) == 0 &&
	    (r = der_put(&v[0], 0x1e, s.data, s.len)) == 0 &&
	    (r = hs_buf_append(&v[0], flags, sizeof(flags))) == 0) {
		s.len = 0;
		if ((r = der_utf16(&s, name, true, true)) == 0 &&
		    (r = der_put(&v[0], 0x04, s.data, s.len)) == 0)
			r = der_wrap(&v[0], 0x30);
	}
	s.len = 0;
	if (r == 0 && (r = der_utf16(&s, m->sip, false, false)) == 0 &&
	    (r = der_put(&v[1], 0x1e, s.data, s.len)) == 0 &&
	    (r = hs_buf_append(&v[1], version, sizeof(version))) == 0)
		r = der_wrap(&v[1], 0x30);
	hs_buf_free(&s);
	if (r < 0)
		return hs_error_set(ctx, r == HS_ERR_INVALID ? r : HS_ERR_NOMEM,
		                    "%s: cannot encode the member name", name);
	return hs_spc_indirect_build(ctx, &v[2], m->ind.data_der.data, m->ind.data_der.len, md,
	                             m->ind.digest, m->ind.digest_len);
}

static int cat_buf_cmp(const void *a, const void *b)
{
	const struct hs_buf *x = a, *y = b;
	int n = memcmp(x->data, y->data, x->len < y->len ? x->len : y->len);

	return n != 0 ? n : (x->len > y->len) - (x->len < y->len);
}

/* Member ::= SEQUENCE { tag, SET OF Attribute (DER-sorted) } */
static int cat_member_der(struct hs_ctx *ctx, const struct cat_member *m, const char *name,
                          const EVP_MD *md, struct hs_buf *out)
{
	struct hs_buf v[3] = {{0}}, a[3] = {{0}}, tag = {0}, body = {0};
	int r;

	if ((r = cat_attr_values(ctx, m, name, md, v)) < 0)
		goto out;
	if ((r = der_attr(&a[0], oid_name_value, sizeof(oid_name_value), &v[0])) < 0 ||
	    (r = der_attr(&a[1], oid_member_info, sizeof(oid_member_info), &v[1])) < 0 ||
	    (r = der_attr(&a[2], oid_indirect, sizeof(oid_indirect), &v[2])) < 0)
		goto nomem;
	qsort(a, 3, sizeof(a[0]), cat_buf_cmp);
	for (int i = 0; r == 0 && i < 3; i++)
		r = hs_buf_append(&body, a[i].data, a[i].len);
	if (r < 0 || (r = der_wrap(&body, 0x31)) < 0 || (r = cat_tag(&tag, m)) < 0 ||
	    (r = der_wrap(&tag, 0x04)) < 0 || (r = hs_buf_append(&tag, body.data, body.len)) < 0 ||
	    (r = der_put(out, 0x30, tag.data, tag.len)) < 0)
		goto nomem;
	goto out;
nomem:
	r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
out:
	for (int i = 0; i < 3; i++) {
		hs_buf_free(&v[i]);
		hs_buf_free(&a[i]);
	}
	hs_buf_free(&tag);
	hs_buf_free(&body);
	return r;
}

/* thisUpdate: now, or SOURCE_DATE_EPOCH for reproducible builds. */
static void cat_time(char out[64])
{
	const char *sde = getenv("SOURCE_DATE_EPOCH");
	time_t t = time(NULL);
	struct tm tm;
	char *end = NULL;

	if (sde != NULL) {
		long long v = strtoll(sde, &end, 10);

		if (end != sde && *end == '\0' && v >= 0)
			t = (time_t)v;
	}
	if (hs_os_gmtime((int64_t)t, &tm) < 0)
		memset(&tm, 0, sizeof(tm));
	/* UTCTime has a two-digit year (RFC 5280 4.1.2.5.1). */
	snprintf(out, 64, "%02d%02d%02d%02d%02d%02dZ", tm.tm_year % 100, tm.tm_mon + 1, tm.tm_mday,
	         tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* CTL header fields; the list identifier is derived from the members so
 * that the same files give the same catalog. */
static int cat_ctl_header(struct hs_buf *out, const struct hs_buf *members, bool v2)
{
	static const uint8_t null[] = {0x05, 0x00};
	uint8_t id[EVP_MAX_MD_SIZE];
	unsigned int id_len = 0;
	struct hs_buf seq = {0};
	char utc[64];
	int r;

	cat_time(utc);
	if (!EVP_Digest(members->data, members->len, id, &id_len, EVP_sha256(), NULL))
		return HS_ERR_CRYPTO;
	if ((r = der_put(&seq, 0x06, oid_list, sizeof(oid_list))) == 0 &&
	    (r = der_put(out, 0x30, seq.data, seq.len)) == 0 &&
	    (r = der_put(out, 0x04, id, 16)) == 0 &&
	    (r = der_put(out, 0x17, utc, strlen(utc))) == 0) {
		seq.len = 0;
		if ((r = der_put(&seq, 0x06, v2 ? oid_member_v2 : oid_member_v1,
		                 sizeof(oid_member_v1))) == 0 &&
		    (r = hs_buf_append(&seq, null, sizeof(null))) == 0)
			r = der_put(out, 0x30, seq.data, seq.len);
	}
	hs_buf_free(&seq);
	return r;
}

/* Appends one member per file to members (a SEQUENCE OF's contents). */
static int cat_add_members(struct hs_ctx *ctx, struct hs_buf *members, const char *const *files,
                           size_t n, const EVP_MD *md)
{
	struct cat_member m;
	int r = 0;

	for (size_t i = 0; r == 0 && i < n; i++) {
		const char *slash = strrchr(files[i], '/');

		if ((r = cat_member_digest(ctx, files[i], md, &m)) == 0)
			r = cat_member_der(ctx, &m, slash ? slash + 1 : files[i], md, members);
		hs_indirect_free(&m.ind);
	}
	return r;
}

int hs_catalog_create(struct hs_ctx *ctx, const char *output, const char *const *files,
                      size_t n_files, enum hs_digest digest)
{
	const EVP_MD *md = hs_digest_md(digest);
	struct hs_buf members = {0}, ctl = {0}, der = {0};
	struct hs_out out = {.fd = -1};
	int r;

	if (digest != HS_DIGEST_SHA1 && digest != HS_DIGEST_SHA256)
		return hs_error_set(ctx, HS_ERR_INVALID, "catalogs use sha1 (v1) or sha256 (v2)");
	if (n_files == 0 || n_files > CAT_MAX_MEMBERS || output == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID, "a catalog needs 1 to %d files",
		                    CAT_MAX_MEMBERS);
	if ((r = cat_add_members(ctx, &members, files, n_files, md)) < 0)
		goto out;
	if ((r = cat_ctl_header(&ctl, &members, digest == HS_DIGEST_SHA256)) < 0 ||
	    (r = der_put(&ctl, 0x30, members.data, members.len)) < 0 ||
	    (r = der_wrap(&ctl, 0x30)) < 0) {
		r = hs_error_set(ctx, r, "cannot encode the catalog");
		goto out;
	}
	if ((r = hs_cat_unsigned_der(ctx, ctl.data, ctl.len, &der)) < 0 ||
	    (r = hs_out_open(ctx, &out, output, 0644)) < 0 ||
	    (r = hs_out_write(ctx, &out, der.data, der.len)) < 0)
		goto out;
	r = hs_out_commit(ctx, &out);
out:
	hs_out_abort(&out);
	hs_buf_free(&members);
	hs_buf_free(&ctl);
	hs_buf_free(&der);
	return r;
}

/* --- looking up ------------------------------------------------------- */

/* Digests of the file computed so far, one per algorithm. */
struct cat_lookup {
	const char *file;
	struct cat_member m[4];
	int nid[4];
	int n;
};

/* Whether the SpcIndirectDataContent at [c, c+len) names the file. */
static int cat_member_matches(struct hs_ctx *ctx, struct cat_lookup *lk, const uint8_t *c,
                              size_t len, int *match)
{
	struct hs_spc_indirect spc;
	const EVP_MD *md;
	int i, r;

	if (hs_spc_indirect_parse(ctx, &spc, c, len) < 0) {
		hs_ctx_clear_error(ctx); /* not a member we can judge */
		return 0;
	}
	md = hs_digest_md(hs_digest_from_nid(spc.digest_nid));
	for (i = 0; i < lk->n && lk->nid[i] != spc.digest_nid; i++)
		;
	r = 0;
	if (md != NULL && i == lk->n && i < 4) {
		if ((r = cat_member_digest(ctx, lk->file, md, &lk->m[i])) == 0)
			lk->nid[lk->n++] = spc.digest_nid;
	}
	if (r == 0 && md != NULL && i < lk->n)
		*match = spc.digest_len == lk->m[i].ind.digest_len &&
		         memcmp(spc.digest, lk->m[i].ind.digest, spc.digest_len) == 0;
	hs_spc_indirect_free(&spc);
	return r;
}

/* Walks Member ::= SEQUENCE { tag, SET OF Attribute } for the indirect
 * data attribute. */
static int cat_member_lookup(struct hs_ctx *ctx, struct cat_lookup *lk,
                             const struct hs_der_item *mem, int *match)
{
	const uint8_t *p = mem->c, *end = mem->c + mem->len, *q;
	struct hs_der_item tag, set, attr, oid, vals, val;
	int r = 0;

	if (!hs_der_next(&p, end, &tag) || !hs_der_next(&p, end, &set) || set.tag != 0x31)
		return 0;
	for (p = set.c; r == 0 && !*match && hs_der_next(&p, set.c + set.len, &attr);) {
		q = attr.c;
		if (!hs_der_next(&q, attr.c + attr.len, &oid) || oid.tag != 0x06 ||
		    oid.len != sizeof(oid_indirect) || memcmp(oid.c, oid_indirect, oid.len) != 0 ||
		    !hs_der_next(&q, attr.c + attr.len, &vals))
			continue;
		q = vals.c;
		if (hs_der_next(&q, vals.c + vals.len, &val)) /* the TLV is [vals.c, q) */
			r = cat_member_matches(ctx, lk, vals.c, (size_t)(q - vals.c), match);
	}
	return r;
}

static int cat_lookup_ctl(struct hs_ctx *ctx, struct cat_lookup *lk, const ASN1_STRING *ctl,
                          int *listed)
{
	const uint8_t *p = ctl->data, *end = ctl->data + ctl->length;
	struct hs_der_item top, item, mem;
	int r = 0;

	if (!hs_der_next(&p, end, &top))
		return hs_error_set(ctx, HS_ERR_FORMAT, "malformed catalog CTL");
	p = top.c;
	/* An explicit version (INTEGER) may precede the five usual fields. */
	for (int i = 0; i < 5; i++) {
		if (!hs_der_next(&p, top.c + top.len, &item))
			return 0; /* no members */
		if (i == 0 && item.tag == 0x02)
			i--;
	}
	if (item.tag != 0x30)
		return hs_error_set(ctx, HS_ERR_FORMAT, "malformed catalog member list");
	for (p = item.c; r == 0 && !*listed && hs_der_next(&p, item.c + item.len, &mem);)
		if (mem.tag == 0x30)
			r = cat_member_lookup(ctx, lk, &mem, listed);
	return r;
}

int hs_catalog_lookup(struct hs_ctx *ctx, const char *catalog, const char *file, int *listed)
{
	struct cat_lookup lk = {.file = file};
	struct hs_buf raw = {0};
	const ASN1_STRING *ctl;
	PKCS7 *p7 = NULL;
	struct hs_file f;
	int r;

	*listed = 0;
	if ((r = hs_file_open(ctx, &f, catalog)) < 0)
		return r;
	if ((r = hs_cat_read(ctx, &f, &raw, &p7)) == 0) {
		ctl = hs_cat_ctl(ctx, p7, catalog);
		r = ctl == NULL ? HS_ERR_FORMAT : cat_lookup_ctl(ctx, &lk, ctl, listed);
	}
	for (int i = 0; i < lk.n; i++)
		hs_indirect_free(&lk.m[i].ind);
	PKCS7_free(p7);
	hs_buf_free(&raw);
	hs_file_close(&f);
	return r;
}
