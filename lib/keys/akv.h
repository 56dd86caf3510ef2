/* akv.h - internal state of the Azure Key Vault provider (akv.c, aia.c). */
#ifndef HS_AKV_H
#define HS_AKV_H

#include <stdbool.h>

#include "core/http.h"
#include "provider.h"

struct hs_azure_credential;

struct akv_key {
	struct hs_http *http;
	struct hs_azure_credential *cred;
	char *vault_url; /* no trailing slash */
	char *vault_host;
	char *kid;      /* versioned key URL that signs */
	char *resource; /* token audience, from the challenge */
	char *tenant;   /* from the challenge when not configured */
	char *api_version;
	STACK_OF(X509) * chain; /* signer first */
	bool managed_hsm;
	bool loopback; /* a local test server: skip the domain check */
	bool have_challenge;
	bool access_token_given;
	bool source_logged;
};

/*
 * Completes chain (signer first) with intermediates named by AIA
 * caIssuers URLs, cached as DER under cache_dir (NULL: no cache). Each
 * fetched certificate must have issued and signed the one before it; a
 * self-signed root is not added (verifiers must already trust it).
 */
int hs_aia_complete_chain(struct hs_ctx *ctx, struct hs_http *http, STACK_OF(X509) * chain,
                          const char *cache_dir);

/* Default AIA cache: $XDG_CACHE_HOME/hsmsign/aia or ~/.cache/hsmsign/aia;
 * malloc'd, or NULL when neither is known. */
char *hs_aia_default_cache_dir(void);

#endif /* HS_AKV_H */
