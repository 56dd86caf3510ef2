/*
 * auth.h - Azure credentials: where bearer tokens for Key Vault come from.
 *
 * A credential source answers one question: "a token for this scope".
 * Sources (protocols.md 2, 3): a ready token (-kva), client secret,
 * client certificate, workload identity (federated token file), GitHub
 * Actions OIDC (exchanged at Entra as a client assertion), managed identity
 * (App Service IDENTITY_ENDPOINT, then IMDS), Azure CLI. The `default` chain
 * tries them in the documented order and sticks with the first that yields a
 * token. Tokens are cached per scope and refreshed 5 minutes before expiry.
 * Tokens and secrets never reach messages or logs.
 */
#ifndef HS_AUTH_H
#define HS_AUTH_H

#include <stdint.h>

#include "core/core.h"
#include "core/http.h"

struct hs_azure_credential;

/*
 * Options; strings are borrowed for the duration of hs_azure_credential_new
 * (secrets are copied into wiped-on-free memory). Unset fields fall back to
 * the environment: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET,
 * AZURE_CLIENT_CERTIFICATE_PATH, AZURE_CLIENT_CERTIFICATE_PASSWORD,
 * AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST,
 * ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN, IDENTITY_ENDPOINT/IDENTITY_HEADER,
 * IMDS_ENDPOINT (default http://169.254.169.254), AZURE_CLI_PATH
 * (default "az").
 */
struct hs_azure_cred_opts {
	/* NULL or "default": the chain. Else one of: "token", "secret",
	 * "certificate", "environment", "workload-identity", "github-oidc",
	 * "github-oidc-bearer", "managed-identity", "azure-cli". */
	const char *kind;
	const char *access_token;     /* kind "token" (-kva) */
	const char *tenant_id;        /* -kvt */
	const char *client_id;        /* -kvi; also selects a user-assigned MI */
	const char *client_secret;    /* -kvs */
	const char *client_cert_path; /* PEM (key+cert) or PKCS#12 */
	const char *client_cert_password;
	/* Authority: a URL, or a cloud name "public", "china", "usgov"
	 * (-au). NULL: AZURE_AUTHORITY_HOST or the public cloud. */
	const char *authority;
	/* kind "github-oidc-bearer": the audience asked of GitHub (NULL:
	 * "hsmsign"); the job's OIDC token itself is the bearer token. */
	const char *oidc_audience;
};
#define HS_AZURE_CRED_OPTS_INIT                                                                    \
	{                                                                                          \
		NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL                               \
	}

/* The credential options of o, any options struct (Key Vault, Trusted
 * Signing) with the same-named fields and `credential` for the kind. */
#define HS_AZURE_CRED_OPTS_FROM(o)                                                                 \
	{                                                                                          \
		.kind = (o)->credential, .access_token = (o)->access_token,                        \
		.tenant_id = (o)->tenant_id, .client_id = (o)->client_id,                          \
		.client_secret = (o)->client_secret, .client_cert_path = (o)->client_cert_path,    \
		.client_cert_password = (o)->client_cert_password, .authority = (o)->authority,    \
	}

/* http is borrowed and must outlive the credential. */
int hs_azure_credential_new(struct hs_ctx *ctx, struct hs_http *http,
                            const struct hs_azure_cred_opts *opts,
                            struct hs_azure_credential **out);
void hs_azure_credential_free(struct hs_azure_credential *cred);

/*
 * A bearer token for `scope` (e.g. "https://vault.azure.net/.default"),
 * from the cache when still valid for 5 minutes. `tenant` (from a 401
 * challenge) may be NULL. *token is borrowed: valid until the next call on
 * this credential or its free. force_refresh skips the cache (after a 401
 * that followed a cached token).
 */
int hs_azure_credential_token(struct hs_ctx *ctx, struct hs_azure_credential *cred,
                              const char *scope, const char *tenant, int force_refresh,
                              const char **token);

/* Name of the source actually used ("github-oidc", ...) for -v output, or
 * "default" before the first token. Static string. */
const char *hs_azure_credential_source(const struct hs_azure_credential *cred);

/*
 * The GitHub Actions job's OIDC token (protocols.md 3) from request_url and
 * request_token (ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN), for `audience` (plain
 * text, NULL for GitHub's default). *jwt is secret memory: free it with an
 * OPENSSL_clear_free()-style wipe (hs_secret_free). Used by every provider
 * that exchanges GitHub identity for a cloud token (Entra, AWS STS, Vault).
 */
int hs_github_oidc_token(struct hs_ctx *ctx, struct hs_http *http, const char *request_url,
                         const char *request_token, const char *audience, char **jwt);

#endif /* HS_AUTH_H */
