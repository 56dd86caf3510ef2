/*
 * curl_api.h - libcurl as libhsmsign calls it. Include this instead of
 * <curl/curl.h>.
 *
 * On Linux builds (HSMSIGN_LAZY_CURL, CMake option HSMSIGN_LAZY_LOAD)
 * libcurl is not linked: it is loaded with dlopen() the first time a
 * command needs the network (hs_curl_api_load(), called from
 * hs_http_global_init()). Linking it costs every run about 6 ms of
 * process start, because libcurl brings in some 25 more shared libraries
 * (Kerberos, LDAP, SASL, SSH, RTMP with GnuTLS, ...) whose loading and
 * constructors run before main(); a local signing run needs none of them
 * (docs/PERFORMANCE.md, "Startup").
 *
 * The functions are then called through one table of pointers filled by
 * dlsym(). The macros below make every call site read as an ordinary
 * libcurl call: `curl_easy_init()` becomes `(*hs_curl_api.easy_init)()`.
 * Variadic functions (curl_easy_setopt, ...) are called through pointers of
 * their own variadic type, so their arguments pass exactly as in a direct
 * call. curl's compile-time type checks of curl_easy_setopt() and
 * curl_easy_getinfo() arguments are macros that only a direct call can
 * use; builds without lazy loading (the sanitizer build in `make check`,
 * Windows, macOS) keep them.
 *
 * Nothing here may be called before hs_curl_api_load() has returned true.
 */
#ifndef HS_CURL_API_H
#define HS_CURL_API_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>

/* Every libcurl function libhsmsign calls, without the curl_ prefix (a
 * macro argument naming a function would be replaced by the #define
 * below). A new call needs a line here and a #define below: without them
 * it is an undefined reference when linking, since libcurl is not
 * linked. */
#define HS_CURL_FUNCTIONS(X)                                                                       \
	X(easy_cleanup)                                                                            \
	X(easy_escape)                                                                             \
	X(easy_getinfo)                                                                            \
	X(easy_init)                                                                               \
	X(easy_perform)                                                                            \
	X(easy_reset)                                                                              \
	X(easy_setopt)                                                                             \
	X(easy_strerror)                                                                           \
	X(free)                                                                                    \
	X(getdate)                                                                                 \
	X(global_init)                                                                             \
	X(multi_add_handle)                                                                        \
	X(multi_cleanup)                                                                           \
	X(multi_info_read)                                                                         \
	X(multi_init)                                                                              \
	X(multi_perform)                                                                           \
	X(multi_poll)                                                                              \
	X(multi_remove_handle)                                                                     \
	X(multi_setopt)                                                                            \
	X(multi_wakeup)                                                                            \
	X(share_cleanup)                                                                           \
	X(share_init)                                                                              \
	X(share_setopt)                                                                            \
	X(slist_append)                                                                            \
	X(slist_free_all)                                                                          \
	X(url)                                                                                     \
	X(url_cleanup)                                                                             \
	X(url_get)                                                                                 \
	X(url_set)                                                                                 \
	X(version_info)

#ifdef HSMSIGN_LAZY_CURL

/* curl.h's type-checking wrappers (GCC, Clang) are function-like macros of
 * the same names; the table needs the plain declarations. */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_multi_setopt
#undef curl_share_setopt

/* One pointer per function, typed from libcurl's own declaration. */
struct hs_curl_api {
#define HS_CURL_MEMBER(name) __typeof__(curl_##name) *name;
	HS_CURL_FUNCTIONS(HS_CURL_MEMBER)
#undef HS_CURL_MEMBER
};

/* Filled once by hs_curl_api_load(); read-only afterwards. */
extern struct hs_curl_api hs_curl_api;

/* Loads libcurl (the SONAME found at configure time, HSMSIGN_CURL_SONAME)
 * and every function above, once per process. true when loaded; false with
 * the reason in why (dlerror(): the file and what is missing), every time
 * after a failure. Thread-safe. */
bool hs_curl_api_load(char *why, size_t why_size);

#define curl_easy_cleanup        (*hs_curl_api.easy_cleanup)
#define curl_easy_escape         (*hs_curl_api.easy_escape)
#define curl_easy_getinfo        (*hs_curl_api.easy_getinfo)
#define curl_easy_init           (*hs_curl_api.easy_init)
#define curl_easy_perform        (*hs_curl_api.easy_perform)
#define curl_easy_reset          (*hs_curl_api.easy_reset)
#define curl_easy_setopt         (*hs_curl_api.easy_setopt)
#define curl_easy_strerror       (*hs_curl_api.easy_strerror)
#define curl_free                (*hs_curl_api.free)
#define curl_getdate             (*hs_curl_api.getdate)
#define curl_global_init         (*hs_curl_api.global_init)
#define curl_multi_add_handle    (*hs_curl_api.multi_add_handle)
#define curl_multi_cleanup       (*hs_curl_api.multi_cleanup)
#define curl_multi_info_read     (*hs_curl_api.multi_info_read)
#define curl_multi_init          (*hs_curl_api.multi_init)
#define curl_multi_perform       (*hs_curl_api.multi_perform)
#define curl_multi_poll          (*hs_curl_api.multi_poll)
#define curl_multi_remove_handle (*hs_curl_api.multi_remove_handle)
#define curl_multi_setopt        (*hs_curl_api.multi_setopt)
#define curl_multi_wakeup        (*hs_curl_api.multi_wakeup)
#define curl_share_cleanup       (*hs_curl_api.share_cleanup)
#define curl_share_init          (*hs_curl_api.share_init)
#define curl_share_setopt        (*hs_curl_api.share_setopt)
#define curl_slist_append        (*hs_curl_api.slist_append)
#define curl_slist_free_all      (*hs_curl_api.slist_free_all)
#define curl_url                 (*hs_curl_api.url)
#define curl_url_cleanup         (*hs_curl_api.url_cleanup)
#define curl_url_get             (*hs_curl_api.url_get)
#define curl_url_set             (*hs_curl_api.url_set)
#define curl_version_info        (*hs_curl_api.version_info)

#else /* libcurl linked */

static inline bool hs_curl_api_load(char *why, size_t why_size)
{
	(void)why;
	(void)why_size;
	return true;
}

#endif

#endif
