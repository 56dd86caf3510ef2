/*
 * awskms.c - the `aws-kms` key provider (protocols.md 5.1). At open:
 * credentials (aws_creds.c), the certificate from a file, and one
 * TrentService.GetPublicKey to prove the certificate belongs to the KMS key.
 * Then one TrentService.Sign (MessageType DIGEST) per signature, signed
 * with SigV4 (aws_sigv4.c). Only the digest of the signed attributes is
 * sent; the private key never leaves KMS.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "aws.h"
#include "core/codec.h"
#include "provider.h"

#define KMS_JSON_MAX      (1024 * 1024)
#define KMS_REFRESH_S     300 /* renew temporary credentials this early */
#define KMS_THROTTLE_MAX  6   /* ThrottlingException retries (HTTP 400: not retried by http.c) */
#define KMS_AUTH_HDR_SIZE 1024

struct kms_key {
	struct hs_http *http;
	struct hs_aws_creds creds;
	struct hs_aws_cred_cfg cred_cfg;
	char *key_id;
	char *region;
	char *endpoint; /* scheme://host[:port], no path */
	char *host;     /* host[:port] as sent in Host */
	char *profile;
	char *ca_file;
	STACK_OF(X509) * chain;
	int throttle_retries;
	long backoff_base_ms;
};

static void kms_free(void *state)
{
	struct kms_key *k = state;

	if (k == NULL)
		return;
	hs_aws_creds_clear(&k->creds);
	hs_http_free(k->http);
	sk_X509_pop_free(k->chain, X509_free);
	free(k->key_id);
	free(k->region);
	free(k->endpoint);
	free(k->host);
	free(k->profile);
	free(k->ca_file);
	free(k);
}

/* Renews temporary credentials that expire within KMS_REFRESH_S. */
static int kms_fresh_creds(struct hs_ctx *ctx, struct kms_key *k)
{
	if (k->creds.access_key_id != NULL &&
	    (k->creds.expires_at == 0 || (int64_t)time(NULL) + KMS_REFRESH_S < k->creds.expires_at))
		return 0;
	hs_aws_creds_clear(&k->creds);
	return hs_aws_creds_resolve(ctx, k->http, &k->cred_cfg, &k->creds);
}

/* The SigV4-signed header list for one KMS call; hdrs[] point into the
 * caller's buffers (auth holds a signature, token a secret). */
static int kms_sign_request(struct hs_ctx *ctx, struct kms_key *k, const char *target,
                            const char *body, char lines[4][256], char *auth, char *token,
                            size_t token_size, const char *hdrs[8])
{
	struct hs_aws_sigv4_req sr = {.method = "POST",
	                              .path = "/",
	                              .query = "",
	                              .headers = hdrs,
	                              .body = (const uint8_t *)body,
	                              .body_len = strlen(body),
	                              .region = k->region,
	                              .service = "kms"};
	char date[17];
	size_t n = 0;
	int r;

	hs_aws_amz_date(time(NULL), date);
	sr.amz_date = date;
	snprintf(lines[0], 256, "Host: %s", k->host);
	snprintf(lines[1], 256, "Content-Type: application/x-amz-json-1.1");
	snprintf(lines[2], 256, "X-Amz-Date: %s", date);
	snprintf(lines[3], 256, "X-Amz-Target: TrentService.%s", target);
	for (n = 0; n < 4; n++)
		hdrs[n] = lines[n];
	if (k->creds.session_token != NULL) {
		if ((size_t)snprintf(token, token_size, "X-Amz-Security-Token: %s",
		                     k->creds.session_token) >= token_size)
			return hs_error_set(ctx, HS_ERR_AUTH, "the AWS session token is too long");
		hdrs[n++] = token;
	}
	hdrs[n] = NULL;
	r = hs_aws_sigv4_authorization(ctx, &sr, k->creds.access_key_id, k->creds.secret_access_key,
	                               auth + 15, KMS_AUTH_HDR_SIZE - 15);
	memcpy(auth, "Authorization: ", 15);
	hdrs[n++] = auth;
	hdrs[n] = NULL;
	return r;
}

/* `__type` without any "namespace#" prefix, as jsign reports it. */
static const char *kms_error_type(json_t *root)
{
	const char *t = json_string_value(json_object_get(root, "__type"));
	const char *hash = t ? strrchr(t, '#') : NULL;

	return hash ? hash + 1 : t;
}

static bool kms_is_throttle(const struct hs_http_response *resp)
{
	json_t *root = json_loadb((const char *)resp->body.data, resp->body.len, 0, NULL);
	const char *type = kms_error_type(root);
	bool yes = resp->status == 429 || (type && (strcmp(type, "ThrottlingException") == 0 ||
	                                            strcmp(type, "LimitExceededException") == 0));

	json_decref(root);
	return yes;
}

/* Whether KMS refused temporary credentials as expired before their time
 * (revoked session, clock skew): they are worth resolving once more. */
static bool kms_is_expired_token(const struct kms_key *k, const struct hs_http_response *resp)
{
	json_t *root;
	const char *type;
	bool yes;

	if (resp->status != 400 || k->creds.expires_at == 0)
		return false;
	root = json_loadb((const char *)resp->body.data, resp->body.len, 0, NULL);
	type = kms_error_type(root);
	yes = type != NULL && strcmp(type, "ExpiredTokenException") == 0;
	json_decref(root);
	return yes;
}

/* One line for a KMS error answer: "__type: message", mapped to our codes. */
static int kms_error(struct hs_ctx *ctx, const struct kms_key *k, const char *target,
                     const struct hs_http_response *resp)
{
	json_t *root = json_loadb((const char *)resp->body.data, resp->body.len, 0, NULL);
	const char *type = kms_error_type(root);
	const char *msg = json_string_value(json_object_get(root, "message"));
	static const struct {
		const char *type;
		int code;
	} map[] = {
	        {"NotFoundException", HS_ERR_NOTFOUND},
	        {"AccessDeniedException", HS_ERR_DENIED},
	        {"UnrecognizedClientException", HS_ERR_AUTH},
	        {"InvalidSignatureException", HS_ERR_AUTH},
	        {"IncompleteSignature", HS_ERR_AUTH},
	        {"ExpiredTokenException", HS_ERR_AUTH},
	        {"ThrottlingException", HS_ERR_THROTTLED},
	        {"LimitExceededException", HS_ERR_THROTTLED},
	};
	int code = resp->status >= 500 ? HS_ERR_NETWORK : HS_ERR_INVALID, r;

	if (msg == NULL)
		msg = json_string_value(json_object_get(root, "Message"));
	for (size_t i = 0; type != NULL && i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(type, map[i].type) == 0)
			code = map[i].code;
	r = hs_error_set(ctx, code, "AWS KMS %s on key %s failed (HTTP %ld): %s%s%s", target,
	                 k->key_id, resp->status, type ? type : "unknown error", msg ? ": " : "",
	                 msg ? msg : "");
	json_decref(root);
	return r;
}

/* Waits before the attempt-th throttling retry: full jitter over an
 * exponentially growing window. */
static void kms_backoff(const struct kms_key *k, int attempt)
{
	long window = k->backoff_base_ms << (attempt < 10 ? attempt : 10);
	unsigned int rnd = 0;
	long ms;

	RAND_bytes((unsigned char *)&rnd, sizeof(rnd));
	ms = window > 0 ? (long)(rnd % (unsigned long)window) : 0;
	hs_os_sleep_us((int64_t)ms * 1000);
}

/* POSTs one TrentService call and parses its JSON answer into *out. */
static int kms_call(struct hs_ctx *ctx, struct kms_key *k, const char *target, const char *body,
                    json_t **out)
{
	char lines[4][256], auth[KMS_AUTH_HDR_SIZE], token[8192];
	const char *hdrs[8];
	struct hs_http_request req = {.method = "POST",
	                              .url = k->endpoint,
	                              .headers = hdrs,
	                              .body = body,
	                              .body_len = strlen(body),
	                              .service = "AWS KMS"};
	struct hs_http_response resp = {0};
	bool renewed = false;
	int r, attempt;

	*out = NULL;
	for (attempt = 0;; attempt++) {
		if ((r = kms_fresh_creds(ctx, k)) < 0 ||
		    (r = kms_sign_request(ctx, k, target, body, lines, auth, token, sizeof(token),
		                          hdrs)) < 0)
			goto out;
		hs_http_response_free(&resp);
		r = hs_http_send(ctx, k->http, &req, &resp);
		OPENSSL_cleanse(token, sizeof(token));
		if (r == 0 && !renewed && kms_is_expired_token(k, &resp)) {
			hs_log(ctx, HS_LOG_DEBUG, "AWS KMS: credentials expired early, renewing");
			renewed = true;
			k->creds.expires_at = 1; /* kms_fresh_creds() resolves them again */
			continue;
		}
		if (r < 0 || resp.status == 200 || attempt >= k->throttle_retries ||
		    !kms_is_throttle(&resp))
			break;
		kms_backoff(k, attempt);
	}
	if (r < 0)
		goto out;
	if (resp.status != 200) {
		r = kms_error(ctx, k, target, &resp);
		goto out;
	}
	if (resp.body.len > KMS_JSON_MAX ||
	    (*out = json_loadb((const char *)resp.body.data, resp.body.len, 0, NULL)) == NULL)
		r = hs_error_set(ctx, HS_ERR_NETWORK, "AWS KMS %s: the answer is not JSON", target);
out:
	hs_http_response_free(&resp);
	return r;
}

/* Base64 field `name` of j decoded into out. */
static int kms_b64_field(struct hs_ctx *ctx, json_t *j, const char *name, const char *target,
                         struct hs_buf *out)
{
	const char *v = json_string_value(json_object_get(j, name));

	if (v == NULL || hs_base64_decode(out, v, strlen(v)) < 0 || out->len == 0)
		return hs_error_set(ctx, HS_ERR_NETWORK, "AWS KMS %s: the answer has no valid %s",
		                    target, name);
	return 0;
}

/* KMS SigningAlgorithm for this certificate key and digest. KMS ties
 * ECDSA digests to the curve and has no SHA-1 algorithms. */
static int kms_alg(struct hs_ctx *ctx, const struct kms_key *k, const EVP_MD *md, const char **alg)
{
	EVP_PKEY *pub = X509_get0_pubkey(sk_X509_value(k->chain, 0));
	int nid = EVP_MD_get_type(md), bits = EVP_PKEY_get_bits(pub);

	*alg = NULL;
	if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA)
		*alg = nid == NID_sha256   ? "RSASSA_PKCS1_V1_5_SHA_256"
		       : nid == NID_sha384 ? "RSASSA_PKCS1_V1_5_SHA_384"
		       : nid == NID_sha512 ? "RSASSA_PKCS1_V1_5_SHA_512"
		                           : NULL;
	else if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC) {
		const char *want = bits == 256 ? "sha256" : bits == 384 ? "sha384" : "sha512";

		if ((bits == 256 && nid == NID_sha256) || (bits == 384 && nid == NID_sha384) ||
		    (bits == 521 && nid == NID_sha512))
			*alg = nid == NID_sha256   ? "ECDSA_SHA_256"
			       : nid == NID_sha384 ? "ECDSA_SHA_384"
			                           : "ECDSA_SHA_512";
		else
			return hs_error_set(
			        ctx, HS_ERR_UNSUPPORTED,
			        "AWS KMS signs with an EC P-%d key only with %s; choose "
			        "that file digest (-fd)",
			        bits, want);
	}
	if (*alg == NULL)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "AWS KMS cannot sign with %s for this key type (KMS has no "
		                    "SHA-1 signatures); use -fd sha256 or stronger",
		                    EVP_MD_get0_name(md));
	return 0;
}

static int kms_sign_digest(struct hs_ctx *ctx, void *state, const EVP_MD *md, const uint8_t *digest,
                           size_t digest_len, struct hs_buf *sig)
{
	struct kms_key *k = state;
	struct hs_buf b64 = {0};
	json_t *req = NULL, *ans = NULL;
	char *body = NULL;
	const char *alg;
	int r;

	if ((r = kms_alg(ctx, k, md, &alg)) < 0)
		return r;
	if ((r = hs_base64_encode(&b64, digest, digest_len, false)) < 0 ||
	    (r = hs_buf_append(&b64, "", 1)) < 0)
		goto out;
	req = json_pack("{s:s, s:s, s:s, s:s}", "KeyId", k->key_id, "Message",
	                (const char *)b64.data, "MessageType", "DIGEST", "SigningAlgorithm", alg);
	if (req == NULL || (body = json_dumps(req, JSON_COMPACT)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = kms_call(ctx, k, "Sign", body, &ans)) < 0)
		goto out;
	/* ECDSA signatures come as DER already: used as they are. */
	r = kms_b64_field(ctx, ans, "Signature", "Sign", sig);
out:
	free(body);
	json_decref(req);
	json_decref(ans);
	hs_buf_free(&b64);
	return r;
}

static int kms_get_chain(struct hs_ctx *ctx, void *state, STACK_OF(X509) * *out)
{
	return hs_key_chain_copy(ctx, ((struct kms_key *)state)->chain, out);
}

/* The key's name in its service, for reports. */
static const char *kms_key_id(void *state)
{
	const struct kms_key *k = state;

	return k->key_id;
}

const struct hs_key_provider hs_key_provider_aws_kms = {
        .name = "aws-kms",
        .get_chain = kms_get_chain,
        .sign_digest = kms_sign_digest,
        .free = kms_free,
        .key_id = kms_key_id,
};

/* GetPublicKey: the key must be a signing key whose public key is the
 * certificate's, or every signature would be rejected later. */
static int kms_check_public_key(struct hs_ctx *ctx, struct kms_key *k)
{
	struct hs_buf spki = {0};
	json_t *req = json_pack("{s:s}", "KeyId", k->key_id), *ans = NULL;
	char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	const char *usage;
	const unsigned char *p;
	EVP_PKEY *pub = NULL;
	int r;

	if (body == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = kms_call(ctx, k, "GetPublicKey", body, &ans)) < 0 ||
	    (r = kms_b64_field(ctx, ans, "PublicKey", "GetPublicKey", &spki)) < 0)
		goto out;
	usage = json_string_value(json_object_get(ans, "KeyUsage"));
	p = spki.data;
	if (usage != NULL && strcmp(usage, "SIGN_VERIFY") != 0)
		r = hs_error_set(ctx, HS_ERR_INVALID,
		                 "AWS KMS key %s has KeyUsage %s, not SIGN_VERIFY", k->key_id,
		                 usage);
	else if ((pub = d2i_PUBKEY(NULL, &p, (long)spki.len)) == NULL)
		r = hs_error_ssl(ctx, HS_ERR_NETWORK,
		                 "AWS KMS GetPublicKey: unreadable public key");
	else if (!hs_key_chain_matches(k->chain, pub))
		r = hs_error_set(ctx, HS_ERR_INVALID,
		                 "the certificate (--cert) does not belong to AWS KMS key %s: "
		                 "its public key differs",
		                 k->key_id);
out:
	ERR_clear_error();
	EVP_PKEY_free(pub);
	hs_buf_free(&spki);
	free(body);
	json_decref(req);
	json_decref(ans);
	return r;
}

/* Region: the option, the key ARN's, AWS_REGION, AWS_DEFAULT_REGION, the
 * profile's. */
static int kms_region(struct hs_ctx *ctx, struct kms_key *k, const struct hs_aws_kms_key_opts *o)
{
	const char *env = getenv("AWS_REGION");
	char arn_region[64];

	if (env == NULL || *env == '\0')
		env = getenv("AWS_DEFAULT_REGION");
	if (o->region != NULL)
		k->region = strdup(o->region);
	else if (sscanf(k->key_id, "arn:%*[^:]:kms:%63[^:]:", arn_region) == 1)
		k->region = strdup(arn_region);
	else if (env != NULL && *env != '\0')
		k->region = strdup(env);
	else if ((k->region = hs_aws_profile_region(k->profile ? k->profile
	                                                       : getenv("AWS_PROFILE"))) == NULL)
		return hs_error_set(
		        ctx, HS_ERR_INVALID,
		        "no AWS region: give --aws-region, a key ARN, or set AWS_REGION");
	if (k->region == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if (k->region[0] == '\0' ||
	    strspn(k->region, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(k->region))
		return hs_error_set(ctx, HS_ERR_INVALID, "bad AWS region '%s'", k->region);
	return 0;
}

/* Endpoint: the option, AWS_ENDPOINT_URL_KMS, AWS_ENDPOINT_URL, else the
 * region's. Only its scheme and authority are used (KMS posts to "/"). */
static int kms_endpoint(struct hs_ctx *ctx, struct kms_key *k, const struct hs_aws_kms_key_opts *o)
{
	const char *e = o->endpoint ? o->endpoint : getenv("AWS_ENDPOINT_URL_KMS");
	const char *host;
	size_t n;
	int r;

	if (e == NULL || *e == '\0')
		e = getenv("AWS_ENDPOINT_URL");
	if (e != NULL && *e != '\0')
		k->endpoint = strdup(e);
	else
		k->endpoint = hs_strprintf("https://kms.%s.amazonaws.com", k->region);
	if (k->endpoint == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = hs_http_ready(ctx)) < 0)
		return r;
	host = strstr(k->endpoint, "://");
	if (host == NULL ||
	    (strncmp(k->endpoint, "https://", 8) != 0 && !hs_http_is_loopback_url(k->endpoint)))
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "the AWS KMS endpoint must be an https:// URL: %s",
		                    k->endpoint);
	host += 3;
	n = strcspn(host, "/?#");
	if (n == 0 || n > 200)
		return hs_error_set(ctx, HS_ERR_INVALID, "bad AWS KMS endpoint %s", k->endpoint);
	k->host = strndup(host, n);
	k->endpoint[host - k->endpoint + (long)n] = '\0';
	return k->host ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

/* A bare name is an alias, as in jsign: "codesign" -> "alias/codesign".
 * Key ids (UUIDs, multi-region "mrk-..."), ARNs and aliases stay. */
static char *kms_key_name(const char *key)
{
	size_t n = strlen(key);
	bool uuid = n == 36 && strspn(key, "0123456789abcdefABCDEF-") == n && key[8] == '-';

	if (uuid || strncmp(key, "mrk-", 4) == 0 || strncmp(key, "arn:", 4) == 0 ||
	    strncmp(key, "alias/", 6) == 0)
		return strdup(key);
	return hs_strprintf("alias/%s", key);
}

static int kms_setup(struct hs_ctx *ctx, struct kms_key *k, const struct hs_aws_kms_key_opts *o)
{
	struct hs_http_config hc = HS_HTTP_CONFIG_INIT;
	int r;

	if (o->key_id == NULL || o->key_id[0] == '\0')
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "give the AWS KMS key: id, alias/NAME or ARN (--aws-kms-key)");
	if ((k->key_id = kms_key_name(o->key_id)) == NULL ||
	    (o->profile && (k->profile = strdup(o->profile)) == NULL) ||
	    (o->ca_file && (k->ca_file = strdup(o->ca_file)) == NULL))
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = hs_key_load_chain(ctx, "AWS KMS", o->cert_file, o->extra_certs, &k->chain)) < 0 ||
	    (r = kms_region(ctx, k, o)) < 0 || (r = kms_endpoint(ctx, k, o)) < 0)
		return r;
	hs_http_config_limits(&hc, o->ca_file, o->max_retries, o->timeout_ms, o->max_total_ms,
	                      o->backoff_base_ms);
	k->backoff_base_ms = o->backoff_base_ms > 0 ? o->backoff_base_ms : 1000;
	k->throttle_retries = o->max_retries < 0    ? 0
	                      : o->max_retries == 0 ? KMS_THROTTLE_MAX
	                                            : o->max_retries;
	k->cred_cfg.profile = k->profile;
	k->cred_cfg.region = k->region;
	k->cred_cfg.ca_file = k->ca_file;
	k->cred_cfg.backoff_base_ms = o->backoff_base_ms;
	return hs_http_new(ctx, &k->http, &hc);
}

int hs_key_open_aws_kms(struct hs_ctx *ctx, struct hs_key **out,
                        const struct hs_aws_kms_key_opts *opts)
{
	struct kms_key *k = calloc(1, sizeof(*k));
	int r;

	*out = NULL;
	if (k == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	/* kms_call() resolves the credentials on its first use */
	if ((r = kms_setup(ctx, k, opts)) < 0 || (r = kms_check_public_key(ctx, k)) < 0) {
		kms_free(k);
		return r;
	}
	hs_log(ctx, HS_LOG_INFO, "AWS KMS key %s in %s, credentials from %s", k->key_id, k->region,
	       k->creds.source);
	return hs_key_new(ctx, out, &hs_key_provider_aws_kms, k);
}
