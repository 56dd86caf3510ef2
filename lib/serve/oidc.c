/*
 * oidc.c - verifies OIDC identity tokens (compact JWS) from configured
 * issuers: the signature with a key from the issuer's JWKS (OpenID discovery,
 * fetched with lib/core/http.c and cached), then iss, aud, exp, nbf and iat.
 *
 * Only asymmetric algorithms are accepted (RS256/384/512, PS256/384/512,
 * ES256/384/512); "none" and HS* are refused, and the key must match the
 * algorithm (RSA for RS/PS, the named curve for ES). Every part is strict
 * base64url and bounded in size; JSON with duplicate names is refused.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include "core/codec.h"
#include "core/http.h"
#include "serve/oidc.h"

/* Decoded header and JWKS documents are much smaller than these. */
#define OIDC_HEADER_MAX   4096
#define OIDC_JWKS_MAX     (256 * 1024)
#define OIDC_KEYS_MAX     64
#define OIDC_KID_MAX      128
#define OIDC_LEEWAY_MAX   600
#define OIDC_RSA_MIN_BITS 2048
#define OIDC_RSA_MAX_BITS 8192

struct oidc_alg {
	const char *name;
	char family;      /* 'R' PKCS#1 v1.5, 'P' PSS, 'E' ECDSA */
	const char *md;   /* digest name */
	const char *crv;  /* JWK curve for ES*, else NULL */
	size_t coord_len; /* ES*: bytes of r and of s */
};

static const struct oidc_alg oidc_algs[] = {
        {.name = "RS256", .family = 'R', .md = "SHA256"},
        {.name = "RS384", .family = 'R', .md = "SHA384"},
        {.name = "RS512", .family = 'R', .md = "SHA512"},
        {.name = "PS256", .family = 'P', .md = "SHA256"},
        {.name = "PS384", .family = 'P', .md = "SHA384"},
        {.name = "PS512", .family = 'P', .md = "SHA512"},
        {.name = "ES256", .family = 'E', .md = "SHA256", .crv = "P-256", .coord_len = 32},
        {.name = "ES384", .family = 'E', .md = "SHA384", .crv = "P-384", .coord_len = 48},
        {.name = "ES512", .family = 'E', .md = "SHA512", .crv = "P-521", .coord_len = 66},
};

/* One verification key of a JWKS. */
struct oidc_key {
	char kid[OIDC_KID_MAX + 1];
	char kty;    /* 'R' RSA, 'E' EC */
	char crv[8]; /* EC: "P-256", ... */
	char alg[8]; /* the JWK's "alg", or "" */
	EVP_PKEY *pkey;
};

struct oidc_issuer {
	char *issuer;
	json_t *audiences; /* array of strings */
	char *jwks_uri;    /* configured, or NULL: from discovery */
	int64_t leeway;
	int64_t max_age;

	pthread_mutex_t lock; /* guards everything below */
	struct oidc_key *keys;
	size_t n_keys;
	bool have_keys;
	int64_t fetched_at;   /* last successful fetch */
	int64_t attempted_at; /* last fetch attempt */
};

struct hs_oidc {
	struct oidc_issuer *issuers;
	size_t n_issuers;
	struct hs_http *http;
	int64_t (*now)(void *arg);
	void *now_arg;
};

static int64_t oidc_time(void *arg)
{
	(void)arg;
	return (int64_t)time(NULL);
}

static void oidc_keys_free(struct oidc_key *keys, size_t n)
{
	for (size_t i = 0; i < n; i++)
		EVP_PKEY_free(keys[i].pkey);
	free(keys);
}

/* ---- base64url and JSON ---- */

/* Decodes strict base64url (no padding, no other alphabet, canonical final
 * bits) of at most max decoded bytes into out (NUL-terminated, len excludes
 * it). -1 on any deviation. */
static int oidc_b64url(struct hs_buf *out, const char *s, size_t len, size_t max)
{
	struct hs_buf again = {0};
	int r = -1;

	if (len == 0 || len % 4 == 1 || len / 4 * 3 > max + 3)
		return -1;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return -1;
	}
	if (hs_base64_decode(out, s, len) < 0 || out->len > max)
		goto out;
	/* Canonical: re-encoding gives the same text (no stray low bits). */
	if (hs_base64_encode(&again, out->data, out->len, true) < 0 || again.len != len ||
	    memcmp(again.data, s, len) != 0)
		goto out;
	if (hs_buf_append(out, "", 1) < 0)
		goto out;
	out->len--;
	r = 0;
out:
	hs_buf_free(&again);
	return r;
}

/* Parses a JSON object with duplicate names refused, or NULL. */
static json_t *oidc_json_object(const void *data, size_t len)
{
	json_error_t jerr;
	json_t *v = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);

	if (v != NULL && !json_is_object(v)) {
		json_decref(v);
		v = NULL;
	}
	return v;
}

/* A base64url JWK member (n, e, x, y) as bytes. */
static int oidc_jwk_bytes(const json_t *jwk, const char *name, size_t max, struct hs_buf *out)
{
	const char *s = json_string_value(json_object_get(jwk, name));

	return s == NULL ? -1 : oidc_b64url(out, s, strlen(s), max);
}

/* ---- JWK to EVP_PKEY ---- */

static EVP_PKEY *oidc_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY *pkey = NULL;

	if (params == NULL || pctx == NULL || EVP_PKEY_fromdata_init(pctx) <= 0 ||
	    EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		pkey = NULL;
	EVP_PKEY_CTX_free(pctx);
	OSSL_PARAM_free(params);
	return pkey;
}

/* RSA public key from n and e, 2048-8192 bits, or NULL. */
static EVP_PKEY *oidc_jwk_rsa(const json_t *jwk)
{
	struct hs_buf n = {0}, e = {0};
	BIGNUM *bn_n = NULL, *bn_e = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY *pkey = NULL;
	int bits;

	if (oidc_jwk_bytes(jwk, "n", OIDC_RSA_MAX_BITS / 8 + 1, &n) < 0 ||
	    oidc_jwk_bytes(jwk, "e", 8, &e) < 0)
		goto out;
	bn_n = BN_bin2bn(n.data, (int)n.len, NULL);
	bn_e = BN_bin2bn(e.data, (int)e.len, NULL);
	if (bn_n == NULL || bn_e == NULL || !BN_is_odd(bn_e) || BN_is_one(bn_e))
		goto out;
	bits = BN_num_bits(bn_n);
	if (bits < OIDC_RSA_MIN_BITS || bits > OIDC_RSA_MAX_BITS)
		goto out;
	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e))
		goto out;
	pkey = oidc_fromdata("RSA", bld);
out:
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn_n);
	BN_free(bn_e);
	hs_buf_free(&n);
	hs_buf_free(&e);
	return pkey;
}

/* OpenSSL's group name and coordinate size for a JWK curve, or NULL. */
static const char *oidc_curve(const char *crv, size_t *coord_len)
{
	if (crv == NULL)
		return NULL;
	if (strcmp(crv, "P-256") == 0)
		return *coord_len = 32, "prime256v1";
	if (strcmp(crv, "P-384") == 0)
		return *coord_len = 48, "secp384r1";
	if (strcmp(crv, "P-521") == 0)
		return *coord_len = 66, "secp521r1";
	return NULL;
}

/* EC public key from crv, x and y (a point on the curve), or NULL. */
static EVP_PKEY *oidc_jwk_ec(const json_t *jwk, const char *crv)
{
	struct hs_buf x = {0}, y = {0};
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY *pkey = NULL;
	EVP_PKEY_CTX *check = NULL;
	unsigned char point[1 + 2 * 66];
	size_t coord_len = 0;
	const char *group = oidc_curve(crv, &coord_len);

	if (group == NULL || oidc_jwk_bytes(jwk, "x", coord_len, &x) < 0 ||
	    oidc_jwk_bytes(jwk, "y", coord_len, &y) < 0 || x.len != coord_len || y.len != coord_len)
		goto out;
	point[0] = 0x04;
	memcpy(point + 1, x.data, coord_len);
	memcpy(point + 1 + coord_len, y.data, coord_len);
	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point,
	                                      1 + 2 * coord_len))
		goto out;
	if ((pkey = oidc_fromdata("EC", bld)) == NULL)
		goto out;
	check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (check == NULL || EVP_PKEY_public_check(check) != 1) {
		EVP_PKEY_free(pkey);
		pkey = NULL;
	}
out:
	EVP_PKEY_CTX_free(check);
	OSSL_PARAM_BLD_free(bld);
	hs_buf_free(&x);
	hs_buf_free(&y);
	return pkey;
}

/* Fills k from one JWKS entry; -1 for entries we cannot or must not use
 * (no kid, not for signatures, unsupported type, bad numbers): skipped. */
static int oidc_jwk_key(const json_t *jwk, struct oidc_key *k)
{
	const char *kid = json_string_value(json_object_get(jwk, "kid"));
	const char *kty = json_string_value(json_object_get(jwk, "kty"));
	const char *use = json_string_value(json_object_get(jwk, "use"));
	const char *alg = json_string_value(json_object_get(jwk, "alg"));
	const char *crv = json_string_value(json_object_get(jwk, "crv"));

	memset(k, 0, sizeof(*k));
	if (!json_is_object(jwk) || kid == NULL || kid[0] == '\0' || strlen(kid) > OIDC_KID_MAX ||
	    kty == NULL || (use != NULL && strcmp(use, "sig") != 0) ||
	    (alg != NULL && strlen(alg) >= sizeof(k->alg)))
		return -1;
	snprintf(k->kid, sizeof(k->kid), "%s", kid);
	snprintf(k->alg, sizeof(k->alg), "%s", alg ? alg : "");
	if (strcmp(kty, "RSA") == 0) {
		k->kty = 'R';
		k->pkey = oidc_jwk_rsa(jwk);
	} else if (strcmp(kty, "EC") == 0 && crv != NULL && strlen(crv) < sizeof(k->crv)) {
		k->kty = 'E';
		snprintf(k->crv, sizeof(k->crv), "%s", crv);
		k->pkey = oidc_jwk_ec(jwk, crv);
	}
	return k->pkey != NULL ? 0 : -1;
}

/* Parses a JWKS document into keys (usable entries only; others skipped). */
static int oidc_jwks_parse(struct hs_ctx *ctx, const char *issuer, const char *text, size_t len,
                           struct oidc_key **out, size_t *n_out)
{
	json_t *doc = NULL, *arr;
	struct oidc_key *keys = NULL;
	size_t n = 0, i;
	int r;

	*out = NULL;
	*n_out = 0;
	if (len > OIDC_JWKS_MAX || (doc = oidc_json_object(text, len)) == NULL ||
	    !json_is_array(arr = json_object_get(doc, "keys"))) {
		r = hs_error_set(ctx, HS_ERR_FORMAT,
		                 "JWKS of issuer '%.100s' is not a JSON object with \"keys\"",
		                 issuer);
		goto out;
	}
	if ((keys = calloc(OIDC_KEYS_MAX, sizeof(*keys))) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < json_array_size(arr) && n < OIDC_KEYS_MAX; i++)
		if (oidc_jwk_key(json_array_get(arr, i), &keys[n]) == 0)
			n++;
	if (n == 0) {
		r = hs_error_set(ctx, HS_ERR_FORMAT,
		                 "JWKS of issuer '%.100s' has no usable signing key", issuer);
		goto out;
	}
	*out = keys;
	*n_out = n;
	keys = NULL;
	r = 0;
out:
	if (keys != NULL)
		oidc_keys_free(keys, n);
	json_decref(doc);
	return r;
}

/* ---- fetching ---- */

/* GET url → 200 body, or an error naming what was fetched. */
static int oidc_get(struct hs_ctx *ctx, struct hs_oidc *o, const char *what, const char *url,
                    struct hs_http_response *resp)
{
	const char *headers[] = {"Accept: application/json", NULL};
	struct hs_http_request req = {.method = "GET", .url = url, .headers = headers};
	int r;

	if (strncmp(url, "https://", 8) != 0 && !hs_http_is_loopback_url(url))
		return hs_error_set(ctx, HS_ERR_INVALID, "%s URL '%.200s' is not https", what, url);
	if ((r = hs_http_send(ctx, o->http, &req, resp)) < 0)
		return r;
	if (resp->status != 200)
		return hs_error_set(ctx, HS_ERR_NETWORK, "%s '%.200s': HTTP %ld", what, url,
		                    resp->status);
	if (resp->body.len > OIDC_JWKS_MAX)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s '%.200s' is larger than %d bytes", what,
		                    url, OIDC_JWKS_MAX);
	return 0;
}

/* The issuer's jwks_uri from its OpenID discovery document (free()). */
static int oidc_discover(struct hs_ctx *ctx, struct hs_oidc *o, const struct oidc_issuer *is,
                         char **jwks_uri)
{
	struct hs_http_response resp = {0};
	size_t n = strlen(is->issuer);
	char *url = hs_strprintf("%.*s/.well-known/openid-configuration",
	                         (int)(n > 0 && is->issuer[n - 1] == '/' ? n - 1 : n), is->issuer);
	json_t *doc = NULL;
	const char *iss, *uri;
	int r;

	*jwks_uri = NULL;
	if (url == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = oidc_get(ctx, o, "OpenID configuration", url, &resp)) < 0)
		goto out;
	doc = oidc_json_object(resp.body.data, resp.body.len);
	iss = json_string_value(json_object_get(doc, "issuer"));
	uri = json_string_value(json_object_get(doc, "jwks_uri"));
	/* OpenID Connect Discovery 1.0, 4.3: the document must name this issuer. */
	if (iss == NULL || strcmp(iss, is->issuer) != 0 || uri == NULL) {
		r = hs_error_set(
		        ctx, HS_ERR_FORMAT,
		        "OpenID configuration '%.200s' does not name issuer '%.100s' and a "
		        "jwks_uri",
		        url, is->issuer);
		goto out;
	}
	/* A real issuer's keys come over https; plain http (even to loopback)
	 * only for a loopback test issuer. */
	if (strncmp(uri, "https://", 8) != 0 && !hs_http_is_loopback_url(is->issuer)) {
		r = hs_error_set(ctx, HS_ERR_FORMAT,
		                 "OpenID configuration of '%.100s' names a jwks_uri that is not "
		                 "https",
		                 is->issuer);
		goto out;
	}
	if ((*jwks_uri = strdup(uri)) == NULL)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
out:
	json_decref(doc);
	hs_http_response_free(&resp);
	free(url);
	return r;
}

/* Fetches the issuer's JWKS and replaces its keys. Called with is->lock held. */
static int oidc_fetch(struct hs_ctx *ctx, struct hs_oidc *o, struct oidc_issuer *is, int64_t now)
{
	struct hs_http_response resp = {0};
	struct oidc_key *keys = NULL;
	char *uri = NULL;
	size_t n = 0;
	int r;

	is->attempted_at = now;
	if (is->jwks_uri != NULL)
		uri = strdup(is->jwks_uri);
	else if ((r = oidc_discover(ctx, o, is, &uri)) < 0)
		goto out;
	if (uri == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = oidc_get(ctx, o, "JWKS", uri, &resp)) < 0 ||
	    (r = oidc_jwks_parse(ctx, is->issuer, (const char *)resp.body.data, resp.body.len,
	                         &keys, &n)) < 0)
		goto out;
	oidc_keys_free(is->keys, is->n_keys);
	is->keys = keys;
	is->n_keys = n;
	is->have_keys = true;
	is->fetched_at = now;
	hs_log(ctx, HS_LOG_INFO, "fetched JWKS of issuer %s: %zu signing key(s)", is->issuer, n);
	r = 0;
out:
	hs_http_response_free(&resp);
	free(uri);
	return r;
}

/* Refetches when the cache is empty, older than max-age, or from the
 * future; a failed fetch is not repeated for HS_OIDC_RETRY_INTERVAL (without
 * keys) or HS_OIDC_REFETCH_INTERVAL (with keys, which stay in use). *fetched: whether keys were
 * fetched now. Called with is->lock held. */
static int oidc_refresh(struct hs_ctx *ctx, struct hs_oidc *o, struct oidc_issuer *is, int64_t now,
                        bool *fetched)
{
	bool need = !is->have_keys || now - is->fetched_at >= is->max_age || now < is->fetched_at;
	/* With keys in hand a failing issuer is asked less often: each attempt
	 * can hold this issuer's requests for the HTTP timeout. */
	int64_t interval = is->have_keys ? HS_OIDC_REFETCH_INTERVAL : HS_OIDC_RETRY_INTERVAL;
	bool recent_try = is->attempted_at != 0 && now >= is->attempted_at &&
	                  now - is->attempted_at < interval;

	*fetched = false;
	if (!need)
		return 0;
	if (recent_try) {
		if (is->have_keys)
			return 0;
		return hs_error_set(
		        ctx, HS_ERR_NETWORK,
		        "signing keys of issuer '%.100s' are unavailable (the last fetch "
		        "failed less than %d s ago)",
		        is->issuer, HS_OIDC_RETRY_INTERVAL);
	}
	if (oidc_fetch(ctx, o, is, now) == 0) {
		*fetched = true;
		return 0;
	}
	if (!is->have_keys)
		return hs_ctx_error(ctx);
	hs_log(ctx, HS_LOG_WARN, "keeping cached JWKS of issuer %s: %s", is->issuer,
	       hs_ctx_message(ctx));
	hs_ctx_clear_error(ctx);
	return 0;
}

/* Copies the key named kid into *found with a new reference to its pkey
 * (EVP_PKEY_free it); refetches once on an unknown kid, at most every
 * HS_OIDC_REFETCH_INTERVAL seconds (the issuer may have rotated its keys). */
static int oidc_find_key(struct hs_ctx *ctx, struct hs_oidc *o, struct oidc_issuer *is,
                         const char *kid, struct oidc_key *found)
{
	int64_t now = o->now(o->now_arg);
	bool fetched;
	int r;

	pthread_mutex_lock(&is->lock);
	if ((r = oidc_refresh(ctx, o, is, now, &fetched)) < 0)
		goto out;
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < is->n_keys; i++) {
			if (strcmp(is->keys[i].kid, kid) == 0) {
				*found = is->keys[i];
				EVP_PKEY_up_ref(found->pkey);
				r = 0;
				goto out;
			}
		}
		if (pass == 1 || fetched ||
		    (now >= is->attempted_at && now - is->attempted_at < HS_OIDC_REFETCH_INTERVAL))
			break;
		if (oidc_fetch(ctx, o, is, now) < 0) {
			hs_log(ctx, HS_LOG_WARN, "refetching JWKS of issuer %s: %s", is->issuer,
			       hs_ctx_message(ctx));
			hs_ctx_clear_error(ctx);
			break;
		}
		fetched = true;
	}
	r = hs_error_set(ctx, HS_ERR_AUTH, "signing key '%.64s' not found in the JWKS of '%.100s'",
	                 kid, is->issuer);
out:
	pthread_mutex_unlock(&is->lock);
	return r;
}

/* ---- signature ---- */

static const struct oidc_alg *oidc_alg_find(const char *name)
{
	for (size_t i = 0; i < sizeof(oidc_algs) / sizeof(oidc_algs[0]); i++)
		if (strcmp(oidc_algs[i].name, name) == 0)
			return &oidc_algs[i];
	return NULL;
}

/* JWS ES* signature (r||s) as DER ECDSA-Sig-Value; -1 if malformed. */
static int oidc_ecdsa_der(const struct oidc_alg *alg, const struct hs_buf *sig, unsigned char **der,
                          int *der_len)
{
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *s = NULL;
	int ok = -1;

	*der = NULL;
	if (sig->len != 2 * alg->coord_len || (es = ECDSA_SIG_new()) == NULL)
		goto out;
	r = BN_bin2bn(sig->data, (int)alg->coord_len, NULL);
	s = BN_bin2bn(sig->data + alg->coord_len, (int)alg->coord_len, NULL);
	if (r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s))
		goto out;
	r = s = NULL;
	if ((*der_len = i2d_ECDSA_SIG(es, der)) > 0)
		ok = 0;
out:
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	return ok;
}

/* 1 when sig is alg's signature of input under key, 0 when not, <0 error. */
static int oidc_verify_sig(struct hs_ctx *ctx, const struct oidc_alg *alg,
                           const struct oidc_key *key, const char *input, size_t input_len,
                           const struct hs_buf *sig)
{
	EVP_MD_CTX *mctx = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	unsigned char *der = NULL;
	int der_len = 0, r;

	if (mctx == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if (alg->family == 'E' && oidc_ecdsa_der(alg, sig, &der, &der_len) < 0) {
		r = 0;
		goto out;
	}
	if (EVP_DigestVerifyInit_ex(mctx, &pctx, alg->md, NULL, NULL, key->pkey, NULL) <= 0 ||
	    (alg->family == 'P' &&
	     (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
	      EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) <= 0 ||
	      EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, alg->md, NULL) <= 0)) ||
	    (alg->family == 'R' && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot set up %s verification", alg->name);
		goto out;
	}
	r = EVP_DigestVerify(mctx, der ? der : sig->data, der ? (size_t)der_len : sig->len,
	                     (const unsigned char *)input, input_len) == 1;
out:
	ERR_clear_error();
	OPENSSL_free(der);
	EVP_MD_CTX_free(mctx);
	return r;
}

/* Whether key may verify alg: RSA for RS/PS, the alg's curve for ES, and
 * the JWK's own "alg" when it has one. */
static bool oidc_key_fits(const struct oidc_key *key, const struct oidc_alg *alg)
{
	if (key->alg[0] != '\0' && strcmp(key->alg, alg->name) != 0)
		return false;
	if (alg->family == 'E')
		return key->kty == 'E' && strcmp(key->crv, alg->crv) == 0;
	return key->kty == 'R';
}

/* ---- claims ---- */

/* A NumericDate claim: -1 absent, 0 and *t when a number, -2 otherwise. */
static int oidc_time_claim(const json_t *claims, const char *name, int64_t *t)
{
	const json_t *v = json_object_get(claims, name);

	if (v == NULL)
		return -1;
	if (json_is_integer(v))
		*t = (int64_t)json_integer_value(v);
	else if (json_is_real(v) && json_real_value(v) > -1e15 && json_real_value(v) < 1e15)
		*t = (int64_t)json_real_value(v);
	else
		return -2;
	return 0;
}

static bool oidc_audience_ok(const struct oidc_issuer *is, const char *aud)
{
	size_t i;
	json_t *v;

	json_array_foreach(is->audiences, i, v)
	{
		if (strcmp(json_string_value(v), aud) == 0)
			return true;
	}
	return false;
}

/* aud is a string or an array of strings, one of which is configured. */
static int oidc_check_audience(struct hs_ctx *ctx, const struct oidc_issuer *is,
                               const json_t *claims)
{
	const json_t *aud = json_object_get(claims, "aud");
	const char *first = NULL;
	size_t i;
	json_t *v;

	if (json_is_string(aud)) {
		first = json_string_value(aud);
		if (oidc_audience_ok(is, first))
			return 0;
	} else if (json_is_array(aud)) {
		json_array_foreach(aud, i, v)
		{
			if (!json_is_string(v))
				continue;
			if (first == NULL)
				first = json_string_value(v);
			if (oidc_audience_ok(is, json_string_value(v)))
				return 0;
		}
	}
	if (first == NULL)
		return hs_error_set(ctx, HS_ERR_AUTH, "token has no audience ('aud' claim)");
	return hs_error_set(ctx, HS_ERR_AUTH, "audience '%.100s'%s not accepted", first,
	                    json_is_array(aud) && json_array_size(aud) > 1 ? " (and others)" : "");
}

/* exp (required), nbf and iat against now with the issuer's leeway. */
static int oidc_check_times(struct hs_ctx *ctx, const struct oidc_issuer *is, const json_t *claims,
                            int64_t now)
{
	int64_t exp = 0, nbf = 0, iat = 0;
	int has;

	if ((has = oidc_time_claim(claims, "exp", &exp)) < 0)
		return hs_error_set(ctx, HS_ERR_AUTH, "token has %s expiry ('exp' claim)",
		                    has == -1 ? "no" : "an invalid");
	if (now - is->leeway >= exp)
		return hs_error_set(ctx, HS_ERR_AUTH, "token expired");
	if ((has = oidc_time_claim(claims, "nbf", &nbf)) == -2)
		return hs_error_set(ctx, HS_ERR_AUTH, "token has an invalid 'nbf' claim");
	if (has == 0 && now + is->leeway < nbf)
		return hs_error_set(ctx, HS_ERR_AUTH, "token not yet valid");
	if ((has = oidc_time_claim(claims, "iat", &iat)) == -2)
		return hs_error_set(ctx, HS_ERR_AUTH, "token has an invalid 'iat' claim");
	if (has == 0 && now + is->leeway < iat)
		return hs_error_set(ctx, HS_ERR_AUTH, "token issued in the future");
	return 0;
}

/* ---- the token ---- */

int hs_oidc_is_jwt(const char *token, size_t len)
{
	size_t dots = 0;

	for (size_t i = 0; i < len; i++) {
		char c = token[i];

		if (c == '.')
			dots++;
		else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		           (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return 0;
	}
	return dots == 2;
}

/* The configured issuer whose name is iss, or NULL. */
static struct oidc_issuer *oidc_issuer_find(struct hs_oidc *o, const char *iss)
{
	for (size_t i = 0; i < o->n_issuers; i++)
		if (strcmp(o->issuers[i].issuer, iss) == 0)
			return &o->issuers[i];
	return NULL;
}

/* The parts of a compact JWS, decoded. */
struct oidc_jws {
	json_t *header;
	json_t *claims;
	struct hs_buf sig;
	size_t input_len; /* bytes of "header.payload" */
};

static void oidc_jws_free(struct oidc_jws *j)
{
	json_decref(j->header);
	json_decref(j->claims);
	hs_buf_free(&j->sig);
}

/* Splits and decodes the three parts; the claims are not trusted yet. */
static int oidc_jws_parse(struct hs_ctx *ctx, const char *token, size_t len, struct oidc_jws *j)
{
	struct hs_buf header = {0}, payload = {0};
	const char *dot1, *dot2;
	int r = HS_ERR_AUTH;

	if (len > HS_OIDC_TOKEN_MAX)
		return hs_error_set(ctx, HS_ERR_AUTH, "token longer than %d bytes",
		                    HS_OIDC_TOKEN_MAX);
	if (!hs_oidc_is_jwt(token, len))
		return hs_error_set(ctx, HS_ERR_AUTH, "token is not a JWT (compact JWS)");
	dot1 = memchr(token, '.', len);
	dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
	j->input_len = (size_t)(dot2 - token);
	if (oidc_b64url(&header, token, (size_t)(dot1 - token), OIDC_HEADER_MAX) < 0 ||
	    (j->header = oidc_json_object(header.data, header.len)) == NULL) {
		hs_error_set(ctx, HS_ERR_AUTH, "token header is not base64url JSON");
		goto out;
	}
	if (oidc_b64url(&payload, dot1 + 1, (size_t)(dot2 - dot1 - 1), HS_OIDC_TOKEN_MAX) < 0 ||
	    (j->claims = oidc_json_object(payload.data, payload.len)) == NULL) {
		hs_error_set(ctx, HS_ERR_AUTH, "token payload is not base64url JSON");
		goto out;
	}
	/* An empty signature ("alg": "none") is refused by the alg check. */
	if (len - j->input_len - 1 > 0 &&
	    oidc_b64url(&j->sig, dot2 + 1, len - j->input_len - 1, 1024) < 0) {
		hs_error_set(ctx, HS_ERR_AUTH, "token signature is not base64url");
		goto out;
	}
	r = 0;
out:
	hs_buf_free(&header);
	hs_buf_free(&payload);
	return r;
}

/* The header's alg (asymmetric only) and kid; no "crit" extensions. */
static int oidc_check_header(struct hs_ctx *ctx, const json_t *header, const struct oidc_alg **alg,
                             const char **kid)
{
	const char *name = json_string_value(json_object_get(header, "alg"));

	if (name == NULL)
		return hs_error_set(ctx, HS_ERR_AUTH, "token header has no 'alg'");
	if ((*alg = oidc_alg_find(name)) == NULL)
		return hs_error_set(ctx, HS_ERR_AUTH, "token algorithm '%.16s' not accepted", name);
	if (json_object_get(header, "crit") != NULL)
		return hs_error_set(ctx, HS_ERR_AUTH,
		                    "token header has unsupported 'crit' extensions");
	*kid = json_string_value(json_object_get(header, "kid"));
	if (*kid == NULL || (*kid)[0] == '\0' || strlen(*kid) > OIDC_KID_MAX)
		return hs_error_set(ctx, HS_ERR_AUTH, "token header has no valid 'kid'");
	return 0;
}

int hs_oidc_verify(struct hs_ctx *ctx, struct hs_oidc *o, const char *token, size_t len,
                   json_t **claims)
{
	struct oidc_jws j = {0};
	struct oidc_key key = {0};
	const struct oidc_alg *alg = NULL;
	struct oidc_issuer *is;
	const char *kid = NULL, *iss;
	int r;

	*claims = NULL;
	if ((r = oidc_jws_parse(ctx, token, len, &j)) < 0 ||
	    (r = oidc_check_header(ctx, j.header, &alg, &kid)) < 0)
		goto out;
	if ((iss = json_string_value(json_object_get(j.claims, "iss"))) == NULL) {
		r = hs_error_set(ctx, HS_ERR_AUTH, "token has no issuer ('iss' claim)");
		goto out;
	}
	if ((is = oidc_issuer_find(o, iss)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_AUTH, "issuer '%.100s' not configured", iss);
		goto out;
	}
	if ((r = oidc_find_key(ctx, o, is, kid, &key)) < 0)
		goto out;
	if (!oidc_key_fits(&key, alg)) {
		r = hs_error_set(ctx, HS_ERR_AUTH, "key '%.64s' of '%.100s' does not fit alg %s",
		                 kid, is->issuer, alg->name);
		goto out;
	}
	if ((r = oidc_verify_sig(ctx, alg, &key, token, j.input_len, &j.sig)) <= 0) {
		if (r == 0)
			r = hs_error_set(ctx, HS_ERR_AUTH, "signature does not verify");
		goto out;
	}
	if ((r = oidc_check_times(ctx, is, j.claims, o->now(o->now_arg))) < 0 ||
	    (r = oidc_check_audience(ctx, is, j.claims)) < 0)
		goto out;
	if (!json_is_string(json_object_get(j.claims, "sub"))) {
		r = hs_error_set(ctx, HS_ERR_AUTH, "token has no subject ('sub' claim)");
		goto out;
	}
	*claims = json_incref(j.claims);
	r = 0;
out:
	EVP_PKEY_free(key.pkey);
	oidc_jws_free(&j);
	return r;
}

/* ---- configuration ---- */

static const char *const oidc_issuer_fields[] = {
        "issuer", "audiences", "jwks_uri", "leeway_seconds", "jwks_max_age_seconds", NULL,
};

/* Whether url is https, or http to a loopback host (tests, local issuers). */
static bool oidc_url_ok(const char *url)
{
	return strncmp(url, "https://", 8) == 0 || hs_http_is_loopback_url(url);
}

/* An optional integer field in [lo, hi], or def. */
static int oidc_conf_int(struct hs_ctx *ctx, const json_t *conf, size_t idx, const char *name,
                         int64_t lo, int64_t hi, int64_t def, int64_t *out)
{
	const json_t *v = json_object_get(conf, name);

	*out = def;
	if (v == NULL)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "issuers[%zu].%s: must be an integer from %lld to %lld", idx,
		                    name, (long long)lo, (long long)hi);
	*out = (int64_t)json_integer_value(v);
	return 0;
}

static int oidc_conf_audiences(struct hs_ctx *ctx, const json_t *conf, size_t idx,
                               struct oidc_issuer *is)
{
	const json_t *auds = json_object_get(conf, "audiences");
	size_t i;
	json_t *v;

	if (!json_is_array(auds) || json_array_size(auds) == 0)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "issuers[%zu].audiences: must be a non-empty array of strings",
		                    idx);
	json_array_foreach(auds, i, v)
	{
		if (!json_is_string(v) || json_string_length(v) == 0)
			return hs_error_set(
			        ctx, HS_ERR_INVALID,
			        "issuers[%zu].audiences[%zu]: must be a non-empty string", idx, i);
	}
	is->audiences = json_deep_copy(auds);
	return is->audiences ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

/* One "issuers" entry. */
static int oidc_conf_issuer(struct hs_ctx *ctx, const json_t *conf, size_t idx,
                            struct oidc_issuer *is)
{
	const char *issuer = json_string_value(json_object_get(conf, "issuer"));
	const json_t *uri = json_object_get(conf, "jwks_uri");
	const char *key;
	const json_t *v;
	int r;

	if (!json_is_object(conf))
		return hs_error_set(ctx, HS_ERR_INVALID, "issuers[%zu]: must be an object", idx);
	json_object_foreach((json_t *)conf, key, v)
	{
		size_t k = 0;

		while (oidc_issuer_fields[k] != NULL && strcmp(oidc_issuer_fields[k], key) != 0)
			k++;
		if (oidc_issuer_fields[k] == NULL)
			return hs_error_set(ctx, HS_ERR_INVALID,
			                    "issuers[%zu].%.64s: unknown field", idx, key);
	}
	if (issuer == NULL || !oidc_url_ok(issuer))
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "issuers[%zu].issuer: must be an https:// URL (http:// only on "
		                    "loopback)",
		                    idx);
	if (uri != NULL && (!json_is_string(uri) || !oidc_url_ok(json_string_value(uri))))
		return hs_error_set(
		        ctx, HS_ERR_INVALID,
		        "issuers[%zu].jwks_uri: must be an https:// URL (http:// only on "
		        "loopback)",
		        idx);
	if ((r = oidc_conf_audiences(ctx, conf, idx, is)) < 0 ||
	    (r = oidc_conf_int(ctx, conf, idx, "leeway_seconds", 0, OIDC_LEEWAY_MAX, 60,
	                       &is->leeway)) < 0 ||
	    (r = oidc_conf_int(ctx, conf, idx, "jwks_max_age_seconds", HS_OIDC_REFETCH_INTERVAL,
	                       7 * 86400, HS_OIDC_DEFAULT_MAX_AGE, &is->max_age)) < 0)
		return r;
	is->issuer = strdup(issuer);
	is->jwks_uri = uri ? strdup(json_string_value(uri)) : NULL;
	if (is->issuer == NULL || (uri != NULL && is->jwks_uri == NULL))
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	return 0;
}

/* The JWKS client: short timeouts, as a request waits on it. */
static int oidc_http_new(struct hs_ctx *ctx, struct hs_http **out)
{
	struct hs_http_config cfg = HS_HTTP_CONFIG_INIT;

	cfg.timeout_ms = 10000;
	cfg.max_retries = 2;
	cfg.max_total_ms = 20000;
	cfg.backoff_base_ms = 200;
	cfg.max_retry_after_ms = 2000;
	return hs_http_new(ctx, out, &cfg);
}

int hs_oidc_new(struct hs_ctx *ctx, const json_t *issuers, struct hs_oidc **out)
{
	struct hs_oidc *o;
	size_t i;
	int r;

	*out = NULL;
	if (issuers != NULL && !json_is_array(issuers))
		return hs_error_set(ctx, HS_ERR_INVALID, "issuers: must be an array");
	if ((o = calloc(1, sizeof(*o))) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	o->now = oidc_time;
	o->n_issuers = json_array_size(issuers);
	if (o->n_issuers > 0 && (o->issuers = calloc(o->n_issuers, sizeof(*o->issuers))) == NULL) {
		o->n_issuers = 0;
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < o->n_issuers; i++)
		pthread_mutex_init(&o->issuers[i].lock, NULL);
	for (i = 0; i < o->n_issuers; i++) {
		if ((r = oidc_conf_issuer(ctx, json_array_get(issuers, i), i, &o->issuers[i])) < 0)
			goto out;
		for (size_t k = 0; k < i; k++)
			if (strcmp(o->issuers[k].issuer, o->issuers[i].issuer) == 0) {
				r = hs_error_set(ctx, HS_ERR_INVALID,
				                 "issuers[%zu].issuer: duplicate of issuers[%zu]",
				                 i, k);
				goto out;
			}
	}
	if (o->n_issuers > 0 && (r = oidc_http_new(ctx, &o->http)) < 0)
		goto out;
	*out = o;
	o = NULL;
	r = 0;
out:
	hs_oidc_free(o);
	return r;
}

void hs_oidc_free(struct hs_oidc *o)
{
	if (o == NULL)
		return;
	for (size_t i = 0; i < o->n_issuers; i++) {
		struct oidc_issuer *is = &o->issuers[i];

		free(is->issuer);
		free(is->jwks_uri);
		json_decref(is->audiences);
		oidc_keys_free(is->keys, is->n_keys);
		pthread_mutex_destroy(&is->lock);
	}
	free(o->issuers);
	hs_http_free(o->http);
	free(o);
}

void hs_oidc_set_clock(struct hs_oidc *o, int64_t (*now)(void *arg), void *arg)
{
	o->now = now ? now : oidc_time;
	o->now_arg = arg;
}

int hs_oidc_set_jwks(struct hs_ctx *ctx, struct hs_oidc *o, const char *issuer, const char *jwks,
                     size_t len)
{
	struct oidc_issuer *is = oidc_issuer_find(o, issuer);
	struct oidc_key *keys;
	size_t n;
	int r;

	if (is == NULL)
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "issuer '%.100s' not configured", issuer);
	if ((r = oidc_jwks_parse(ctx, issuer, jwks, len, &keys, &n)) < 0)
		return r;
	pthread_mutex_lock(&is->lock);
	oidc_keys_free(is->keys, is->n_keys);
	is->keys = keys;
	is->n_keys = n;
	is->have_keys = true;
	is->fetched_at = is->attempted_at = o->now(o->now_arg);
	pthread_mutex_unlock(&is->lock);
	return 0;
}
