/* cmd_catalog.c - `hsmsign catalog create`, and the file lookup behind
 * `hsmsign verify --catalog`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum { O_OUTPUT = 1, O_DIGEST };

const struct cli_opt cli_catalog_opts[] = {
        {O_OUTPUT, "-o|--output", ARG_VALUE, "FILE", "write the catalog here (required)"},
        {O_DIGEST, "-fd|--file-digest", ARG_VALUE, "ALG",
         "member digest: sha256 (default; catalog version 2) or sha1 (version 1)"},
        {0},
};

struct catalog_args {
	const char *output;
	enum hs_digest digest;
};

int cli_parse_text_encoding(const char *value, enum hs_text_encoding *out)
{
	if (hs_text_encoding_from_name(out, value) == 0)
		return 0;
	cli_error("unknown script encoding '%s' (utf-8, utf-16le, utf-16be, windows-1252)", value);
	return EXIT_INVALID_ARGS;
}

static int catalog_opt(int id, const char *value, void *userdata)
{
	struct catalog_args *a = userdata;

	if (id == O_OUTPUT) {
		a->output = value;
	} else if (id == O_DIGEST) {
		if (hs_digest_from_name(&a->digest, value) < 0 ||
		    (a->digest != HS_DIGEST_SHA1 && a->digest != HS_DIGEST_SHA256)) {
			cli_error("catalog: digest must be sha1 or sha256, not '%s'", value);
			return EXIT_INVALID_ARGS;
		}
	}
	return 0;
}

int cli_catalog_check(struct hs_ctx *ctx, const char *catalog, const char *file)
{
	int listed = 0;

	hs_ctx_clear_error(ctx);
	if (hs_catalog_lookup(ctx, catalog, file, &listed) < 0) {
		cli_error_ctx(ctx, hs_ctx_error(ctx) == HS_ERR_IO ? file : catalog);
		return EXIT_ALL_FAILED;
	}
	if (!listed) {
		printf("%s: FAILED (not listed in %s)\n", file, catalog);
		return EXIT_DIGEST_MISMATCH;
	}
	if (cli_verbosity >= 1)
		printf("%s: OK (listed in %s)\n", file, catalog);
	return EXIT_OK;
}

/* catalog create -o OUT [-fd ALG] FILE... */
static int catalog_create(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct catalog_args a = {NULL, HS_DIGEST_SHA256};
	char **files = calloc((size_t)argc, sizeof(*files));
	struct hs_ctx *ctx = NULL;
	int n = 0, r;

	if (files == NULL || hs_ctx_new(&ctx) < 0) {
		cli_error("out of memory");
		r = EXIT_ALL_FAILED;
		goto out;
	}
	if ((r = cli_parse(cmd, argc, argv, catalog_opt, &a, files, &n)) != 0)
		goto out;
	if (a.output == NULL || n == 0) {
		cli_error("catalog create: needs -o OUT.cat and at least one FILE");
		r = EXIT_INVALID_ARGS;
		goto out;
	}
	hs_ctx_set_log(ctx, cli_log, NULL);
	if (hs_catalog_create(ctx, a.output, (const char *const *)files, (size_t)n, a.digest) < 0) {
		cli_error_ctx(ctx, a.output);
		r = EXIT_ALL_FAILED;
		goto out;
	}
	if (cli_verbosity >= 1)
		printf("%s: catalog of %d file%s written\n", a.output, n, n == 1 ? "" : "s");
	r = EXIT_OK;
out:
	hs_ctx_free(ctx);
	free(files);
	return r < 0 ? EXIT_OK : r;
}

int cli_cmd_catalog(const struct cli_cmd *cmd, int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "create") == 0)
		return catalog_create(cmd, argc - 1, argv + 1);
	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		cli_print_help(cmd, stdout);
		return EXIT_OK;
	}
	cli_error("catalog: expected 'create' (see 'hsmsign catalog --help')");
	return EXIT_INVALID_ARGS;
}
