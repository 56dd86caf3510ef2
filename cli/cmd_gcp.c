/*
 * cmd_gcp.c - `hsmsign gcp attestation KEYVERSION`: downloads the Cloud HSM
 * attestation of a Cloud KMS key version, checks its certificate chains
 * and saves the statement for the CA that asks for it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum {
	O_OUTPUT = 1,
	O_ROOTS,
	O_TOKEN,
	O_CREDENTIALS,
	O_WIF_PROVIDER,
	O_SERVICE_ACCOUNT,
	O_ENDPOINT,
	O_CA_FILE,
};

const struct cli_opt cli_gcp_opts[] = {
        {O_OUTPUT, "-o|--output", ARG_VALUE, "FILE",
         "save the attestation statement (as served: gzip-compressed) here"},
        {O_ROOTS, "--roots", ARG_VALUE, "FILE",
         "PEM roots the chains must end in (e.g. the Cavium and Google roots); without "
         "it each chain is only checked to its own self-signed certificate"},
        {O_TOKEN, "--gcp-access-token", ARG_VALUE, "SECRET",
         "Google OAuth access token (env:NAME, file:PATH or stdin)"},
        {O_CREDENTIALS, "--gcp-credentials", ARG_VALUE, "FILE",
         "service-account key or external_account JSON (default: "
         "GOOGLE_APPLICATION_CREDENTIALS)"},
        {O_WIF_PROVIDER, "--gcp-workload-provider", ARG_VALUE, "NAME",
         "GitHub Actions OIDC through this workload identity provider"},
        {O_SERVICE_ACCOUNT, "--gcp-service-account", ARG_VALUE, "EMAIL",
         "service account to impersonate after --gcp-workload-provider"},
        {O_ENDPOINT, "--gcp-kms-endpoint", ARG_VALUE, "URL",
         "Cloud KMS endpoint (default: https://cloudkms.googleapis.com)"},
        {O_CA_FILE, "--ca-file", ARG_VALUE, "FILE", "extra trusted roots for HTTPS"},
        {0},
};

struct gcp_args {
	struct hs_gcp_kms_key_opts key;
	const char *output, *roots, *token;
};

static int gcp_opt(int id, const char *value, void *userdata)
{
	struct gcp_args *a = userdata;
	const char **fields[] = {
	        [O_OUTPUT] = &a->output,
	        [O_ROOTS] = &a->roots,
	        [O_TOKEN] = &a->token,
	        [O_CREDENTIALS] = &a->key.credentials_file,
	        [O_WIF_PROVIDER] = &a->key.workload_provider,
	        [O_SERVICE_ACCOUNT] = &a->key.service_account,
	        [O_ENDPOINT] = &a->key.endpoint,
	        [O_CA_FILE] = &a->key.ca_file,
	};

	if (id <= 0 || id > O_CA_FILE)
		return EXIT_INVALID_ARGS;
	*fields[id] = value;
	return 0;
}

static void print_attestation(const struct hs_gcp_attestation *att, const char *output)
{
	printf("%s: %s attestation, format %s, %zu bytes%s%s\n", att->version,
	       att->protection_level, att->format, att->content_len, output ? ", saved to " : "",
	       output ? output : "");
	for (size_t i = 0; i < att->n_chains; i++) {
		const struct hs_gcp_attestation_chain *c = &att->chains[i];

		printf("  %s: %zu certificates, verified: %s -> %s%s\n", c->name, c->count, c->leaf,
		       c->root, c->root_pinned ? "" : " (root not pinned: use --roots)");
	}
}

static int run_attestation(struct gcp_args *a, const char *version)
{
	struct hs_gcp_attestation *att = NULL;
	struct hs_ctx *ctx = NULL;
	char *token = NULL;
	int r;

	if (hs_ctx_new(&ctx) < 0) {
		cli_error("out of memory");
		return EXIT_ALL_FAILED;
	}
	hs_ctx_set_log(ctx, cli_log, NULL);
	if (a->token != NULL && (r = cli_secret_read("--gcp-access-token", a->token, &token)) != 0)
		goto out;
	a->key.key = version;
	a->key.access_token = token;
	if (hs_gcp_kms_attestation(ctx, &a->key, a->roots, a->output, &att) < 0) {
		cli_error("gcp attestation: %s", hs_ctx_message(ctx));
		r = hs_ctx_error(ctx) == HS_ERR_CRYPTO ? EXIT_UNTRUSTED : EXIT_ALL_FAILED;
		goto out;
	}
	print_attestation(att, a->output);
	r = EXIT_OK;
out:
	a->key.access_token = NULL;
	cli_secret_free(token);
	hs_gcp_attestation_free(att);
	hs_ctx_free(ctx);
	return r;
}

int cli_cmd_gcp(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct gcp_args a = {.key = HS_GCP_KMS_KEY_OPTS_INIT};
	char **operands = calloc((size_t)argc + 1, sizeof(*operands));
	int n = 0, r;

	if (operands == NULL) {
		cli_error("out of memory");
		return EXIT_ALL_FAILED;
	}
	if ((r = cli_parse(cmd, argc, argv, gcp_opt, &a, operands, &n)) != 0)
		goto out;
	if (n != 2 || strcmp(operands[0], "attestation") != 0) {
		cli_error(
		        "gcp: usage: hsmsign gcp attestation KEYVERSION [-o FILE] [--roots FILE]");
		r = EXIT_INVALID_ARGS;
		goto out;
	}
	r = run_attestation(&a, operands[1]);
out:
	free(operands);
	return r < 0 ? EXIT_OK : r; /* < 0: help was printed */
}
