/*
 * curl_api.c - loads libcurl on first use (Linux builds; curl_api.h says
 * why). Written here rather than taken from a library: the one tool that
 * generates such loaders (Implib.so) is not packaged for Debian, and the
 * table is 30 lines.
 */
#include "curl_api.h"
#include "dynlib.h"

#ifndef HSMSIGN_CURL_SONAME
#error "HSMSIGN_CURL_SONAME (set by CMakeLists.txt) names the libcurl to load"
#endif

struct hs_curl_api hs_curl_api;

static struct hs_dynlib_state curl_api_state = HS_DYNLIB_STATE_INIT;

static void curl_api_load_once(void)
{
	struct hs_dynlib_state *st = &curl_api_state;
	struct hs_curl_api api;
	void *lib = hs_dynlib_open(HSMSIGN_CURL_SONAME, "load-libcurl", st->why, sizeof(st->why));

	if (lib == NULL)
		return;
#define HS_CURL_LOAD(name)                                                                         \
	HS_DYNLIB_SYM(lib, HSMSIGN_CURL_SONAME, &api, name, "curl_" #name, st->why);
	HS_CURL_FUNCTIONS(HS_CURL_LOAD)
#undef HS_CURL_LOAD
	hs_curl_api = api;
	st->loaded = true;
}

bool hs_curl_api_load(char *why, size_t why_size)
{
	return hs_dynlib_load(&curl_api_state, curl_api_load_once, why, why_size);
}
