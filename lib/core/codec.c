/*
 * codec.c - base64 and base64url on top of OpenSSL's EVP_EncodeBlock /
 * EVP_DecodeBlock. OpenSSL knows only the standard alphabet with padding,
 * and its decoder skips whitespace; Azure sends both alphabets, with and
 * without padding (protocols.md 1.0), so this file maps the alphabet, adds
 * or strips the padding, and rejects anything that is not base64 before
 * OpenSSL sees it.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "codec.h"

/* Longest input either way; everything we encode is far smaller. */
#define CODEC_MAX (16 * 1024 * 1024)

int hs_base64_encode(struct hs_buf *out, const uint8_t *data, size_t len, bool url)
{
	size_t n;
	int r;

	if (len > CODEC_MAX)
		return HS_ERR_INVALID;
	if ((r = hs_buf_reserve(out, (len + 2) / 3 * 4 + 1)) < 0)
		return r;
	n = (size_t)EVP_EncodeBlock(out->data + out->len, data, (int)len);
	if (url) {
		char *p = (char *)out->data + out->len;

		while (n > 0 && p[n - 1] == '=')
			n--;
		for (size_t i = 0; i < n; i++)
			p[i] = p[i] == '+' ? '-' : p[i] == '/' ? '_' : p[i];
	}
	out->len += n;
	return 0;
}

/* The character in the standard alphabet, or 0 if c is not base64. */
static char std_char(char c)
{
	if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	    c == '+' || c == '/')
		return c;
	return c == '-' ? '+' : c == '_' ? '/' : 0;
}

int hs_base64_decode(struct hs_buf *out, const char *text, size_t len)
{
	size_t padded, pad;
	char *in;
	int n, r;

	while (len > 0 && text[len - 1] == '=')
		len--;
	if (len % 4 == 1 || len > CODEC_MAX)
		return HS_ERR_FORMAT;
	padded = (len + 3) / 4 * 4;
	pad = padded - len;
	if ((r = hs_buf_reserve(out, padded / 4 * 3)) < 0)
		return r;
	if ((in = malloc(padded + 1)) == NULL)
		return HS_ERR_NOMEM;
	for (size_t i = 0; i < len; i++)
		if ((in[i] = std_char(text[i])) == 0) {
			free(in);
			return HS_ERR_FORMAT;
		}
	memset(in + len, '=', pad);
	n = padded ? EVP_DecodeBlock(out->data + out->len, (unsigned char *)in, (int)padded) : 0;
	free(in);
	if (n < 0)
		return HS_ERR_FORMAT;
	/* EVP_DecodeBlock counts the bytes that the padding stands for. */
	out->len += (size_t)n - pad;
	return 0;
}

char *hs_b64url(const unsigned char *data, size_t len)
{
	struct hs_buf b = {0};
	uint8_t *s;
	size_t n;

	if (hs_base64_encode(&b, data, len, true) < 0 || hs_buf_append(&b, "", 1) < 0) {
		hs_buf_free(&b);
		return NULL;
	}
	hs_buf_detach(&b, &s, &n);
	return (char *)s;
}

bool hs_der_next(const uint8_t **p, const uint8_t *end, struct hs_der_item *it)
{
	const unsigned char *q = *p;
	long len;
	int tag, xclass, ret;

	if (*p >= end)
		return false;
	ret = ASN1_get_object(&q, &len, &tag, &xclass, end - *p);
	if ((ret & 0x80) || (ret & 0x01) || len < 0 || len > end - q) {
		ERR_clear_error();
		return false;
	}
	it->tag = **p;
	it->c = q;
	it->len = (size_t)len;
	*p = q + len;
	return true;
}
