/*
 * dynlib.h - shared libraries loaded on first use instead of linked
 * (libcurl: curl_api.h; libmicrohttpd and GnuTLS for `hsmsign serve`:
 * lib/serve/mhd_api.h). Each user keeps a table of function pointers,
 * one member per function, typed from the library's own declaration, and
 * a loader that fills it with HS_DYNLIB_SYM(), run once per process by
 * hs_dynlib_load().
 */
#ifndef HS_DYNLIB_H
#define HS_DYNLIB_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

/* One table's loading: run once, its result and, on failure, why. */
struct hs_dynlib_state {
	pthread_once_t once;
	bool loaded;   /* set by the loader when the table is complete */
	char why[512]; /* set by the loader when it is not */
};
#define HS_DYNLIB_STATE_INIT                                                                       \
	{                                                                                          \
		PTHREAD_ONCE_INIT, false, ""                                                       \
	}

/* Runs load (which sets st->loaded or st->why) once per process; true when
 * it succeeded, else false with st->why copied to why (may be NULL).
 * Thread-safe; a failure is not retried. */
bool hs_dynlib_load(struct hs_dynlib_state *st, void (*load)(void), char *why, size_t why_size);

/* dlopen(soname); when HSMSIGN_FAULT names fault_point (tests; NULL:
 * none), a name no system has instead, so that the real failure path
 * runs. NULL with dlerror()'s reason in why. Never closed: the table's pointers stay valid
 * until exit, and a failed load is not retried. */
void *hs_dynlib_open(const char *soname, const char *fault_point, char *why, size_t why_size);

/* The address of `name` in lib, or NULL with "SONAME has no NAME" in why. */
void *hs_dynlib_sym(void *lib, const char *soname, const char *name, char *why, size_t why_size);

/* Sets api->member to lib's function `symbol` (a string), or returns from
 * the (void) loader with the reason in why (an array). POSIX guarantees
 * that dlsym()'s void * converts to a function pointer. */
#define HS_DYNLIB_SYM(lib, soname, api, member, symbol, why)                                       \
	do {                                                                                       \
		void *hs_sym_ = hs_dynlib_sym(lib, soname, symbol, why, sizeof(why));              \
		if (hs_sym_ == NULL)                                                               \
			return;                                                                    \
		(api)->member = (__typeof__((api)->member))hs_sym_;                                \
	} while (0)

#endif
