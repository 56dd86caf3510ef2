/* jwt.c - JSON Web Tokens: client assertions signed with a certificate key, claim peeking. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/rand.h>

#include "auth/source.h"
#include "core/codec.h"

/* Lifetime of a client assertion (Entra wants at most ~10 minutes). */
#define JWT_ASSERTION_LIFETIME 600
/* Longest JWT we decode. */
#define JWT_MAX (64 * 1024)

/* Decodes base64url (padding optional) into a malloc'd NUL-terminated buffer. */
static unsigned char *jwt_b64url_decode(const char *s, size_t len, size_t *out_len)
{
	struct hs_buf b = {0};
	uint8_t *out;

	if (len == 0 || len > JWT_MAX || hs_base64_decode(&b, s, len) < 0 ||
	    hs_buf_append(&b, "", 1) < 0) {
		hs_buf_free(&b);
		return NULL;
	}
	hs_buf_detach(&b, &out, out_len);
	(*out_len)--; /* the NUL */
	return out;
}

/* The claims object of an unverified JWT, or NULL. */
static json_t *jwt_payload(const char *jwt)
{
	const char *dot1, *dot2;
	unsigned char *raw;
	size_t len;
	json_error_t jerr;
	json_t *claims;

	if (jwt == NULL || (dot1 = strchr(jwt, '.')) == NULL ||
	    (dot2 = strchr(dot1 + 1, '.')) == NULL)
		return NULL;
	if ((raw = jwt_b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &len)) == NULL)
		return NULL;
	claims = json_loadb((const char *)raw, len, 0, &jerr);
	free(raw);
	if (claims != NULL && !json_is_object(claims)) {
		json_decref(claims);
		claims = NULL;
	}
	return claims;
}

char *hs_jwt_claim(const char *jwt, const char *claim)
{
	json_t *claims = jwt_payload(jwt);
	const char *v = json_string_value(json_object_get(claims, claim));
	char *copy = v ? strdup(v) : NULL;

	json_decref(claims);
	return copy;
}

int64_t hs_jwt_exp(const char *jwt)
{
	json_t *claims = jwt_payload(jwt);
	int64_t exp = hs_auth_json_time(json_object_get(claims, "exp"));

	json_decref(claims);
	return exp;
}

/* A random (version 4) GUID. */
static int jwt_guid(char out[37])
{
	unsigned char b[16];

	if (RAND_bytes(b, sizeof(b)) != 1)
		return HS_ERR_CRYPTO;
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	         b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
	         b[13], b[14], b[15]);
	return 0;
}

/* The JWS alg and digest for a key: RS256 for RSA, ES256/384/512 by curve size. */
static int jwt_alg(struct hs_ctx *ctx, EVP_PKEY *key, const char **alg, const EVP_MD **md,
                   size_t *ec_field)
{
	int bits = EVP_PKEY_get_bits(key);

	*ec_field = 0;
	if (EVP_PKEY_is_a(key, "RSA")) {
		*alg = "RS256";
		*md = EVP_sha256();
		return 0;
	}
	if (!EVP_PKEY_is_a(key, "EC"))
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "client certificate key type not supported (RSA or EC only)");
	*ec_field = (size_t)(bits + 7) / 8;
	if (bits <= 256) {
		*alg = "ES256";
		*md = EVP_sha256();
	} else if (bits <= 384) {
		*alg = "ES384";
		*md = EVP_sha384();
	} else {
		*alg = "ES512";
		*md = EVP_sha512();
	}
	return 0;
}

/* DER ECDSA-Sig-Value -> JWS r||s, each field_len bytes. */
static int jwt_ecdsa_raw(unsigned char *sig, size_t *sig_len, size_t field_len)
{
	const unsigned char *p = sig;
	const BIGNUM *r, *s;
	ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)*sig_len);
	int ok;

	if (es == NULL)
		return HS_ERR_CRYPTO;
	ECDSA_SIG_get0(es, &r, &s);
	/* sig was sized for the longest DER signature, which exceeds 2 * field_len. */
	ok = BN_bn2binpad(r, sig, (int)field_len) > 0 &&
	     BN_bn2binpad(s, sig + field_len, (int)field_len) > 0;
	ECDSA_SIG_free(es);
	*sig_len = 2 * field_len;
	return ok ? 0 : HS_ERR_CRYPTO;
}

/* "b64url(header).b64url(claims)" for the assertion (malloc). */
static int jwt_signing_input(struct hs_ctx *ctx, const char *alg, X509 *cert, const char *audience,
                             const char *client_id, char **out)
{
	unsigned char sha1[20], sha256[32];
	unsigned int n1 = 0, n256 = 0;
	char guid[37], *x5t = NULL, *x5t256 = NULL, *h = NULL, *c = NULL, *hb = NULL, *cb = NULL;
	json_int_t now = (json_int_t)time(NULL);
	json_t *header = NULL, *claims = NULL;
	size_t n;
	int r;

	*out = NULL;
	if (!X509_digest(cert, EVP_sha1(), sha1, &n1) ||
	    !X509_digest(cert, EVP_sha256(), sha256, &n256) || jwt_guid(guid) < 0) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot hash the client certificate");
		goto out;
	}
	x5t = hs_b64url(sha1, n1);
	x5t256 = hs_b64url(sha256, n256);
	header = json_pack("{s:s, s:s, s:s?, s:s?}", "alg", alg, "typ", "JWT", "x5t", x5t,
	                   "x5t#S256", x5t256);
	claims = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "aud", audience, "iss", client_id,
	                   "sub", client_id, "jti", guid, "nbf", now, "iat", now, "exp",
	                   now + JWT_ASSERTION_LIFETIME);
	h = header ? json_dumps(header, JSON_COMPACT) : NULL;
	c = claims ? json_dumps(claims, JSON_COMPACT) : NULL;
	hb = h ? hs_b64url((unsigned char *)h, strlen(h)) : NULL;
	cb = c ? hs_b64url((unsigned char *)c, strlen(c)) : NULL;
	if (x5t == NULL || x5t256 == NULL || hb == NULL || cb == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory building the client assertion");
		goto out;
	}
	n = strlen(hb) + strlen(cb) + 2;
	if ((*out = malloc(n)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	snprintf(*out, n, "%s.%s", hb, cb);
	r = 0;
out:
	json_decref(header);
	json_decref(claims);
	free(x5t);
	free(x5t256);
	free(h);
	free(c);
	free(hb);
	free(cb);
	return r;
}

int hs_jwt_client_assertion(struct hs_ctx *ctx, EVP_PKEY *key, X509 *cert, const char *audience,
                            const char *client_id, char **out)
{
	EVP_MD_CTX *md_ctx = NULL;
	const EVP_MD *md = NULL;
	const char *alg = NULL;
	unsigned char *sig = NULL;
	size_t sig_len = 0, field, n;
	char *input = NULL, *sig_b64 = NULL;
	int r;

	*out = NULL;
	if ((r = jwt_alg(ctx, key, &alg, &md, &field)) < 0 ||
	    (r = jwt_signing_input(ctx, alg, cert, audience, client_id, &input)) < 0)
		goto out;
	if ((md_ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit(md_ctx, NULL, md, NULL, key) != 1 ||
	    EVP_DigestSign(md_ctx, NULL, &sig_len, (unsigned char *)input, strlen(input)) != 1 ||
	    (sig = OPENSSL_malloc(sig_len)) == NULL ||
	    EVP_DigestSign(md_ctx, sig, &sig_len, (unsigned char *)input, strlen(input)) != 1) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "signing the client assertion failed");
		goto out;
	}
	if (field > 0 && jwt_ecdsa_raw(sig, &sig_len, field) < 0) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "malformed ECDSA signature");
		goto out;
	}
	if ((sig_b64 = hs_b64url(sig, sig_len)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	n = strlen(input) + strlen(sig_b64) + 2;
	if ((*out = OPENSSL_secure_malloc(n)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	snprintf(*out, n, "%s.%s", input, sig_b64);
	r = 0;
out:
	EVP_MD_CTX_free(md_ctx);
	OPENSSL_free(sig);
	free(input);
	if (sig_b64 != NULL)
		OPENSSL_cleanse(sig_b64, strlen(sig_b64));
	free(sig_b64);
	return r;
}
