/*
 * gcpkms.c - the `gcp-kms` key provider (protocols.md 5.2). At open: an
 * access token (gcp_creds.c), the certificate from a file, the key version
 * (given, or the newest ENABLED one), and its public key, which must match
 * the certificate. Then one cryptoKeyVersions.asymmetricSign per
 * signature. CRC32C integrity fields are checked both ways: Google must
 * confirm the digest it received, and the signature must match its
 * checksum.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/codec.h"
#include "core/crc32c.h"
#include "gcp.h"
#include "provider.h"

#define GCP_KMS_URL      "https://cloudkms.googleapis.com"
#define GCP_JSON_MAX     (1024 * 1024)
#define GCP_REFRESH_S    300
#define GCP_NAME_MAX     512
#define GCP_AUTH_HDR_MAX 8192

struct gcp_key {
	struct hs_http *http;
	struct hs_gcp_cred_cfg cred_cfg; /* strings owned below */
	struct hs_gcp_token token;
	char *access_token; /* secret copy of the option */
	char *credentials_file, *workload_provider, *service_account;
	char *endpoint; /* no trailing slash, no /v1 */
	char *version;  /* projects/.../cryptoKeyVersions/N */
	char *algorithm;
	STACK_OF(X509) * chain;
};

static void gcp_free(void *state)
{
	struct gcp_key *k = state;

	if (k == NULL)
		return;
	hs_gcp_token_clear(&k->token);
	if (k->access_token != NULL)
		OPENSSL_clear_free(k->access_token, strlen(k->access_token));
	hs_http_free(k->http);
	sk_X509_pop_free(k->chain, X509_free);
	free(k->credentials_file);
	free(k->workload_provider);
	free(k->service_account);
	free(k->endpoint);
	free(k->version);
	free(k->algorithm);
	free(k);
}

/* Resource names become URL paths: allow only their own alphabet. */
static int gcp_check_name(struct hs_ctx *ctx, const char *name, bool *has_version)
{
	int slashes = 0;

	for (const char *p = name; *p; p++)
		slashes += *p == '/';
	if (strlen(name) >= GCP_NAME_MAX || strncmp(name, "projects/", 9) != 0 ||
	    strstr(name, "/cryptoKeys/") == NULL || strstr(name, "..") != NULL ||
	    strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./") !=
	            strlen(name) ||
	    (slashes != 7 && slashes != 9))
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "give the Cloud KMS key as projects/P/locations/L/keyRings/R/"
		                    "cryptoKeys/K[/cryptoKeyVersions/N] (--gcp-kms-key)");
	*has_version = slashes == 9;
	if (*has_version && strstr(name, "/cryptoKeyVersions/") == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID, "bad Cloud KMS key version name %s", name);
	return 0;
}

/* Keeps the token fresh; force after a 401 (not for a fixed token). */
static int gcp_bearer(struct hs_ctx *ctx, struct gcp_key *k, bool force, char *hdr, size_t size)
{
	int r;

	if (k->token.value == NULL || force ||
	    (k->token.expires_at != 0 && time(NULL) + GCP_REFRESH_S > k->token.expires_at)) {
		if ((r = hs_gcp_token_get(ctx, k->http, &k->cred_cfg, &k->token)) < 0)
			return r;
	}
	if ((size_t)snprintf(hdr, size, "Authorization: Bearer %s", k->token.value) >= size)
		return hs_error_set(ctx, HS_ERR_AUTH, "the Google access token is too long");
	return 0;
}

/* One line from {"error":{"code","message","status"}}. */
static int gcp_kms_error(struct hs_ctx *ctx, const char *what, const struct hs_http_response *resp)
{
	json_t *root = json_loadb((const char *)resp->body.data, resp->body.len, 0, NULL);
	json_t *e = json_object_get(root, "error");
	const char *status = json_string_value(json_object_get(e, "status"));
	const char *msg = json_string_value(json_object_get(e, "message"));
	int code = resp->status == 401   ? HS_ERR_AUTH
	           : resp->status == 403 ? HS_ERR_DENIED
	           : resp->status == 404 ? HS_ERR_NOTFOUND
	           : resp->status == 429 ? HS_ERR_THROTTLED
	           : resp->status >= 500 ? HS_ERR_NETWORK
	                                 : HS_ERR_INVALID;
	int r = hs_error_set(ctx, code, "Cloud KMS %s failed (HTTP %ld): %s%s%s", what,
	                     resp->status, status ? status : "error", msg ? ": " : "",
	                     msg ? msg : "");

	json_decref(root);
	return r;
}

/* A Cloud KMS call; the JSON answer of a 200 in *out. */
static int gcp_call(struct hs_ctx *ctx, struct gcp_key *k, const char *method, const char *url,
                    const char *body, const char *what, json_t **out)
{
	char auth[GCP_AUTH_HDR_MAX];
	const char *headers[] = {auth, "Content-Type: application/json", "Accept: application/json",
	                         NULL};
	struct hs_http_request req = {.method = method,
	                              .url = url,
	                              .headers = headers,
	                              .body = body,
	                              .body_len = body ? strlen(body) : 0,
	                              .service = "Google Cloud KMS"};
	struct hs_http_response resp = {0};
	int r;

	*out = NULL;
	for (int attempt = 0; attempt < 2; attempt++) {
		if ((r = gcp_bearer(ctx, k, attempt > 0, auth, sizeof(auth))) < 0)
			goto out;
		hs_http_response_free(&resp);
		r = hs_http_send(ctx, k->http, &req, &resp);
		OPENSSL_cleanse(auth, sizeof(auth));
		if (r < 0 || resp.status != 401 || k->access_token != NULL)
			break;
	}
	if (r < 0)
		goto out;
	if (resp.status != 200) {
		r = gcp_kms_error(ctx, what, &resp);
		goto out;
	}
	if (resp.body.len > GCP_JSON_MAX ||
	    (*out = json_loadb((const char *)resp.body.data, resp.body.len, 0, NULL)) == NULL)
		r = hs_error_set(ctx, HS_ERR_NETWORK, "Cloud KMS %s: the answer is not JSON", what);
out:
	hs_http_response_free(&resp);
	return r;
}

/* A CRC32C field: Google sends int64 values as decimal strings. */
static bool gcp_crc_equals(json_t *v, uint32_t crc)
{
	char want[16];

	snprintf(want, sizeof(want), "%u", crc);
	if (json_is_string(v))
		return strcmp(json_string_value(v), want) == 0;
	return json_is_integer(v) && json_integer_value(v) == (json_int_t)crc;
}

/* The version number after the last '/'; 0 when malformed. */
static long gcp_version_number(const char *name)
{
	const char *slash = strrchr(name, '/');
	char *end;
	long n = slash ? strtol(slash + 1, &end, 10) : 0;

	return slash && *end == '\0' && n > 0 ? n : 0;
}

/* The newest ENABLED version of a key. */
static int gcp_latest_version(struct hs_ctx *ctx, struct gcp_key *k, const char *key)
{
	char *url = hs_strprintf("%s/v1/%s/cryptoKeyVersions?filter=state%%3DENABLED&pageSize=1000",
	                         k->endpoint, key);
	json_t *ans = NULL, *v;
	const char *best = NULL;
	long best_n = 0;
	size_t i;
	int r;

	if (url == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = gcp_call(ctx, k, "GET", url, NULL, "list key versions", &ans)) < 0)
		goto out;
	json_array_foreach(json_object_get(ans, "cryptoKeyVersions"), i, v)
	{
		const char *name = json_string_value(json_object_get(v, "name"));
		const char *state = json_string_value(json_object_get(v, "state"));

		if (name && state && strcmp(state, "ENABLED") == 0 &&
		    strncmp(name, key, strlen(key)) == 0 && gcp_version_number(name) > best_n) {
			best_n = gcp_version_number(name);
			best = name;
		}
	}
	if (best == NULL)
		r = hs_error_set(ctx, HS_ERR_NOTFOUND, "Cloud KMS key %s has no enabled version",
		                 key);
	else if ((k->version = strdup(best)) == NULL)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
out:
	json_decref(ans);
	free(url);
	return r;
}

/* The digest an algorithm signs, or NULL for RAW_PKCS1 (any digest). */
static const char *gcp_alg_digest(const char *alg)
{
	static const char *const suffix[] = {"_SHA256", "_SHA384", "_SHA512"};
	static const char *const names[] = {"sha256", "sha384", "sha512"};
	size_t n = strlen(alg);

	for (size_t i = 0; i < 3; i++)
		if (n > 7 && strcmp(alg + n - 7, suffix[i]) == 0)
			return names[i];
	return NULL;
}

static bool gcp_alg_supported(const char *alg)
{
	return strncmp(alg, "RSA_SIGN_PKCS1_", 15) == 0 ||
	       strncmp(alg, "RSA_SIGN_RAW_PKCS1_", 19) == 0 ||
	       strncmp(alg, "EC_SIGN_P256_", 13) == 0 || strncmp(alg, "EC_SIGN_P384_", 13) == 0;
}

/* publicKey: checksum, algorithm, and the certificate's key. */
static int gcp_check_public_key(struct hs_ctx *ctx, struct gcp_key *k)
{
	char *url = hs_strprintf("%s/v1/%s/publicKey", k->endpoint, k->version);
	json_t *ans = NULL;
	const char *pem, *alg;
	EVP_PKEY *pub = NULL;
	BIO *bio = NULL;
	int r;

	if (url == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = gcp_call(ctx, k, "GET", url, NULL, "get public key", &ans)) < 0)
		goto out;
	pem = json_string_value(json_object_get(ans, "pem"));
	alg = json_string_value(json_object_get(ans, "algorithm"));
	if (pem == NULL || alg == NULL ||
	    !gcp_crc_equals(json_object_get(ans, "pemCrc32c"), hs_crc32c(0, pem, strlen(pem)))) {
		r = hs_error_set(ctx, HS_ERR_NETWORK,
		                 "Cloud KMS public key of %s: missing or failed its CRC32C check",
		                 k->version);
		goto out;
	}
	if (!gcp_alg_supported(alg)) {
		r = hs_error_set(
		        ctx, HS_ERR_UNSUPPORTED,
		        "Cloud KMS key algorithm %s cannot make Authenticode signatures "
		        "(use RSA_SIGN_PKCS1_*, RSA_SIGN_RAW_PKCS1_* or EC_SIGN_P256/P384)",
		        alg);
		goto out;
	}
	if ((bio = BIO_new_mem_buf(pem, -1)) == NULL ||
	    (pub = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL)) == NULL)
		r = hs_error_ssl(ctx, HS_ERR_NETWORK, "Cloud KMS: unreadable public key");
	else if (!hs_key_chain_matches(k->chain, pub))
		r = hs_error_set(
		        ctx, HS_ERR_INVALID,
		        "the certificate (--cert) does not belong to Cloud KMS key %s: its "
		        "public key differs",
		        k->version);
	else if ((k->algorithm = strdup(alg)) == NULL)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
out:
	ERR_clear_error();
	EVP_PKEY_free(pub);
	BIO_free(bio);
	json_decref(ans);
	free(url);
	return r;
}

/* The request body: {"digest":{alg:b64},"digestCrc32c"} or, for raw
 * PKCS#1 keys, {"data": DigestInfo, "dataCrc32c"}. */
static int gcp_sign_body(struct hs_ctx *ctx, const struct gcp_key *k, const EVP_MD *md,
                         const uint8_t *digest, size_t len, char **body, bool *raw)
{
	const char *want = gcp_alg_digest(k->algorithm), *have = EVP_MD_get0_name(md);
	struct hs_buf value = {0}, b64 = {0};
	char crc[16];
	json_t *req = NULL;
	int r;

	*raw = strncmp(k->algorithm, "RSA_SIGN_RAW_PKCS1_", 19) == 0;
	if (!*raw &&
	    (want == NULL ||
	     strcasecmp(want, hs_digest_name(hs_digest_from_nid(EVP_MD_get_type(md)))) != 0))
		return hs_error_set(
		        ctx, HS_ERR_UNSUPPORTED,
		        "Cloud KMS key %s (%s) signs only %s digests, not %s; choose that "
		        "file digest (-fd)",
		        k->version, k->algorithm, want ? want : "other", have);
	r = *raw ? hs_key_digest_info(ctx, md, digest, len, &value)
	         : hs_buf_append(&value, digest, len);
	if (r < 0 || (r = hs_base64_encode(&b64, value.data, value.len, false)) < 0 ||
	    (r = hs_buf_append(&b64, "", 1)) < 0)
		goto out;
	snprintf(crc, sizeof(crc), "%u", hs_crc32c(0, value.data, value.len));
	req = *raw ? json_pack("{s:s, s:s}", "data", (char *)b64.data, "dataCrc32c", crc)
	           : json_pack("{s:{s:s}, s:s}", "digest", want, (char *)b64.data, "digestCrc32c",
	                       crc);
	if (req == NULL || (*body = json_dumps(req, JSON_COMPACT)) == NULL)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
out:
	json_decref(req);
	hs_buf_free(&value);
	hs_buf_free(&b64);
	return r;
}

/* Integrity of the answer: Google confirmed our checksum, the name is our
 * version, and the signature matches its checksum. */
static int gcp_check_answer(struct hs_ctx *ctx, const struct gcp_key *k, json_t *ans, bool raw,
                            const struct hs_buf *sig)
{
	json_t *verified =
	        json_object_get(ans, raw ? "verifiedDataCrc32c" : "verifiedDigestCrc32c");
	const char *name = json_string_value(json_object_get(ans, "name"));

	if (!json_is_true(verified))
		return hs_error_set(ctx, HS_ERR_NETWORK,
		                    "Cloud KMS did not confirm the CRC32C of the digest it signed "
		                    "(corrupted in transit?)");
	if (name != NULL && strcmp(name, k->version) != 0)
		return hs_error_set(ctx, HS_ERR_NETWORK,
		                    "Cloud KMS answered for another key version "
		                    "(%s)",
		                    name);
	if (!gcp_crc_equals(json_object_get(ans, "signatureCrc32c"),
	                    hs_crc32c(0, sig->data, sig->len)))
		return hs_error_set(ctx, HS_ERR_NETWORK,
		                    "Cloud KMS signature failed its CRC32C check (corrupted in "
		                    "transit?)");
	return 0;
}

static int gcp_sign_digest(struct hs_ctx *ctx, void *state, const EVP_MD *md, const uint8_t *digest,
                           size_t digest_len, struct hs_buf *sig)
{
	struct gcp_key *k = state;
	char *body = NULL, *url = hs_strprintf("%s/v1/%s:asymmetricSign", k->endpoint, k->version);
	const char *b64;
	json_t *ans = NULL;
	bool raw;
	int r;

	if (url == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = gcp_sign_body(ctx, k, md, digest, digest_len, &body, &raw)) < 0 ||
	    (r = gcp_call(ctx, k, "POST", url, body, "asymmetricSign", &ans)) < 0)
		goto out;
	b64 = json_string_value(json_object_get(ans, "signature"));
	if (b64 == NULL || hs_base64_decode(sig, b64, strlen(b64)) < 0 || sig->len == 0) {
		r = hs_error_set(ctx, HS_ERR_NETWORK,
		                 "Cloud KMS asymmetricSign: no valid signature");
		goto out;
	}
	/* EC signatures are DER already; RSA ones are used as they are. */
	r = gcp_check_answer(ctx, k, ans, raw, sig);
out:
	json_decref(ans);
	free(body);
	free(url);
	return r;
}

static int gcp_get_chain(struct hs_ctx *ctx, void *state, STACK_OF(X509) * *out)
{
	return hs_key_chain_copy(ctx, ((struct gcp_key *)state)->chain, out);
}

/* The key's name in its service, for reports. */
static const char *gcp_key_id(void *state)
{
	const struct gcp_key *k = state;

	return k->version;
}

const struct hs_key_provider hs_key_provider_gcp_kms = {
        .name = "gcp-kms",
        .get_chain = gcp_get_chain,
        .sign_digest = gcp_sign_digest,
        .free = gcp_free,
        .key_id = gcp_key_id,
};

/* Copies the options the key keeps (the token into wiped memory). */
static int gcp_copy_opts(struct hs_ctx *ctx, struct gcp_key *k, const struct hs_gcp_kms_key_opts *o)
{
	const char *ep =
	        o->endpoint ? o->endpoint : getenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS");
	size_t n;
	int r;

	k->endpoint = strdup(ep && *ep ? ep : GCP_KMS_URL);
	if (k->endpoint == NULL ||
	    (o->access_token && !(k->access_token = strdup(o->access_token))) ||
	    (o->credentials_file && !(k->credentials_file = strdup(o->credentials_file))) ||
	    (o->workload_provider && !(k->workload_provider = strdup(o->workload_provider))) ||
	    (o->service_account && !(k->service_account = strdup(o->service_account))))
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	n = strlen(k->endpoint);
	while (n > 0 && k->endpoint[n - 1] == '/')
		k->endpoint[--n] = '\0';
	if (n >= 3 && strcmp(k->endpoint + n - 3, "/v1") == 0)
		k->endpoint[n - 3] = '\0';
	if ((r = hs_http_ready(ctx)) < 0)
		return r;
	if (strncmp(k->endpoint, "https://", 8) != 0 && !hs_http_is_loopback_url(k->endpoint))
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "the Cloud KMS endpoint must use https://: %s", k->endpoint);
	k->cred_cfg.access_token = k->access_token;
	k->cred_cfg.credentials_file = k->credentials_file;
	k->cred_cfg.workload_provider = k->workload_provider;
	k->cred_cfg.service_account = k->service_account;
	return 0;
}

static int gcp_setup(struct hs_ctx *ctx, struct gcp_key *k, const struct hs_gcp_kms_key_opts *o)
{
	struct hs_http_config hc = HS_HTTP_CONFIG_INIT;
	bool has_version = false;
	int r;

	if (o->key == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID, "give the Cloud KMS key (--gcp-kms-key)");
	if ((r = gcp_check_name(ctx, o->key, &has_version)) < 0 ||
	    (r = gcp_copy_opts(ctx, k, o)) < 0)
		return r;
	hs_http_config_limits(&hc, o->ca_file, o->max_retries, o->timeout_ms, o->max_total_ms,
	                      o->backoff_base_ms);
	if ((r = hs_http_new(ctx, &k->http, &hc)) < 0)
		return r;
	if (has_version)
		return (k->version = strdup(o->key))
		               ? 0
		               : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	return gcp_latest_version(ctx, k, o->key);
}

int hs_key_open_gcp_kms(struct hs_ctx *ctx, struct hs_key **out,
                        const struct hs_gcp_kms_key_opts *opts)
{
	struct gcp_key *k = calloc(1, sizeof(*k));
	int r;

	*out = NULL;
	if (k == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = hs_key_load_chain(ctx, "Cloud KMS", opts->cert_file, opts->extra_certs,
	                           &k->chain)) < 0 ||
	    (r = gcp_setup(ctx, k, opts)) < 0 || (r = gcp_check_public_key(ctx, k)) < 0) {
		gcp_free(k);
		return r;
	}
	hs_log(ctx, HS_LOG_INFO, "Cloud KMS key version %s (%s), credentials from %s", k->version,
	       k->algorithm, k->token.source ? k->token.source : "?");
	return hs_key_new(ctx, out, &hs_key_provider_gcp_kms, k);
}

/* GET {version}: the CryptoKeyVersion with its attestation (HSM keys). */
int hs_gcp_kms_version_json(struct hs_ctx *ctx, const struct hs_gcp_kms_key_opts *opts,
                            json_t **out)
{
	struct gcp_key *k = calloc(1, sizeof(*k));
	char *url = NULL;
	int r;

	*out = NULL;
	if (k == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = gcp_setup(ctx, k, opts)) < 0)
		goto out;
	if ((url = hs_strprintf("%s/v1/%s", k->endpoint, k->version)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	r = gcp_call(ctx, k, "GET", url, NULL, "get key version", out);
out:
	free(url);
	gcp_free(k);
	return r;
}
