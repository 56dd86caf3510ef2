/* cmd_sign.c - `hsmsign sign`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum {
	O_KEY = 1,
	O_CERT,
	O_PFX,
	O_PFX_PASS,
	O_KEY_PASS,
	O_DIGEST,
	O_OUTPUT,
	O_SKIP_SIGNED,
	O_DESCRIPTION,
	O_DESCRIPTION_URL,
	O_PAGE_HASHES,
	O_NO_PAGE_HASHES,
	O_VERBOSE,
	O_QUIET,
};

const struct cli_opt cli_sign_opts[] = {
        {O_KEY, "--key", ARG_VALUE, "FILE", "private key file (PEM or DER), with --cert"},
        {O_CERT, "--cert", ARG_VALUE, "FILE",
         "certificate chain (PEM: signer, then intermediates; or one DER certificate)"},
        {O_PFX, "--pfx", ARG_VALUE, "FILE", "PKCS#12 file holding the key and the chain"},
        {O_PFX_PASS, "--pfx-pass", ARG_VALUE, "SECRET",
         "PKCS#12 password: env:NAME, file:PATH or stdin"},
        {O_KEY_PASS, "--key-pass", ARG_VALUE, "SECRET",
         "password of an encrypted key file: env:NAME, file:PATH or stdin"},
        {O_DIGEST, "-fd|--file-digest", ARG_VALUE, "ALG",
         "digest: sha1, sha256 (default), sha384, sha512"},
        {O_OUTPUT, "-o|--output", ARG_VALUE, "FILE", "write the signed file here (one FILE only)"},
        {O_SKIP_SIGNED, "-s|--skip-signed", ARG_NONE, NULL, "leave files that are already signed"},
        {O_DESCRIPTION, "-d|--description", ARG_VALUE, "TEXT",
         "description shown by Windows (SpcSpOpusInfo programName)"},
        {O_DESCRIPTION_URL, "-du|--description-url", ARG_VALUE, "URL",
         "URL shown with the description (SpcSpOpusInfo moreInfo)"},
        {O_PAGE_HASHES, "-ph|--page-hashes", ARG_NONE, NULL,
         "include PE page hashes (SHA-1 pages for sha1, SHA-256 otherwise)"},
        {O_NO_PAGE_HASHES, "-nph|--no-page-hashes", ARG_NONE, NULL,
         "do not include page hashes (default)"},
        {O_VERBOSE, "-v|--verbose", ARG_NONE, NULL, "say what is done"},
        {O_QUIET, "-q|--quiet", ARG_NONE, NULL, "print errors only"},
        {0},
};

struct sign_args {
	struct hs_key_file_opts key;
	struct hs_sign_opts sign;
	const char *pfx_pass;
	const char *key_pass;
};

static int sign_opt(int id, const char *value, void *userdata)
{
	struct sign_args *a = userdata;

	switch (id) {
	case O_KEY:
		a->key.key_path = value;
		break;
	case O_CERT:
		a->key.cert_path = value;
		break;
	case O_PFX:
		a->key.pfx_path = value;
		break;
	case O_PFX_PASS:
		a->pfx_pass = value;
		break;
	case O_KEY_PASS:
		a->key_pass = value;
		break;
	case O_DIGEST:
		if (hs_digest_from_name(&a->sign.digest, value) < 0) {
			cli_error("sign: unknown digest '%s' (sha1, sha256, sha384, sha512)",
			          value);
			return EXIT_INVALID_ARGS;
		}
		break;
	case O_OUTPUT:
		a->sign.output = value;
		break;
	case O_SKIP_SIGNED:
		a->sign.skip_signed = 1;
		break;
	case O_DESCRIPTION:
		a->sign.description = value;
		break;
	case O_DESCRIPTION_URL:
		a->sign.description_url = value;
		break;
	case O_PAGE_HASHES:
	case O_NO_PAGE_HASHES:
		a->sign.page_hashes = id == O_PAGE_HASHES;
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

static int check_args(const struct sign_args *a, int n_files)
{
	if (n_files == 0) {
		cli_error("sign: no files to sign (see 'hsmsign sign --help')");
		return EXIT_INVALID_ARGS;
	}
	if (a->sign.output != NULL && n_files > 1) {
		cli_error("sign: --output needs exactly one input file");
		return EXIT_INVALID_ARGS;
	}
	if (a->key.pfx_path == NULL && (a->key.key_path == NULL || a->key.cert_path == NULL)) {
		cli_error("sign: no key: give --key and --cert, or --pfx");
		return EXIT_INVALID_ARGS;
	}
	if (a->pfx_pass != NULL && a->key_pass != NULL) {
		cli_error("sign: give --pfx-pass or --key-pass, not both");
		return EXIT_INVALID_ARGS;
	}
	return 0;
}

/* Opens the key; the password is wiped as soon as the key is loaded. */
static int open_key(struct hs_ctx *ctx, struct sign_args *a, struct hs_key **key)
{
	const char *spec = a->pfx_pass ? a->pfx_pass : a->key_pass;
	char *password = NULL;
	int r;

	if (spec != NULL &&
	    (r = cli_secret_read(a->pfx_pass ? "--pfx-pass" : "--key-pass", spec, &password)))
		return r;
	a->key.password = password;
	r = hs_key_open_file(ctx, key, &a->key);
	a->key.password = NULL;
	cli_secret_free(password);
	if (r < 0) {
		cli_error("sign: %s", hs_ctx_message(ctx));
		return EXIT_INVALID_ARGS;
	}
	return 0;
}

static int sign_all(struct hs_ctx *ctx, struct hs_key *key, const struct sign_args *a, char **files,
                    int n_files)
{
	int failed = 0;

	for (int i = 0; i < n_files; i++) {
		enum hs_sign_outcome outcome;

		hs_ctx_clear_error(ctx);
		if (hs_sign_file(ctx, key, files[i], &a->sign, &outcome) < 0) {
			cli_error_ctx(ctx, files[i]);
			failed++;
		} else if (cli_verbosity >= 1) {
			printf("%s %s\n",
			       outcome == HS_SIGN_SKIPPED ? "Skipped (already signed):" : "Signed:",
			       a->sign.output ? a->sign.output : files[i]);
		}
	}
	if (failed == 0)
		return EXIT_OK;
	return failed == n_files ? EXIT_ALL_FAILED : EXIT_SOME_FAILED;
}

int cli_cmd_sign(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct sign_args a = {HS_KEY_FILE_OPTS_INIT, HS_SIGN_OPTS_INIT, NULL, NULL};
	char **files = calloc((size_t)argc, sizeof(*files));
	struct hs_ctx *ctx = NULL;
	struct hs_key *key = NULL;
	int n_files = 0, r;

	if (files == NULL || hs_ctx_new(&ctx) < 0) {
		cli_error("out of memory");
		r = EXIT_ALL_FAILED;
		goto out;
	}
	r = cli_parse(cmd, argc, argv, sign_opt, &a, files, &n_files);
	if (r != 0 || (r = check_args(&a, n_files)) != 0)
		goto out;
	hs_ctx_set_log(ctx, cli_log, NULL);
	if ((r = open_key(ctx, &a, &key)) != 0)
		goto out;
	if (cli_verbosity >= 2)
		fprintf(stderr, "hsmsign: info: signing with %s key '%s', %s\n",
		        hs_key_provider_name(key), hs_key_subject(key),
		        hs_digest_name(a.sign.digest));
	r = sign_all(ctx, key, &a, files, n_files);
out:
	hs_key_free(key);
	hs_ctx_free(ctx);
	free(files);
	return r < 0 ? EXIT_OK : r;
}
