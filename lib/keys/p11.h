/*
 * p11.h - PKCS#11 internals shared by the provider (pkcs11.c), module
 * loading and error text (p11_module.c), RFC 7512 URIs (p11_uri.c) and
 * `hsmsign pkcs11 list` (p11_list.c).
 */
#ifndef HS_P11_H
#define HS_P11_H

#include <stdbool.h>

#include <p11-kit/pkcs11.h>

#include "provider.h"

/* RFC 7512 path attributes we match on (every one the RFC defines). */
enum p11_attr {
	P11_TOKEN,
	P11_MANUFACTURER,
	P11_SERIAL,
	P11_MODEL,
	P11_LIBRARY_MANUFACTURER,
	P11_LIBRARY_DESCRIPTION,
	P11_LIBRARY_VERSION,
	P11_SLOT_DESCRIPTION,
	P11_SLOT_MANUFACTURER,
	P11_SLOT_ID,
	P11_OBJECT,
	P11_TYPE,
	P11_ID,
	P11_ATTR_COUNT,
};

/* A parsed pkcs11: URI. Values are percent-decoded; NULL when absent. */
struct p11_uri {
	char *attr[P11_ATTR_COUNT]; /* NUL-terminated text; P11_ID is binary */
	size_t id_len;
	CK_SLOT_ID slot_id; /* valid when attr[P11_SLOT_ID] != NULL */
	char *pin_value;    /* query: secret, wiped on free */
	char *pin_source;
	char *module_path;
};

/* Longest URI and attribute value accepted. */
#define P11_URI_MAX   4096
#define P11_VALUE_MAX 1024

/* Parses `s` into *out (zeroed first; free with hs_p11_uri_free even on
 * failure). Never puts the pin-value into an error message. */
int hs_p11_uri_parse(struct hs_ctx *ctx, const char *s, struct p11_uri *out);
void hs_p11_uri_free(struct p11_uri *uri);
/* Whether the URI's library, slot and token attributes match. */
bool hs_p11_uri_match_info(const struct p11_uri *uri, const CK_INFO *info);
bool hs_p11_uri_match_slot(const struct p11_uri *uri, CK_SLOT_ID slot, const CK_SLOT_INFO *si);
bool hs_p11_uri_match_token(const struct p11_uri *uri, const CK_TOKEN_INFO *ti);
/* Appends ";name=value" (or "name=value" after "pkcs11:") percent-encoded. */
int hs_p11_uri_append(struct hs_buf *uri, const char *name, const uint8_t *value, size_t len);
/* "pkcs11:token=..;serial=.." for a token, as a fresh string in *out. */
int hs_p11_token_uri(struct hs_buf *out, const CK_TOKEN_INFO *ti);

/* A loaded, initialised module. */
struct p11_module {
	void *dl;
	CK_FUNCTION_LIST *f;
	bool finalize; /* we initialised it, so we finalise it */
	CK_INFO info;
};

/* dlopen()s `path`, gets its function list and C_Initialize()s it with OS
 * locking, so sessions may be used from several threads. */
int hs_p11_module_load(struct hs_ctx *ctx, const char *path, struct p11_module **out);
void hs_p11_module_free(struct p11_module *mod);

/* "CKR_PIN_INCORRECT" etc., or "CKR_0x..." (static or thread-local). */
const char *hs_p11_rv_name(CK_RV rv);
/* Maps a CKR_* to an HS_ERR_* and sets "<what>: <meaning> (CKR_...)". */
int hs_p11_error(struct hs_ctx *ctx, CK_RV rv, const char *what);

/* A space-padded PKCS#11 text field as a trimmed string in buf (size n+1). */
void hs_p11_text(char *buf, const CK_UTF8CHAR *field, size_t n);
#define HS_P11_TEXT(buf, field) hs_p11_text(buf, field, sizeof(field))

/* Tokens present in slots that match the URI; *out is malloc'd. */
int hs_p11_find_slots(struct hs_ctx *ctx, struct p11_module *mod, const struct p11_uri *uri,
                      CK_SLOT_ID **out, size_t *n_out);

/* Reads one attribute of an object into fresh memory (*out, malloc'd,
 * at most P11_ATTR_MAX bytes). HS_ERR_NOTFOUND when it has none. */
#define P11_ATTR_MAX (64 * 1024)
int hs_p11_get_attr(struct hs_ctx *ctx, struct p11_module *mod, CK_SESSION_HANDLE session,
                    CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE type, uint8_t **out, size_t *out_len);
/* Objects matching the template, at most `max`. */
int hs_p11_find_objects(struct hs_ctx *ctx, struct p11_module *mod, CK_SESSION_HANDLE session,
                        CK_ATTRIBUTE *tmpl, CK_ULONG n_tmpl, CK_OBJECT_HANDLE *out, size_t max,
                        size_t *n_out);

/* Logs the user in on `session` (all sessions share the login). Uses
 * opts->pin, the URI's pin-value, a PIN-pad, or opts->pin_fn, in that
 * order; wrong/locked PINs give their one-line errors. If pin_copy is not
 * NULL it receives a copy of the PIN used (OPENSSL_clear_free it), or
 * NULL when no PIN was needed or a PIN pad was used. */
int hs_p11_login(struct hs_ctx *ctx, struct p11_module *mod, CK_SESSION_HANDLE session,
                 CK_SLOT_ID slot, const struct hs_pkcs11_key_opts *opts, const struct p11_uri *uri,
                 char **pin_copy);

#endif /* HS_P11_H */
