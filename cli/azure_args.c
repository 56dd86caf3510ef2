/* azure_args.c - Key Vault options shared by `vault` and `doctor`. */
#include <stdlib.h>
#include <string.h>

#include "azure_args.h"

void cli_azure_init(struct cli_azure_args *a)
{
	*a = (struct cli_azure_args){.opts = HS_AZURE_KEY_OPTS_INIT};
	a->opts.extra_certs = a->extra_certs;
}

/* Options that set a plain string. */
static const char **azure_field(struct cli_azure_args *a, int id)
{
	switch (id) {
	case CLI_AZ_URL:
		return &a->opts.vault_url;
	case CLI_AZ_NAME:
		return &a->opts.certificate;
	case CLI_AZ_VERSION:
		return &a->opts.certificate_version;
	case CLI_AZ_CLIENT_ID:
		return &a->opts.client_id;
	case CLI_AZ_SECRET:
		return &a->secret_spec;
	case CLI_AZ_TENANT:
		return &a->opts.tenant_id;
	case CLI_AZ_TOKEN:
		return &a->token_spec;
	case CLI_AZ_CREDENTIAL:
		return &a->opts.credential;
	case CLI_AZ_CLIENT_CERT:
		return &a->opts.client_cert_path;
	case CLI_AZ_CLIENT_CERT_PASS:
		return &a->cert_pass_spec;
	case CLI_AZ_AUTHORITY:
		return &a->opts.authority;
	case CLI_AZ_API_VERSION:
		return &a->opts.api_version;
	case CLI_AZ_CA_FILE:
		return &a->opts.ca_file;
	}
	return NULL;
}

int cli_azure_opt(struct cli_azure_args *a, const char *cmd, int id, const char *value)
{
	const char **field = azure_field(a, id);

	if (field != NULL) {
		*field = value;
	} else if (id == CLI_AZ_MANAGED) {
		a->opts.credential = a->opts.credential ? a->opts.credential : "default";
	} else if (id == CLI_AZ_NO_AIA) {
		a->opts.no_aia = 1;
	} else if (id == CLI_AZ_VERBOSE) {
		cli_verbosity = 2;
	} else if (id == CLI_AZ_QUIET) {
		cli_verbosity = 0;
	} else if (id == CLI_AZ_ADD_CERT) {
		if (a->n_extra_certs == CLI_AZURE_MAX_CERTS) {
			cli_error("%s: at most %d --additional-certificates", cmd,
			          CLI_AZURE_MAX_CERTS);
			return EXIT_INVALID_ARGS;
		}
		a->extra_certs[a->n_extra_certs++] = value;
	}
	return 0;
}

int cli_azure_finish(struct cli_azure_args *a, const char *cmd)
{
	/* Test knob, as for sign: tests shrink the retry backoff. */
	const char *backoff = getenv("HSMSIGN_HTTP_BACKOFF_MS");
	int r = 0;

	if (backoff != NULL && *backoff != '\0')
		a->opts.backoff_base_ms = strtol(backoff, NULL, 10);

	if (a->opts.vault_url == NULL || a->opts.certificate == NULL) {
		cli_error("%s: give the vault (-kvu URL) and the certificate name (--name NAME)",
		          cmd);
		return EXIT_INVALID_ARGS;
	}
	if (a->secret_spec != NULL)
		r = cli_secret_read("--azure-key-vault-client-secret", a->secret_spec, &a->secret);
	if (r == 0 && a->token_spec != NULL)
		r = cli_secret_read("--azure-key-vault-accesstoken", a->token_spec, &a->token);
	if (r == 0 && a->cert_pass_spec != NULL)
		r = cli_secret_read("--azure-client-certificate-password", a->cert_pass_spec,
		                    &a->cert_pass);
	a->opts.client_secret = a->secret;
	a->opts.access_token = a->token;
	a->opts.client_cert_password = a->cert_pass;
	return r;
}

void cli_azure_free(struct cli_azure_args *a)
{
	cli_secret_free(a->secret);
	cli_secret_free(a->token);
	cli_secret_free(a->cert_pass);
	a->secret = a->token = a->cert_pass = NULL;
}

struct hs_ctx *cli_azure_ctx(void)
{
	struct hs_ctx *ctx = NULL;

	if (hs_ctx_new(&ctx) < 0) {
		cli_error("out of memory");
		return NULL;
	}
	hs_ctx_set_log(ctx, cli_log, NULL);
	return ctx;
}
