/*
 * token_cli.c - Azure CLI credential: runs `az account get-access-token --output json
 * --resource R [--tenant T]` (AZURE_CLI_PATH or "az" from PATH) without a shell.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "auth/source.h"

#define CLI_STDOUT_MAX (1024 * 1024)
#define CLI_STDERR_MAX (16 * 1024)
#define CLI_TIMEOUT_MS 30000L

/* What the child printed and how it ended. */
struct cli_run {
	struct hs_buf out; /* secret: holds the token */
	struct hs_buf err;
	struct hs_os_exit exit;
	bool too_large;
};

static int cli_create(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, bool in_chain,
                      struct hs_token_source **out)
{
	*out = hs_auth_source_alloc(sizeof(struct hs_token_source), &hs_source_azure_cli, cfg,
	                            in_chain);
	return *out ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

static void cli_free(struct hs_token_source *src)
{
	free(src);
}

/* hs_os_run() output callback: keeps stdout and stderr up to their caps. */
static bool cli_output(void *userdata, int stream, const void *data, size_t len)
{
	struct cli_run *run = userdata;
	struct hs_buf *buf = stream == 1 ? &run->out : &run->err;
	size_t max = stream == 1 ? CLI_STDOUT_MAX : CLI_STDERR_MAX;

	if (len > max - buf->len || hs_buf_append(buf, data, len) < 0)
		run->too_large = true;
	return !run->too_large;
}

/* Unix time of az's "expiresOn" (naive local time "%Y-%m-%d %H:%M:%S.%f"), or 0. */
static int64_t cli_local_time(const char *s)
{
	struct tm tm = {0};

	if (s == NULL || sscanf(s, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
	                        &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	tm.tm_isdst = -1;
	return (int64_t)mktime(&tm);
}

/* Parses az's JSON: accessToken + expires_on (int or string) or expiresOn. */
static int cli_parse(struct hs_ctx *ctx, const struct hs_buf *out, char **token,
                     int64_t *expires_at)
{
	json_error_t jerr;
	json_t *root = json_loadb((const char *)out->data, out->len, 0, &jerr);
	const char *value = json_string_value(json_object_get(root, "accessToken"));
	int64_t exp = hs_auth_json_time(json_object_get(root, "expires_on"));
	int r;

	if (exp == 0)
		exp = cli_local_time(json_string_value(json_object_get(root, "expiresOn")));
	if (value == NULL || !hs_auth_token_ok(value)) {
		r = hs_error_set(ctx, HS_ERR_AUTH,
		                 "Azure CLI printed no accessToken (is it older than 2.0?)");
		goto out;
	}
	*expires_at = exp > 0 ? exp : (int64_t)time(NULL) + 300;
	if ((*token = hs_secret_strdup(value)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	r = 0;
out:
	json_decref(root);
	return r;
}

/* A one-line error for a failed run: exit status and az's first stderr line. */
static int cli_failure(struct hs_ctx *ctx, struct cli_run *run)
{
	char line[300] = "";
	const char *p;

	if (run->exit.timed_out)
		return hs_error_set(ctx, HS_ERR_AUTH, "Azure CLI did not answer within %ld s",
		                    CLI_TIMEOUT_MS / 1000);
	if (run->too_large)
		return hs_error_set(ctx, HS_ERR_AUTH, "Azure CLI printed too much output");
	if (run->err.data != NULL && hs_buf_append(&run->err, "", 1) == 0) {
		for (p = (const char *)run->err.data; *p == '\n' || *p == '\r' || *p == ' '; p++)
			;
		hs_auth_first_line(line, sizeof(line), p);
	}
	if (run->exit.code >= 0)
		return hs_error_set(ctx, HS_ERR_AUTH, "Azure CLI failed (exit %d)%s%s",
		                    run->exit.code, line[0] ? ": " : "", line);
	return hs_error_set(ctx, HS_ERR_AUTH, "Azure CLI was killed by signal %d",
	                    run->exit.signal);
}

/* Arguments must not be mistaken for options. */
static bool cli_arg_ok(const char *s)
{
	return s != NULL && *s != '\0' && *s != '-' && strpbrk(s, "\r\n") == NULL;
}

static int cli_get(struct hs_ctx *ctx, struct hs_token_source *src, const char *scope,
                   const char *tenant_hint, char **token, int64_t *expires_at)
{
	const struct hs_auth_cfg *cfg = src->cfg;
	const char *tenant = cfg->tenant_id ? cfg->tenant_id : tenant_hint;
	char *resource = hs_auth_scope_to_resource(scope);
	char *argv[10] = {cfg->cli_path, "account",    "get-access-token", "--output",
	                  "json",        "--resource", resource,           NULL,
	                  NULL,          NULL};
	struct cli_run run = {0};
	int e, r;

	if (resource == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if (!cli_arg_ok(resource) || (tenant != NULL && !cli_arg_ok(tenant))) {
		r = hs_error_set(ctx, HS_ERR_INVALID, "invalid scope or tenant for the Azure CLI");
		goto out;
	}
	if (tenant != NULL) {
		argv[7] = "--tenant";
		argv[8] = (char *)tenant;
	}
	if ((e = hs_os_run(argv, CLI_TIMEOUT_MS, cli_output, &run, &run.exit)) != 0) {
		if (src->in_chain && (e == ENOENT || e == EACCES)) {
			hs_log(ctx, HS_LOG_DEBUG, "Azure CLI '%s' not found", cfg->cli_path);
			r = HS_AUTH_UNAVAILABLE;
		} else {
			r = hs_error_set(ctx, HS_ERR_AUTH,
			                 "cannot run the Azure CLI '%s': %s (install it or set "
			                 "AZURE_CLI_PATH)",
			                 cfg->cli_path, strerror(e));
		}
		goto out;
	}
	if (run.exit.timed_out || run.too_large || run.exit.code != 0) {
		r = cli_failure(ctx, &run);
		goto out;
	}
	r = cli_parse(ctx, &run.out, token, expires_at);
out:
	hs_buf_free_secret(&run.out);
	hs_buf_free(&run.err);
	free(resource);
	return r;
}

const struct hs_token_source_ops hs_source_azure_cli = {
        .name = "azure-cli",
        .create = cli_create,
        .get_token = cli_get,
        .free = cli_free,
};
