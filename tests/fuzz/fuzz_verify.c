/*
 * fuzz_verify.c - the whole verification path (format parsing, PKCS#7 and
 * SpcIndirectDataContent parsing, nested signatures, chain building) on
 * arbitrary files. Seeds are signed fixtures, so mutations reach deep into
 * the signature.
 */
#include <stdlib.h>

#include "core/core.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hs_verify_opts opts = {.ca_file = getenv("HS_FUZZ_CA")};
	struct hs_verify_result *res = NULL;
	struct hs_ctx ctx = {0};
	char path[64];
	int fd = fuzz_memfile(data, size, path, sizeof(path));

	if (fd < 0)
		return 0;
	if (hs_verify_file(&ctx, path, &opts, &res) == 0)
		hs_verify_result_free(res);
	close(fd);
	return 0;
}
