/*
 * token_mi.c - managed identity: App Service / Functions / Container Apps
 * (IDENTITY_ENDPOINT + IDENTITY_HEADER), else the VM's Instance Metadata Service
 * (IMDS_ENDPOINT or http://169.254.169.254). protocols.md 2.d.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "auth/source.h"

/* In a chain, a machine without IMDS must not hold us up. */
#define MI_PROBE_TIMEOUT_MS 1000
/* IMDS answers 404 (identity not ready) and 410 (updating, back within 70 s). */
#define MI_IMDS_EXTRA_TRIES 4
#define MI_IMDS_BACKOFF_MS  1000L

struct mi_source {
	struct hs_token_source base;
	bool app_service;
	bool imds_seen;        /* IMDS answered once: no more probing */
	struct hs_http *probe; /* short-timeout, single-attempt client for the probe */
};

static int mi_create(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, bool in_chain,
                     struct hs_token_source **out)
{
	struct hs_http_config probe_cfg = HS_HTTP_CONFIG_INIT;
	struct mi_source *mi;
	int r;

	*out = NULL;
	mi = hs_auth_source_alloc(sizeof(*mi), &hs_source_managed_identity, cfg, in_chain);
	if (mi == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	mi->app_service = cfg->identity_endpoint != NULL && cfg->identity_header != NULL;
	if (!mi->app_service && in_chain) {
		probe_cfg.timeout_ms = MI_PROBE_TIMEOUT_MS;
		probe_cfg.max_retries = -1;
		if ((r = hs_http_new(ctx, &mi->probe, &probe_cfg)) < 0) {
			free(mi);
			return r;
		}
	}
	*out = &mi->base;
	return 0;
}

static void mi_free(struct hs_token_source *src)
{
	struct mi_source *mi = (struct mi_source *)src;

	hs_http_free(mi->probe);
	free(mi);
}

/* base + ("?" or "&") + "resource=R&api-version=V" [+ "&client_id=C"] (malloc). */
static int mi_url(struct hs_ctx *ctx, const char *base, const char *scope, const char *api,
                  const char *client_id, char **out)
{
	char *resource = hs_auth_scope_to_resource(scope);
	char *res_enc = resource ? hs_http_urlencode(resource) : NULL;
	char *cid_enc = client_id ? hs_http_urlencode(client_id) : NULL;
	size_t n;
	int r;

	*out = NULL;
	if (res_enc == NULL || (client_id != NULL && cid_enc == NULL)) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	n = strlen(base) + strlen(res_enc) + strlen(api) + (cid_enc ? strlen(cid_enc) : 0) + 64;
	if ((*out = malloc(n)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	snprintf(*out, n, "%s%cresource=%s&api-version=%s%s%s", base, strchr(base, '?') ? '&' : '?',
	         res_enc, api, cid_enc ? "&client_id=" : "", cid_enc ? cid_enc : "");
	r = 0;
out:
	free(resource);
	free(res_enc);
	free(cid_enc);
	return r;
}

/* Turns a final managed-identity response into a token or a one-line error. */
static int mi_answer(struct hs_ctx *ctx, const char *what, const struct hs_http_response *resp,
                     char **token, int64_t *expires_at)
{
	char text[300];

	if (resp->status == 200)
		return hs_auth_parse_token(ctx, what, &resp->body, "access_token", token,
		                           expires_at);
	hs_auth_error_text(text, sizeof(text), &resp->body);
	return hs_error_set(ctx, resp->status >= 500 ? HS_ERR_NETWORK : HS_ERR_AUTH,
	                    "%s returned HTTP %ld%s%s", what, resp->status, text[0] ? ": " : "",
	                    text);
}

static int mi_app_service(struct hs_ctx *ctx, struct mi_source *mi, const char *scope, char **token,
                          int64_t *expires_at)
{
	const struct hs_auth_cfg *cfg = mi->base.cfg;
	const char *headers[3] = {NULL, "Accept: application/json", NULL};
	struct hs_http_request req = {.method = "GET", .headers = headers};
	struct hs_http_response resp = {0};
	char *url = NULL, *header = NULL;
	size_t n = strlen(cfg->identity_header) + sizeof("X-IDENTITY-HEADER: ");
	int r;

	if ((r = mi_url(ctx, cfg->identity_endpoint, scope, "2019-08-01", cfg->client_id, &url)) <
	    0)
		goto out;
	if ((header = OPENSSL_secure_malloc(n)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	snprintf(header, n, "X-IDENTITY-HEADER: %s", cfg->identity_header);
	headers[0] = header;
	req.url = url;
	req.service = "App Service managed identity";
	if ((r = hs_http_send(ctx, cfg->http, &req, &resp)) < 0)
		goto out;
	r = mi_answer(ctx, "managed identity (App Service IDENTITY_ENDPOINT)", &resp, token,
	              expires_at);
out:
	hs_http_response_free(&resp);
	hs_secret_free(header);
	free(url);
	return r;
}

/* One probe attempt: HS_AUTH_UNAVAILABLE when nothing listens, else 0 with resp. */
static int mi_imds_probe(struct hs_ctx *ctx, struct mi_source *mi,
                         const struct hs_http_request *req, struct hs_http_response *resp)
{
	struct hs_ctx scratch = {.log_fn = ctx->log_fn, .log_userdata = ctx->log_userdata};
	int r = hs_http_send(&scratch, mi->probe, req, resp);

	if (r < 0) {
		hs_log(ctx, HS_LOG_DEBUG, "managed identity: no IMDS at %s (%s)",
		       mi->base.cfg->imds_endpoint, scratch.message);
		return HS_AUTH_UNAVAILABLE;
	}
	mi->imds_seen = true;
	return 0;
}

/* IMDS also wants 404 and 410 retried. 429 and 5xx only when the answer
 * came from the one-attempt probe: hs_http_send() has retried those already
 * within its time budget, and retrying its whole budget again would not be
 * bounded by --http-max-time. */
static bool mi_imds_retry_status(long status, bool http_retried)
{
	return status == 404 || status == 410 ||
	       (!http_retried && (status == 429 || status >= 500));
}

static int mi_imds(struct hs_ctx *ctx, struct mi_source *mi, const char *scope, char **token,
                   int64_t *expires_at)
{
	static const char *const headers[] = {"Metadata: true", NULL};
	const struct hs_auth_cfg *cfg = mi->base.cfg;
	struct hs_http_request req = {.method = "GET", .headers = headers};
	struct hs_http_response resp = {0};
	char base[1100], *url = NULL;
	long wait_ms = MI_IMDS_BACKOFF_MS;
	bool http_retried = true;
	int r, tries = 0;

	snprintf(base, sizeof(base), "%s/metadata/identity/oauth2/token", cfg->imds_endpoint);
	if ((r = mi_url(ctx, base, scope, "2018-02-01", cfg->client_id, &url)) < 0)
		goto out;
	req.url = url;
	req.service = "managed identity (IMDS)";
	if (mi->probe != NULL && !mi->imds_seen) {
		if ((r = mi_imds_probe(ctx, mi, &req, &resp)) != 0)
			goto out;
		http_retried = false;
	} else if ((r = hs_http_send(ctx, cfg->http, &req, &resp)) < 0) {
		goto out;
	}
	while (mi_imds_retry_status(resp.status, http_retried) && tries++ < MI_IMDS_EXTRA_TRIES) {
		hs_log(ctx, HS_LOG_DEBUG, "IMDS answered HTTP %ld, retrying in %ld ms", resp.status,
		       wait_ms);
		hs_os_sleep_us((int64_t)wait_ms * 1000);
		wait_ms *= 2;
		hs_http_response_free(&resp);
		if ((r = hs_http_send(ctx, cfg->http, &req, &resp)) < 0)
			goto out;
		http_retried = true;
	}
	if (resp.status == 400 && mi->base.in_chain) {
		/* No identity assigned to this VM: not an error for the chain. */
		hs_log(ctx, HS_LOG_DEBUG, "managed identity: IMDS has no identity (HTTP 400)");
		r = HS_AUTH_UNAVAILABLE;
		goto out;
	}
	r = mi_answer(ctx, "managed identity (IMDS)", &resp, token, expires_at);
out:
	hs_http_response_free(&resp);
	free(url);
	return r;
}

static int mi_get(struct hs_ctx *ctx, struct hs_token_source *src, const char *scope,
                  const char *tenant, char **token, int64_t *expires_at)
{
	struct mi_source *mi = (struct mi_source *)src;

	if (mi->app_service)
		return mi_app_service(ctx, mi, scope, token, expires_at);
	return mi_imds(ctx, mi, scope, token, expires_at);
}

const struct hs_token_source_ops hs_source_managed_identity = {
        .name = "managed-identity",
        .create = mi_create,
        .get_token = mi_get,
        .free = mi_free,
};
