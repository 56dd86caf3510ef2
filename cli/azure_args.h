/*
 * azure_args.h - the Azure Key Vault connection and credential options that
 * `vault` and `doctor` share, spelled as `sign` spells them. A command puts
 * CLI_AZURE_OPTS into its option table and hands the ids at or above
 * CLI_AZURE_FIRST to cli_azure_opt().
 */
#ifndef HS_CLI_AZURE_ARGS_H
#define HS_CLI_AZURE_ARGS_H

#include "cli.h"

#define CLI_AZURE_MAX_CERTS 16

enum {
	CLI_AZURE_FIRST = 1000,
	CLI_AZ_URL = CLI_AZURE_FIRST,
	CLI_AZ_NAME,
	CLI_AZ_VERSION,
	CLI_AZ_CLIENT_ID,
	CLI_AZ_SECRET,
	CLI_AZ_TENANT,
	CLI_AZ_TOKEN,
	CLI_AZ_MANAGED,
	CLI_AZ_CREDENTIAL,
	CLI_AZ_CLIENT_CERT,
	CLI_AZ_CLIENT_CERT_PASS,
	CLI_AZ_AUTHORITY,
	CLI_AZ_API_VERSION,
	CLI_AZ_CA_FILE,
	CLI_AZ_ADD_CERT,
	CLI_AZ_NO_AIA,
	CLI_AZ_VERBOSE,
	CLI_AZ_QUIET,
};

/* Entries for an option table (no terminator). */
#define CLI_AZURE_OPTS                                                                             \
	{CLI_AZ_URL, "-kvu|--kvu|--azure-key-vault-url", ARG_VALUE, "URL",                         \
	 "the vault: https://NAME.vault.azure.net"},                                               \
	        {CLI_AZ_NAME, "-kvc|--kvc|--name|--azure-key-vault-certificate", ARG_VALUE,        \
	         "NAME", "certificate name in the vault"},                                         \
	        {CLI_AZ_VERSION, "-kvcv|--kvcv|--azure-key-vault-certificate-version", ARG_VALUE,  \
	         "VERSION", "certificate version (default: the current one)"},                     \
	        {CLI_AZ_CLIENT_ID, "-kvi|--kvi|--azure-key-vault-client-id", ARG_VALUE, "ID",      \
	         "application (client) id"},                                                       \
	        {CLI_AZ_SECRET, "-kvs|--kvs|--azure-key-vault-client-secret", ARG_VALUE, "SECRET", \
	         "client secret: env:NAME, file:PATH or stdin"},                                   \
	        {CLI_AZ_TENANT, "-kvt|--kvt|--azure-key-vault-tenant-id", ARG_VALUE, "ID",         \
	         "directory (tenant) id"},                                                         \
	        {CLI_AZ_TOKEN, "-kva|--kva|--azure-key-vault-accesstoken", ARG_VALUE, "TOKEN",     \
	         "a ready access token: env:NAME, file:PATH or stdin"},                            \
	        {CLI_AZ_MANAGED, "-kvm|--kvm|--azure-key-vault-managed-identity", ARG_NONE, NULL,  \
	         "use the default credential chain"},                                              \
	        {CLI_AZ_CREDENTIAL, "--azure-credential", ARG_VALUE, "NAME",                       \
	         "use one credential source (as for sign)"},                                       \
	        {CLI_AZ_CLIENT_CERT, "--azure-client-certificate", ARG_VALUE, "FILE",              \
	         "client certificate credential (PEM with key, or PKCS#12)"},                      \
	        {CLI_AZ_CLIENT_CERT_PASS, "--azure-client-certificate-password", ARG_VALUE,        \
	         "SECRET", "its password: env:NAME, file:PATH or stdin"},                          \
	        {CLI_AZ_AUTHORITY, "-au|--au|--azure-authority", ARG_VALUE, "CLOUD",               \
	         "public (default), china, usgov, or an authority URL"},                           \
	        {CLI_AZ_API_VERSION, "--azure-api-version", ARG_VALUE, "VERSION",                  \
	         "Key Vault api-version (default " HS_AZURE_API_VERSION ")"},                      \
	        {CLI_AZ_CA_FILE, "--ca-file", ARG_VALUE, "FILE",                                   \
	         "extra trusted roots for HTTPS (also SSL_CERT_FILE)"},                            \
	        {CLI_AZ_ADD_CERT, "-ac|--ac|--additional-certificates", ARG_VALUE, "FILE",         \
	         "more intermediate certificates (repeatable)"},                                   \
	        {CLI_AZ_NO_AIA, "--no-aia", ARG_NONE, NULL,                                        \
	         "do not fetch missing intermediates from AIA URLs"},                              \
	        {CLI_AZ_VERBOSE, "-v|--verbose", ARG_NONE, NULL, "say what is done"},              \
	{                                                                                          \
		CLI_AZ_QUIET, "-q|--quiet", ARG_NONE, NULL, "print errors only"                    \
	}

struct cli_azure_args {
	struct hs_azure_key_opts opts;
	const char *secret_spec, *token_spec, *cert_pass_spec;
	char *secret, *token, *cert_pass; /* read by cli_azure_secrets() */
	const char *extra_certs[CLI_AZURE_MAX_CERTS + 1];
	int n_extra_certs;
};

void cli_azure_init(struct cli_azure_args *a);
/* Handles one CLI_AZ_* option; 0 or an exit code after printing. */
int cli_azure_opt(struct cli_azure_args *a, const char *cmd, int id, const char *value);
/* Checks -kvu/--name and reads the secrets (env:/file:/stdin only). */
int cli_azure_finish(struct cli_azure_args *a, const char *cmd);
/* Wipes and frees the secrets. */
void cli_azure_free(struct cli_azure_args *a);
/* A context logging through cli_log; NULL after printing on failure. */
struct hs_ctx *cli_azure_ctx(void);

/* `vault role` (vault_role.c): prints the minimal custom role and the az
 * commands that create, assign and federate it; returns an exit code. */
int cli_cmd_vault_role(const char *scope, const char *repo, const char *ref,
                       const char *environment, const char *app_id, int admin, int json);

/* `vault` and `doctor` option tables and entry points. */
extern const struct cli_opt cli_vault_opts[];
extern const struct cli_opt cli_doctor_opts[];
int cli_cmd_vault(const struct cli_cmd *cmd, int argc, char **argv);
int cli_cmd_doctor(const struct cli_cmd *cmd, int argc, char **argv);

#endif /* HS_CLI_AZURE_ARGS_H */
