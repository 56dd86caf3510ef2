/*
 * token_cli.c - Azure CLI credential: runs `az account get-access-token --output json
 * --resource R [--tenant T]` (AZURE_CLI_PATH or "az" from PATH) without a shell.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "auth/source.h"

extern char **environ;

#define CLI_STDOUT_MAX (1024 * 1024)
#define CLI_STDERR_MAX (16 * 1024)
#define CLI_TIMEOUT_MS 30000L

/* What the child printed and how it ended. */
struct cli_run {
	struct hs_buf out; /* secret: holds the token */
	struct hs_buf err;
	int status; /* waitpid() status */
	bool timed_out;
	bool too_large;
};

static long cli_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

/* Starts argv[0] with stdout/stderr on pipes and stdin on /dev/null; errno-style result. */
static int cli_spawn(char *const argv[], pid_t *pid, int *out_fd, int *err_fd)
{
	posix_spawn_file_actions_t fa;
	int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1}, e;

	if (pipe(out_pipe) != 0 || pipe(err_pipe) != 0) {
		e = errno;
		goto fail;
	}
	if ((e = posix_spawn_file_actions_init(&fa)) != 0)
		goto fail;
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
	posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
	posix_spawn_file_actions_addclose(&fa, out_pipe[0]);
	posix_spawn_file_actions_addclose(&fa, err_pipe[0]);
	e = posix_spawnp(pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (e != 0)
		goto fail;
	close(out_pipe[1]);
	close(err_pipe[1]);
	*out_fd = out_pipe[0];
	*err_fd = err_pipe[0];
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		if (out_pipe[i] >= 0)
			close(out_pipe[i]);
		if (err_pipe[i] >= 0)
			close(err_pipe[i]);
	}
	return e;
}

/* Reads one chunk from fd into buf; false at EOF/error (fd then closed and set to -1). */
static bool cli_read_some(int *fd, struct hs_buf *buf, size_t max, bool *too_large)
{
	char chunk[4096];
	ssize_t n = read(*fd, chunk, sizeof(chunk));

	if (n < 0 && errno == EINTR)
		return true;
	if (n <= 0) {
		close(*fd);
		*fd = -1;
		return false;
	}
	if ((size_t)n > max - buf->len || hs_buf_append(buf, chunk, (size_t)n) < 0)
		*too_large = true;
	OPENSSL_cleanse(chunk, sizeof(chunk));
	return !*too_large;
}

/* Collects the child's output until both pipes close, the cap, or the timeout. */
static void cli_collect(pid_t pid, int out_fd, int err_fd, struct cli_run *run)
{
	long deadline = cli_now_ms() + CLI_TIMEOUT_MS;
	struct pollfd fds[2];
	int n;

	while ((out_fd >= 0 || err_fd >= 0) && !run->too_large) {
		long left = deadline - cli_now_ms();

		if (left <= 0) {
			run->timed_out = true;
			break;
		}
		fds[0] = (struct pollfd){.fd = out_fd, .events = POLLIN};
		fds[1] = (struct pollfd){.fd = err_fd, .events = POLLIN};
		n = poll(fds, 2, (int)left);
		if (n < 0 && errno != EINTR)
			break;
		if (n <= 0)
			continue;
		if (out_fd >= 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)))
			cli_read_some(&out_fd, &run->out, CLI_STDOUT_MAX, &run->too_large);
		if (err_fd >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)))
			cli_read_some(&err_fd, &run->err, CLI_STDERR_MAX, &run->too_large);
	}
	if (out_fd >= 0 || err_fd >= 0)
		kill(pid, SIGKILL); /* our own child, stuck or too chatty */
	if (out_fd >= 0)
		close(out_fd);
	if (err_fd >= 0)
		close(err_fd);
	while (waitpid(pid, &run->status, 0) < 0 && errno == EINTR)
		;
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

	if (run->timed_out)
		return hs_error_set(ctx, HS_ERR_AUTH, "Azure CLI did not answer within %ld s",
		                    CLI_TIMEOUT_MS / 1000);
	if (run->too_large)
		return hs_error_set(ctx, HS_ERR_AUTH, "Azure CLI printed too much output");
	if (run->err.data != NULL && hs_buf_append(&run->err, "", 1) == 0) {
		for (p = (const char *)run->err.data; *p == '\n' || *p == '\r' || *p == ' '; p++)
			;
		hs_auth_first_line(line, sizeof(line), p);
	}
	if (WIFEXITED(run->status))
		return hs_error_set(ctx, HS_ERR_AUTH, "Azure CLI failed (exit %d)%s%s",
		                    WEXITSTATUS(run->status), line[0] ? ": " : "", line);
	return hs_error_set(ctx, HS_ERR_AUTH, "Azure CLI was killed by signal %d",
	                    WIFSIGNALED(run->status) ? WTERMSIG(run->status) : 0);
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
	int out_fd = -1, err_fd = -1, e, r;
	pid_t pid;

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
	if ((e = cli_spawn(argv, &pid, &out_fd, &err_fd)) != 0) {
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
	cli_collect(pid, out_fd, err_fd, &run);
	if (run.timed_out || run.too_large || !WIFEXITED(run.status) ||
	    WEXITSTATUS(run.status) != 0) {
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
