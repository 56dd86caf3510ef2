/*
 * source.h - internal to lib/auth: credential sources behind one small vtable,
 * the resolved configuration they share, and helpers for Entra ID requests,
 * JWTs and secret strings.
 *
 * A source file exports one `const struct hs_token_source_ops`. create()
 * answers "is this source configured here?": *out NULL means no (in a chain:
 * skipped; explicitly chosen: an HS_ERR_INVALID naming what is missing).
 * get_token() returns 0, a negative HS_ERR_* with the message set, or
 * HS_AUTH_UNAVAILABLE (in a chain only: the source cannot work on this
 * machine, e.g. no IMDS or no az; no message is set and the chain moves on).
 */
#ifndef HS_AUTH_SOURCE_H
#define HS_AUTH_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "auth/auth.h"

/* Positive on purpose: never leaves lib/auth. */
#define HS_AUTH_UNAVAILABLE 1

/* Tokens are refreshed when fewer than this many seconds remain. */
#define HS_AUTH_REFRESH_MARGIN 300

/* Options merged with the environment; owned by the credential. Fields marked
 * secret live in hs_secret_strdup() memory. */
struct hs_auth_cfg {
	struct hs_http *http; /* borrowed */
	char *authority;      /* "https://login.microsoftonline.com", no trailing '/' */
	char *tenant_id;      /* or NULL: the challenge's tenant */
	char *client_id;
	char *client_secret; /* secret */
	char *cert_path;
	char *cert_password; /* secret */
	char *federated_token_file;
	char *gh_request_url;
	char *gh_request_token;  /* secret */
	char *identity_endpoint; /* App Service */
	char *identity_header;   /* secret */
	char *imds_endpoint;     /* no trailing '/' */
	char *cli_path;
	char *access_token;  /* secret */
	char *oidc_audience; /* github-oidc-bearer; NULL: "hsmsign" */
};

struct hs_token_source;

struct hs_token_source_ops {
	const char *name; /* as in --azure-credential */
	int (*create)(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, bool in_chain,
	              struct hs_token_source **out);
	/* *token: hs_secret_strdup() memory, freed by the caller with hs_secret_free();
	 * *expires_at: Unix seconds. */
	int (*get_token)(struct hs_ctx *ctx, struct hs_token_source *src, const char *scope,
	                 const char *tenant, char **token, int64_t *expires_at);
	void (*free)(struct hs_token_source *src);
};

/* Every source struct starts with this. */
struct hs_token_source {
	const struct hs_token_source_ops *ops;
	const struct hs_auth_cfg *cfg;
	bool in_chain;
};

extern const struct hs_token_source_ops hs_source_token;
extern const struct hs_token_source_ops hs_source_secret;
extern const struct hs_token_source_ops hs_source_certificate;
extern const struct hs_token_source_ops hs_source_workload;
extern const struct hs_token_source_ops hs_source_github;
extern const struct hs_token_source_ops hs_source_github_bearer;
extern const struct hs_token_source_ops hs_source_managed_identity;
extern const struct hs_token_source_ops hs_source_azure_cli;

/* credential.c: strings that hold secrets, wiped on free. */
char *hs_secret_strdup(const char *s);
void hs_secret_free(char *s);
/* A source that is not configured: a debug line in a chain (returns 0), else
 * HS_ERR_INVALID with the message. */
int hs_auth_not_configured(struct hs_ctx *ctx, bool in_chain, const char *fmt, ...) HS_PRINTF(3, 4);
/* Reads a whole small file (at most max bytes) into out (wipe with hs_buf_free_secret);
 * `what` names it in messages. out is NUL-terminated beyond len. */
int hs_auth_read_file(struct hs_ctx *ctx, const char *path, const char *what, size_t max,
                      struct hs_buf *out);
/* Allocates the common part of a source of `size` bytes; NULL on ENOMEM. */
void *hs_auth_source_alloc(size_t size, const struct hs_token_source_ops *ops,
                           const struct hs_auth_cfg *cfg, bool in_chain);
/* True for a token we may put in an Authorization header (printable, no spaces). */
bool hs_auth_token_ok(const char *token);
/* "https://vault.azure.net/.default" -> "https://vault.azure.net" (malloc). */
char *hs_auth_scope_to_resource(const char *scope);
/* Copies the first line of s (at most out_len-1 bytes) into out. */
void hs_auth_first_line(char *out, size_t out_len, const char *s);
/* Unix seconds from a JSON number or a string of digits; 0 if neither. */
int64_t hs_auth_json_time(const json_t *value);
/* Parses a token response: `token_field` (e.g. "access_token") and the expiry from
 * expires_on (absolute) or expires_in (relative), numbers or strings. */
int hs_auth_parse_token(struct hs_ctx *ctx, const char *who, const struct hs_buf *body,
                        const char *token_field, char **token, int64_t *expires_at);
/* Best human-readable error text of a JSON error body: error_description, message,
 * error.message, error; first line only. Empty if none. */
void hs_auth_error_text(char *out, size_t out_len, const struct hs_buf *body);

/* entra.c */
/* Resolves -au / AZURE_AUTHORITY_HOST into a base URL (malloc). */
int hs_entra_authority(struct hs_ctx *ctx, const char *authority, char **out);
/* The tenant to use: the configured one, else the challenge's; validated. */
int hs_entra_tenant(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, const char *tenant,
                    const char **out);
/* "{authority}/{tenant}/oauth2/v2.0/token" (malloc). */
int hs_entra_endpoint(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, const char *tenant,
                      char **out);
/* Client-credentials grant with a client secret or a client assertion (exactly one
 * non-NULL). */
int hs_entra_token(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, const char *tenant,
                   const char *scope, const char *client_secret, const char *assertion,
                   char **token, int64_t *expires_at);

/* jwt.c (base64url: core/codec.h) */
/* A string claim of an (unverified) JWT, or NULL (malloc). */
char *hs_jwt_claim(const char *jwt, const char *claim);
/* The exp claim of an (unverified) JWT, or 0. */
int64_t hs_jwt_exp(const char *jwt);
/* A client assertion signed with key, naming cert by its thumbprints (secret memory). */
int hs_jwt_client_assertion(struct hs_ctx *ctx, EVP_PKEY *key, X509 *cert, const char *audience,
                            const char *client_id, char **out);

#endif /* HS_AUTH_SOURCE_H */
