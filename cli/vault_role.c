/*
 * vault_role.c - `hsmsign vault role`: the custom Azure RBAC role with the
 * data actions hsmsign really uses and nothing more, and the az commands
 * that create it, assign it and add the GitHub federated credential.
 *
 * Signing uses exactly two: GET certificates/{name} (certificates/read)
 * and POST keys/{name}/{version}/sign (keys/sign/action). Provisioning
 * (vault csr/merge/show) needs certificates create/update/delete/read.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "azure_args.h"

#define KV_PREFIX "Microsoft.KeyVault/vaults/"

static const char *const signer_actions[] = {
        KV_PREFIX "certificates/read",
        KV_PREFIX "keys/sign/action",
        NULL,
};

static const char *const admin_actions[] = {
        KV_PREFIX "certificates/read",
        KV_PREFIX "certificates/create/action",
        KV_PREFIX "certificates/update/action",
        KV_PREFIX "certificates/delete",
        NULL,
};

#define SCOPE_PLACEHOLDER                                                                          \
	"/subscriptions/<subscription-id>/resourceGroups/<resource-group>/providers/"              \
	"Microsoft.KeyVault/vaults/<vault-name>"

/* Values pasted into JSON and shell commands: refuse quotes and blanks
 * rather than escape them (none of these names can contain them). */
static int role_safe(const char *option, const char *value)
{
	for (const char *p = value; p && *p; p++)
		if (!isgraph((unsigned char)*p) || strchr("\"'`$\\;&|<>", *p) != NULL) {
			cli_error("vault role: %s contains characters that cannot be part of it",
			          option);
			return EXIT_INVALID_ARGS;
		}
	return 0;
}

static void print_role_json(FILE *fp, int admin, const char *scope)
{
	const char *const *actions = admin ? admin_actions : signer_actions;

	fprintf(fp, "{\n  \"Name\": \"%s\",\n  \"IsCustom\": true,\n",
	        admin ? "hsmsign Certificate Provisioner" : "hsmsign Code Signer");
	fprintf(fp, "  \"Description\": \"%s\",\n",
	        admin ? "Create a Key Vault certificate from a CSR and merge the CA's answer"
	              : "Read a Key Vault certificate and sign digests with its key");
	fprintf(fp, "  \"Actions\": [],\n  \"NotActions\": [],\n  \"DataActions\": [\n");
	for (size_t i = 0; actions[i] != NULL; i++)
		fprintf(fp, "    \"%s\"%s\n", actions[i], actions[i + 1] ? "," : "");
	fprintf(fp, "  ],\n  \"NotDataActions\": [],\n  \"AssignableScopes\": [\"%s\"]\n}\n",
	        scope);
}

/* The federated credential's subject: exactly what GitHub puts in `sub`. */
static void print_federation(const char *repo, const char *ref, const char *environment,
                             const char *app)
{
	char subject[512];

	if (environment != NULL)
		snprintf(subject, sizeof(subject), "repo:%s:environment:%s", repo, environment);
	else
		snprintf(subject, sizeof(subject), "repo:%s:ref:%s", repo,
		         ref ? ref : "refs/heads/main");
	printf("\n# 3. Let GitHub Actions runs of %s log in as the app (no secret).\n"
	       "#    The subject must match the token's 'sub' claim exactly.\n",
	       repo);
	printf("az ad app federated-credential create --id %s --parameters "
	       "'{\"name\": \"hsmsign-github\", \"issuer\": "
	       "\"https://token.actions.githubusercontent.com\", \"subject\": \"%s\", "
	       "\"audiences\": [\"api://AzureADTokenExchange\"]}'\n",
	       app, subject);
}

int cli_cmd_vault_role(const char *scope, const char *repo, const char *ref,
                       const char *environment, const char *app_id, int admin, int json)
{
	const char *name = admin ? "hsmsign Certificate Provisioner" : "hsmsign Code Signer";
	const char *app = app_id ? app_id : "<app-client-id>";

	if (role_safe("--scope", scope) || role_safe("--github-repo", repo) ||
	    role_safe("--github-ref", ref) || role_safe("--github-environment", environment) ||
	    role_safe("--app-id", app_id))
		return EXIT_INVALID_ARGS;
	scope = scope ? scope : SCOPE_PLACEHOLDER;
	if (json) {
		print_role_json(stdout, admin, scope);
		return EXIT_OK;
	}
	printf("# 1. Create the role (only the data actions hsmsign %s uses).\n"
	       "cat > hsmsign-role.json <<'JSON'\n",
	       admin ? "vault csr/merge/show" : "sign");
	print_role_json(stdout, admin, scope);
	printf("JSON\naz role definition create --role-definition @hsmsign-role.json\n");
	printf("\n# 2. Assign it to the signing identity on the vault only.\n"
	       "az role assignment create --role \"%s\" --assignee %s --scope \"%s\"\n",
	       name, app, scope);
	if (repo != NULL)
		print_federation(repo, ref, environment, app);
	return EXIT_OK;
}
