/*
 * catalog.h - what cat.c (the catalog format) shares with catalog.c
 * (creating catalogs and looking files up in them).
 */
#ifndef HS_CATALOG_H
#define HS_CATALOG_H

#include <openssl/pkcs7.h>

#include "core/core.h"
#include "core/file.h"

/* Catalogs are read whole; driver catalogs are a few MiB at most. */
#define HS_CAT_MAX_SIZE (64u * 1024 * 1024)

/* Reads in whole into raw and parses it as exactly one DER PKCS#7. */
int hs_cat_read(struct hs_ctx *ctx, const struct hs_file *in, struct hs_buf *raw, PKCS7 **p7);
/* The full DER of the CTL inside a catalog (borrowed from p7), or NULL
 * with the message set when p7 is not a catalog. */
const ASN1_STRING *hs_cat_ctl(struct hs_ctx *ctx, const PKCS7 *p7, const char *path);
/* Appends an unsigned catalog (SignedData without signers) around ctl. */
int hs_cat_unsigned_der(struct hs_ctx *ctx, const uint8_t *ctl, size_t len, struct hs_buf *out);

#endif /* HS_CATALOG_H */
