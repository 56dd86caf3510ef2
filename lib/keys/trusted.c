/*
 * trusted.c - the `trusted-signing` key provider: Azure Trusted Signing
 * (renamed Artifact Signing; protocols.md 4). The service holds the key
 * AND issues the short-lived certificate: each sign request returns the
 * signature and the chain. The engine needs the chain before the first
 * file, so opening the key makes one sign request over 32 zero bytes (as
 * jsign does) and keeps that chain; every later answer must carry the same
 * leaf, or the file fails with a clear message instead of an unverifiable
 * signature. Tokens come from lib/auth (same sources as Key Vault) for
 * scope https://codesigning.azure.net/.default.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "auth/auth.h"
#include "core/codec.h"
#include "core/http.h"
#include "cloud_parse.h"
#include "provider.h"

#define TS_SCOPE      "https://codesigning.azure.net/.default"
#define TS_JSON_MAX   (1024 * 1024)
#define TS_POLL_MS    60000
#define TS_NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"

struct ts_key {
	struct hs_http *http;
	struct hs_azure_credential *cred;
	char *endpoint;    /* https://REGION.codesigning.azure.net */
	char *profile_url; /* {endpoint}/codesigningaccounts/A/certificateprofiles/P */
	char *api_version;
	char *tenant;
	bool colon_sign; /* the service wants ".../P:sign" */
	bool token_given;
	long poll_ms;
	STACK_OF(X509) * chain;
};

/* One sign operation's result. */
struct ts_result {
	struct hs_buf signature;
	STACK_OF(X509) * chain;
};

static void ts_free(void *state)
{
	struct ts_key *k = state;

	if (k == NULL)
		return;
	hs_azure_credential_free(k->cred);
	hs_http_free(k->http);
	sk_X509_pop_free(k->chain, X509_free);
	free(k->endpoint);
	free(k->profile_url);
	free(k->api_version);
	free(k->tenant);
	free(k);
}

static void ts_result_free(struct ts_result *res)
{
	hs_buf_free(&res->signature);
	sk_X509_pop_free(res->chain, X509_free);
	memset(res, 0, sizeof(*res));
}

/* One line from {"errorDetail":{code,message}} or {"error":{code,message}}. */
static int ts_error(struct hs_ctx *ctx, const char *what, const struct hs_http_response *resp)
{
	json_t *root = json_loadb((const char *)resp->body.data, resp->body.len, 0, NULL);
	json_t *e = json_object_get(root, "errorDetail");
	const char *code, *msg;
	int r, err = resp->status == 401   ? HS_ERR_AUTH
	             : resp->status == 403 ? HS_ERR_DENIED
	             : resp->status == 404 ? HS_ERR_NOTFOUND
	             : resp->status == 429 ? HS_ERR_THROTTLED
	             : resp->status >= 500 ? HS_ERR_NETWORK
	                                   : HS_ERR_INVALID;

	if (e == NULL)
		e = json_object_get(root, "error");
	code = json_string_value(json_object_get(e, "code"));
	msg = json_string_value(json_object_get(e, "message"));
	r = hs_error_set(ctx, err, "Trusted Signing %s failed (HTTP %ld): %s%s%s", what,
	                 resp->status, code ? code : "error", msg ? ": " : "", msg ? msg : "");
	json_decref(root);
	return r;
}

/* A request with the bearer token; after a 401 the token is renewed once. */
static int ts_send(struct hs_ctx *ctx, struct ts_key *k, const char *method, const char *url,
                   const char *body, struct hs_http_response *resp)
{
	char auth[8192 + 32];
	const char *headers[] = {auth, "Content-Type: application/json", "Accept: application/json",
	                         NULL};
	struct hs_http_request req = {.method = method,
	                              .url = url,
	                              .headers = headers,
	                              .body = body,
	                              .body_len = body ? strlen(body) : 0,
	                              .retry_rbac_denial = true};
	const char *token;
	int r = 0;

	req.service = "Azure Trusted Signing";
	for (int attempt = 0; attempt < 2; attempt++) {
		if ((r = hs_azure_credential_token(ctx, k->cred, TS_SCOPE, k->tenant, attempt > 0,
		                                   &token)) < 0)
			return r;
		if ((size_t)snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token) >=
		    sizeof(auth))
			return hs_error_set(ctx, HS_ERR_AUTH, "the access token is too long");
		hs_http_response_free(resp);
		r = hs_http_send(ctx, k->http, &req, resp);
		OPENSSL_cleanse(auth, sizeof(auth));
		if (r < 0 || resp->status != 401 || k->token_given)
			break;
	}
	return r;
}

/* The status object: the body itself, or its "result"/"signStatus". */
static json_t *ts_status_object(json_t *root)
{
	json_t *inner = json_object_get(root, "result");

	if (!json_is_object(inner))
		inner = json_object_get(root, "signStatus");
	return json_is_object(inner) ? inner : root;
}

/* signingCertificate: base64 of (CRLF-wrapped) base64 of a certs-only
 * PKCS#7. */
static int ts_decode_chain(struct hs_ctx *ctx, const char *b64b64, STACK_OF(X509) * *out)
{
	struct hs_buf inner = {0}, der = {0}, text = {0};
	const unsigned char *p;
	PKCS7 *p7 = NULL;
	STACK_OF(X509) *certs = NULL;
	int r = 0;

	if (b64b64 == NULL || hs_base64_decode(&inner, b64b64, strlen(b64b64)) < 0) {
		r = hs_error_set(ctx, HS_ERR_NETWORK,
		                 "Trusted Signing: no valid signingCertificate");
		goto out;
	}
	for (size_t i = 0; i < inner.len; i++) /* the inner text is MIME-wrapped */
		if (inner.data[i] != '\r' && inner.data[i] != '\n' && inner.data[i] != ' ' &&
		    (r = hs_buf_append(&text, &inner.data[i], 1)) < 0)
			goto out;
	p = der.data;
	if (hs_base64_decode(&der, (const char *)text.data, text.len) < 0 || der.len > INT32_MAX ||
	    (p = der.data, (p7 = d2i_PKCS7(NULL, &p, (long)der.len)) == NULL) ||
	    !PKCS7_type_is_signed(p7) || (certs = p7->d.sign->cert) == NULL ||
	    sk_X509_num(certs) < 1) {
		r = hs_error_ssl(ctx, HS_ERR_NETWORK,
		                 "Trusted Signing: the certificate chain is not a PKCS#7 bundle");
		goto out;
	}
	if ((*out = X509_chain_up_ref(certs)) == NULL)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
out:
	ERR_clear_error();
	PKCS7_free(p7);
	hs_buf_free(&inner);
	hs_buf_free(&text);
	hs_buf_free(&der);
	return r;
}

/* Puts the leaf first (the one certificate that issued none of the
 * others), then its issuers in order; other certificates are dropped. */
static int ts_order_chain(struct hs_ctx *ctx, STACK_OF(X509) * certs, STACK_OF(X509) * *out)
{
	X509 *leaf = NULL, *cur;
	int n = sk_X509_num(certs);

	for (int i = 0; i < n && leaf == NULL; i++) {
		bool issued_other = false;

		for (int j = 0; j < n; j++)
			if (j != i && X509_check_issued(sk_X509_value(certs, i),
			                                sk_X509_value(certs, j)) == X509_V_OK)
				issued_other = true;
		if (!issued_other)
			leaf = sk_X509_value(certs, i);
	}
	if (leaf == NULL || (*out = sk_X509_new_null()) == NULL)
		return hs_error_set(ctx, HS_ERR_NETWORK,
		                    "Trusted Signing: no leaf certificate in "
		                    "the chain");
	for (cur = leaf; cur != NULL && sk_X509_num(*out) <= n;) {
		X509 *next = NULL;

		X509_up_ref(cur);
		sk_X509_push(*out, cur);
		if (X509_check_issued(cur, cur) == X509_V_OK)
			break; /* self-signed root */
		for (int j = 0; j < n && next == NULL; j++)
			if (X509_check_issued(sk_X509_value(certs, j), cur) == X509_V_OK)
				next = sk_X509_value(certs, j);
		cur = next;
	}
	return 0;
}

/* Reads a Succeeded status: the signature and the ordered chain. */
static int ts_read_result(struct hs_ctx *ctx, json_t *st, struct ts_result *res)
{
	const char *sig = json_string_value(json_object_get(st, "signature"));
	STACK_OF(X509) *certs = NULL;
	int r;

	if (sig == NULL || hs_base64_decode(&res->signature, sig, strlen(sig)) < 0 ||
	    res->signature.len == 0)
		return hs_error_set(ctx, HS_ERR_NETWORK,
		                    "Trusted Signing: no valid signature in "
		                    "the answer");
	if ((r = ts_decode_chain(ctx, json_string_value(json_object_get(st, "signingCertificate")),
	                         &certs)) < 0)
		return r;
	r = ts_order_chain(ctx, certs, &res->chain);
	sk_X509_pop_free(certs, X509_free);
	return r;
}

static void ts_sleep_ms(long ms)
{
	hs_os_sleep_us((int64_t)ms * 1000);
}

/* Status of one answer: 1 done (res filled), 0 still running (*id set),
 * or an error. */
static int ts_status(struct hs_ctx *ctx, const struct hs_http_response *resp, const char *what,
                     char *id, size_t id_size, struct ts_result *res)
{
	json_t *root = json_loadb((const char *)resp->body.data, resp->body.len, 0, NULL);
	json_t *st = ts_status_object(root);
	const char *status = json_string_value(json_object_get(st, "status"));
	const char *op = json_string_value(json_object_get(st, "operationId"));
	int r;

	if (op == NULL)
		op = json_string_value(json_object_get(root, "id"));
	if (resp->status != 200 && resp->status != 202)
		r = ts_error(ctx, what, resp);
	else if (root == NULL || resp->body.len > TS_JSON_MAX || status == NULL)
		r = hs_error_set(ctx, HS_ERR_NETWORK, "Trusted Signing %s: no status in the answer",
		                 what);
	else if (strcmp(status, "Succeeded") == 0)
		r = (r = ts_read_result(ctx, st, res)) < 0 ? r : 1;
	else if (strcmp(status, "InProgress") == 0 || strcmp(status, "Running") == 0 ||
	         strcmp(status, "NotStarted") == 0) {
		if (op == NULL || strspn(op, TS_NAME_CHARS) != strlen(op) || strlen(op) >= id_size)
			r = hs_error_set(ctx, HS_ERR_NETWORK, "Trusted Signing: bad operation id");
		else
			r = (snprintf(id, id_size, "%s", op), 0);
	} else
		r = hs_error_set(ctx, HS_ERR_NETWORK, "Trusted Signing sign operation %s: %s",
		                 op ? op : "?", status);
	json_decref(root);
	return r;
}

int hs_trusted_parse_answer(struct hs_ctx *ctx, long status, const uint8_t *body, size_t len)
{
	struct hs_http_response resp = {.status = status};
	struct ts_result res = {0};
	char id[128];
	int r;

	if (hs_buf_append(&resp.body, body, len) < 0)
		return HS_ERR_NOMEM;
	r = ts_status(ctx, &resp, "fuzz", id, sizeof(id), &res);
	ts_result_free(&res);
	hs_http_response_free(&resp);
	return r;
}

/* POSTs the sign request (".../sign", or ":sign" when the service answers
 * 404 to the first spelling). */
static int ts_submit(struct hs_ctx *ctx, struct ts_key *k, const char *body,
                     struct hs_http_response *resp)
{
	char *url;
	int r;

	for (int attempt = 0; attempt < 2; attempt++) {
		url = hs_strprintf("%s%ssign?api-version=%s", k->profile_url,
		                   k->colon_sign ? ":" : "/", k->api_version);
		if (url == NULL)
			return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		r = ts_send(ctx, k, "POST", url, body, resp);
		free(url);
		if (r < 0 || resp->status != 404 || attempt > 0)
			return r;
		k->colon_sign = !k->colon_sign;
	}
	return r;
}

/* Submits and polls (50 ms growing to 1 s, bounded by poll_ms) until
 * the operation succeeds or fails. */
static int ts_sign_raw(struct hs_ctx *ctx, struct ts_key *k, const char *alg, const uint8_t *digest,
                       size_t len, struct ts_result *res)
{
	struct hs_http_response resp = {0};
	struct hs_buf b64 = {0};
	json_t *req = NULL;
	char *body = NULL, *url = NULL, id[128];
	long waited = 0;
	int r;

	if ((r = hs_base64_encode(&b64, digest, len, false)) < 0 ||
	    (r = hs_buf_append(&b64, "", 1)) < 0)
		goto out;
	req = json_pack("{s:s, s:s}", "signatureAlgorithm", alg, "digest", (char *)b64.data);
	if (req == NULL || (body = json_dumps(req, JSON_COMPACT)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = ts_submit(ctx, k, body, &resp)) < 0)
		goto out;
	for (int i = 0; (r = ts_status(ctx, &resp, "sign", id, sizeof(id), res)) == 0; i++) {
		long delay = 50 + 10L * i < 1000 ? 50 + 10L * i : 1000;

		if (waited >= k->poll_ms) {
			r = hs_error_set(
			        ctx, HS_ERR_NETWORK,
			        "Trusted Signing: the sign operation %s did not finish within "
			        "%ld s",
			        id, k->poll_ms / 1000);
			goto out;
		}
		ts_sleep_ms(delay);
		waited += delay;
		free(url);
		url = hs_strprintf("%s/sign/%s?api-version=%s", k->profile_url, id, k->api_version);
		if (url == NULL || (r = ts_send(ctx, k, "GET", url, NULL, &resp)) < 0) {
			r = url ? r : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
			goto out;
		}
	}
	r = r > 0 ? 0 : r;
out:
	json_decref(req);
	free(body);
	free(url);
	hs_buf_free(&b64);
	hs_http_response_free(&resp);
	return r;
}

static int ts_sign_digest(struct hs_ctx *ctx, void *state, const EVP_MD *md, const uint8_t *digest,
                          size_t digest_len, struct hs_buf *sig)
{
	struct ts_key *k = state;
	int nid = EVP_MD_get_type(md);
	const char *alg = nid == NID_sha256   ? "RS256"
	                  : nid == NID_sha384 ? "RS384"
	                  : nid == NID_sha512 ? "RS512"
	                                      : NULL;
	struct ts_result res = {0};
	int r;

	if (alg == NULL)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "Trusted Signing cannot sign %s digests; use -fd sha256",
		                    EVP_MD_get0_name(md));
	if ((r = ts_sign_raw(ctx, k, alg, digest, digest_len, &res)) < 0)
		goto out;
	/* The chain was fixed when the key was opened: a new certificate
	 * would not match the signature embedded next to it. */
	if (X509_cmp(sk_X509_value(res.chain, 0), sk_X509_value(k->chain, 0)) != 0) {
		r = hs_error_set(ctx, HS_ERR_NETWORK,
		                 "Trusted Signing renewed its signing certificate during this run; "
		                 "sign the remaining files again");
		goto out;
	}
	r = hs_buf_append(sig, res.signature.data, res.signature.len);
out:
	ts_result_free(&res);
	return r;
}

static int ts_get_chain(struct hs_ctx *ctx, void *state, STACK_OF(X509) * *out)
{
	return hs_key_chain_copy(ctx, ((struct ts_key *)state)->chain, out);
}

/* The key's name in its service, for reports. */
static const char *ts_key_id(void *state)
{
	const struct ts_key *k = state;

	return k->profile_url;
}

const struct hs_key_provider hs_key_provider_trusted_signing = {
        .name = "trusted-signing",
        .get_chain = ts_get_chain,
        .sign_digest = ts_sign_digest,
        .free = ts_free,
        .key_id = ts_key_id,
};

/* Endpoint: https (or a loopback test server); names: their alphabet. */
static int ts_parse_opts(struct hs_ctx *ctx, struct ts_key *k,
                         const struct hs_trusted_signing_key_opts *o)
{
	size_t n;
	int r;

	if (o->endpoint == NULL || o->account == NULL || o->profile == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "Trusted Signing needs --trusted-signing-endpoint, "
		                    "--trusted-signing-account and --trusted-signing-profile");
	if (strspn(o->account, TS_NAME_CHARS) != strlen(o->account) ||
	    strspn(o->profile, TS_NAME_CHARS) != strlen(o->profile) || !o->account[0] ||
	    !o->profile[0])
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "bad Trusted Signing account or profile "
		                    "name");
	k->endpoint = strstr(o->endpoint, "://") ? strdup(o->endpoint)
	                                         : hs_strprintf("https://%s", o->endpoint);
	k->api_version = strdup(o->api_version ? o->api_version : HS_TRUSTED_SIGNING_API_VERSION);
	if (k->endpoint == NULL || k->api_version == NULL ||
	    (o->tenant_id && (k->tenant = strdup(o->tenant_id)) == NULL))
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	n = strlen(k->endpoint);
	while (n > 0 && k->endpoint[n - 1] == '/')
		k->endpoint[--n] = '\0';
	if ((r = hs_http_ready(ctx)) < 0)
		return r;
	if (strncmp(k->endpoint, "https://", 8) != 0 && !hs_http_is_loopback_url(k->endpoint))
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "the Trusted Signing endpoint must use https://: %s",
		                    k->endpoint);
	if (strspn(k->api_version, TS_NAME_CHARS ".") != strlen(k->api_version))
		return hs_error_set(ctx, HS_ERR_INVALID, "bad api-version");
	k->profile_url = hs_strprintf("%s/codesigningaccounts/%s/certificateprofiles/%s",
	                              k->endpoint, o->account, o->profile);
	k->poll_ms = o->poll_timeout_ms > 0 ? o->poll_timeout_ms : TS_POLL_MS;
	k->token_given = o->access_token != NULL;
	return k->profile_url ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

static int ts_open_clients(struct hs_ctx *ctx, struct ts_key *k,
                           const struct hs_trusted_signing_key_opts *o)
{
	struct hs_http_config hc = HS_HTTP_CONFIG_INIT;
	struct hs_azure_cred_opts co = HS_AZURE_CRED_OPTS_FROM(o);
	int r;

	hs_http_config_limits(&hc, o->ca_file, o->max_retries, o->timeout_ms, o->max_total_ms,
	                      o->backoff_base_ms);
	if ((r = hs_http_new(ctx, &k->http, &hc)) < 0)
		return r;
	return hs_azure_credential_new(ctx, k->http, &co, &k->cred);
}

/* The chain from a sign request over 32 zero bytes (the service has no
 * other call that returns this profile's current certificate). */
static int ts_fetch_chain(struct hs_ctx *ctx, struct ts_key *k)
{
	static const uint8_t zeros[32];
	struct ts_result res = {0};
	int r;

	if ((r = ts_sign_raw(ctx, k, "RS256", zeros, sizeof(zeros), &res)) < 0) {
		ts_result_free(&res); /* a failed answer may have filled part of it */
		return r;
	}
	k->chain = res.chain;
	res.chain = NULL;
	ts_result_free(&res);
	return 0;
}

int hs_key_open_trusted_signing(struct hs_ctx *ctx, struct hs_key **out,
                                const struct hs_trusted_signing_key_opts *opts)
{
	struct ts_key *k = calloc(1, sizeof(*k));
	int r;

	*out = NULL;
	if (k == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = ts_parse_opts(ctx, k, opts)) < 0 || (r = ts_open_clients(ctx, k, opts)) < 0 ||
	    (r = ts_fetch_chain(ctx, k)) < 0) {
		ts_free(k);
		return r;
	}
	hs_log(ctx, HS_LOG_INFO, "Trusted Signing profile %s, credential source '%s'",
	       k->profile_url, hs_azure_credential_source(k->cred));
	return hs_key_new(ctx, out, &hs_key_provider_trusted_signing, k);
}
