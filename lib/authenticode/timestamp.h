/*
 * timestamp.h - countersigning a SignerInfo by a time-stamping authority
 * (authenticode.md 3): RFC 3161 tokens in unsigned attribute
 * 1.3.6.1.4.1.311.3.3.1, or legacy Authenticode counterSignatures
 * (1.2.840.113549.1.9.6). Works on the PKCS#7 alone, so every format gets
 * timestamps the same way.
 */
#ifndef HS_TIMESTAMP_H
#define HS_TIMESTAMP_H

#include <stdbool.h>
#include <time.h>

#include <openssl/pkcs7.h>
#include <openssl/x509.h>

#include "core/core.h"

#define HS_OID_SPC_TIME_STAMP_REQUEST "1.3.6.1.4.1.311.3.2.1"

/* Longest TSA reply accepted; real tokens are a few KiB. */
#define HS_TS_REPLY_MAX (256 * 1024)

/* True when opts names at least one TSA. */
bool hs_ts_wanted(const struct hs_timestamp_opts *opts);

/*
 * Timestamps signature `index` (0 primary, 1.. nested) of the DER
 * ContentInfo(SignedData) in der, replacing any timestamp it had, and
 * appends the re-encoded ContentInfo to out. The signature values are not
 * touched. With opts->optional, a failure of every TSA logs a warning and
 * appends der unchanged.
 */
int hs_ts_stamp_der(struct hs_ctx *ctx, const struct hs_timestamp_opts *opts, const uint8_t *der,
                    size_t len, unsigned index, struct hs_buf *out);

/* What verification learnt about one signer's timestamp. */
struct hs_ts_info {
	int kind;        /* 0 none, 1 RFC 3161, 2 legacy Authenticode */
	time_t gen_time; /* when valid */
	char time_text[32];
	char tsa_subject[256];
	char digest[16];
	char reason[256]; /* when invalid */
};

/*
 * Verifies the timestamp of si (a SignerInfo of p7): the token's signature,
 * its chain to tsa_store for the timeStamping purpose (critical EKU), and
 * that it covers si's signature value. Returns 0 (out->kind 0 when there is
 * none), 1 when a timestamp is present but invalid (out->reason says why),
 * or a negative error (memory).
 */
/* Whether the SignerInfo carries a timestamp attribute (RFC 3161 or legacy). */
bool hs_ts_present(const PKCS7_SIGNER_INFO *si);

int hs_ts_verify(struct hs_ctx *ctx, X509_STORE *tsa_store, const PKCS7 *p7,
                 const PKCS7_SIGNER_INFO *si, struct hs_ts_info *out);

#endif /* HS_TIMESTAMP_H */
