/*
 * mhd_api.h - libmicrohttpd and GnuTLS as `hsmsign serve` calls them.
 * Include this instead of <microhttpd.h> and <gnutls/gnutls.h>.
 *
 * Where HSMSIGN_LAZY_MHD is defined (Linux builds, CMake option
 * HSMSIGN_LAZY_LOAD), neither library is linked into hsmsign: only
 * `hsmsign serve` uses them, and linking them cost every other command
 * 2-3 ms of process start. hs_mhd_api_load() loads them when the server
 * starts; the calls then go through a table of pointers, as for libcurl
 * (lib/core/curl_api.h, which explains the macros).
 */
#ifndef HS_MHD_API_H
#define HS_MHD_API_H

#include <stdbool.h>
#include <stddef.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>

/* Every function of the two libraries that serve calls, without the
 * MHD_ or gnutls_ prefix (curl_api.h says why); a new call needs a line
 * here and a #define below. */
#define HS_MHD_FUNCTIONS(X)                                                                        \
	X(add_response_header)                                                                     \
	X(create_response_from_buffer)                                                             \
	X(destroy_response)                                                                        \
	X(get_connection_info)                                                                     \
	X(get_connection_values)                                                                   \
	X(get_daemon_info)                                                                         \
	X(lookup_connection_value)                                                                 \
	X(queue_response)                                                                          \
	X(quiesce_daemon)                                                                          \
	X(resume_connection)                                                                       \
	X(start_daemon)                                                                            \
	X(stop_daemon)                                                                             \
	X(suspend_connection)

#define HS_GNUTLS_FUNCTIONS(X)                                                                     \
	X(certificate_get_peers)                                                                   \
	X(certificate_verify_peers2)

#ifdef HSMSIGN_LAZY_MHD

struct hs_mhd_api {
#define HS_MHD_MEMBER(name)    __typeof__(MHD_##name) *name;
#define HS_GNUTLS_MEMBER(name) __typeof__(gnutls_##name) *name;
	HS_MHD_FUNCTIONS(HS_MHD_MEMBER)
	HS_GNUTLS_FUNCTIONS(HS_GNUTLS_MEMBER)
#undef HS_MHD_MEMBER
#undef HS_GNUTLS_MEMBER
};

/* Filled once by hs_mhd_api_load(); read-only afterwards. */
extern struct hs_mhd_api hs_mhd_api;

/* Loads libmicrohttpd and GnuTLS (HSMSIGN_MHD_SONAME, HSMSIGN_GNUTLS_SONAME,
 * found at configure time) once per process. true when loaded; false with
 * the reason in why, every time after a failure. Thread-safe. */
bool hs_mhd_api_load(char *why, size_t why_size);

#define MHD_add_response_header          (*hs_mhd_api.add_response_header)
#define MHD_create_response_from_buffer  (*hs_mhd_api.create_response_from_buffer)
#define MHD_destroy_response             (*hs_mhd_api.destroy_response)
#define MHD_get_connection_info          (*hs_mhd_api.get_connection_info)
#define MHD_get_connection_values        (*hs_mhd_api.get_connection_values)
#define MHD_get_daemon_info              (*hs_mhd_api.get_daemon_info)
#define MHD_lookup_connection_value      (*hs_mhd_api.lookup_connection_value)
#define MHD_queue_response               (*hs_mhd_api.queue_response)
#define MHD_quiesce_daemon               (*hs_mhd_api.quiesce_daemon)
#define MHD_resume_connection            (*hs_mhd_api.resume_connection)
#define MHD_start_daemon                 (*hs_mhd_api.start_daemon)
#define MHD_stop_daemon                  (*hs_mhd_api.stop_daemon)
#define MHD_suspend_connection           (*hs_mhd_api.suspend_connection)
#define gnutls_certificate_get_peers     (*hs_mhd_api.certificate_get_peers)
#define gnutls_certificate_verify_peers2 (*hs_mhd_api.certificate_verify_peers2)

#else /* linked */

static inline bool hs_mhd_api_load(char *why, size_t why_size)
{
	(void)why;
	(void)why_size;
	return true;
}

#endif

#endif
