/* entra.c - Microsoft Entra ID v2 token endpoint: the client-credentials grant. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "auth/source.h"

#define ENTRA_ASSERTION_TYPE "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
#define ENTRA_TENANT_MAX     128

/* Cloud names accepted by -au (protocols.md 2.f). */
static const struct {
	const char *name;
	const char *authority;
} entra_clouds[] = {
        {"public", "https://login.microsoftonline.com"},
        {"azurecloud", "https://login.microsoftonline.com"},
        {"china", "https://login.chinacloudapi.cn"},
        {"azurechinacloud", "https://login.chinacloudapi.cn"},
        {"usgov", "https://login.microsoftonline.us"},
        {"azureusgovernment", "https://login.microsoftonline.us"},
};

int hs_entra_authority(struct hs_ctx *ctx, const char *authority, char **out)
{
	const char *value = authority;
	size_t n;
	char *url;

	*out = NULL;
	if (value == NULL || *value == '\0')
		value = getenv("AZURE_AUTHORITY_HOST");
	if (value == NULL || *value == '\0')
		value = entra_clouds[0].authority;
	for (size_t i = 0; i < sizeof(entra_clouds) / sizeof(entra_clouds[0]); i++)
		if (strcasecmp(value, entra_clouds[i].name) == 0)
			value = entra_clouds[i].authority;
	n = strlen(value);
	if (n == 0 || n > 1024 || strpbrk(value, " \t\r\n?#") != NULL)
		return hs_error_set(ctx, HS_ERR_INVALID, "invalid authority '%.100s'", value);
	if ((url = malloc(n + sizeof("https://"))) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	snprintf(url, n + sizeof("https://"), "%s%s", strstr(value, "://") ? "" : "https://",
	         value);
	n = strlen(url);
	while (n > 0 && url[n - 1] == '/')
		url[--n] = '\0';
	*out = url;
	return 0;
}

int hs_entra_tenant(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, const char *tenant,
                    const char **out)
{
	const char *t = cfg->tenant_id != NULL ? cfg->tenant_id : tenant;
	size_t n;

	*out = NULL;
	if (t == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "no tenant ID for client '%s': set AZURE_TENANT_ID or -kvt",
		                    cfg->client_id ? cfg->client_id : "?");
	n = strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_");
	if (n == 0 || n > ENTRA_TENANT_MAX || t[n] != '\0' || t[0] == '.' || t[0] == '-')
		return hs_error_set(ctx, HS_ERR_INVALID, "invalid tenant ID '%.64s'", t);
	*out = t;
	return 0;
}

int hs_entra_endpoint(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, const char *tenant,
                      char **out)
{
	const char *t;
	size_t n;
	int r;

	*out = NULL;
	if ((r = hs_entra_tenant(ctx, cfg, tenant, &t)) < 0)
		return r;
	n = strlen(cfg->authority) + strlen(t) + sizeof("//oauth2/v2.0/token");
	if ((*out = malloc(n)) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	snprintf(*out, n, "%s/%s/oauth2/v2.0/token", cfg->authority, t);
	return 0;
}

/* Appends "&name=" and the encoded value; the encoded copy is wiped. */
static int entra_form_add(struct hs_buf *form, const char *name, const char *value, bool encode)
{
	char *enc = encode ? hs_http_urlencode(value) : NULL;
	const char *v = encode ? enc : value;
	int r;

	if (v == NULL)
		return HS_ERR_NOMEM;
	if ((r = hs_buf_append(form, "&", form->len ? 1 : 0)) < 0 ||
	    (r = hs_buf_append(form, name, strlen(name))) < 0 ||
	    (r = hs_buf_append(form, "=", 1)) < 0 || (r = hs_buf_append(form, v, strlen(v))) < 0)
		r = HS_ERR_NOMEM;
	if (enc != NULL)
		OPENSSL_clear_free(enc, strlen(enc));
	return r;
}

static int entra_form(struct hs_buf *form, const struct hs_auth_cfg *cfg, const char *scope,
                      const char *client_secret, const char *assertion)
{
	int r;

	if ((r = entra_form_add(form, "client_id", cfg->client_id, true)) < 0 ||
	    (r = entra_form_add(form, "scope", scope, true)) < 0 ||
	    (r = entra_form_add(form, "grant_type", "client_credentials", false)) < 0)
		return r;
	if (client_secret != NULL)
		return entra_form_add(form, "client_secret", client_secret, true);
	if ((r = entra_form_add(form, "client_assertion_type", ENTRA_ASSERTION_TYPE, false)) < 0)
		return r;
	return entra_form_add(form, "client_assertion", assertion, true);
}

/* For AADSTS70021 without the details: the presented assertion's issuer and subject. */
static void entra_assertion_hint(char *out, size_t out_len, const char *text, const char *assertion)
{
	char *iss, *sub;

	out[0] = '\0';
	if (assertion == NULL || strstr(text, "AADSTS70021:") == NULL ||
	    strstr(text, "Assertion Subject") != NULL)
		return;
	iss = hs_jwt_claim(assertion, "iss");
	sub = hs_jwt_claim(assertion, "sub");
	if (iss != NULL || sub != NULL)
		snprintf(out, out_len, " Assertion Issuer: '%.120s'. Assertion Subject: '%.160s'.",
		         iss ? iss : "?", sub ? sub : "?");
	free(iss);
	free(sub);
}

/* The one-line error for a non-200 answer of the token endpoint. */
static int entra_error(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, const char *tenant,
                       const struct hs_http_response *resp, const char *client_secret,
                       const char *assertion)
{
	char text[400], hint[400];
	int code = resp->status >= 500 ? HS_ERR_NETWORK : HS_ERR_AUTH;

	hs_auth_error_text(text, sizeof(text), &resp->body);
	/* Entra does not echo credentials, but never risk printing one. */
	if ((client_secret != NULL && *client_secret && strstr(text, client_secret) != NULL) ||
	    (assertion != NULL && *assertion && strstr(text, assertion) != NULL))
		snprintf(text, sizeof(text),
		         "(error description withheld: it quotes the credential)");
	if (text[0] == '\0')
		snprintf(text, sizeof(text), "no error description");
	entra_assertion_hint(hint, sizeof(hint), text, assertion);
	return hs_error_set(ctx, code,
	                    "Entra ID token request for client '%s' in tenant '%s' failed (HTTP "
	                    "%ld): %s%s",
	                    cfg->client_id, tenant, resp->status, text, hint);
}

int hs_entra_token(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, const char *tenant,
                   const char *scope, const char *client_secret, const char *assertion,
                   char **token, int64_t *expires_at)
{
	static const char *const headers[] = {"Content-Type: application/x-www-form-urlencoded",
	                                      "Accept: application/json", NULL};
	struct hs_http_request req = {.method = "POST", .headers = headers};
	struct hs_http_response resp = {0};
	struct hs_buf form = {0};
	char *endpoint = NULL;
	const char *t;
	int r;

	*token = NULL;
	if ((r = hs_entra_tenant(ctx, cfg, tenant, &t)) < 0 ||
	    (r = hs_entra_endpoint(ctx, cfg, tenant, &endpoint)) < 0)
		goto out;
	if ((r = entra_form(&form, cfg, scope, client_secret, assertion)) < 0) {
		r = hs_error_set(ctx, r, "out of memory building the token request");
		goto out;
	}
	req.url = endpoint;
	req.body = form.data;
	req.body_len = form.len;
	req.service = "Microsoft Entra ID";
	if ((r = hs_http_send(ctx, cfg->http, &req, &resp)) < 0)
		goto out;
	if (resp.status != 200) {
		r = entra_error(ctx, cfg, t, &resp, client_secret, assertion);
		goto out;
	}
	r = hs_auth_parse_token(ctx, "Entra ID", &resp.body, "access_token", token, expires_at);
out:
	hs_http_response_free(&resp);
	hs_buf_free_secret(&form);
	free(endpoint);
	return r;
}
