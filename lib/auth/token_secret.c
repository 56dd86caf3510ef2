/* token_secret.c - client secret credential (-kvi/-kvs/-kvt, AZURE_CLIENT_SECRET). */
#include <stdlib.h>

#include "auth/source.h"

static int secret_create(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, bool in_chain,
                         struct hs_token_source **out)
{
	*out = NULL;
	if (cfg->client_secret == NULL)
		return hs_auth_not_configured(ctx, in_chain,
		                              "credential 'secret' needs a client secret (-kvs or "
		                              "AZURE_CLIENT_SECRET)");
	if (cfg->client_id == NULL)
		return hs_auth_not_configured(ctx, in_chain,
		                              "credential 'secret' needs a client ID (-kvi or "
		                              "AZURE_CLIENT_ID)");
	*out = hs_auth_source_alloc(sizeof(struct hs_token_source), &hs_source_secret, cfg,
	                            in_chain);
	return *out ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

static int secret_get(struct hs_ctx *ctx, struct hs_token_source *src, const char *scope,
                      const char *tenant, char **token, int64_t *expires_at)
{
	return hs_entra_token(ctx, src->cfg, tenant, scope, src->cfg->client_secret, NULL, token,
	                      expires_at);
}

static void secret_free(struct hs_token_source *src)
{
	free(src);
}

const struct hs_token_source_ops hs_source_secret = {
        .name = "secret",
        .create = secret_create,
        .get_token = secret_get,
        .free = secret_free,
};
