/* mhd_api.c - loads libmicrohttpd and GnuTLS when `hsmsign serve` starts
 * (mhd_api.h; lib/core/curl_api.c says why by hand). */
#include "core/dynlib.h"
#include "mhd_api.h"

#if !defined(HSMSIGN_MHD_SONAME) || !defined(HSMSIGN_GNUTLS_SONAME)
#error "HSMSIGN_MHD_SONAME and HSMSIGN_GNUTLS_SONAME (CMakeLists.txt) name the libraries"
#endif

struct hs_mhd_api hs_mhd_api;

static struct hs_dynlib_state mhd_api_state = HS_DYNLIB_STATE_INIT;

static void mhd_api_load_once(void)
{
	struct hs_dynlib_state *st = &mhd_api_state;
	struct hs_mhd_api api;
	/* GnuTLS is libmicrohttpd's own dependency: opening it by name only
	 * takes a reference to the copy already loaded. */
	void *mhd =
	        hs_dynlib_open(HSMSIGN_MHD_SONAME, "load-libmicrohttpd", st->why, sizeof(st->why));
	void *tls =
	        mhd ? hs_dynlib_open(HSMSIGN_GNUTLS_SONAME, NULL, st->why, sizeof(st->why)) : NULL;

	if (tls == NULL)
		return;
#define HS_MHD_LOAD(name) HS_DYNLIB_SYM(mhd, HSMSIGN_MHD_SONAME, &api, name, "MHD_" #name, st->why);
#define HS_GNUTLS_LOAD(name)                                                                       \
	HS_DYNLIB_SYM(tls, HSMSIGN_GNUTLS_SONAME, &api, name, "gnutls_" #name, st->why);
	HS_MHD_FUNCTIONS(HS_MHD_LOAD)
	HS_GNUTLS_FUNCTIONS(HS_GNUTLS_LOAD)
#undef HS_MHD_LOAD
#undef HS_GNUTLS_LOAD
	hs_mhd_api = api;
	st->loaded = true;
}

bool hs_mhd_api_load(char *why, size_t why_size)
{
	return hs_dynlib_load(&mhd_api_state, mhd_api_load_once, why, why_size);
}
