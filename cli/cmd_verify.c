/* cmd_verify.c - `hsmsign verify`. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

enum { O_CA_FILE = 1, O_VERBOSE, O_QUIET };

const struct cli_opt cli_verify_opts[] = {
        {O_CA_FILE, "--ca-file|-ca", ARG_VALUE, "FILE",
         "trust the PEM root certificates in FILE instead of the system store"},
        {O_VERBOSE, "-v|--verbose", ARG_NONE, NULL, "say more"},
        {O_QUIET, "-q|--quiet", ARG_NONE, NULL, "print failures only"},
        {0},
};

static int verify_opt(int id, const char *value, void *userdata)
{
	struct hs_verify_opts *o = userdata;

	if (id == O_CA_FILE)
		o->ca_file = value;
	else if (id == O_VERBOSE)
		cli_verbosity = 2;
	else if (id == O_QUIET)
		cli_verbosity = 0;
	return 0;
}

/* Exit code for a verdict (docs/cli.md "Exit status"). */
static int status_exit(enum hs_verify_status s)
{
	switch (s) {
	case HS_VERIFY_OK:
		return EXIT_OK;
	case HS_VERIFY_NO_SIGNATURE:
		return EXIT_NO_SIGNATURE;
	case HS_VERIFY_MALFORMED:
		return EXIT_MALFORMED;
	case HS_VERIFY_DIGEST_MISMATCH:
		return EXIT_DIGEST_MISMATCH;
	case HS_VERIFY_BAD_SIGNATURE:
		return EXIT_BAD_SIGNATURE;
	case HS_VERIFY_UNTRUSTED:
		return EXIT_UNTRUSTED;
	case HS_VERIFY_EXPIRED:
		return EXIT_EXPIRED;
	case HS_VERIFY_NO_EKU:
		return EXIT_NO_EKU;
	}
	return EXIT_MALFORMED;
}

static const char *page_hash_text(int state)
{
	return state == 0 ? "none" : state > 0 ? "ok" : "MISMATCH";
}

static void print_result(const char *path, const struct hs_verify_result *res)
{
	if (res->status == HS_VERIFY_OK) {
		if (cli_verbosity >= 1)
			printf("%s: OK\n", path);
	} else {
		printf("%s: FAILED (%s)\n", path, hs_verify_status_name(res->status));
	}
	for (size_t i = 0; i < res->count; i++) {
		const struct hs_signature_info *s = &res->sigs[i];

		if (cli_verbosity < 1 && res->status == HS_VERIFY_OK)
			break;
		if (s->subject == NULL && s->digest == 0) { /* nothing parsed */
			printf("  %s: %s\n", hs_verify_status_name(s->status),
			       s->reason ? s->reason : "");
			continue;
		}
		printf("  signature %zu%s: %s, signer \"%s\", issuer \"%s\", page hashes: %s\n",
		       i + 1, s->depth ? " (nested)" : "", hs_digest_name(s->digest),
		       s->subject ? s->subject : "?", s->issuer ? s->issuer : "?",
		       page_hash_text(s->page_hashes));
		if (s->status != HS_VERIFY_OK)
			printf("    %s: %s\n", hs_verify_status_name(s->status),
			       s->reason ? s->reason : "");
	}
}

/* Verifies one file; returns its exit code. */
static int verify_one(struct hs_ctx *ctx, const char *path, const struct hs_verify_opts *opts)
{
	struct hs_verify_result *res = NULL;
	int code;

	hs_ctx_clear_error(ctx);
	if (hs_verify_file(ctx, path, opts, &res) < 0) {
		cli_error_ctx(ctx, path);
		return EXIT_ALL_FAILED;
	}
	print_result(path, res);
	code = status_exit(res->status);
	hs_verify_result_free(res);
	return code;
}

int cli_cmd_verify(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct hs_verify_opts opts = HS_VERIFY_OPTS_INIT;
	char **files = calloc((size_t)argc, sizeof(*files));
	struct hs_ctx *ctx = NULL;
	int n_files = 0, r, first = EXIT_OK;

	if (files == NULL || hs_ctx_new(&ctx) < 0) {
		cli_error("out of memory");
		r = EXIT_ALL_FAILED;
		goto out;
	}
	if ((r = cli_parse(cmd, argc, argv, verify_opt, &opts, files, &n_files)) != 0)
		goto out;
	if (n_files == 0) {
		cli_error("verify: no files given (see 'hsmsign verify --help')");
		r = EXIT_INVALID_ARGS;
		goto out;
	}
	hs_ctx_set_log(ctx, cli_log, NULL);
	for (int i = 0; i < n_files; i++) {
		int code = verify_one(ctx, files[i], &opts);

		if (first == EXIT_OK)
			first = code;
	}
	r = first;
out:
	hs_ctx_free(ctx);
	free(files);
	return r < 0 ? EXIT_OK : r;
}
