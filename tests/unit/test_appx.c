/*
 * test_appx.c - the APPX publisher check (hs_appx_same_publisher): manifest
 * Publisher strings against certificate subjects, as Windows compares them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "formats/appx.h"

/* A subject in DER order (least specific first), "type=value" pairs. */
static X509_NAME *name_of(const char *const *avas)
{
	X509_NAME *n = X509_NAME_new();

	assert_non_null(n);
	for (size_t i = 0; avas[i] != NULL; i += 2)
		assert_int_equal(X509_NAME_add_entry_by_txt(n, avas[i], MBSTRING_UTF8,
		                                            (const unsigned char *)avas[i + 1], -1,
		                                            -1, 0),
		                 1);
	return n;
}

static const char *const contoso[] = {
        "C", "US", "ST", "Washington", "O", "Contoso, Ltd", "CN", "Contoso Code Signing", NULL};
static const char *const with_email[] = {"C",       "US", "emailAddress", "dev@contoso.com", "CN",
                                         "Contoso", NULL};
static const char *const with_oid[] = {"C",       "US", "1.3.6.1.4.1.311.60.2.1.3", "US", "CN",
                                       "Contoso", NULL};

static const struct {
	const char *publisher;
	const char *const *subject;
	bool same;
} cases[] = {
        {"CN=Contoso Code Signing, O=\"Contoso, Ltd\", S=Washington, C=US", contoso, true},
        {"CN=Contoso Code Signing, O=\"Contoso, Ltd\", ST=Washington, C=US", contoso, true},
        {"cn=contoso code signing,o=Contoso\\, Ltd,s=WASHINGTON,c=us", contoso, true},
        {"CN=Contoso  Code   Signing, O=\"Contoso, Ltd\", S=Washington, C=US", contoso, true},
        /* DER order instead of Windows' order */
        {"C=US, S=Washington, O=\"Contoso, Ltd\", CN=Contoso Code Signing", contoso, false},
        /* an attribute missing, extra, or different */
        {"CN=Contoso Code Signing, O=\"Contoso, Ltd\", C=US", contoso, false},
        {"CN=Contoso Code Signing, OU=Dev, O=\"Contoso, Ltd\", S=Washington, C=US", contoso, false},
        {"CN=Contoso Code Signing, O=Contoso, S=Washington, C=US", contoso, false},
        {"CN=Contoso Code Signing, O=\"Contoso, Ltd\", L=Washington, C=US", contoso, false},
        {"CN=Contoso, E=dev@contoso.com, C=US", with_email, true},
        {"CN=Contoso, OID.1.3.6.1.4.1.311.60.2.1.3=US, C=US", with_oid, true},
        {"CN=Contoso, C=US", with_oid, false},
        {"CN=Contoso, FOO=US, C=US", with_oid, false},
        {"", contoso, false},
        {"not a name", contoso, false},
};

static void test_publisher(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		X509_NAME *n = name_of(cases[i].subject);

		if (hs_appx_same_publisher(cases[i].publisher, n) != cases[i].same)
			fail_msg("case %zu \"%s\": want %s", i, cases[i].publisher,
			         cases[i].same ? "same" : "different");
		X509_NAME_free(n);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_publisher),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
