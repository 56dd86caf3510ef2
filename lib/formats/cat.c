/*
 * cat.c - catalog files (.cat, authenticode.md section 8). A catalog is a
 * DER ContentInfo(SignedData) whose content is a certificate trust list
 * (CTL, 1.3.6.1.4.1.311.10.1) naming files by hash. Signing keeps the CTL
 * byte for byte and replaces the SignedData around it: the engine signs
 * the content this format hands over (hs_indirect.content_der) instead of
 * an SpcIndirectDataContent, and the whole file is the new signature.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pkcs7.h>

#include "authenticode/asn1.h"
#include "formats/catalog.h"
#include "formats/format.h"

struct cat_state {
	struct hs_file in; /* copy of the caller's; fd and path stay theirs */
	struct hs_buf raw; /* the whole file */
	PKCS7 *p7;
	const ASN1_STRING *ctl; /* full DER of the CTL, inside p7 */
	bool copied;
};

/* "30 LEN 06 09 <signedData>" and the CTL content type early on. */
static bool cat_probe(const uint8_t *head, size_t len)
{
	static const uint8_t signed_data[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
	                                      0xf7, 0x0d, 0x01, 0x07, 0x02};
	static const uint8_t ctl[] = {0x06, 0x09, 0x2b, 0x06, 0x01, 0x04,
	                              0x01, 0x82, 0x37, 0x0a, 0x01};
	size_t hdr, window = len < 128 ? len : 128;

	if (len < 2 || head[0] != 0x30)
		return false;
	hdr = head[1] < 0x80 ? 2 : 2 + (size_t)(head[1] & 0x7f);
	if (hdr + sizeof(signed_data) > len ||
	    memcmp(head + hdr, signed_data, sizeof(signed_data)) != 0)
		return false;
	for (size_t i = hdr; i + sizeof(ctl) <= window; i++)
		if (memcmp(head + i, ctl, sizeof(ctl)) == 0)
			return true;
	return false;
}

/* The CTL of a parsed catalog: SignedData whose content is a definite-
 * length CTL SEQUENCE. NULL (message set) otherwise. */
const ASN1_STRING *hs_cat_ctl(struct hs_ctx *ctx, const PKCS7 *p7, const char *path)
{
	const PKCS7 *inner;
	char oid[64] = "";
	const uint8_t *c;
	size_t clen;

	if (!PKCS7_type_is_signed(p7) || p7->d.sign == NULL || p7->d.sign->contents == NULL) {
		hs_error_set(ctx, HS_ERR_FORMAT, "%s: catalog is not PKCS#7 SignedData", path);
		return NULL;
	}
	inner = p7->d.sign->contents;
	OBJ_obj2txt(oid, sizeof(oid), inner->type, 1);
	if (strcmp(oid, HS_OID_CTL) != 0 || inner->d.other == NULL ||
	    inner->d.other->type != V_ASN1_SEQUENCE || inner->d.other->value.sequence == NULL) {
		hs_error_set(ctx, HS_ERR_FORMAT, "%s: catalog content is not a CTL", path);
		return NULL;
	}
	if (hs_der_contents(ctx, inner->d.other->value.sequence->data,
	                    (size_t)inner->d.other->value.sequence->length, &c, &clen) < 0)
		return NULL;
	return inner->d.other->value.sequence;
}

int hs_cat_read(struct hs_ctx *ctx, const struct hs_file *in, struct hs_buf *raw, PKCS7 **p7)
{
	const unsigned char *p;
	int r;

	*p7 = NULL;
	if (in->size > HS_CAT_MAX_SIZE)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED, "%s: catalog larger than %u bytes",
		                    in->path, HS_CAT_MAX_SIZE);
	if (hs_buf_reserve(raw, (size_t)in->size + 1) < 0)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = hs_file_pread(ctx, in, raw->data, (size_t)in->size, 0)) < 0)
		return r;
	raw->len = (size_t)in->size;
	p = raw->data;
	*p7 = d2i_PKCS7(NULL, &p, (long)raw->len);
	if (*p7 == NULL || p != raw->data + raw->len) {
		ERR_clear_error();
		PKCS7_free(*p7);
		*p7 = NULL;
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: catalog is not exactly one DER PKCS#7 structure",
		                    in->path);
	}
	return 0;
}

static void cat_close(void *state)
{
	struct cat_state *st = state;

	if (st == NULL)
		return;
	PKCS7_free(st->p7);
	hs_buf_free(&st->raw);
	free(st);
}

static int cat_open(struct hs_ctx *ctx, const struct hs_file *in, void **state)
{
	struct cat_state *st = calloc(1, sizeof(*st));
	int r;

	*state = NULL;
	if (st == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	st->in = *in;
	if ((r = hs_cat_read(ctx, in, &st->raw, &st->p7)) < 0)
		goto fail;
	if ((st->ctl = hs_cat_ctl(ctx, st->p7, in->path)) == NULL) {
		r = HS_ERR_FORMAT;
		goto fail;
	}
	*state = st;
	return 0;
fail:
	cat_close(st);
	return r;
}

static bool cat_is_signed(void *state)
{
	const struct cat_state *st = state;

	return sk_PKCS7_SIGNER_INFO_num(st->p7->d.sign->signer_info) > 0;
}

/* The content to sign is the CTL itself; its "digest" is what
 * messageDigest will hold: H(contents octets of the CTL). Nothing of the
 * old file survives into the output but the CTL, which embed() writes. */
static int cat_digest(struct hs_ctx *ctx, void *state, const struct hs_digest_params *params,
                      struct hs_indirect *out, struct hs_out *copy)
{
	struct cat_state *st = state;
	const uint8_t *c;
	size_t clen;
	unsigned int len = 0;
	int r;

	hs_indirect_free(out);
	if ((r = hs_der_contents(ctx, st->ctl->data, (size_t)st->ctl->length, &c, &clen)) < 0)
		return r;
	if (!EVP_Digest(c, clen, out->digest, &len, params->md, NULL))
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "%s: digest failed", st->in.path);
	out->digest_len = len;
	if (hs_buf_append(&out->content_der, st->ctl->data, (size_t)st->ctl->length) < 0)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	out->content_oid = HS_OID_CTL;
	st->copied = copy != NULL;
	return 0;
}

/* The new SignedData is the whole catalog. */
static int cat_embed(struct hs_ctx *ctx, void *state, const uint8_t *pkcs7, size_t len,
                     struct hs_out *out)
{
	struct cat_state *st = state;

	if (!st->copied || out->size != 0)
		return hs_error_set(ctx, HS_ERR_INVALID, "internal: catalog embed out of order");
	st->copied = false;
	return hs_out_write(ctx, out, pkcs7, len);
}

static int cat_extract(struct hs_ctx *ctx, void *state, struct hs_buf *out)
{
	const struct cat_state *st = state;

	if (!cat_is_signed(state))
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", st->in.path);
	if (hs_buf_append(out, st->raw.data, st->raw.len) < 0)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	return 0;
}

int hs_cat_unsigned_der(struct hs_ctx *ctx, const uint8_t *ctl, size_t len, struct hs_buf *out)
{
	PKCS7 *p7 = PKCS7_new(), *inner = PKCS7_new();
	ASN1_STRING *seq = ASN1_STRING_new();
	unsigned char *der = NULL;
	int der_len = 0, r = 0;

	if (p7 == NULL || inner == NULL || seq == NULL || len > INT32_MAX ||
	    !PKCS7_set_type(p7, NID_pkcs7_signed) || !ASN1_STRING_set(seq, ctl, (int)len) ||
	    (inner->type = OBJ_txt2obj(HS_OID_CTL, 1)) == NULL ||
	    (inner->d.other = ASN1_TYPE_new()) == NULL)
		goto fail;
	ASN1_TYPE_set(inner->d.other, V_ASN1_SEQUENCE, seq);
	seq = NULL;
	if (!PKCS7_set_content(p7, inner))
		goto fail;
	inner = NULL;
	if ((der_len = i2d_PKCS7(p7, &der)) <= 0)
		goto fail;
	if (hs_buf_append(out, der, (size_t)der_len) < 0)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	goto out;
fail:
	r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot encode an unsigned catalog");
out:
	OPENSSL_free(der);
	ASN1_STRING_free(seq);
	PKCS7_free(inner);
	PKCS7_free(p7);
	return r;
}

/* An unsigned catalog around the same CTL. */
static int cat_remove(struct hs_ctx *ctx, void *state, struct hs_out *out)
{
	const struct cat_state *st = state;
	struct hs_buf der = {0};
	int r;

	if (!cat_is_signed(state))
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", st->in.path);
	if ((r = hs_cat_unsigned_der(ctx, st->ctl->data, (size_t)st->ctl->length, &der)) == 0)
		r = hs_out_write(ctx, out, der.data, der.len);
	hs_buf_free(&der);
	return r;
}

/* A catalog carries one signature: Windows and osslsigncode do not nest
 * signatures in catalogs (authenticode.md 4). */
static int cat_check_nesting(struct hs_ctx *ctx, void *state,
                             const struct hs_digest_params *primary, const EVP_MD *nested_md)
{
	(void)state;
	(void)primary;
	(void)nested_md;
	return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
	                    "catalogs cannot carry nested signatures (--append-signature, dual "
	                    "digests)");
}

const struct hs_format hs_format_cat = {
        .name = "cat",
        .probe = cat_probe,
        .open = cat_open,
        .is_signed = cat_is_signed,
        .digest = cat_digest,
        .embed = cat_embed,
        .extract = cat_extract,
        .remove = cat_remove,
        .close = cat_close,
        .check_nesting = cat_check_nesting,
};
