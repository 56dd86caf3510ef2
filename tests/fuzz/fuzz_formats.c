/*
 * fuzz_formats.c - every format parser on arbitrary bytes: detection, open,
 * Authenticode digest (with and without page hashes, and copying to an
 * output as signing does), signature extraction and removal.
 */
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "formats/format.h"
#include "fuzz_util.h"

static void exercise(struct hs_ctx *ctx, struct hs_doc *doc)
{
	static const int page_nids[] = {0, NID_sha1, NID_sha256};
	struct hs_digest_params params = {.md = EVP_sha256()};
	struct hs_buf der = {0};

	for (size_t i = 0; i < sizeof(page_nids) / sizeof(page_nids[0]); i++) {
		struct hs_indirect ind = {0};

		params.page_hash_nid = page_nids[i];
		doc->format->digest(ctx, doc->state, &params, &ind, NULL);
		hs_indirect_free(&ind);
		hs_ctx_clear_error(ctx);
	}
	if (doc->format->is_signed(doc->state))
		doc->format->extract(ctx, doc->state, &der);
	hs_buf_free(&der);
	hs_ctx_clear_error(ctx);
}

/* Digest with a copy into a temp output, then embed a dummy signature, as
 * signing does; the output is always discarded. */
static void exercise_copy(struct hs_ctx *ctx, struct hs_doc *doc)
{
	static const uint8_t dummy[] = {0x30, 0x03, 0x02, 0x01, 0x01};
	struct hs_digest_params params = {.md = EVP_sha256()};
	struct hs_indirect ind = {0};
	struct hs_out out = {.fd = -1};

	if (hs_out_open(ctx, &out, "/tmp/hsmsign-fuzz-out", 0600) == 0 &&
	    doc->format->digest(ctx, doc->state, &params, &ind, &out) == 0)
		doc->format->embed(ctx, doc->state, dummy, sizeof(dummy), &out);
	hs_out_abort(&out);
	hs_indirect_free(&ind);
	hs_ctx_clear_error(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hs_ctx ctx = {0};
	struct hs_doc doc;
	char path[64];
	int fd = fuzz_memfile(data, size, path, sizeof(path));

	if (fd < 0)
		return 0;
	if (hs_doc_open(&ctx, &doc, path) == 0) {
		exercise(&ctx, &doc);
		exercise_copy(&ctx, &doc);
		hs_doc_close(&doc);
	}
	close(fd);
	return 0;
}
