/*
 * cmd_vault.c - `hsmsign vault csr|merge|show|role`: getting a code-signing
 * certificate into Key Vault with the key made (and kept) in the vault, and
 * the minimal role that lets a CI job sign with it.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "azure_args.h"

enum {
	O_SUBJECT = 1,
	O_KEY_TYPE,
	O_KEY_SIZE,
	O_CURVE,
	O_VALIDITY,
	O_CANCEL_PENDING,
	O_OUTPUT,
	O_ROOTS,
	O_SCOPE,
	O_GITHUB_REPO,
	O_GITHUB_REF,
	O_GITHUB_ENV,
	O_APP_ID,
	O_ADMIN,
	O_JSON,
};

const struct cli_opt cli_vault_opts[] = {
        CLI_AZURE_OPTS,
        {O_SUBJECT, "--subject", ARG_VALUE, "DN",
         "csr: certificate subject, e.g. \"CN=Contoso Ltd, O=Contoso Ltd, C=US\""},
        {O_KEY_TYPE, "--key-type", ARG_VALUE, "TYPE",
         "csr: RSA-HSM (default), EC-HSM; RSA or EC for a software key (not for EV/OV)"},
        {O_KEY_SIZE, "--key-size", ARG_VALUE, "BITS", "csr: RSA 2048, 3072 (default) or 4096"},
        {O_CURVE, "--curve", ARG_VALUE, "CURVE", "csr: P-256 (default), P-384 or P-521"},
        {O_VALIDITY, "--validity-months", ARG_VALUE, "N", "csr: requested validity (default 12)"},
        {O_CANCEL_PENDING, "--cancel-pending", ARG_NONE, NULL,
         "csr: cancel and delete a pending request of this name first"},
        {O_OUTPUT, "-o|--output", ARG_VALUE, "FILE", "csr: write the CSR here (default: stdout)"},
        {O_ROOTS, "--roots", ARG_VALUE, "FILE",
         "show: PEM roots the chain must reach (default: the system store)"},
        {O_SCOPE, "--scope", ARG_VALUE, "SCOPE",
         "role: the vault's resource id (/subscriptions/.../vaults/NAME)"},
        {O_GITHUB_REPO, "--github-repo", ARG_VALUE, "OWNER/REPO",
         "role: add the GitHub federated credential for this repository"},
        {O_GITHUB_REF, "--github-ref", ARG_VALUE, "REF",
         "role: branch or tag ref it may sign from (default refs/heads/main)"},
        {O_GITHUB_ENV, "--github-environment", ARG_VALUE, "NAME",
         "role: sign from this deployment environment instead of a ref"},
        {O_APP_ID, "--app-id", ARG_VALUE, "ID", "role: the application (client) id to assign"},
        {O_ADMIN, "--admin", ARG_NONE, NULL,
         "role: the provisioning role (csr, merge, show) instead of the signing role"},
        {O_JSON, "--json", ARG_NONE, NULL, "role: print only the role definition"},
        {0},
};

struct vault_args {
	struct cli_azure_args az;
	struct hs_vault_csr_opts csr;
	const char *output, *roots, *scope, *repo, *ref, *environment, *app_id;
	int admin, json;
};

/* A whole number in [min, max] for option `name`. */
static int vault_number(const char *name, const char *value, int min, int max, int *out)
{
	char *end;
	long n = strtol(value, &end, 10);

	if (*value == '\0' || *end != '\0' || n < min || n > max) {
		cli_error("vault: %s takes a number from %d to %d", name, min, max);
		return EXIT_INVALID_ARGS;
	}
	*out = (int)n;
	return 0;
}

static int vault_opt(int id, const char *value, void *userdata)
{
	struct vault_args *a = userdata;

	if (id >= CLI_AZURE_FIRST)
		return cli_azure_opt(&a->az, "vault", id, value);
	switch (id) {
	case O_SUBJECT:
		a->csr.subject = value;
		break;
	case O_KEY_TYPE:
		a->csr.key_type = value;
		break;
	case O_KEY_SIZE:
		return vault_number("--key-size", value, 1024, 8192, &a->csr.key_size);
	case O_CURVE:
		a->csr.curve = value;
		break;
	case O_VALIDITY:
		return vault_number("--validity-months", value, 1, 120, &a->csr.validity_months);
	case O_CANCEL_PENDING:
		a->csr.cancel_pending = 1;
		break;
	case O_OUTPUT:
		a->output = value;
		break;
	case O_ROOTS:
		a->roots = value;
		break;
	case O_SCOPE:
		a->scope = value;
		break;
	case O_GITHUB_REPO:
		a->repo = value;
		break;
	case O_GITHUB_REF:
		a->ref = value;
		break;
	case O_GITHUB_ENV:
		a->environment = value;
		break;
	case O_APP_ID:
		a->app_id = value;
		break;
	case O_ADMIN:
		a->admin = 1;
		break;
	case O_JSON:
		a->json = 1;
		break;
	}
	return 0;
}

/* Writes text to path through a temp file in the same directory + rename,
 * so a reader never sees half a CSR. */
static int write_atomic(const char *path, const char *text)
{
	size_t len = strlen(path), n = strlen(text);
	char *tmp = malloc(len + 16);
	int fd = -1, ok = 0;

	if (tmp != NULL) {
		snprintf(tmp, len + 16, "%s.hsmsign-XXXXXX", path);
		fd = hs_os_mkstemp(tmp);
	}
	if (fd >= 0) {
		ok = hs_os_write(fd, text, n) == (int64_t)n && hs_os_fsync(fd) == 0;
		ok = hs_os_close(fd) == 0 && ok && hs_os_replace(tmp, path) == 0;
		if (!ok)
			hs_os_unlink(tmp);
	}
	if (!ok)
		cli_error("vault csr: cannot write %s: %s", path, strerror(errno));
	free(tmp);
	return ok ? 0 : EXIT_ALL_FAILED;
}

/* Prints the library's error and returns the exit code for it. */
static int vault_fail(struct hs_ctx *ctx, const char *what)
{
	cli_error("vault %s: %s", what, hs_ctx_message(ctx));
	return hs_ctx_error(ctx) == HS_ERR_INVALID ? EXIT_INVALID_ARGS : EXIT_ALL_FAILED;
}

static int run_csr(struct hs_ctx *ctx, struct vault_args *a)
{
	char *pem = NULL;
	int r;

	if (hs_vault_csr(ctx, &a->az.opts, &a->csr, &pem) < 0)
		return vault_fail(ctx, "csr");
	if (a->output != NULL) {
		r = write_atomic(a->output, pem);
		if (r == 0 && cli_verbosity >= 1)
			fprintf(stderr,
			        "hsmsign: CSR for '%s' written to %s: send it to the CA, then run "
			        "'hsmsign vault merge' with its answer\n",
			        a->az.opts.certificate, a->output);
	} else {
		r = fputs(pem, stdout) < 0 ? EXIT_ALL_FAILED : 0;
	}
	hs_free(pem);
	return r;
}

static int run_merge(struct hs_ctx *ctx, struct vault_args *a, char **files, int n)
{
	if (n == 0) {
		cli_error("vault merge: give the CA's certificate file(s)");
		return EXIT_INVALID_ARGS;
	}
	files[n] = NULL;
	if (hs_vault_merge(ctx, &a->az.opts, (const char *const *)files) < 0)
		return vault_fail(ctx, "merge");
	if (cli_verbosity >= 1)
		printf("merged: certificate '%s' is ready to sign ('hsmsign vault show' checks "
		       "it)\n",
		       a->az.opts.certificate);
	return EXIT_OK;
}

static void print_info(const struct vault_args *a, const struct hs_vault_cert_info *i)
{
	printf("certificate  %s in %s\n", a->az.opts.certificate, a->az.opts.vault_url);
	printf("subject      %s\n", i->subject);
	printf("issuer       %s\n", i->issuer);
	printf("serial       %s\n", i->serial);
	printf("valid        %s to %s (%ld days left%s)\n", i->not_before, i->not_after,
	       i->days_left, i->valid_now ? "" : ", NOT VALID NOW");
	printf("key          %s (%s, %s)\n", i->key_type,
	       i->hsm ? "HSM" : "software, not HSM-protected",
	       i->exportable ? "exportable" : "not exportable");
	printf("EKU          %s%s\n", i->ekus, i->code_signing ? "" : " (no codeSigning)");
	printf("kid          %s\n", i->kid ? i->kid : "(none)");
	printf("chain        %s%s\n", i->chain_complete ? "complete: " : "", i->chain);
}

static int run_show(struct hs_ctx *ctx, struct vault_args *a)
{
	struct hs_vault_cert_info *info = NULL;

	if (hs_vault_show(ctx, &a->az.opts, a->roots, &info) < 0)
		return vault_fail(ctx, "show");
	print_info(a, info);
	hs_vault_cert_info_free(info);
	return EXIT_OK;
}

/* Dispatches after the options were read; ops[0] is the subcommand. */
static int vault_run(struct vault_args *a, char **ops, int n_ops)
{
	const char *sub = ops[0];
	struct hs_ctx *ctx = NULL;
	int r;

	if (strcmp(sub, "role") == 0)
		return cli_cmd_vault_role(a->scope, a->repo, a->ref, a->environment, a->app_id,
		                          a->admin, a->json);
	if (strcmp(sub, "csr") != 0 && strcmp(sub, "merge") != 0 && strcmp(sub, "show") != 0) {
		cli_error("vault: unknown subcommand '%s' (csr, merge, show, role)", sub);
		return EXIT_INVALID_ARGS;
	}
	if (strcmp(sub, "merge") != 0 && n_ops > 1) {
		cli_error("vault %s: unexpected argument '%s'", sub, ops[1]);
		return EXIT_INVALID_ARGS;
	}
	if ((r = cli_azure_finish(&a->az, "vault")) != 0)
		return r;
	if ((ctx = cli_azure_ctx()) == NULL)
		return EXIT_ALL_FAILED;
	if (strcmp(sub, "csr") == 0)
		r = run_csr(ctx, a);
	else if (strcmp(sub, "merge") == 0)
		r = run_merge(ctx, a, ops + 1, n_ops - 1);
	else
		r = run_show(ctx, a);
	hs_ctx_free(ctx);
	return r;
}

int cli_cmd_vault(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct vault_args a = {.csr = HS_VAULT_CSR_OPTS_INIT};
	char **ops = calloc((size_t)argc + 1, sizeof(*ops));
	int n_ops = 0, r;

	if (ops == NULL) {
		cli_error("out of memory");
		return EXIT_ALL_FAILED;
	}
	cli_azure_init(&a.az);
	r = cli_parse(cmd, argc, argv, vault_opt, &a, ops, &n_ops);
	if (r == 0 && n_ops == 0) {
		cli_error("vault: give a subcommand: csr, merge, show or role");
		r = EXIT_INVALID_ARGS;
	}
	if (r == 0)
		r = vault_run(&a, ops, n_ops);
	cli_azure_free(&a.az);
	free(ops);
	return r < 0 ? EXIT_OK : r;
}
