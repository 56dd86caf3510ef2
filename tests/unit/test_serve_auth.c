/* test_serve_auth.c - `hsmsign serve` authentication: OIDC tokens verified against a
 * JWKS served by a scripted server on 127.0.0.1 (times, audiences, issuers, forged
 * and malformed tokens, key rotation and the refetch rate limit), API tokens, mTLS
 * identities, and the per-key allow policy. */
#include <setjmp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "core/codec.h"
#include "core/core.h"
#include "scripted_server.h"
#include "serve/authn.h"
#include "serve/oidc.h"
#include "serve/policy.h"

#define ISS "https://token.actions.githubusercontent.com"

/* ---- keys, JWKs and tokens ---- */

static EVP_PKEY *rsa1, *rsa2, *rsa_other, *ec1;
static int64_t fake_now;

static int64_t test_clock(void *arg)
{
	(void)arg;
	return fake_now;
}

static char *b64u(const unsigned char *d, size_t n)
{
	char *s = hs_b64url(d, n);

	assert_non_null(s);
	return s;
}

static char *bn_b64u(const EVP_PKEY *k, const char *name)
{
	BIGNUM *bn = NULL;
	unsigned char buf[1024];
	int n;
	char *s;

	assert_int_equal(EVP_PKEY_get_bn_param(k, name, &bn), 1);
	n = BN_bn2bin(bn, buf);
	s = b64u(buf, (size_t)n);
	BN_free(bn);
	return s;
}

/* One JWK (JSON text) for key k named kid. */
static char *jwk(const EVP_PKEY *k, const char *kid)
{
	char *out, *a, *b;

	if (EVP_PKEY_is_a(k, "RSA")) {
		a = bn_b64u(k, OSSL_PKEY_PARAM_RSA_N);
		b = bn_b64u(k, OSSL_PKEY_PARAM_RSA_E);
		out = hs_strprintf("{\"kty\":\"RSA\",\"use\":\"sig\",\"kid\":\"%s\",\"n\":\"%s\","
		                   "\"e\":\"%s\"}",
		                   kid, a, b);
	} else {
		unsigned char pub[65];
		size_t len = 0;

		assert_int_equal(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pub,
		                                                 sizeof(pub), &len),
		                 1);
		assert_int_equal(len, 65);
		a = b64u(pub + 1, 32);
		b = b64u(pub + 33, 32);
		out = hs_strprintf("{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"%s\",\"x\":\"%s\","
		                   "\"y\":\"%s\"}",
		                   kid, a, b);
	}
	free(a);
	free(b);
	assert_non_null(out);
	return out;
}

/* {"keys":[...]} with up to three keys (NULL ends the list). */
static char *jwks(const EVP_PKEY *k1, const char *kid1, const EVP_PKEY *k2, const char *kid2)
{
	char *a = jwk(k1, kid1), *b = k2 ? jwk(k2, kid2) : NULL;
	char *out = hs_strprintf("{\"keys\":[%s%s%s]}", a, b ? "," : "", b ? b : "");

	free(a);
	free(b);
	return out;
}

/* Signs "header.payload" with k for alg; returns the compact JWS. */
static char *sign_jws(EVP_PKEY *k, const char *alg, const char *header_json,
                      const char *payload_json)
{
	char *h = b64u((const unsigned char *)header_json, strlen(header_json));
	char *p = b64u((const unsigned char *)payload_json, strlen(payload_json));
	char *input = hs_strprintf("%s.%s", h, p), *sig64 = NULL, *out;
	const char *md = strstr(alg, "384") ? "SHA384" : strstr(alg, "512") ? "SHA512" : "SHA256";
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	unsigned char sig[1024];
	size_t sig_len = sizeof(sig);

	if (alg[0] == 'n') { /* "none": empty signature */
		out = hs_strprintf("%s.", input);
		goto done;
	}
	assert_int_equal(EVP_DigestSignInit_ex(m, &pctx, md, NULL, NULL, k, NULL), 1);
	if (alg[0] == 'P') {
		assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
		assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 1);
	}
	assert_int_equal(EVP_DigestSign(m, sig, &sig_len, (unsigned char *)input, strlen(input)),
	                 1);
	if (alg[0] == 'E') { /* DER to r||s */
		const unsigned char *p8 = sig;
		ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p8, (long)sig_len);
		unsigned char rs[64];

		assert_non_null(es);
		BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32);
		BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32);
		ECDSA_SIG_free(es);
		sig64 = b64u(rs, 64);
	} else {
		sig64 = b64u(sig, sig_len);
	}
	out = hs_strprintf("%s.%s", input, sig64);
done:
	EVP_MD_CTX_free(m);
	free(h);
	free(p);
	free(input);
	free(sig64);
	assert_non_null(out);
	return out;
}

/* A GitHub-shaped token: claims relative to fake_now; extra is spliced in. */
static char *mint(EVP_PKEY *k, const char *alg, const char *kid, const char *iss, const char *aud,
                  long exp_in, long nbf_in, const char *extra)
{
	char *header = hs_strprintf("{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, kid);
	char *payload = hs_strprintf(
	        "{\"iss\":\"%s\",\"aud\":%s,\"sub\":\"repo:acme/app:ref:refs/heads/main\","
	        "\"repository\":\"acme/app\",\"ref\":\"refs/heads/"
	        "main\",\"environment\":\"release\","
	        "\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld%s%s}",
	        iss, aud, (long long)fake_now - 5, (long long)(fake_now + nbf_in),
	        (long long)(fake_now + exp_in), extra ? "," : "", extra ? extra : "");
	char *t = sign_jws(k, alg, header, payload);

	free(header);
	free(payload);
	return t;
}

static char *bearer(const char *token)
{
	char *s = hs_strprintf("Bearer %s", token);

	assert_non_null(s);
	return s;
}

/* ---- fixture: an authenticator whose JWKS comes from a scripted server ---- */

struct fx {
	struct hs_ctx *ctx;
	struct hs_authn *authn;
	struct srv *srv;
	struct srv_reply script[8];
	char *bodies[8];
};

/* sha256("s3cret-token") in hex, computed in setup(). */
static char token_hash_hex[65];

static void fx_start(struct fx *f, const char *extra_issuer_fields, const char *const *bodies,
                     const int *statuses, size_t n)
{
	char *conf_text;
	json_error_t jerr;
	json_t *conf;

	memset(f, 0, sizeof(*f));
	for (size_t i = 0; i < n; i++) {
		f->bodies[i] = strdup(bodies[i]);
		f->script[i] = (struct srv_reply){.status = statuses ? statuses[i] : 200,
		                                  .headers = "Content-Type: application/json\r\n",
		                                  .body = f->bodies[i]};
	}
	f->srv = srv_start(f->script, n);
	conf_text = hs_strprintf(
	        "{\"issuers\":[{\"issuer\":\"%s\",\"audiences\":[\"hsmsign\",\"other\"],"
	        "\"jwks_uri\":\"%s\"%s}],"
	        "\"api_tokens\":[{\"name\":\"legacy-ci\",\"sha256\":\"%s\"}]}",
	        ISS, srv_url(f->srv, "/jwks"), extra_issuer_fields ? extra_issuer_fields : "",
	        token_hash_hex);
	conf = json_loads(conf_text, 0, &jerr);
	assert_non_null(conf);
	assert_int_equal(hs_ctx_new(&f->ctx), 0);
	log_text[0] = '\0';
	hs_ctx_set_log(f->ctx, log_capture, NULL);
	assert_int_equal(hs_authn_new(f->ctx, conf, &f->authn), 0);
	hs_oidc_set_clock(hs_authn_oidc(f->authn), test_clock, NULL);
	json_decref(conf);
	free(conf_text);
}

static void fx_stop(struct fx *f)
{
	hs_authn_free(f->authn);
	srv_stop(f->srv);
	hs_ctx_free(f->ctx);
	for (size_t i = 0; i < 8; i++)
		free(f->bodies[i]);
}

/* hs_authn_check with "Bearer <token>"; the ctx error is cleared first. */
static int check(struct fx *f, const char *token, struct hs_identity *id)
{
	char *auth = bearer(token);
	int r;

	hs_ctx_clear_error(f->ctx);
	r = hs_authn_check(f->ctx, f->authn, auth, NULL, id);
	/* Whatever happened, no part of the token is in the message. */
	if (strlen(token) > 20) {
		char piece[21];

		memcpy(piece, token + strlen(token) - 20, 20);
		piece[20] = '\0';
		assert_null(strstr(hs_ctx_message(f->ctx), piece));
		assert_null(strstr(log_text, piece));
	}
	free(auth);
	return r;
}

static void expect_refused(struct fx *f, const char *token, const char *reason)
{
	struct hs_identity id;

	assert_int_equal(check(f, token, &id), HS_ERR_AUTH);
	if (strstr(hs_ctx_message(f->ctx), reason) == NULL)
		fail_msg("message '%s' lacks '%s'", hs_ctx_message(f->ctx), reason);
	assert_null(id.claims);
}

/* Accepted, and the JWKS server has answered `reqs` requests so far. */
static void expect_accepted(struct fx *f, const char *token, size_t reqs)
{
	struct hs_identity id;

	assert_int_equal(check(f, token, &id), 0);
	hs_identity_clear(&id);
	assert_int_equal(f->srv->n_reqs, reqs);
}

/* ---- OIDC ---- */

static void good_tokens(void **state)
{
	struct fx f;
	char *body = jwks(rsa1, "k1", ec1, "e1");
	const char *bodies[] = {body};
	struct hs_identity id;
	char *rs, *es, *ps, *arr;

	fx_start(&f, NULL, bodies, NULL, 1);
	rs = mint(rsa1, "RS256", "k1", ISS, "\"hsmsign\"", 300, -5, NULL);
	es = mint(ec1, "ES256", "e1", ISS, "\"hsmsign\"", 300, -5, NULL);
	ps = mint(rsa1, "PS256", "k1", ISS, "\"hsmsign\"", 300, -5, NULL);
	arr = mint(rsa1, "RS384", "k1", ISS, "[\"x\",\"other\"]", 300, -5, NULL);

	assert_int_equal(check(&f, rs, &id), 0);
	assert_string_equal(id.kind, "oidc");
	assert_string_equal(id.name, ISS "|repo:acme/app:ref:refs/heads/main");
	assert_string_equal(json_string_value(json_object_get(id.claims, "repository")),
	                    "acme/app");
	hs_identity_clear(&id);
	assert_null(id.claims);
	for (size_t i = 0; i < 3; i++) {
		const char *t = i == 0 ? es : i == 1 ? ps : arr;

		assert_int_equal(check(&f, t, &id), 0);
		hs_identity_clear(&id);
	}
	/* One fetch served all of them (the cache). */
	assert_int_equal(f.srv->n_reqs, 1);
	assert_string_equal(f.srv->reqs[0].target, "/jwks");
	assert_non_null(strstr(log_text, "fetched JWKS"));
	fx_stop(&f);
	free(body);
	free(rs);
	free(es);
	free(ps);
	free(arr);
}

static void refused_tokens(void **state)
{
	struct fx f;
	char *body = jwks(rsa1, "k1", ec1, "e1");
	const char *bodies[] = {body};
	static const struct {
		const char *alg, *kid, *iss, *aud;
		long exp_in, nbf_in;
		const char *extra, *reason;
		int forge; /* 1: another key signs; 2: payload swapped after signing */
	} cases[] = {
	        {"RS256", "k1", ISS, "\"hsmsign\"", -61, -400, NULL, "token expired", 0},
	        {"RS256", "k1", ISS, "\"hsmsign\"", 300, 61, NULL, "token not yet valid", 0},
	        {"RS256", "k1", ISS, "\"nope\"", 300, -5, NULL, "audience 'nope' not accepted", 0},
	        {"RS256", "k1", ISS, "[\"a\",\"b\"]", 300, -5, NULL, "audience 'a' (and others)",
	         0},
	        {"RS256", "k1", "https://evil.example", "\"hsmsign\"", 300, -5, NULL,
	         "issuer 'https://evil.example' not configured", 0},
	        {"RS256", "k1", ISS, "\"hsmsign\"", 300, -5, NULL, "signature does not verify", 1},
	        {"RS256", "k1", ISS, "\"hsmsign\"", 300, -5, NULL, "signature does not verify", 2},
	        {"none", "k1", ISS, "\"hsmsign\"", 300, -5, NULL, "algorithm 'none' not accepted",
	         0},
	        {"HS256", "k1", ISS, "\"hsmsign\"", 300, -5, NULL, "algorithm 'HS256' not accepted",
	         0},
	        {"ES256", "k1", ISS, "\"hsmsign\"", 300, -5, NULL, "does not fit alg ES256", 0},
	        {"RS256", "e1", ISS, "\"hsmsign\"", 300, -5, NULL, "does not fit alg RS256", 0},
	        {"RS256", "k1", ISS, "\"hsmsign\"", 300, -5, "\"iat\":99999999999",
	         "payload is not base64url JSON", 0}, /* duplicate "iat" */
	};
	struct hs_identity id;

	fx_start(&f, NULL, bodies, NULL, 1);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		EVP_PKEY *k = cases[i].forge == 1 ? rsa_other : cases[i].alg[0] == 'E' ? ec1 : rsa1;
		char *t = mint(k, cases[i].alg, cases[i].kid, cases[i].iss, cases[i].aud,
		               cases[i].exp_in, cases[i].nbf_in, cases[i].extra);

		if (cases[i].forge == 2) { /* another valid payload under the old signature */
			char *other = mint(rsa1, "RS256", "k1", ISS, "\"hsmsign\"", 9999, -5,
			                   "\"admin\":true");
			char *dot1 = strchr(t, '.'), *dot2 = strchr(dot1 + 1, '.');
			char *o1 = strchr(other, '.'), *o2 = strchr(o1 + 1, '.');
			char *swapped = hs_strprintf("%.*s%.*s%s", (int)(dot1 - t), t,
			                             (int)(o2 - o1), o1, dot2);

			free(other);
			free(t);
			t = swapped;
		}
		expect_refused(&f, t, cases[i].reason);
		free(t);
	}
	/* Within the 60 s leeway: accepted. */
	{
		char *t = mint(rsa1, "RS256", "k1", ISS, "\"hsmsign\"", -30, 50, NULL);

		assert_int_equal(check(&f, t, &id), 0);
		hs_identity_clear(&id);
		free(t);
	}
	fx_stop(&f);
	free(body);
}

static void malformed_tokens(void **state)
{
	struct fx f;
	char *body = jwks(rsa1, "k1", NULL, NULL);
	const char *bodies[] = {body};
	char *good, *big, *padded, *noncanon;
	size_t n;

	fx_start(&f, NULL, bodies, NULL, 1);
	good = mint(rsa1, "RS256", "k1", ISS, "\"hsmsign\"", 300, -5, NULL);
	/* Oversized: refused before any parsing. */
	big = malloc(HS_OIDC_TOKEN_MAX + 2);
	memset(big, 'A', HS_OIDC_TOKEN_MAX + 1);
	big[10] = big[20] = '.';
	big[HS_OIDC_TOKEN_MAX + 1] = '\0';
	expect_refused(&f, big, "longer than");
	/* Padding and non-canonical base64url are not accepted. */
	padded = hs_strprintf("%s=", good);
	expect_refused(&f, padded, "not a known API token");
	noncanon = strdup(good);
	n = strlen(noncanon);
	/* The last character of a 256-byte RSA signature carries 4 unused bits,
	 * zero in canonical base64url: setting one changes no decoded byte. */
	{
		static const char alphabet[] =
		        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
		size_t v = (size_t)(strchr(alphabet, noncanon[n - 1]) - alphabet);

		assert_int_equal(v & 15, 0);
		noncanon[n - 1] = alphabet[v | 1];
	}
	expect_refused(&f, noncanon, "signature is not base64url");
	expect_refused(&f, "a.b", "not a known API token");
	expect_refused(&f, "e30.e30.A", "signature is not base64url");
	expect_refused(&f, "e30.e30.", "no 'alg'");
	expect_refused(&f, "e30.e30.AAAA", "no 'alg'");
	expect_refused(&f, "W10.e30.AAAA", "header is not base64url JSON"); /* [] */
	/* Nothing was fetched for any of these. */
	assert_int_equal(f.srv->n_reqs, 0);
	fx_stop(&f);
	free(body);
	free(good);
	free(big);
	free(padded);
	free(noncanon);
}

static void kid_rotation_and_refetch_limit(void **state)
{
	struct fx f;
	char *v1 = jwks(rsa1, "k1", NULL, NULL), *v2 = jwks(rsa1, "k1", rsa2, "k2");
	const char *bodies[] = {v1, v1, v2};
	char *t1, *t2;

	fake_now = 1700000000;
	fx_start(&f, NULL, bodies, NULL, 3);
	t1 = mint(rsa1, "RS256", "k1", ISS, "\"hsmsign\"", 3000, -5, NULL);
	t2 = mint(rsa2, "RS256", "k2", ISS, "\"hsmsign\"", 3000, -5, NULL);
	expect_accepted(&f, t1, 1);
	/* Unknown kid right after a fetch: no refetch within 60 s. */
	fake_now += 30;
	expect_refused(&f, t2, "signing key 'k2' not found");
	assert_int_equal(f.srv->n_reqs, 1);
	/* 61 s after: one refetch, still the old set. */
	fake_now += 31;
	expect_refused(&f, t2, "signing key 'k2' not found");
	assert_int_equal(f.srv->n_reqs, 2);
	/* And not again at once, however many requests come. */
	for (int i = 0; i < 5; i++)
		expect_refused(&f, t2, "not found");
	assert_int_equal(f.srv->n_reqs, 2);
	/* The issuer rotated: the next allowed refetch finds k2. */
	fake_now += 60;
	expect_accepted(&f, t2, 3);
	expect_accepted(&f, t1, 3);
	fx_stop(&f);
	fake_now = (int64_t)time(NULL);
	free(v1);
	free(v2);
	free(t1);
	free(t2);
}

static void max_age_and_fetch_failures(void **state)
{
	struct fx f;
	char *v1 = jwks(rsa1, "k1", NULL, NULL), *v2 = jwks(rsa2, "k2", NULL, NULL);
	const char *bodies[] = {"{\"error\":\"nope\"}", v1, "not json", v2};
	const int statuses[] = {404, 200, 200, 200};
	struct hs_identity id;
	char *t1, *t2;

	fake_now = 1700000000;
	fx_start(&f, ",\"jwks_max_age_seconds\":120", bodies, statuses, 4);
	t1 = mint(rsa1, "RS256", "k1", ISS, "\"hsmsign\"", 3000, -5, NULL);
	t2 = mint(rsa2, "RS256", "k2", ISS, "\"hsmsign\"", 3000, -5, NULL);
	/* The JWKS endpoint fails: a server-side error, not the caller's. */
	hs_ctx_clear_error(f.ctx);
	assert_int_equal(hs_authn_check(f.ctx, f.authn, "Bearer x", NULL, &id), HS_ERR_AUTH);
	assert_int_equal(check(&f, t1, &id), HS_ERR_NETWORK);
	assert_non_null(strstr(hs_ctx_message(f.ctx), "HTTP 404"));
	assert_int_equal(f.srv->n_reqs, 1);
	/* Not retried for 10 s. */
	fake_now += 5;
	assert_int_equal(check(&f, t1, &id), HS_ERR_NETWORK);
	assert_non_null(strstr(hs_ctx_message(f.ctx), "unavailable"));
	assert_int_equal(f.srv->n_reqs, 1);
	fake_now += 6;
	expect_accepted(&f, t1, 2);
	/* After max-age: refetched; a broken answer keeps the cached keys. */
	fake_now += 121;
	expect_accepted(&f, t1, 3);
	assert_non_null(strstr(log_text, "keeping cached JWKS"));
	/* Not retried for 60 s while the cached keys serve... */
	fake_now += 30;
	expect_accepted(&f, t1, 3);
	/* ...then the next refresh replaces them. */
	fake_now += 31;
	expect_accepted(&f, t2, 4);
	expect_refused(&f, t1, "signing key 'k1' not found");
	fx_stop(&f);
	fake_now = (int64_t)time(NULL);
	free(v1);
	free(v2);
	free(t1);
	free(t2);
}

static void discovery(void **state)
{
	char *body = jwks(rsa1, "k1", NULL, NULL), *conf_text, *iss, *disc, *t;
	struct srv_reply script[2];
	struct hs_ctx *ctx;
	struct hs_authn *a;
	struct hs_identity id;
	json_t *conf;
	struct srv *s;

	script[0] = (struct srv_reply){.status = 200, .body = NULL};
	script[1] = (struct srv_reply){.status = 200, .body = body};
	s = srv_start(script, 2);
	iss = strdup(srv_url(s, "/issuer"));
	disc = hs_strprintf("{\"issuer\":\"%s\",\"jwks_uri\":\"%s\"}", iss, srv_url(s, "/keys"));
	script[0].body = disc; /* before the first request arrives */
	conf_text = hs_strprintf("{\"issuers\":[{\"issuer\":\"%s\",\"audiences\":[\"hsmsign\"]}]}",
	                         iss);
	conf = json_loads(conf_text, 0, NULL);
	assert_int_equal(hs_ctx_new(&ctx), 0);
	assert_int_equal(hs_authn_new(ctx, conf, &a), 0);
	t = mint(rsa1, "RS256", "k1", iss, "\"hsmsign\"", 300, -5, NULL);
	{
		char *auth = bearer(t);

		assert_int_equal(hs_authn_check(ctx, a, auth, NULL, &id), 0);
		free(auth);
	}
	assert_string_equal(s->reqs[0].target, "/issuer/.well-known/openid-configuration");
	assert_string_equal(s->reqs[1].target, "/keys");
	hs_identity_clear(&id);
	hs_authn_free(a);
	hs_ctx_free(ctx);
	srv_stop(s);
	json_decref(conf);
	free(conf_text);
	free(iss);
	free(disc);
	free(body);
	free(t);
}

/* Threads verifying at once on a fresh authenticator: one JWKS fetch
 * serves all of them (the cache is shared and locked). */
struct thread_arg {
	struct hs_authn *authn;
	const char *auth;
	int result;
};

static void *verify_thread(void *p)
{
	struct thread_arg *t = p;
	struct hs_ctx *ctx;
	struct hs_identity id;

	if (hs_ctx_new(&ctx) < 0)
		return NULL;
	for (int i = 0; i < 20 && t->result == 0; i++) {
		t->result = hs_authn_check(ctx, t->authn, t->auth, NULL, &id);
		hs_identity_clear(&id);
	}
	hs_ctx_free(ctx);
	return NULL;
}

static void concurrent_checks(void **state)
{
	struct fx f;
	char *body = jwks(rsa1, "k1", ec1, "e1");
	const char *bodies[] = {body};
	char *t1, *t2, *a1, *a2;
	struct thread_arg args[8];
	pthread_t th[8];

	fx_start(&f, NULL, bodies, NULL, 1);
	t1 = mint(rsa1, "RS256", "k1", ISS, "\"hsmsign\"", 300, -5, NULL);
	t2 = mint(ec1, "ES256", "e1", ISS, "\"hsmsign\"", 300, -5, NULL);
	a1 = bearer(t1);
	a2 = bearer(t2);
	for (int i = 0; i < 8; i++) {
		args[i] = (struct thread_arg){.authn = f.authn, .auth = i % 2 ? a1 : a2};
		assert_int_equal(pthread_create(&th[i], NULL, verify_thread, &args[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(args[i].result, 0);
	}
	assert_int_equal(f.srv->n_reqs, 1);
	fx_stop(&f);
	free(body);
	free(t1);
	free(t2);
	free(a1);
	free(a2);
}

/* ---- API tokens, mTLS, reserved claims ---- */

static void api_tokens_and_mtls(void **state)
{
	struct fx f;
	char *body = jwks(rsa1, "k1", NULL, NULL);
	const char *bodies[] = {body};
	struct hs_identity id;
	char *t;

	fx_start(&f, NULL, bodies, NULL, 1);
	assert_int_equal(check(&f, "s3cret-token", &id), 0);
	assert_string_equal(id.kind, "api-token");
	assert_string_equal(id.name, "legacy-ci");
	assert_string_equal(json_string_value(json_object_get(id.claims, "api_token")),
	                    "legacy-ci");
	hs_identity_clear(&id);
	/* Scheme is case-insensitive, surrounding blanks ignored. */
	assert_int_equal(hs_authn_check(f.ctx, f.authn, "bearer   s3cret-token  ", NULL, &id), 0);
	hs_identity_clear(&id);
	expect_refused(&f, "s3cret-tokeN", "not a known API token");
	expect_refused(&f, "", "empty bearer token");
	hs_ctx_clear_error(f.ctx);
	assert_int_equal(hs_authn_check(f.ctx, f.authn, "Basic czNjcmV0", NULL, &id), HS_ERR_AUTH);
	assert_non_null(strstr(hs_ctx_message(f.ctx), "scheme"));
	hs_ctx_clear_error(f.ctx);
	assert_int_equal(hs_authn_check(f.ctx, f.authn, NULL, NULL, &id), HS_ERR_AUTH);
	assert_non_null(strstr(hs_ctx_message(f.ctx), "no bearer token"));
	/* mTLS only. */
	assert_int_equal(hs_authn_check(f.ctx, f.authn, NULL, "CN=build01,O=Acme", &id), 0);
	assert_string_equal(id.kind, "mtls");
	assert_string_equal(id.name, "CN=build01,O=Acme");
	assert_string_equal(json_string_value(json_object_get(id.claims, "mtls_subject")),
	                    "CN=build01,O=Acme");
	hs_identity_clear(&id);
	/* A token's own "api_token"/"mtls_subject" claims are dropped; the verified
	 * certificate subject is added. */
	t = mint(rsa1, "RS256", "k1", ISS, "\"hsmsign\"", 300, -5,
	         "\"api_token\":\"legacy-ci\",\"mtls_subject\":\"CN=root\"");
	{
		char *auth = bearer(t);

		assert_int_equal(hs_authn_check(f.ctx, f.authn, auth, NULL, &id), 0);
		assert_null(json_object_get(id.claims, "api_token"));
		assert_null(json_object_get(id.claims, "mtls_subject"));
		hs_identity_clear(&id);
		assert_int_equal(hs_authn_check(f.ctx, f.authn, auth, "CN=build01", &id), 0);
		assert_string_equal(json_string_value(json_object_get(id.claims, "mtls_subject")),
		                    "CN=build01");
		hs_identity_clear(&id);
		free(auth);
	}
	fx_stop(&f);
	free(body);
	free(t);
}

static void config_errors(void **state)
{
	static const struct {
		const char *conf, *msg;
	} cases[] = {
	        {"{\"issuers\":{}}", "issuers: must be an array"},
	        {"{\"issuers\":[{\"issuer\":\"http://issuer.example\",\"audiences\":[\"a\"]}]}",
	         "issuers[0].issuer: must be an https:// URL"},
	        {"{\"issuers\":[{\"issuer\":\"https://i\"}]}", "issuers[0].audiences: must be a"},
	        {"{\"issuers\":[{\"issuer\":\"https://i\",\"audiences\":[\"\"]}]}",
	         "issuers[0].audiences[0]"},
	        {"{\"issuers\":[{\"issuer\":\"https://"
	         "i\",\"audiences\":[\"a\"],\"audience\":\"a\"}]}",
	         "issuers[0].audience: unknown field"},
	        {"{\"issuers\":[{\"issuer\":\"https://i\",\"audiences\":[\"a\"],"
	         "\"leeway_seconds\":9999}]}",
	         "issuers[0].leeway_seconds: must be an integer from 0 to 600"},
	        {"{\"issuers\":[{\"issuer\":\"https://i\",\"audiences\":[\"a\"]},"
	         "{\"issuer\":\"https://i\",\"audiences\":[\"b\"]}]}",
	         "issuers[1].issuer: duplicate"},
	        {"{\"api_tokens\":[{\"name\":\"x\",\"sha256\":\"abc\"}]}",
	         "api_tokens[0].sha256: must be 64 hex digits"},
	        {"{\"api_tokens\":[{\"name\":\"x\",\"token\":\"abc\"}]}", "api_tokens[0]: must be"},
	};
	struct hs_ctx *ctx;
	struct hs_authn *a;

	assert_int_equal(hs_ctx_new(&ctx), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *conf = json_loads(cases[i].conf, 0, NULL);

		assert_non_null(conf);
		hs_ctx_clear_error(ctx);
		assert_int_equal(hs_authn_new(ctx, conf, &a), HS_ERR_INVALID);
		assert_null(a);
		if (strstr(hs_ctx_message(ctx), cases[i].msg) == NULL)
			fail_msg("case %zu: '%s' lacks '%s'", i, hs_ctx_message(ctx), cases[i].msg);
		json_decref(conf);
	}
	hs_ctx_free(ctx);
}

/* ---- policy ---- */

static void policy(void **state)
{
	static const struct {
		const char *rules, *claims;
		int want;
		const char *why;
	} cases[] = {
	        /* equality on every field of a rule */
	        {"[{\"iss\":\"I\",\"repository\":\"acme/app\",\"ref\":\"refs/heads/main\"}]",
	         "{\"iss\":\"I\",\"repository\":\"acme/app\",\"ref\":\"refs/heads/main\"}", 1,
	         "allow rule 1"},
	        {"[{\"iss\":\"I\",\"repository\":\"acme/app\",\"ref\":\"refs/heads/main\"}]",
	         "{\"iss\":\"I\",\"repository\":\"acme/app\",\"ref\":\"refs/heads/dev\"}", 0,
	         "claim 'ref' is 'refs/heads/dev', not allowed (allow rule 1)"},
	        {"[{\"iss\":\"I\",\"repository\":\"acme/app\"}]",
	         "{\"iss\":\"I\",\"repository\":\"evil/app\"}", 0, "claim 'repository' is"},
	        {"[{\"iss\":\"I\",\"environment\":\"release\"}]", "{\"iss\":\"I\"}", 0,
	         "claim 'environment' missing"},
	        /* globs */
	        {"[{\"iss\":\"I\",\"ref\":\"refs/tags/v*\"}]",
	         "{\"iss\":\"I\",\"ref\":\"refs/tags/v1.2\"}", 1, NULL},
	        {"[{\"iss\":\"I\",\"ref\":\"refs/tags/v*\"}]",
	         "{\"iss\":\"I\",\"ref\":\"refs/heads/v1\"}", 0, "claim 'ref'"},
	        {"[{\"iss\":\"I\",\"sub\":\"repo:acme/*:ref:refs/heads/main\"}]",
	         "{\"iss\":\"I\",\"sub\":\"repo:acme/app:ref:refs/heads/main\"}", 1, NULL},
	        {"[{\"iss\":\"I\",\"sub\":\"*:main\"}]", "{\"iss\":\"I\",\"sub\":\"x:mainx\"}", 0,
	         "claim 'sub'"},
	        {"[{\"iss\":\"I\",\"sub\":\"a*b*c\"}]", "{\"iss\":\"I\",\"sub\":\"aXbYbZc\"}", 1,
	         NULL},
	        {"[{\"iss\":\"I\",\"sub\":\"a*b*c\"}]", "{\"iss\":\"I\",\"sub\":\"aXbYc_\"}", 0,
	         NULL},
	        /* a value without '*' is not a pattern: '?' and '[' are literal */
	        {"[{\"iss\":\"I\",\"ref\":\"refs/heads/ma?n\"}]",
	         "{\"iss\":\"I\",\"ref\":\"refs/heads/main\"}", 0, NULL},
	        /* array claims: any element */
	        {"[{\"iss\":\"I\",\"aud\":\"hsmsign\"}]",
	         "{\"iss\":\"I\",\"aud\":[\"x\",\"hsmsign\"]}", 1, NULL},
	        {"[{\"iss\":\"I\",\"aud\":\"hsmsign\"}]", "{\"iss\":\"I\",\"aud\":[\"x\",\"y\"]}",
	         0, "claim 'aud' does not match"},
	        /* booleans and numbers in their JSON text */
	        {"[{\"iss\":\"I\",\"ref_protected\":\"true\"}]",
	         "{\"iss\":\"I\",\"ref_protected\":true}", 1, NULL},
	        {"[{\"iss\":\"I\",\"repository_id\":\"74\"}]",
	         "{\"iss\":\"I\",\"repository_id\":74}", 1, NULL},
	        /* any rule; the reported mismatch is the first rule meant for this caller */
	        {"[{\"api_token\":\"legacy-ci\"},{\"iss\":\"I\",\"ref\":\"refs/heads/main\"}]",
	         "{\"iss\":\"I\",\"ref\":\"refs/heads/x\"}", 0,
	         "claim 'ref' is 'refs/heads/x', not allowed (allow rule 2)"},
	        {"[{\"iss\":\"I\",\"ref\":\"refs/heads/main\"},{\"api_token\":\"legacy-ci\"}]",
	         "{\"api_token\":\"legacy-ci\"}", 1, "allow rule 2"},
	        {"[{\"api_token\":\"legacy-ci\"}]", "{\"api_token\":\"other\"}", 0,
	         "claim 'api_token'"},
	        {"[{\"mtls_subject\":\"CN=build01,O=Acme\"}]",
	         "{\"mtls_subject\":\"CN=build01,O=Acme\"}", 1, NULL},
	        /* deny by default */
	        {"[]", "{\"iss\":\"I\"}", 0, "no allow rules"},
	        {NULL, "{\"iss\":\"I\"}", 0, "no allow rules"},
	        /* malformed rules are errors, not matches */
	        {"[{}]", "{\"iss\":\"I\"}", HS_ERR_INVALID, "allow[0]: must be a non-empty object"},
	        {"[{\"repository\":\"acme/app\"}]", "{\"repository\":\"acme/app\"}", HS_ERR_INVALID,
	         "must name \"iss\""},
	        {"[{\"iss\":\"I\",\"ref\":[\"a\"]}]", "{\"iss\":\"I\"}", HS_ERR_INVALID,
	         "allow[0].ref: must be a string"},
	        {"{\"iss\":\"I\"}", "{\"iss\":\"I\"}", HS_ERR_INVALID, "allow: must be an array"},
	};
	char why[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *rules = cases[i].rules ? json_loads(cases[i].rules, 0, NULL) : NULL;
		struct hs_identity id = {.kind = "oidc", .name = "x"};
		int r;

		id.claims = json_loads(cases[i].claims, 0, NULL);
		assert_non_null(id.claims);
		assert_true(cases[i].rules == NULL || rules != NULL);
		r = hs_policy_allows(rules, &id, why, sizeof(why));
		if (r != cases[i].want)
			fail_msg("case %zu: %d, want %d (%s)", i, r, cases[i].want, why);
		if (cases[i].why != NULL && strstr(why, cases[i].why) == NULL)
			fail_msg("case %zu: why '%s' lacks '%s'", i, why, cases[i].why);
		assert_int_equal(hs_policy_validate(rules, why, sizeof(why)),
		                 cases[i].want < 0 ? cases[i].want : 0);
		json_decref(rules);
		hs_identity_clear(&id);
	}
}

/* A glob against a long claim stays fast (no exponential backtracking). */
static void policy_glob_bounded(void **state)
{
	char claim[8200], *rules_text, *claims_text;
	struct hs_identity id = {.kind = "oidc"};
	json_t *rules;
	char why[128];
	clock_t t0 = clock();

	memset(claim, 'a', sizeof(claim) - 1);
	claim[sizeof(claim) - 1] = '\0';
	rules_text = hs_strprintf("[{\"iss\":\"I\",\"sub\":\"*a*a*a*a*a*a*a*a*a*b\"}]");
	claims_text = hs_strprintf("{\"iss\":\"I\",\"sub\":\"%s\"}", claim);
	rules = json_loads(rules_text, 0, NULL);
	id.claims = json_loads(claims_text, 0, NULL);
	assert_int_equal(hs_policy_allows(rules, &id, why, sizeof(why)), 0);
	assert_true((double)(clock() - t0) / CLOCKS_PER_SEC < 2.0);
	json_decref(rules);
	hs_identity_clear(&id);
	free(rules_text);
	free(claims_text);
}

static int setup(void **state)
{
	unsigned char d[32];
	unsigned int n = 0;

	rsa1 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	rsa2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	rsa_other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	ec1 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_true(rsa1 && rsa2 && rsa_other && ec1);
	EVP_Digest("s3cret-token", 12, d, &n, EVP_sha256(), NULL);
	for (unsigned i = 0; i < n; i++)
		snprintf(token_hash_hex + 2 * i, 3, "%02x", d[i]);
	fake_now = (int64_t)time(NULL);
	return 0;
}

static int teardown(void **state)
{
	EVP_PKEY_free(rsa1);
	EVP_PKEY_free(rsa2);
	EVP_PKEY_free(rsa_other);
	EVP_PKEY_free(ec1);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(good_tokens),
	        cmocka_unit_test(refused_tokens),
	        cmocka_unit_test(malformed_tokens),
	        cmocka_unit_test(kid_rotation_and_refetch_limit),
	        cmocka_unit_test(max_age_and_fetch_failures),
	        cmocka_unit_test(discovery),
	        cmocka_unit_test(concurrent_checks),
	        cmocka_unit_test(api_tokens_and_mtls),
	        cmocka_unit_test(config_errors),
	        cmocka_unit_test(policy),
	        cmocka_unit_test(policy_glob_bounded),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
