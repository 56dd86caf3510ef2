/* codec.h - base64 and base64url (RFC 4648), as Azure's wire formats use
 * both: base64url without padding for JWTs and Key Vault sign values,
 * standard base64 for certificates; and a bounded walk over DER TLVs. */
#ifndef HS_CODEC_H
#define HS_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"

/* Appends the encoding (no NUL) to out; url: base64url without padding. */
int hs_base64_encode(struct hs_buf *out, const uint8_t *data, size_t len, bool url);
/* Decodes either alphabet, padding optional, whitespace not allowed.
 * HS_ERR_FORMAT on bad input; appends to out (no NUL). */
int hs_base64_decode(struct hs_buf *out, const char *text, size_t len);

/* base64url of data as a NUL-terminated string (free()), or NULL. */
char *hs_b64url(const unsigned char *data, size_t len);

/* One TLV of a DER walk. */
struct hs_der_item {
	uint8_t tag;      /* the identifier octet: class, constructed bit, number */
	const uint8_t *c; /* contents */
	size_t len;
};

/* Reads the TLV at *p within [*p, end) and moves *p past it; false at the
 * end or when malformed (indefinite lengths included). */
bool hs_der_next(const uint8_t **p, const uint8_t *end, struct hs_der_item *it);

#endif /* HS_CODEC_H */
