/* cmd_misc.c - `hsmsign remove`, `extract` and `digest`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>

#include "cli.h"

enum { O_OUTPUT = 1, O_PEM, O_DIGEST, O_INDEX, O_CERT, O_DESC, O_DESC_URL, O_PH, O_MSI_DSE, O_ENC };

const struct cli_opt cli_remove_opts[] = {
        {O_OUTPUT, "-o|--output", ARG_VALUE, "FILE", "write the unsigned file here"},
        {O_INDEX, "--index", ARG_VALUE, "N",
         "remove only nested signature N (1, 2, ... as verify lists them); 0, the primary, "
         "removes every signature (default)"},
        {0},
};

const struct cli_opt cli_extract_opts[] = {
        {O_OUTPUT, "-o|--output", ARG_VALUE, "FILE", "write the signature here (default: stdout)"},
        {O_PEM, "--pem", ARG_NONE, NULL, "write PEM instead of DER"},
        {O_INDEX, "--index", ARG_VALUE, "N",
         "write only nested signature N (1, 2, ...); 0 (default): the whole PKCS#7 with "
         "the signatures nested in it"},
        {0},
};

const struct cli_opt cli_digest_opts[] = {
        {O_DIGEST, "-fd|--file-digest", ARG_VALUE, "ALG",
         "digest: sha1, sha256 (default), sha384, sha512"},
        {O_OUTPUT, "-o|--output", ARG_VALUE, "FILE.req",
         "write a signing request for two-step signing (needs --cert) instead of printing "
         "the digest"},
        {O_CERT, "--cert", ARG_VALUE, "FILE",
         "signing certificate chain (PEM: signer first) for the request"},
        {O_DESC, "-d|--description", ARG_VALUE, "TEXT", "request: description, as for sign"},
        {O_DESC_URL, "-du|--description-url", ARG_VALUE, "URL",
         "request: description URL, as for sign"},
        {O_PH, "-ph|--page-hashes", ARG_NONE, NULL, "request: include PE page hashes"},
        {O_MSI_DSE, "--msi-dse", ARG_NONE, NULL, "request: add MsiDigitalSignatureEx (MSI)"},
        {O_ENC, "--script-encoding", ARG_VALUE, "ENC", "scripts without a BOM, as for sign"},
        {0},
};

struct misc_args {
	const char *output;
	int pem;
	enum hs_digest digest;
	unsigned index;
	struct hs_sign_opts sign; /* digest -o: what the request asks for */
	const char *cert;
};

static int parse_index(const char *value, unsigned *out)
{
	char *end;
	long n = strtol(value, &end, 10);

	if (*value == '\0' || *end != '\0' || n < 0 || n > 64) {
		cli_error("--index takes a number from 0 to 64");
		return EXIT_INVALID_ARGS;
	}
	*out = (unsigned)n;
	return 0;
}

/* The options of 'digest -o' that say how the file will be signed. */
static int request_opt(struct misc_args *a, int id, const char *value)
{
	if (id == O_CERT)
		a->cert = value;
	else if (id == O_DESC)
		a->sign.description = value;
	else if (id == O_DESC_URL)
		a->sign.description_url = value;
	else if (id == O_PH)
		a->sign.page_hashes = 1;
	else if (id == O_MSI_DSE)
		a->sign.msi_dse = 1;
	else if (id == O_ENC)
		return cli_parse_text_encoding(value, &a->sign.script_encoding);
	return 0;
}

static int misc_opt(int id, const char *value, void *userdata)
{
	struct misc_args *a = userdata;

	if (id == O_OUTPUT)
		a->output = value;
	else if (id == O_PEM)
		a->pem = 1;
	else if (id == O_INDEX)
		return parse_index(value, &a->index);
	else if (id >= O_CERT)
		return request_opt(a, id, value);
	else if (id == O_DIGEST && hs_digest_from_name(&a->digest, value) < 0) {
		cli_error("unknown digest '%s' (sha1, sha256, sha384, sha512)", value);
		return EXIT_INVALID_ARGS;
	}
	return 0;
}

/* Parses the command line of a one-file command; *file is set on success. */
static int parse_single(const struct cli_cmd *cmd, int argc, char **argv, struct misc_args *a,
                        const char **file)
{
	char **ops = calloc((size_t)argc, sizeof(*ops));
	int n = 0, r;

	if (ops == NULL)
		return EXIT_ALL_FAILED;
	r = cli_parse(cmd, argc, argv, misc_opt, a, ops, &n);
	if (r == 0 && n != 1) {
		cli_error("%s: give exactly one file (see 'hsmsign %s --help')", cmd->name,
		          cmd->name);
		r = EXIT_INVALID_ARGS;
	}
	*file = n > 0 ? ops[0] : NULL;
	free(ops);
	return r < 0 ? -1 : r;
}

/* Exit code for a failed library call on one file, after printing it. */
static int fail(struct hs_ctx *ctx, const char *path)
{
	cli_error_ctx(ctx, path);
	return hs_ctx_error(ctx) == HS_ERR_NOTFOUND && strstr(hs_ctx_message(ctx), "not signed")
	               ? EXIT_NO_SIGNATURE
	               : EXIT_ALL_FAILED;
}

int cli_cmd_remove(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct misc_args a = {0};
	struct hs_ctx *ctx = NULL;
	const char *file;
	int r = parse_single(cmd, argc, argv, &a, &file);

	if (r != 0)
		return r < 0 ? EXIT_OK : r;
	if (hs_ctx_new(&ctx) < 0)
		return EXIT_ALL_FAILED;
	r = hs_remove_signature_index(ctx, file, a.index, a.output) < 0 ? fail(ctx, file) : EXIT_OK;
	hs_ctx_free(ctx);
	return r;
}

/* Writes DER or PEM to path, or stdout when path is NULL. */
static int write_signature(const uint8_t *der, size_t len, int pem, const char *path)
{
	BIO *bio = path ? BIO_new_file(path, "wb") : BIO_new_fp(stdout, BIO_NOCLOSE);
	const unsigned char *p = der;
	PKCS7 *p7 = NULL;
	int ok = 0;

	if (bio == NULL) {
		cli_error("%s: cannot create file", path);
		return EXIT_ALL_FAILED;
	}
	if (!pem) {
		ok = BIO_write(bio, der, (int)len) == (int)len;
	} else if ((p7 = d2i_PKCS7(NULL, &p, (long)len)) != NULL) {
		ok = PEM_write_bio_PKCS7(bio, p7);
	}
	ok = ok && BIO_flush(bio) == 1;
	PKCS7_free(p7);
	BIO_free(bio);
	if (!ok) {
		cli_error("%s: cannot write the signature", path ? path : "stdout");
		return EXIT_ALL_FAILED;
	}
	return EXIT_OK;
}

int cli_cmd_extract(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct misc_args a = {0};
	struct hs_ctx *ctx = NULL;
	uint8_t *der = NULL;
	size_t len = 0;
	const char *file;
	int r = parse_single(cmd, argc, argv, &a, &file);

	if (r != 0)
		return r < 0 ? EXIT_OK : r;
	if (hs_ctx_new(&ctx) < 0)
		return EXIT_ALL_FAILED;
	if (hs_extract_signature_index(ctx, file, a.index, &der, &len) < 0)
		r = fail(ctx, file);
	else
		r = write_signature(der, len, a.pem, a.output);
	hs_free(der);
	hs_ctx_free(ctx);
	return r;
}

int cli_cmd_digest(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct misc_args a = {.digest = HS_DIGEST_SHA256};
	struct hs_ctx *ctx = NULL;
	uint8_t *digest = NULL;
	size_t len = 0;
	const char *file;
	int r = parse_single(cmd, argc, argv, &a, &file);

	if (r != 0)
		return r < 0 ? EXIT_OK : r;
	if (a.output != NULL || a.cert != NULL)
		return cli_digest_request(file, a.output, a.cert, a.digest, &a.sign);
	if (hs_ctx_new(&ctx) < 0)
		return EXIT_ALL_FAILED;
	if (hs_digest_file(ctx, file, a.digest, &digest, &len) < 0) {
		r = fail(ctx, file);
	} else {
		for (size_t i = 0; i < len; i++)
			printf("%02x", digest[i]);
		printf("  %s\n", file);
	}
	hs_free(digest);
	hs_ctx_free(ctx);
	return r;
}
