/* buf.c - growable byte buffers and digest algorithm tables. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "core.h"

int hs_buf_reserve(struct hs_buf *buf, size_t extra)
{
	size_t want, cap;
	uint8_t *p;

	if (extra > HS_BUF_MAX - buf->len)
		return HS_ERR_NOMEM;
	want = buf->len + extra;
	if (want <= buf->cap)
		return 0;
	cap = buf->cap ? buf->cap : 64;
	while (cap < want)
		cap = cap > SIZE_MAX / 2 ? want : cap * 2;
	p = realloc(buf->data, cap);
	if (p == NULL)
		return HS_ERR_NOMEM;
	buf->data = p;
	buf->cap = cap;
	return 0;
}

int hs_buf_append(struct hs_buf *buf, const void *data, size_t len)
{
	int r;

	if (len == 0)
		return 0;
	if ((r = hs_buf_reserve(buf, len)) < 0)
		return r;
	memcpy(buf->data + buf->len, data, len);
	buf->len += len;
	return 0;
}

void hs_buf_detach(struct hs_buf *buf, uint8_t **out, size_t *out_len)
{
	*out = buf->data;
	*out_len = buf->len;
	memset(buf, 0, sizeof(*buf));
}

void hs_buf_free(struct hs_buf *buf)
{
	free(buf->data);
	memset(buf, 0, sizeof(*buf));
}

void hs_buf_free_secret(struct hs_buf *buf)
{
	if (buf->data != NULL)
		OPENSSL_cleanse(buf->data, buf->cap);
	hs_buf_free(buf);
}

char *hs_strprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || (s = malloc((size_t)n + 1)) == NULL)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

void hs_free(void *ptr)
{
	free(ptr);
}

static const struct {
	enum hs_digest digest;
	const char *name;
	const char *alias;
	int nid;
} digest_table[] = {
        {HS_DIGEST_SHA1, "sha1", "sha-1", NID_sha1},
        {HS_DIGEST_SHA256, "sha256", "sha-256", NID_sha256},
        {HS_DIGEST_SHA384, "sha384", "sha-384", NID_sha384},
        {HS_DIGEST_SHA512, "sha512", "sha-512", NID_sha512},
};

int hs_digest_from_name(enum hs_digest *out, const char *name)
{
	for (size_t i = 0; i < sizeof(digest_table) / sizeof(digest_table[0]); i++) {
		if (strcasecmp(name, digest_table[i].name) == 0 ||
		    strcasecmp(name, digest_table[i].alias) == 0) {
			*out = digest_table[i].digest;
			return 0;
		}
	}
	return HS_ERR_INVALID;
}

const char *hs_digest_name(enum hs_digest digest)
{
	for (size_t i = 0; i < sizeof(digest_table) / sizeof(digest_table[0]); i++)
		if (digest_table[i].digest == digest)
			return digest_table[i].name;
	return "unknown";
}

const EVP_MD *hs_digest_md(enum hs_digest digest)
{
	for (size_t i = 0; i < sizeof(digest_table) / sizeof(digest_table[0]); i++)
		if (digest_table[i].digest == digest)
			return EVP_get_digestbynid(digest_table[i].nid);
	return NULL;
}

enum hs_digest hs_digest_from_nid(int nid)
{
	for (size_t i = 0; i < sizeof(digest_table) / sizeof(digest_table[0]); i++)
		if (digest_table[i].nid == nid)
			return digest_table[i].digest;
	return 0;
}
