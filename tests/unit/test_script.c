/*
 * test_script.c - the script format (lib/formats/script.c) on inputs found
 * by fuzzing (tests/fuzz/fuzz_scripts.c). Each test is the regression test
 * of one finding.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "core/file.h"
#include "formats/format.h"

/* Writes data to a new file named like `name` in a temp directory; the
 * path is written to path (caller unlinks it and the directory). */
static void write_temp(char *path, size_t path_len, char *dir, const char *name, const void *data,
                       size_t len)
{
	FILE *f;

	snprintf(dir, 64, "/tmp/hsmsign-test-script-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, path_len, "%s/%s", dir, name);
	assert_non_null(f = fopen(path, "wb"));
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/*
 * fuzz_scripts: a signed .wsf with a byte that is not UTF-8 inside its
 * block. open() falls back to Windows-1252 to find the block; digest()
 * with the default encoding (UTF-8) then failed halfway through decoding
 * and left the block offsets of the Windows-1252 text, so a later
 * extract() read past the shorter UTF-8 text (heap-buffer-overflow).
 */
static void test_failed_decode_forgets_block(void **unused)
{
	static const char wsf[] = "<job>\r\n<script>x</script>\r\n</job>\r\n"
	                          "<signature>\r\n** SIG ** MIIB\xf6\r\n** SIG ** AAAA\r\n"
	                          "</signature>\r\n";
	struct hs_digest_params params = {.md = EVP_sha256()};
	struct hs_indirect ind = {0};
	struct hs_ctx ctx = {0};
	struct hs_buf der = {0};
	struct hs_doc doc;
	char dir[64], path[128];

	(void)unused;
	write_temp(path, sizeof(path), dir, "x.wsf", wsf, sizeof(wsf) - 1);
	assert_int_equal(hs_doc_open(&ctx, &doc, path), 0);
	assert_string_equal(doc.format->name, "script");
	assert_true(doc.format->is_signed(doc.state));

	/* UTF-8 (the .wsf default) fails at the 0xF6 byte ... */
	assert_int_equal(doc.format->digest(&ctx, doc.state, &params, &ind, NULL), HS_ERR_FORMAT);
	hs_ctx_clear_error(&ctx);
	/* ... and the state no longer claims a block it cannot index. */
	assert_false(doc.format->is_signed(doc.state));
	assert_int_equal(doc.format->extract(&ctx, doc.state, &der), HS_ERR_NOTFOUND);
	hs_ctx_clear_error(&ctx);

	/* A later load that succeeds finds the block again. */
	params.text_encoding = HS_TEXT_CP1252;
	assert_int_equal(doc.format->digest(&ctx, doc.state, &params, &ind, NULL), 0);
	assert_true(doc.format->is_signed(doc.state));
	hs_indirect_free(&ind);
	hs_buf_free(&der);
	hs_doc_close(&doc);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_failed_decode_forgets_block),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
