/* cmd_timestamp.c - `hsmsign timestamp`: add or replace the timestamp of
 * existing signatures, without any key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum { O_RFC3161 = 1, O_LEGACY, O_DIGEST, O_INDEX, O_OUTPUT, O_RETRIES, O_TIMEOUT, O_QUIET };

#define MAX_TSA CLI_MAX_TSA

const struct cli_opt cli_timestamp_opts[] = {
        {O_RFC3161, "-tr|--tr|--timestamp-rfc3161", ARG_VALUE, "URL",
         "RFC 3161 timestamp server; repeat or separate with commas to fail over in order"},
        {O_DIGEST, "-td|--td|--timestamp-digest", ARG_VALUE, "ALG",
         "timestamp imprint digest: sha1, sha256 (default), sha384, sha512"},
        {O_LEGACY, "-t|--t|--timestamp-authenticode", ARG_VALUE, "URL",
         "legacy Authenticode timestamp server (instead of -tr)"},
        {O_INDEX, "--index", ARG_VALUE, "N",
         "which signature: 0 the primary (default), 1.. the nested ones in order"},
        {O_OUTPUT, "-o|--output", ARG_VALUE, "FILE", "write the result here (one FILE only)"},
        {O_RETRIES, "--timestamp-retries", ARG_VALUE, "N",
         "retries per timestamp server (default 2)"},
        {O_TIMEOUT, "--timestamp-timeout", ARG_VALUE, "SECONDS",
         "longest wait for one answer (default 30)"},
        {O_QUIET, "-q|--quiet", ARG_NONE, NULL, "print errors only"},
        {0},
};

struct ts_args {
	struct hs_timestamp_opts ts;
	const char *urls[MAX_TSA + 1];
	const char *legacy[MAX_TSA + 1];
	int n_urls, n_legacy;
	unsigned index;
	const char *output;
};

/* A whole number in [0, max] or an error naming the option. */
static int number(const char *option, const char *value, long max, long *out)
{
	char *end;

	*out = strtol(value, &end, 10);
	if (*value == '\0' || *end != '\0' || *out < 0 || *out > max) {
		cli_error("timestamp: %s takes a whole number up to %ld", option, max);
		return EXIT_INVALID_ARGS;
	}
	return 0;
}

static int ts_opt(int id, const char *value, void *userdata)
{
	struct ts_args *a = userdata;
	long n = 0;
	int r = 0;

	switch (id) {
	case O_RFC3161:
		return cli_add_tsa_urls("timestamp", a->urls, &a->n_urls, (char *)value);
	case O_LEGACY:
		return cli_add_tsa_urls("timestamp", a->legacy, &a->n_legacy, (char *)value);
	case O_DIGEST:
		if (hs_digest_from_name(&a->ts.digest, value) < 0) {
			cli_error("timestamp: unknown digest '%s' (sha1, sha256, sha384, sha512)",
			          value);
			return EXIT_INVALID_ARGS;
		}
		return 0;
	case O_INDEX:
		if ((r = number("--index", value, 64, &n)) == 0)
			a->index = (unsigned)n;
		return r;
	case O_RETRIES:
		if ((r = number("--timestamp-retries", value, 100, &n)) == 0)
			a->ts.max_retries = n == 0 ? -1 : (int)n;
		return r;
	case O_TIMEOUT:
		if ((r = number("--timestamp-timeout", value, 3600, &n)) == 0)
			a->ts.timeout_ms = n * 1000;
		return r;
	case O_OUTPUT:
		a->output = value;
		return 0;
	case O_QUIET:
		cli_verbosity = 0;
		return 0;
	}
	return 0;
}

static int check_args(struct ts_args *a, int n_files)
{
	const char *backoff = getenv("HSMSIGN_HTTP_BACKOFF_MS"); /* test knob */

	if (a->n_urls == 0 && a->n_legacy == 0) {
		cli_error("timestamp: give a timestamp server with -tr URL (or -t URL)");
		return EXIT_INVALID_ARGS;
	}
	if (n_files == 0) {
		cli_error("timestamp: no files given (see 'hsmsign timestamp --help')");
		return EXIT_INVALID_ARGS;
	}
	if (a->output != NULL && n_files > 1) {
		cli_error("timestamp: --output needs exactly one input file");
		return EXIT_INVALID_ARGS;
	}
	if (backoff != NULL && *backoff != '\0')
		a->ts.backoff_base_ms = strtol(backoff, NULL, 10);
	a->ts.urls = a->n_urls > 0 ? a->urls : NULL;
	a->ts.legacy_urls = a->n_legacy > 0 ? a->legacy : NULL;
	return 0;
}

/* Exit code for one failed file, after printing why. */
static int fail(struct hs_ctx *ctx, const char *path)
{
	cli_error_ctx(ctx, path);
	if (hs_ctx_error(ctx) == HS_ERR_NOTFOUND && strstr(hs_ctx_message(ctx), "not signed"))
		return EXIT_NO_SIGNATURE;
	return EXIT_ALL_FAILED;
}

int cli_cmd_timestamp(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct ts_args a = {.ts = HS_TIMESTAMP_OPTS_INIT};
	char **files = calloc((size_t)argc, sizeof(*files));
	struct hs_ctx *ctx = NULL;
	int n_files = 0, failed = 0, r;

	if (files == NULL || hs_ctx_new(&ctx) < 0) {
		cli_error("out of memory");
		r = EXIT_ALL_FAILED;
		goto out;
	}
	if ((r = cli_parse(cmd, argc, argv, ts_opt, &a, files, &n_files)) != 0 ||
	    (r = check_args(&a, n_files)) != 0)
		goto out;
	hs_ctx_set_log(ctx, cli_log, NULL);
	for (int i = 0; i < n_files; i++) {
		hs_ctx_clear_error(ctx);
		if (hs_timestamp_file(ctx, files[i], &a.ts, a.index, a.output) < 0) {
			r = fail(ctx, files[i]);
			failed++;
		} else if (cli_verbosity >= 1) {
			printf("Timestamped: %s\n", a.output ? a.output : files[i]);
		}
	}
	if (failed > 0 && failed < n_files)
		r = EXIT_SOME_FAILED;
out:
	hs_ctx_free(ctx);
	free(files);
	return r < 0 ? EXIT_OK : r;
}
