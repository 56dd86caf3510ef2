/*
 * policy.h - internal to lib/serve: checks a key's "allow" rules when the
 * configuration is loaded, so that a bad rule is a config error rather than a
 * refusal at request time. Matching itself is hs_policy_allows() (authn.h).
 */
#ifndef HS_SERVE_POLICY_H
#define HS_SERVE_POLICY_H

#include <stddef.h>

#include <jansson.h>

/*
 * 0 when rules (a key's "allow", or NULL) is well formed: an array of
 * non-empty objects whose values are strings, each naming who it is for:
 * "iss", "api_token" or "mtls_subject". Else HS_ERR_INVALID and a one-line reason in why
 * ("allow[1].ref: must be a string").
 */
int hs_policy_validate(const json_t *rules, char *why, size_t why_len);

#endif /* HS_SERVE_POLICY_H */
