/*
 * pkcs7.h - builds the Authenticode PKCS#7 SignedData (authenticode.md 2):
 * version 1, SpcIndirectDataContent as a SEQUENCE, signed attributes without
 * signingTime, certificates DER-sorted and de-duplicated, signature from a
 * key provider.
 */
#ifndef HS_PKCS7_H
#define HS_PKCS7_H

#include "core/core.h"
#include "keys/provider.h"

struct hs_p7_params {
	const EVP_MD *md;
	const uint8_t *spc_der; /* DER SpcIndirectDataContent (or content_oid's) */
	size_t spc_len;
	const char *description; /* or NULL */
	const char *url;         /* or NULL */
	/* Content type of spc_der; NULL: SpcIndirectDataContent. Catalogs sign
	 * their CTL (HS_OID_CTL) as it is (authenticode.md 8). */
	const char *content_oid;
};

/* Signs and appends the DER ContentInfo(SignedData) to out. */
int hs_p7_sign(struct hs_ctx *ctx, struct hs_key *key, const struct hs_p7_params *params,
               struct hs_buf *out);

/* Hashes the DER SET of si's signed attributes (sorted as encoded) and
 * sets si's signature from the key (checked against its certificate). */
int hs_p7_sign_attrs(struct hs_ctx *ctx, struct hs_key *key, PKCS7_SIGNER_INFO *si,
                     const EVP_MD *md);

#endif /* HS_PKCS7_H */
