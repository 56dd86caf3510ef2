/*
 * p11shim.c - a PKCS#11 module for the tests that forwards every call to a
 * real module (P11SHIM_MODULE, e.g. SoftHSM) while
 *  - appending one line per C_Login / C_OpenSession / C_Sign call to
 *    P11SHIM_LOG, so a test can count logins honestly, outside hsmsign;
 *  - injecting the failures SoftHSM cannot produce, chosen by the
 *    comma-separated P11SHIM_FAULT: pin-locked (C_Login), final-try (token
 *    flag with a wrong PIN), removed (C_Sign: CKR_DEVICE_REMOVED), no-mech
 *    (C_GetMechanismInfo and C_SignInit: CKR_MECHANISM_INVALID).
 * Built by tests/e2e/test_pkcs11.py with the system compiler.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST shim_list;
static CK_FUNCTION_LIST *real;

static int fault(const char *name)
{
	const char *f = getenv("P11SHIM_FAULT");

	return f != NULL && strstr(f, name) != NULL;
}

static void log_call(const char *what)
{
	const char *path = getenv("P11SHIM_LOG");
	int fd;

	if (path == NULL || (fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600)) < 0)
		return;
	if (write(fd, what, strlen(what)) < 0 || write(fd, "\n", 1) < 0)
		; /* a test that misses a line fails on its count */
	close(fd);
}

static CK_RV shim_login(CK_SESSION_HANDLE s, CK_USER_TYPE type, CK_UTF8CHAR *pin, CK_ULONG len)
{
	log_call(type == CKU_CONTEXT_SPECIFIC ? "C_Login context" : "C_Login");
	if (fault("pin-locked"))
		return CKR_PIN_LOCKED;
	return real->C_Login(s, type, pin, len);
}

static CK_RV shim_get_token_info(CK_SLOT_ID slot, CK_TOKEN_INFO *info)
{
	CK_RV rv = real->C_GetTokenInfo(slot, info);

	if (rv == CKR_OK && fault("final-try"))
		info->flags |= CKF_USER_PIN_FINAL_TRY;
	return rv;
}

static CK_RV shim_open_session(CK_SLOT_ID slot, CK_FLAGS flags, void *app, CK_NOTIFY notify,
                               CK_SESSION_HANDLE *out)
{
	log_call("C_OpenSession");
	return real->C_OpenSession(slot, flags, app, notify, out);
}

static CK_RV shim_sign(CK_SESSION_HANDLE s, CK_BYTE *data, CK_ULONG len, CK_BYTE *sig,
                       CK_ULONG *sig_len)
{
	log_call("C_Sign");
	if (fault("removed")) {
		/* Ends the operation as a real removal would. */
		real->C_Sign(s, data, len, sig, sig_len);
		return CKR_DEVICE_REMOVED;
	}
	return real->C_Sign(s, data, len, sig, sig_len);
}

static CK_RV shim_mech_info(CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO *info)
{
	if (fault("no-mech"))
		return CKR_MECHANISM_INVALID;
	return real->C_GetMechanismInfo(slot, type, info);
}

static CK_RV shim_sign_init(CK_SESSION_HANDLE s, CK_MECHANISM *mech, CK_OBJECT_HANDLE key)
{
	if (fault("no-mech"))
		return CKR_MECHANISM_INVALID;
	return real->C_SignInit(s, mech, key);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST **out)
{
	const char *path = getenv("P11SHIM_MODULE");
	CK_C_GetFunctionList get;
	void *dl;

	if (real == NULL) {
		if (path == NULL || (dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL)
			return CKR_GENERAL_ERROR;
		*(void **)&get = dlsym(dl, "C_GetFunctionList");
		if (get == NULL || get(&real) != CKR_OK)
			return CKR_GENERAL_ERROR;
		shim_list = *real;
		shim_list.C_Login = shim_login;
		shim_list.C_GetTokenInfo = shim_get_token_info;
		shim_list.C_OpenSession = shim_open_session;
		shim_list.C_Sign = shim_sign;
		shim_list.C_GetMechanismInfo = shim_mech_info;
		shim_list.C_SignInit = shim_sign_init;
	}
	*out = &shim_list;
	return CKR_OK;
}
