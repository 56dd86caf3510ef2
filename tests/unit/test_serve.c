/*
 * test_serve.c - the `hsmsign serve` dispatcher without sockets
 * (lib/serve/dispatch.c, config.c, keyring.c): every route, Key Vault's
 * wire format and errors, the 401 challenge, limits (413, 429, 503),
 * version derivation, algorithm and digest length checks, config errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "core/codec.h"
#include "serve_int.h"

#define TOKEN "unit-test-token"
/* sha256("unit-test-token") */
static char token_sha256[65];
static char fixtures[512];

static char *fx(const char *name)
{
	static char buf[4][600];
	static int i;

	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s/pki/%s", fixtures, name);
	return buf[i];
}

static json_t *config(const char *limits_json)
{
	json_t *limits = limits_json ? json_loads(limits_json, 0, NULL) : json_object();
	json_t *root = json_pack("{s:s, s:[{s:s, s:s}], s:o, s:{s:{s:s, s:s, s:[s], s:[{s:s}]},"
	                         " s:{s:s, s:s, s:[s], s:[{s:s}]}, s:{s:s, s:s, s:[s]}}}",
	                         "listen", "127.0.0.1:0", "api_tokens", "name", "ci", "sha256",
	                         token_sha256, "limits", limits, "keys", "codesign", "provider",
	                         "file", "key", fx("leaf-rsa2048.key"), "certificates",
	                         fx("leaf-rsa2048-chain.pem"), "allow", "api_token", "ci", "ec",
	                         "provider", "file", "key", fx("leaf-ec256.key"), "certificates",
	                         fx("leaf-ec256-chain.pem"), "allow", "api_token", "ci", "closed",
	                         "provider", "file", "key", fx("leaf-rsa2048.key"), "certificates",
	                         fx("leaf-rsa2048-chain.pem"));
	assert_non_null(root);
	return root;
}

/* A service from a parsed configuration (consumed). */
static struct hs_serve *service_from(json_t *root)
{
	struct hs_serve *s = NULL;
	struct hs_ctx *ctx;

	assert_non_null(root);
	assert_int_equal(hs_ctx_new(&ctx), 0);
	if (hs_serve_new_json(ctx, root, NULL, NULL, NULL, &s) < 0)
		fail_msg("hs_serve_new_json: %s", hs_ctx_message(ctx));
	json_decref(root);
	hs_ctx_free(ctx);
	return s;
}

static struct hs_serve *service(const char *limits_json)
{
	return service_from(config(limits_json));
}

struct call {
	struct hs_serve_response resp;
	json_t *json;
};

static void call(struct hs_serve *s, struct call *c, const char *method, const char *path,
                 const char *token, const char *body)
{
	char auth[256];
	struct hs_serve_header headers[2] = {{"Host", "signer.test:8443"}, {"Authorization", auth}};
	struct hs_serve_request req = {.method = method,
	                               .path = path,
	                               .headers = headers,
	                               .n_headers = token ? 2 : 1,
	                               .body = (const uint8_t *)body,
	                               .body_len = body ? strlen(body) : 0,
	                               .client_addr = "192.0.2.7"};

	snprintf(auth, sizeof(auth), "Bearer %s", token ? token : "");
	hs_serve_response_clear(&c->resp);
	json_decref(c->json);
	hs_serve_handle_sync(s, &req, &c->resp);
	c->json = c->resp.body ? json_loadb(c->resp.body, c->resp.body_len, 0, NULL) : NULL;
}

static void call_clear(struct call *c)
{
	hs_serve_response_clear(&c->resp);
	json_decref(c->json);
	c->json = NULL;
}

static const char *header(const struct call *c, const char *name)
{
	for (size_t i = 0; i < c->resp.n_headers; i++)
		if (strcmp(c->resp.headers[i].name, name) == 0)
			return c->resp.headers[i].value;
	return NULL;
}

static const char *error_code(const struct call *c)
{
	return json_string_value(json_object_get(json_object_get(c->json, "error"), "code"));
}

static X509 *load_cert(const char *name)
{
	FILE *f = fopen(fx(name), "r");
	X509 *x;

	assert_non_null(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

/* The version: the first 32 hex digits of SHA-256 over the leaf's DER. */
static void expected_version(const char *leaf, char out[33])
{
	X509 *x = load_cert(leaf);
	unsigned char *der = NULL, md[32];
	int n = i2d_X509(x, &der);

	SHA256(der, (size_t)n, md);
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	OPENSSL_free(der);
	X509_free(x);
}

static char *sign_body(const char *alg, const uint8_t *digest, size_t len)
{
	char *v = hs_b64url(digest, len),
	     *body = hs_strprintf("{\"alg\":\"%s\",\"value\":\"%s\"}", alg, v);

	free(v);
	return body;
}

static void test_routes(void **state)
{
	struct hs_serve *s = service(NULL);
	struct call c = {0};
	char version[33], path[256], want[256];
	const char *kid;

	(void)state;
	expected_version("leaf-rsa2048.pem", version);

	call(s, &c, "GET", "/healthz", NULL, NULL);
	assert_int_equal(c.resp.status, 200);
	assert_string_equal(c.resp.body, "ok\n");

	call(s, &c, "GET", "/certificates/codesign", TOKEN, NULL);
	assert_int_equal(c.resp.status, 200);
	kid = json_string_value(json_object_get(c.json, "kid"));
	snprintf(want, sizeof(want), "http://signer.test:8443/keys/codesign/%s", version);
	assert_string_equal(kid, want);
	assert_int_equal(json_array_size(json_object_get(c.json, "x5c")), 2);
	assert_string_equal(json_string_value(json_array_get(json_object_get(c.json, "x5c"), 0)),
	                    json_string_value(json_object_get(c.json, "cer")));

	snprintf(path, sizeof(path), "/certificates/codesign/%s/", version);
	call(s, &c, "GET", path, TOKEN, NULL);
	assert_int_equal(c.resp.status, 200);

	snprintf(path, sizeof(path), "/keys/codesign/%s", version);
	call(s, &c, "GET", path, TOKEN, NULL);
	assert_int_equal(c.resp.status, 200);
	assert_string_equal(
	        json_string_value(json_object_get(json_object_get(c.json, "key"), "kty")), "RSA");
	assert_non_null(json_object_get(json_object_get(c.json, "key"), "n"));

	call(s, &c, "GET", "/keys/ec", TOKEN, NULL);
	assert_int_equal(c.resp.status, 200);
	assert_string_equal(
	        json_string_value(json_object_get(json_object_get(c.json, "key"), "crv")), "P-256");

	call(s, &c, "GET", "/metrics", NULL, NULL);
	assert_int_equal(c.resp.status, 200);
	assert_non_null(strstr(c.resp.body,
	                       "hsmsign_requests_total{route=\"certificate\",status=\"200\"} 2"));
	assert_non_null(strstr(c.resp.body, "hsmsign_queue_depth{key=\"ec\"} 0"));
	call_clear(&c);
	hs_serve_free(s);
}

static void test_sign_rsa_verifies(void **state)
{
	struct hs_serve *s = service(NULL);
	struct call c = {0};
	uint8_t digest[32];
	struct hs_buf sig = {0};
	char *body;
	X509 *x = load_cert("leaf-rsa2048.pem");
	EVP_PKEY_CTX *vctx;

	(void)state;
	for (int i = 0; i < 32; i++)
		digest[i] = (uint8_t)(i * 7);
	body = sign_body("RS256", digest, sizeof(digest));
	call(s, &c, "POST", "/keys/codesign/sign", TOKEN, body);
	free(body);
	assert_int_equal(c.resp.status, 200);
	const char *v = json_string_value(json_object_get(c.json, "value"));
	assert_non_null(v);
	assert_int_equal(hs_base64_decode(&sig, v, strlen(v)), 0);
	vctx = EVP_PKEY_CTX_new(X509_get0_pubkey(x), NULL);
	assert_int_equal(EVP_PKEY_verify_init(vctx), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(vctx, RSA_PKCS1_PADDING), 1);
	assert_int_equal(EVP_PKEY_CTX_set_signature_md(vctx, EVP_sha256()), 1);
	assert_int_equal(EVP_PKEY_verify(vctx, sig.data, sig.len, digest, sizeof(digest)), 1);
	/* A different digest does not verify with that signature. */
	digest[0] ^= 1;
	assert_int_not_equal(EVP_PKEY_verify(vctx, sig.data, sig.len, digest, sizeof(digest)), 1);
	EVP_PKEY_CTX_free(vctx);
	X509_free(x);
	hs_buf_free(&sig);
	call_clear(&c);
	hs_serve_free(s);
}

static void test_sign_checks(void **state)
{
	static const struct {
		const char *key, *alg;
		size_t len;
		int status;
		const char *needle;
	} cases[] = {
	        {"codesign", "RS256", 32, 200, NULL},
	        {"codesign", "RS384", 48, 200, NULL},
	        {"codesign", "RS512", 64, 200, NULL},
	        {"codesign", "RS256", 31, 400, "expected 32"},
	        {"codesign", "RS384", 32, 400, "expected 48"},
	        {"codesign", "ES256", 32, 400, "not supported by key"},
	        {"codesign", "PS256", 32, 400, "PKCS#1 v1.5"},
	        {"codesign", "XX1", 32, 400, "Invalid algorithm"},
	        {"codesign", "RSNULL", 32, 400, "DigestInfo"},
	        {"ec", "ES256", 32, 200, NULL},
	        {"ec", "ES384", 48, 400, "not supported by key"},
	        {"ec", "RS256", 32, 400, "not supported by key"},
	        {"ec", "ES256", 64, 400, "expected 32"},
	};
	struct hs_serve *s = service(NULL);
	struct call c = {0};
	uint8_t digest[64] = {1, 2, 3};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char path[64], *body = sign_body(cases[i].alg, digest, cases[i].len);

		snprintf(path, sizeof(path), "/keys/%s/sign", cases[i].key);
		call(s, &c, "POST", path, TOKEN, body);
		free(body);
		if (c.resp.status != cases[i].status)
			fail_msg("case %zu: HTTP %d: %s", i, c.resp.status, c.resp.body);
		if (cases[i].needle && !strstr(c.resp.body, cases[i].needle))
			fail_msg("case %zu: %s lacks '%s'", i, c.resp.body, cases[i].needle);
		if (cases[i].status == 200 && cases[i].key[0] == 'e') {
			const char *v = json_string_value(json_object_get(c.json, "value"));
			struct hs_buf raw = {0};

			assert_int_equal(hs_base64_decode(&raw, v, strlen(v)), 0);
			assert_int_equal(raw.len, 64); /* r||s, not DER */
			hs_buf_free(&raw);
		}
	}
	/* RSNULL with a SHA-1 DigestInfo is accepted. */
	{
		uint8_t di[35] = {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e,
		                  0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14};
		char *body = sign_body("RSNULL", di, sizeof(di));

		call(s, &c, "POST", "/keys/codesign/sign", TOKEN, body);
		free(body);
		assert_int_equal(c.resp.status, 200);
	}
	call_clear(&c);
	hs_serve_free(s);
}

static void test_errors(void **state)
{
	static const struct {
		const char *method, *path, *token, *body;
		int status;
		const char *code;
	} cases[] = {
	        {"GET", "/certificates/missing", TOKEN, NULL, 404, "CertificateNotFound"},
	        {"GET", "/keys/missing", TOKEN, NULL, 404, "KeyNotFound"},
	        {"GET", "/keys/codesign/00000000000000000000000000000000", TOKEN, NULL, 404,
	         "KeyNotFound"},
	        {"GET", "/keys/codesign/sign", TOKEN, NULL, 405, "MethodNotAllowed"},
	        {"PUT", "/certificates/codesign", TOKEN, NULL, 405, "MethodNotAllowed"},
	        {"POST", "/metrics", NULL, NULL, 405, "MethodNotAllowed"},
	        {"GET", "/", NULL, NULL, 404, "NotFound"},
	        {"GET", "/keys//codesign", TOKEN, NULL, 404, "NotFound"},
	        {"GET", "/keys/a/b/c/d/e", TOKEN, NULL, 404, "NotFound"},
	        {"POST", "/keys/codesign/sign", TOKEN, "", 400, "BadParameter"},
	        {"POST", "/keys/codesign/sign", TOKEN, "[1]", 400, "BadParameter"},
	        {"POST", "/keys/codesign/sign", TOKEN, "{\"alg\":\"RS256\",\"value\":\"!!\"}", 400,
	         "BadParameter"},
	        {"GET", "/certificates/closed", TOKEN, NULL, 403, "Forbidden"},
	        {"GET", "/certificates/codesign", NULL, NULL, 401, "Unauthorized"},
	        {"GET", "/certificates/codesign", "bad", NULL, 401, "Unauthorized"},
	};
	struct hs_serve *s = service(NULL);
	struct call c = {0};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		call(s, &c, cases[i].method, cases[i].path, cases[i].token, cases[i].body);
		if (c.resp.status != cases[i].status || !error_code(&c) ||
		    strcmp(error_code(&c), cases[i].code) != 0)
			fail_msg("case %zu (%s %s): HTTP %d %s", i, cases[i].method, cases[i].path,
			         c.resp.status, c.resp.body);
	}
	/* The 401 carries Key Vault's challenge naming this server. */
	call(s, &c, "GET", "/certificates/codesign", NULL, NULL);
	assert_string_equal(header(&c, "WWW-Authenticate"),
	                    "Bearer authorization=\"http://signer.test:8443/hsmsign\", "
	                    "resource=\"http://signer.test:8443\"");
	/* 403 names the rule problem, never a token. */
	call(s, &c, "GET", "/certificates/closed", TOKEN, NULL);
	assert_non_null(strstr(c.resp.body, "deny by default"));
	assert_null(strstr(c.resp.body, TOKEN));
	call(s, &c, "GET", "/keys/codesign/sign", TOKEN, NULL);
	assert_string_equal(header(&c, "Allow"), "POST");
	call_clear(&c);
	hs_serve_free(s);
}

static void test_limits(void **state)
{
	struct hs_serve *s = service("{\"max_queue\": 0, \"requests_per_second_per_client\": 0.01,"
	                             " \"burst\": 3}");
	struct call c = {0};
	uint8_t digest[32] = {0};
	char *body = sign_body("RS256", digest, 32);
	struct hs_serve_header h[1] = {{"Authorization", "Bearer " TOKEN}};
	struct hs_serve_request big = {.method = "POST",
	                               .path = "/keys/codesign/sign",
	                               .headers = h,
	                               .n_headers = 1,
	                               .body_truncated = true,
	                               .client_addr = "192.0.2.99"};

	(void)state;
	/* Queue of 0: every signature is refused with 503 + Retry-After. */
	call(s, &c, "POST", "/keys/codesign/sign", TOKEN, body);
	assert_int_equal(c.resp.status, 503);
	assert_non_null(header(&c, "Retry-After"));
	/* Oversized body. */
	hs_serve_response_clear(&c.resp);
	hs_serve_handle_sync(s, &big, &c.resp);
	assert_int_equal(c.resp.status, 413);
	/* 192.0.2.7 may send 3 (burst; the sign above was one): the 4th is
	 * throttled. */
	call(s, &c, "GET", "/certificates/codesign", TOKEN, NULL);
	assert_int_equal(c.resp.status, 200);
	call(s, &c, "GET", "/certificates/codesign", TOKEN, NULL);
	assert_int_equal(c.resp.status, 200);
	call(s, &c, "GET", "/certificates/codesign", TOKEN, NULL);
	assert_int_equal(c.resp.status, 429);
	assert_non_null(header(&c, "Retry-After"));
	/* /healthz is not rate limited. */
	call(s, &c, "GET", "/healthz", NULL, NULL);
	assert_int_equal(c.resp.status, 200);
	free(body);
	call_clear(&c);
	hs_serve_free(s);
}

/* A service with one key of `leaf` and trust_proxy as given. */
static struct hs_serve *service_one(const char *leaf, int trust_proxy)
{
	char conf[2048], key[64], chain[64];

	snprintf(key, sizeof(key), "%s.key", leaf);
	snprintf(chain, sizeof(chain), "%s-chain.pem", leaf);
	snprintf(conf, sizeof(conf),
	         "{\"listen\":\"127.0.0.1:0\",\"trust_proxy\":%s,"
	         "\"api_tokens\":[{\"name\":\"ci\",\"sha256\":\"%s\"}],"
	         "\"keys\":{\"k\":{\"provider\":\"file\",\"key\":\"%s\","
	         "\"certificates\":[\"%s\"],\"allow\":[{\"api_token\":\"ci\"}]}}}",
	         trust_proxy ? "true" : "false", token_sha256, fx(key), fx(chain));
	return service_from(json_loads(conf, 0, NULL));
}

static void test_proxy_health_names(void **state)
{
	struct hs_serve_header h[3] = {{"Authorization", "Bearer " TOKEN},
	                               {"X-Forwarded-Host", "signer.example, proxy.internal"},
	                               {"X-Forwarded-Proto", "https"}};
	struct hs_serve_request req = {.method = "GET",
	                               .path = "/keys/k",
	                               .headers = h,
	                               .n_headers = 3,
	                               .client_addr = "a"};
	struct hs_serve *s;
	struct call c = {0};
	const char *kid;

	(void)state;
	/* trust_proxy: ids name the public URL; without it, the Host header. */
	for (int trust = 0; trust < 2; trust++) {
		s = service_one("leaf-rsa2048", trust);
		hs_serve_response_clear(&c.resp);
		hs_serve_handle_sync(s, &req, &c.resp);
		json_decref(c.json);
		c.json = json_loadb(c.resp.body, c.resp.body_len, 0, NULL);
		assert_int_equal(c.resp.status, 200);
		kid = json_string_value(json_object_get(json_object_get(c.json, "key"), "kid"));
		assert_non_null(kid);
		assert_true(strncmp(kid,
		                    trust ? "https://signer.example/keys/k/"
		                          : "http://localhost/keys/k/",
		                    trust ? 30 : 24) == 0);
		hs_serve_free(s);
	}
	/* An expired certificate: /healthz says 503 and names the key. */
	s = service_one("leaf-expired", 0);
	call(s, &c, "GET", "/healthz", NULL, NULL);
	assert_int_equal(c.resp.status, 503);
	assert_non_null(strstr(c.resp.body, "key k "));
	assert_int_equal(hs_serve_healthy(s), 0);
	/* Names outside Key Vault's alphabet are refused before anything. */
	call(s, &c, "GET", "/keys/k%00", TOKEN, NULL);
	assert_int_equal(c.resp.status, 400);
	call(s, &c, "GET", "/keys/k/\xff\xfe", TOKEN, NULL);
	assert_int_equal(c.resp.status, 400);
	assert_non_null(c.json); /* still a JSON error body */
	call_clear(&c);
	hs_serve_free(s);
}

static void test_config_errors(void **state)
{
	static const struct {
		const char *json, *needle;
	} cases[] = {
	        {"[]", "JSON object"},
	        {"{\"keys\":{}}", "listen: missing"},
	        {"{\"listen\":\"1.2.3.4\",\"keys\":{}}", "listen: expected"},
	        {"{\"listen\":\"10.0.0.1:8443\",\"keys\":{\"a\":{\"provider\":\"file\"}}}",
	         "plain HTTP"},
	        {"{\"listen\":\"[::1]:8443\",\"keys\":{}}", "keys: must be"},
	        {"{\"listen\":\"127.0.0.1:1\",\"keys\":{\"a\":{\"provider\":\"x\"}}}",
	         "keys.a.provider"},
	        {"{\"listen\":\"127.0.0.1:1\",\"keys\":{\"a\":{\"provider\":\"file\",\"allow\":{}}}"
	         "}",
	         "keys.a.allow"},
	        {"{\"listen\":\"127.0.0.1:1\",\"limits\":{\"burst\":0},\"keys\":{\"a\":{}}}",
	         "limits.burst"},
	        {"{\"listen\":\"127.0.0.1:1\",\"tls\":{\"key\":\"k\"},\"keys\":{\"a\":{}}}",
	         "tls.certificate"},
	        {"{\"listen\":\"127.0.0.1:1\",\"tls\":{\"certificate\":\"c\",\"key\":\"k\","
	         "\"require_client_certificate\":true},\"keys\":{}}",
	         "tls.client_ca"},
	        {"{\"listen\":\"127.0.0.1:1\",\"bogus\":1,\"keys\":{}}", "bogus: unknown setting"},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct serve_config *cfg = NULL;
		struct hs_ctx *ctx;
		json_t *root = json_loads(cases[i].json, 0, NULL);

		assert_non_null(root);
		assert_int_equal(hs_ctx_new(&ctx), 0);
		assert_int_equal(serve_config_parse(ctx, root, NULL, &cfg), HS_ERR_INVALID);
		assert_null(cfg);
		if (!strstr(hs_ctx_message(ctx), cases[i].needle))
			fail_msg("case %zu: '%s' lacks '%s'", i, hs_ctx_message(ctx),
			         cases[i].needle);
		hs_ctx_free(ctx);
		json_decref(root);
	}
}

static void test_secrets(void **state)
{
	struct hs_ctx *ctx;
	char *v = NULL;

	(void)state;
	assert_int_equal(hs_ctx_new(&ctx), 0);
	setenv("HS_UNIT_SECRET", "s3cret", 1);
	assert_int_equal(serve_secret_read(ctx, "env:HS_UNIT_SECRET", "keys.a.pin", &v), 0);
	assert_string_equal(v, "s3cret");
	serve_secret_free(v);
	assert_int_equal(serve_secret_read(ctx, "s3cret", "keys.a.pin", &v), HS_ERR_INVALID);
	assert_null(strstr(hs_ctx_message(ctx), "s3cret"));
	assert_non_null(strstr(hs_ctx_message(ctx), "keys.a.pin"));
	hs_ctx_free(ctx);
}

int main(void)
{
	const char *fxdir = getenv("HS_FIXTURES");
	unsigned char md[32];
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_routes),      cmocka_unit_test(test_sign_rsa_verifies),
	        cmocka_unit_test(test_sign_checks), cmocka_unit_test(test_errors),
	        cmocka_unit_test(test_limits),      cmocka_unit_test(test_config_errors),
	        cmocka_unit_test(test_secrets),     cmocka_unit_test(test_proxy_health_names),
	};

	snprintf(fixtures, sizeof(fixtures), "%s", fxdir ? fxdir : "tests/fixtures");
	SHA256((const unsigned char *)TOKEN, strlen(TOKEN), md);
	for (int i = 0; i < 32; i++)
		snprintf(token_sha256 + 2 * i, 3, "%02x", md[i]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
