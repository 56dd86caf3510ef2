/*
 * lazy_deps.c - not installed. Linked like hsmsign was before it loaded
 * libcurl (and, with HS_DEPS_SERVE, libmicrohttpd and GnuTLS) on first use
 * (lib/core/curl_api.h), and referencing every function it calls in them.
 * debian/rules hands it to dpkg-shlibdeps, so that the packages depend on
 * those libraries, at the versions these functions need, although the
 * binaries no longer name them as NEEDED.
 */
#include "core/curl_api.h"
#ifdef HS_DEPS_SERVE
#include "serve/mhd_api.h"
#endif

int main(void);

int main(void)
{
	void (*volatile sink)(void);

#define HS_DEPS_CURL(name) sink = (void (*)(void))curl_##name;
	HS_CURL_FUNCTIONS(HS_DEPS_CURL)
#ifdef HS_DEPS_SERVE
#define HS_DEPS_MHD(name)    sink = (void (*)(void))MHD_##name;
#define HS_DEPS_GNUTLS(name) sink = (void (*)(void))gnutls_##name;
	HS_MHD_FUNCTIONS(HS_DEPS_MHD)
	HS_GNUTLS_FUNCTIONS(HS_DEPS_GNUTLS)
#endif
	(void)sink;
	return 0;
}
