/*
 * pkcs7.c - Authenticode SignedData assembly with OpenSSL's PKCS7 types.
 * The CMS API is not used: it wraps content in an OCTET STRING and emits
 * version 3, which Windows rejects (authenticode.md 2.3).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "asn1.h"
#include "pkcs7.h"

/* SEQUENCE OF OID { individualCodeSigning }, as signtool writes it. */
static const uint8_t statement_individual[] = {0x30, 0x0c, 0x06, 0x0a, 0x2b, 0x06, 0x01,
                                               0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x15};

/* Adds an attribute whose single value is the DER SEQUENCE given. */
static int add_seq_attr(struct hs_ctx *ctx, PKCS7_SIGNER_INFO *si, const char *oid,
                        const uint8_t *der, size_t len)
{
	ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
	int ok = obj != NULL && len <= INT32_MAX &&
	         X509at_add1_attr_by_OBJ(&si->auth_attr, obj, V_ASN1_SEQUENCE, der, (int)len);

	ASN1_OBJECT_free(obj);
	return ok ? 0 : hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot add signed attribute %s", oid);
}

/* The signed content's type: SpcIndirectDataContent unless the format
 * signs content of its own (catalogs). */
static const char *p7_content_oid(const struct hs_p7_params *p)
{
	return p->content_oid != NULL ? p->content_oid : HS_OID_SPC_INDIRECT_DATA;
}

/* contentType, statement type, opus info and messageDigest (2.2, 2.3). */
static int add_signed_attrs(struct hs_ctx *ctx, PKCS7_SIGNER_INFO *si, const struct hs_p7_params *p)
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	struct hs_buf opus = {0};
	const uint8_t *content;
	size_t content_len;
	int r;

	if (!PKCS7_add_signed_attribute(si, NID_pkcs9_contentType, V_ASN1_OBJECT,
	                                OBJ_txt2obj(p7_content_oid(p), 1)))
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot add contentType");
	if ((r = add_seq_attr(ctx, si, HS_OID_SPC_STATEMENT_TYPE, statement_individual,
	                      sizeof(statement_individual))) < 0)
		return r;
	if ((r = hs_spc_opus_info_build(ctx, &opus, p->description, p->url)) < 0)
		return r;
	r = add_seq_attr(ctx, si, HS_OID_SPC_SP_OPUS_INFO, opus.data, opus.len);
	hs_buf_free(&opus);
	if (r < 0)
		return r;
	/* messageDigest covers the contents octets only (RFC 2315 9.3). */
	if ((r = hs_der_contents(ctx, p->spc_der, p->spc_len, &content, &content_len)) < 0)
		return r;
	if (!EVP_Digest(content, content_len, md, &md_len, p->md, NULL) ||
	    !PKCS7_add1_attrib_digest(si, md, (int)md_len))
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot add messageDigest");
	return 0;
}

/* Sets digestEncryptionAlgorithm: rsaEncryption (what signtool writes) or
 * ecdsa-with-<md>. */
static int set_sig_alg(struct hs_ctx *ctx, PKCS7_SIGNER_INFO *si, EVP_PKEY *pub, const EVP_MD *md)
{
	int sig_nid;

	if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA) {
		if (X509_ALGOR_set0(si->digest_enc_alg, OBJ_nid2obj(NID_rsaEncryption), V_ASN1_NULL,
		                    NULL))
			return 0;
	} else if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC) {
		if (OBJ_find_sigid_by_algs(&sig_nid, EVP_MD_get_type(md),
		                           NID_X9_62_id_ecPublicKey) &&
		    X509_ALGOR_set0(si->digest_enc_alg, OBJ_nid2obj(sig_nid), V_ASN1_UNDEF, NULL))
			return 0;
	} else {
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "signing certificate key type is neither RSA nor EC");
	}
	return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot set signature algorithm");
}

/* Sorting by DER bytes (shorter first on a common prefix), as Windows
 * expects for the certificates SET (KB4580358; authenticode.md 2.5). */
struct der_cert {
	X509 *x;
	unsigned char *der;
	int len;
};

static int der_cert_cmp(const void *a, const void *b)
{
	const struct der_cert *x = a, *y = b;
	int n = memcmp(x->der, y->der, (size_t)(x->len < y->len ? x->len : y->len));

	return n != 0 ? n : x->len - y->len;
}

/* A root (self-issued and self-signed) is not embedded: the verifier must
 * already trust it. */
static int is_root(X509 *x)
{
	return X509_check_issued(x, x) == X509_V_OK && X509_verify(x, X509_get0_pubkey(x)) == 1;
}

static int add_certs(struct hs_ctx *ctx, PKCS7 *p7, STACK_OF(X509) * chain)
{
	int n = sk_X509_num(chain), k = 0, r = 0;
	struct der_cert *certs = calloc((size_t)n, sizeof(*certs));

	if (certs == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	for (int i = 0; i < n; i++) {
		X509 *x = sk_X509_value(chain, i);

		if (i > 0 && is_root(x))
			continue;
		certs[k].x = x;
		certs[k].len = i2d_X509(x, &certs[k].der);
		if (certs[k++].len <= 0) {
			r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot encode certificate");
			goto out;
		}
	}
	ERR_clear_error();
	qsort(certs, (size_t)k, sizeof(*certs), der_cert_cmp);
	for (int i = 0; i < k; i++) {
		if (i > 0 && der_cert_cmp(&certs[i - 1], &certs[i]) == 0)
			continue; /* duplicate */
		if (!PKCS7_add_certificate(p7, certs[i].x)) {
			r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot add certificate");
			goto out;
		}
	}
out:
	for (int i = 0; i < k; i++)
		OPENSSL_free(certs[i].der);
	free(certs);
	return r;
}

/* Sets the signed content: SpcIndirectDataContent as a SEQUENCE. */
static int set_content(struct hs_ctx *ctx, PKCS7 *p7, const struct hs_p7_params *p)
{
	PKCS7 *inner = PKCS7_new();
	ASN1_STRING *seq = ASN1_STRING_new();

	if (inner == NULL || seq == NULL || p->spc_len > INT32_MAX ||
	    !ASN1_STRING_set(seq, p->spc_der, (int)p->spc_len))
		goto fail;
	inner->type = OBJ_txt2obj(p7_content_oid(p), 1);
	inner->d.other = ASN1_TYPE_new();
	if (inner->type == NULL || inner->d.other == NULL)
		goto fail;
	ASN1_TYPE_set(inner->d.other, V_ASN1_SEQUENCE, seq);
	seq = NULL;
	if (!PKCS7_set_content(p7, inner))
		goto fail;
	return 0;
fail:
	ASN1_STRING_free(seq);
	PKCS7_free(inner);
	return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot set SignedData content");
}

int hs_p7_sign_attrs(struct hs_ctx *ctx, struct hs_key *key, PKCS7_SIGNER_INFO *si,
                     const EVP_MD *md)
{
	unsigned char *abuf = NULL;
	uint8_t h[EVP_MAX_MD_SIZE];
	unsigned int h_len = 0;
	struct hs_buf sig = {0};
	int alen, r;

	/* PKCS7_ATTR_SIGN encodes a DER-sorted SET and reorders the stack to
	 * match, so the later i2d_PKCS7 emits exactly the bytes signed. */
	alen = ASN1_item_i2d((ASN1_VALUE *)si->auth_attr, &abuf, ASN1_ITEM_rptr(PKCS7_ATTR_SIGN));
	if (alen <= 0 || !EVP_Digest(abuf, (size_t)alen, h, &h_len, md, NULL)) {
		OPENSSL_free(abuf);
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot hash signed attributes");
	}
	OPENSSL_free(abuf);
	if (hs_fault("sign"))
		return hs_error_set(ctx, HS_ERR_CRYPTO, "injected fault before signing");
	if ((r = hs_key_sign_digest(ctx, key, md, h, h_len, &sig)) < 0)
		goto out;
	if (sig.len > INT32_MAX || !ASN1_STRING_set(si->enc_digest, sig.data, (int)sig.len))
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
out:
	hs_buf_free(&sig);
	return r;
}

static int encode(struct hs_ctx *ctx, PKCS7 *p7, struct hs_buf *out)
{
	unsigned char *der = NULL;
	int len = i2d_PKCS7(p7, &der);
	int r;

	if (len <= 0)
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot encode SignedData");
	r = hs_buf_append(out, der, (size_t)len);
	OPENSSL_free(der);
	return r < 0 ? hs_error_set(ctx, r, "out of memory") : 0;
}

int hs_p7_sign(struct hs_ctx *ctx, struct hs_key *key, const struct hs_p7_params *params,
               struct hs_buf *out)
{
	X509 *signer = hs_key_signer(key);
	PKCS7 *p7 = PKCS7_new();
	PKCS7_SIGNER_INFO *si = PKCS7_SIGNER_INFO_new();
	int r;

	if (p7 == NULL || si == NULL || !PKCS7_set_type(p7, NID_pkcs7_signed) ||
	    !PKCS7_SIGNER_INFO_set(si, signer, X509_get0_pubkey(signer), params->md)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot start SignedData");
		goto out;
	}
	if ((r = set_sig_alg(ctx, si, X509_get0_pubkey(signer), params->md)) < 0 ||
	    (r = add_signed_attrs(ctx, si, params)) < 0 ||
	    (r = hs_p7_sign_attrs(ctx, key, si, params->md)) < 0)
		goto out;
	if (!PKCS7_add_signer(p7, si)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot add SignerInfo");
		goto out;
	}
	si = NULL; /* owned by p7 now */
	if ((r = set_content(ctx, p7, params)) < 0 || (r = add_certs(ctx, p7, key->chain)) < 0)
		goto out;
	r = encode(ctx, p7, out);
out:
	PKCS7_SIGNER_INFO_free(si);
	PKCS7_free(p7);
	return r;
}
