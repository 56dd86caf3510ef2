/*
 * token_federated.c - federated credentials exchanged at Entra as client assertions:
 * workload identity (AZURE_FEDERATED_TOKEN_FILE, re-read on every request) and
 * GitHub Actions OIDC (ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN, protocols.md 3).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "auth/source.h"

#define FED_TOKEN_FILE_MAX (64 * 1024)
#define GH_AUDIENCE        "api://AzureADTokenExchange"

/* Trims surrounding whitespace of a NUL-terminated buffer in place. */
static char *fed_trim(char *s)
{
	size_t n;

	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	n = strlen(s);
	while (n > 0 &&
	       (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = '\0';
	return s;
}

static void fed_free(struct hs_token_source *src)
{
	free(src);
}

static int workload_create(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, bool in_chain,
                           struct hs_token_source **out)
{
	*out = NULL;
	if (cfg->federated_token_file == NULL)
		return hs_auth_not_configured(ctx, in_chain,
		                              "credential 'workload-identity' needs "
		                              "AZURE_FEDERATED_TOKEN_FILE");
	if (cfg->client_id == NULL)
		return hs_auth_not_configured(ctx, in_chain,
		                              "credential 'workload-identity' needs a client ID "
		                              "(AZURE_CLIENT_ID)");
	*out = hs_auth_source_alloc(sizeof(struct hs_token_source), &hs_source_workload, cfg,
	                            in_chain);
	return *out ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

static int workload_get(struct hs_ctx *ctx, struct hs_token_source *src, const char *scope,
                        const char *tenant, char **token, int64_t *expires_at)
{
	struct hs_buf file = {0};
	char *assertion;
	int r;

	/* Re-read every time: the kubelet rotates the file. */
	if ((r = hs_auth_read_file(ctx, src->cfg->federated_token_file, "federated token file",
	                           FED_TOKEN_FILE_MAX, &file)) < 0)
		goto out;
	assertion = fed_trim((char *)file.data);
	if (!hs_auth_token_ok(assertion)) {
		r = hs_error_set(ctx, HS_ERR_AUTH, "federated token file %s holds no token",
		                 src->cfg->federated_token_file);
		goto out;
	}
	r = hs_entra_token(ctx, src->cfg, tenant, scope, NULL, assertion, token, expires_at);
out:
	hs_buf_free_secret(&file);
	return r;
}

const struct hs_token_source_ops hs_source_workload = {
        .name = "workload-identity",
        .create = workload_create,
        .get_token = workload_get,
        .free = fed_free,
};

/* Both GitHub credentials need the job's OIDC request URL and token;
 * hs_auth_not_configured() with this (credential name) when they lack them. */
#define GITHUB_ENV_MISSING                                                                         \
	"credential '%s' needs ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN "   \
	"(permissions: id-token: write)"

static bool github_env_set(const struct hs_auth_cfg *cfg)
{
	return cfg->gh_request_url != NULL && cfg->gh_request_token != NULL;
}

static int github_create(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, bool in_chain,
                         struct hs_token_source **out)
{
	*out = NULL;
	if (!github_env_set(cfg))
		return hs_auth_not_configured(ctx, in_chain, GITHUB_ENV_MISSING, "github-oidc");
	if (cfg->client_id == NULL)
		return hs_auth_not_configured(ctx, in_chain,
		                              "credential 'github-oidc' needs a client ID (-kvi or "
		                              "AZURE_CLIENT_ID)");
	*out = hs_auth_source_alloc(sizeof(struct hs_token_source), &hs_source_github, cfg,
	                            in_chain);
	return *out ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

/* The GitHub OIDC request URL with the audience (if any), and the bearer
 * header (secret memory). */
static int github_request_parts(struct hs_ctx *ctx, const char *request_url,
                                const char *request_token, const char *audience, char **url,
                                char **auth_header)
{
	char *aud = audience ? hs_http_urlencode(audience) : NULL;
	size_t n = strlen(request_token) + sizeof("Authorization: Bearer ");

	*auth_header = NULL;
	*url = aud ? hs_strprintf("%s%saudience=%s", request_url,
	                          strchr(request_url, '?') ? "&" : "?", aud)
	           : (audience ? NULL : strdup(request_url));
	free(aud);
	if (*url == NULL || (*auth_header = OPENSSL_secure_malloc(n)) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	snprintf(*auth_header, n, "Authorization: Bearer %s", request_token);
	return 0;
}

int hs_github_oidc_token(struct hs_ctx *ctx, struct hs_http *http, const char *request_url,
                         const char *request_token, const char *audience, char **jwt)
{
	const char *headers[3] = {NULL, "Accept: application/json", NULL};
	struct hs_http_request req = {.method = "GET", .headers = headers};
	struct hs_http_response resp = {0};
	char *url = NULL, *auth_header = NULL, text[300];
	int64_t unused;
	int r;

	*jwt = NULL;
	if ((r = github_request_parts(ctx, request_url, request_token, audience, &url,
	                              &auth_header)) < 0)
		goto out;
	headers[0] = auth_header;
	req.url = url;
	req.service = "GitHub Actions OIDC";
	if ((r = hs_http_send(ctx, http, &req, &resp)) < 0)
		goto out;
	if (resp.status != 200) {
		hs_auth_error_text(text, sizeof(text), &resp.body);
		r = hs_error_set(ctx, HS_ERR_AUTH,
		                 "GitHub Actions OIDC token request failed (HTTP %ld)%s%s",
		                 resp.status, text[0] ? ": " : "", text);
		goto out;
	}
	r = hs_auth_parse_token(ctx, "GitHub Actions OIDC", &resp.body, "value", jwt, &unused);
out:
	hs_http_response_free(&resp);
	hs_secret_free(auth_header);
	free(url);
	return r;
}

static int github_get(struct hs_ctx *ctx, struct hs_token_source *src, const char *scope,
                      const char *tenant, char **token, int64_t *expires_at)
{
	char *jwt = NULL;
	int r;

	if ((r = hs_github_oidc_token(ctx, src->cfg->http, src->cfg->gh_request_url,
	                              src->cfg->gh_request_token, GH_AUDIENCE, &jwt)) < 0)
		goto out;
	r = hs_entra_token(ctx, src->cfg, tenant, scope, NULL, jwt, token, expires_at);
out:
	hs_secret_free(jwt);
	return r;
}

const struct hs_token_source_ops hs_source_github = {
        .name = "github-oidc",
        .create = github_create,
        .get_token = github_get,
        .free = fed_free,
};

/*
 * github-oidc-bearer: the job's OIDC token (audience --oidc-audience,
 * default "hsmsign") is itself the bearer token, for a server that
 * verifies GitHub's tokens directly (`hsmsign serve`). No exchange at Entra.
 */
static int github_bearer_create(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, bool in_chain,
                                struct hs_token_source **out)
{
	*out = NULL;
	if (!github_env_set(cfg))
		return hs_auth_not_configured(ctx, in_chain, GITHUB_ENV_MISSING,
		                              "github-oidc-bearer");
	*out = hs_auth_source_alloc(sizeof(struct hs_token_source), &hs_source_github_bearer, cfg,
	                            in_chain);
	return *out ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

static int github_bearer_get(struct hs_ctx *ctx, struct hs_token_source *src, const char *scope,
                             const char *tenant, char **token, int64_t *expires_at)
{
	const char *aud = src->cfg->oidc_audience ? src->cfg->oidc_audience : "hsmsign";
	int64_t exp;
	int r;

	(void)scope;
	(void)tenant;
	if ((r = hs_github_oidc_token(ctx, src->cfg->http, src->cfg->gh_request_url,
	                              src->cfg->gh_request_token, aud, token)) < 0)
		return r;
	exp = hs_jwt_exp(*token);
	*expires_at = exp > 0 ? exp : (int64_t)time(NULL) + 300;
	return 0;
}

const struct hs_token_source_ops hs_source_github_bearer = {
        .name = "github-oidc-bearer",
        .create = github_bearer_create,
        .get_token = github_bearer_get,
        .free = fed_free,
};
