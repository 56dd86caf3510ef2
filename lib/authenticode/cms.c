/*
 * cms.c - plain CMS SignedData for NuGet author signatures (cms.h).
 *
 * Built with the PKCS7 API like pkcs7.c: a SignedData version 1 with id-data
 * content is the same DER in PKCS#7 and CMS, and the PKCS7 API lets the key
 * provider sign the attributes' hash (CMS_sign() wants the private key).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ess.h>
#include <openssl/objects.h>
#include <openssl/pkcs7.h>
#include <openssl/x509v3.h>

#include "asn1.h"
#include "cms.h"
#include "pkcs7.h"
#include "formats/format.h"
#include "timestamp.h"

#define CMS_OID_TIMESTAMP_TOKEN "1.2.840.113549.1.9.16.2.14"
#define CMS_OID_COMMITMENT_TYPE "1.2.840.113549.1.9.16.2.16"

/* CommitmentTypeIndication { commitmentTypeId proofOfOrigin
 * (1.2.840.113549.1.9.16.6.1) }, as NuGet author signatures carry it. */
static const uint8_t cms_proof_of_origin[] = {0x30, 0x0D, 0x06, 0x0B, 0x2A, 0x86, 0x48, 0x86,
                                              0xF7, 0x0D, 0x01, 0x09, 0x10, 0x06, 0x01};

static int cms_add_seq_attr(struct hs_ctx *ctx, PKCS7_SIGNER_INFO *si, const char *oid,
                            const uint8_t *der, size_t len)
{
	ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
	int ok = obj != NULL && len <= INT32_MAX &&
	         X509at_add1_attr_by_OBJ(&si->auth_attr, obj, V_ASN1_SEQUENCE, der, (int)len);

	ASN1_OBJECT_free(obj);
	return ok ? 0 : hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot add signed attribute %s", oid);
}

/* signing-certificate-v2 naming the signer by SHA-256 hash and issuer/serial. */
static int cms_add_signing_cert(struct hs_ctx *ctx, PKCS7_SIGNER_INFO *si, X509 *signer)
{
	ESS_SIGNING_CERT_V2 *sc = OSSL_ESS_signing_cert_v2_new_init(EVP_sha256(), signer, NULL, 1);
	unsigned char *der = NULL;
	int len = sc != NULL ? i2d_ESS_SIGNING_CERT_V2(sc, &der) : -1, r;

	if (len <= 0)
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot build signing-certificate-v2");
	else
		r = cms_add_seq_attr(ctx, si, "1.2.840.113549.1.9.16.2.47", der, (size_t)len);
	OPENSSL_free(der);
	ESS_SIGNING_CERT_V2_free(sc);
	return r;
}

static int cms_signed_attrs(struct hs_ctx *ctx, PKCS7_SIGNER_INFO *si, X509 *signer,
                            const EVP_MD *md, const uint8_t *content, size_t len)
{
	uint8_t h[EVP_MAX_MD_SIZE];
	unsigned int h_len = 0;
	int r;

	if (!PKCS7_add_signed_attribute(si, NID_pkcs9_contentType, V_ASN1_OBJECT,
	                                OBJ_nid2obj(NID_pkcs7_data)) ||
	    !PKCS7_add0_attrib_signing_time(si, NULL) ||
	    !EVP_Digest(content, len, h, &h_len, md, NULL) ||
	    !PKCS7_add1_attrib_digest(si, h, (int)h_len))
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot add signed attributes");
	if ((r = cms_add_seq_attr(ctx, si, CMS_OID_COMMITMENT_TYPE, cms_proof_of_origin,
	                          sizeof(cms_proof_of_origin))) < 0)
		return r;
	return cms_add_signing_cert(ctx, si, signer);
}

/* sha256WithRSAEncryption-style pairs are not needed: rsaEncryption, or
 * ecdsa-with-<md> for EC keys. */
static int cms_sig_alg(struct hs_ctx *ctx, PKCS7_SIGNER_INFO *si, EVP_PKEY *pub, const EVP_MD *md)
{
	int sig_nid = NID_rsaEncryption, ptype = V_ASN1_NULL;

	if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC) {
		ptype = V_ASN1_UNDEF;
		if (!OBJ_find_sigid_by_algs(&sig_nid, EVP_MD_get_type(md),
		                            NID_X9_62_id_ecPublicKey))
			return hs_error_ssl(ctx, HS_ERR_CRYPTO,
			                    "no ECDSA algorithm for this digest");
	} else if (EVP_PKEY_get_base_id(pub) != EVP_PKEY_RSA) {
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "signing certificate key type is neither RSA nor EC");
	}
	if (!X509_ALGOR_set0(si->digest_enc_alg, OBJ_nid2obj(sig_nid), ptype, NULL))
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot set signature algorithm");
	return 0;
}

/* The id-data content and the chain without self-signed roots. */
static int cms_content_and_certs(struct hs_ctx *ctx, PKCS7 *p7, STACK_OF(X509) * chain,
                                 const uint8_t *content, size_t len)
{
	PKCS7 *inner = PKCS7_new();

	if (inner == NULL || !PKCS7_set_type(inner, NID_pkcs7_data) || len > INT32_MAX ||
	    !ASN1_OCTET_STRING_set(inner->d.data, content, (int)len) ||
	    !PKCS7_set_content(p7, inner)) {
		PKCS7_free(inner);
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot set SignedData content");
	}
	for (int i = 0; i < sk_X509_num(chain); i++) {
		X509 *x = sk_X509_value(chain, i);

		if (i > 0 && X509_check_issued(x, x) == X509_V_OK)
			continue; /* a root: the verifier must already trust it */
		if (!PKCS7_add_certificate(p7, x))
			return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot add certificate");
	}
	return 0;
}

static int cms_encode(struct hs_ctx *ctx, PKCS7 *p7, struct hs_buf *out)
{
	unsigned char *der = NULL;
	int len = i2d_PKCS7(p7, &der), r;

	if (len <= 0)
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot encode SignedData");
	r = hs_buf_append(out, der, (size_t)len);
	OPENSSL_free(der);
	return r < 0 ? hs_error_set(ctx, r, "out of memory") : 0;
}

int hs_cms_sign(struct hs_ctx *ctx, struct hs_key *key, const EVP_MD *md, const uint8_t *content,
                size_t len, struct hs_buf *out)
{
	X509 *signer = hs_key_signer(key);
	PKCS7 *p7 = PKCS7_new();
	PKCS7_SIGNER_INFO *si = PKCS7_SIGNER_INFO_new();
	int r;

	/* NuGet accepts only RSA keys of 2048 bits or more. */
	if (EVP_PKEY_get_base_id(X509_get0_pubkey(signer)) != EVP_PKEY_RSA ||
	    EVP_PKEY_get_bits(X509_get0_pubkey(signer)) < 2048) {
		r = hs_error_set(ctx, HS_ERR_INVALID,
		                 "NuGet signatures need an RSA key of 2048 bits or more");
		goto out;
	}
	if (p7 == NULL || si == NULL || !PKCS7_set_type(p7, NID_pkcs7_signed) ||
	    !PKCS7_SIGNER_INFO_set(si, signer, X509_get0_pubkey(signer), md)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot start SignedData");
		goto out;
	}
	if ((r = cms_sig_alg(ctx, si, X509_get0_pubkey(signer), md)) < 0 ||
	    (r = cms_signed_attrs(ctx, si, signer, md, content, len)) < 0 ||
	    (r = hs_p7_sign_attrs(ctx, key, si, md)) < 0)
		goto out;
	if (!PKCS7_add_signer(p7, si)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot add SignerInfo");
		goto out;
	}
	si = NULL; /* owned by p7 now */
	if ((r = cms_content_and_certs(ctx, p7, key->chain, content, len)) < 0)
		goto out;
	r = cms_encode(ctx, p7, out);
out:
	PKCS7_SIGNER_INFO_free(si);
	PKCS7_free(p7);
	return r;
}

/* The first SignerInfo of a DER SignedData with id-data content. */
static PKCS7 *cms_decode(const uint8_t *der, size_t len, PKCS7_SIGNER_INFO **si)
{
	const unsigned char *p = der;
	PKCS7 *p7 = len <= INT32_MAX ? d2i_PKCS7(NULL, &p, (long)len) : NULL;
	STACK_OF(PKCS7_SIGNER_INFO) * sis;

	if (p7 == NULL || p != der + len || !PKCS7_type_is_signed(p7) || p7->d.sign == NULL ||
	    p7->d.sign->contents == NULL || !PKCS7_type_is_data(p7->d.sign->contents) ||
	    p7->d.sign->contents->d.data == NULL || (sis = PKCS7_get_signer_info(p7)) == NULL ||
	    sk_PKCS7_SIGNER_INFO_num(sis) != 1) {
		PKCS7_free(p7);
		return NULL;
	}
	*si = sk_PKCS7_SIGNER_INFO_value(sis, 0);
	return p7;
}

/* Renames the unsigned attribute `from` to `to` (same value): the timestamp
 * code speaks Authenticode's OID, NuGet the standard one. */
static void cms_rename_attr(PKCS7_SIGNER_INFO *si, const char *from, const char *to)
{
	ASN1_OBJECT *obj = OBJ_txt2obj(to, 1);
	char text[64];

	for (int i = 0; obj != NULL && i < X509at_get_attr_count(si->unauth_attr); i++) {
		X509_ATTRIBUTE *a = X509at_get_attr(si->unauth_attr, i);

		if (OBJ_obj2txt(text, sizeof(text), X509_ATTRIBUTE_get0_object(a), 1) > 0 &&
		    strcmp(text, from) == 0)
			X509_ATTRIBUTE_set1_object(a, obj);
	}
	ASN1_OBJECT_free(obj);
}

/* der with its signer's timestamp attribute renamed from `from` to `to`. */
static int cms_retag(struct hs_ctx *ctx, const uint8_t *der, size_t len, const char *from,
                     const char *to, struct hs_buf *out)
{
	PKCS7_SIGNER_INFO *si = NULL;
	PKCS7 *p7 = cms_decode(der, len, &si);
	int r;

	if (p7 == NULL)
		return hs_error_ssl(ctx, HS_ERR_FORMAT, "not a CMS SignedData with one signer");
	cms_rename_attr(si, from, to);
	r = cms_encode(ctx, p7, out);
	PKCS7_free(p7);
	return r;
}

int hs_cms_timestamp(struct hs_ctx *ctx, const struct hs_timestamp_opts *opts, const uint8_t *der,
                     size_t len, struct hs_buf *out)
{
	struct hs_buf authenticode = {0}, stamped = {0};
	int r;

	if (opts->urls == NULL || opts->urls[0] == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "NuGet signatures take RFC 3161 timestamps only (-tr, not -t)");
	/* Under Authenticode's OID an existing timestamp gets replaced. */
	if ((r = cms_retag(ctx, der, len, CMS_OID_TIMESTAMP_TOKEN, HS_OID_SPC_RFC3161,
	                   &authenticode)) < 0 ||
	    (r = hs_ts_stamp_der(ctx, opts, authenticode.data, authenticode.len, 0, &stamped)) < 0)
		goto out;
	r = cms_retag(ctx, stamped.data, stamped.len, HS_OID_SPC_RFC3161, CMS_OID_TIMESTAMP_TOKEN,
	              out);
out:
	hs_buf_free(&authenticode);
	hs_buf_free(&stamped);
	return r;
}

/* ----------------------------------------------------------- verification */

struct cms_vfy {
	struct hs_ctx *ctx;
	struct hs_signature_info *info;
	PKCS7 *p7;
	PKCS7_SIGNER_INFO *si;
	X509 *signer;
	const EVP_MD *md;
	time_t ts_time;
	bool ts_valid;
};

/* Records a verdict; reasons are ours, so one line already. */
static int cms_reject(struct cms_vfy *v, enum hs_verify_status status, const char *reason)
{
	v->info->status = status;
	free(v->info->reason);
	v->info->reason = strdup(reason);
	return v->info->reason != NULL ? 1 : hs_error_set(v->ctx, HS_ERR_NOMEM, "out of memory");
}

/* A one-line name with control characters escaped. */
static char *cms_name(const X509_NAME *name)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *text = NULL;
	long n;

	if (bio != NULL && X509_NAME_print_ex(bio, name, 0, XN_FLAG_ONELINE) >= 0 &&
	    (n = BIO_get_mem_data(bio, &text)) >= 0)
		text = strndup(text, (size_t)(n > 512 ? 512 : n));
	else
		text = NULL;
	BIO_free(bio);
	return text;
}

/* Shape, digest algorithm and signer certificate. */
static int cms_vfy_shape(struct cms_vfy *v)
{
	STACK_OF(X509) * signers;
	int nid = OBJ_obj2nid(v->si->digest_alg->algorithm);

	v->md = hs_digest_md(hs_digest_from_nid(nid));
	v->info->digest = hs_digest_from_nid(nid);
	if (v->md == NULL || nid == NID_sha1)
		return cms_reject(v, HS_VERIFY_MALFORMED, "unsupported digest algorithm");
	signers = PKCS7_get0_signers(v->p7, NULL, 0);
	v->signer = sk_X509_value(signers, 0);
	sk_X509_free(signers);
	ERR_clear_error();
	if (v->signer == NULL)
		return cms_reject(v, HS_VERIFY_MALFORMED,
		                  "signer certificate not in the signature");
	v->info->subject = cms_name(X509_get_subject_name(v->signer));
	v->info->issuer = cms_name(X509_get_issuer_name(v->signer));
	return 0;
}

/* The signed text must be what the file gives now. */
static int cms_vfy_content(struct cms_vfy *v, const struct hs_format *fmt, void *state)
{
	struct hs_digest_params params = {.md = v->md};
	struct hs_indirect ind = {0};
	const ASN1_OCTET_STRING *content = v->p7->d.sign->contents->d.data;
	int r;

	if ((r = fmt->digest(v->ctx, state, &params, &ind, NULL)) < 0) {
		hs_indirect_free(&ind);
		return r == HS_ERR_NOMEM
		               ? r
		               : cms_reject(v, HS_VERIFY_MALFORMED, hs_ctx_message(v->ctx));
	}
	r = 0;
	if ((size_t)content->length != ind.content_der.len ||
	    memcmp(content->data, ind.content_der.data, ind.content_der.len) != 0)
		r = cms_reject(v, HS_VERIFY_DIGEST_MISMATCH,
		               "package hash does not match the signature (package modified after "
		               "signing)");
	hs_indirect_free(&ind);
	return r;
}

static const ASN1_TYPE *cms_attr(const STACK_OF(X509_ATTRIBUTE) * attrs, const char *oid, int type)
{
	ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
	int i = obj != NULL ? X509at_get_attr_by_OBJ(attrs, obj, -1) : -1;
	X509_ATTRIBUTE *a = i >= 0 ? X509at_get_attr(attrs, i) : NULL;

	ASN1_OBJECT_free(obj);
	if (a == NULL || X509_ATTRIBUTE_count(a) != 1)
		return NULL;
	return X509_ATTRIBUTE_get0_type(a, 0)->type == type ? X509_ATTRIBUTE_get0_type(a, 0) : NULL;
}

/* Verifies a signature over a digest (RSA PKCS#1 v1.5 or ECDSA). */
static bool cms_verify_digest(EVP_PKEY *pub, const EVP_MD *md, const uint8_t *h, size_t h_len,
                              const ASN1_OCTET_STRING *sig)
{
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(pub, NULL);
	bool ok = pc != NULL && sig != NULL && sig->length > 0 && EVP_PKEY_verify_init(pc) > 0 &&
	          EVP_PKEY_CTX_set_signature_md(pc, md) > 0 &&
	          EVP_PKEY_verify(pc, sig->data, (size_t)sig->length, h, h_len) == 1;

	EVP_PKEY_CTX_free(pc);
	return ok;
}

/* The signing-certificate-v2 attribute must name the signer (ESS). */
static int cms_vfy_signing_cert(struct cms_vfy *v, const ASN1_STRING *der)
{
	const unsigned char *p = der->data;
	ESS_SIGNING_CERT_V2 *sc = d2i_ESS_SIGNING_CERT_V2(NULL, &p, der->length);
	STACK_OF(X509) *chain = sk_X509_new_null();
	int ok = sc != NULL && chain != NULL && sk_X509_push(chain, v->signer) > 0 &&
	         OSSL_ESS_check_signing_certs(NULL, sc, chain, 1) > 0;

	sk_X509_free(chain);
	ESS_SIGNING_CERT_V2_free(sc);
	ERR_clear_error();
	return ok ? 0
	          : cms_reject(v, HS_VERIFY_BAD_SIGNATURE,
	                       "signing-certificate-v2 does not name the signer certificate");
}

/* messageDigest, the signature over the signed attributes, and the
 * signing-certificate-v2 binding the signer. */
static int cms_vfy_signature(struct cms_vfy *v)
{
	const ASN1_OCTET_STRING *content = v->p7->d.sign->contents->d.data;
	const ASN1_TYPE *md_attr =
	        cms_attr(v->si->auth_attr, "1.2.840.113549.1.9.4", V_ASN1_OCTET_STRING);
	const ASN1_TYPE *sc =
	        cms_attr(v->si->auth_attr, "1.2.840.113549.1.9.16.2.47", V_ASN1_SEQUENCE);
	uint8_t h[EVP_MAX_MD_SIZE];
	unsigned int h_len = 0;
	unsigned char *abuf = NULL;
	int alen, ok;

	if (md_attr == NULL ||
	    !EVP_Digest(content->data, (size_t)content->length, h, &h_len, v->md, NULL) ||
	    (unsigned)md_attr->value.octet_string->length != h_len ||
	    memcmp(md_attr->value.octet_string->data, h, h_len) != 0)
		return cms_reject(v, HS_VERIFY_BAD_SIGNATURE,
		                  "messageDigest does not match the content");
	alen = ASN1_item_i2d((ASN1_VALUE *)v->si->auth_attr, &abuf,
	                     ASN1_ITEM_rptr(PKCS7_ATTR_VERIFY));
	ok = alen > 0 && EVP_Digest(abuf, (size_t)alen, h, &h_len, v->md, NULL) &&
	     cms_verify_digest(X509_get0_pubkey(v->signer), v->md, h, h_len, v->si->enc_digest);
	OPENSSL_free(abuf);
	ERR_clear_error();
	if (!ok)
		return cms_reject(v, HS_VERIFY_BAD_SIGNATURE, "signature value does not verify");
	if (sc == NULL)
		return cms_reject(v, HS_VERIFY_MALFORMED, "no signing-certificate-v2 attribute");
	return cms_vfy_signing_cert(v, sc->value.sequence);
}

/* The RFC 3161 token in id-aa-signatureTimeStampToken, if any, checked by
 * the timestamp code (which reads it under Authenticode's OID). */
static int cms_vfy_timestamp(struct cms_vfy *v, X509_STORE *tsa_store)
{
	struct hs_ts_info ts = {0};
	int r;

	cms_rename_attr(v->si, CMS_OID_TIMESTAMP_TOKEN, HS_OID_SPC_RFC3161);
	if ((r = hs_ts_verify(v->ctx, tsa_store, v->p7, v->si, &ts)) < 0)
		return r;
	v->info->timestamp = ts.kind;
	if (ts.kind == 0)
		return 0;
	v->info->tsa_subject = ts.tsa_subject[0] != '\0' ? strdup(ts.tsa_subject) : NULL;
	v->info->tsa_digest = ts.digest[0] != '\0' ? strdup(ts.digest) : NULL;
	if (r == 1)
		return cms_reject(v, HS_VERIFY_BAD_TIMESTAMP, ts.reason);
	v->info->timestamp_time = strdup(ts.time_text);
	v->ts_valid = true;
	v->ts_time = ts.gen_time;
	return 0;
}

static enum hs_verify_status cms_chain_status(int err)
{
	switch (err) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return HS_VERIFY_EXPIRED;
	default:
		return HS_VERIFY_UNTRUSTED;
	}
}

/* The chain to a trusted root (at the timestamp's time when there is a
 * valid one) and the codeSigning EKU. */
static int cms_vfy_chain(struct cms_vfy *v, X509_STORE *store)
{
	X509_STORE_CTX *sc = X509_STORE_CTX_new();
	char reason[256];
	int ok, err;

	if (sc == NULL || !X509_STORE_CTX_init(sc, store, v->signer, v->p7->d.sign->cert)) {
		X509_STORE_CTX_free(sc);
		return hs_error_set(v->ctx, HS_ERR_NOMEM, "out of memory");
	}
	if (v->ts_valid)
		X509_STORE_CTX_set_time(sc, 0, v->ts_time);
	ok = X509_verify_cert(sc) == 1;
	err = X509_STORE_CTX_get_error(sc);
	X509_STORE_CTX_free(sc);
	ERR_clear_error();
	if (!ok) {
		snprintf(reason, sizeof(reason), "certificate chain: %s",
		         X509_verify_cert_error_string(err));
		return cms_reject(v, cms_chain_status(err), reason);
	}
	if (!(X509_get_extension_flags(v->signer) & EXFLAG_XKUSAGE) ||
	    !(X509_get_extended_key_usage(v->signer) & XKU_CODE_SIGN))
		return cms_reject(v, HS_VERIFY_NO_EKU, "signer lacks the codeSigning EKU");
	return 0;
}

int hs_cms_verify(struct hs_ctx *ctx, X509_STORE *store, X509_STORE *tsa_store,
                  const struct hs_format *fmt, void *state, const uint8_t *der, size_t len,
                  struct hs_signature_info *info)
{
	struct cms_vfy v = {.ctx = ctx, .info = info};
	int r;

	info->status = HS_VERIFY_OK;
	if ((v.p7 = cms_decode(der, len, &v.si)) == NULL) {
		ERR_clear_error();
		r = cms_reject(
		        &v, HS_VERIFY_MALFORMED,
		        "signature is not a CMS SignedData with one signer and id-data content");
		goto out;
	}
	if ((r = cms_vfy_shape(&v)) != 0 || (r = cms_vfy_content(&v, fmt, state)) != 0 ||
	    (r = cms_vfy_signature(&v)) != 0 || (r = cms_vfy_timestamp(&v, tsa_store)) != 0)
		goto out;
	r = cms_vfy_chain(&v, store);
out:
	PKCS7_free(v.p7);
	return r < 0 ? r : 0;
}
