/*
 * p11_list.c - `hsmsign pkcs11 list`: every slot, token, private key and
 * certificate of a module with the URI that selects it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "p11.h"

#define P11_LIST_MAX_OBJECTS 256

struct p11_lister {
	struct hs_ctx *ctx;
	struct p11_module *mod;
	CK_SESSION_HANDLE session;
	CK_SLOT_ID slot;
	CK_TOKEN_INFO ti;
	hs_pkcs11_list_fn fn;
	void *userdata;
};

static void emit(struct p11_lister *l, enum hs_pkcs11_kind kind, const char *label, const char *uri,
                 const char *detail)
{
	struct hs_pkcs11_entry e = {kind, (unsigned long)l->slot, label, uri, detail};

	l->fn(&e, l->userdata);
}

/* Token flags a user cares about, comma-separated. */
static void token_flags(char *buf, size_t size, CK_FLAGS f)
{
	snprintf(buf, size, "%s%s%s%s%s", (f & CKF_LOGIN_REQUIRED) ? "login required" : "no login",
	         (f & CKF_PROTECTED_AUTHENTICATION_PATH) ? ", PIN pad" : "",
	         (f & CKF_USER_PIN_LOCKED)      ? ", PIN LOCKED"
	         : (f & CKF_USER_PIN_FINAL_TRY) ? ", final PIN try"
	         : (f & CKF_USER_PIN_COUNT_LOW) ? ", PIN count low"
	                                        : "",
	         (f & CKF_WRITE_PROTECTED) ? ", write-protected" : "",
	         (f & CKF_TOKEN_INITIALIZED) ? "" : ", not initialised");
}

/* "RSA 2048", "EC prime256v1" for a private key. */
static void key_detail(struct p11_lister *l, CK_OBJECT_HANDLE obj, char *buf, size_t size)
{
	CK_KEY_TYPE type = CK_UNAVAILABLE_INFORMATION;
	CK_ATTRIBUTE a = {CKA_KEY_TYPE, &type, sizeof(type)};
	uint8_t *v = NULL;
	size_t len;

	snprintf(buf, size, "key type unknown");
	if (l->mod->f->C_GetAttributeValue(l->session, obj, &a, 1) != CKR_OK)
		return;
	if (type == CKK_RSA) {
		snprintf(buf, size, "RSA");
		if (hs_p11_get_attr(NULL, l->mod, l->session, obj, CKA_MODULUS, &v, &len) == 0)
			snprintf(buf, size, "RSA %zu", len * 8);
	} else if (type == CKK_EC) {
		const unsigned char *p;
		ASN1_OBJECT *oid = NULL;

		snprintf(buf, size, "EC");
		if (hs_p11_get_attr(NULL, l->mod, l->session, obj, CKA_EC_PARAMS, &v, &len) == 0) {
			p = v;
			if ((oid = d2i_ASN1_OBJECT(NULL, &p, (long)len)) != NULL)
				snprintf(buf, size, "EC %s", OBJ_nid2sn(OBJ_obj2nid(oid)));
			ASN1_OBJECT_free(oid);
			ERR_clear_error();
		}
	} else {
		snprintf(buf, size, "key type 0x%lx", (unsigned long)type);
	}
	free(v);
}

/* The subject of a DER certificate, one line. */
static void cert_detail(struct p11_lister *l, CK_OBJECT_HANDLE obj, char *buf, size_t size)
{
	uint8_t *der = NULL;
	size_t len;
	const unsigned char *p;
	X509 *x = NULL;

	snprintf(buf, size, "not an X.509 certificate");
	if (hs_p11_get_attr(NULL, l->mod, l->session, obj, CKA_VALUE, &der, &len) == 0) {
		p = der;
		x = d2i_X509(NULL, &p, (long)len);
	}
	if (x != NULL)
		X509_NAME_oneline(X509_get_subject_name(x), buf, (int)size);
	X509_free(x);
	free(der);
	ERR_clear_error();
}

/* Reports the private keys or certificates of the token. */
static int list_objects(struct p11_lister *l, CK_OBJECT_CLASS cls)
{
	CK_ATTRIBUTE tmpl = {CKA_CLASS, &cls, sizeof(cls)};
	CK_OBJECT_HANDLE *found = calloc(P11_LIST_MAX_OBJECTS, sizeof(*found));
	size_t n = 0;
	int r;

	if (found == NULL)
		return hs_error_set(l->ctx, HS_ERR_NOMEM, "out of memory");
	r = hs_p11_find_objects(l->ctx, l->mod, l->session, &tmpl, 1, found, P11_LIST_MAX_OBJECTS,
	                        &n);
	for (size_t i = 0; r == 0 && i < n; i++) {
		struct hs_buf uri = {0};
		uint8_t *label = NULL, *id = NULL;
		size_t label_len = 0, id_len = 0;
		char text[P11_VALUE_MAX + 1] = "", detail[256];

		hs_p11_get_attr(NULL, l->mod, l->session, found[i], CKA_LABEL, &label, &label_len);
		hs_p11_get_attr(NULL, l->mod, l->session, found[i], CKA_ID, &id, &id_len);
		if (label != NULL && label_len <= P11_VALUE_MAX) {
			memcpy(text, label, label_len);
			text[label_len] = '\0';
		}
		if (cls == CKO_PRIVATE_KEY)
			key_detail(l, found[i], detail, sizeof(detail));
		else
			cert_detail(l, found[i], detail, sizeof(detail));
		if ((r = hs_p11_token_uri(&uri, &l->ti)) == 0 && id != NULL)
			r = hs_p11_uri_append(&uri, "id", id, id_len);
		if (r == 0 && label != NULL)
			r = hs_p11_uri_append(&uri, "object", label, label_len);
		if (r == 0)
			r = hs_p11_uri_append(
			        &uri, "type",
			        (const uint8_t *)(cls == CKO_PRIVATE_KEY ? "private" : "cert"),
			        cls == CKO_PRIVATE_KEY ? 7 : 4);
		if (r == 0 && (r = hs_buf_append(&uri, "", 1)) == 0)
			emit(l,
			     cls == CKO_PRIVATE_KEY ? HS_PKCS11_PRIVATE_KEY : HS_PKCS11_CERTIFICATE,
			     text, (const char *)uri.data, detail);
		else
			r = hs_error_set(l->ctx, HS_ERR_NOMEM, "out of memory");
		hs_buf_free(&uri);
		free(label);
		free(id);
	}
	free(found);
	return r;
}

/* Reports one token and, in a session on it, its objects. */
static int list_token(struct p11_lister *l, bool login, const struct hs_pkcs11_key_opts *opts,
                      const struct p11_uri *uri)
{
	struct hs_buf turi = {0};
	char label[sizeof(l->ti.label) + 1], flags[128], detail[256];
	char manuf[sizeof(l->ti.manufacturerID) + 1], model[sizeof(l->ti.model) + 1];
	CK_RV rv;
	int r;

	HS_P11_TEXT(label, l->ti.label);
	HS_P11_TEXT(manuf, l->ti.manufacturerID);
	HS_P11_TEXT(model, l->ti.model);
	token_flags(flags, sizeof(flags), l->ti.flags);
	snprintf(detail, sizeof(detail), "%s %s; %s", manuf, model, flags);
	if ((r = hs_p11_token_uri(&turi, &l->ti)) < 0 || (r = hs_buf_append(&turi, "", 1)) < 0) {
		hs_buf_free(&turi);
		return hs_error_set(l->ctx, HS_ERR_NOMEM, "out of memory");
	}
	emit(l, HS_PKCS11_TOKEN, label, (const char *)turi.data, detail);
	hs_buf_free(&turi);
	rv = l->mod->f->C_OpenSession(l->slot, CKF_SERIAL_SESSION, NULL, NULL, &l->session);
	if (rv != CKR_OK)
		return hs_p11_error(l->ctx, rv, "C_OpenSession");
	if ((!login ||
	     (r = hs_p11_login(l->ctx, l->mod, l->session, l->slot, opts, uri, NULL)) == 0) &&
	    (r = list_objects(l, CKO_PRIVATE_KEY)) == 0)
		r = list_objects(l, CKO_CERTIFICATE);
	l->mod->f->C_CloseSession(l->session);
	return r;
}

/* Whether slot is among the n slots whose tokens match the URI. */
static bool selected(const CK_SLOT_ID *match, size_t n, CK_SLOT_ID slot)
{
	for (size_t i = 0; i < n; i++)
		if (match[i] == slot)
			return true;
	return false;
}

/* "no token", "uninitialised token" or "token present". */
static const char *slot_state(struct p11_lister *l, const CK_SLOT_INFO *si)
{
	CK_TOKEN_INFO ti;

	if (!(si->flags & CKF_TOKEN_PRESENT))
		return "no token";
	if (l->mod->f->C_GetTokenInfo(l->slot, &ti) == CKR_OK &&
	    !(ti.flags & CKF_TOKEN_INITIALIZED))
		return "uninitialised token";
	return "token present";
}

/* Reports every slot, and the tokens the URI selects. */
static int list_slots(struct p11_lister *l, const struct hs_pkcs11_key_opts *opts,
                      const struct p11_uri *uri, const CK_SLOT_ID *match, size_t n_match)
{
	CK_SLOT_ID slots[256];
	CK_ULONG n = 256;
	CK_RV rv = l->mod->f->C_GetSlotList(CK_FALSE, slots, &n);
	bool login = opts->pin != NULL || opts->pin_fn != NULL || uri->pin_value != NULL;
	int r = 0;

	if (rv != CKR_OK)
		return hs_p11_error(l->ctx, rv, "C_GetSlotList");
	for (CK_ULONG i = 0; i < n && r == 0; i++) {
		CK_SLOT_INFO si;
		char desc[sizeof(si.slotDescription) + 1];

		l->slot = slots[i];
		if (l->mod->f->C_GetSlotInfo(slots[i], &si) != CKR_OK)
			continue;
		HS_P11_TEXT(desc, si.slotDescription);
		emit(l, HS_PKCS11_SLOT, desc, NULL, slot_state(l, &si));
		if (selected(match, n_match, slots[i]) &&
		    l->mod->f->C_GetTokenInfo(slots[i], &l->ti) == CKR_OK)
			r = list_token(l, login, opts, uri);
	}
	return r;
}

int hs_pkcs11_list(struct hs_ctx *ctx, const struct hs_pkcs11_key_opts *opts, hs_pkcs11_list_fn fn,
                   void *userdata)
{
	struct p11_lister l = {.ctx = ctx, .fn = fn, .userdata = userdata};
	struct p11_uri uri = {0};
	CK_SLOT_ID *match = NULL;
	size_t n_match = 0;
	int r;

	if (opts->uri != NULL && (r = hs_p11_uri_parse(ctx, opts->uri, &uri)) < 0)
		goto out;
	if (uri.pin_value != NULL && !opts->allow_pin_in_uri) {
		r = hs_error_set(ctx, HS_ERR_INVALID,
		                 "the PKCS#11 URI carries a PIN (pin-value): use --pin, or "
		                 "--allow-pin-in-uri");
		goto out;
	}
	if (opts->module == NULL && uri.module_path == NULL) {
		r = hs_error_set(ctx, HS_ERR_INVALID,
		                 "give the PKCS#11 module (--pkcs11-module PATH)");
		goto out;
	}
	if ((r = hs_p11_module_load(ctx, opts->module ? opts->module : uri.module_path, &l.mod)) <
	            0 ||
	    (r = hs_p11_find_slots(ctx, l.mod, &uri, &match, &n_match)) < 0)
		goto out;
	/* A PIN belongs to one token: never try it on several (each wrong
	 * try brings a token closer to locking). */
	if ((opts->pin != NULL || uri.pin_value != NULL) && n_match != 1) {
		r = hs_error_set(ctx, HS_ERR_INVALID,
		                 "a PIN logs in to one token, but %zu match: select one with --uri "
		                 "'pkcs11:token=...'",
		                 n_match);
		goto out;
	}
	r = list_slots(&l, opts, &uri, match, n_match);
out:
	free(match);
	hs_p11_module_free(l.mod);
	hs_p11_uri_free(&uri);
	return r;
}
