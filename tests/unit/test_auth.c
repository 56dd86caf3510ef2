/* test_auth.c - Azure credential sources against scripted local endpoints: Entra (secret,
 * certificate, federated), GitHub OIDC, App Service, IMDS, a fake az; the default chain,
 * the token cache, and that no secret reaches a message or a log line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "auth/auth.h"
#include "auth/source.h"
#include "core/codec.h"
#include "core/core.h"
#include "core/http.h"
#include "scripted_server.h"

/* ---- fixture ---- */

/* Every secret and token below contains this marker; no message or log line may. */
#define PLANTED   "PLANTED"
#define CLIENT_ID "11111111-1111-1111-1111-111111111111"
#define TENANT    "72f988bf-86f1-41af-91ab-2d7cd011db47"
#define SCOPE     "https://vault.azure.net/.default"

static const char *const env_vars[] = {
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_CLIENT_CERTIFICATE_PASSWORD",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "IMDS_ENDPOINT",
        "AZURE_CLI_PATH",
        NULL,
};

static char tmpdir[256];

struct fixture {
	struct hs_ctx *ctx;
	struct hs_http *http;
	struct hs_azure_credential *cred;
	struct srv *srv;
	char authority[64];
};

/* A clean environment: no credentials, IMDS on a dead port, no az. */
static int setup(void **state)
{
	struct hs_http_config cfg = HS_HTTP_CONFIG_INIT;
	struct fixture *f = calloc(1, sizeof(*f));
	char imds[64];

	for (size_t i = 0; env_vars[i] != NULL; i++)
		unsetenv(env_vars[i]);
	snprintf(imds, sizeof(imds), "http://127.0.0.1:%d", closed_port());
	setenv("IMDS_ENDPOINT", imds, 1);
	setenv("AZURE_CLI_PATH", "/nonexistent/hsmsign-test/az", 1);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/hs-test-auth-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	log_text[0] = '\0';
	cfg.backoff_base_ms = 10;
	cfg.max_retries = 2;
	cfg.timeout_ms = 5000;
	assert_int_equal(hs_ctx_new(&f->ctx), 0);
	hs_ctx_set_log(f->ctx, log_capture, NULL);
	assert_int_equal(hs_http_new(f->ctx, &f->http, &cfg), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[300];

	/* Whatever happened, nothing secret may have been said. */
	assert_null(strstr(log_text, PLANTED));
	assert_null(strstr(hs_ctx_message(f->ctx), PLANTED));
	hs_azure_credential_free(f->cred);
	hs_http_free(f->http);
	hs_ctx_free(f->ctx);
	if (f->srv != NULL)
		srv_stop(f->srv);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void start(struct fixture *f, const struct srv_reply *script, size_t n)
{
	f->srv = srv_start(script, n);
	snprintf(f->authority, sizeof(f->authority), "http://127.0.0.1:%d", f->srv->port);
}

static int cred_new(struct fixture *f, const struct hs_azure_cred_opts *opts)
{
	return hs_azure_credential_new(f->ctx, f->http, opts, &f->cred);
}

static int token(struct fixture *f, const char *scope, const char *tenant, int force,
                 const char **tok)
{
	return hs_azure_credential_token(f->ctx, f->cred, scope, tenant, force, tok);
}

static const char *path_in_tmp(const char *name)
{
	static char p[4][512];
	static int i;

	i = (i + 1) % 4;
	snprintf(p[i], sizeof(p[i]), "%s/%s", tmpdir, name);
	return p[i];
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
	chmod(path, mode);
}

static const char *entra_ok(const char *tok, long expires_in)
{
	static char body[4][512];
	static int i;

	i = (i + 1) % 4;
	snprintf(body[i], sizeof(body[i]),
	         "{\"token_type\":\"Bearer\",\"expires_in\":%ld,\"ext_expires_in\":%ld,"
	         "\"access_token\":\"%s\"}",
	         expires_in, expires_in, tok);
	return body[i];
}

/* An unsigned JWT with the given iss and sub (the server side never verifies it). */
static char *fake_jwt(const char *iss, const char *sub)
{
	char claims[512], *h, *c, *jwt;
	size_t n;
	const char *header = "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"k\"}";

	snprintf(claims, sizeof(claims),
	         "{\"iss\":\"%s\",\"sub\":\"%s\",\"aud\":\"api://AzureADTokenExchange\","
	         "\"exp\":%lld}",
	         iss, sub, (long long)time(NULL) + 600);
	h = hs_b64url((const unsigned char *)header, strlen(header));
	c = hs_b64url((const unsigned char *)claims, strlen(claims));
	n = strlen(h) + strlen(c) + 16;
	jwt = malloc(n);
	snprintf(jwt, n, "%s.%s.c2lnbmF0dXJl", h, c);
	free(h);
	free(c);
	return jwt;
}

/* A fake az that records its arguments and prints `json` (or fails with `err`). */
static const char *fake_az(const char *json, const char *err)
{
	const char *path = path_in_tmp("az");
	char script[2048];

	if (err != NULL)
		snprintf(script, sizeof(script),
		         "#!/bin/sh\necho \"$@\" > '%s/az-args'\n"
		         "echo '%s' >&2\nexit 1\n",
		         tmpdir, err);
	else
		snprintf(script, sizeof(script),
		         "#!/bin/sh\necho \"$@\" > '%s/az-args'\n"
		         "echo '%s'\n",
		         tmpdir, json);
	write_file(path, script, 0755);
	setenv("AZURE_CLI_PATH", path, 1);
	return path;
}

static bool file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static char *read_small(const char *path)
{
	static char buf[1024];
	FILE *fp = fopen(path, "r");
	size_t n;

	assert_non_null(fp);
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	return buf;
}

/* ---- configuration ---- */

static void authority_resolution(void **state)
{
	static const struct {
		const char *in;
		const char *env;
		const char *want;
	} cases[] = {
	        {NULL, NULL, "https://login.microsoftonline.com"},
	        {"public", NULL, "https://login.microsoftonline.com"},
	        {"china", NULL, "https://login.chinacloudapi.cn"},
	        {"USGov", NULL, "https://login.microsoftonline.us"},
	        {"login.microsoftonline.us/", NULL, "https://login.microsoftonline.us"},
	        {"https://login.example.test//", NULL, "https://login.example.test"},
	        {NULL, "login.chinacloudapi.cn", "https://login.chinacloudapi.cn"},
	        {NULL, "https://login.microsoftonline.us/", "https://login.microsoftonline.us"},
	        {"china", "https://login.microsoftonline.us", "https://login.chinacloudapi.cn"},
	};
	struct fixture *f = *state;
	char *out;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (cases[i].env)
			setenv("AZURE_AUTHORITY_HOST", cases[i].env, 1);
		else
			unsetenv("AZURE_AUTHORITY_HOST");
		assert_int_equal(hs_entra_authority(f->ctx, cases[i].in, &out), 0);
		assert_string_equal(out, cases[i].want);
		free(out);
	}
	assert_int_equal(hs_entra_authority(f->ctx, "https://a b", &out), HS_ERR_INVALID);
}

static void bad_kinds_and_missing_settings(void **state)
{
	struct fixture *f = *state;
	struct hs_azure_cred_opts opts = HS_AZURE_CRED_OPTS_INIT;

	opts.kind = "kerberos";
	assert_int_equal(cred_new(f, &opts), HS_ERR_INVALID);
	assert_non_null(strstr(hs_ctx_message(f->ctx), "kerberos"));
	hs_ctx_clear_error(f->ctx);
	opts.kind = "secret";
	opts.client_id = CLIENT_ID;
	assert_int_equal(cred_new(f, &opts), HS_ERR_INVALID);
	assert_non_null(strstr(hs_ctx_message(f->ctx), "-kvs"));
	hs_ctx_clear_error(f->ctx);
	opts.kind = "github-oidc";
	assert_int_equal(cred_new(f, &opts), HS_ERR_INVALID);
	assert_non_null(strstr(hs_ctx_message(f->ctx), "ACTIONS_ID_TOKEN_REQUEST_URL"));
	assert_null(f->cred);
}

static void ready_token_needs_no_request(void **state)
{
	struct fixture *f = *state;
	struct hs_azure_cred_opts opts = HS_AZURE_CRED_OPTS_INIT;
	const char *tok;

	opts.access_token = "eyJ0eXAi.PLANTED-ready.sig";
	opts.client_secret = "PLANTED-ignored"; /* a ready token wins */
	assert_int_equal(cred_new(f, &opts), 0);
	assert_string_equal(hs_azure_credential_source(f->cred), "default");
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0);
	assert_string_equal(tok, "eyJ0eXAi.PLANTED-ready.sig");
	assert_int_equal(token(f, SCOPE, "other-tenant", 1, &tok), 0);
	assert_string_equal(tok, "eyJ0eXAi.PLANTED-ready.sig");
	assert_string_equal(hs_azure_credential_source(f->cred), "token");
	hs_azure_credential_free(f->cred);
	f->cred = NULL;
	opts.access_token = "two words";
	assert_int_equal(cred_new(f, &opts), HS_ERR_INVALID);
}

/* ---- client secret ---- */

static void secret_token_and_cache(void **state)
{
	const struct srv_reply script[] = {
	        {200, NULL, entra_ok("PLANTED-tok-1", 3599), 0, NULL},
	        {200, NULL, entra_ok("PLANTED-tok-2", 3599), 0, NULL},
	        {200, NULL, entra_ok("PLANTED-tok-3", 3599), 0, NULL},
	};
	struct fixture *f = *state;
	struct hs_azure_cred_opts opts = HS_AZURE_CRED_OPTS_INIT;
	const char *tok;
	char path[128];

	start(f, script, 3);
	opts.client_id = CLIENT_ID;
	opts.tenant_id = TENANT;
	opts.client_secret = "PLANTED&s=cret+/";
	opts.authority = f->authority;
	assert_int_equal(cred_new(f, &opts), 0);
	assert_int_equal(token(f, SCOPE, "challenge-tenant", 0, &tok), 0);
	assert_string_equal(tok, "PLANTED-tok-1");
	assert_string_equal(hs_azure_credential_source(f->cred), "secret");
	assert_int_equal(f->srv->n_reqs, 1);
	snprintf(path, sizeof(path), "/%s/oauth2/v2.0/token", TENANT); /* configured tenant wins */
	assert_string_equal(f->srv->reqs[0].method, "POST");
	assert_string_equal(f->srv->reqs[0].target, path);
	assert_true(srv_ci_contains(f->srv->reqs[0].headers,
	                            "Content-Type: application/x-www-form-urlencoded"));
	assert_non_null(strstr(f->srv->reqs[0].body, "client_id=" CLIENT_ID));
	assert_non_null(strstr(f->srv->reqs[0].body, "grant_type=client_credentials"));
	assert_non_null(
	        strstr(f->srv->reqs[0].body, "scope=https%3A%2F%2Fvault.azure.net%2F.default"));
	assert_non_null(strstr(f->srv->reqs[0].body, "client_secret=PLANTED%26s%3Dcret%2B%2F"));
	/* Cached: no request. */
	assert_int_equal(token(f, SCOPE, "challenge-tenant", 0, &tok), 0);
	assert_string_equal(tok, "PLANTED-tok-1");
	assert_int_equal(f->srv->n_reqs, 1);
	/* force_refresh after a 401. */
	assert_int_equal(token(f, SCOPE, "challenge-tenant", 1, &tok), 0);
	assert_string_equal(tok, "PLANTED-tok-2");
	assert_int_equal(f->srv->n_reqs, 2);
	/* Another scope is another token. */
	assert_int_equal(token(f, "https://managedhsm.azure.net/.default", NULL, 0, &tok), 0);
	assert_string_equal(tok, "PLANTED-tok-3");
	assert_non_null(strstr(f->srv->reqs[2].body, "managedhsm.azure.net"));
	assert_int_equal(token(f, SCOPE, "challenge-tenant", 0, &tok), 0);
	assert_string_equal(tok, "PLANTED-tok-2");
	assert_int_equal(f->srv->n_reqs, 3);
}

static void secret_token_near_expiry_is_refreshed(void **state)
{
	const struct srv_reply script[] = {
	        {200, NULL, entra_ok("PLANTED-short", 200), 0, NULL},
	        {200, NULL, entra_ok("PLANTED-long", 3600), 0, NULL},
	};
	struct fixture *f = *state;
	struct hs_azure_cred_opts opts = HS_AZURE_CRED_OPTS_INIT;
	const char *tok;

	start(f, script, 2);
	setenv("AZURE_CLIENT_ID", CLIENT_ID, 1);
	setenv("AZURE_TENANT_ID", TENANT, 1);
	opts.client_secret = "PLANTED-secret";
	opts.authority = f->authority;
	assert_int_equal(cred_new(f, &opts), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0);
	assert_string_equal(tok, "PLANTED-short");
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0); /* < 5 min left */
	assert_string_equal(tok, "PLANTED-long");
	assert_int_equal(f->srv->n_reqs, 2);
}

static void secret_tenant_from_challenge(void **state)
{
	const struct srv_reply script[] = {{200, NULL, entra_ok("PLANTED-t", 3600), 0, NULL}};
	struct fixture *f = *state;
	struct hs_azure_cred_opts opts = HS_AZURE_CRED_OPTS_INIT;
	const char *tok;

	start(f, script, 1);
	opts.client_id = CLIENT_ID;
	opts.client_secret = "PLANTED-secret";
	opts.authority = f->authority;
	assert_int_equal(cred_new(f, &opts), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), HS_ERR_INVALID);
	assert_non_null(strstr(hs_ctx_message(f->ctx), "tenant"));
	hs_ctx_clear_error(f->ctx);
	assert_int_equal(token(f, SCOPE, "../evil", 0, &tok), HS_ERR_INVALID);
	hs_ctx_clear_error(f->ctx);
	assert_int_equal(token(f, SCOPE, "from-challenge", 0, &tok), 0);
	assert_string_equal(f->srv->reqs[0].target, "/from-challenge/oauth2/v2.0/token");
}

static void entra_error_is_one_line_without_secret(void **state)
{
	const struct srv_reply script[] = {
	        {401, "Content-Type: application/json\r\n",
	         "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215: Invalid "
	         "client "
	         "secret provided. Ensure the secret being sent in the request is the client "
	         "secret "
	         "value, not the client secret ID.\\r\\nTrace ID: 0000\\r\\nCorrelation ID: "
	         "1111\\r\\nTimestamp: 2024-01-01 00:00:00Z\",\"error_codes\":[7000215]}",
	         0, NULL}};
	struct fixture *f = *state;
	struct hs_azure_cred_opts opts = HS_AZURE_CRED_OPTS_INIT;
	const char *tok;

	start(f, script, 1);
	opts.kind = "secret";
	opts.client_id = CLIENT_ID;
	opts.tenant_id = TENANT;
	opts.client_secret = "PLANTED-wrong-secret";
	opts.authority = f->authority;
	assert_int_equal(cred_new(f, &opts), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), HS_ERR_AUTH);
	assert_null(tok);
	assert_non_null(strstr(hs_ctx_message(f->ctx), "AADSTS7000215: Invalid client secret"));
	assert_non_null(strstr(hs_ctx_message(f->ctx), CLIENT_ID));
	assert_non_null(strstr(hs_ctx_message(f->ctx), "HTTP 401"));
	assert_null(strstr(hs_ctx_message(f->ctx), "Trace ID"));
	assert_int_equal(f->srv->n_reqs, 1);
}

/* ---- federated: workload identity and GitHub OIDC ---- */

static void workload_identity_rereads_file(void **state)
{
	const struct srv_reply script[] = {
	        {200, NULL, entra_ok("PLANTED-w1", 3600), 0, NULL},
	        {200, NULL, entra_ok("PLANTED-w2", 3600), 0, NULL},
	};
	struct fixture *f = *state;
	const char *file = path_in_tmp("token");
	char *jwt1 = fake_jwt("https://kubernetes.default.svc", "system:serviceaccount:a:b");
	char *jwt2 = fake_jwt("https://kubernetes.default.svc", "system:serviceaccount:a:c");
	char line[4096];
	const char *tok;

	start(f, script, 2);
	snprintf(line, sizeof(line), "%s\n", jwt1);
	write_file(file, line, 0600);
	setenv("AZURE_FEDERATED_TOKEN_FILE", file, 1);
	setenv("AZURE_CLIENT_ID", CLIENT_ID, 1);
	setenv("AZURE_TENANT_ID", TENANT, 1);
	setenv("AZURE_AUTHORITY_HOST", f->authority, 1);
	assert_int_equal(cred_new(f, NULL), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0);
	assert_string_equal(tok, "PLANTED-w1");
	assert_string_equal(hs_azure_credential_source(f->cred), "workload-identity");
	snprintf(line, sizeof(line), "client_assertion=%s", jwt1);
	assert_non_null(strstr(f->srv->reqs[0].body, line));
	assert_non_null(strstr(f->srv->reqs[0].body,
	                       "client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-"
	                       "assertion-type%3Ajwt-bearer"));
	assert_null(strstr(f->srv->reqs[0].body, "client_secret"));
	write_file(file, jwt2, 0600);
	assert_int_equal(token(f, SCOPE, NULL, 1, &tok), 0);
	snprintf(line, sizeof(line), "client_assertion=%s", jwt2);
	assert_non_null(strstr(f->srv->reqs[1].body, line));
	assert_null(strstr(log_text, jwt1));
	free(jwt1);
	free(jwt2);
}

/* Sets the GitHub runner variables for a server and returns the OIDC JWT it serves. */
static char *github_env(struct fixture *f, const char *sub)
{
	char url[256];

	snprintf(url, sizeof(url), "%s/_github/token?api-version=2.0", f->authority);
	setenv("ACTIONS_ID_TOKEN_REQUEST_URL", url, 1);
	setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "PLANTED-gh-request-token", 1);
	setenv("AZURE_CLIENT_ID", CLIENT_ID, 1);
	setenv("AZURE_TENANT_ID", TENANT, 1);
	setenv("AZURE_AUTHORITY_HOST", f->authority, 1);
	return fake_jwt("https://token.actions.githubusercontent.com", sub);
}

static void github_oidc_two_endpoints(void **state)
{
	static char value[4096];
	struct srv_reply script[] = {
	        {200, "Content-Type: application/json\r\n", value, 0, NULL},
	        {200, NULL, entra_ok("PLANTED-gh", 3600), 0, NULL},
	};
	struct fixture *f = *state;
	struct srv *s;
	char *jwt, want[4096];
	const char *tok;

	start(f, script, 2);
	s = f->srv;
	jwt = github_env(f, "repo:contoso/app:ref:refs/heads/main");
	snprintf(value, sizeof(value), "{\"count\":1,\"value\":\"%s\"}", jwt);
	assert_int_equal(cred_new(f, NULL), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0);
	assert_string_equal(tok, "PLANTED-gh");
	assert_string_equal(hs_azure_credential_source(f->cred), "github-oidc");
	assert_int_equal(s->n_reqs, 2);
	assert_string_equal(s->reqs[0].method, "GET");
	assert_string_equal(s->reqs[0].target, "/_github/token?api-version=2.0&audience="
	                                       "api%3A%2F%2FAzureADTokenExchange");
	assert_true(srv_ci_contains(s->reqs[0].headers,
	                            "Authorization: Bearer PLANTED-gh-request-token"));
	assert_string_equal(s->reqs[1].target, "/" TENANT "/oauth2/v2.0/token");
	snprintf(want, sizeof(want), "client_assertion=%s", jwt);
	assert_non_null(strstr(s->reqs[1].body, want));
	assert_null(strstr(s->reqs[1].headers, "PLANTED-gh-request-token"));
	free(jwt);
}

static void github_oidc_federation_mismatch(void **state)
{
	static char value[4096];
	struct srv_reply script[] = {
	        {200, NULL, value, 0, NULL},
	        {400, NULL,
	         "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS70021: No matching "
	         "federated identity record found for presented assertion. Assertion Issuer: "
	         "'https://token.actions.githubusercontent.com'. Assertion Subject: "
	         "'repo:contoso/app:ref:refs/heads/dev'. Assertion Audience: "
	         "'api://AzureADTokenExchange'.\\r\\nTrace ID: 1\\r\\nCorrelation ID: 2\","
	         "\"error_codes\":[70021]}",
	         0, NULL},
	};
	struct fixture *f = *state;
	char *jwt;
	const char *tok;
	const char *msg = hs_ctx_message(f->ctx);

	start(f, script, 2);
	jwt = github_env(f, "repo:contoso/app:ref:refs/heads/dev");
	snprintf(value, sizeof(value), "{\"value\":\"%s\"}", jwt);
	assert_int_equal(cred_new(f, NULL), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), HS_ERR_AUTH);
	assert_non_null(strstr(msg, "AADSTS70021"));
	assert_non_null(
	        strstr(msg, "Assertion Issuer: 'https://token.actions.githubusercontent.com'"));
	assert_non_null(strstr(msg, "Assertion Subject: 'repo:contoso/app:ref:refs/heads/dev'"));
	assert_null(strstr(msg, jwt));
	assert_null(strstr(log_text, jwt));
	free(jwt);
}

static void federation_mismatch_hint_from_assertion(void **state)
{
	static char value[4096];
	struct srv_reply script[] = {
	        {200, NULL, value, 0, NULL},
	        {400, NULL,
	         "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS70021: No matching "
	         "federated identity record found for presented assertion.\"}",
	         0, NULL},
	};
	struct fixture *f = *state;
	char *jwt;
	const char *tok;

	start(f, script, 2);
	jwt = github_env(f, "repo:contoso/app:environment:prod");
	snprintf(value, sizeof(value), "{\"value\":\"%s\"}", jwt);
	assert_int_equal(cred_new(f, NULL), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), HS_ERR_AUTH);
	assert_non_null(strstr(hs_ctx_message(f->ctx),
	                       "Assertion Subject: 'repo:contoso/app:environment:prod'"));
	free(jwt);
}

static void github_oidc_request_refused(void **state)
{
	const struct srv_reply script[] = {
	        {403, NULL, "{\"message\":\"Resource not accessible by integration\"}", 0, NULL}};
	struct fixture *f = *state;
	char *jwt;
	const char *tok;

	start(f, script, 1);
	jwt = github_env(f, "x");
	assert_int_equal(cred_new(f, NULL), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), HS_ERR_AUTH);
	assert_non_null(strstr(hs_ctx_message(f->ctx), "GitHub Actions OIDC"));
	assert_non_null(strstr(hs_ctx_message(f->ctx), "Resource not accessible"));
	assert_int_equal(f->srv->n_reqs, 1);
	free(jwt);
}

/* ---- client certificate ---- */

static EVP_PKEY *make_key(bool ec)
{
	return ec ? EVP_EC_gen("P-256") : EVP_RSA_gen(2048);
}

/* Writes key + self-signed certificate as PEM; returns the certificate. */
static X509 *write_cert_pem(const char *path, EVP_PKEY *key)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	FILE *fp = fopen(path, "w");

	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"app", -1, -1,
	                           0);
	X509_set_subject_name(x, name);
	X509_set_issuer_name(x, name);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, key);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	assert_non_null(fp);
	/* Another certificate first: the loader must pick the one matching the key. */
	PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL);
	PEM_write_X509(fp, x);
	fclose(fp);
	X509_NAME_free(name);
	return x;
}

static unsigned char *b64url_decode(const char *s, size_t len, size_t *out_len)
{
	unsigned char *in = calloc(1, len + 4), *out = calloc(1, len + 4);
	size_t padded = (len + 3) / 4 * 4;
	int n;

	for (size_t i = 0; i < len; i++)
		in[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : (unsigned char)s[i];
	memset(in + len, '=', padded - len);
	n = EVP_DecodeBlock(out, in, (int)padded);
	assert_true(n >= 0);
	*out_len = (size_t)n - (padded - len);
	free(in);
	return out;
}

/* Checks the client assertion: header thumbprints, claims, signature. */
static void check_assertion(const char *body, X509 *cert, EVP_PKEY *key, bool ec,
                            const char *audience)
{
	const char *a = strstr(body, "client_assertion=");
	char *jwt, *dot1, *dot2, *want;
	unsigned char *hdr, *cl, *sig, digest[32], *der = NULL;
	size_t hl, cll, sl;
	json_t *h, *c;
	json_error_t jerr;
	unsigned int dl;
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	assert_non_null(a);
	jwt = strndup(a + 17, strcspn(a + 17, "&"));
	dot1 = strchr(jwt, '.');
	dot2 = strchr(dot1 + 1, '.');
	hdr = b64url_decode(jwt, (size_t)(dot1 - jwt), &hl);
	cl = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &cll);
	sig = b64url_decode(dot2 + 1, strlen(dot2 + 1), &sl);
	h = json_loadb((char *)hdr, hl, 0, &jerr);
	c = json_loadb((char *)cl, cll, 0, &jerr);
	assert_non_null(h);
	assert_non_null(c);
	assert_string_equal(json_string_value(json_object_get(h, "alg")), ec ? "ES256" : "RS256");
	assert_string_equal(json_string_value(json_object_get(h, "typ")), "JWT");
	X509_digest(cert, EVP_sha256(), digest, &dl);
	want = hs_b64url(digest, dl);
	assert_string_equal(json_string_value(json_object_get(h, "x5t#S256")), want);
	free(want);
	X509_digest(cert, EVP_sha1(), digest, &dl);
	want = hs_b64url(digest, dl);
	assert_string_equal(json_string_value(json_object_get(h, "x5t")), want);
	free(want);
	assert_string_equal(json_string_value(json_object_get(c, "aud")), audience);
	assert_string_equal(json_string_value(json_object_get(c, "iss")), CLIENT_ID);
	assert_string_equal(json_string_value(json_object_get(c, "sub")), CLIENT_ID);
	assert_int_equal(strlen(json_string_value(json_object_get(c, "jti"))), 36);
	assert_int_equal(json_integer_value(json_object_get(c, "exp")) -
	                         json_integer_value(json_object_get(c, "nbf")),
	                 600);
	if (ec) {
		ECDSA_SIG *es = ECDSA_SIG_new();
		int n;

		assert_int_equal(sl, 64);
		ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
		n = i2d_ECDSA_SIG(es, &der);
		ECDSA_SIG_free(es);
		free(sig);
		sig = der;
		sl = (size_t)n;
	}
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
	assert_int_equal(EVP_DigestVerify(md, sig, sl, (unsigned char *)jwt, (size_t)(dot2 - jwt)),
	                 1);
	EVP_MD_CTX_free(md);
	json_decref(h);
	json_decref(c);
	if (ec)
		OPENSSL_free(sig);
	else
		free(sig);
	free(hdr);
	free(cl);
	free(jwt);
}

static void certificate_assertion(bool ec, void **state)
{
	const struct srv_reply script[] = {{200, NULL, entra_ok("PLANTED-cert", 3600), 0, NULL}};
	struct fixture *f = *state;
	const char *pem = path_in_tmp("client.pem");
	EVP_PKEY *key = make_key(ec);
	X509 *cert = write_cert_pem(pem, key);
	char audience[256];
	const char *tok;

	start(f, script, 1);
	setenv("AZURE_CLIENT_CERTIFICATE_PATH", pem, 1);
	setenv("AZURE_CLIENT_ID", CLIENT_ID, 1);
	setenv("AZURE_TENANT_ID", TENANT, 1);
	setenv("AZURE_AUTHORITY_HOST", f->authority, 1);
	assert_int_equal(cred_new(f, NULL), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0);
	assert_string_equal(tok, "PLANTED-cert");
	assert_string_equal(hs_azure_credential_source(f->cred), "certificate");
	snprintf(audience, sizeof(audience), "%s/%s/oauth2/v2.0/token", f->authority, TENANT);
	check_assertion(f->srv->reqs[0].body, cert, key, ec, audience);
	X509_free(cert);
	EVP_PKEY_free(key);
}

static void certificate_rsa(void **state)
{
	certificate_assertion(false, state);
}

static void certificate_ec(void **state)
{
	certificate_assertion(true, state);
}

static void certificate_unreadable_stops_chain(void **state)
{
	struct fixture *f = *state;
	const char *tok;

	fake_az("{\"accessToken\":\"PLANTED-az\",\"expires_on\":9999999999}", NULL);
	setenv("AZURE_CLIENT_CERTIFICATE_PATH", path_in_tmp("missing.pem"), 1);
	setenv("AZURE_CLIENT_ID", CLIENT_ID, 1);
	setenv("AZURE_TENANT_ID", TENANT, 1);
	assert_int_equal(cred_new(f, NULL), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), HS_ERR_IO);
	assert_non_null(strstr(hs_ctx_message(f->ctx), "missing.pem"));
	assert_false(file_exists(path_in_tmp("az-args")));
}

/* ---- managed identity ---- */

static void app_service_identity(void **state)
{
	static char body[256];
	const struct srv_reply script[] = {
	        {200, NULL, body, 0, "X-IDENTITY-HEADER: PLANTED-identity-header"}};
	struct fixture *f = *state;
	char url[128];
	const char *tok;

	snprintf(body, sizeof(body),
	         "{\"access_token\":\"PLANTED-app\",\"expires_on\":\"%lld\",\"resource\":"
	         "\"https://vault.azure.net\",\"token_type\":\"Bearer\",\"client_id\":\"x\"}",
	         (long long)time(NULL) + 3600);
	start(f, script, 1);
	snprintf(url, sizeof(url), "%s/msi/token", f->authority);
	setenv("IDENTITY_ENDPOINT", url, 1);
	setenv("IDENTITY_HEADER", "PLANTED-identity-header", 1);
	setenv("AZURE_CLIENT_ID", "44444444-4444-4444-4444-444444444444", 1);
	assert_int_equal(cred_new(f, NULL), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0);
	assert_string_equal(tok, "PLANTED-app");
	assert_string_equal(hs_azure_credential_source(f->cred), "managed-identity");
	assert_string_equal(f->srv->reqs[0].target,
	                    "/msi/token?resource=https%3A%2F%2Fvault.azure.net&api-version=2019-08-"
	                    "01&client_id=44444444-4444-4444-4444-444444444444");
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0); /* string expires_on parsed */
	assert_int_equal(f->srv->n_reqs, 1);
}

static void imds_string_numbers(void **state)
{
	static char body[512];
	const struct srv_reply script[] = {
	        {503, NULL, "", 0, NULL}, /* the probe sees IMDS; the retry gets the token */
	        {200, NULL, body, 0, "Metadata: true"},
	};
	struct fixture *f = *state;
	const char *tok;

	snprintf(
	        body, sizeof(body),
	        "{\"access_token\":\"PLANTED-imds\",\"refresh_token\":\"\",\"expires_in\":\"3599\","
	        "\"expires_on\":\"%lld\",\"not_before\":\"%lld\",\"resource\":"
	        "\"https://vault.azure.net\",\"token_type\":\"Bearer\"}",
	        (long long)time(NULL) + 3599, (long long)time(NULL));
	start(f, script, 2);
	setenv("IMDS_ENDPOINT", f->authority, 1);
	assert_int_equal(cred_new(f, NULL), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0);
	assert_string_equal(tok, "PLANTED-imds");
	assert_string_equal(hs_azure_credential_source(f->cred), "managed-identity");
	assert_int_equal(f->srv->n_reqs, 2);
	assert_string_equal(f->srv->reqs[1].target,
	                    "/metadata/identity/oauth2/token?resource=https%3A%2F%2Fvault.azure.net"
	                    "&api-version=2018-02-01");
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0);
	assert_int_equal(f->srv->n_reqs, 2);
}

static void imds_error_explicit(void **state)
{
	const struct srv_reply script[] = {
	        {400, NULL,
	         "{\"error\":\"invalid_request\",\"error_description\":\"Identity not found\"}", 0,
	         NULL}};
	struct fixture *f = *state;
	struct hs_azure_cred_opts opts = HS_AZURE_CRED_OPTS_INIT;
	const char *tok;

	start(f, script, 1);
	setenv("IMDS_ENDPOINT", f->authority, 1);
	opts.kind = "managed-identity";
	assert_int_equal(cred_new(f, &opts), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), HS_ERR_AUTH);
	assert_non_null(strstr(hs_ctx_message(f->ctx), "IMDS"));
	assert_non_null(strstr(hs_ctx_message(f->ctx), "HTTP 400: Identity not found"));
}

static void imds_without_metadata_header_is_refused(void **state)
{
	/* Our test server mimics IMDS: no Metadata header, 400. Check the request had it. */
	const struct srv_reply script[] = {
	        {200, NULL, "{\"access_token\":\"PLANTED-m\",\"expires_in\":\"3599\"}", 0,
	         "Metadata: true"}};
	struct fixture *f = *state;
	struct hs_azure_cred_opts opts = HS_AZURE_CRED_OPTS_INIT;
	const char *tok;

	start(f, script, 1);
	setenv("IMDS_ENDPOINT", f->authority, 1);
	opts.kind = "managed-identity";
	opts.client_id = "44444444-4444-4444-4444-444444444444";
	assert_int_equal(cred_new(f, &opts), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0);
	assert_string_equal(tok, "PLANTED-m");
	assert_non_null(
	        strstr(f->srv->reqs[0].target, "&client_id=44444444-4444-4444-4444-444444444444"));
}

/* ---- Azure CLI and the end of the chain ---- */

static void chain_skips_absent_imds_to_az(void **state)
{
	struct fixture *f = *state;
	struct timespec t0, t1;
	const char *tok;

	fake_az("{\"accessToken\":\"PLANTED-az\",\"expiresOn\":\"2099-01-01 00:00:00.000000\","
	        "\"expires_on\":4070908800,\"tenant\":\"t\",\"tokenType\":\"Bearer\"}",
	        NULL);
	assert_int_equal(cred_new(f, NULL), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(token(f, SCOPE, "tenant-from-challenge", 0, &tok), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(t1.tv_sec - t0.tv_sec < 3);
	assert_string_equal(tok, "PLANTED-az");
	assert_string_equal(hs_azure_credential_source(f->cred), "azure-cli");
	assert_string_equal(read_small(path_in_tmp("az-args")),
	                    "account get-access-token --output json --resource "
	                    "https://vault.azure.net --tenant tenant-from-challenge\n");
	unlink(path_in_tmp("az-args"));
	assert_int_equal(token(f, SCOPE, "tenant-from-challenge", 0, &tok), 0);
	assert_false(file_exists(path_in_tmp("az-args"))); /* cached */
}

static void az_local_expires_on(void **state)
{
	struct fixture *f = *state;
	struct hs_azure_cred_opts opts = HS_AZURE_CRED_OPTS_INIT;
	char json[256], when[64];
	time_t later = time(NULL) + 7200;
	const char *tok;

	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S.000000", localtime(&later));
	snprintf(json, sizeof(json), "{\"accessToken\":\"PLANTED-az2\",\"expiresOn\":\"%s\"}",
	         when);
	fake_az(json, NULL);
	opts.kind = "azure-cli";
	assert_int_equal(cred_new(f, &opts), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0);
	assert_string_equal(tok, "PLANTED-az2");
	assert_string_equal(read_small(path_in_tmp("az-args")),
	                    "account get-access-token --output json --resource "
	                    "https://vault.azure.net\n");
	unlink(path_in_tmp("az-args"));
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0);
	assert_false(file_exists(path_in_tmp("az-args")));
}

static void az_failure_message(void **state)
{
	struct fixture *f = *state;
	const char *tok;

	fake_az(NULL, "ERROR: Please run az login to setup account.");
	assert_int_equal(cred_new(f, NULL), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), HS_ERR_AUTH);
	assert_non_null(strstr(hs_ctx_message(f->ctx), "Azure CLI failed (exit 1)"));
	assert_non_null(strstr(hs_ctx_message(f->ctx), "Please run az login"));
}

static void az_missing_explicit_and_in_chain(void **state)
{
	struct fixture *f = *state;
	struct hs_azure_cred_opts opts = HS_AZURE_CRED_OPTS_INIT;
	const char *tok;

	opts.kind = "azure-cli";
	assert_int_equal(cred_new(f, &opts), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), HS_ERR_AUTH);
	assert_non_null(strstr(hs_ctx_message(f->ctx), "AZURE_CLI_PATH"));
	hs_azure_credential_free(f->cred);
	f->cred = NULL;
	hs_ctx_clear_error(f->ctx);
	assert_int_equal(cred_new(f, NULL), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), HS_ERR_AUTH);
	assert_non_null(strstr(hs_ctx_message(f->ctx), "no Azure credential available"));
	assert_string_equal(hs_azure_credential_source(f->cred), "default");
}

/* ---- chain order ---- */

static void chain_environment_beats_managed_identity(void **state)
{
	const struct srv_reply script[] = {{200, NULL, entra_ok("PLANTED-env", 3600), 0, NULL}};
	struct fixture *f = *state;
	char url[128];
	const char *tok;

	start(f, script, 1);
	snprintf(url, sizeof(url), "%s/msi/token", f->authority);
	setenv("IDENTITY_ENDPOINT", url, 1);
	setenv("IDENTITY_HEADER", "PLANTED-h", 1);
	setenv("IMDS_ENDPOINT", f->authority, 1);
	setenv("AZURE_CLIENT_SECRET", "PLANTED-env-secret", 1);
	setenv("AZURE_CLIENT_ID", CLIENT_ID, 1);
	setenv("AZURE_TENANT_ID", TENANT, 1);
	setenv("AZURE_AUTHORITY_HOST", f->authority, 1);
	fake_az("{\"accessToken\":\"PLANTED-az\",\"expires_on\":4070908800}", NULL);
	assert_int_equal(cred_new(f, NULL), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0);
	assert_string_equal(tok, "PLANTED-env");
	assert_string_equal(hs_azure_credential_source(f->cred), "secret");
	assert_int_equal(f->srv->n_reqs, 1);
	assert_string_equal(f->srv->reqs[0].target, "/" TENANT "/oauth2/v2.0/token");
	assert_false(file_exists(path_in_tmp("az-args")));
}

static void chain_failing_source_stops_chain(void **state)
{
	const struct srv_reply script[] = {
	        {401, NULL,
	         "{\"error\":\"unauthorized_client\",\"error_description\":\"AADSTS700016: "
	         "Application with identifier 'x' was not found in the directory.\"}",
	         0, NULL}};
	struct fixture *f = *state;
	const char *tok;

	start(f, script, 1);
	setenv("AZURE_CLIENT_SECRET", "PLANTED-env-secret", 1);
	setenv("AZURE_CLIENT_ID", CLIENT_ID, 1);
	setenv("AZURE_TENANT_ID", TENANT, 1);
	setenv("AZURE_AUTHORITY_HOST", f->authority, 1);
	fake_az("{\"accessToken\":\"PLANTED-az\",\"expires_on\":4070908800}", NULL);
	assert_int_equal(cred_new(f, NULL), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), HS_ERR_AUTH);
	assert_non_null(strstr(hs_ctx_message(f->ctx), "AADSTS700016"));
	assert_false(file_exists(path_in_tmp("az-args")));
}

static void chain_workload_beats_github_and_opts_beat_chain(void **state)
{
	const struct srv_reply script[] = {
	        {200, NULL, entra_ok("PLANTED-wl", 3600), 0, NULL},
	        {200, NULL, entra_ok("PLANTED-opt", 3600), 0, NULL},
	};
	struct fixture *f = *state;
	struct hs_azure_cred_opts opts = HS_AZURE_CRED_OPTS_INIT;
	char *gh_jwt, *wl_jwt = fake_jwt("https://k8s", "system:serviceaccount:x:y");
	const char *tok;

	start(f, script, 2);
	gh_jwt = github_env(f, "repo:contoso/app:ref:refs/heads/main");
	write_file(path_in_tmp("wl"), wl_jwt, 0600);
	setenv("AZURE_FEDERATED_TOKEN_FILE", path_in_tmp("wl"), 1);
	assert_int_equal(cred_new(f, NULL), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0);
	assert_string_equal(tok, "PLANTED-wl");
	assert_string_equal(hs_azure_credential_source(f->cred), "workload-identity");
	assert_int_equal(f->srv->n_reqs, 1);
	hs_azure_credential_free(f->cred);
	f->cred = NULL;
	opts.client_secret = "PLANTED-opt-secret";
	assert_int_equal(cred_new(f, &opts), 0);
	assert_int_equal(token(f, SCOPE, NULL, 0, &tok), 0);
	assert_string_equal(tok, "PLANTED-opt");
	assert_non_null(strstr(f->srv->reqs[1].body, "client_secret=PLANTED-opt-secret"));
	free(gh_jwt);
	free(wl_jwt);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	        T(authority_resolution),
	        T(bad_kinds_and_missing_settings),
	        T(ready_token_needs_no_request),
	        T(secret_token_and_cache),
	        T(secret_token_near_expiry_is_refreshed),
	        T(secret_tenant_from_challenge),
	        T(entra_error_is_one_line_without_secret),
	        T(workload_identity_rereads_file),
	        T(github_oidc_two_endpoints),
	        T(github_oidc_federation_mismatch),
	        T(federation_mismatch_hint_from_assertion),
	        T(github_oidc_request_refused),
	        T(certificate_rsa),
	        T(certificate_ec),
	        T(certificate_unreadable_stops_chain),
	        T(app_service_identity),
	        T(imds_string_numbers),
	        T(imds_error_explicit),
	        T(imds_without_metadata_header_is_refused),
	        T(chain_skips_absent_imds_to_az),
	        T(az_local_expires_on),
	        T(az_failure_message),
	        T(az_missing_explicit_and_in_chain),
	        T(chain_environment_beats_managed_identity),
	        T(chain_failing_source_stops_chain),
	        T(chain_workload_beats_github_and_opts_beat_chain),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
