/* akv.h - internal state of the Azure Key Vault provider (akv.c, aia.c). */
#ifndef HS_AKV_H
#define HS_AKV_H

#include <pthread.h>
#include <stdbool.h>

#include "core/http.h"
#include "core/ratelimit.h"
#include "provider.h"

struct hs_azure_credential;

/*
 * The token fetched on a thread while the vault's first answer, a 401
 * challenge, is on its way (akv.c, prefetch_start()). The thread uses the
 * credential alone until it is joined, under the key's lock, by the first
 * thread that needs the credential.
 */
struct akv_prefetch {
	pthread_t thread;
	struct akv_key *key;
	struct hs_ctx *ctx; /* the thread's own: its error and log lines */
	char scope[512];
	char tenant[128];
	int state; /* 0: not tried, 1: running, -1: tried or joined */
	int r;     /* its result */
};

struct akv_key {
	/* Guards the token cache (cred) and the challenge state below: one
	 * key signs from many threads. The HTTP client is thread-safe. */
	pthread_mutex_t lock;
	struct hs_ratelimit rate_limit; /* vault requests, shared by threads */
	bool rate_limit_on;
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
	struct akv_prefetch prefetch;
};

/*
 * Completes chain (signer first) with intermediates named by AIA
 * caIssuers URLs, cached as DER under cache_dir (NULL: no cache). Each
 * fetched certificate must have issued and signed the one before it; a
 * self-signed root is not added (verifiers must already trust it).
 */
int hs_aia_complete_chain(struct hs_ctx *ctx, struct hs_http *http, STACK_OF(X509) * chain,
                          const char *cache_dir);

/*
 * Vault access for the administration commands (akv_admin.c, doctor):
 * hs_akv_connect() checks the URL and sets up HTTP and the credential
 * without fetching anything; hs_akv_send() is one request with the 401
 * challenge handled; hs_akv_error() turns a non-2xx answer into one
 * actionable line (the missing RBAC data action, ...).
 */
int hs_akv_connect(struct hs_ctx *ctx, const struct hs_azure_key_opts *opts, struct akv_key **out);
void hs_akv_free(struct akv_key *k);
int hs_akv_send(struct hs_ctx *ctx, struct akv_key *k, const char *method, const char *url,
                const char *body, struct hs_http_response *resp);
int hs_akv_error(struct hs_ctx *ctx, const struct akv_key *k, const char *what,
                 const struct hs_http_response *resp);
/* Credential source that produced the last token (static string). */
const char *hs_akv_credential_source(struct akv_key *k);

/* Default AIA cache: $XDG_CACHE_HOME/hsmsign/aia or ~/.cache/hsmsign/aia;
 * malloc'd, or NULL when neither is known. */
char *hs_aia_default_cache_dir(void);

#endif /* HS_AKV_H */
