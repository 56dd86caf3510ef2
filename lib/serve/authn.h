/*
 * authn.h - who is calling `hsmsign serve`, and may they use this key.
 *
 * Three kinds of caller identity:
 *   - OIDC: "Authorization: Bearer <JWT>" from a configured issuer (GitHub
 *     Actions, GitLab CI, Azure Pipelines, ...), verified against the
 *     issuer's JWKS (oidc.c);
 *   - API token: "Authorization: Bearer <token>" whose SHA-256 matches a
 *     configured "api_tokens" entry (the token itself is never stored);
 *   - mTLS: the verified client certificate's subject, passed in by the
 *     server.
 * Token bytes never reach messages, logs or the identity.
 */
#ifndef HS_SERVE_AUTHN_H
#define HS_SERVE_AUTHN_H

#include <stddef.h>

#include <jansson.h>

#include "core/core.h"

struct hs_authn; /* verifiers for the config's "issuers" and "api_tokens"; thread-safe after
                    creation */

struct hs_identity {
	char kind[16];  /* "oidc", "api-token", "mtls" */
	char name[256]; /* for audit: "iss|sub", the token's name, or the cert subject */
	json_t *claims; /* owned: OIDC claims; {"api_token": NAME} for API tokens; {"mtls_subject":
	                   S} for mTLS */
};

/* Reads root["issuers"] and root["api_tokens"]; JWKS fetched lazily on first use and cached
 * (refetched on unknown kid, at most once per 60 s, and after max-age). */
int hs_authn_new(struct hs_ctx *ctx, const json_t *root, struct hs_authn **out);
void hs_authn_free(struct hs_authn *a);

/* authorization: the Authorization header value or NULL; client_cert_subject: verified mTLS
 * client subject or NULL.
 * 0 and *out filled, or HS_ERR_AUTH with a one-line reason in ctx ("token expired",
 * "audience 'x' not accepted", "signature does not verify", "issuer 'x' not configured")
 * — never token bytes. HS_ERR_NETWORK (not the caller's fault: answer 503 so that clients
 * retry) when a configured issuer's JWKS cannot be fetched. */
int hs_authn_check(struct hs_ctx *ctx, struct hs_authn *a, const char *authorization,
                   const char *client_cert_subject, struct hs_identity *out);
void hs_identity_clear(struct hs_identity *id);

/* rules: a key's "allow" array. 1 allowed, 0 denied (why: which claim did not match), <0 error. */
int hs_policy_allows(const json_t *rules, const struct hs_identity *id, char *why, size_t why_len);

#endif /* HS_SERVE_AUTHN_H */
