/*
 * aws_sigv4.c - AWS Signature Version 4 (protocols.md 5.1): canonical
 * request, string to sign, derived signing key, Authorization header.
 * Pure computation: no I/O, so it is unit-tested against AWS's published
 * example values (tests/unit/test_aws.c).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "aws.h"

#define SIGV4_MAX_HEADERS 16
#define SIGV4_NAME_MAX    64

struct sigv4_header {
	char name[SIGV4_NAME_MAX];
	const char *value; /* borrowed, leading blanks skipped */
	size_t value_len;  /* trailing blanks dropped */
};

void hs_aws_amz_date(time_t t, char out[17])
{
	struct tm tm = {0};

	hs_os_gmtime((int64_t)t, &tm);
	strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static void sigv4_hex(const uint8_t *data, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[data[i] >> 4];
		out[2 * i + 1] = digits[data[i] & 15];
	}
	out[2 * len] = '\0';
}

static int sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
	uint8_t md[32];

	if (EVP_Digest(data, len, md, NULL, EVP_sha256(), NULL) != 1)
		return -1;
	sigv4_hex(md, sizeof(md), out);
	return 0;
}

static int sigv4_hmac(const uint8_t *key, size_t key_len, const char *msg, uint8_t out[32])
{
	unsigned int n = 32;

	return HMAC(EVP_sha256(), key, (int)key_len, (const uint8_t *)msg, strlen(msg), out, &n)
	               ? 0
	               : -1;
}

static int sigv4_header_cmp(const void *a, const void *b)
{
	return strcmp(((const struct sigv4_header *)a)->name,
	              ((const struct sigv4_header *)b)->name);
}

/* Splits "Name: value" lines into lower-cased names and trimmed values,
 * sorted by name. */
static int sigv4_parse_headers(struct hs_ctx *ctx, const char *const *lines, struct sigv4_header *h,
                               size_t *n)
{
	for (*n = 0; lines[*n] != NULL; (*n)++) {
		const char *line = lines[*n], *colon = strchr(line, ':');
		size_t name_len = colon ? (size_t)(colon - line) : 0, vlen;

		if (*n == SIGV4_MAX_HEADERS || colon == NULL || name_len == 0 ||
		    name_len >= SIGV4_NAME_MAX)
			return hs_error_set(ctx, HS_ERR_INVALID, "SigV4: bad header list");
		for (size_t i = 0; i < name_len; i++)
			h[*n].name[i] = (char)tolower((unsigned char)line[i]);
		h[*n].name[name_len] = '\0';
		h[*n].value = colon + 1 + strspn(colon + 1, " \t");
		vlen = strlen(h[*n].value);
		while (vlen > 0 && (h[*n].value[vlen - 1] == ' ' || h[*n].value[vlen - 1] == '\t'))
			vlen--;
		h[*n].value_len = vlen;
	}
	qsort(h, *n, sizeof(*h), sigv4_header_cmp);
	return 0;
}

/* The canonical request (appended to buf, NUL-terminated) and the
 * semicolon-separated signed header names. */
static int sigv4_canonical_request(struct hs_ctx *ctx, const struct hs_aws_sigv4_req *req,
                                   struct hs_buf *buf, char *signed_names, size_t names_size)
{
	struct sigv4_header h[SIGV4_MAX_HEADERS];
	char body_hash[65];
	size_t n, used = 0;
	int r;

	if ((r = sigv4_parse_headers(ctx, req->headers, h, &n)) < 0)
		return r;
	if (sigv4_sha256_hex(req->body ? (const void *)req->body : "", req->body_len, body_hash) <
	    0)
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "SigV4: SHA-256 failed");
	signed_names[0] = '\0';
	r = hs_buf_append(buf, req->method, strlen(req->method));
	r = r ? r : hs_buf_append(buf, "\n", 1);
	r = r ? r : hs_buf_append(buf, req->path, strlen(req->path));
	r = r ? r : hs_buf_append(buf, "\n", 1);
	r = r ? r : hs_buf_append(buf, req->query, strlen(req->query));
	r = r ? r : hs_buf_append(buf, "\n", 1);
	for (size_t i = 0; r == 0 && i < n; i++) {
		r = hs_buf_append(buf, h[i].name, strlen(h[i].name));
		r = r ? r : hs_buf_append(buf, ":", 1);
		r = r ? r : hs_buf_append(buf, h[i].value, h[i].value_len);
		r = r ? r : hs_buf_append(buf, "\n", 1);
		used += (size_t)snprintf(signed_names + used, names_size - used, "%s%s",
		                         i ? ";" : "", h[i].name);
		if (used >= names_size)
			return hs_error_set(ctx, HS_ERR_INVALID, "SigV4: too many headers");
	}
	r = r ? r : hs_buf_append(buf, "\n", 1);
	r = r ? r : hs_buf_append(buf, signed_names, strlen(signed_names));
	r = r ? r : hs_buf_append(buf, "\n", 1);
	r = r ? r : hs_buf_append(buf, body_hash, strlen(body_hash) + 1);
	return r ? hs_error_set(ctx, HS_ERR_NOMEM, "out of memory") : 0;
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
 * "aws4_request"); hex HMAC(kSigning, string_to_sign) into sig_hex. */
static int sigv4_signature(const char *secret, const char *date, const struct hs_aws_sigv4_req *req,
                           const char *string_to_sign, char sig_hex[65])
{
	size_t klen = strlen(secret) + 4;
	uint8_t *k0 = OPENSSL_malloc(klen), key[32], sig[32];
	int r = -1;

	if (k0 == NULL)
		return -1;
	memcpy(k0, "AWS4", 4);
	memcpy(k0 + 4, secret, klen - 4);
	if (sigv4_hmac(k0, klen, date, key) == 0 && sigv4_hmac(key, 32, req->region, key) == 0 &&
	    sigv4_hmac(key, 32, req->service, key) == 0 &&
	    sigv4_hmac(key, 32, "aws4_request", key) == 0 &&
	    sigv4_hmac(key, 32, string_to_sign, sig) == 0) {
		sigv4_hex(sig, 32, sig_hex);
		r = 0;
	}
	OPENSSL_clear_free(k0, klen);
	OPENSSL_cleanse(key, sizeof(key));
	return r;
}

int hs_aws_sigv4_authorization(struct hs_ctx *ctx, const struct hs_aws_sigv4_req *req,
                               const char *access_key_id, const char *secret_access_key, char *out,
                               size_t out_size)
{
	struct hs_buf canonical = {0};
	char names[SIGV4_MAX_HEADERS * SIGV4_NAME_MAX], date[9], scope[256], creq_hash[65],
	        sts[512], sig[65];
	int r;

	if (strlen(req->amz_date) != 16)
		return hs_error_set(ctx, HS_ERR_INVALID, "SigV4: bad date");
	memcpy(date, req->amz_date, 8);
	date[8] = '\0';
	snprintf(scope, sizeof(scope), "%s/%s/%s/aws4_request", date, req->region, req->service);
	if ((r = sigv4_canonical_request(ctx, req, &canonical, names, sizeof(names))) < 0)
		goto out;
	if (sigv4_sha256_hex(canonical.data, canonical.len - 1, creq_hash) < 0) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "SigV4: SHA-256 failed");
		goto out;
	}
	snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s\n%s", req->amz_date, scope, creq_hash);
	if (sigv4_signature(secret_access_key, date, req, sts, sig) < 0) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "SigV4: HMAC failed");
		goto out;
	}
	if ((size_t)snprintf(out, out_size,
	                     "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
	                     access_key_id, scope, names, sig) >= out_size)
		r = hs_error_set(ctx, HS_ERR_INVALID, "SigV4: header too long");
out:
	hs_buf_free(&canonical);
	return r;
}
