/*
 * verify.c - verifies the Authenticode signatures of a file: PKCS#7
 * structure, file digest and page hashes, messageDigest, signature value,
 * codeSigning EKU and certificate chain, for the primary signature and for
 * each signature nested in it (authenticode.md sections 2, 4 and 10).
 *
 * A check that finds a problem records a verdict in the signature's entry
 * and returns VFY_REJECTED; negative returns are errors that stop the whole
 * verification (out of memory, I/O, bad trust store).
 */
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pkcs7.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "authenticode/asn1.h"
#include "authenticode/timestamp.h"
#include "core/core.h"
#include "core/file.h"
#include "cms.h"
#include "formats/format.h"

#define VFY_REJECTED 1

/* Nested signatures examined; real files carry one or two, a hostile one
 * could carry thousands, each costing a chain build. */
#define VFY_MAX_NESTED 16

/* Longest subject, issuer or reason kept, so hostile names stay short. */
#define VFY_TEXT_MAX 512

/* WIN_CERTIFICATE pads its PKCS#7 to 8 bytes; more trailing bytes are the
 * extraneous data of CVE-2013-3900 (authenticode.md 10.4). */
#define VFY_MAX_PAD 7

/* One file digest per (digest, page hash digest) pair: each algorithm is
 * hashed once even when several signatures use it. 4 digests x 3 page hash
 * choices bound the number of entries. */
#define VFY_MAX_DIGESTS 12

struct vfy_digest {
	int md_nid;
	int page_hash_nid;
	struct hs_indirect ind;
};

/* State of one hs_verify_file() call. */
struct vfy {
	struct hs_ctx *ctx;
	const struct hs_format *fmt;
	void *state; /* the format's, NULL until opened */
	X509_STORE *store;
	X509_STORE *tsa_store; /* roots for timestamp authorities, loaded on first use */
	const char *tsa_ca_file;
	struct vfy_digest digests[VFY_MAX_DIGESTS];
	size_t n_digests;
	struct hs_verify_result *result;
	size_t cap;        /* entries allocated in result->sigs */
	int text_encoding; /* scripts: hs_verify_opts.script_encoding */
};

/* One SignedData being verified. p7 owns everything the pointers borrow. */
struct vfy_sig {
	const uint8_t *der;
	size_t der_len;
	struct hs_signature_info *info;
	PKCS7 *p7;
	PKCS7_SIGNER_INFO *si;
	const ASN1_STRING *content; /* full DER of SpcIndirectDataContent */
	struct hs_spc_indirect spc;
	const EVP_MD *signer_md;
	bool ctl;      /* a catalog: the content is the CTL, not SpcIndirectDataContent */
	bool ts_valid; /* a valid timestamp: judge the chain at ts_time */
	time_t ts_time;
	X509 *signer;
};

const char *hs_verify_status_name(enum hs_verify_status status)
{
	switch (status) {
	case HS_VERIFY_OK:
		return "ok";
	case HS_VERIFY_NO_SIGNATURE:
		return "no signature";
	case HS_VERIFY_MALFORMED:
		return "malformed";
	case HS_VERIFY_DIGEST_MISMATCH:
		return "digest mismatch";
	case HS_VERIFY_BAD_SIGNATURE:
		return "bad signature";
	case HS_VERIFY_UNTRUSTED:
		return "untrusted";
	case HS_VERIFY_EXPIRED:
		return "expired";
	case HS_VERIFY_NO_EKU:
		return "missing codeSigning EKU";
	case HS_VERIFY_BAD_TIMESTAMP:
		return "bad timestamp";
	}
	return "unknown";
}

void hs_verify_result_free(struct hs_verify_result *result)
{
	if (result == NULL)
		return;
	for (size_t i = 0; i < result->count; i++) {
		free(result->sigs[i].subject);
		free(result->sigs[i].issuer);
		free(result->sigs[i].reason);
		free(result->sigs[i].timestamp_time);
		free(result->sigs[i].tsa_subject);
		free(result->sigs[i].tsa_digest);
	}
	free(result->sigs);
	free(result);
}

/* A copy of s[0..len) cut to VFY_TEXT_MAX with control bytes replaced, so
 * text taken from a hostile file stays one printable line. */
static char *vfy_text(const char *s, size_t len)
{
	char *copy;

	if (len >= VFY_TEXT_MAX)
		len = VFY_TEXT_MAX - 1;
	copy = malloc(len + 1);
	if (copy == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		copy[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	copy[len] = '\0';
	return copy;
}

/* Records why a signature failed. The first verdict wins: later checks
 * never run after a rejection, but nested entries share this path. */
static int vfy_reject(struct vfy *v, struct hs_signature_info *info, enum hs_verify_status status,
                      const char *fmt, ...) HS_PRINTF(4, 5);

static int vfy_reject(struct vfy *v, struct hs_signature_info *info, enum hs_verify_status status,
                      const char *fmt, ...)
{
	char line[VFY_TEXT_MAX];
	va_list ap;

	/* Queued OpenSSL errors belong to this verdict, not to a later one. */
	ERR_clear_error();
	if (info->status != HS_VERIFY_OK)
		return VFY_REJECTED;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	info->status = status;
	info->reason = vfy_text(line, strlen(line));
	if (info->reason == NULL)
		return hs_error_set(v->ctx, HS_ERR_NOMEM, "out of memory");
	return VFY_REJECTED;
}

/* Like vfy_reject() with ": <first queued OpenSSL error>" appended. */
static int vfy_reject_ssl(struct vfy *v, struct hs_signature_info *info,
                          enum hs_verify_status status, const char *what)
{
	char ssl[256] = "unknown OpenSSL error";
	unsigned long e = ERR_peek_error();

	if (e != 0)
		ERR_error_string_n(e, ssl, sizeof(ssl));
	return vfy_reject(v, info, status, "%s: %s", what, ssl);
}

/* Errors that mean "the input is bad" become a verdict carrying the
 * context's message; anything else (memory, I/O) stays an error. */
static int vfy_reject_ctx(struct vfy *v, struct hs_signature_info *info, int r)
{
	char msg[HS_MSG_MAX];

	if (r != HS_ERR_FORMAT && r != HS_ERR_UNSUPPORTED && r != HS_ERR_NOTFOUND)
		return r;
	snprintf(msg, sizeof(msg), "%s", hs_ctx_message(v->ctx));
	hs_ctx_clear_error(v->ctx);
	if (msg[0] == '\0')
		snprintf(msg, sizeof(msg), "%s", hs_strerror(r));
	return vfy_reject(v, info, HS_VERIFY_MALFORMED, "%s", msg);
}

static int vfy_result_new(struct vfy *v)
{
	v->result = calloc(1, sizeof(*v->result));
	v->cap = 1 + VFY_MAX_NESTED;
	if (v->result != NULL)
		v->result->sigs = calloc(v->cap, sizeof(*v->result->sigs));
	if (v->result == NULL || v->result->sigs == NULL)
		return hs_error_set(v->ctx, HS_ERR_NOMEM, "out of memory");
	return 0;
}

/* Appends an entry (status OK until a check rejects it). The array is
 * allocated once, so *out stays valid while nested entries are added. */
static int vfy_add_entry(struct vfy *v, unsigned depth, struct hs_signature_info **out)
{
	struct hs_signature_info *info;

	*out = NULL; /* also tells -O3's flow analysis that *out is always set */
	if (v->result->count >= v->cap)
		return hs_error_set(v->ctx, HS_ERR_INVALID, "internal: too many signature entries");
	info = &v->result->sigs[v->result->count++];
	memset(info, 0, sizeof(*info));
	info->depth = depth;
	*out = info;
	return 0;
}

static bool vfy_oid_is(const ASN1_OBJECT *obj, const char *dotted)
{
	char text[80];
	int n;

	if (obj == NULL)
		return false;
	n = OBJ_obj2txt(text, sizeof(text), obj, 1);
	return n > 0 && (size_t)n < sizeof(text) && strcmp(text, dotted) == 0;
}

/* A printable name for an algorithm NID, for reasons. */
static const char *vfy_nid_name(int nid)
{
	const char *name = OBJ_nid2sn(nid);

	return name != NULL ? name : "unknown";
}

/* One line "C = US, O = ..., CN = ..." for a certificate name. */
static int vfy_name(struct vfy *v, const X509_NAME *name, char **out)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *text = NULL;
	long len;
	int r;

	if (bio == NULL) {
		r = hs_error_set(v->ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	/* A name that does not print is shown empty rather than failing. */
	if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_ONELINE) < 0)
		ERR_clear_error();
	len = BIO_get_mem_data(bio, &text);
	*out = vfy_text(text != NULL ? text : "", len > 0 ? (size_t)len : 0);
	r = *out != NULL ? 0 : hs_error_set(v->ctx, HS_ERR_NOMEM, "out of memory");
out:
	BIO_free(bio);
	return r;
}

/* Bytes after the DER ContentInfo may only be WIN_CERTIFICATE padding. */
static bool vfy_only_padding(const uint8_t *p, const uint8_t *end)
{
	if (end - p > VFY_MAX_PAD)
		return false;
	for (; p < end; p++)
		if (*p != 0)
			return false;
	return true;
}

/* Decodes the ContentInfo and checks the SignedData shell: signedData,
 * version 1, exactly one SignerInfo (authenticode.md 2.1, 10.2). */
static int vfy_parse(struct vfy *v, struct vfy_sig *s)
{
	const unsigned char *p = s->der;
	int n;

	if (s->der_len == 0 || s->der_len > LONG_MAX)
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
		                  "signature has an invalid size (%zu bytes)", s->der_len);
	s->p7 = d2i_PKCS7(NULL, &p, (long)s->der_len);
	if (s->p7 == NULL)
		return vfy_reject_ssl(v, s->info, HS_VERIFY_MALFORMED,
		                      "signature is not a DER PKCS#7 ContentInfo");
	if (!vfy_only_padding(p, s->der + s->der_len))
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
		                  "%zu unexpected bytes follow the PKCS#7 signature",
		                  (size_t)(s->der + s->der_len - p));
	if (!PKCS7_type_is_signed(s->p7) || s->p7->d.sign == NULL)
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
		                  "PKCS#7 content is not SignedData");
	if (ASN1_INTEGER_get(s->p7->d.sign->version) != 1)
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
		                  "SignedData version is %ld, Authenticode requires 1",
		                  ASN1_INTEGER_get(s->p7->d.sign->version));
	n = sk_PKCS7_SIGNER_INFO_num(s->p7->d.sign->signer_info);
	if (n != 1)
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
		                  "SignedData has %d SignerInfos, Authenticode requires one",
		                  n < 0 ? 0 : n);
	s->si = sk_PKCS7_SIGNER_INFO_value(s->p7->d.sign->signer_info, 0);
	if (s->si == NULL || s->si->issuer_and_serial == NULL || s->si->digest_alg == NULL)
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED, "SignerInfo is incomplete");
	return 0;
}

/* The certificate named by issuerAndSerialNumber, borrowed from certs. */
static X509 *vfy_find_signer(const STACK_OF(X509) * certs, const PKCS7_ISSUER_AND_SERIAL *ias)
{
	if (ias->issuer == NULL || ias->serial == NULL)
		return NULL;
	for (int i = 0; i < sk_X509_num(certs); i++) {
		X509 *cert = sk_X509_value(certs, i);

		if (cert != NULL && X509_NAME_cmp(X509_get_issuer_name(cert), ias->issuer) == 0 &&
		    ASN1_INTEGER_cmp(X509_get0_serialNumber(cert), ias->serial) == 0)
			return cert;
	}
	return NULL;
}

/* Fills subject and issuer from the signer certificate, or at least the
 * issuer from issuerAndSerialNumber when the certificate is missing. */
static int vfy_describe_signer(struct vfy *v, struct vfy_sig *s)
{
	const PKCS7_ISSUER_AND_SERIAL *ias = s->si->issuer_and_serial;
	int r;

	s->signer = vfy_find_signer(s->p7->d.sign->cert, ias);
	if (s->signer == NULL)
		return ias->issuer != NULL ? vfy_name(v, ias->issuer, &s->info->issuer) : 0;
	if ((r = vfy_name(v, X509_get_subject_name(s->signer), &s->info->subject)) < 0)
		return r;
	return vfy_name(v, X509_get_issuer_name(s->signer), &s->info->issuer);
}

/* The SignerInfo digest algorithm: one we support, and listed in
 * SignedData.digestAlgorithms (authenticode.md 10.2). */
static int vfy_signer_md(struct vfy *v, struct vfy_sig *s)
{
	const STACK_OF(X509_ALGOR) *md_algs = s->p7->d.sign->md_algs;
	int nid = OBJ_obj2nid(s->si->digest_alg->algorithm);

	s->signer_md = hs_digest_md(hs_digest_from_nid(nid));
	if (s->signer_md == NULL)
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
		                  "unsupported signer digest algorithm %s", vfy_nid_name(nid));
	for (int i = 0; i < sk_X509_ALGOR_num(md_algs); i++) {
		const X509_ALGOR *alg = sk_X509_ALGOR_value(md_algs, i);

		if (alg != NULL && OBJ_obj2nid(alg->algorithm) == nid)
			return 0;
	}
	return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
	                  "signer digest algorithm %s is not in SignedData.digestAlgorithms",
	                  vfy_nid_name(nid));
}

static int vfy_digest_get(struct vfy *v, const EVP_MD *md, int page_hash_nid,
                          const struct hs_indirect **out);

/* A catalog signs its CTL itself (authenticode.md 8). Only a format whose
 * content is a CTL may carry such a signature, and it must be that very
 * CTL: a CTL signature can never vouch for another file's bytes. */
static int vfy_ctl_content(struct vfy *v, struct vfy_sig *s, const PKCS7 *inner)
{
	const struct hs_indirect *ind = NULL;
	int r;

	if (inner->d.other == NULL || inner->d.other->type != V_ASN1_SEQUENCE ||
	    inner->d.other->value.sequence == NULL || inner->d.other->value.sequence->length <= 0)
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
		                  "catalog CTL is missing or not a SEQUENCE");
	s->content = inner->d.other->value.sequence;
	s->ctl = true;
	if ((r = vfy_signer_md(v, s)) != 0)
		return r;
	s->info->digest = hs_digest_from_nid(EVP_MD_get_type(s->signer_md));
	if ((r = vfy_digest_get(v, s->signer_md, 0, &ind)) < 0)
		return vfy_reject_ctx(v, s->info, r);
	if (ind->content_oid == NULL || strcmp(ind->content_oid, HS_OID_CTL) != 0 ||
	    ind->content_der.len != (size_t)s->content->length ||
	    memcmp(ind->content_der.data, s->content->data, ind->content_der.len) != 0)
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
		                  "a catalog (CTL) signature in a file that is not that catalog");
	if (sk_X509_ATTRIBUTE_num(s->si->auth_attr) <= 0)
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
		                  "SignerInfo has no authenticated attributes");
	return 0;
}

/* The signed content must be SpcIndirectDataContent carried as a SEQUENCE
 * (not an OCTET STRING as CMS would have it), with a digest we support,
 * or a catalog's CTL. */
static int vfy_content(struct vfy *v, struct vfy_sig *s)
{
	const PKCS7 *inner = s->p7->d.sign->contents;
	const EVP_MD *md;
	int r;

	if (inner != NULL && vfy_oid_is(inner->type, HS_OID_CTL))
		return vfy_ctl_content(v, s, inner);
	/* Check the type first: d.other is only the live member for types
	 * OpenSSL does not know, which SPC_INDIRECT_DATA is. */
	if (inner == NULL || !vfy_oid_is(inner->type, HS_OID_SPC_INDIRECT_DATA))
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
		                  "signed content is not SpcIndirectDataContent");
	if (inner->d.other == NULL || inner->d.other->type != V_ASN1_SEQUENCE ||
	    inner->d.other->value.sequence == NULL ||
	    inner->d.other->value.sequence->data == NULL ||
	    inner->d.other->value.sequence->length <= 0)
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
		                  "SpcIndirectDataContent is missing or not a SEQUENCE");
	s->content = inner->d.other->value.sequence;
	r = hs_spc_indirect_parse(v->ctx, &s->spc, s->content->data, (size_t)s->content->length);
	if (r < 0)
		return vfy_reject_ctx(v, s->info, r);
	s->info->digest = hs_digest_from_nid(s->spc.digest_nid);
	md = hs_digest_md(s->info->digest);
	if (md == NULL)
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
		                  "unsupported file digest algorithm %s",
		                  vfy_nid_name(s->spc.digest_nid));
	if (!v->fmt->digest_blob && s->spc.digest_len != (size_t)EVP_MD_get_size(md))
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
		                  "signed file digest has %zu bytes, %s needs %d",
		                  s->spc.digest_len, EVP_MD_get0_name(md), EVP_MD_get_size(md));
	if (sk_X509_ATTRIBUTE_num(s->si->auth_attr) <= 0)
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
		                  "SignerInfo has no authenticated attributes");
	return vfy_signer_md(v, s);
}

/* The file digest for md (and the page hash table for page_hash_nid),
 * computed once and cached; an entry with page hashes also serves a
 * request without them, the file digest being the same. */
static int vfy_digest_get(struct vfy *v, const EVP_MD *md, int page_hash_nid,
                          const struct hs_indirect **out)
{
	struct hs_digest_params params = {
	        .md = md, .page_hash_nid = page_hash_nid, .text_encoding = v->text_encoding};
	struct vfy_digest *d;
	int r;

	for (size_t i = 0; i < v->n_digests; i++) {
		d = &v->digests[i];
		if (d->md_nid == EVP_MD_get_type(md) &&
		    (page_hash_nid == 0 || d->page_hash_nid == page_hash_nid)) {
			*out = &d->ind;
			return 0;
		}
	}
	if (v->n_digests == VFY_MAX_DIGESTS)
		return hs_error_set(v->ctx, HS_ERR_INVALID, "internal: digest cache full");
	d = &v->digests[v->n_digests];
	memset(d, 0, sizeof(*d));
	if ((r = v->fmt->digest(v->ctx, v->state, &params, &d->ind, NULL)) < 0) {
		hs_indirect_free(&d->ind);
		return r;
	}
	d->md_nid = EVP_MD_get_type(md);
	d->page_hash_nid = page_hash_nid;
	v->n_digests++;
	*out = &d->ind;
	return 0;
}

/* Recomputes the file digest (and page hashes when signed) with the
 * signature's algorithm and compares them with what was signed. */
static int vfy_file_digest(struct vfy *v, struct vfy_sig *s)
{
	const struct hs_indirect *ind = NULL;
	bool digest_ok;
	int r;

	if (s->ctl) /* vfy_ctl_content() compared the CTL itself */
		return 0;
	r = vfy_digest_get(v, hs_digest_md(s->info->digest), s->spc.page_hash_nid, &ind);
	if (r < 0)
		return vfy_reject_ctx(v, s->info, r);
	if (ind->content_oid != NULL)
		return vfy_reject(v, s->info, HS_VERIFY_MALFORMED,
		                  "catalog signed as SpcIndirectDataContent instead of its CTL");
	digest_ok = ind->digest_len == s->spc.digest_len &&
	            CRYPTO_memcmp(ind->digest, s->spc.digest, s->spc.digest_len) == 0;
	if (s->spc.page_hash_nid != 0) {
		bool same = ind->page_hashes.len == s->spc.page_hashes.len &&
		            ind->page_hashes.len > 0 &&
		            memcmp(ind->page_hashes.data, s->spc.page_hashes.data,
		                   ind->page_hashes.len) == 0;

		s->info->page_hashes = same ? 1 : -1;
	}
	if (!digest_ok)
		return vfy_reject(v, s->info, HS_VERIFY_DIGEST_MISMATCH,
		                  "file digest does not match the signature "
		                  "(file modified after signing)");
	if (s->info->page_hashes < 0)
		return vfy_reject(v, s->info, HS_VERIFY_DIGEST_MISMATCH,
		                  "page hashes do not match");
	return 0;
}

/* The value of attribute nid if it occurs once, with one value of the
 * given type; NULL when absent, repeated, multi-valued or mistyped. */
static const ASN1_TYPE *vfy_attr_value(const STACK_OF(X509_ATTRIBUTE) * attrs, int nid, int type)
{
	int i = X509at_get_attr_by_NID(attrs, nid, -1);
	X509_ATTRIBUTE *attr;
	const ASN1_TYPE *value;

	if (i < 0 || X509at_get_attr_by_NID(attrs, nid, i) >= 0)
		return NULL;
	attr = X509at_get_attr(attrs, i);
	if (attr == NULL || X509_ATTRIBUTE_count(attr) != 1)
		return NULL;
	value = X509_ATTRIBUTE_get0_type(attr, 0);
	if (value == NULL || value->type != type || value->value.ptr == NULL)
		return NULL;
	return value;
}

/* contentType must name SpcIndirectDataContent and messageDigest must be
 * H(contents octets of its DER) (authenticode.md 2.2, 2.3). */
static int vfy_message_digest(struct vfy *v, struct vfy_sig *s)
{
	const ASN1_TYPE *type, *digest;
	const uint8_t *content;
	size_t content_len;
	unsigned char h[EVP_MAX_MD_SIZE];
	unsigned int h_len = 0;
	int r;

	type = vfy_attr_value(s->si->auth_attr, NID_pkcs9_contentType, V_ASN1_OBJECT);
	if (type == NULL ||
	    !vfy_oid_is(type->value.object, s->ctl ? HS_OID_CTL : HS_OID_SPC_INDIRECT_DATA))
		return vfy_reject(v, s->info, HS_VERIFY_BAD_SIGNATURE,
		                  "contentType attribute is missing or not SpcIndirectDataContent");
	digest = vfy_attr_value(s->si->auth_attr, NID_pkcs9_messageDigest, V_ASN1_OCTET_STRING);
	if (digest == NULL)
		return vfy_reject(v, s->info, HS_VERIFY_BAD_SIGNATURE,
		                  "messageDigest attribute is missing or malformed");
	r = hs_der_contents(v->ctx, s->content->data, (size_t)s->content->length, &content,
	                    &content_len);
	if (r < 0)
		return vfy_reject_ctx(v, s->info, r);
	if (!EVP_Digest(content, content_len, h, &h_len, s->signer_md, NULL))
		return hs_error_ssl(v->ctx, HS_ERR_CRYPTO, "hashing the signed content failed");
	if ((unsigned int)digest->value.octet_string->length != h_len ||
	    CRYPTO_memcmp(digest->value.octet_string->data, h, h_len) != 0)
		return vfy_reject(v, s->info, HS_VERIFY_BAD_SIGNATURE,
		                  "messageDigest attribute does not match the signed content");
	return 0;
}

/* RSA PKCS#1 v1.5 over DigestInfo(h), or ECDSA (DER Ecdsa-Sig-Value) over
 * h. Set-up failures are verdicts too: the key comes from the file. */
static int vfy_pkey_verify(struct vfy *v, struct vfy_sig *s, EVP_PKEY *pkey, const unsigned char *h,
                           size_t h_len)
{
	const ASN1_OCTET_STRING *sig = s->si->enc_digest;
	bool is_rsa = EVP_PKEY_is_a(pkey, "RSA");
	EVP_PKEY_CTX *pctx = NULL;
	int r;

	if (!is_rsa && !EVP_PKEY_is_a(pkey, "EC")) {
		const char *type = EVP_PKEY_get0_type_name(pkey);

		r = vfy_reject(v, s->info, HS_VERIFY_BAD_SIGNATURE,
		               "unsupported signer key type %s", type != NULL ? type : "unknown");
		goto out;
	}
	pctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (pctx == NULL || EVP_PKEY_verify_init(pctx) <= 0 ||
	    (is_rsa && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0) ||
	    EVP_PKEY_CTX_set_signature_md(pctx, s->signer_md) <= 0) {
		r = vfy_reject_ssl(v, s->info, HS_VERIFY_BAD_SIGNATURE,
		                   "cannot verify with the signer certificate's key");
		goto out;
	}
	r = 0;
	if (EVP_PKEY_verify(pctx, sig->data, (size_t)sig->length, h, h_len) != 1)
		r = vfy_reject(v, s->info, HS_VERIFY_BAD_SIGNATURE,
		               "signature value does not verify with the signer certificate");
out:
	EVP_PKEY_CTX_free(pctx);
	return r;
}

/* digestEncryptionAlgorithm is not signed, but must still agree with the
 * signer's key type: rsaEncryption or sha*WithRSAEncryption for RSA,
 * ecdsa-with-SHA* for EC. RSA-PSS is not supported. */
static int vfy_enc_alg(struct vfy *v, struct vfy_sig *s, const EVP_PKEY *pkey)
{
	int nid = s->si->digest_enc_alg != NULL ? OBJ_obj2nid(s->si->digest_enc_alg->algorithm)
	                                        : NID_undef;
	int pkey_nid = nid;

	/* For a signature algorithm, compare its key algorithm instead. */
	if (!OBJ_find_sigid_algs(nid, NULL, &pkey_nid))
		pkey_nid = nid;
	if (nid != NID_rsassaPss && pkey_nid != NID_undef && pkey_nid == EVP_PKEY_get_base_id(pkey))
		return 0;
	return vfy_reject(
	        v, s->info, HS_VERIFY_BAD_SIGNATURE,
	        "signature algorithm %s does not match the signer's key or is not supported",
	        vfy_nid_name(nid));
}

/* The signature value covers the DER SET OF authenticated attributes
 * exactly as received, not re-sorted (authenticode.md 2.4). */
static int vfy_signature_value(struct vfy *v, struct vfy_sig *s)
{
	unsigned char *attrs_der = NULL;
	unsigned char h[EVP_MAX_MD_SIZE];
	unsigned int h_len = 0;
	EVP_PKEY *pkey;
	int attrs_len, r;

	if (s->signer == NULL) {
		r = vfy_reject(v, s->info, HS_VERIFY_BAD_SIGNATURE,
		               "signer certificate is not included in the signature");
		goto out;
	}
	if ((pkey = X509_get0_pubkey(s->signer)) == NULL) {
		r = vfy_reject_ssl(v, s->info, HS_VERIFY_BAD_SIGNATURE,
		                   "cannot decode the signer certificate's public key");
		goto out;
	}
	if (s->si->enc_digest == NULL || s->si->enc_digest->length <= 0) {
		r = vfy_reject(v, s->info, HS_VERIFY_BAD_SIGNATURE, "signature value is empty");
		goto out;
	}
	if ((r = vfy_enc_alg(v, s, pkey)) != 0)
		goto out;
	attrs_len = ASN1_item_i2d((ASN1_VALUE *)s->si->auth_attr, &attrs_der,
	                          ASN1_ITEM_rptr(PKCS7_ATTR_VERIFY));
	if (attrs_len <= 0 ||
	    !EVP_Digest(attrs_der, (size_t)attrs_len, h, &h_len, s->signer_md, NULL)) {
		r = hs_error_ssl(v->ctx, HS_ERR_CRYPTO,
		                 "hashing the authenticated attributes failed");
		goto out;
	}
	r = vfy_pkey_verify(v, s, pkey, h, h_len);
out:
	OPENSSL_free(attrs_der);
	return r;
}

/* The leaf must have an extendedKeyUsage with codeSigning, and keyUsage,
 * when present, digitalSignature (authenticode.md 10.8). */
static int vfy_eku(struct vfy *v, struct vfy_sig *s)
{
	uint32_t flags;

	if (s->signer == NULL)
		return vfy_reject(v, s->info, HS_VERIFY_BAD_SIGNATURE, "no signer certificate");
	flags = X509_get_extension_flags(s->signer);
	if (!(flags & EXFLAG_XKUSAGE))
		return vfy_reject(
		        v, s->info, HS_VERIFY_NO_EKU,
		        "signer certificate has no extendedKeyUsage (codeSigning needed)");
	if (!(X509_get_extended_key_usage(s->signer) & XKU_CODE_SIGN))
		return vfy_reject(v, s->info, HS_VERIFY_NO_EKU,
		                  "signer certificate's extendedKeyUsage lacks codeSigning");
	if ((flags & EXFLAG_KUSAGE) && !(X509_get_key_usage(s->signer) & KU_DIGITAL_SIGNATURE))
		return vfy_reject(v, s->info, HS_VERIFY_NO_EKU,
		                  "signer certificate's keyUsage lacks digitalSignature");
	return 0;
}

/* Windows intersects EKUs down the chain: a CA below the root that
 * restricts extendedKeyUsage must still allow codeSigning. */
static int vfy_chain_eku(struct vfy *v, struct vfy_sig *s, const STACK_OF(X509) * chain)
{
	int n = sk_X509_num(chain);

	for (int i = 1; i < n - 1; i++) {
		X509 *ca = sk_X509_value(chain, i);

		if (ca != NULL && !(X509_get_extended_key_usage(ca) & (XKU_CODE_SIGN | XKU_ANYEKU)))
			return vfy_reject(v, s->info, HS_VERIFY_NO_EKU,
			                  "CA certificate at depth %d does not allow codeSigning",
			                  i);
	}
	return 0;
}

/* Maps a chain verification failure to a verdict with OpenSSL's reason. */
static int vfy_chain_reject(struct vfy *v, struct vfy_sig *s, X509_STORE_CTX *sctx)
{
	int err = X509_STORE_CTX_get_error(sctx);
	X509 *cert = X509_STORE_CTX_get_current_cert(sctx);
	enum hs_verify_status status = HS_VERIFY_UNTRUSTED;
	char *subject = NULL;
	int r;

	if (err == X509_V_ERR_CERT_HAS_EXPIRED || err == X509_V_ERR_CERT_NOT_YET_VALID)
		status = HS_VERIFY_EXPIRED;
	if (cert != NULL && (r = vfy_name(v, X509_get_subject_name(cert), &subject)) < 0)
		goto out;
	r = vfy_reject(v, s->info, status, "certificate chain: %s at depth %d%s%s",
	               X509_verify_cert_error_string(err), X509_STORE_CTX_get_error_depth(sctx),
	               subject != NULL ? ": " : "", subject != NULL ? subject : "");
out:
	free(subject);
	return r;
}

/* Builds the chain from the signer through the signature's certificates to
 * a trusted root, at the current time: timestamps are not considered yet. */
static int vfy_chain(struct vfy *v, struct vfy_sig *s)
{
	X509_STORE_CTX *sctx = X509_STORE_CTX_new();
	int r;

	if (sctx == NULL || !X509_STORE_CTX_init(sctx, v->store, s->signer, s->p7->d.sign->cert)) {
		r = hs_error_ssl(v->ctx, HS_ERR_NOMEM, "cannot set up certificate verification");
		goto out;
	}
	/* Code-signing leaves lack the TLS purposes OpenSSL may check;
	 * vfy_eku() checks codeSigning instead. X509_STORE_CTX_set_purpose()
	 * refuses X509_PURPOSE_ANY in OpenSSL 3.0, the parameter accepts it. */
	if (s->ts_valid)
		X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(sctx), s->ts_time);
	if (!X509_VERIFY_PARAM_set_purpose(X509_STORE_CTX_get0_param(sctx), X509_PURPOSE_ANY)) {
		r = hs_error_ssl(v->ctx, HS_ERR_CRYPTO, "cannot set the verification purpose");
		goto out;
	}
	if (X509_verify_cert(sctx) == 1)
		r = vfy_chain_eku(v, s, X509_STORE_CTX_get0_chain(sctx));
	else
		r = vfy_chain_reject(v, s, sctx);
out:
	X509_STORE_CTX_free(sctx);
	return r;
}

static int vfy_nested(struct vfy *v, const PKCS7_SIGNER_INFO *si);

/* Signers whose certificate carries the Lifetime Signing EKU die with the
 * certificate, timestamp or not (authenticode.md 10.9). */
static bool vfy_lifetime_signing(X509 *signer)
{
	EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(signer, NID_ext_key_usage, NULL, NULL);
	bool found = false;

	for (int i = 0; i < sk_ASN1_OBJECT_num(eku); i++)
		found = found ||
		        vfy_oid_is(sk_ASN1_OBJECT_value(eku, i), "1.3.6.1.4.1.311.10.3.13");
	EXTENDED_KEY_USAGE_free(eku);
	return found;
}

static int vfy_copy_text(struct vfy *v, char **out, const char *text)
{
	if (text[0] != '\0' && (*out = vfy_text(text, strlen(text))) == NULL)
		return hs_error_set(v->ctx, HS_ERR_NOMEM, "out of memory");
	return 0;
}

static int vfy_load_store(struct vfy *v, X509_STORE **store, const char *ca_file);

/* Checks the timestamp, if any (timestamp.c); a valid one moves the time
 * at which the signer's chain is judged to its genTime. */
static int vfy_timestamp(struct vfy *v, struct vfy_sig *s)
{
	struct hs_ts_info ts;
	int r;

	/* Loading the system store costs ~0.1 s: only when there is a token. */
	if (v->tsa_store == NULL && hs_ts_present(s->si) &&
	    (r = vfy_load_store(v, &v->tsa_store, v->tsa_ca_file)) < 0)
		return r;
	if ((r = hs_ts_verify(v->ctx, v->tsa_store, s->p7, s->si, &ts)) < 0)
		return r;
	s->info->timestamp = ts.kind;
	if (r > 0)
		return vfy_reject(v, s->info, HS_VERIFY_BAD_TIMESTAMP, "%s", ts.reason);
	if (ts.kind == 0)
		return 0;
	if ((r = vfy_copy_text(v, &s->info->timestamp_time, ts.time_text)) < 0 ||
	    (r = vfy_copy_text(v, &s->info->tsa_subject, ts.tsa_subject)) < 0 ||
	    (r = vfy_copy_text(v, &s->info->tsa_digest, ts.digest)) < 0)
		return r;
	s->ts_valid = !vfy_lifetime_signing(s->signer);
	s->ts_time = ts.gen_time;
	return 0;
}

/* The checks in order, so that the reason is the most specific one: a
 * modified file is reported as such, not as a signature or trust issue. */
static int (*const vfy_steps[])(struct vfy *, struct vfy_sig *) = {
        vfy_parse,       vfy_describe_signer, vfy_content,
        vfy_file_digest, vfy_message_digest,  vfy_signature_value,
        vfy_eku,         vfy_timestamp,       vfy_chain,
};

/* Verifies one DER ContentInfo(SignedData), appending its entry, and for
 * the primary (depth 0) the signatures nested in it. */
static int vfy_signed_data(struct vfy *v, const uint8_t *der, size_t len, unsigned depth)
{
	struct vfy_sig s = {.der = der, .der_len = len};
	int r;

	if ((r = vfy_add_entry(v, depth, &s.info)) < 0)
		return r;
	for (size_t i = 0; r == 0 && i < sizeof(vfy_steps) / sizeof(vfy_steps[0]); i++)
		r = vfy_steps[i](v, &s);
	hs_log(v->ctx, HS_LOG_DEBUG, "signature at depth %u: %s%s%s", depth,
	       hs_verify_status_name(s.info->status), s.info->reason ? ": " : "",
	       s.info->reason ? s.info->reason : "");
	/* A broken primary can still carry good nested signatures. */
	if (r >= 0 && depth == 0 && s.si != NULL)
		r = vfy_nested(v, s.si);
	hs_spc_indirect_free(&s.spc);
	PKCS7_free(s.p7);
	return r < 0 ? r : 0;
}

static bool vfy_is_nested_attr(const X509_ATTRIBUTE *attr)
{
	return attr != NULL && vfy_oid_is(X509_ATTRIBUTE_get0_object((X509_ATTRIBUTE *)attr),
	                                  HS_OID_SPC_NESTED_SIGNATURE);
}

/* Number of nested signature values over all nested-signature attributes. */
static int vfy_nested_count(const STACK_OF(X509_ATTRIBUTE) * attrs)
{
	int n = 0;

	for (int i = 0; i < X509at_get_attr_count(attrs); i++) {
		const X509_ATTRIBUTE *attr = X509at_get_attr(attrs, i);

		if (vfy_is_nested_attr(attr))
			n += X509_ATTRIBUTE_count(attr);
	}
	return n;
}

/* One value of the nested-signature attribute: a ContentInfo(SignedData)
 * verified on its own, with its own digest algorithm. */
static int vfy_nested_value(struct vfy *v, const ASN1_TYPE *value)
{
	struct hs_signature_info *info;
	int r;

	if (value != NULL && value->type == V_ASN1_SEQUENCE && value->value.sequence != NULL &&
	    value->value.sequence->length > 0)
		return vfy_signed_data(v, value->value.sequence->data,
		                       (size_t)value->value.sequence->length, 1);
	if ((r = vfy_add_entry(v, 1, &info)) < 0)
		return r;
	r = vfy_reject(v, info, HS_VERIFY_MALFORMED, "nested signature is not a SEQUENCE");
	return r < 0 ? r : 0;
}

/* Verifies each signature in the primary's unauthenticated attribute
 * 1.3.6.1.4.1.311.2.4.1 in order (authenticode.md 4). Nesting deeper than
 * one level is not Authenticode and is not followed. */
static int vfy_nested(struct vfy *v, const PKCS7_SIGNER_INFO *si)
{
	const STACK_OF(X509_ATTRIBUTE) *attrs = si->unauth_attr;
	int n = vfy_nested_count(attrs), r = 0;
	struct hs_signature_info *info;

	if (n > VFY_MAX_NESTED) {
		if ((r = vfy_add_entry(v, 1, &info)) < 0)
			return r;
		r = vfy_reject(v, info, HS_VERIFY_MALFORMED,
		               "%d nested signatures, more than the %d examined", n,
		               VFY_MAX_NESTED);
		return r < 0 ? r : 0;
	}
	for (int i = 0; r == 0 && i < X509at_get_attr_count(attrs); i++) {
		X509_ATTRIBUTE *attr = X509at_get_attr(attrs, i);

		if (!vfy_is_nested_attr(attr))
			continue;
		for (int j = 0; r == 0 && j < X509_ATTRIBUTE_count(attr); j++)
			r = vfy_nested_value(v, X509_ATTRIBUTE_get0_type(attr, j));
	}
	return r;
}

/* Detects and opens the format. A readable file that is no format we know,
 * or is malformed, gets a MALFORMED verdict rather than an error. */
static int vfy_open(struct vfy *v, const struct hs_file *f)
{
	struct hs_signature_info *info;
	int err, r;

	err = hs_format_detect(v->ctx, f, &v->fmt);
	if (err == 0 && (err = v->fmt->open(v->ctx, f, &v->state)) < 0)
		v->state = NULL;
	if (err >= 0 || (err != HS_ERR_FORMAT && err != HS_ERR_UNSUPPORTED))
		return err;
	if ((r = vfy_add_entry(v, 0, &info)) < 0)
		return r;
	r = vfy_reject_ctx(v, info, err);
	return r < 0 ? r : 0;
}

/* Extracts the embedded signature and verifies it; unsigned files leave
 * the result empty. */
static int vfy_file(struct vfy *v)
{
	struct hs_buf der = {0};
	struct hs_signature_info *info;
	int err, r;

	if (!v->fmt->is_signed(v->state))
		return 0;
	/* is_signed() said yes, so "no signature" here is a broken table. */
	if ((err = v->fmt->extract(v->ctx, v->state, &der)) < 0) {
		r = err;
		if (err != HS_ERR_FORMAT && err != HS_ERR_UNSUPPORTED && err != HS_ERR_NOTFOUND)
			goto out;
		if ((r = vfy_add_entry(v, 0, &info)) < 0)
			goto out;
		r = vfy_reject_ctx(v, info, err);
		goto out;
	}
	if (v->fmt->plain_cms) { /* NuGet: CMS, not Authenticode */
		if (v->tsa_store == NULL &&
		    (r = vfy_load_store(v, &v->tsa_store, v->tsa_ca_file)) < 0)
			goto out;
		if ((r = vfy_add_entry(v, 0, &info)) == 0)
			r = hs_cms_verify(v->ctx, v->store, v->tsa_store, v->fmt, v->state,
			                  der.data, der.len, info);
		goto out;
	}
	r = vfy_signed_data(v, der.data, der.len, 0);
out:
	hs_buf_free(&der);
	return r < 0 ? r : 0;
}

/* Trust anchors: the caller's PEM file, or OpenSSL's default locations. */
static int vfy_load_store(struct vfy *v, X509_STORE **store, const char *ca_file)
{
	*store = X509_STORE_new();
	if (*store == NULL)
		return hs_error_set(v->ctx, HS_ERR_NOMEM, "out of memory");
	if (ca_file != NULL && !X509_STORE_load_file(*store, ca_file))
		return hs_error_ssl(v->ctx, HS_ERR_INVALID, "%s: cannot load trusted certificates",
		                    ca_file);
	if (ca_file == NULL && !X509_STORE_set_default_paths(*store))
		return hs_error_ssl(v->ctx, HS_ERR_CRYPTO,
		                    "cannot load the system's trusted certificates");
	return 0;
}

/* Code-signing roots and timestamp authority roots are separate stores. */
static int vfy_store_new(struct vfy *v, const struct hs_verify_opts *opts)
{
	v->tsa_ca_file = opts->tsa_ca_file;
	return vfy_load_store(v, &v->store, opts->ca_file);
}

/* The overall verdict is the first signature's that is not OK. */
static void vfy_result_finish(struct hs_verify_result *result)
{
	result->status = result->count == 0 ? HS_VERIFY_NO_SIGNATURE : HS_VERIFY_OK;
	for (size_t i = 0; i < result->count; i++) {
		if (result->sigs[i].status != HS_VERIFY_OK) {
			result->status = result->sigs[i].status;
			break;
		}
	}
}

static void vfy_release(struct vfy *v)
{
	for (size_t i = 0; i < v->n_digests; i++)
		hs_indirect_free(&v->digests[i].ind);
	if (v->state != NULL)
		v->fmt->close(v->state);
	X509_STORE_free(v->store);
	X509_STORE_free(v->tsa_store);
	hs_verify_result_free(v->result);
}

int hs_verify_file(struct hs_ctx *ctx, const char *path, const struct hs_verify_opts *opts,
                   struct hs_verify_result **out)
{
	static const struct hs_verify_opts defaults = HS_VERIFY_OPTS_INIT;
	struct vfy v = {.ctx = ctx};
	struct hs_file f;
	int r;

	if (out == NULL || path == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "hs_verify_file: path and out are required");
	v.text_encoding = opts != NULL ? (int)opts->script_encoding : 0;
	*out = NULL;
	if ((r = hs_file_open(ctx, &f, path)) < 0)
		return r;
	if ((r = vfy_store_new(&v, opts != NULL ? opts : &defaults)) < 0)
		goto out;
	if ((r = vfy_result_new(&v)) < 0)
		goto out;
	if ((r = vfy_open(&v, &f)) < 0)
		goto out;
	if (v.state != NULL && (r = vfy_file(&v)) < 0)
		goto out;
	vfy_result_finish(v.result);
	*out = v.result;
	v.result = NULL;
	r = 0;
out:
	vfy_release(&v);
	hs_file_close(&f);
	return r;
}
