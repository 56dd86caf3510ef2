/* test_asn1.c - Authenticode structures against known encodings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "authenticode/asn1.h"

/* SpcPeImageData as signtool writes it (authenticode.md 1.5). */
static const uint8_t signtool_pe_data[] = {
        0x30, 0x25, 0x03, 0x01, 0x00, 0xa0, 0x20, 0xa2, 0x1e, 0x80, 0x1c, 0x00, 0x3c,
        0x00, 0x3c, 0x00, 0x3c, 0x00, 0x4f, 0x00, 0x62, 0x00, 0x73, 0x00, 0x6f, 0x00,
        0x6c, 0x00, 0x65, 0x00, 0x74, 0x00, 0x65, 0x00, 0x3e, 0x00, 0x3e, 0x00, 0x3e};
/* OID 1.3.6.1.4.1.311.2.1.15 */
static const uint8_t pe_data_oid[] = {0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04,
                                      0x01, 0x82, 0x37, 0x02, 0x01, 0x0f};

static void pe_data_matches_signtool(void **state)
{
	struct hs_buf b = {0};

	(void)state;
	assert_int_equal(hs_spc_pe_data(NULL, &b, 0, NULL, 0), 0);
	assert_int_equal(b.len, 2 + sizeof(pe_data_oid) + sizeof(signtool_pe_data));
	assert_int_equal(b.data[0], 0x30);
	assert_int_equal(b.data[1], b.len - 2);
	assert_memory_equal(b.data + 2, pe_data_oid, sizeof(pe_data_oid));
	assert_memory_equal(b.data + 2 + sizeof(pe_data_oid), signtool_pe_data,
	                    sizeof(signtool_pe_data));
	hs_buf_free(&b);
}

/* Builds SpcIndirectDataContent with a page hash table and parses it back. */
static void indirect_roundtrip(void **state)
{
	static const struct {
		int md_nid;
		int page_nid;
	} cases[] = {{NID_sha256, 0},
	             {NID_sha1, NID_sha1},
	             {NID_sha256, NID_sha256},
	             {NID_sha512, NID_sha256}};
	uint8_t table[3 * 36], digest[64];
	struct hs_spc_indirect spc;

	(void)state;
	for (size_t i = 0; i < sizeof(table); i++)
		table[i] = (uint8_t)(i * 7);
	for (size_t i = 0; i < sizeof(digest); i++)
		digest[i] = (uint8_t)(0xa0 + i);
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const EVP_MD *md = EVP_get_digestbynid(cases[c].md_nid);
		size_t dlen = (size_t)EVP_MD_get_size(md);
		struct hs_buf data = {0}, idc = {0};

		assert_int_equal(hs_spc_pe_data(NULL, &data, cases[c].page_nid,
		                                cases[c].page_nid ? table : NULL, sizeof(table)),
		                 0);
		assert_int_equal(
		        hs_spc_indirect_build(NULL, &idc, data.data, data.len, md, digest, dlen),
		        0);
		assert_int_equal(hs_spc_indirect_parse(NULL, &spc, idc.data, idc.len), 0);
		assert_int_equal(spc.digest_nid, cases[c].md_nid);
		assert_int_equal(spc.digest_len, dlen);
		assert_memory_equal(spc.digest, digest, dlen);
		assert_string_equal(spc.data_type, HS_OID_SPC_PE_IMAGE_DATA);
		assert_int_equal(spc.page_hash_nid, cases[c].page_nid);
		if (cases[c].page_nid) {
			assert_int_equal(spc.page_hashes.len, sizeof(table));
			assert_memory_equal(spc.page_hashes.data, table, sizeof(table));
		} else {
			assert_int_equal(spc.page_hashes.len, 0);
		}
		hs_spc_indirect_free(&spc);
		/* Truncation is rejected. */
		assert_int_equal(hs_spc_indirect_parse(NULL, &spc, idc.data, idc.len - 1),
		                 HS_ERR_FORMAT);
		hs_buf_free(&data);
		hs_buf_free(&idc);
	}
}

static void opus_info_encodings(void **state)
{
	static const uint8_t empty[] = {0x30, 0x00};
	static const uint8_t name_a[] = {0x30, 0x06, 0xa0, 0x04, 0x80, 0x02, 0x00, 0x41};
	static const uint8_t url_x[] = {0x30, 0x05, 0xa1, 0x03, 0x80, 0x01, 0x78};
	struct hs_buf b = {0};

	(void)state;
	assert_int_equal(hs_spc_opus_info_build(NULL, &b, NULL, NULL), 0);
	assert_int_equal(b.len, sizeof(empty));
	assert_memory_equal(b.data, empty, sizeof(empty));
	hs_buf_free(&b);
	assert_int_equal(hs_spc_opus_info_build(NULL, &b, "A", NULL), 0);
	assert_int_equal(b.len, sizeof(name_a));
	assert_memory_equal(b.data, name_a, sizeof(name_a));
	hs_buf_free(&b);
	assert_int_equal(hs_spc_opus_info_build(NULL, &b, NULL, "x"), 0);
	assert_int_equal(b.len, sizeof(url_x));
	assert_memory_equal(b.data, url_x, sizeof(url_x));
	hs_buf_free(&b);
}

static void der_contents_vectors(void **state)
{
	static const uint8_t short_form[] = {0x30, 0x03, 0x01, 0x02, 0x03};
	static const uint8_t long_form[] = {0x30, 0x81, 0x02, 0xaa, 0xbb};
	static const uint8_t truncated[] = {0x30, 0x05, 0x01};
	static const uint8_t trailing[] = {0x30, 0x01, 0x01, 0x00};
	static const uint8_t primitive[] = {0x04, 0x01, 0x01};
	const uint8_t *c;
	size_t n;

	(void)state;
	assert_int_equal(hs_der_contents(NULL, short_form, sizeof(short_form), &c, &n), 0);
	assert_ptr_equal(c, short_form + 2);
	assert_int_equal(n, 3);
	assert_int_equal(hs_der_contents(NULL, long_form, sizeof(long_form), &c, &n), 0);
	assert_ptr_equal(c, long_form + 3);
	assert_int_equal(n, 2);
	assert_int_equal(hs_der_contents(NULL, truncated, sizeof(truncated), &c, &n),
	                 HS_ERR_FORMAT);
	assert_int_equal(hs_der_contents(NULL, trailing, sizeof(trailing), &c, &n), HS_ERR_FORMAT);
	assert_int_equal(hs_der_contents(NULL, primitive, sizeof(primitive), &c, &n),
	                 HS_ERR_FORMAT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(pe_data_matches_signtool),
	        cmocka_unit_test(indirect_roundtrip),
	        cmocka_unit_test(opus_info_encodings),
	        cmocka_unit_test(der_contents_vectors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
