/*
 * p11_uri.c - RFC 7512 "pkcs11:" URIs: parsing (path attributes, the
 * pin-value/pin-source/module-path query attributes), matching against
 * module, slot and token information, and writing URIs for `pkcs11 list`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "p11.h"

static const char *const p11_attr_names[P11_ATTR_COUNT] = {
        [P11_TOKEN] = "token",
        [P11_MANUFACTURER] = "manufacturer",
        [P11_SERIAL] = "serial",
        [P11_MODEL] = "model",
        [P11_LIBRARY_MANUFACTURER] = "library-manufacturer",
        [P11_LIBRARY_DESCRIPTION] = "library-description",
        [P11_LIBRARY_VERSION] = "library-version",
        [P11_SLOT_DESCRIPTION] = "slot-description",
        [P11_SLOT_MANUFACTURER] = "slot-manufacturer",
        [P11_SLOT_ID] = "slot-id",
        [P11_OBJECT] = "object",
        [P11_TYPE] = "type",
        [P11_ID] = "id",
};

void hs_p11_uri_free(struct p11_uri *uri)
{
	for (int i = 0; i < P11_ATTR_COUNT; i++)
		free(uri->attr[i]);
	if (uri->pin_value != NULL)
		OPENSSL_clear_free(uri->pin_value, strlen(uri->pin_value));
	free(uri->pin_source);
	free(uri->module_path);
	memset(uri, 0, sizeof(*uri));
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes s[0..len) into a fresh NUL-terminated buffer; the
 * decoded length goes to *out_len. NULL on a bad escape. */
static char *pct_decode(const char *s, size_t len, size_t *out_len)
{
	char *d = malloc(len + 1);
	size_t n = 0;

	if (d == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '%') {
			d[n++] = s[i];
			continue;
		}
		if (i + 2 >= len) {
			free(d);
			return NULL;
		}
		int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
		if (hi < 0 || lo < 0) {
			free(d);
			return NULL;
		}
		d[n++] = (char)(hi << 4 | lo);
		i += 2;
	}
	d[n] = '\0';
	*out_len = n;
	return d;
}

/* Parses a decimal CK_SLOT_ID. */
static int parse_slot_id(struct hs_ctx *ctx, const char *s, CK_SLOT_ID *out)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return hs_error_set(ctx, HS_ERR_INVALID, "PKCS#11 URI: slot-id must be a number");
	v = strtoull(s, &end, 10);
	if (*end != '\0' || v > (CK_SLOT_ID)-1)
		return hs_error_set(ctx, HS_ERR_INVALID, "PKCS#11 URI: slot-id must be a number");
	*out = (CK_SLOT_ID)v;
	return 0;
}

/* Stores one path attribute "name=value". */
static int path_attr(struct hs_ctx *ctx, struct p11_uri *uri, const char *name, size_t name_len,
                     char *value, size_t value_len)
{
	for (int i = 0; i < P11_ATTR_COUNT; i++) {
		if (strlen(p11_attr_names[i]) != name_len ||
		    memcmp(p11_attr_names[i], name, name_len) != 0)
			continue;
		if (uri->attr[i] != NULL) {
			free(value);
			return hs_error_set(ctx, HS_ERR_INVALID, "PKCS#11 URI: %s given twice",
			                    p11_attr_names[i]);
		}
		uri->attr[i] = value;
		if (i == P11_ID)
			uri->id_len = value_len;
		if (i == P11_SLOT_ID)
			return parse_slot_id(ctx, value, &uri->slot_id);
		return 0;
	}
	free(value);
	/* RFC 7512 2.3: an unknown path attribute can never match. */
	return hs_error_set(ctx, HS_ERR_INVALID, "PKCS#11 URI: unknown attribute '%.*s'",
	                    (int)(name_len > 40 ? 40 : name_len), name);
}

/* Stores one query attribute; unknown ones are ignored (RFC 7512 2.3). */
static int query_attr(struct hs_ctx *ctx, struct p11_uri *uri, const char *name, size_t name_len,
                      char *value)
{
	char **slot = NULL;

	if (name_len == 9 && memcmp(name, "pin-value", 9) == 0)
		slot = &uri->pin_value;
	else if (name_len == 10 && memcmp(name, "pin-source", 10) == 0)
		slot = &uri->pin_source;
	else if (name_len == 11 && memcmp(name, "module-path", 11) == 0)
		slot = &uri->module_path;
	if (slot == NULL || *slot != NULL) {
		if (slot == &uri->pin_value)
			OPENSSL_clear_free(value, strlen(value));
		else
			free(value);
		return slot == NULL ? 0
		                    : hs_error_set(ctx, HS_ERR_INVALID,
		                                   "PKCS#11 URI: a query attribute is given twice");
	}
	*slot = value;
	return 0;
}

/* Parses the `sep`-separated attributes of s[0..len). */
static int parse_part(struct hs_ctx *ctx, struct p11_uri *uri, const char *s, size_t len, char sep,
                      bool query)
{
	const char *end = s + len;

	while (s < end) {
		const char *next = memchr(s, sep, (size_t)(end - s));
		const char *stop = next ? next : end;
		const char *eq = memchr(s, '=', (size_t)(stop - s));
		size_t value_len = 0;
		char *value;
		int r;
		bool is_id;

		if (eq == NULL || eq == s)
			return hs_error_set(ctx, HS_ERR_INVALID,
			                    "PKCS#11 URI: expected name=value between '%c'", sep);
		is_id = !query && eq - s == 2 && memcmp(s, "id", 2) == 0;
		value = pct_decode(eq + 1, (size_t)(stop - eq - 1), &value_len);
		/* Only the binary id may hold a %00; in text it would cut the
		 * value short. Values may be PINs: wipe what we refuse. */
		if (value == NULL || value_len > P11_VALUE_MAX ||
		    (!is_id && value_len != strlen(value))) {
			if (value != NULL)
				OPENSSL_clear_free(value, value_len);
			return hs_error_set(ctx, HS_ERR_INVALID,
			                    "PKCS#11 URI: bad %%-escape, %%00 or value too long");
		}
		r = query ? query_attr(ctx, uri, s, (size_t)(eq - s), value)
		          : path_attr(ctx, uri, s, (size_t)(eq - s), value, value_len);
		if (r < 0)
			return r;
		s = next ? next + 1 : end;
	}
	return 0;
}

int hs_p11_uri_parse(struct hs_ctx *ctx, const char *s, struct p11_uri *out)
{
	const char *q;
	size_t len;
	int r;

	memset(out, 0, sizeof(*out));
	if (s == NULL || strncasecmp(s, "pkcs11:", 7) != 0)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "a PKCS#11 key is a URI starting "
		                    "with 'pkcs11:'");
	len = strlen(s);
	if (len > P11_URI_MAX)
		return hs_error_set(ctx, HS_ERR_INVALID, "PKCS#11 URI too long");
	s += 7;
	q = strchr(s, '?');
	if ((r = parse_part(ctx, out, s, q ? (size_t)(q - s) : strlen(s), ';', false)) < 0)
		return r;
	if (q != NULL && (r = parse_part(ctx, out, q + 1, strlen(q + 1), '&', true)) < 0)
		return r;
	if (out->attr[P11_TYPE] != NULL && strcmp(out->attr[P11_TYPE], "private") != 0 &&
	    strcmp(out->attr[P11_TYPE], "cert") != 0 &&
	    strcmp(out->attr[P11_TYPE], "public") != 0 &&
	    strcmp(out->attr[P11_TYPE], "secret-key") != 0 &&
	    strcmp(out->attr[P11_TYPE], "data") != 0)
		return hs_error_set(
		        ctx, HS_ERR_INVALID,
		        "PKCS#11 URI: type must be private, cert, public, secret-key or "
		        "data");
	return 0;
}

/* Compares a URI value with a space-padded PKCS#11 text field. */
static bool match_text(const char *want, const CK_UTF8CHAR *field, size_t n)
{
	char buf[256];

	if (want == NULL)
		return true;
	hs_p11_text(buf, field, n < sizeof(buf) ? n : sizeof(buf) - 1);
	return strcmp(want, buf) == 0;
}

static bool match_version(const char *want, const CK_VERSION *v)
{
	char buf[16];

	if (want == NULL)
		return true;
	snprintf(buf, sizeof(buf), "%u.%u", v->major, v->minor);
	/* "M" alone means "M.0" (RFC 7512 2.3). */
	return strcmp(want, buf) == 0 ||
	       (strchr(want, '.') == NULL && v->minor == 0 &&
	        strncmp(want, buf, strlen(want)) == 0 && buf[strlen(want)] == '.');
}

bool hs_p11_uri_match_info(const struct p11_uri *uri, const CK_INFO *info)
{
	return match_text(uri->attr[P11_LIBRARY_MANUFACTURER], info->manufacturerID,
	                  sizeof(info->manufacturerID)) &&
	       match_text(uri->attr[P11_LIBRARY_DESCRIPTION], info->libraryDescription,
	                  sizeof(info->libraryDescription)) &&
	       match_version(uri->attr[P11_LIBRARY_VERSION], &info->libraryVersion);
}

bool hs_p11_uri_match_slot(const struct p11_uri *uri, CK_SLOT_ID slot, const CK_SLOT_INFO *si)
{
	if (uri->attr[P11_SLOT_ID] != NULL && uri->slot_id != slot)
		return false;
	return match_text(uri->attr[P11_SLOT_DESCRIPTION], si->slotDescription,
	                  sizeof(si->slotDescription)) &&
	       match_text(uri->attr[P11_SLOT_MANUFACTURER], si->manufacturerID,
	                  sizeof(si->manufacturerID));
}

bool hs_p11_uri_match_token(const struct p11_uri *uri, const CK_TOKEN_INFO *ti)
{
	return match_text(uri->attr[P11_TOKEN], ti->label, sizeof(ti->label)) &&
	       match_text(uri->attr[P11_MANUFACTURER], ti->manufacturerID,
	                  sizeof(ti->manufacturerID)) &&
	       match_text(uri->attr[P11_SERIAL], ti->serialNumber, sizeof(ti->serialNumber)) &&
	       match_text(uri->attr[P11_MODEL], ti->model, sizeof(ti->model));
}

/* RFC 3986 unreserved characters plus the pchar extras RFC 7512 allows
 * unescaped in path values (but never ';', '?', '%' or '/'). */
static bool p11_unreserved(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       strchr("-._~:[]@!$'()*+,=&", c) != NULL;
}

int hs_p11_uri_append(struct hs_buf *uri, const char *name, const uint8_t *value, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	bool binary = strcmp(name, "id") == 0;
	int r;

	if (uri->len == 0 && (r = hs_buf_append(uri, "pkcs11:", 7)) < 0)
		return r;
	if (uri->len > 7 && (r = hs_buf_append(uri, ";", 1)) < 0)
		return r;
	if ((r = hs_buf_append(uri, name, strlen(name))) < 0 ||
	    (r = hs_buf_append(uri, "=", 1)) < 0)
		return r;
	for (size_t i = 0; i < len && r == 0; i++) {
		char esc[3] = {'%', hex[value[i] >> 4], hex[value[i] & 15]};

		if (!binary && value[i] != 0 && p11_unreserved(value[i]))
			r = hs_buf_append(uri, &value[i], 1);
		else
			r = hs_buf_append(uri, esc, 3);
	}
	return r;
}

int hs_p11_token_uri(struct hs_buf *out, const CK_TOKEN_INFO *ti)
{
	char label[sizeof(ti->label) + 1], serial[sizeof(ti->serialNumber) + 1];
	int r;

	HS_P11_TEXT(label, ti->label);
	HS_P11_TEXT(serial, ti->serialNumber);
	if ((r = hs_p11_uri_append(out, "token", (const uint8_t *)label, strlen(label))) < 0)
		return r;
	if (serial[0] != '\0')
		r = hs_p11_uri_append(out, "serial", (const uint8_t *)serial, strlen(serial));
	return r;
}

void hs_p11_text(char *buf, const CK_UTF8CHAR *field, size_t n)
{
	size_t len = n;

	while (len > 0 && (field[len - 1] == ' ' || field[len - 1] == '\0'))
		len--;
	memcpy(buf, field, len);
	buf[len] = '\0';
	/* A NUL inside the padding would hide the rest: cut there. */
	buf[strlen(buf)] = '\0';
}
