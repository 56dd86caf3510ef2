/*
 * oidc.h - internal to lib/serve: the OIDC verifier behind hs_authn_check()
 * (JWT signature against the issuer's JWKS, then iss/aud/exp/nbf/iat), and
 * hooks that let unit tests and fuzzers set the clock and the keys.
 */
#ifndef HS_SERVE_OIDC_H
#define HS_SERVE_OIDC_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/core.h"

struct hs_authn;

/* The configured issuers with their JWKS caches; thread-safe after creation. */
struct hs_oidc;

/* Longest token (JWT or API token) accepted, in bytes. */
#define HS_OIDC_TOKEN_MAX 16384
/* Unknown kid: the JWKS is fetched again at most this often (seconds). */
#define HS_OIDC_REFETCH_INTERVAL 60
/* A failed first JWKS fetch is not retried sooner than this (seconds); a
 * failed refresh (cached keys stay in use) not sooner than
 * HS_OIDC_REFETCH_INTERVAL. */
#define HS_OIDC_RETRY_INTERVAL 10
/* JWKS kept this long before a refetch, unless the issuer says
 * "jwks_max_age_seconds" (seconds). */
#define HS_OIDC_DEFAULT_MAX_AGE 3600

/*
 * Reads the config's "issuers" array (NULL: none). Every error names the
 * JSON path ("issuers[1].audiences: ..."). *out belongs to the caller
 * (hs_oidc_free).
 */
int hs_oidc_new(struct hs_ctx *ctx, const json_t *issuers, struct hs_oidc **out);
void hs_oidc_free(struct hs_oidc *o);

/* Whether a bearer token looks like a compact JWS (three base64url parts). */
int hs_oidc_is_jwt(const char *token, size_t len);

/*
 * Verifies a compact JWS from a configured issuer: signature with a key of
 * the issuer's JWKS (fetched on first use, refetched on an unknown kid at
 * most every HS_OIDC_REFETCH_INTERVAL seconds and after the max age), then
 * iss, aud, exp, nbf and iat with the issuer's leeway. *claims (caller owns)
 * is the verified payload. HS_ERR_AUTH with a one-line reason for a token
 * that is refused; HS_ERR_NETWORK when the issuer's keys cannot be fetched.
 */
int hs_oidc_verify(struct hs_ctx *ctx, struct hs_oidc *o, const char *token, size_t len,
                   json_t **claims);

/* Tests: replaces time(NULL) for token times and the cache's clock. */
void hs_oidc_set_clock(struct hs_oidc *o, int64_t (*now)(void *arg), void *arg);
/* Tests and fuzzers: installs a JWKS document for `issuer` as if just fetched. */
int hs_oidc_set_jwks(struct hs_ctx *ctx, struct hs_oidc *o, const char *issuer, const char *jwks,
                     size_t len);
/* The verifier inside an authenticator (borrowed), for the hooks above. */
struct hs_oidc *hs_authn_oidc(struct hs_authn *a);

#endif /* HS_SERVE_OIDC_H */
