/*
 * fuzz_scripts.c - the script formats (PowerShell .ps1/.psm1/.psd1,
 * .ps1xml/.psc1/.cdxml, WSH .js/.vbs/.wsf) on arbitrary bytes. Scripts are
 * detected by file name, which a memfd path lacks, so the first input byte
 * picks a name (a symlink with that extension to the memfd) and the second
 * the text encoding assumed for a file without a byte order mark; the rest
 * is the file. Each input goes through detection, the digest (with a copy,
 * then embed, as signing does), extraction, removal and verification.
 *
 * Seeds: scripts/fuzz prefixes each fixture in tests/fixtures/scripts with
 * the index of its extension in script_names[] and a zero encoding byte.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
#include "formats/format.h"
#include "fuzz_util.h"

/* Order matters: the seed generator in scripts/fuzz uses these indexes.
 * ".mof" and ".bat" are not signable scripts (refused by name). */
static const char *const script_names[] = {
        "x.ps1", "x.psm1", "x.psd1", "x.ps1xml", "x.psc1", "x.cdxml",
        "x.js",  "x.vbs",  "x.wsf",  "x.mof",    "x.bat",
};
#define N_SCRIPT_NAMES (sizeof(script_names) / sizeof(script_names[0]))

static char fuzz_dir_path[PATH_MAX];

static void fuzz_dir_remove(void)
{
	rmdir(fuzz_dir_path);
}

/* A private directory for the symlinks and discarded outputs, removed at exit. */
static const char *fuzz_dir(void)
{
	if (fuzz_dir_path[0] == '\0') {
		snprintf(fuzz_dir_path, sizeof(fuzz_dir_path), "/tmp/hsmsign-fuzz-scripts-XXXXXX");
		if (mkdtemp(fuzz_dir_path) == NULL)
			fuzz_dir_path[0] = '\0';
		else
			atexit(fuzz_dir_remove);
	}
	return fuzz_dir_path[0] ? fuzz_dir_path : NULL;
}

/* digest + embed into a discarded output, then remove into another. */
static void exercise_write(struct hs_ctx *ctx, struct hs_doc *doc, int encoding,
                           const char *out_path)
{
	static const uint8_t dummy[] = {0x30, 0x03, 0x02, 0x01, 0x01};
	struct hs_digest_params params = {.md = EVP_sha256(), .text_encoding = encoding};
	struct hs_indirect ind = {0};
	struct hs_out out = {.fd = -1};

	if (hs_out_open(ctx, &out, out_path, 0600) == 0 &&
	    doc->format->digest(ctx, doc->state, &params, &ind, &out) == 0)
		doc->format->embed(ctx, doc->state, dummy, sizeof(dummy), &out);
	hs_out_abort(&out);
	hs_indirect_free(&ind);
	hs_ctx_clear_error(ctx);
	if (doc->format->is_signed(doc->state) && hs_out_open(ctx, &out, out_path, 0600) == 0)
		doc->format->remove(ctx, doc->state, &out);
	hs_out_abort(&out);
	hs_ctx_clear_error(ctx);
}

static void exercise(struct hs_ctx *ctx, const char *path, int encoding, const char *out_path)
{
	struct hs_verify_opts vopts = {.ca_file = getenv("HS_FUZZ_CA")};
	struct hs_verify_result *res = NULL;
	struct hs_buf der = {0};
	struct hs_doc doc;

	if (hs_doc_open(ctx, &doc, path) == 0) {
		exercise_write(ctx, &doc, encoding, out_path);
		if (doc.format->is_signed(doc.state))
			doc.format->extract(ctx, doc.state, &der);
		hs_buf_free(&der);
		hs_doc_close(&doc);
	}
	hs_ctx_clear_error(ctx);
	if (hs_verify_file(ctx, path, &vopts, &res) == 0)
		hs_verify_result_free(res);
	hs_ctx_clear_error(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *dir = fuzz_dir();
	struct hs_ctx ctx = {0};
	char mem_path[64], link_path[PATH_MAX], out_path[PATH_MAX];
	const char *name;
	int fd, encoding;

	if (dir == NULL || size < 2)
		return 0;
	name = script_names[data[0] % N_SCRIPT_NAMES];
	encoding = data[1] % (HS_TEXT_CP1252 + 1);
	if ((fd = fuzz_memfile(data + 2, size - 2, mem_path, sizeof(mem_path))) < 0)
		return 0;
	snprintf(link_path, sizeof(link_path), "%s/%s", dir, name);
	snprintf(out_path, sizeof(out_path), "%s/out-%s", dir, name);
	unlink(link_path);
	if (symlink(mem_path, link_path) == 0) {
		exercise(&ctx, link_path, encoding, out_path);
		unlink(link_path);
	}
	close(fd);
	return 0;
}
