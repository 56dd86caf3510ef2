/* version.c - what hsmsign --version reports: our version, the git revision
 * baked in at configure time (cmake/install.cmake), and the versions of the
 * libraries actually loaded at run time, which may differ from the headers
 * we were built against. */
#include <jansson.h>
#include <openssl/crypto.h>

#include "curl_api.h"
#include "hsmsign.h"

#ifndef HSMSIGN_GIT_REVISION
#define HSMSIGN_GIT_REVISION "unknown"
#endif

void hs_version_get(struct hs_version_info *out)
{
	/* Where libcurl is loaded on first use, this loads it. */
	const curl_version_info_data *curl =
	        hs_curl_api_load(NULL, 0) ? curl_version_info(CURLVERSION_NOW) : NULL;

	out->version = HS_VERSION;
	out->git_revision = HSMSIGN_GIT_REVISION;
	out->openssl = OpenSSL_version(OPENSSL_VERSION_STRING);
	out->curl = curl ? curl->version : "not loadable";
	out->jansson = jansson_version_str();
}
