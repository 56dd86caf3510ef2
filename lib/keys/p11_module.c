/*
 * p11_module.c - loading a PKCS#11 module, CKR_* error text, slot and
 * object lookup, and the one login per run.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "p11.h"

/* Most slots and objects we look at: real tokens hold a handful. */
#define P11_MAX_SLOTS 256

/*
 * C_Initialize/C_Finalize are per process, but one process may hold
 * several keys of one module (`hsmsign serve`: two keys on a token, or the
 * old and the new key during a reload). Keys we initialised share the
 * module's initialisation by reference count; the last one finalises it.
 */
static pthread_mutex_t p11_init_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	CK_FUNCTION_LIST *f;
	unsigned refs;
} p11_inits[16];

static CK_RV p11_initialize(CK_FUNCTION_LIST *f, CK_C_INITIALIZE_ARGS *args, bool *finalize)
{
	CK_RV rv = CKR_OK;
	size_t i, free_slot = sizeof(p11_inits) / sizeof(p11_inits[0]);

	*finalize = false;
	pthread_mutex_lock(&p11_init_lock);
	for (i = 0; i < sizeof(p11_inits) / sizeof(p11_inits[0]); i++) {
		if (p11_inits[i].refs > 0 && p11_inits[i].f == f)
			break;
		if (p11_inits[i].refs == 0 && free_slot == sizeof(p11_inits) / sizeof(p11_inits[0]))
			free_slot = i;
	}
	if (i < sizeof(p11_inits) / sizeof(p11_inits[0])) {
		p11_inits[i].refs++;
		*finalize = true;
	} else if ((rv = f->C_Initialize(args)) == CKR_OK) {
		/* Without a free slot the module stays initialised (never
		 * finalised early under another key). */
		if (free_slot < sizeof(p11_inits) / sizeof(p11_inits[0])) {
			p11_inits[free_slot].f = f;
			p11_inits[free_slot].refs = 1;
			*finalize = true;
		}
	}
	pthread_mutex_unlock(&p11_init_lock);
	return rv;
}

static void p11_finalize(CK_FUNCTION_LIST *f)
{
	pthread_mutex_lock(&p11_init_lock);
	for (size_t i = 0; i < sizeof(p11_inits) / sizeof(p11_inits[0]); i++)
		if (p11_inits[i].refs > 0 && p11_inits[i].f == f) {
			if (--p11_inits[i].refs == 0)
				f->C_Finalize(NULL);
			break;
		}
	pthread_mutex_unlock(&p11_init_lock);
}

int hs_p11_module_load(struct hs_ctx *ctx, const char *path, struct p11_module **out)
{
	CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
	CK_C_GetFunctionList get_list;
	struct p11_module *mod = calloc(1, sizeof(*mod));
	char why[512];
	CK_RV rv;
	int r;

	*out = NULL;
	if (mod == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	mod->dl = hs_os_dlopen(path, why, sizeof(why));
	if (mod->dl == NULL) {
		/* why names the path and the reason (missing file, wrong
		 * architecture, missing dependency). */
		r = hs_error_set(ctx, HS_ERR_NOTFOUND, "cannot load PKCS#11 module: %s", why);
		goto out;
	}
	*(void **)&get_list = hs_os_dlsym(mod->dl, "C_GetFunctionList");
	if (get_list == NULL || (rv = get_list(&mod->f)) != CKR_OK || mod->f == NULL) {
		r = hs_error_set(ctx, HS_ERR_INVALID,
		                 "%s: not a PKCS#11 module (no C_GetFunctionList)", path);
		goto out;
	}
	if ((rv = p11_initialize(mod->f, &args, &mod->finalize)) != CKR_OK &&
	    rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		r = hs_p11_error(ctx, rv, "C_Initialize");
		goto out;
	}
	if ((rv = mod->f->C_GetInfo(&mod->info)) != CKR_OK) {
		r = hs_p11_error(ctx, rv, "C_GetInfo");
		goto out;
	}
	*out = mod;
	mod = NULL;
	r = 0;
out:
	hs_p11_module_free(mod);
	return r;
}

void hs_p11_module_free(struct p11_module *mod)
{
	if (mod == NULL)
		return;
	if (mod->finalize)
		p11_finalize(mod->f);
	/* Modules that start threads or register atexit handlers do not
	 * survive dlclose(); the process is about to end anyway. */
	if (mod->dl != NULL && getenv("HSMSIGN_PKCS11_NO_DLCLOSE") == NULL)
		hs_os_dlclose(mod->dl);
	free(mod);
}

static const struct {
	CK_RV rv;
	const char *name;
} p11_rv_names[] = {
        {CKR_OK, "CKR_OK"},
        {CKR_CANCEL, "CKR_CANCEL"},
        {CKR_HOST_MEMORY, "CKR_HOST_MEMORY"},
        {CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID"},
        {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
        {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"},
        {CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD"},
        {CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE"},
        {CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID"},
        {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"},
        {CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY"},
        {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"},
        {CKR_FUNCTION_CANCELED, "CKR_FUNCTION_CANCELED"},
        {CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED"},
        {CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID"},
        {CKR_KEY_SIZE_RANGE, "CKR_KEY_SIZE_RANGE"},
        {CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT"},
        {CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED"},
        {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"},
        {CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID"},
        {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"},
        {CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE"},
        {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
        {CKR_PIN_INVALID, "CKR_PIN_INVALID"},
        {CKR_PIN_LEN_RANGE, "CKR_PIN_LEN_RANGE"},
        {CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED"},
        {CKR_PIN_LOCKED, "CKR_PIN_LOCKED"},
        {CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED"},
        {CKR_SESSION_COUNT, "CKR_SESSION_COUNT"},
        {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"},
        {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"},
        {CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED"},
        {CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN"},
        {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
        {CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED"},
        {CKR_USER_TYPE_INVALID, "CKR_USER_TYPE_INVALID"},
        {CKR_USER_ANOTHER_ALREADY_LOGGED_IN, "CKR_USER_ANOTHER_ALREADY_LOGGED_IN"},
        {CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL"},
        {CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED"},
        {CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED"},
        {CKR_DATA_LEN_RANGE, "CKR_DATA_LEN_RANGE"},
};

const char *hs_p11_rv_name(CK_RV rv)
{
	static _Thread_local char buf[32];

	for (size_t i = 0; i < sizeof(p11_rv_names) / sizeof(p11_rv_names[0]); i++)
		if (p11_rv_names[i].rv == rv)
			return p11_rv_names[i].name;
	snprintf(buf, sizeof(buf), "CKR_0x%lx", (unsigned long)rv);
	return buf;
}

/* What a CKR_* means to the user, and the HS_ERR_* it maps to. */
static const char *rv_meaning(CK_RV rv, int *code)
{
	*code = HS_ERR_CRYPTO;
	switch (rv) {
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_DEVICE_REMOVED:
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
		*code = HS_ERR_IO;
		return "the token was removed or the connection to the HSM was lost";
	case CKR_DEVICE_ERROR:
	case CKR_DEVICE_MEMORY:
		*code = HS_ERR_IO;
		return "the token reported a device error";
	case CKR_MECHANISM_INVALID:
	case CKR_MECHANISM_PARAM_INVALID:
	case CKR_KEY_TYPE_INCONSISTENT:
		*code = HS_ERR_UNSUPPORTED;
		return "the token does not support this signing mechanism for the key";
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
		*code = HS_ERR_DENIED;
		return "the key is not allowed to sign (CKA_SIGN is false)";
	case CKR_USER_NOT_LOGGED_IN:
		*code = HS_ERR_AUTH;
		return "not logged in to the token";
	case CKR_PIN_LOCKED:
		*code = HS_ERR_DENIED;
		return "the PIN is locked: unblock it with the SO PIN or PUK";
	case CKR_PIN_EXPIRED:
		*code = HS_ERR_DENIED;
		return "the PIN has expired: change it with the token's tools";
	case CKR_HOST_MEMORY:
		*code = HS_ERR_NOMEM;
		return "out of memory";
	case CKR_FUNCTION_CANCELED:
		*code = HS_ERR_CANCELLED;
		return "cancelled";
	}
	return "failed";
}

int hs_p11_error(struct hs_ctx *ctx, CK_RV rv, const char *what)
{
	int code;
	const char *meaning = rv_meaning(rv, &code);

	return hs_error_set(ctx, code, "PKCS#11 %s: %s (%s)", what, meaning, hs_p11_rv_name(rv));
}

/* Whether the slot's token matches the URI's slot and token attributes. */
static bool slot_matches(struct p11_module *mod, const struct p11_uri *uri, CK_SLOT_ID slot)
{
	CK_SLOT_INFO si;
	CK_TOKEN_INFO ti;

	if (mod->f->C_GetSlotInfo(slot, &si) != CKR_OK || !hs_p11_uri_match_slot(uri, slot, &si))
		return false;
	/* An uninitialised token (SoftHSM always offers one) holds no keys. */
	return mod->f->C_GetTokenInfo(slot, &ti) == CKR_OK && (ti.flags & CKF_TOKEN_INITIALIZED) &&
	       hs_p11_uri_match_token(uri, &ti);
}

int hs_p11_find_slots(struct hs_ctx *ctx, struct p11_module *mod, const struct p11_uri *uri,
                      CK_SLOT_ID **out, size_t *n_out)
{
	CK_ULONG n = P11_MAX_SLOTS;
	CK_SLOT_ID *slots = calloc(P11_MAX_SLOTS, sizeof(*slots));
	CK_RV rv;
	size_t kept = 0;

	*out = NULL;
	*n_out = 0;
	if (slots == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((rv = mod->f->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK) {
		free(slots);
		return hs_p11_error(ctx, rv, "C_GetSlotList");
	}
	if (hs_p11_uri_match_info(uri, &mod->info))
		for (CK_ULONG i = 0; i < n; i++)
			if (slot_matches(mod, uri, slots[i]))
				slots[kept++] = slots[i];
	*out = slots;
	*n_out = kept;
	return 0;
}

int hs_p11_get_attr(struct hs_ctx *ctx, struct p11_module *mod, CK_SESSION_HANDLE session,
                    CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE type, uint8_t **out, size_t *out_len)
{
	CK_ATTRIBUTE a = {type, NULL, 0};
	CK_RV rv = mod->f->C_GetAttributeValue(session, obj, &a, 1);

	*out = NULL;
	*out_len = 0;
	if (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE ||
	    a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return HS_ERR_NOTFOUND; /* callers decide whether that is an error */
	if (rv != CKR_OK)
		return hs_p11_error(ctx, rv, "C_GetAttributeValue");
	if (a.ulValueLen > P11_ATTR_MAX)
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "PKCS#11 attribute of %lu bytes is too large",
		                    (unsigned long)a.ulValueLen);
	if ((a.pValue = malloc(a.ulValueLen ? a.ulValueLen : 1)) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((rv = mod->f->C_GetAttributeValue(session, obj, &a, 1)) != CKR_OK) {
		free(a.pValue);
		return hs_p11_error(ctx, rv, "C_GetAttributeValue");
	}
	*out = a.pValue;
	*out_len = a.ulValueLen;
	return 0;
}

int hs_p11_find_objects(struct hs_ctx *ctx, struct p11_module *mod, CK_SESSION_HANDLE session,
                        CK_ATTRIBUTE *tmpl, CK_ULONG n_tmpl, CK_OBJECT_HANDLE *out, size_t max,
                        size_t *n_out)
{
	CK_ULONG n = 0;
	CK_RV rv;

	*n_out = 0;
	if ((rv = mod->f->C_FindObjectsInit(session, tmpl, n_tmpl)) != CKR_OK)
		return hs_p11_error(ctx, rv, "C_FindObjectsInit");
	rv = mod->f->C_FindObjects(session, out, (CK_ULONG)max, &n);
	mod->f->C_FindObjectsFinal(session);
	if (rv != CKR_OK)
		return hs_p11_error(ctx, rv, "C_FindObjects");
	*n_out = n <= max ? (size_t)n : max;
	return 0;
}

/* The one-line error for a refused login, with what the token says about
 * the tries left (PKCS#11 gives flags, not a number). */
static int login_error(struct hs_ctx *ctx, struct p11_module *mod, CK_SLOT_ID slot, CK_RV rv,
                       const char *label)
{
	CK_TOKEN_INFO ti;
	const char *tries = "";

	if (rv != CKR_PIN_INCORRECT && rv != CKR_PIN_LEN_RANGE && rv != CKR_PIN_INVALID) {
		int code;
		const char *meaning = rv_meaning(rv, &code);

		return hs_error_set(ctx, code == HS_ERR_CRYPTO ? HS_ERR_AUTH : code,
		                    "PKCS#11 login to token '%s': %s (%s)", label, meaning,
		                    hs_p11_rv_name(rv));
	}
	if (mod->f->C_GetTokenInfo(slot, &ti) == CKR_OK) {
		if (ti.flags & CKF_USER_PIN_LOCKED)
			tries = "; the PIN is now locked";
		else if (ti.flags & CKF_USER_PIN_FINAL_TRY)
			tries = "; one try left before the PIN locks";
		else if (ti.flags & CKF_USER_PIN_COUNT_LOW)
			tries = "; the token says few tries are left";
	}
	return hs_error_set(ctx, HS_ERR_AUTH, "wrong PIN for PKCS#11 token '%s' (%s)%s", label,
	                    hs_p11_rv_name(rv), tries);
}

/* Where the PIN comes from; *pin is NULL for a PIN pad. *owned says the
 * caller must wipe and free it. */
static int login_pin(struct hs_ctx *ctx, const CK_TOKEN_INFO *ti, const char *label,
                     const struct hs_pkcs11_key_opts *opts, const struct p11_uri *uri, char **pin,
                     bool *owned)
{
	*pin = NULL;
	*owned = false;
	if (opts->pin != NULL) {
		*pin = (char *)opts->pin;
		return 0;
	}
	if (uri->pin_value != NULL) {
		*pin = uri->pin_value; /* parse refused it unless allowed */
		return 0;
	}
	if (ti->flags & CKF_PROTECTED_AUTHENTICATION_PATH)
		return 0;
	if (opts->pin_fn == NULL)
		return hs_error_set(ctx, HS_ERR_AUTH,
		                    "PKCS#11 token '%s' needs a PIN: give --pin env:NAME, "
		                    "file:PATH or stdin",
		                    label);
	if ((*pin = OPENSSL_zalloc(P11_VALUE_MAX + 1)) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	*owned = true;
	if (opts->pin_fn(*pin, P11_VALUE_MAX + 1, label, opts->pin_userdata) != 0)
		return hs_error_set(ctx, HS_ERR_CANCELLED, "no PIN entered for token '%s'", label);
	return 0;
}

int hs_p11_login(struct hs_ctx *ctx, struct p11_module *mod, CK_SESSION_HANDLE session,
                 CK_SLOT_ID slot, const struct hs_pkcs11_key_opts *opts, const struct p11_uri *uri,
                 char **pin_copy)
{
	CK_TOKEN_INFO ti;
	char label[sizeof(ti.label) + 1], *pin = NULL;
	bool owned = false;
	CK_RV rv;
	int r;

	if ((rv = mod->f->C_GetTokenInfo(slot, &ti)) != CKR_OK)
		return hs_p11_error(ctx, rv, "C_GetTokenInfo");
	HS_P11_TEXT(label, ti.label);
	if (!(ti.flags & CKF_LOGIN_REQUIRED) && opts->pin == NULL && uri->pin_value == NULL)
		return 0;
	if (ti.flags & CKF_USER_PIN_LOCKED)
		return hs_error_set(
		        ctx, HS_ERR_DENIED,
		        "the PIN of PKCS#11 token '%s' is locked: unblock it with the SO "
		        "PIN or PUK",
		        label);
	if ((r = login_pin(ctx, &ti, label, opts, uri, &pin, &owned)) < 0)
		goto out;
	rv = mod->f->C_Login(session, CKU_USER, (CK_UTF8CHAR *)pin, pin ? strlen(pin) : 0);
	if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
		hs_log(ctx, HS_LOG_DEBUG, "logged in to PKCS#11 token '%s'", label);
		r = 0;
		if (pin_copy != NULL && pin != NULL && (*pin_copy = OPENSSL_strdup(pin)) == NULL)
			r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	} else {
		r = login_error(ctx, mod, slot, rv, label);
	}
out:
	if (owned)
		OPENSSL_clear_free(pin, P11_VALUE_MAX + 1);
	return r;
}
