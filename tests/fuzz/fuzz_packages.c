/*
 * fuzz_packages.c - the ZIP-based formats (APPX/MSIX, NuGet) on arbitrary
 * bytes. They are detected by file name, which a memfd path lacks, so the
 * harness opens each format directly: central directory and end records,
 * block map and manifest parsing, the digest (with a copy, then embed, as
 * signing does), removal, extraction, the publisher check and, for NuGet,
 * CMS verification of the extracted signature.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "authenticode/cms.h"
#include "core/file.h"
#include "formats/format.h"
#include "fuzz_util.h"

static X509 *fuzz_signer(void)
{
	static X509 *cert;
	const char *path = getenv("HS_FUZZ_CA");
	FILE *f;

	if (cert == NULL && path != NULL && (f = fopen(path, "r")) != NULL) {
		cert = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
	}
	return cert;
}

/* digest + embed into a discarded output, then remove into another. */
static void exercise_write(struct hs_ctx *ctx, const struct hs_format *fmt, void *state)
{
	static const uint8_t dummy[] = {0x30, 0x03, 0x02, 0x01, 0x01};
	struct hs_digest_params params = {.md = EVP_sha256()};
	struct hs_indirect ind = {0};
	struct hs_out out = {.fd = -1};

	if (hs_out_open(ctx, &out, "/tmp/hsmsign-fuzz-pkg", 0600) == 0 &&
	    fmt->digest(ctx, state, &params, &ind, &out) == 0)
		fmt->embed(ctx, state, dummy, sizeof(dummy), &out);
	hs_out_abort(&out);
	hs_indirect_free(&ind);
	hs_ctx_clear_error(ctx);
	if (fmt->is_signed(state) && hs_out_open(ctx, &out, "/tmp/hsmsign-fuzz-pkg", 0600) == 0)
		fmt->remove(ctx, state, &out);
	hs_out_abort(&out);
	hs_ctx_clear_error(ctx);
}

static void exercise(struct hs_ctx *ctx, const struct hs_format *fmt, const struct hs_file *in)
{
	struct hs_signature_info info = {0};
	struct hs_buf der = {0};
	X509_STORE *store = X509_STORE_new();
	void *state = NULL;

	if (fmt->open(ctx, in, &state) < 0)
		goto out;
	exercise_write(ctx, fmt, state);
	if (fmt->check_signer != NULL && fuzz_signer() != NULL)
		fmt->check_signer(ctx, state, fuzz_signer());
	hs_ctx_clear_error(ctx);
	if (fmt->is_signed(state) && fmt->extract(ctx, state, &der) == 0 && fmt->plain_cms &&
	    store != NULL)
		hs_cms_verify(ctx, store, store, fmt, state, der.data, der.len, &info);
	free(info.subject);
	free(info.issuer);
	free(info.reason);
	free(info.timestamp_time);
	free(info.tsa_subject);
	free(info.tsa_digest);
out:
	hs_ctx_clear_error(ctx);
	hs_buf_free(&der);
	X509_STORE_free(store);
	if (state != NULL)
		fmt->close(state);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hs_ctx ctx = {0};
	struct hs_file in;
	char path[64];
	int fd = fuzz_memfile(data, size, path, sizeof(path));

	if (fd < 0)
		return 0;
	if (hs_file_open(&ctx, &in, path) == 0) {
		exercise(&ctx, &hs_format_appx, &in);
		exercise(&ctx, &hs_format_nupkg, &in);
		hs_file_close(&in);
	}
	hs_ctx_clear_error(&ctx);
	close(fd);
	return 0;
}
