/* cmd_attach.c - two-step signing: `hsmsign digest FILE -o FILE.req` and
 * `hsmsign attach FILE --signature SIG [--request FILE.req]`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Largest signature file read: a raw signature is at most a few hundred
 * bytes, an extracted PKCS#7 with timestamps and nested signatures a few
 * dozen KiB. */
#define SIG_FILE_MAX (1024 * 1024)
#define MAX_TSA      CLI_MAX_TSA

enum { O_SIGNATURE = 1, O_REQUEST, O_OUTPUT, O_TSA, O_TS_DIGEST, O_QUIET };

const struct cli_opt cli_attach_opts[] = {
        {O_SIGNATURE, "--signature", ARG_VALUE, "SIG",
         "the signature: raw bytes over the request's to_be_signed digest (with --request), "
         "or a DER PKCS#7 from 'hsmsign extract' of a file with the same content"},
        {O_REQUEST, "--request", ARG_VALUE, "FILE.req",
         "the signing request made by 'hsmsign digest -o' (for a raw signature)"},
        {O_OUTPUT, "-o|--output", ARG_VALUE, "FILE", "write the signed file here"},
        {O_TSA, "-tr|--timestamp-rfc3161", ARG_VALUE, "URL",
         "timestamp the new signature (with --request; repeatable, fails over in order)"},
        {O_TS_DIGEST, "-td|--timestamp-digest", ARG_VALUE, "ALG",
         "timestamp imprint digest (default sha256)"},
        {O_QUIET, "-q|--quiet", ARG_NONE, NULL, "print errors only"},
        {0},
};

struct attach_args {
	const char *signature, *request;
	struct hs_sign_opts sign;
	const char *tsa[MAX_TSA + 1];
	int n_tsa;
	int quiet;
};

static int attach_opt(int id, const char *value, void *userdata)
{
	struct attach_args *a = userdata;

	switch (id) {
	case O_SIGNATURE:
		a->signature = value;
		break;
	case O_REQUEST:
		a->request = value;
		break;
	case O_OUTPUT:
		a->sign.output = value;
		break;
	case O_TSA:
		a->sign.timestamp.urls = a->tsa;
		return cli_add_tsa_urls("attach", a->tsa, &a->n_tsa, (char *)value);
	case O_TS_DIGEST:
		if (hs_digest_from_name(&a->sign.timestamp.digest, value) < 0) {
			cli_error("attach: unknown digest '%s'", value);
			return EXIT_INVALID_ARGS;
		}
		break;
	case O_QUIET:
		a->quiet = 1;
		break;
	}
	return 0;
}

/* Reads a whole small file into *out (free()). */
static int read_small_file(const char *path, uint8_t **out, size_t *len)
{
	FILE *fp = hs_os_fopen(path, "rb");
	uint8_t *buf = malloc(SIG_FILE_MAX + 1);
	size_t n = 0;

	*out = NULL;
	if (fp == NULL || buf == NULL) {
		cli_error("%s: cannot read the signature", path);
		goto fail;
	}
	n = fread(buf, 1, SIG_FILE_MAX + 1, fp);
	if (ferror(fp) || n == 0 || n > SIG_FILE_MAX) {
		cli_error("%s: %s", path,
		          n > SIG_FILE_MAX ? "too large for a signature"
		                           : "cannot read the signature");
		goto fail;
	}
	fclose(fp);
	*out = buf;
	*len = n;
	return 0;
fail:
	if (fp != NULL)
		fclose(fp);
	free(buf);
	return EXIT_INVALID_ARGS;
}

/* Exit code after a failed library call (docs/cli.md "Two-step signing"):
 * file or options changed 12, signature not by the certificate's key 13,
 * unreadable request or signature 11. */
static int attach_fail(struct hs_ctx *ctx, const char *path)
{
	int err = hs_ctx_error(ctx);

	cli_error_ctx(ctx, path);
	if (err == HS_ERR_INVALID)
		return EXIT_DIGEST_MISMATCH;
	if (err == HS_ERR_CRYPTO)
		return EXIT_BAD_SIGNATURE;
	return err == HS_ERR_FORMAT ? EXIT_MALFORMED : EXIT_ALL_FAILED;
}

static int attach_check(const struct attach_args *a, int n_files)
{
	if (n_files != 1) {
		cli_error("attach: give exactly one file (see 'hsmsign attach --help')");
		return EXIT_INVALID_ARGS;
	}
	if (a->signature == NULL) {
		cli_error("attach: --signature is required");
		return EXIT_INVALID_ARGS;
	}
	if (a->n_tsa > 0 && a->request == NULL) {
		cli_error("attach: -tr goes with --request; timestamp an attached PKCS#7 with "
		          "'hsmsign timestamp'");
		return EXIT_INVALID_ARGS;
	}
	return 0;
}

int cli_cmd_attach(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct attach_args a = {.sign = {.digest = HS_DIGEST_SHA256}};
	char **files = calloc((size_t)argc, sizeof(*files));
	struct hs_ctx *ctx = NULL;
	uint8_t *sig = NULL;
	size_t sig_len = 0;
	int n = 0, r;

	if (files == NULL || hs_ctx_new(&ctx) < 0) {
		cli_error("out of memory");
		r = EXIT_ALL_FAILED;
		goto out;
	}
	if ((r = cli_parse(cmd, argc, argv, attach_opt, &a, files, &n)) != 0 ||
	    (r = attach_check(&a, n)) != 0 ||
	    (r = read_small_file(a.signature, &sig, &sig_len)) != 0)
		goto out;
	if (a.quiet)
		cli_verbosity = 0;
	hs_ctx_set_log(ctx, cli_log, NULL);
	if (hs_attach_signature(ctx, files[0], a.request, sig, sig_len, &a.sign) < 0)
		r = attach_fail(ctx, files[0]);
	else if (cli_verbosity >= 1)
		printf("Signed: %s\n", a.sign.output ? a.sign.output : files[0]);
out:
	free(sig);
	hs_ctx_free(ctx);
	free(files);
	return r < 0 ? EXIT_OK : r;
}

int cli_digest_request(const char *file, const char *request, const char *cert,
                       enum hs_digest digest, struct hs_sign_opts *sign)
{
	struct hs_ctx *ctx = NULL;
	int r = EXIT_OK;

	if (request == NULL || cert == NULL) {
		cli_error("digest: a signing request needs both -o FILE.req and --cert");
		return EXIT_INVALID_ARGS;
	}
	if (hs_ctx_new(&ctx) < 0)
		return EXIT_ALL_FAILED;
	hs_ctx_set_log(ctx, cli_log, NULL);
	sign->digest = digest;
	if (hs_request_create(ctx, file, cert, sign, request) < 0) {
		cli_error_ctx(ctx, file);
		r = EXIT_ALL_FAILED;
	} else if (cli_verbosity >= 1) {
		printf("Signing request: %s\n", request);
	}
	hs_ctx_free(ctx);
	return r;
}

int cli_check_sign_request(const char *request, const char *output, int n_files)
{
	if (n_files > 0 || output == NULL) {
		cli_error("sign: --sign-request %s takes no files and needs -o SIG for the "
		          "signature",
		          request);
		return EXIT_INVALID_ARGS;
	}
	return 0;
}

int cli_sign_request(struct hs_ctx *ctx, struct hs_key *key, const char *request,
                     const char *output)
{
	uint8_t *sig = NULL;
	size_t len = 0;
	FILE *fp = NULL;
	bool written;
	int r = EXIT_OK;

	if (hs_request_sign(ctx, key, request, &sig, &len) < 0) {
		cli_error_ctx(ctx, request);
		return EXIT_ALL_FAILED;
	}
	if ((fp = hs_os_fopen(output, "wb")) == NULL) {
		cli_error("%s: cannot create the signature file", output);
		hs_free(sig);
		return EXIT_ALL_FAILED;
	}
	written = fwrite(sig, 1, len, fp) == len;
	if (fclose(fp) != 0 || !written) {
		cli_error("%s: cannot write the signature", output);
		r = EXIT_ALL_FAILED;
	} else if (cli_verbosity >= 1) {
		printf("Signature: %s\n", output);
	}
	hs_free(sig);
	return r;
}
