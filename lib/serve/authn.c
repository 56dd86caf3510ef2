/*
 * authn.c - who is calling: an OIDC token (oidc.c), a static API token
 * (config "api_tokens": names and SHA-256 hashes, compared in constant
 * time; the token itself is never kept), or a verified mTLS client
 * certificate subject passed in by the server.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "serve/authn.h"
#include "serve/oidc.h"

#define AUTHN_NAME_MAX   128
#define AUTHN_TOKENS_MAX 1024

struct authn_token {
	char name[AUTHN_NAME_MAX + 1];
	unsigned char sha256[32];
};

struct hs_authn {
	struct hs_oidc *oidc;
	struct authn_token *tokens;
	size_t n_tokens;
};

static int authn_hex(const char *hex, unsigned char out[32])
{
	if (hex == NULL || strlen(hex) != 64)
		return -1;
	for (size_t i = 0; i < 32; i++) {
		unsigned v = 0;

		for (size_t k = 0; k < 2; k++) {
			char c = hex[2 * i + k];

			v <<= 4;
			if (c >= '0' && c <= '9')
				v |= (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f')
				v |= (unsigned)(c - 'a' + 10);
			else if (c >= 'A' && c <= 'F')
				v |= (unsigned)(c - 'A' + 10);
			else
				return -1;
		}
		out[i] = (unsigned char)v;
	}
	return 0;
}

/* One "api_tokens" entry: {"name": N, "sha256": HEX}, names unique. */
static int authn_conf_token(struct hs_ctx *ctx, const json_t *conf, size_t idx, struct hs_authn *a)
{
	const char *name = json_string_value(json_object_get(conf, "name"));
	const char *hex = json_string_value(json_object_get(conf, "sha256"));
	struct authn_token *t = &a->tokens[idx];

	if (!json_is_object(conf) || json_object_size(conf) != 2 || name == NULL || hex == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "api_tokens[%zu]: must be {\"name\": ..., \"sha256\": ...}",
		                    idx);
	if (name[0] == '\0' || strlen(name) > AUTHN_NAME_MAX)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "api_tokens[%zu].name: must be 1 to %d characters", idx,
		                    AUTHN_NAME_MAX);
	if (authn_hex(hex, t->sha256) < 0)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "api_tokens[%zu].sha256: must be 64 hex digits (sha256 of the "
		                    "token)",
		                    idx);
	for (size_t k = 0; k < idx; k++)
		if (strcmp(a->tokens[k].name, name) == 0)
			return hs_error_set(ctx, HS_ERR_INVALID,
			                    "api_tokens[%zu].name: duplicate of api_tokens[%zu]",
			                    idx, k);
	snprintf(t->name, sizeof(t->name), "%s", name);
	return 0;
}

static int authn_conf_tokens(struct hs_ctx *ctx, const json_t *tokens, struct hs_authn *a)
{
	int r;

	if (tokens == NULL)
		return 0;
	if (!json_is_array(tokens) || json_array_size(tokens) > AUTHN_TOKENS_MAX)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "api_tokens: must be an array of at most %d entries",
		                    AUTHN_TOKENS_MAX);
	if (json_array_size(tokens) == 0)
		return 0;
	if ((a->tokens = calloc(json_array_size(tokens), sizeof(*a->tokens))) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < json_array_size(tokens); i++) {
		if ((r = authn_conf_token(ctx, json_array_get(tokens, i), i, a)) < 0)
			return r;
		a->n_tokens = i + 1;
	}
	return 0;
}

int hs_authn_new(struct hs_ctx *ctx, const json_t *root, struct hs_authn **out)
{
	struct hs_authn *a;
	int r;

	*out = NULL;
	if (!json_is_object(root))
		return hs_error_set(ctx, HS_ERR_INVALID, "configuration: must be a JSON object");
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = hs_oidc_new(ctx, json_object_get(root, "issuers"), &a->oidc)) < 0 ||
	    (r = authn_conf_tokens(ctx, json_object_get(root, "api_tokens"), a)) < 0)
		goto out;
	*out = a;
	a = NULL;
	r = 0;
out:
	hs_authn_free(a);
	return r;
}

void hs_authn_free(struct hs_authn *a)
{
	if (a == NULL)
		return;
	hs_oidc_free(a->oidc);
	OPENSSL_clear_free(a->tokens, a->n_tokens * sizeof(*a->tokens));
	free(a);
}

struct hs_oidc *hs_authn_oidc(struct hs_authn *a)
{
	return a->oidc;
}

/* The configured API token whose hash is sha256(token), or NULL. Every
 * entry is compared, in constant time, whatever matches. */
static const struct authn_token *authn_api_token(struct hs_authn *a, const char *token, size_t len)
{
	unsigned char digest[32];
	unsigned int digest_len = 0;
	const struct authn_token *found = NULL;

	if (a->n_tokens == 0 ||
	    EVP_Digest(token, len, digest, &digest_len, EVP_sha256(), NULL) != 1)
		return NULL;
	for (size_t i = 0; i < a->n_tokens; i++)
		if (CRYPTO_memcmp(digest, a->tokens[i].sha256, sizeof(digest)) == 0)
			found = &a->tokens[i];
	OPENSSL_cleanse(digest, sizeof(digest));
	return found;
}

/* The token of "Bearer <token>" (scheme case-insensitive), bounded. */
static int authn_bearer(struct hs_ctx *ctx, const char *authorization, const char **token,
                        size_t *len)
{
	const char *p = authorization, *end;

	while (*p == ' ' || *p == '\t')
		p++;
	if (strncasecmp(p, "Bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t'))
		return hs_error_set(ctx, HS_ERR_AUTH,
		                    "unsupported authorization scheme (expected Bearer)");
	p += 6;
	while (*p == ' ' || *p == '\t')
		p++;
	end = p + strnlen(p, HS_OIDC_TOKEN_MAX + 1);
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (end == p)
		return hs_error_set(ctx, HS_ERR_AUTH, "empty bearer token");
	if ((size_t)(end - p) > HS_OIDC_TOKEN_MAX)
		return hs_error_set(ctx, HS_ERR_AUTH, "token longer than %d bytes",
		                    HS_OIDC_TOKEN_MAX);
	for (const char *c = p; c < end; c++)
		if (*c <= ' ' || *c > '~')
			return hs_error_set(ctx, HS_ERR_AUTH,
			                    "bearer token has characters that are not allowed");
	*token = p;
	*len = (size_t)(end - p);
	return 0;
}

/* Claims that name an identity kind are the server's to set: an issuer
 * cannot mint "api_token" or "mtls_subject" claims that rules would trust. */
static int authn_reserved_claims(json_t *claims, const char *api_token,
                                 const char *client_cert_subject)
{
	json_object_del(claims, "api_token");
	json_object_del(claims, "mtls_subject");
	if (api_token != NULL &&
	    json_object_set_new(claims, "api_token", json_string(api_token)) < 0)
		return -1;
	if (client_cert_subject != NULL &&
	    json_object_set_new(claims, "mtls_subject", json_string(client_cert_subject)) < 0)
		return -1;
	return 0;
}

/* Fills *out; takes claims (NULL: out of memory). name is "name1" or "name1|name2". */
static int authn_identity(struct hs_ctx *ctx, struct hs_identity *out, const char *kind,
                          const char *name1, const char *name2, json_t *claims,
                          const char *api_token, const char *client_cert_subject)
{
	if (claims == NULL || authn_reserved_claims(claims, api_token, client_cert_subject) < 0) {
		json_decref(claims);
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	snprintf(out->kind, sizeof(out->kind), "%s", kind);
	if (name2 != NULL)
		snprintf(out->name, sizeof(out->name), "%.127s|%.127s", name1, name2);
	else
		snprintf(out->name, sizeof(out->name), "%.255s", name1);
	out->claims = claims;
	return 0;
}

int hs_authn_check(struct hs_ctx *ctx, struct hs_authn *a, const char *authorization,
                   const char *client_cert_subject, struct hs_identity *out)
{
	const struct authn_token *api;
	const char *token = NULL;
	json_t *claims = NULL;
	size_t len = 0;
	int r;

	memset(out, 0, sizeof(*out));
	if (client_cert_subject != NULL && client_cert_subject[0] == '\0')
		client_cert_subject = NULL;
	if (authorization == NULL || authorization[0] == '\0') {
		if (client_cert_subject == NULL)
			return hs_error_set(ctx, HS_ERR_AUTH,
			                    "no bearer token or client certificate");
		return authn_identity(ctx, out, "mtls", client_cert_subject, NULL, json_object(),
		                      NULL, client_cert_subject);
	}
	if ((r = authn_bearer(ctx, authorization, &token, &len)) < 0)
		return r;
	if ((api = authn_api_token(a, token, len)) != NULL)
		return authn_identity(ctx, out, "api-token", api->name, NULL, json_object(),
		                      api->name, client_cert_subject);
	if (!hs_oidc_is_jwt(token, len))
		return hs_error_set(ctx, HS_ERR_AUTH, "bearer token is not a known API token");
	if ((r = hs_oidc_verify(ctx, a->oidc, token, len, &claims)) < 0)
		return r;
	return authn_identity(ctx, out, "oidc", json_string_value(json_object_get(claims, "iss")),
	                      json_string_value(json_object_get(claims, "sub")), claims, NULL,
	                      client_cert_subject);
}

void hs_identity_clear(struct hs_identity *id)
{
	if (id == NULL)
		return;
	json_decref(id->claims);
	memset(id, 0, sizeof(*id));
}
