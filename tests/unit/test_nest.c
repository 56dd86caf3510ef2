/*
 * test_nest.c - nested signatures at the DER level (lib/authenticode/nest.c):
 * adding keeps one attribute with every value, get and remove number them
 * from 1 in file order, the attribute disappears with its last value, and
 * bad indexes and inputs are errors that leave nothing behind.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <openssl/ec.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>

#include "authenticode/asn1.h"
#include "authenticode/nest.h"

/* A SignedData with one SignerInfo over `content`, self-signed EC key. */
static void make_p7(const char *content, struct hs_buf *out)
{
	EVP_PKEY *pkey = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	BIO *in = BIO_new_mem_buf(content, (int)strlen(content));
	PKCS7 *p7;
	unsigned char *der = NULL;
	int len;

	assert_non_null(pkey);
	assert_non_null(x);
	assert_int_equal(X509_set_version(x, 2), 1);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	                           (const unsigned char *)"nest test", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, pkey);
	assert_true(X509_sign(x, pkey, EVP_sha256()) > 0);
	p7 = PKCS7_sign(x, pkey, NULL, in, PKCS7_BINARY | PKCS7_NOSMIMECAP);
	assert_non_null(p7);
	len = i2d_PKCS7(p7, &der);
	assert_true(len > 0);
	assert_int_equal(hs_buf_append(out, der, (size_t)len), 0);
	OPENSSL_free(der);
	PKCS7_free(p7);
	BIO_free(in);
	X509_free(x);
	EVP_PKEY_free(pkey);
}

/* Number of unsigned attributes of the primary SignerInfo in der. */
static int unsigned_attr_count(const struct hs_buf *der)
{
	const unsigned char *p = der->data;
	PKCS7 *p7 = d2i_PKCS7(NULL, &p, (long)der->len);
	PKCS7_SIGNER_INFO *si;
	int n;

	assert_non_null(p7);
	si = sk_PKCS7_SIGNER_INFO_value(p7->d.sign->signer_info, 0);
	n = si->unauth_attr == NULL ? -1 : X509at_get_attr_count(si->unauth_attr);
	PKCS7_free(p7);
	return n;
}

static void assert_nested(struct hs_ctx *ctx, const struct hs_buf *der, unsigned index,
                          const struct hs_buf *want)
{
	struct hs_buf got = {0};

	assert_int_equal(hs_nest_get(ctx, der->data, der->len, index, &got), 0);
	assert_int_equal(got.len, want->len);
	assert_memory_equal(got.data, want->data, want->len);
	hs_buf_free(&got);
}

static void test_add_get_remove(void **state)
{
	struct hs_ctx *ctx = NULL;
	struct hs_buf primary = {0}, nested[2] = {{0}}, two = {0}, one = {0}, none = {0};
	struct hs_buf got = {0};
	const EVP_MD *md = NULL;
	const struct hs_buf *first, *second;

	(void)state;
	assert_int_equal(hs_ctx_new(&ctx), 0);
	make_p7("primary", &primary);
	make_p7("nested one", &nested[0]);
	make_p7("nested two", &nested[1]);
	assert_int_equal(hs_nest_primary_md(ctx, primary.data, primary.len, &md), 0);
	assert_ptr_equal(md, EVP_sha256());

	assert_int_equal(hs_nest_add(ctx, primary.data, primary.len, nested, 2, &two), 0);
	assert_int_equal(unsigned_attr_count(&two), 1); /* one attribute, two values */
	/* A DER SET is sorted: file order is the order of the encodings. */
	first = memcmp(nested[0].data, nested[1].data, nested[0].len) < 0 ? &nested[0] : &nested[1];
	second = first == &nested[0] ? &nested[1] : &nested[0];
	assert_nested(ctx, &two, 1, first);
	assert_nested(ctx, &two, 2, second);

	assert_int_equal(hs_nest_get(ctx, two.data, two.len, 3, &got), HS_ERR_NOTFOUND);
	assert_non_null(strstr(hs_ctx_message(ctx), "no signature with index 3 (2 nested)"));
	hs_ctx_clear_error(ctx);
	assert_int_equal(hs_nest_get(ctx, two.data, two.len, 0, &got), HS_ERR_NOTFOUND);
	hs_ctx_clear_error(ctx);
	assert_int_equal(got.len, 0);

	assert_int_equal(hs_nest_remove(ctx, two.data, two.len, 1, &one), 0);
	assert_nested(ctx, &one, 1, second);
	assert_int_equal(hs_nest_remove(ctx, one.data, one.len, 1, &none), 0);
	/* The last value gone: no empty attribute, no empty SET either. */
	assert_int_equal(unsigned_attr_count(&none), -1);
	assert_int_equal(none.len, primary.len);
	assert_memory_equal(none.data, primary.data, primary.len);

	for (int i = 0; i < 2; i++)
		hs_buf_free(&nested[i]);
	hs_buf_free(&primary);
	hs_buf_free(&two);
	hs_buf_free(&one);
	hs_buf_free(&none);
	hs_ctx_free(ctx);
}

static void test_limits_and_garbage(void **state)
{
	static const uint8_t garbage[] = {0x30, 0x03, 0x02, 0x01, 0x01};
	struct hs_ctx *ctx = NULL;
	struct hs_buf primary = {0}, many[HS_NEST_MAX + 1] = {{0}}, full = {0}, out = {0};
	const EVP_MD *md = NULL;

	(void)state;
	assert_int_equal(hs_ctx_new(&ctx), 0);
	make_p7("primary", &primary);
	for (int i = 0; i <= HS_NEST_MAX; i++)
		make_p7("nested", &many[i]);
	assert_int_equal(hs_nest_add(ctx, primary.data, primary.len, many, HS_NEST_MAX + 1, &out),
	                 HS_ERR_UNSUPPORTED);
	assert_int_equal(out.len, 0);
	hs_ctx_clear_error(ctx);
	assert_int_equal(hs_nest_add(ctx, primary.data, primary.len, many, HS_NEST_MAX, &full), 0);
	assert_int_equal(hs_nest_add(ctx, full.data, full.len, many, 1, &out), HS_ERR_UNSUPPORTED);
	hs_ctx_clear_error(ctx);

	assert_int_equal(hs_nest_add(ctx, garbage, sizeof(garbage), many, 1, &out), HS_ERR_FORMAT);
	hs_ctx_clear_error(ctx);
	assert_int_equal(hs_nest_remove(ctx, garbage, sizeof(garbage), 1, &out), HS_ERR_FORMAT);
	hs_ctx_clear_error(ctx);
	assert_int_equal(hs_nest_primary_md(ctx, garbage, 0, &md), HS_ERR_FORMAT);
	assert_null(md);
	assert_int_equal(out.len, 0);

	for (int i = 0; i <= HS_NEST_MAX; i++)
		hs_buf_free(&many[i]);
	hs_buf_free(&primary);
	hs_buf_free(&full);
	hs_ctx_free(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_add_get_remove),
	        cmocka_unit_test(test_limits_and_garbage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
