/*
 * fuzz_lifecycle.c - the parsers of signature lifecycle inputs: signing
 * requests (two-step signing, attach) and nested-signature editing of an
 * untrusted PKCS#7 (add, remove, extract by index). The first byte picks.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "authenticode/nest.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A request as a file: parsed, then the engine stops at the missing input. */
static void fuzz_request(struct hs_ctx *ctx, const uint8_t *data, size_t size)
{
	struct hs_sign_opts opts = {.digest = HS_DIGEST_SHA256};
	static const uint8_t sig[64] = {1};
	char path[64];
	int fd = fuzz_memfile(data, size, path, sizeof(path));

	if (fd < 0)
		return;
	(void)hs_attach_signature(ctx, "/nonexistent/hsmsign-fuzz.exe", path, sig, sizeof(sig),
	                          &opts);
	close(fd);
}

static void fuzz_nest(struct hs_ctx *ctx, unsigned index, const uint8_t *data, size_t size)
{
	struct hs_buf out = {0}, extra = {0};
	const EVP_MD *md = NULL;

	(void)hs_nest_primary_md(ctx, data, size, &md);
	(void)hs_nest_get(ctx, data, size, index, &out);
	hs_buf_free(&out);
	(void)hs_nest_remove(ctx, data, size, index, &out);
	hs_buf_free(&out);
	if (hs_buf_append(&extra, data, size < 64 ? size : 64) == 0)
		(void)hs_nest_add(ctx, data, size, &extra, 1, &out);
	hs_buf_free(&out);
	hs_buf_free(&extra);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hs_ctx *ctx = NULL;

	if (size < 1 || hs_ctx_new(&ctx) < 0)
		return 0;
	if (data[0] & 1)
		fuzz_nest(ctx, data[0] >> 1 & 7, data + 1, size - 1);
	else
		fuzz_request(ctx, data + 1, size - 1);
	hs_ctx_free(ctx);
	return 0;
}
