/*
 * cms.h - plain CMS SignedData for formats that are not Authenticode
 * (NuGet author signatures): id-data content, signed attributes
 * contentType, signingTime, messageDigest, commitment-type-indication
 * proofOfOrigin and signing-certificate-v2; RFC 3161 timestamps in the
 * standard attribute id-aa-signatureTimeStampToken.
 */
#ifndef HS_CMS_H
#define HS_CMS_H

#include <openssl/x509.h>

#include "core/core.h"
#include "keys/provider.h"

struct hs_format;

/* Signs content (carried as id-data) with key and appends the DER
 * ContentInfo(SignedData) to out. */
int hs_cms_sign(struct hs_ctx *ctx, struct hs_key *key, const EVP_MD *md, const uint8_t *content,
                size_t len, struct hs_buf *out);

/* Timestamps the signer of der (RFC 3161 only) and stores the token in
 * id-aa-signatureTimeStampToken (1.2.840.113549.1.9.16.2.14). */
int hs_cms_timestamp(struct hs_ctx *ctx, const struct hs_timestamp_opts *opts, const uint8_t *der,
                     size_t len, struct hs_buf *out);

/* Verifies der as fmt's plain CMS signature of the open file `state`:
 * content (recomputed by fmt->digest), messageDigest, signature value,
 * signing-certificate-v2, timestamp, chain and codeSigning EKU. The
 * verdict goes to info; returns a negative error only when verification
 * could not run (memory). */
int hs_cms_verify(struct hs_ctx *ctx, X509_STORE *store, X509_STORE *tsa_store,
                  const struct hs_format *fmt, void *state, const uint8_t *der, size_t len,
                  struct hs_signature_info *info);

#endif /* HS_CMS_H */
