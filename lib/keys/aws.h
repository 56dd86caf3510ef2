/*
 * aws.h - internal to the AWS KMS provider: Signature Version 4 request
 * signing (aws_sigv4.c) and the credential chain (aws_creds.c).
 */
#ifndef HS_AWS_H
#define HS_AWS_H

#include <stdint.h>
#include <time.h>

#include "core/core.h"
#include "core/http.h"

/* One set of AWS credentials; secret fields are wiped on free. */
struct hs_aws_creds {
	char *access_key_id;
	char *secret_access_key; /* secret */
	char *session_token;     /* secret; NULL for long-term keys */
	int64_t expires_at;      /* Unix seconds; 0: does not expire */
	const char *source;      /* static: "environment", "profile", ... */
};
void hs_aws_creds_clear(struct hs_aws_creds *c);

/* What SigV4 signs of one request. headers are "Name: value" lines (any
 * case and order; every one is signed); query is already canonical
 * (sorted, percent-encoded) or "". */
struct hs_aws_sigv4_req {
	const char *method;
	const char *path; /* canonical URI, "/" at least */
	const char *query;
	const char *const *headers; /* NULL-terminated */
	const uint8_t *body;
	size_t body_len;
	const char *amz_date; /* "20150830T123600Z" */
	const char *region;
	const char *service;
};

/* Writes the Authorization header value ("AWS4-HMAC-SHA256 Credential=...,
 * SignedHeaders=..., Signature=...") into out. */
int hs_aws_sigv4_authorization(struct hs_ctx *ctx, const struct hs_aws_sigv4_req *req,
                               const char *access_key_id, const char *secret_access_key, char *out,
                               size_t out_size);

/* "YYYYMMDDTHHMMSSZ" for t (UTC); out holds at least 17 bytes. */
void hs_aws_amz_date(time_t t, char out[17]);

/* Where credentials are looked for; NULL fields fall back to the standard
 * AWS_* environment variables (docs/providers.md). */
struct hs_aws_cred_cfg {
	const char *profile;  /* chosen profile (only it is used), or NULL: the chain */
	const char *region;   /* for the regional STS endpoint, or NULL */
	const char *ca_file;  /* extra TLS roots for STS */
	long backoff_base_ms; /* 0: default */
};

/* Resolves credentials with the chain: environment, shared credentials and
 * config files (profile), web identity token file, GitHub Actions OIDC,
 * ECS/EKS container endpoint, EC2 IMDSv2. http is used for STS, GitHub,
 * container and IMDS requests. */
int hs_aws_creds_resolve(struct hs_ctx *ctx, struct hs_http *http,
                         const struct hs_aws_cred_cfg *cfg, struct hs_aws_creds *out);

/* The region set in the profile of the shared config file, malloc'd, or
 * NULL. */
char *hs_aws_profile_region(const char *profile);

#endif /* HS_AWS_H */
