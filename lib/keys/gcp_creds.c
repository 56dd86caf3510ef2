/*
 * gcp_creds.c - OAuth 2.0 access tokens for Google Cloud KMS without
 * gcloud: a given token, a service-account JSON key (JWT bearer grant,
 * RFC 7523), Workload Identity Federation (STS token exchange, RFC 8693)
 * from an external_account file or straight from GitHub Actions OIDC, with
 * optional service-account impersonation, and the metadata server. Token
 * endpoints come from the credentials file or, for the GitHub path and the
 * metadata server, from HSMSIGN_GCP_STS_URL, HSMSIGN_GCP_IAM_URL and
 * GCE_METADATA_HOST, so tests use a local emulator.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "core/codec.h"
#include "gcp.h"

#define GCP_FILE_MAX     (64 * 1024)
#define GCP_SCOPE        "https://www.googleapis.com/auth/cloud-platform"
#define GCP_STS_URL      "https://sts.googleapis.com/v1/token"
#define GCP_IAM_URL      "https://iamcredentials.googleapis.com"
#define GCP_METADATA     "169.254.169.254"
#define GCP_JWT_LIFETIME 3600

static void gcp_secret_free(char *s)
{
	if (s != NULL)
		OPENSSL_clear_free(s, strlen(s));
}

void hs_gcp_token_clear(struct hs_gcp_token *t)
{
	gcp_secret_free(t->value);
	memset(t, 0, sizeof(*t));
}

static const char *gcp_env(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? v : NULL;
}

static int gcp_token_set(struct hs_ctx *ctx, struct hs_gcp_token *t, const char *value,
                         int64_t expires_at, const char *source)
{
	hs_gcp_token_clear(t);
	if (value == NULL || value[0] == '\0' || strpbrk(value, " \r\n\t") != NULL)
		return hs_error_set(ctx, HS_ERR_AUTH, "Google %s: no usable access token", source);
	if ((t->value = strdup(value)) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	t->expires_at = expires_at;
	t->source = source;
	return 0;
}

/* Reads a small file NUL-terminated (wipe with hs_buf_free_secret). */
static int gcp_read_file(struct hs_ctx *ctx, const char *path, const char *what, struct hs_buf *out)
{
	FILE *fp = hs_os_fopen(path, "rb");
	char chunk[4096];
	size_t n;
	int r = 0;

	if (fp == NULL)
		return hs_error_set(ctx, HS_ERR_AUTH, "cannot open the %s %s", what, path);
	while (r == 0 && (n = fread(chunk, 1, sizeof(chunk), fp)) > 0) {
		if (out->len + n > GCP_FILE_MAX)
			r = hs_error_set(ctx, HS_ERR_INVALID, "the %s %s is too large", what, path);
		else if (hs_buf_append(out, chunk, n) < 0)
			r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	fclose(fp);
	OPENSSL_cleanse(chunk, sizeof(chunk));
	if (r == 0 && hs_buf_append(out, "", 1) < 0)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	return r;
}

/* One line of a token endpoint's error answer (never the request). */
static int gcp_http_error(struct hs_ctx *ctx, const char *who, const struct hs_http_response *resp)
{
	json_t *j = json_loadb((const char *)resp->body.data, resp->body.len, 0, NULL);
	json_t *e = json_object_get(j, "error");
	const char *code = json_is_string(e) ? json_string_value(e)
	                                     : json_string_value(json_object_get(e, "status"));
	const char *msg = json_string_value(json_object_get(j, "error_description"));
	int r;

	if (msg == NULL)
		msg = json_string_value(json_object_get(e, "message"));
	r = hs_error_set(ctx, resp->status == 403 ? HS_ERR_DENIED : HS_ERR_AUTH,
	                 "Google %s failed (HTTP %ld)%s%s%s%s", who, resp->status, code ? ": " : "",
	                 code ? code : "", msg ? ": " : "", msg ? msg : "");
	json_decref(j);
	return r;
}

/* POST (form or JSON body) to a token endpoint; parses access_token +
 * expires_in, or accessToken + expireTime (iamcredentials). */
static int gcp_token_call(struct hs_ctx *ctx, struct hs_http *http, const char *who,
                          const char *url, const char *body, bool json_body, const char *bearer,
                          struct hs_gcp_token *out, const char *source)
{
	char *auth = bearer ? hs_strprintf("Authorization: Bearer %s", bearer) : NULL;
	const char *headers[] = {json_body ? "Content-Type: application/json"
	                                   : "Content-Type: application/x-www-form-urlencoded",
	                         "Accept: application/json", auth, NULL};
	struct hs_http_request req = {
	        .method = "POST", .url = url, .headers = headers, .body = body};
	struct hs_http_response resp = {0};
	json_t *j = NULL;
	const char *tok, *exp;
	int64_t expires_at = 0;
	struct tm tm = {0};
	int r;

	req.body_len = strlen(body);
	req.service = strncmp(who, "STS", 3) == 0            ? "Google STS"
	              : strstr(who, "impersonation") != NULL ? "Google IAM Credentials"
	                                                     : "Google OAuth";
	if (bearer != NULL && auth == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = hs_http_send(ctx, http, &req, &resp)) < 0)
		goto out;
	if (resp.status != 200) {
		r = gcp_http_error(ctx, who, &resp);
		goto out;
	}
	j = json_loadb((const char *)resp.body.data, resp.body.len, 0, NULL);
	tok = json_string_value(json_object_get(j, "access_token"));
	if (tok == NULL)
		tok = json_string_value(json_object_get(j, "accessToken"));
	if (json_integer_value(json_object_get(j, "expires_in")) > 0)
		expires_at = time(NULL) + json_integer_value(json_object_get(j, "expires_in"));
	exp = json_string_value(json_object_get(j, "expireTime"));
	if (exp != NULL && sscanf(exp, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon,
	                          &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) == 6) {
		tm.tm_year -= 1900;
		tm.tm_mon -= 1;
		expires_at = hs_os_timegm(&tm);
	}
	r = gcp_token_set(ctx, out, tok, expires_at, source);
out:
	json_decref(j);
	hs_http_response_free(&resp);
	gcp_secret_free(auth);
	return r;
}

/* ------------------------------------------------------ service account */

/* base64url(json) appended to out. */
static int gcp_b64_json(struct hs_buf *out, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	int r = s ? hs_base64_encode(out, (const uint8_t *)s, strlen(s), true) : HS_ERR_NOMEM;

	free(s);
	return r;
}

/* RS256 JWT assertion for the JWT bearer grant (secret memory, free()). */
static int gcp_sa_assertion(struct hs_ctx *ctx, json_t *sa, const char *aud, char **out)
{
	const char *pem = json_string_value(json_object_get(sa, "private_key"));
	const char *email = json_string_value(json_object_get(sa, "client_email"));
	const char *kid = json_string_value(json_object_get(sa, "private_key_id"));
	int64_t now = time(NULL);
	json_t *hdr = json_pack("{s:s, s:s, s:s?}", "alg", "RS256", "typ", "JWT", "kid", kid);
	json_t *claims =
	        json_pack("{s:s?, s:s, s:s, s:I, s:I}", "iss", email, "scope", GCP_SCOPE, "aud",
	                  aud, "iat", (json_int_t)now, "exp", (json_int_t)(now + GCP_JWT_LIFETIME));
	BIO *bio = pem ? BIO_new_mem_buf(pem, -1) : NULL;
	EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	struct hs_buf jwt = {0};
	unsigned char sig[1024];
	size_t sig_len = sizeof(sig);
	int r;

	*out = NULL;
	if (email == NULL || key == NULL) {
		r = hs_error_ssl(ctx, HS_ERR_AUTH,
		                 "the service-account key file has no usable client_email and "
		                 "private_key");
		goto out;
	}
	if (gcp_b64_json(&jwt, hdr) < 0 || hs_buf_append(&jwt, ".", 1) < 0 ||
	    gcp_b64_json(&jwt, claims) < 0 || md == NULL ||
	    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(md, sig, &sig_len, jwt.data, jwt.len) != 1 ||
	    hs_buf_append(&jwt, ".", 1) < 0 || hs_base64_encode(&jwt, sig, sig_len, true) < 0 ||
	    hs_buf_append(&jwt, "", 1) < 0) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot sign the service-account assertion");
		goto out;
	}
	*out = (char *)jwt.data;
	jwt.data = NULL;
	r = 0;
out:
	ERR_clear_error();
	hs_buf_free_secret(&jwt);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(key);
	BIO_free(bio);
	json_decref(hdr);
	json_decref(claims);
	return r;
}

static int gcp_from_service_account(struct hs_ctx *ctx, struct hs_http *http, json_t *sa,
                                    struct hs_gcp_token *out)
{
	const char *uri = json_string_value(json_object_get(sa, "token_uri"));
	char *assertion = NULL, *body = NULL;
	int r;

	if (uri == NULL)
		uri = "https://oauth2.googleapis.com/token";
	if ((r = gcp_sa_assertion(ctx, sa, uri, &assertion)) < 0)
		return r;
	body = hs_strprintf("grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer"
	                    "&assertion=%s",
	                    assertion);
	r = body ? gcp_token_call(ctx, http, "service-account token request", uri, body, false,
	                          NULL, out, "service-account")
	         : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	gcp_secret_free(body);
	gcp_secret_free(assertion);
	return r;
}

/* ------------------------------------------------------ workload identity */

/* STS token exchange of an OIDC subject token, then (optionally)
 * impersonation of a service account with the federated token. */
static int gcp_sts_exchange(struct hs_ctx *ctx, struct hs_http *http, const char *sts_url,
                            const char *audience, const char *subject_type,
                            const char *subject_token, const char *impersonation_url,
                            struct hs_gcp_token *out)
{
	char *aud = hs_http_urlencode(audience), *typ = hs_http_urlencode(subject_type);
	char *tok = hs_http_urlencode(subject_token), *body = NULL;
	int r;

	if (aud && typ && tok)
		body = hs_strprintf(
		        "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Atoken-exchange"
		        "&requested_token_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Atoken-type%%"
		        "3Aaccess_"
		        "token&scope=https%%3A%%2F%%2Fwww.googleapis.com%%2Fauth%%2Fcloud-platform"
		        "&audience=%s&subject_token_type=%s&subject_token=%s",
		        aud, typ, tok);
	if (body == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = gcp_token_call(ctx, http, "STS token exchange", sts_url, body, false, NULL, out,
	                        "workload-identity")) < 0 ||
	    impersonation_url == NULL)
		goto out;
	r = gcp_token_call(ctx, http, "service-account impersonation", impersonation_url,
	                   "{\"scope\":[\"" GCP_SCOPE "\"]}", true, out->value, out,
	                   "workload-identity");
out:
	free(aud);
	free(typ);
	gcp_secret_free(tok);
	gcp_secret_free(body);
	return r;
}

/* GET url with the given header lines; the body into *out (secret). */
static int gcp_fetch_subject(struct hs_ctx *ctx, struct hs_http *http, const char *url,
                             const char *const *headers, struct hs_buf *out)
{
	struct hs_http_request req = {.method = "GET", .url = url, .headers = headers};
	struct hs_http_response resp = {0};
	int r;

	if ((r = hs_http_send(ctx, http, &req, &resp)) < 0)
		goto out;
	if (resp.status != 200)
		r = hs_error_set(ctx, HS_ERR_AUTH, "the OIDC token request to %s failed (HTTP %ld)",
		                 url, resp.status);
	else if (hs_buf_append(out, resp.body.data, resp.body.len) < 0 ||
	         hs_buf_append(out, "", 1) < 0)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
out:
	hs_http_response_free(&resp);
	return r;
}

/* The subject token in raw (text or JSON) per format; malloc'd secret. */
static int gcp_subject_value(struct hs_ctx *ctx, const char *raw, json_t *format, char **out)
{
	const char *type = json_string_value(json_object_get(format, "type"));
	const char *field = json_string_value(json_object_get(format, "subject_token_field_name"));
	json_t *j;
	size_t n;

	*out = NULL;
	if (type != NULL && strcmp(type, "json") == 0) {
		j = json_loads(raw, 0, NULL);
		if (json_string_value(json_object_get(j, field ? field : "value")) != NULL)
			*out = strdup(
			        json_string_value(json_object_get(j, field ? field : "value")));
		json_decref(j);
	} else {
		raw += strspn(raw, " \t\r\n");
		n = strcspn(raw, " \t\r\n");
		*out = n ? strndup(raw, n) : NULL;
	}
	return *out ? 0 : hs_error_set(ctx, HS_ERR_AUTH, "the OIDC subject token is empty");
}

/* Header lines from credential_source.headers (values may be secrets). */
static int gcp_source_headers(json_t *obj, char *lines[8])
{
	const char *name;
	json_t *v;
	size_t n = 0;

	json_object_foreach(obj, name, v)
	{
		if (n == 7 || !json_is_string(v))
			return -1;
		if ((lines[n++] = hs_strprintf("%s: %s", name, json_string_value(v))) == NULL)
			return -1;
	}
	return 0;
}

static int gcp_subject_token(struct hs_ctx *ctx, struct hs_http *http, json_t *src, char **out)
{
	const char *file = json_string_value(json_object_get(src, "file"));
	const char *url = json_string_value(json_object_get(src, "url"));
	char *lines[8] = {NULL};
	struct hs_buf raw = {0};
	int r;

	if (file != NULL)
		r = gcp_read_file(ctx, file, "OIDC token file", &raw);
	else if (url == NULL)
		r = hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                 "external_account credentials: only file and url credential "
		                 "sources are supported");
	else if (gcp_source_headers(json_object_get(src, "headers"), lines) < 0)
		r = hs_error_set(ctx, HS_ERR_INVALID,
		                 "external_account: bad credential_source "
		                 "headers");
	else
		r = gcp_fetch_subject(ctx, http, url, (const char *const *)lines, &raw);
	if (r == 0)
		r = gcp_subject_value(ctx, (const char *)raw.data, json_object_get(src, "format"),
		                      out);
	for (int i = 0; i < 8; i++)
		gcp_secret_free(lines[i]);
	hs_buf_free_secret(&raw);
	return r;
}

static int gcp_from_external_account(struct hs_ctx *ctx, struct hs_http *http, json_t *cfg,
                                     struct hs_gcp_token *out)
{
	const char *aud = json_string_value(json_object_get(cfg, "audience"));
	const char *type = json_string_value(json_object_get(cfg, "subject_token_type"));
	const char *url = json_string_value(json_object_get(cfg, "token_url"));
	const char *imp =
	        json_string_value(json_object_get(cfg, "service_account_impersonation_url"));
	char *subject = NULL;
	int r;

	if (aud == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "external_account credentials: no audience");
	if ((r = gcp_subject_token(ctx, http, json_object_get(cfg, "credential_source"),
	                           &subject)) == 0)
		r = gcp_sts_exchange(ctx, http, url ? url : GCP_STS_URL, aud,
		                     type ? type : "urn:ietf:params:oauth:token-type:jwt", subject,
		                     imp, out);
	gcp_secret_free(subject);
	return r;
}

/* GitHub Actions OIDC straight into WIF: the same exchange as an
 * external_account file written by google-github-actions/auth. */
static int gcp_from_github(struct hs_ctx *ctx, struct hs_http *http,
                           const struct hs_gcp_cred_cfg *cfg, struct hs_gcp_token *out)
{
	const char *gh_url = gcp_env("ACTIONS_ID_TOKEN_REQUEST_URL");
	const char *gh_tok = gcp_env("ACTIONS_ID_TOKEN_REQUEST_TOKEN");
	const char *iam = gcp_env("HSMSIGN_GCP_IAM_URL");
	const char *sts = gcp_env("HSMSIGN_GCP_STS_URL");
	char *aud = hs_strprintf("//iam.googleapis.com/%s", cfg->workload_provider);
	char *gh_plain = aud ? hs_strprintf("https:%s", aud) : NULL;
	char *gh_aud = gh_plain ? hs_http_urlencode(gh_plain) : NULL;
	json_t *format = json_pack("{s:s}", "type", "json");
	char *url = NULL, *auth = NULL, *imp = NULL, *subject = NULL;
	const char *headers[3] = {NULL, "Accept: application/json", NULL};
	struct hs_buf raw = {0};
	int r;

	if (gh_url == NULL || gh_tok == NULL) {
		r = hs_error_set(
		        ctx, HS_ERR_AUTH,
		        "--gcp-workload-provider needs GitHub Actions OIDC "
		        "(ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN; permissions: id-token: write)");
		goto out;
	}
	url = hs_strprintf("%s%saudience=%s", gh_url, strchr(gh_url, '?') ? "&" : "?",
	                   gh_aud ? gh_aud : "");
	auth = hs_strprintf("Authorization: Bearer %s", gh_tok);
	if (cfg->service_account != NULL)
		imp = hs_strprintf("%s/v1/projects/-/serviceAccounts/%s:generateAccessToken",
		                   iam ? iam : GCP_IAM_URL, cfg->service_account);
	if (aud == NULL || gh_aud == NULL || url == NULL || auth == NULL || format == NULL ||
	    (cfg->service_account && imp == NULL)) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	headers[0] = auth;
	if ((r = gcp_fetch_subject(ctx, http, url, headers, &raw)) < 0 ||
	    (r = gcp_subject_value(ctx, (const char *)raw.data, format, &subject)) < 0)
		goto out;
	r = gcp_sts_exchange(ctx, http, sts ? sts : GCP_STS_URL, aud,
	                     "urn:ietf:params:oauth:token-type:jwt", subject, imp, out);
	if (r == 0)
		out->source = "github-oidc";
out:
	hs_buf_free_secret(&raw);
	gcp_secret_free(subject);
	gcp_secret_free(auth);
	free(url);
	free(imp);
	free(aud);
	free(gh_plain);
	free(gh_aud);
	json_decref(format);
	return r;
}

/* ------------------------------------------------------ file and metadata */

/* GOOGLE_APPLICATION_CREDENTIALS: a service_account key or an
 * external_account (workload identity federation) configuration. */
static int gcp_from_file(struct hs_ctx *ctx, struct hs_http *http, const char *path,
                         struct hs_gcp_token *out)
{
	struct hs_buf file = {0};
	json_t *j = NULL;
	const char *type;
	int r;

	if ((r = gcp_read_file(ctx, path, "Google credentials file", &file)) < 0)
		goto out;
	j = json_loadb((const char *)file.data, file.len - 1, 0, NULL);
	type = json_string_value(json_object_get(j, "type"));
	if (type == NULL)
		r = hs_error_set(ctx, HS_ERR_INVALID,
		                 "the Google credentials file %s is not a "
		                 "credentials JSON document",
		                 path);
	else if (strcmp(type, "service_account") == 0)
		r = gcp_from_service_account(ctx, http, j, out);
	else if (strcmp(type, "external_account") == 0)
		r = gcp_from_external_account(ctx, http, j, out);
	else
		r = hs_error_set(
		        ctx, HS_ERR_UNSUPPORTED,
		        "Google credentials of type '%s' are not supported (use a "
		        "service_account key, an external_account file or an access token)",
		        type);
out:
	if (j != NULL) {
		/* the private key lives in the JSON tree: wipe it before freeing */
		json_t *pk = json_object_get(j, "private_key");
		if (json_is_string(pk))
			OPENSSL_cleanse((void *)json_string_value(pk), json_string_length(pk));
	}
	json_decref(j);
	hs_buf_free_secret(&file);
	return r;
}

/* The metadata server's token for the VM's default service account. */
static int gcp_from_metadata(struct hs_ctx *ctx, const char *host, struct hs_gcp_token *out)
{
	struct hs_http_config hc = HS_HTTP_CONFIG_INIT;
	struct hs_http *http = NULL;
	char *url = hs_strprintf("http://%s/computeMetadata/v1/instance/service-accounts/default/"
	                         "token",
	                         host);
	const char *headers[] = {"Metadata-Flavor: Google", NULL};
	struct hs_http_request req = {.method = "GET", .url = url, .headers = headers};
	struct hs_http_response resp = {0};
	json_t *j = NULL;
	int r;

	req.service = "GCE metadata server";
	hc.timeout_ms = 2000; /* off GCE nobody answers: do not hang */
	hc.max_retries = 1;
	hc.max_total_ms = 6000;
	if (url == NULL || (r = hs_http_new(ctx, &http, &hc)) < 0) {
		r = url ? r : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = hs_http_send(ctx, http, &req, &resp)) < 0)
		goto out;
	if (resp.status != 200) {
		r = gcp_http_error(ctx, "metadata server token request", &resp);
		goto out;
	}
	j = json_loadb((const char *)resp.body.data, resp.body.len, 0, NULL);
	r = gcp_token_set(ctx, out, json_string_value(json_object_get(j, "access_token")),
	                  time(NULL) + json_integer_value(json_object_get(j, "expires_in")),
	                  "metadata");
out:
	json_decref(j);
	hs_http_response_free(&resp);
	hs_http_free(http);
	free(url);
	return r;
}

int hs_gcp_token_get(struct hs_ctx *ctx, struct hs_http *http, const struct hs_gcp_cred_cfg *cfg,
                     struct hs_gcp_token *out)
{
	const char *token =
	        cfg->access_token ? cfg->access_token : gcp_env("GOOGLE_OAUTH_ACCESS_TOKEN");
	const char *file = cfg->credentials_file ? cfg->credentials_file
	                                         : gcp_env("GOOGLE_APPLICATION_CREDENTIALS");
	const char *host = gcp_env("GCE_METADATA_HOST");
	int r;

	hs_gcp_token_clear(out);
	if (token != NULL)
		return gcp_token_set(ctx, out, token, 0, "access-token");
	if (cfg->workload_provider != NULL)
		return gcp_from_github(ctx, http, cfg, out);
	if (file != NULL)
		return gcp_from_file(ctx, http, file, out);
	r = gcp_from_metadata(ctx, host ? host : GCP_METADATA, out);
	if (r == HS_ERR_NETWORK && host == NULL) {
		hs_ctx_clear_error(ctx);
		r = hs_error_set(ctx, HS_ERR_AUTH,
		                 "no Google credentials: give --gcp-access-token, set "
		                 "GOOGLE_APPLICATION_CREDENTIALS (service-account key or "
		                 "workload identity file), use --gcp-workload-provider in GitHub "
		                 "Actions, or run on Google Cloud");
	}
	return r;
}
