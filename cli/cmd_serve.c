/*
 * cmd_serve.c - `hsmsign serve --config FILE`: runs the signing service
 * (lib/serve). This file owns what a library must not do: signals (SIGHUP
 * reloads, SIGTERM/SIGINT stop gracefully), dropping privileges, printing
 * and exit codes.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "serve.h"

enum {
	O_CONFIG = 1,
	O_USER,
	O_ALLOW_ROOT,
	O_CHECK,
	O_VERBOSE,
	O_QUIET,
};

const struct cli_opt cli_serve_opts[] = {
        {O_CONFIG, "-c|--config", ARG_VALUE, "FILE",
         "the JSON configuration (docs/server.md \"Configuration reference\")"},
        {O_USER, "--user", ARG_VALUE, "NAME",
         "after binding and opening the keys, switch to this user and its groups"},
        {O_ALLOW_ROOT, "--allow-root", ARG_NONE, NULL,
         "run as root without --user (not recommended)"},
        {O_CHECK, "--check", ARG_NONE, NULL,
         "validate the configuration and open every key, then exit"},
        {O_VERBOSE, "-v|--verbose", ARG_NONE, NULL, "log debug messages too"},
        {O_QUIET, "-q|--quiet", ARG_NONE, NULL, "log errors only"},
        {0},
};

struct serve_args {
	const char *config, *user;
	int allow_root, check;
};

static int serve_opt(int id, const char *value, void *userdata)
{
	struct serve_args *a = userdata;

	switch (id) {
	case O_CONFIG:
		a->config = value;
		break;
	case O_USER:
		a->user = value;
		break;
	case O_ALLOW_ROOT:
		a->allow_root = 1;
		break;
	case O_CHECK:
		a->check = 1;
		break;
	case O_VERBOSE:
		cli_verbosity = 2;
		break;
	case O_QUIET:
		cli_verbosity = 0;
		break;
	}
	return 0;
}

/* Server log lines: time-stamped; info shown unless -q, debug with -v. */
static void serve_cli_log(enum hs_log_level level, const char *msg, void *userdata)
{
	static const char *const prefix[] = {"error", "warning", "info", "debug"};
	char when[32];
	time_t now = time(NULL);
	struct tm tm;

	(void)userdata;
	if ((level == HS_LOG_WARN && cli_verbosity < 1) ||
	    (level == HS_LOG_INFO && cli_verbosity < 1) ||
	    (level == HS_LOG_DEBUG && cli_verbosity < 2))
		return;
	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(stderr, "%s hsmsign serve: %s: %s\n", when, prefix[level], msg);
}

static void print_key(const char *name, const char *version, const char *subject, void *userdata)
{
	(void)userdata;
	printf("key %s: version %s, %s\n", name, version, subject);
}

/* setgid/initgroups/setuid to user; refuses to continue half-dropped. */
static int drop_privileges(const char *user)
{
	struct passwd *pw;
	char line[300];

	errno = 0;
	if ((pw = getpwnam(user)) == NULL) {
		cli_error("serve: --user: no such user '%s'", user);
		return EXIT_INVALID_ARGS;
	}
	if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
	    setuid(pw->pw_uid) < 0) {
		cli_error("serve: cannot switch to user '%s': %s", user, strerror(errno));
		return EXIT_ALL_FAILED;
	}
	if (pw->pw_uid != 0 && setuid(0) == 0) {
		cli_error("serve: privileges could not be dropped for good");
		return EXIT_ALL_FAILED;
	}
	snprintf(line, sizeof(line), "running as user %s (uid %u, gid %u)", pw->pw_name,
	         (unsigned)pw->pw_uid, (unsigned)pw->pw_gid);
	serve_cli_log(HS_LOG_INFO, line, NULL);
	return 0;
}

static int serve_exit_code(const struct hs_ctx *ctx)
{
	return hs_ctx_error(ctx) == HS_ERR_INVALID ? EXIT_INVALID_ARGS : EXIT_ALL_FAILED;
}

static int run_serve(const struct serve_args *a)
{
	struct hs_serve *s = NULL;
	struct hs_server *srv = NULL;
	struct hs_ctx *ctx = NULL;
	sigset_t set;
	int r = EXIT_OK, sig;

	if (!a->check && geteuid() == 0 && a->user == NULL && !a->allow_root) {
		cli_error("serve: refusing to run as root: give --user NAME (privileges are "
		          "dropped after binding and opening the keys) or --allow-root");
		return EXIT_INVALID_ARGS;
	}
	if (hs_ctx_new(&ctx) < 0) {
		cli_error("out of memory");
		return EXIT_ALL_FAILED;
	}
	hs_ctx_set_log(ctx, serve_cli_log, NULL);
	/* Every thread started from here on inherits the blocked signals; this
	 * thread takes them with sigwait(). */
	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (hs_serve_new(ctx, a->config, serve_cli_log, NULL, &s) < 0) {
		cli_error("serve: %s", hs_ctx_message(ctx));
		r = serve_exit_code(ctx);
		goto out;
	}
	if (a->check) {
		hs_serve_keys(s, print_key, NULL);
		printf("configuration OK: %s\n", a->config);
		goto out;
	}
	if (hs_server_start(ctx, s, &srv) < 0) {
		cli_error("serve: %s", hs_ctx_message(ctx));
		r = serve_exit_code(ctx);
		goto out;
	}
	if (a->user != NULL && (r = drop_privileges(a->user)) != 0)
		goto out;
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig != SIGHUP)
			break;
		hs_ctx_clear_error(ctx);
		if (hs_serve_reload(ctx, s) < 0)
			serve_cli_log(HS_LOG_ERROR, hs_ctx_message(ctx), NULL);
	}
	serve_cli_log(HS_LOG_INFO, "stopping: finishing requests in flight", NULL);
out:
	if (hs_server_stop(srv, 300 * 1000) != 0) {
		/* Requests still running hold the keys: exit without freeing. */
		cli_error("serve: stopped with signatures still in flight");
		_exit(EXIT_ALL_FAILED);
	}
	hs_serve_free(s);
	hs_ctx_free(ctx);
	return r;
}

int cli_cmd_serve(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct serve_args a = {0};
	char **operands = calloc((size_t)argc + 1, sizeof(*operands));
	int n = 0, r;

	if (operands == NULL) {
		cli_error("out of memory");
		return EXIT_ALL_FAILED;
	}
	if ((r = cli_parse(cmd, argc, argv, serve_opt, &a, operands, &n)) != 0)
		goto out;
	if (n != 0 || a.config == NULL) {
		cli_error("serve: usage: hsmsign serve --config FILE [--user NAME] [--check]");
		r = EXIT_INVALID_ARGS;
		goto out;
	}
	r = run_serve(&a);
out:
	free(operands);
	return r < 0 ? EXIT_OK : r; /* < 0: help was printed */
}
