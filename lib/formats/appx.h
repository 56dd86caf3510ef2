/* appx.h - what appx.c exposes besides its format (for tests). */
#ifndef HS_APPX_H
#define HS_APPX_H

#include <stdbool.h>

#include <openssl/x509.h>

/*
 * Whether an AppxManifest Publisher string names `subject` the way Windows
 * compares them: the same attributes in the same order (most specific
 * first, as Windows prints names), attribute types case-insensitive with
 * S = ST and E = emailAddress, values compared after trimming spaces and
 * removing quotes and escapes.
 */
bool hs_appx_same_publisher(const char *publisher, const X509_NAME *subject);

#endif /* HS_APPX_H */
