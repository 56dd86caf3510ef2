/* credential.c - the Azure credential: configuration, the default chain, the token cache. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "auth/source.h"

#define CRED_MAX_SOURCES 8

/* One cached token per (scope, tenant). */
struct cred_cache_entry {
	char *scope;
	char *tenant; /* or NULL */
	char *token;  /* secret */
	int64_t expires_at;
	struct cred_cache_entry *next;
};

struct hs_azure_credential {
	struct hs_auth_cfg cfg;
	struct hs_token_source *sources[CRED_MAX_SOURCES];
	size_t n_sources;
	bool is_chain;
	struct hs_token_source *chosen; /* the source that yielded the last token */
	struct cred_cache_entry *cache;
};

/* The DefaultAzureCredential order (protocols.md 2.f, issue 3). */
static const struct hs_token_source_ops *const cred_default_chain[] = {
        &hs_source_secret,
        &hs_source_certificate,
        &hs_source_workload,
        &hs_source_github,
        &hs_source_managed_identity,
        &hs_source_azure_cli,
        NULL,
};
static const struct hs_token_source_ops *const cred_environment_chain[] = {
        &hs_source_secret,
        &hs_source_certificate,
        NULL,
};
static const struct hs_token_source_ops *const cred_all_sources[] = {
        &hs_source_token,     &hs_source_secret,        &hs_source_certificate,
        &hs_source_workload,  &hs_source_github,        &hs_source_managed_identity,
        &hs_source_azure_cli, &hs_source_github_bearer, NULL,
};

char *hs_secret_strdup(const char *s)
{
	size_t n;
	char *copy;

	if (s == NULL)
		return NULL;
	n = strlen(s) + 1;
	if ((copy = OPENSSL_secure_malloc(n)) != NULL)
		memcpy(copy, s, n);
	return copy;
}

void hs_secret_free(char *s)
{
	if (s != NULL)
		OPENSSL_secure_clear_free(s, strlen(s) + 1);
}

int hs_auth_not_configured(struct hs_ctx *ctx, bool in_chain, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (in_chain) {
		hs_log(ctx, HS_LOG_DEBUG, "credential chain: skipping %s", why);
		return 0;
	}
	return hs_error_set(ctx, HS_ERR_INVALID, "%s", why);
}

int hs_auth_read_file(struct hs_ctx *ctx, const char *path, const char *what, size_t max,
                      struct hs_buf *out)
{
	unsigned char chunk[4096];
	FILE *f = hs_os_fopen(path, "rb");
	struct hs_os_stat st;
	size_t n;
	int r;

	if (f == NULL)
		return hs_error_set(ctx, HS_ERR_IO, "cannot open %s %s: %s", what, path,
		                    strerror(errno));
	/* Reserve up front so that realloc() leaves no stray copies of key material. */
	if (hs_os_stat(path, &st) == 0 && st.size > 0 && st.size < max)
		hs_buf_reserve(out, (size_t)st.size + 1);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (n > max - out->len) {
			r = hs_error_set(ctx, HS_ERR_INVALID, "%s %s is larger than %zu bytes",
			                 what, path, max);
			goto out;
		}
		if ((r = hs_buf_append(out, chunk, n)) < 0) {
			r = hs_error_set(ctx, r, "out of memory reading %s", path);
			goto out;
		}
	}
	if (ferror(f)) {
		r = hs_error_set(ctx, HS_ERR_IO, "cannot read %s %s: %s", what, path,
		                 strerror(errno));
		goto out;
	}
	if ((r = hs_buf_append(out, "", 1)) < 0) {
		r = hs_error_set(ctx, r, "out of memory reading %s", path);
		goto out;
	}
	out->len--;
	r = 0;
out:
	OPENSSL_cleanse(chunk, sizeof(chunk));
	fclose(f);
	return r;
}

void *hs_auth_source_alloc(size_t size, const struct hs_token_source_ops *ops,
                           const struct hs_auth_cfg *cfg, bool in_chain)
{
	struct hs_token_source *src = calloc(1, size);

	if (src != NULL) {
		src->ops = ops;
		src->cfg = cfg;
		src->in_chain = in_chain;
	}
	return src;
}

bool hs_auth_token_ok(const char *token)
{
	size_t n = 0;

	for (const char *p = token; *p; p++, n++)
		if (*p <= 0x20 || *p >= 0x7f)
			return false;
	return n > 0 && n <= 64 * 1024;
}

char *hs_auth_scope_to_resource(const char *scope)
{
	size_t n = strlen(scope);
	static const char suffix[] = "/.default";

	if (n >= sizeof(suffix) - 1 && strcmp(scope + n - (sizeof(suffix) - 1), suffix) == 0)
		n -= sizeof(suffix) - 1;
	return strndup(scope, n);
}

void hs_auth_first_line(char *out, size_t out_len, const char *s)
{
	size_t n = strcspn(s, "\r\n");

	if (n >= out_len)
		n = out_len - 1;
	memcpy(out, s, n);
	out[n] = '\0';
}

int64_t hs_auth_json_time(const json_t *value)
{
	const char *s;
	char *end;
	long long v;

	if (json_is_integer(value))
		return (int64_t)json_integer_value(value);
	if (json_is_real(value))
		return (int64_t)json_real_value(value);
	if (!json_is_string(value))
		return 0;
	s = json_string_value(value);
	if (*s < '0' || *s > '9')
		return 0;
	v = strtoll(s, &end, 10);
	return *end == '\0' ? (int64_t)v : 0;
}

int hs_auth_parse_token(struct hs_ctx *ctx, const char *who, const struct hs_buf *body,
                        const char *token_field, char **token, int64_t *expires_at)
{
	json_error_t jerr;
	json_t *root = NULL;
	const char *value;
	int64_t now = (int64_t)time(NULL), on, in;
	int r;

	*token = NULL;
	root = json_loadb((const char *)body->data, body->len, 0, &jerr);
	if (root == NULL || !json_is_object(root)) {
		r = hs_error_set(ctx, HS_ERR_AUTH, "%s: token response is not a JSON object", who);
		goto out;
	}
	value = json_string_value(json_object_get(root, token_field));
	if (value == NULL || !hs_auth_token_ok(value)) {
		r = hs_error_set(ctx, HS_ERR_AUTH, "%s: token response has no valid \"%s\"", who,
		                 token_field);
		goto out;
	}
	on = hs_auth_json_time(json_object_get(root, "expires_on"));
	in = hs_auth_json_time(json_object_get(root, "expires_in"));
	*expires_at = on > 0 ? on : in > 0 ? now + in : now + 600;
	if ((*token = hs_secret_strdup(value)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	r = 0;
out:
	json_decref(root);
	return r;
}

void hs_auth_error_text(char *out, size_t out_len, const struct hs_buf *body)
{
	json_error_t jerr;
	json_t *root, *err;
	const char *text = NULL;

	out[0] = '\0';
	if (body->data == NULL || body->len == 0)
		return;
	root = json_loadb((const char *)body->data, body->len, 0, &jerr);
	if (root == NULL)
		return;
	err = json_object_get(root, "error");
	text = json_string_value(json_object_get(root, "error_description"));
	if (text == NULL)
		text = json_string_value(json_object_get(root, "message"));
	if (text == NULL && json_is_object(err))
		text = json_string_value(json_object_get(err, "message"));
	if (text == NULL)
		text = json_string_value(err);
	if (text != NULL)
		hs_auth_first_line(out, out_len, text);
	json_decref(root);
}

/* A getenv() that treats an empty value as unset. */
static const char *cred_env(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? v : NULL;
}

static const char *cred_pick(const char *opt, const char *env_name)
{
	return opt != NULL && *opt != '\0' ? opt : cred_env(env_name);
}

/* Duplicates s (NULL stays NULL) into *out, secret memory if asked; false on ENOMEM. */
static bool cred_dup(char **out, const char *s, bool secret)
{
	*out = NULL;
	if (s == NULL)
		return true;
	*out = secret ? hs_secret_strdup(s) : strdup(s);
	return *out != NULL;
}

/* Strips trailing slashes in place. */
static void cred_trim_slash(char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	while (n > 0 && s[n - 1] == '/')
		s[--n] = '\0';
}

static int cred_cfg_load(struct hs_ctx *ctx, struct hs_auth_cfg *cfg,
                         const struct hs_azure_cred_opts *opts)
{
	bool ok;
	int r;

	if ((r = hs_entra_authority(ctx, opts->authority, &cfg->authority)) < 0)
		return r;
	ok = cred_dup(&cfg->tenant_id, cred_pick(opts->tenant_id, "AZURE_TENANT_ID"), false) &&
	     cred_dup(&cfg->client_id, cred_pick(opts->client_id, "AZURE_CLIENT_ID"), false) &&
	     cred_dup(&cfg->client_secret, cred_pick(opts->client_secret, "AZURE_CLIENT_SECRET"),
	              true) &&
	     cred_dup(&cfg->cert_path,
	              cred_pick(opts->client_cert_path, "AZURE_CLIENT_CERTIFICATE_PATH"), false) &&
	     cred_dup(&cfg->cert_password,
	              cred_pick(opts->client_cert_password, "AZURE_CLIENT_CERTIFICATE_PASSWORD"),
	              true) &&
	     cred_dup(&cfg->federated_token_file, cred_env("AZURE_FEDERATED_TOKEN_FILE"), false) &&
	     cred_dup(&cfg->gh_request_url, cred_env("ACTIONS_ID_TOKEN_REQUEST_URL"), false) &&
	     cred_dup(&cfg->gh_request_token, cred_env("ACTIONS_ID_TOKEN_REQUEST_TOKEN"), true) &&
	     cred_dup(&cfg->identity_endpoint, cred_env("IDENTITY_ENDPOINT"), false) &&
	     cred_dup(&cfg->identity_header, cred_env("IDENTITY_HEADER"), true) &&
	     cred_dup(&cfg->imds_endpoint, cred_env("IMDS_ENDPOINT"), false) &&
	     cred_dup(&cfg->cli_path, cred_env("AZURE_CLI_PATH"), false) &&
	     cred_dup(&cfg->access_token, opts->access_token, true) &&
	     cred_dup(&cfg->oidc_audience, opts->oidc_audience, false);
	if (ok && cfg->imds_endpoint == NULL)
		ok = (cfg->imds_endpoint = strdup("http://169.254.169.254")) != NULL;
	if (ok && cfg->cli_path == NULL)
		ok = (cfg->cli_path = strdup("az")) != NULL;
	if (!ok)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	cred_trim_slash(cfg->imds_endpoint);
	return 0;
}

static void cred_cfg_free(struct hs_auth_cfg *cfg)
{
	free(cfg->authority);
	free(cfg->tenant_id);
	free(cfg->client_id);
	hs_secret_free(cfg->client_secret);
	free(cfg->cert_path);
	hs_secret_free(cfg->cert_password);
	free(cfg->federated_token_file);
	free(cfg->gh_request_url);
	hs_secret_free(cfg->gh_request_token);
	free(cfg->identity_endpoint);
	hs_secret_free(cfg->identity_header);
	free(cfg->imds_endpoint);
	free(cfg->cli_path);
	hs_secret_free(cfg->access_token);
	free(cfg->oidc_audience);
}

/* The sources for opts->kind: a chain (NULL-terminated) and whether it is one. */
static int cred_sources_for(struct hs_ctx *ctx, const struct hs_azure_cred_opts *opts,
                            const struct hs_token_source_ops *const **list,
                            const struct hs_token_source_ops **single, bool *is_chain)
{
	const char *kind = opts->kind;

	*list = NULL;
	*single = NULL;
	*is_chain = false;
	if (kind == NULL || strcmp(kind, "default") == 0) {
		if (opts->access_token != NULL)
			*single = &hs_source_token;
		else if (opts->client_secret != NULL)
			*single = &hs_source_secret;
		else if (opts->client_cert_path != NULL)
			*single = &hs_source_certificate;
		else {
			*list = cred_default_chain;
			*is_chain = true;
		}
		return 0;
	}
	if (strcmp(kind, "environment") == 0) {
		*list = cred_environment_chain;
		*is_chain = true;
		return 0;
	}
	for (size_t i = 0; cred_all_sources[i] != NULL; i++)
		if (strcmp(kind, cred_all_sources[i]->name) == 0) {
			*single = cred_all_sources[i];
			return 0;
		}
	return hs_error_set(ctx, HS_ERR_INVALID,
	                    "unknown Azure credential '%s' (use default, token, secret, "
	                    "certificate, environment, workload-identity, github-oidc, "
	                    "github-oidc-bearer, managed-identity or azure-cli)",
	                    kind);
}

/* Creates the configured sources in order. */
static int cred_create_sources(struct hs_ctx *ctx, struct hs_azure_credential *cred,
                               const struct hs_token_source_ops *const *list,
                               const struct hs_token_source_ops *single)
{
	const struct hs_token_source_ops *one[2] = {single, NULL};
	struct hs_token_source *src;
	int r;

	if (list == NULL)
		list = one;
	for (size_t i = 0; list[i] != NULL && cred->n_sources < CRED_MAX_SOURCES; i++) {
		src = NULL;
		if ((r = list[i]->create(ctx, &cred->cfg, cred->is_chain, &src)) < 0)
			return r;
		if (src != NULL)
			cred->sources[cred->n_sources++] = src;
	}
	if (cred->n_sources == 0)
		return hs_error_set(ctx, HS_ERR_AUTH,
		                    "no Azure credential configured: set AZURE_TENANT_ID, "
		                    "AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or "
		                    "AZURE_CLIENT_CERTIFICATE_PATH)");
	return 0;
}

int hs_azure_credential_new(struct hs_ctx *ctx, struct hs_http *http,
                            const struct hs_azure_cred_opts *opts, struct hs_azure_credential **out)
{
	static const struct hs_azure_cred_opts no_opts = HS_AZURE_CRED_OPTS_INIT;
	const struct hs_token_source_ops *const *list;
	const struct hs_token_source_ops *single;
	struct hs_azure_credential *cred;
	int r;

	*out = NULL;
	if (opts == NULL)
		opts = &no_opts;
	if ((cred = calloc(1, sizeof(*cred))) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	cred->cfg.http = http;
	if ((r = cred_sources_for(ctx, opts, &list, &single, &cred->is_chain)) < 0)
		goto out;
	if ((r = cred_cfg_load(ctx, &cred->cfg, opts)) < 0)
		goto out;
	if ((r = cred_create_sources(ctx, cred, list, single)) < 0)
		goto out;
	*out = cred;
	cred = NULL;
	r = 0;
out:
	hs_azure_credential_free(cred);
	return r;
}

static void cred_cache_free(struct cred_cache_entry *e)
{
	struct cred_cache_entry *next;

	for (; e != NULL; e = next) {
		next = e->next;
		free(e->scope);
		free(e->tenant);
		hs_secret_free(e->token);
		free(e);
	}
}

void hs_azure_credential_free(struct hs_azure_credential *cred)
{
	if (cred == NULL)
		return;
	for (size_t i = 0; i < cred->n_sources; i++)
		cred->sources[i]->ops->free(cred->sources[i]);
	cred_cache_free(cred->cache);
	cred_cfg_free(&cred->cfg);
	free(cred);
}

const char *hs_azure_credential_source(const struct hs_azure_credential *cred)
{
	return cred != NULL && cred->chosen != NULL ? cred->chosen->ops->name : "default";
}

static bool cred_str_eq(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Finds or adds the cache entry for (scope, tenant). */
static struct cred_cache_entry *cred_cache_slot(struct hs_azure_credential *cred, const char *scope,
                                                const char *tenant)
{
	struct cred_cache_entry *e;

	for (e = cred->cache; e != NULL; e = e->next)
		if (strcmp(e->scope, scope) == 0 && cred_str_eq(e->tenant, tenant))
			return e;
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return NULL;
	e->scope = strdup(scope);
	e->tenant = tenant ? strdup(tenant) : NULL;
	if (e->scope == NULL || (tenant != NULL && e->tenant == NULL)) {
		cred_cache_free(e);
		return NULL;
	}
	e->next = cred->cache;
	cred->cache = e;
	return e;
}

/* Asks the chosen source, or walks the chain until one yields a token. */
static int cred_fetch(struct hs_ctx *ctx, struct hs_azure_credential *cred, const char *scope,
                      const char *tenant, char **token, int64_t *expires_at)
{
	struct hs_token_source *src;
	int r;

	if (cred->chosen != NULL)
		return cred->chosen->ops->get_token(ctx, cred->chosen, scope, tenant, token,
		                                    expires_at);
	for (size_t i = 0; i < cred->n_sources; i++) {
		src = cred->sources[i];
		r = src->ops->get_token(ctx, src, scope, tenant, token, expires_at);
		if (r == HS_AUTH_UNAVAILABLE) {
			hs_log(ctx, HS_LOG_DEBUG, "credential chain: %s unavailable",
			       src->ops->name);
			continue;
		}
		if (r < 0)
			return r;
		cred->chosen = src;
		hs_log(ctx, HS_LOG_INFO, "Azure credential: %s", src->ops->name);
		return 0;
	}
	return hs_error_set(ctx, HS_ERR_AUTH,
	                    "no Azure credential available: set AZURE_TENANT_ID, AZURE_CLIENT_ID "
	                    "and AZURE_CLIENT_SECRET (or a certificate, a federated token, GitHub "
	                    "OIDC), use a managed identity, or run 'az login'");
}

int hs_azure_credential_token(struct hs_ctx *ctx, struct hs_azure_credential *cred,
                              const char *scope, const char *tenant, int force_refresh,
                              const char **token)
{
	struct cred_cache_entry *e;
	char *fresh = NULL;
	int64_t expires_at = 0, now = (int64_t)time(NULL);
	int r;

	*token = NULL;
	if (scope == NULL || *scope == '\0')
		return hs_error_set(ctx, HS_ERR_INVALID, "no token scope given");
	if (tenant != NULL && *tenant == '\0')
		tenant = NULL;
	if ((e = cred_cache_slot(cred, scope, tenant)) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if (!force_refresh && e->token != NULL && e->expires_at - now > HS_AUTH_REFRESH_MARGIN) {
		*token = e->token;
		return 0;
	}
	if ((r = cred_fetch(ctx, cred, scope, tenant, &fresh, &expires_at)) < 0)
		goto out;
	hs_log(ctx, HS_LOG_DEBUG, "Azure token for %s from %s, expires in %lld s", scope,
	       cred->chosen ? cred->chosen->ops->name : "?", (long long)(expires_at - now));
	hs_secret_free(e->token);
	e->token = fresh;
	e->expires_at = expires_at;
	fresh = NULL;
	*token = e->token;
	r = 0;
out:
	hs_secret_free(fresh);
	return r;
}

/* The ready token source (-kva): hands back the same token until it expires. */
struct token_source {
	struct hs_token_source base;
};

static int token_create(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, bool in_chain,
                        struct hs_token_source **out)
{
	*out = NULL;
	if (cfg->access_token == NULL)
		return hs_auth_not_configured(ctx, in_chain,
		                              "credential 'token' needs an access "
		                              "token (-kva)");
	if (!hs_auth_token_ok(cfg->access_token))
		return hs_error_set(
		        ctx, HS_ERR_INVALID,
		        "the access token (-kva) contains spaces or control characters");
	*out = hs_auth_source_alloc(sizeof(struct token_source), &hs_source_token, cfg, in_chain);
	return *out ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

static int token_get(struct hs_ctx *ctx, struct hs_token_source *src, const char *scope,
                     const char *tenant, char **token, int64_t *expires_at)
{
	int64_t exp = hs_jwt_exp(src->cfg->access_token);

	/* Not a JWT we can read: assume it lives for an hour from now. */
	*expires_at = exp > 0 ? exp : (int64_t)time(NULL) + 3600;
	if ((*token = hs_secret_strdup(src->cfg->access_token)) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	return 0;
}

static void token_free(struct hs_token_source *src)
{
	free(src);
}

const struct hs_token_source_ops hs_source_token = {
        .name = "token",
        .create = token_create,
        .get_token = token_get,
        .free = token_free,
};
