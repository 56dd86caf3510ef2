/* test_pkcs11.c - RFC 7512 URI parsing, matching and writing; the shared
 * DigestInfo and r||s helpers the PKCS#11 provider signs with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keys/p11.h"

/* Fills a space-padded PKCS#11 text field. */
static void pad(CK_UTF8CHAR *field, size_t n, const char *s)
{
	memset(field, ' ', n);
	memcpy(field, s, strlen(s));
}

static void uri_parses_every_attribute(void **state)
{
	struct p11_uri u;

	(void)state;
	assert_int_equal(hs_p11_uri_parse(NULL,
	                                  "pkcs11:token=My%20Token;manufacturer=ACME;serial=0042;"
	                                  "model=PIV;object=sign%3bkey;id=%01%00%ff;type=private;"
	                                  "slot-id=17?module-path=/usr/lib/x.so&other=1",
	                                  &u),
	                 0);
	assert_string_equal(u.attr[P11_TOKEN], "My Token");
	assert_string_equal(u.attr[P11_MANUFACTURER], "ACME");
	assert_string_equal(u.attr[P11_SERIAL], "0042");
	assert_string_equal(u.attr[P11_MODEL], "PIV");
	assert_string_equal(u.attr[P11_OBJECT], "sign;key");
	assert_int_equal(u.id_len, 3);
	assert_memory_equal(u.attr[P11_ID], "\x01\x00\xff", 3);
	assert_string_equal(u.attr[P11_TYPE], "private");
	assert_int_equal(u.slot_id, 17);
	assert_string_equal(u.module_path, "/usr/lib/x.so");
	assert_null(u.pin_value);
	hs_p11_uri_free(&u);
}

static void uri_rejects_bad_input(void **state)
{
	static const struct {
		const char *uri;
		const char *message;
	} cases[] = {
	        {"token=x", "a PKCS#11 key is a URI starting with 'pkcs11:'"},
	        {"pkcs11:token=a;token=b", "PKCS#11 URI: token given twice"},
	        {"pkcs11:colour=red", "PKCS#11 URI: unknown attribute 'colour'"},
	        {"pkcs11:token=%4", "PKCS#11 URI: bad %-escape, %00 or value too long"},
	        {"pkcs11:token=%zz", "PKCS#11 URI: bad %-escape, %00 or value too long"},
	        {"pkcs11:object=a%00b", "PKCS#11 URI: bad %-escape, %00 or value too long"},
	        {"pkcs11:token", "PKCS#11 URI: expected name=value between ';'"},
	        {"pkcs11:=x", "PKCS#11 URI: expected name=value between ';'"},
	        {"pkcs11:slot-id=12a", "PKCS#11 URI: slot-id must be a number"},
	        {"pkcs11:slot-id=-1", "PKCS#11 URI: slot-id must be a number"},
	        {"pkcs11:type=secret", "PKCS#11 URI: type must be private, cert, public, "
	                               "secret-key or data"},
	        {"pkcs11:?pin-value=1&pin-value=2",
	         "PKCS#11 URI: a query attribute is given twice"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct hs_ctx *ctx;
		struct p11_uri u;

		assert_int_equal(hs_ctx_new(&ctx), 0);
		assert_int_equal(hs_p11_uri_parse(ctx, cases[i].uri, &u), HS_ERR_INVALID);
		assert_string_equal(hs_ctx_message(ctx), cases[i].message);
		hs_p11_uri_free(&u);
		hs_ctx_free(ctx);
	}
}

static void uri_too_long_is_refused(void **state)
{
	char *long_uri = malloc(P11_URI_MAX + 16);
	struct p11_uri u;

	(void)state;
	memcpy(long_uri, "pkcs11:object=", 14);
	memset(long_uri + 14, 'a', P11_URI_MAX);
	long_uri[P11_URI_MAX + 14] = '\0';
	assert_int_equal(hs_p11_uri_parse(NULL, long_uri, &u), HS_ERR_INVALID);
	hs_p11_uri_free(&u);
	free(long_uri);
}

static void uri_keeps_pin_value_for_the_policy_check(void **state)
{
	struct p11_uri u;

	(void)state;
	assert_int_equal(hs_p11_uri_parse(NULL, "pkcs11:token=t?pin-value=12%3A34", &u), 0);
	assert_string_equal(u.pin_value, "12:34");
	hs_p11_uri_free(&u);
	assert_null(u.pin_value);
}

static void uri_matches_token_fields(void **state)
{
	static const struct {
		const char *uri;
		bool match;
	} cases[] = {
	        {"pkcs11:", true},
	        {"pkcs11:token=Code%20Signing", true},
	        {"pkcs11:token=Code", false},
	        {"pkcs11:token=Code%20Signing;serial=1234", true},
	        {"pkcs11:token=Code%20Signing;serial=9999", false},
	        {"pkcs11:manufacturer=Yubico;model=YubiKey", true},
	        {"pkcs11:model=Other", false},
	};
	CK_TOKEN_INFO ti;

	(void)state;
	memset(&ti, 0, sizeof(ti));
	pad(ti.label, sizeof(ti.label), "Code Signing");
	pad(ti.manufacturerID, sizeof(ti.manufacturerID), "Yubico");
	pad(ti.model, sizeof(ti.model), "YubiKey");
	pad(ti.serialNumber, sizeof(ti.serialNumber), "1234");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct p11_uri u;

		assert_int_equal(hs_p11_uri_parse(NULL, cases[i].uri, &u), 0);
		assert_int_equal(hs_p11_uri_match_token(&u, &ti), cases[i].match);
		hs_p11_uri_free(&u);
	}
}

static void uri_matches_slot_and_library(void **state)
{
	CK_SLOT_INFO si;
	CK_INFO info;
	struct p11_uri u;

	(void)state;
	memset(&si, 0, sizeof(si));
	memset(&info, 0, sizeof(info));
	pad(si.slotDescription, sizeof(si.slotDescription), "Reader 0");
	pad(si.manufacturerID, sizeof(si.manufacturerID), "ACME");
	pad(info.manufacturerID, sizeof(info.manufacturerID), "OpenSC Project");
	pad(info.libraryDescription, sizeof(info.libraryDescription), "OpenSC smartcard");
	info.libraryVersion.major = 2;
	assert_int_equal(hs_p11_uri_parse(NULL,
	                                  "pkcs11:slot-id=5;slot-description=Reader%200;"
	                                  "library-manufacturer=OpenSC%20Project;library-version=2",
	                                  &u),
	                 0);
	assert_true(hs_p11_uri_match_slot(&u, 5, &si));
	assert_false(hs_p11_uri_match_slot(&u, 6, &si));
	assert_true(hs_p11_uri_match_info(&u, &info));
	info.libraryVersion.minor = 1;
	assert_false(hs_p11_uri_match_info(&u, &info));
	hs_p11_uri_free(&u);
}

static void uri_written_by_list_parses_back(void **state)
{
	static const uint8_t id[] = {0x00, 0x2f, 0xab};
	struct hs_buf b = {0};
	struct p11_uri u;

	(void)state;
	assert_int_equal(hs_p11_uri_append(&b, "token", (const uint8_t *)"a;b c/d%", 8), 0);
	assert_int_equal(hs_p11_uri_append(&b, "id", id, sizeof(id)), 0);
	assert_int_equal(hs_p11_uri_append(&b, "object", (const uint8_t *)"key-1", 5), 0);
	assert_int_equal(hs_buf_append(&b, "", 1), 0);
	assert_string_equal((const char *)b.data, "pkcs11:token=a%3Bb%20c%2Fd%25;id=%00%2F%AB;"
	                                          "object=key-1");
	assert_int_equal(hs_p11_uri_parse(NULL, (const char *)b.data, &u), 0);
	assert_string_equal(u.attr[P11_TOKEN], "a;b c/d%");
	assert_int_equal(u.id_len, sizeof(id));
	assert_memory_equal(u.attr[P11_ID], id, sizeof(id));
	hs_p11_uri_free(&u);
	hs_buf_free(&b);
}

static void text_fields_are_trimmed(void **state)
{
	CK_UTF8CHAR field[8];
	char out[9];

	(void)state;
	pad(field, sizeof(field), "ab c");
	hs_p11_text(out, field, sizeof(field));
	assert_string_equal(out, "ab c");
	memset(field, ' ', sizeof(field));
	hs_p11_text(out, field, sizeof(field));
	assert_string_equal(out, "");
}

static void digest_info_and_p1363_helpers(void **state)
{
	/* DigestInfo for SHA-256 is the RFC 8017 9.2 prefix + digest. */
	static const uint8_t prefix[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
	                                 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
	/* r = 1, s = 0x80 as 2 x 4 bytes: DER INTEGERs 02 01 01, 02 02 00 80. */
	static const uint8_t raw[] = {0, 0, 0, 1, 0, 0, 0, 0x80};
	static const uint8_t der[] = {0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0x80};
	uint8_t digest[32];
	struct hs_buf b = {0};

	(void)state;
	memset(digest, 0xab, sizeof(digest));
	assert_int_equal(hs_key_digest_info(NULL, EVP_sha256(), digest, sizeof(digest), &b), 0);
	assert_int_equal(b.len, sizeof(prefix) + sizeof(digest));
	assert_memory_equal(b.data, prefix, sizeof(prefix));
	assert_memory_equal(b.data + sizeof(prefix), digest, sizeof(digest));
	hs_buf_free(&b);
	assert_int_equal(hs_key_ecdsa_p1363_to_der(NULL, raw, sizeof(raw), &b), 0);
	assert_int_equal(b.len, sizeof(der));
	assert_memory_equal(b.data, der, sizeof(der));
	hs_buf_free(&b);
	assert_int_equal(hs_key_ecdsa_p1363_to_der(NULL, raw, 7, &b), HS_ERR_CRYPTO);
	assert_int_equal(hs_key_ecdsa_p1363_to_der(NULL, raw, 0, &b), HS_ERR_CRYPTO);
	hs_buf_free(&b);
}

static void rv_names_and_errors(void **state)
{
	struct hs_ctx *ctx;

	(void)state;
	assert_string_equal(hs_p11_rv_name(CKR_PIN_LOCKED), "CKR_PIN_LOCKED");
	assert_string_equal(hs_p11_rv_name(0x12345), "CKR_0x12345");
	assert_int_equal(hs_ctx_new(&ctx), 0);
	assert_int_equal(hs_p11_error(ctx, CKR_DEVICE_REMOVED, "C_Sign"), HS_ERR_IO);
	assert_string_equal(hs_ctx_message(ctx), "PKCS#11 C_Sign: the token was removed or the "
	                                         "connection to the HSM was lost "
	                                         "(CKR_DEVICE_REMOVED)");
	hs_ctx_clear_error(ctx);
	assert_int_equal(hs_p11_error(ctx, CKR_MECHANISM_INVALID, "C_SignInit"),
	                 HS_ERR_UNSUPPORTED);
	hs_ctx_free(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(uri_parses_every_attribute),
	        cmocka_unit_test(uri_rejects_bad_input),
	        cmocka_unit_test(uri_too_long_is_refused),
	        cmocka_unit_test(uri_keeps_pin_value_for_the_policy_check),
	        cmocka_unit_test(uri_matches_token_fields),
	        cmocka_unit_test(uri_matches_slot_and_library),
	        cmocka_unit_test(uri_written_by_list_parses_back),
	        cmocka_unit_test(text_fields_are_trimmed),
	        cmocka_unit_test(digest_info_and_p1363_helpers),
	        cmocka_unit_test(rv_names_and_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
