/* gcp.h - internal to the Google Cloud KMS provider: OAuth access tokens
 * from the credential sources of gcp_creds.c. */
#ifndef HS_GCP_H
#define HS_GCP_H

#include <stdint.h>

#include <jansson.h>

#include "core/core.h"
#include "core/http.h"

struct hs_gcp_cred_cfg {
	const char *access_token;      /* secret; or GOOGLE_OAUTH_ACCESS_TOKEN */
	const char *credentials_file;  /* or GOOGLE_APPLICATION_CREDENTIALS */
	const char *workload_provider; /* GitHub OIDC through this WIF provider */
	const char *service_account;   /* impersonated after the WIF exchange */
};

struct hs_gcp_token {
	char *value;        /* secret */
	int64_t expires_at; /* Unix seconds; 0: unknown (never refreshed) */
	const char *source; /* static */
};
void hs_gcp_token_clear(struct hs_gcp_token *t);

/* An access token for scope cloud-platform from the first configured
 * source: the given token, GOOGLE_OAUTH_ACCESS_TOKEN, GitHub OIDC through
 * workload_provider, the credentials file (service_account JSON key or
 * external_account), the metadata server. */
int hs_gcp_token_get(struct hs_ctx *ctx, struct hs_http *http, const struct hs_gcp_cred_cfg *cfg,
                     struct hs_gcp_token *out);

/* gcpkms.c: the CryptoKeyVersion resource (GET {version}) as JSON, with
 * the credentials and endpoint of opts (no certificate needed); the
 * newest enabled version when opts->key names a key. */
int hs_gcp_kms_version_json(struct hs_ctx *ctx, const struct hs_gcp_kms_key_opts *opts,
                            json_t **out);

#endif /* HS_GCP_H */
