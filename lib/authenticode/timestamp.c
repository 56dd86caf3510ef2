/*
 * timestamp.c - RFC 3161 and legacy Authenticode timestamps
 * (authenticode.md 3.1, 3.2).
 *
 * Every reply is checked before it is attached: status, imprint (the hash
 * of the signature value bytes), nonce, and the token's signature with the
 * certificates it carries, its timeStamping EKU and ESS certificate id.
 * Whether the TSA is trusted is the verifier's question (verify.c), so here
 * the token's own certificates serve as anchors. TSAs are tried in order;
 * each gets its own retry budget, separate from the key's.
 */
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>
#include <openssl/ts.h>
#include <openssl/x509.h>

#include "asn1.h"
#include "cms.h"
#include "core/codec.h"
#include "core/file.h"
#include "core/http.h"
#include "core/ratelimit.h"
#include "formats/format.h"
#include "nest.h"
#include "timestamp.h"

/* One timestamping attempt over the configured TSAs. */
struct ts_run {
	struct hs_ctx *ctx;
	const struct hs_timestamp_opts *opts;
	struct hs_http *http;
	char failures[HS_MSG_MAX]; /* "reason; reason" of the TSAs tried */
	int last_err;
};

bool hs_ts_wanted(const struct hs_timestamp_opts *opts)
{
	return opts != NULL && ((opts->urls != NULL && opts->urls[0] != NULL) ||
	                        (opts->legacy_urls != NULL && opts->legacy_urls[0] != NULL));
}

static const EVP_MD *ts_md(const struct hs_timestamp_opts *opts)
{
	return hs_digest_md(opts->digest != 0 ? opts->digest : HS_DIGEST_SHA256);
}

/* ------------------------------------------------------------------ HTTP */

static int ts_http_open(struct ts_run *run)
{
	const struct hs_timestamp_opts *o = run->opts;
	struct hs_http_config cfg = HS_HTTP_CONFIG_INIT;

	cfg.ca_file = o->ca_file;
	cfg.timeout_ms = o->timeout_ms;
	cfg.max_retries = o->max_retries != 0 ? o->max_retries : 2;
	cfg.max_total_ms = o->max_total_ms > 0 ? o->max_total_ms : 60000;
	cfg.backoff_base_ms = o->backoff_base_ms;
	return hs_http_new(run->ctx, &run->http, &cfg);
}

/* POSTs a request to a TSA; a final status other than 200 is an error that
 * names the TSA and the status. */
static int ts_post(struct ts_run *run, const char *url, const char *ctype, const void *body,
                   size_t len, struct hs_http_response *resp)
{
	char content_type[96];
	const char *headers[] = {content_type, NULL};
	struct hs_http_request req = {.method = "POST",
	                              .url = url,
	                              .headers = headers,
	                              .body = body,
	                              .body_len = len,
	                              .allow_plain_http = true, /* the reply is signed */
	                              .service = "timestamp server"};
	int r;

	/* Each TSA has its own limit, separate from the vault's. */
	req.rate_limit = hs_ratelimit_shared(url, run->opts->rate_limit);
	snprintf(content_type, sizeof(content_type), "Content-Type: %s", ctype);
	if ((r = hs_http_send(run->ctx, run->http, &req, resp)) < 0)
		return r;
	if (resp->status != 200)
		return hs_error_set(run->ctx, HS_ERR_NETWORK, "timestamp server %s: HTTP %ld%s",
		                    url, resp->status, resp->attempts > 1 ? " after retries" : "");
	if (resp->body.len == 0 || resp->body.len > HS_TS_REPLY_MAX)
		return hs_error_set(run->ctx, HS_ERR_FORMAT,
		                    "timestamp server %s: reply of %zu bytes", url, resp->body.len);
	return 0;
}

/* --------------------------------------------------------------- RFC 3161 */

/* TimeStampReq { v1, imprint, nonce (63 random bits), certReq TRUE }. */
static int ts_req_build(struct hs_ctx *ctx, const EVP_MD *md, const uint8_t *imprint,
                        unsigned imprint_len, TS_REQ **out)
{
	TS_REQ *req = TS_REQ_new();
	TS_MSG_IMPRINT *mi = TS_MSG_IMPRINT_new();
	X509_ALGOR *alg = X509_ALGOR_new();
	unsigned char rnd[8];
	BIGNUM *bn = NULL;
	ASN1_INTEGER *nonce = NULL;
	int r = 0;

	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		goto fail;
	rnd[0] &= 0x7f;
	bn = BN_bin2bn(rnd, sizeof(rnd), NULL);
	nonce = bn != NULL ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
	if (req == NULL || mi == NULL || alg == NULL || nonce == NULL ||
	    !X509_ALGOR_set0(alg, OBJ_nid2obj(EVP_MD_get_type(md)), V_ASN1_NULL, NULL) ||
	    !TS_MSG_IMPRINT_set_algo(mi, alg) ||
	    !TS_MSG_IMPRINT_set_msg(mi, (unsigned char *)imprint, (int)imprint_len) ||
	    !TS_REQ_set_version(req, 1) || !TS_REQ_set_msg_imprint(req, mi) ||
	    !TS_REQ_set_nonce(req, nonce) || !TS_REQ_set_cert_req(req, 1))
		goto fail;
	*out = req;
	req = NULL;
	goto out;
fail:
	r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot build the timestamp request");
out:
	TS_REQ_free(req);
	TS_MSG_IMPRINT_free(mi);
	X509_ALGOR_free(alg);
	ASN1_INTEGER_free(nonce);
	BN_free(bn);
	return r;
}

/* Imprint and nonce of the token must be those of the request. */
static int ts_check_tst(struct hs_ctx *ctx, const char *url, TS_REQ *req, TS_TST_INFO *tst)
{
	TS_MSG_IMPRINT *want = TS_REQ_get_msg_imprint(req);
	TS_MSG_IMPRINT *got = TS_TST_INFO_get_msg_imprint(tst);
	const ASN1_INTEGER *nonce = TS_TST_INFO_get_nonce(tst);

	if (got == NULL ||
	    OBJ_cmp(TS_MSG_IMPRINT_get_algo(got)->algorithm,
	            TS_MSG_IMPRINT_get_algo(want)->algorithm) != 0 ||
	    ASN1_STRING_cmp(TS_MSG_IMPRINT_get_msg(got), TS_MSG_IMPRINT_get_msg(want)) != 0)
		return hs_error_set(ctx, HS_ERR_CRYPTO,
		                    "timestamp server %s: token imprint does not match the "
		                    "signature",
		                    url);
	if (nonce == NULL || ASN1_INTEGER_cmp(nonce, TS_REQ_get_nonce(req)) != 0)
		return hs_error_set(ctx, HS_ERR_CRYPTO,
		                    "timestamp server %s: token nonce does not match the request",
		                    url);
	return 0;
}

/* The token's signature with its own certificates as anchors: signature,
 * ESS certificate id and the critical timeStamping EKU (OpenSSL's TS
 * verifier checks the purpose). */
static int ts_check_token_signature(struct hs_ctx *ctx, const char *url, PKCS7 *token)
{
	TS_VERIFY_CTX *vctx = TS_VERIFY_CTX_new();
	X509_STORE *store = X509_STORE_new();
	STACK_OF(X509) *certs = PKCS7_type_is_signed(token) ? token->d.sign->cert : NULL;
	int r = 0;

	if (vctx == NULL || store == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (sk_X509_num(certs) <= 0) {
		r = hs_error_set(ctx, HS_ERR_CRYPTO,
		                 "timestamp server %s: token carries no certificates", url);
		goto out;
	}
	for (int i = 0; i < sk_X509_num(certs); i++)
		X509_STORE_add_cert(store, sk_X509_value(certs, i));
	X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
	TS_VERIFY_CTX_set_flags(vctx, TS_VFY_SIGNATURE | TS_VFY_VERSION);
	TS_VERIFY_CTX_set_store(vctx, store);
	store = NULL; /* owned by vctx */
	ERR_clear_error();
	if (TS_RESP_verify_token(vctx, token) != 1)
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO,
		                 "timestamp server %s: token signature does not verify", url);
out:
	X509_STORE_free(store);
	TS_VERIFY_CTX_free(vctx);
	return r;
}

/* Status granted (0) or granted with modifications (1), and a token. */
static int ts_check_status(struct hs_ctx *ctx, const char *url, TS_RESP *resp)
{
	TS_STATUS_INFO *si = TS_RESP_get_status_info(resp);
	long status = si != NULL ? ASN1_INTEGER_get(TS_STATUS_INFO_get0_status(si)) : -1;

	if (status != 0 && status != 1)
		return hs_error_set(ctx, HS_ERR_CRYPTO,
		                    "timestamp server %s: request rejected (PKIStatus %ld)", url,
		                    status);
	if (TS_RESP_get_token(resp) == NULL || TS_RESP_get_tst_info(resp) == NULL)
		return hs_error_set(ctx, HS_ERR_CRYPTO, "timestamp server %s: reply has no token",
		                    url);
	return 0;
}

/* Asks one RFC 3161 TSA for a token over the signature value; on success
 * *token_der holds the DER ContentInfo to attach. */
static int ts_rfc3161(struct ts_run *run, const char *url, const PKCS7_SIGNER_INFO *si,
                      struct hs_buf *token_der)
{
	const EVP_MD *md = ts_md(run->opts);
	uint8_t imprint[EVP_MAX_MD_SIZE];
	unsigned imprint_len = 0;
	unsigned char *req_der = NULL, *tok = NULL;
	struct hs_http_response resp = {0};
	const unsigned char *p;
	TS_REQ *req = NULL;
	TS_RESP *reply = NULL;
	int req_len, tok_len, r;

	if (!EVP_Digest(si->enc_digest->data, (size_t)si->enc_digest->length, imprint, &imprint_len,
	                md, NULL)) {
		r = hs_error_ssl(run->ctx, HS_ERR_CRYPTO, "cannot hash the signature value");
		goto out;
	}
	if ((r = ts_req_build(run->ctx, md, imprint, imprint_len, &req)) < 0)
		goto out;
	if ((req_len = i2d_TS_REQ(req, &req_der)) <= 0) {
		r = hs_error_ssl(run->ctx, HS_ERR_CRYPTO, "cannot encode the timestamp request");
		goto out;
	}
	if ((r = ts_post(run, url, "application/timestamp-query", req_der, (size_t)req_len,
	                 &resp)) < 0)
		goto out;
	p = resp.body.data;
	if ((reply = d2i_TS_RESP(NULL, &p, (long)resp.body.len)) == NULL) {
		r = hs_error_ssl(run->ctx, HS_ERR_FORMAT,
		                 "timestamp server %s: reply is not an RFC 3161 TimeStampResp",
		                 url);
		goto out;
	}
	if ((r = ts_check_status(run->ctx, url, reply)) < 0 ||
	    (r = ts_check_tst(run->ctx, url, req, TS_RESP_get_tst_info(reply))) < 0 ||
	    (r = ts_check_token_signature(run->ctx, url, TS_RESP_get_token(reply))) < 0)
		goto out;
	if ((tok_len = i2d_PKCS7(TS_RESP_get_token(reply), &tok)) <= 0) {
		r = hs_error_ssl(run->ctx, HS_ERR_CRYPTO, "cannot encode the timestamp token");
		goto out;
	}
	r = hs_buf_append(token_der, tok, (size_t)tok_len);
	if (r < 0)
		hs_error_set(run->ctx, r, "out of memory");
out:
	OPENSSL_free(tok);
	OPENSSL_free(req_der);
	TS_RESP_free(reply);
	TS_REQ_free(req);
	hs_http_response_free(&resp);
	return r;
}

/* ----------------------------------------------------- legacy Authenticode */

/* Appends a DER TLV header for `len` content bytes (len < 64 KiB here). */
static int ts_der_header(struct hs_buf *b, uint8_t tag, size_t len)
{
	uint8_t h[4] = {tag};
	size_t n = 2;

	if (len < 0x80) {
		h[1] = (uint8_t)len;
	} else if (len < 0x100) {
		h[1] = 0x81;
		h[2] = (uint8_t)len;
		n = 3;
	} else {
		h[1] = 0x82;
		h[2] = (uint8_t)(len >> 8);
		h[3] = (uint8_t)len;
		n = 4;
	}
	return hs_buf_append(b, h, n);
}

/* base64(DER TimeStampRequest { SPC_TIME_STAMP_REQUEST, ContentInfo { data,
 * [0] OCTET STRING signature } }) (authenticode.md 3.2). */
static int ts_legacy_request(struct hs_ctx *ctx, const PKCS7_SIGNER_INFO *si, struct hs_buf *b64)
{
	static const uint8_t oid_req[] = {0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04,
	                                  0x01, 0x82, 0x37, 0x03, 0x02, 0x01};
	static const uint8_t oid_data[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
	                                   0xf7, 0x0d, 0x01, 0x07, 0x01};
	size_t sig_len = (size_t)si->enc_digest->length, os_len, x_len, ci_len;
	struct hs_buf der = {0};
	int r;

	if (sig_len > 16384)
		return hs_error_set(ctx, HS_ERR_INVALID, "signature value too long to timestamp");
	os_len = sig_len + (sig_len < 0x80 ? 2 : sig_len < 0x100 ? 3 : 4);
	x_len = os_len + (os_len < 0x80 ? 2 : os_len < 0x100 ? 3 : 4);
	ci_len = sizeof(oid_data) + x_len;
	if ((r = ts_der_header(&der, 0x30, sizeof(oid_req) + ci_len + 4)) < 0 ||
	    (r = hs_buf_append(&der, oid_req, sizeof(oid_req))) < 0 ||
	    (r = ts_der_header(&der, 0x30, ci_len)) < 0 ||
	    (r = hs_buf_append(&der, oid_data, sizeof(oid_data))) < 0 ||
	    (r = ts_der_header(&der, 0xa0, os_len)) < 0 ||
	    (r = ts_der_header(&der, 0x04, sig_len)) < 0 ||
	    (r = hs_buf_append(&der, si->enc_digest->data, sig_len)) < 0 ||
	    (r = hs_base64_encode(b64, der.data, der.len, false)) < 0)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	hs_buf_free(&der);
	return r;
}

/* The reply is base64 of a PKCS#7 SignedData, or (some servers) raw DER. */
static int ts_legacy_decode(struct ts_run *run, const char *url, const struct hs_buf *body,
                            PKCS7 **out)
{
	struct hs_buf der = {0}, text = {0};
	const unsigned char *p;
	int r = 0;

	if (body->data[0] == 0x30) {
		r = hs_buf_append(&der, body->data, body->len);
	} else {
		for (size_t i = 0; r == 0 && i < body->len; i++)
			if (!strchr(" \t\r\n", body->data[i]))
				r = hs_buf_append(&text, &body->data[i], 1);
		if (r == 0)
			r = hs_base64_decode(&der, (const char *)text.data, text.len);
	}
	p = der.data;
	if (r < 0 || der.len == 0 || (*out = d2i_PKCS7(NULL, &p, (long)der.len)) == NULL)
		r = hs_error_set(run->ctx, HS_ERR_FORMAT,
		                 "timestamp server %s: reply is not a legacy Authenticode "
		                 "timestamp",
		                 url);
	hs_buf_free(&der);
	hs_buf_free(&text);
	return r;
}

/* The reply's one SignerInfo must sign our signature value: content equal
 * to it, messageDigest and signature checked by PKCS7_verify (no trust
 * decision here). */
static int ts_legacy_check(struct ts_run *run, const char *url, PKCS7 *reply,
                           const PKCS7_SIGNER_INFO *si)
{
	const ASN1_OCTET_STRING *content;

	if (!PKCS7_type_is_signed(reply) || reply->d.sign == NULL ||
	    sk_PKCS7_SIGNER_INFO_num(reply->d.sign->signer_info) != 1 ||
	    reply->d.sign->contents == NULL || !PKCS7_type_is_data(reply->d.sign->contents))
		return hs_error_set(run->ctx, HS_ERR_FORMAT,
		                    "timestamp server %s: reply is not one SignedData signer", url);
	content = reply->d.sign->contents->d.data;
	if (content == NULL || ASN1_STRING_cmp(content, si->enc_digest) != 0)
		return hs_error_set(run->ctx, HS_ERR_CRYPTO,
		                    "timestamp server %s: reply countersigns other data", url);
	ERR_clear_error();
	if (PKCS7_verify(reply, NULL, NULL, NULL, NULL, PKCS7_NOVERIFY) != 1)
		return hs_error_ssl(run->ctx, HS_ERR_CRYPTO,
		                    "timestamp server %s: reply signature does not verify", url);
	return 0;
}

static int ts_legacy(struct ts_run *run, const char *url, const PKCS7_SIGNER_INFO *si,
                     PKCS7 **reply)
{
	struct hs_buf b64 = {0};
	struct hs_http_response resp = {0};
	int r;

	*reply = NULL;
	if ((r = ts_legacy_request(run->ctx, si, &b64)) < 0 ||
	    (r = ts_post(run, url, "application/octet-stream", b64.data, b64.len, &resp)) < 0 ||
	    (r = ts_legacy_decode(run, url, &resp.body, reply)) < 0)
		goto out;
	r = ts_legacy_check(run, url, *reply, si);
out:
	if (r < 0) {
		PKCS7_free(*reply);
		*reply = NULL;
	}
	hs_buf_free(&b64);
	hs_http_response_free(&resp);
	return r;
}

/* --------------------------------------------------------------- attaching */

static bool ts_is_timestamp_attr(X509_ATTRIBUTE *attr)
{
	const ASN1_OBJECT *obj = X509_ATTRIBUTE_get0_object(attr);
	char text[64];

	if (OBJ_obj2nid(obj) == NID_pkcs9_countersignature)
		return true;
	return OBJ_obj2txt(text, sizeof(text), obj, 1) > 0 && strcmp(text, HS_OID_SPC_RFC3161) == 0;
}

/* Drops existing timestamps so that the new one replaces them. */
static void ts_remove_existing(PKCS7_SIGNER_INFO *si)
{
	for (int i = X509at_get_attr_count(si->unauth_attr) - 1; i >= 0; i--) {
		if (ts_is_timestamp_attr(X509at_get_attr(si->unauth_attr, i)))
			X509_ATTRIBUTE_free(X509at_delete_attr(si->unauth_attr, i));
	}
}

static int ts_add_seq_attr(struct hs_ctx *ctx, PKCS7_SIGNER_INFO *si, ASN1_OBJECT *obj,
                           const uint8_t *der, size_t len)
{
	int ok = obj != NULL && len <= INT32_MAX &&
	         X509at_add1_attr_by_OBJ(&si->unauth_attr, obj, V_ASN1_SEQUENCE, der, (int)len);

	return ok ? 0 : hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot add the timestamp attribute");
}

/* DER order of certificates, as pkcs7.c sorts the SET (authenticode.md 2.5). */
static int ts_cert_cmp(const X509 *const *a, const X509 *const *b)
{
	unsigned char *da = NULL, *db = NULL;
	int la = i2d_X509(*a, &da), lb = i2d_X509(*b, &db), n;

	n = la > 0 && lb > 0 ? memcmp(da, db, (size_t)(la < lb ? la : lb)) : 0;
	if (n == 0)
		n = la - lb;
	OPENSSL_free(da);
	OPENSSL_free(db);
	return n;
}

/* Legacy: the TSA's SignerInfo becomes the counterSignature, its
 * certificates join the outer SignedData's (authenticode.md 3.2). */
static int ts_attach_legacy(struct hs_ctx *ctx, PKCS7 *p7, PKCS7_SIGNER_INFO *si, PKCS7 *reply)
{
	PKCS7_SIGNER_INFO *tsi = sk_PKCS7_SIGNER_INFO_value(reply->d.sign->signer_info, 0);
	STACK_OF(X509) *certs = reply->d.sign->cert;
	unsigned char *der = NULL;
	int len = i2d_PKCS7_SIGNER_INFO(tsi, &der), r;

	if (len <= 0)
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot encode the countersignature");
	r = ts_add_seq_attr(ctx, si, OBJ_nid2obj(NID_pkcs9_countersignature), der, (size_t)len);
	OPENSSL_free(der);
	for (int i = 0; r == 0 && i < sk_X509_num(certs); i++) {
		X509 *x = sk_X509_value(certs, i);
		bool have = false;

		for (int j = 0; !have && j < sk_X509_num(p7->d.sign->cert); j++)
			have = X509_cmp(x, sk_X509_value(p7->d.sign->cert, j)) == 0;
		if (!have && !PKCS7_add_certificate(p7, x))
			r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot add a TSA certificate");
	}
	(void)sk_X509_set_cmp_func(p7->d.sign->cert, ts_cert_cmp);
	sk_X509_sort(p7->d.sign->cert);
	(void)sk_X509_set_cmp_func(p7->d.sign->cert, NULL);
	return r;
}

/* Tries one TSA and attaches its timestamp. */
static int ts_try(struct ts_run *run, const char *url, bool legacy, PKCS7 *p7,
                  PKCS7_SIGNER_INFO *si)
{
	struct hs_buf token = {0};
	ASN1_OBJECT *obj = NULL;
	PKCS7 *reply = NULL;
	int r;

	hs_log(run->ctx, HS_LOG_INFO, "requesting a%s timestamp from %s",
	       legacy ? " legacy Authenticode" : "n RFC 3161", url);
	if (legacy) {
		if ((r = ts_legacy(run, url, si, &reply)) == 0) {
			ts_remove_existing(si);
			r = ts_attach_legacy(run->ctx, p7, si, reply);
		}
	} else if ((r = ts_rfc3161(run, url, si, &token)) == 0) {
		ts_remove_existing(si);
		obj = OBJ_txt2obj(HS_OID_SPC_RFC3161, 1);
		r = ts_add_seq_attr(run->ctx, si, obj, token.data, token.len);
	}
	ASN1_OBJECT_free(obj); /* X509at_add1_attr_by_OBJ() copies it */
	PKCS7_free(reply);
	hs_buf_free(&token);
	return r;
}

/* Remembers why a TSA failed and clears the error for the next one. */
static void ts_note_failure(struct ts_run *run, int r, bool more)
{
	size_t used = strlen(run->failures);

	if (used < sizeof(run->failures) - 1)
		snprintf(run->failures + used, sizeof(run->failures) - used, "%s%s",
		         used > 0 ? "; " : "", hs_ctx_message(run->ctx));
	run->last_err = r;
	hs_log(run->ctx, more ? HS_LOG_WARN : HS_LOG_DEBUG, "%s%s", hs_ctx_message(run->ctx),
	       more ? "; trying the next timestamp server" : "");
	hs_ctx_clear_error(run->ctx);
}

/* Tries the RFC 3161 TSAs (else the legacy ones) in order. */
static int ts_stamp_signer(struct ts_run *run, PKCS7 *p7, PKCS7_SIGNER_INFO *si)
{
	const struct hs_timestamp_opts *o = run->opts;
	bool legacy = o->urls == NULL || o->urls[0] == NULL;
	const char *const *urls = legacy ? o->legacy_urls : o->urls;
	int r = 0;

	if (si->enc_digest == NULL || si->enc_digest->length <= 0)
		return hs_error_set(run->ctx, HS_ERR_FORMAT, "signature value is empty");
	for (size_t i = 0; urls[i] != NULL; i++) {
		if ((r = ts_try(run, urls[i], legacy, p7, si)) == 0)
			return 0;
		if (r == HS_ERR_NOMEM)
			return r;
		ts_note_failure(run, r, urls[i + 1] != NULL);
	}
	return hs_error_set(run->ctx, run->last_err, "timestamping failed: %s", run->failures);
}

static int ts_encode(struct hs_ctx *ctx, PKCS7 *p7, struct hs_buf *out)
{
	unsigned char *der = NULL;
	int len = i2d_PKCS7(p7, &der), r;

	if (len <= 0)
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot encode SignedData");
	r = hs_buf_append(out, der, (size_t)len);
	OPENSSL_free(der);
	return r < 0 ? hs_error_set(ctx, r, "out of memory") : 0;
}

static int ts_decode(struct hs_ctx *ctx, const uint8_t *der, size_t len, PKCS7 **out)
{
	const unsigned char *p = der;

	*out = len > 0 && len <= LONG_MAX ? d2i_PKCS7(NULL, &p, (long)len) : NULL;
	if (*out == NULL || !PKCS7_type_is_signed(*out) || (*out)->d.sign == NULL ||
	    sk_PKCS7_SIGNER_INFO_num((*out)->d.sign->signer_info) != 1) {
		PKCS7_free(*out);
		*out = NULL;
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "signature is not a SignedData with one SignerInfo");
	}
	return 0;
}

static int ts_stamp_p7(struct ts_run *run, PKCS7 *p7, unsigned index);

/* Re-stamps the nested signature number index (1-based) in place. */
static int ts_stamp_nested(struct ts_run *run, PKCS7_SIGNER_INFO *si, unsigned index)
{
	unsigned seen = 0;

	for (int i = 0; i < X509at_get_attr_count(si->unauth_attr); i++) {
		X509_ATTRIBUTE *attr = X509at_get_attr(si->unauth_attr, i);
		char text[64];

		if (OBJ_obj2txt(text, sizeof(text), X509_ATTRIBUTE_get0_object(attr), 1) <= 0 ||
		    strcmp(text, HS_OID_SPC_NESTED_SIGNATURE) != 0)
			continue;
		for (int j = 0; j < X509_ATTRIBUTE_count(attr); j++) {
			ASN1_TYPE *t = X509_ATTRIBUTE_get0_type(attr, j);
			struct hs_buf der = {0};
			PKCS7 *inner = NULL;
			int r;

			if (++seen != index)
				continue;
			if (t == NULL || t->type != V_ASN1_SEQUENCE)
				return hs_error_set(run->ctx, HS_ERR_FORMAT,
				                    "nested signature %u is not a SEQUENCE", index);
			if ((r = ts_decode(run->ctx, t->value.sequence->data,
			                   (size_t)t->value.sequence->length, &inner)) == 0 &&
			    (r = ts_stamp_p7(run, inner, 0)) == 0 &&
			    (r = ts_encode(run->ctx, inner, &der)) == 0 &&
			    !ASN1_STRING_set(t->value.sequence, der.data, (int)der.len))
				r = hs_error_set(run->ctx, HS_ERR_NOMEM, "out of memory");
			PKCS7_free(inner);
			hs_buf_free(&der);
			return r;
		}
	}
	return hs_error_set(run->ctx, HS_ERR_NOTFOUND, "no signature with index %u (%u nested)",
	                    index, seen);
}

static int ts_stamp_p7(struct ts_run *run, PKCS7 *p7, unsigned index)
{
	PKCS7_SIGNER_INFO *si = sk_PKCS7_SIGNER_INFO_value(p7->d.sign->signer_info, 0);

	if (index > 0)
		return ts_stamp_nested(run, si, index);
	return ts_stamp_signer(run, p7, si);
}

int hs_ts_stamp_der(struct hs_ctx *ctx, const struct hs_timestamp_opts *opts, const uint8_t *der,
                    size_t len, unsigned index, struct hs_buf *out)
{
	struct ts_run run = {.ctx = ctx, .opts = opts};
	PKCS7 *p7 = NULL;
	int r;

	if (!hs_ts_wanted(opts))
		return hs_error_set(ctx, HS_ERR_INVALID, "no timestamp server given");
	if (ts_md(opts) == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID, "unsupported timestamp digest");
	if ((r = ts_decode(ctx, der, len, &p7)) < 0 || (r = ts_http_open(&run)) < 0)
		goto out;
	if ((r = ts_stamp_p7(&run, p7, index)) == 0) {
		r = ts_encode(ctx, p7, out);
	} else if (opts->optional && r != HS_ERR_NOMEM && r != HS_ERR_NOTFOUND) {
		hs_log(ctx, HS_LOG_WARN, "%s; signing without a timestamp (--timestamp-optional)",
		       hs_ctx_message(ctx));
		hs_ctx_clear_error(ctx);
		r = hs_buf_append(out, der, len);
		if (r < 0)
			hs_error_set(ctx, r, "out of memory");
	}
out:
	PKCS7_free(p7);
	hs_http_free(run.http);
	return r;
}

/* Copies the file without its signature into out (one streaming pass, as
 * signing does) and embeds the new PKCS#7. The copy uses the primary's
 * digest, so that an MSI pre-hash (MsiDigitalSignatureEx) stays the same. */
static int ts_rewrite(struct hs_ctx *ctx, struct hs_doc *doc, const struct hs_buf *p7,
                      struct hs_out *out)
{
	const EVP_MD *md;
	int r;

	if ((r = hs_nest_primary_md(ctx, p7->data, p7->len, &md)) == 0 &&
	    (r = hs_doc_copy_unsigned(ctx, doc, md, out)) == 0)
		r = doc->format->embed(ctx, doc->state, p7->data, p7->len, out);
	return r;
}

int hs_timestamp_file(struct hs_ctx *ctx, const char *path, const struct hs_timestamp_opts *opts,
                      unsigned index, const char *output)
{
	struct hs_timestamp_opts strict = *opts;
	struct hs_buf der = {0}, stamped = {0};
	struct hs_out out = {.fd = -1};
	struct hs_doc doc;
	int r;

	strict.optional = 0; /* re-timestamping without a timestamp is no result */
	if ((r = hs_doc_open(ctx, &doc, path)) < 0)
		return r;
	if (!doc.format->is_signed(doc.state)) {
		r = hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", path);
		goto out;
	}
	if ((r = doc.format->extract(ctx, doc.state, &der)) < 0)
		goto out;
	if (doc.format->plain_cms) /* NuGet: the standard attribute, one signer */
		r = index == 0 ? hs_cms_timestamp(ctx, &strict, der.data, der.len, &stamped)
		               : hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: no signature %u", path,
		                              index);
	else
		r = hs_ts_stamp_der(ctx, &strict, der.data, der.len, index, &stamped);
	if (r < 0)
		goto out;
	if ((r = hs_out_open(ctx, &out, output ? output : path, doc.in.mode)) < 0 ||
	    (r = ts_rewrite(ctx, &doc, &stamped, &out)) < 0)
		goto out;
	out.source = &doc.in; /* refuse if it changed meanwhile */
	r = hs_out_commit(ctx, &out);
out:
	hs_out_abort(&out);
	hs_buf_free(&der);
	hs_buf_free(&stamped);
	hs_doc_close(&doc);
	return r;
}

/* ------------------------------------------------------------ verification */

static int ts_invalid(struct hs_ts_info *out, const char *what)
{
	char ssl[160] = "";
	unsigned long e = ERR_peek_error();

	if (e != 0)
		ERR_error_string_n(e, ssl, sizeof(ssl));
	snprintf(out->reason, sizeof(out->reason), "timestamp: %s%s%s", what, ssl[0] ? ": " : "",
	         ssl);
	ERR_clear_error();
	return 1;
}

/* Sets gen_time and its text from an ASN.1 time. */
static int ts_set_time(struct hs_ts_info *out, const ASN1_TIME *t)
{
	struct tm tm;

	if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
		return ts_invalid(out, "time is missing or malformed");
	out->gen_time = hs_os_timegm(&tm);
	strftime(out->time_text, sizeof(out->time_text), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return 0;
}

/* The TSA's subject in the one-line form verify uses for signers. */
static void ts_set_subject(struct hs_ts_info *out, X509 *tsa)
{
	BIO *bio = tsa != NULL ? BIO_new(BIO_s_mem()) : NULL;
	int n;

	if (bio != NULL &&
	    X509_NAME_print_ex(bio, X509_get_subject_name(tsa), 0, XN_FLAG_ONELINE) >= 0 &&
	    (n = BIO_read(bio, out->tsa_subject, sizeof(out->tsa_subject) - 1)) > 0)
		out->tsa_subject[n] = '\0';
	BIO_free(bio);
	for (char *c = out->tsa_subject; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
}

/* RFC 3161: OpenSSL's TS verifier checks the token signature, the TSA
 * chain for the timeStamping purpose, the ESS certificate id, and the
 * imprint over the signature value (TS_VFY_DATA). */
static int ts_verify_rfc3161(X509_STORE *store, const PKCS7_SIGNER_INFO *si,
                             const ASN1_STRING *value, struct hs_ts_info *out)
{
	const unsigned char *p = value->data;
	PKCS7 *token = d2i_PKCS7(NULL, &p, value->length);
	TS_TST_INFO *tst = token != NULL ? PKCS7_to_TS_TST_INFO(token) : NULL;
	TS_VERIFY_CTX *vctx = TS_VERIFY_CTX_new();
	BIO *data = BIO_new_mem_buf(si->enc_digest->data, si->enc_digest->length);
	STACK_OF(X509) *signers = NULL;
	int r;

	out->kind = 1;
	if (tst == NULL || vctx == NULL || data == NULL) {
		r = ts_invalid(out, "not an RFC 3161 token");
		goto out;
	}
	TS_VERIFY_CTX_set_flags(vctx, TS_VFY_SIGNATURE | TS_VFY_VERSION | TS_VFY_DATA);
	TS_VERIFY_CTX_set_data(vctx, data);
	data = NULL; /* owned by vctx, and so is the store reference */
	X509_STORE_up_ref(store);
	TS_VERIFY_CTX_set_store(vctx, store);
	if (TS_RESP_verify_token(vctx, token) != 1) {
		r = ts_invalid(out, "token does not verify");
		goto out;
	}
	snprintf(out->digest, sizeof(out->digest), "%s",
	         hs_digest_name(hs_digest_from_nid(OBJ_obj2nid(
	                 TS_MSG_IMPRINT_get_algo(TS_TST_INFO_get_msg_imprint(tst))->algorithm))));
	signers = PKCS7_get0_signers(token, NULL, 0);
	ts_set_subject(out, sk_X509_value(signers, 0));
	r = ts_set_time(out, TS_TST_INFO_get_time(tst));
out:
	sk_X509_free(signers);
	BIO_free(data);
	TS_VERIFY_CTX_free(vctx);
	TS_TST_INFO_free(tst);
	PKCS7_free(token);
	ERR_clear_error();
	return r;
}

/* The counterSignature's certificate, from the outer SignedData. */
static X509 *ts_find_cert(const PKCS7 *p7, const PKCS7_ISSUER_AND_SERIAL *ias)
{
	STACK_OF(X509) *certs = p7->d.sign->cert;

	for (int i = 0; ias != NULL && i < sk_X509_num(certs); i++) {
		X509 *x = sk_X509_value(certs, i);

		if (X509_NAME_cmp(X509_get_issuer_name(x), ias->issuer) == 0 &&
		    ASN1_INTEGER_cmp(X509_get0_serialNumber(x), ias->serial) == 0)
			return x;
	}
	return NULL;
}

/* messageDigest = H(signature value), and the signature over the
 * authenticated attributes as encoded. */
static int ts_legacy_signature(const PKCS7_SIGNER_INFO *si, PKCS7_SIGNER_INFO *tsi, X509 *cert,
                               struct hs_ts_info *out)
{
	const EVP_MD *md = EVP_get_digestbyobj(tsi->digest_alg->algorithm);
	ASN1_OCTET_STRING *digest = PKCS7_digest_from_attributes(tsi->auth_attr);
	unsigned char h[EVP_MAX_MD_SIZE], *attrs = NULL;
	unsigned h_len = 0;
	EVP_MD_CTX *mctx = NULL;
	int len, r = 0;

	if (md == NULL || digest == NULL ||
	    !EVP_Digest(si->enc_digest->data, (size_t)si->enc_digest->length, h, &h_len, md,
	                NULL) ||
	    (unsigned)digest->length != h_len || memcmp(digest->data, h, h_len) != 0)
		return ts_invalid(out, "countersignature does not cover the signature value");
	len = ASN1_item_i2d((ASN1_VALUE *)tsi->auth_attr, &attrs,
	                    ASN1_ITEM_rptr(PKCS7_ATTR_VERIFY));
	mctx = EVP_MD_CTX_new();
	if (len <= 0 || mctx == NULL ||
	    EVP_DigestVerifyInit(mctx, NULL, md, NULL, X509_get0_pubkey(cert)) != 1 ||
	    EVP_DigestVerify(mctx, tsi->enc_digest->data, (size_t)tsi->enc_digest->length, attrs,
	                     (size_t)len) != 1)
		r = ts_invalid(out, "countersignature value does not verify");
	EVP_MD_CTX_free(mctx);
	OPENSSL_free(attrs);
	snprintf(out->digest, sizeof(out->digest), "%s",
	         hs_digest_name(hs_digest_from_nid(EVP_MD_get_type(md))));
	return r;
}

/* The TSA certificate chains to the store for the timeStamping purpose. */
static int ts_legacy_chain(X509_STORE *store, const PKCS7 *p7, X509 *cert, struct hs_ts_info *out)
{
	X509_STORE_CTX *sctx = X509_STORE_CTX_new();
	int r = 0;

	if (sctx == NULL || !X509_STORE_CTX_init(sctx, store, cert, p7->d.sign->cert) ||
	    !X509_STORE_CTX_set_purpose(sctx, X509_PURPOSE_TIMESTAMP_SIGN)) {
		r = ts_invalid(out, "cannot set up TSA chain verification");
	} else if (X509_verify_cert(sctx) != 1) {
		snprintf(out->reason, sizeof(out->reason), "timestamp: TSA certificate: %s",
		         X509_verify_cert_error_string(X509_STORE_CTX_get_error(sctx)));
		r = 1;
	}
	X509_STORE_CTX_free(sctx);
	ERR_clear_error();
	return r;
}

/* Legacy Authenticode counterSignature (authenticode.md 3.2). */
static int ts_verify_legacy(X509_STORE *store, const PKCS7 *p7, const PKCS7_SIGNER_INFO *si,
                            const ASN1_STRING *value, struct hs_ts_info *out)
{
	const unsigned char *p = value->data;
	PKCS7_SIGNER_INFO *tsi = d2i_PKCS7_SIGNER_INFO(NULL, &p, value->length);
	ASN1_TYPE *when = NULL;
	X509 *cert = NULL;
	int r;

	out->kind = 2;
	if (tsi == NULL || tsi->digest_alg == NULL || tsi->enc_digest == NULL) {
		r = ts_invalid(out, "countersignature is malformed");
		goto out;
	}
	if ((cert = ts_find_cert(p7, tsi->issuer_and_serial)) == NULL) {
		r = ts_invalid(out, "TSA certificate is not in the signature");
		goto out;
	}
	if ((r = ts_legacy_signature(si, tsi, cert, out)) != 0 ||
	    (r = ts_legacy_chain(store, p7, cert, out)) != 0)
		goto out;
	ts_set_subject(out, cert);
	when = PKCS7_get_signed_attribute(tsi, NID_pkcs9_signingTime);
	r = when != NULL && (when->type == V_ASN1_UTCTIME || when->type == V_ASN1_GENERALIZEDTIME)
	            ? ts_set_time(out, when->value.utctime)
	            : ts_invalid(out, "countersignature has no signingTime");
out:
	PKCS7_SIGNER_INFO_free(tsi);
	return r;
}

bool hs_ts_present(const PKCS7_SIGNER_INFO *si)
{
	for (int i = 0; i < X509at_get_attr_count(si->unauth_attr); i++)
		if (ts_is_timestamp_attr(X509at_get_attr(si->unauth_attr, i)))
			return true;
	return false;
}

int hs_ts_verify(struct hs_ctx *ctx, X509_STORE *tsa_store, const PKCS7 *p7,
                 const PKCS7_SIGNER_INFO *si, struct hs_ts_info *out)
{
	memset(out, 0, sizeof(*out));
	for (int i = 0; i < X509at_get_attr_count(si->unauth_attr); i++) {
		X509_ATTRIBUTE *attr = X509at_get_attr(si->unauth_attr, i);
		const ASN1_TYPE *t;
		bool legacy;

		if (!ts_is_timestamp_attr(attr))
			continue;
		legacy =
		        OBJ_obj2nid(X509_ATTRIBUTE_get0_object(attr)) == NID_pkcs9_countersignature;
		t = X509_ATTRIBUTE_get0_type(attr, 0);
		out->kind = legacy ? 2 : 1;
		if (X509_ATTRIBUTE_count(attr) != 1 || t == NULL || t->type != V_ASN1_SEQUENCE ||
		    si->enc_digest == NULL)
			return ts_invalid(out, "attribute is not one SEQUENCE");
		if (legacy)
			return ts_verify_legacy(tsa_store, p7, si, t->value.sequence, out);
		return ts_verify_rfc3161(tsa_store, si, t->value.sequence, out);
	}
	return 0;
}
