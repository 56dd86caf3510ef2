/*
 * test_aws.c - SigV4 (lib/keys/aws_sigv4.c) against the values AWS
 * publishes: the IAM ListUsers example of the SigV4 documentation
 * ("Create a canonical request" ... "Calculate the signature":
 * canonical-request hash f536975d..., signature 5d672d79...) and the
 * get-vanilla case of the aws-sig-v4-test-suite (signature 5fa00fa3...).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/core.h"
#include "keys/aws.h"

#define EXAMPLE_ID     "AKIDEXAMPLE"
#define EXAMPLE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

struct vector {
	const char *name;
	const char *method, *query, *service;
	const char *headers[4];
	const char *authorization;
};

static const struct vector vectors[] = {
        {"iam-listusers",
         "GET",
         "Action=ListUsers&Version=2010-05-08",
         "iam",
         {"Content-Type: application/x-www-form-urlencoded; charset=utf-8",
          "Host: iam.amazonaws.com", "X-Amz-Date: 20150830T123600Z", NULL},
         "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
         "SignedHeaders=content-type;host;x-amz-date, "
         "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"},
        {"get-vanilla",
         "GET",
         "",
         "service",
         {"Host:example.amazonaws.com", "X-Amz-Date:20150830T123600Z", NULL},
         "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
         "SignedHeaders=host;x-amz-date, "
         "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
        /* Same request with the headers out of order, upper-case and padded:
         * canonicalisation must give the same signature. */
        {"get-vanilla-unsorted",
         "GET",
         "",
         "service",
         {"x-AMZ-date:   20150830T123600Z  ", "HOST: example.amazonaws.com", NULL},
         "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
         "SignedHeaders=host;x-amz-date, "
         "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
};

static void sign_vector(const struct vector *v, const uint8_t *body, size_t body_len, char *out,
                        size_t out_size)
{
	struct hs_ctx ctx = {0};
	struct hs_aws_sigv4_req req = {.method = v->method,
	                               .path = "/",
	                               .query = v->query,
	                               .headers = v->headers,
	                               .body = body,
	                               .body_len = body_len,
	                               .amz_date = "20150830T123600Z",
	                               .region = "us-east-1",
	                               .service = v->service};

	assert_int_equal(
	        hs_aws_sigv4_authorization(&ctx, &req, EXAMPLE_ID, EXAMPLE_SECRET, out, out_size),
	        0);
}

static void test_published_vectors(void **state)
{
	char auth[512];

	(void)state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		sign_vector(&vectors[i], NULL, 0, auth, sizeof(auth));
		if (strcmp(auth, vectors[i].authorization) != 0)
			fail_msg("%s: got %s", vectors[i].name, auth);
	}
}

/* The body hash is part of the signature: a changed body must change it. */
static void test_body_changes_signature(void **state)
{
	char empty[512], with_body[512];

	(void)state;
	sign_vector(&vectors[1], NULL, 0, empty, sizeof(empty));
	sign_vector(&vectors[1], (const uint8_t *)"{}", 2, with_body, sizeof(with_body));
	assert_string_not_equal(empty, with_body);
}

static void test_bad_inputs_are_refused(void **state)
{
	const char *no_colon[] = {"Host example.com", NULL};
	struct hs_ctx ctx = {0};
	struct hs_aws_sigv4_req req = {.method = "POST",
	                               .path = "/",
	                               .query = "",
	                               .headers = no_colon,
	                               .amz_date = "20150830T123600Z",
	                               .region = "us-east-1",
	                               .service = "kms"};
	char out[512], small[40];

	(void)state;
	assert_int_equal(hs_aws_sigv4_authorization(&ctx, &req, "A", "S", out, sizeof(out)),
	                 HS_ERR_INVALID);
	req.headers = vectors[1].headers;
	req.amz_date = "2015";
	assert_int_equal(hs_aws_sigv4_authorization(&ctx, &req, "A", "S", out, sizeof(out)),
	                 HS_ERR_INVALID);
	req.amz_date = "20150830T123600Z";
	assert_int_equal(hs_aws_sigv4_authorization(&ctx, &req, "A", "S", small, sizeof(small)),
	                 HS_ERR_INVALID);
}

static void test_amz_date(void **state)
{
	char date[17];

	(void)state;
	hs_aws_amz_date((time_t)1440938160, date);
	assert_string_equal(date, "20150830T123600Z");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_published_vectors),
	        cmocka_unit_test(test_body_changes_signature),
	        cmocka_unit_test(test_bad_inputs_are_refused),
	        cmocka_unit_test(test_amz_date),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
