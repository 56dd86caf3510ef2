/*
 * test_crc32c.c - CRC-32C (lib/core/crc32c.c) against published vectors:
 * the "123456789" check value of the CRC catalogue (0xE3069283) and the
 * iSCSI test patterns of RFC 3720 appendix B.4.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/crc32c.h"

static void test_check_value(void **state)
{
	(void)state;
	assert_int_equal(hs_crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(hs_crc32c(0, "", 0), 0);
}

static void test_rfc3720_patterns(void **state)
{
	uint8_t zeros[32] = {0}, ones[32], inc[32], dec[32];

	(void)state;
	memset(ones, 0xFF, sizeof(ones));
	for (int i = 0; i < 32; i++) {
		inc[i] = (uint8_t)i;
		dec[i] = (uint8_t)(31 - i);
	}
	assert_int_equal(hs_crc32c(0, zeros, 32), 0x8A9136AAu);
	assert_int_equal(hs_crc32c(0, ones, 32), 0x62A8AB43u);
	assert_int_equal(hs_crc32c(0, inc, 32), 0x46DD794Eu);
	assert_int_equal(hs_crc32c(0, dec, 32), 0x113FDB5Cu);
}

/* Chained calls give the checksum of the concatenation. */
static void test_chaining(void **state)
{
	(void)state;
	assert_int_equal(hs_crc32c(hs_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_check_value),
	        cmocka_unit_test(test_rfc3720_patterns),
	        cmocka_unit_test(test_chaining),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
