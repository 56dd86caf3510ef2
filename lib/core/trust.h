/*
 * trust.h - the TLS roots of the HTTPS clients (http.c), read once per
 * process.
 *
 * libcurl makes a new SSL_CTX for every connection and, when it has a CA
 * directory built in (Debian's and Ubuntu's libcurl: /etc/ssl/certs, which
 * turns libcurl's own CA cache off), parses the whole CA bundle again for
 * each: about 30 ms of CPU for Debian's 144 roots with OpenSSL 3.0. The
 * clients instead share one X509_STORE holding what libcurl would trust:
 * the CA file (--ca-file, SSL_CERT_FILE or libcurl's built-in bundle) and
 * libcurl's built-in CA directory, looked up when needed, with libcurl's
 * partial-chain flag. Where libcurl has no CA directory, a given CA file
 * is read together with the built-in bundle: --ca-file adds roots, it
 * never takes the system's away. The store of the last CA file asked for is cached
 * for the life of the process, so hs_tls_preload() can read it ahead.
 * A file of plain certificates is only indexed by subject (~4 ms for that
 * bundle); a certificate is decoded when a chain first asks for its
 * subject, as OpenSSL does for a CA directory. Any other file is read
 * whole.
 */
#ifndef HS_TRUST_H
#define HS_TRUST_H

#include <stdbool.h>

#include <openssl/x509.h>

/* The CA file a client uses: configured (--ca-file), else SSL_CERT_FILE,
 * else NULL (the built-in bundle). */
const char *hs_trust_ca_file(const char *configured);

/* False when libcurl cannot tell its built-in CA paths (before 7.84):
 * then libcurl loads the roots itself. */
bool hs_trust_available(void);

/* A new reference to the store for ca_file (NULL: libcurl's built-in
 * bundle), reading it unless cached; NULL if it cannot be read. */
X509_STORE *hs_trust_store(const char *ca_file);

/* A new store for ca_file (NULL: the built-in bundle), read now and not
 * cached: what hs_trust_store() caches (and the fuzzer reads). Call
 * hs_trust_available() first. NULL if it cannot be read. */
X509_STORE *hs_trust_load(const char *ca_file);
/* hs_trust_load() with libcurl's built-in CA file and directory given
 * (either may be NULL): ca_file, or default_file when it is NULL, plus
 * default_dir; and default_file as well when ca_file is given but there is
 * no default_dir, so that ca_file always adds to the system's roots. */
X509_STORE *hs_trust_load_from(const char *ca_file, const char *default_file,
                               const char *default_dir);

/* The file hs_trust_store(ca_file) reads, for messages (static or ca_file). */
const char *hs_trust_file_name(const char *ca_file);

#endif /* HS_TRUST_H */
