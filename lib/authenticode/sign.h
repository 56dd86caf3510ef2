/*
 * sign.h - the signing engine's pieces that two-step signing (detached.c)
 * reuses, so that a signature finished later is byte for byte the one a
 * single run makes.
 */
#ifndef HS_SIGN_H
#define HS_SIGN_H

#include "core/file.h"
#include "formats/format.h"
#include "keys/provider.h"

/* One complete signature with `digest` over doc: file digest (copying the
 * unsigned image into copy unless NULL), SignedData signed by key,
 * timestamp when opts ask for one. Appends the DER ContentInfo to p7. */
int hs_sign_one(struct hs_ctx *ctx, struct hs_key *key, struct hs_doc *doc,
                const struct hs_sign_opts *opts, enum hs_digest digest, struct hs_out *copy,
                struct hs_buf *p7);

#endif /* HS_SIGN_H */
