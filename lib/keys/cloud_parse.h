/*
 * cloud_parse.h - the parsers of cloud KMS answers that are not plain
 * jansson lookups, exported so that tests/fuzz/fuzz_cloud.c can reach
 * them: Trusted Signing status bodies (with the double-base64 PKCS#7
 * chain), Vault "vault:vN:" signatures, AWS STS XML.
 */
#ifndef HS_CLOUD_PARSE_H
#define HS_CLOUD_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/* trusted.c: one sign/poll answer: 1 succeeded (chain decoded and
 * ordered), 0 still running, or a negative error. */
int hs_trusted_parse_answer(struct hs_ctx *ctx, long status, const uint8_t *body, size_t len);

/* hcvault.c: "vault:v<N>:<base64>" into the signature bytes (appended). */
int hs_vault_parse_signature(struct hs_ctx *ctx, const char *value, struct hs_buf *sig);

/* aws_creds.c: an AssumeRoleWithWebIdentity answer (credentials or error). */
int hs_aws_parse_sts(struct hs_ctx *ctx, long status, const uint8_t *body, size_t len);

#endif /* HS_CLOUD_PARSE_H */
