/*
 * nest.h - nested signatures (authenticode.md 4): complete SignedData
 * ContentInfos held as the values of unsigned attribute
 * 1.3.6.1.4.1.311.2.4.1 of the primary SignerInfo. Index 0 names the
 * primary signature, 1.. the nested ones in the order they are encoded.
 * Everything here works on the DER PKCS#7 alone, so every format that
 * allows nesting gets it the same way.
 */
#ifndef HS_NEST_H
#define HS_NEST_H

#include <openssl/evp.h>

#include "core/core.h"

/* Most nested signatures written (verify.c examines as many). */
#define HS_NEST_MAX 16

/* The file digest algorithm of the primary signature in der. */
int hs_nest_primary_md(struct hs_ctx *ctx, const uint8_t *der, size_t len, const EVP_MD **out);

/* Appends the re-encoded der with the n ContentInfos in nested[] added as
 * values of its (first) nested-signature attribute. */
int hs_nest_add(struct hs_ctx *ctx, const uint8_t *der, size_t len, const struct hs_buf *nested,
                size_t n, struct hs_buf *out);

/* Appends der without nested signature `index` (>= 1). */
int hs_nest_remove(struct hs_ctx *ctx, const uint8_t *der, size_t len, unsigned index,
                   struct hs_buf *out);

/* Appends the DER ContentInfo of nested signature `index` (>= 1). */
int hs_nest_get(struct hs_ctx *ctx, const uint8_t *der, size_t len, unsigned index,
                struct hs_buf *out);

struct hs_doc;
struct hs_out;

/* Writes doc without its signature to out, as signing with md would
 * (md: the primary signature's, so that an MSI pre-hash stays the same);
 * doc->format->embed() then finishes out with a PKCS#7. */
int hs_doc_copy_unsigned(struct hs_ctx *ctx, struct hs_doc *doc, const EVP_MD *md,
                         struct hs_out *out);

#endif /* HS_NEST_H */
