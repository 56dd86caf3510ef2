/*
 * akv.c - the `azure-key-vault` key provider: Azure Key Vault and Managed
 * HSM (protocols.md 1). One GET per run (the certificate for vaults, the
 * key for Managed HSM), then one POST .../sign per signature. The private
 * key never leaves the vault; only the digest of the signed attributes is
 * sent.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "akv.h"
#include "auth/auth.h"
#include "core/codec.h"
#include "core/core.h"

/* Largest JSON document we parse from the vault. */
#define AKV_JSON_MAX (1024 * 1024)

static int prefetch_join(struct hs_ctx *ctx, struct akv_key *k, const char *scope);

static void akv_free(void *state)
{
	struct akv_key *k = state;

	if (k == NULL)
		return;
	prefetch_join(NULL, k, NULL);
	hs_azure_credential_free(k->cred);
	hs_http_free(k->http);
	if (k->rate_limit_on)
		hs_ratelimit_destroy(&k->rate_limit);
	pthread_mutex_destroy(&k->lock);
	sk_X509_pop_free(k->chain, X509_free);
	free(k->vault_url);
	free(k->kid);
	free(k->resource);
	free(k->tenant);
	free(k->api_version);
	free(k->vault_host);
	free(k);
}

/* "https://vault.azure.net" for vaults, "https://managedhsm.azure.net"
 * for Managed HSM: the audience of the token. */
static const char *default_resource(const struct akv_key *k)
{
	return k->managed_hsm ? "https://managedhsm.azure.net" : "https://vault.azure.net";
}

/* The service as error messages name it. */
static const char *akv_service(const struct akv_key *k)
{
	return k->managed_hsm ? "Azure Managed HSM" : "Azure Key Vault";
}

/* Extracts the value of `name="..."` from a WWW-Authenticate header. */
static char *challenge_param(const char *header, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = header; (p = strstr(p, name)) != NULL; p += n) {
		const char *v, *end;

		if (p > header && p[-1] != ' ' && p[-1] != ',')
			continue;
		if (p[n] != '=' || p[n + 1] != '"')
			continue;
		v = p + n + 2;
		if ((end = strchr(v, '"')) == NULL)
			return NULL;
		return strndup(v, (size_t)(end - v));
	}
	return NULL;
}

/* Host part of an https URL, malloc'd (no port). */
static char *url_host(const char *url)
{
	const char *p = strstr(url, "://");
	size_t n;

	if (p == NULL)
		return NULL;
	p += 3;
	if (*p == '[') {
		const char *e = strchr(p, ']');
		return e ? strndup(p + 1, (size_t)(e - p - 1)) : NULL;
	}
	n = strcspn(p, ":/?#");
	return n ? strndup(p, n) : NULL;
}

/* True when host equals or ends with "." + suffix. */
static bool host_in_domain(const char *host, const char *suffix)
{
	size_t h = strlen(host), s = strlen(suffix);

	if (h == s)
		return strcasecmp(host, suffix) == 0;
	return h > s && host[h - s - 1] == '.' && strcasecmp(host + h - s, suffix) == 0;
}

/*
 * Reads a 401 challenge: tenant from `authorization`(_uri), audience from
 * `resource` (or `scope`). The resource must belong to the vault's domain
 * (a vault must not send us to get tokens for something else) unless the
 * vault is a loopback test server.
 */
static int read_challenge(struct hs_ctx *ctx, struct akv_key *k, const char *header)
{
	char *auth = challenge_param(header, "authorization");
	char *res = challenge_param(header, "resource");
	char *res_host = NULL;
	int r = 0;

	if (auth == NULL)
		auth = challenge_param(header, "authorization_uri");
	if (res == NULL && (res = challenge_param(header, "scope")) != NULL) {
		char *suffix = strstr(res, "/.default");
		if (suffix != NULL)
			*suffix = '\0';
	}
	if (res != NULL && (res_host = url_host(res)) != NULL && !k->loopback &&
	    !host_in_domain(k->vault_host, res_host)) {
		r = hs_error_set(
		        ctx, HS_ERR_AUTH,
		        "the vault's challenge resource '%s' does not match the vault host %s", res,
		        k->vault_host);
		goto out;
	}
	if (res != NULL) {
		free(k->resource);
		k->resource = res;
		res = NULL;
	}
	if (auth != NULL && k->tenant == NULL) {
		const char *slash = strrchr(auth, '/');
		if (slash != NULL && slash[1] != '\0')
			k->tenant = strdup(slash + 1);
	}
out:
	free(auth);
	free(res);
	free(res_host);
	return r;
}

static void *prefetch_main(void *arg)
{
	struct akv_prefetch *p = arg;
	const char *token;

	p->r = hs_azure_credential_token(p->ctx, p->key->cred, p->scope, p->tenant, 0, &token);
	return NULL;
}

/*
 * The first request goes without a token: the vault's 401 names the tenant
 * and the token's audience. When the tenant is known (-kvt, else
 * AZURE_TENANT_ID), the token for the usual audience is fetched at the same
 * time, so that the challenge costs no round trip of its own. It is only
 * sent once the challenge has named that tenant and audience (the
 * credential caches tokens by scope and tenant), so the vault still decides
 * where its tokens come from. Under k->lock.
 */
static void prefetch_start(struct hs_ctx *ctx, struct akv_key *k)
{
	struct akv_prefetch *p = &k->prefetch;
	const char *tenant = k->tenant ? k->tenant : getenv("AZURE_TENANT_ID");

	if (p->state != 0)
		return;
	p->state = -1;
	if (tenant == NULL || *tenant == '\0' || strlen(tenant) >= sizeof(p->tenant) ||
	    k->access_token_given || hs_ctx_new(&p->ctx) < 0)
		return;
	snprintf(p->tenant, sizeof(p->tenant), "%s", tenant);
	hs_ctx_set_log(p->ctx, ctx->log_fn, ctx->log_userdata);
	snprintf(p->scope, sizeof(p->scope), "%s/.default", default_resource(k));
	p->key = k;
	if (pthread_create(&p->thread, NULL, prefetch_main, p) == 0) {
		p->state = 1;
		return;
	}
	hs_ctx_free(p->ctx);
	p->ctx = NULL;
}

/*
 * Waits for the prefetch, if one runs. Under k->lock (or while freeing).
 * When it failed for scope, its error is the answer: the same sign-in is
 * not tried twice.
 */
static int prefetch_join(struct hs_ctx *ctx, struct akv_key *k, const char *scope)
{
	struct akv_prefetch *p = &k->prefetch;
	int r = 0;

	if (p->state != 1)
		return 0;
	pthread_join(p->thread, NULL);
	p->state = -1;
	if (p->r < 0 && scope != NULL && strcmp(scope, p->scope) == 0)
		r = hs_error_set(ctx, p->r, "%s", hs_ctx_message(p->ctx));
	hs_ctx_free(p->ctx);
	p->ctx = NULL;
	return r;
}

/* Gets (or refreshes) the bearer token for the vault's resource. */
static int get_token(struct hs_ctx *ctx, struct akv_key *k, int force, const char **token)
{
	char scope[512];
	int r;

	snprintf(scope, sizeof(scope), "%s/.default",
	         k->resource ? k->resource : default_resource(k));
	if ((r = prefetch_join(ctx, k, scope)) < 0)
		return r;
	r = hs_azure_credential_token(ctx, k->cred, scope, k->tenant, force, token);
	if (r == 0 && !k->source_logged) {
		hs_log(ctx, HS_LOG_INFO, "authenticated to %s with credential source '%s'",
		       k->vault_host, hs_azure_credential_source(k->cred));
		k->source_logged = true;
	}
	return r;
}

/* Writes "Authorization: Bearer ..." into hdr (empty before the first
 * challenge). Under the key's lock: the token cache and the challenge
 * state are shared by every thread signing with this key, and the token
 * is copied out before another thread may refresh (and free) it. */
static int auth_header(struct hs_ctx *ctx, struct akv_key *k, bool refresh, char *hdr, size_t size)
{
	const char *token = NULL;
	int r = 0;

	hdr[0] = '\0';
	pthread_mutex_lock(&k->lock);
	if (k->have_challenge || k->access_token_given) {
		r = get_token(ctx, k, refresh && k->have_challenge, &token);
		if (r == 0)
			snprintf(hdr, size, "Authorization: Bearer %s", token);
	} else {
		prefetch_start(ctx, k);
	}
	pthread_mutex_unlock(&k->lock);
	return r;
}

/* Records a 401 challenge; 1 when the caller should stop retrying. */
static int take_challenge(struct hs_ctx *ctx, struct akv_key *k, const char *header, int attempt)
{
	int r;

	pthread_mutex_lock(&k->lock);
	if ((r = read_challenge(ctx, k, header)) == 0) {
		if (k->have_challenge && attempt > 0)
			r = 1;
		k->have_challenge = true;
	}
	pthread_mutex_unlock(&k->lock);
	return r;
}

/* One vault request with challenge handling: without a token first (the
 * vault answers 401 with where to get one), then with it; after a 401 on a
 * cached token, refresh it once. */
static int vault_send(struct hs_ctx *ctx, struct akv_key *k, const char *method, const char *url,
                      const char *body, struct hs_http_response *resp)
{
	char auth_hdr[8192 + 32];
	const char *headers[4] = {"Content-Type: application/json", "Accept: application/json",
	                          NULL, NULL};
	struct hs_http_request req = {.method = method,
	                              .url = url,
	                              .headers = headers,
	                              .body = body,
	                              .body_len = body ? strlen(body) : 0,
	                              .retry_rbac_denial = true};
	bool refresh = false; /* a 401 answered a token: get a new one */
	int r, attempt;

	req.rate_limit = k->rate_limit_on ? &k->rate_limit : NULL;
	req.service = akv_service(k);
	for (attempt = 0; attempt < 3; attempt++) {
		if ((r = auth_header(ctx, k, refresh, auth_hdr, sizeof(auth_hdr))) < 0)
			return r;
		refresh = auth_hdr[0] != '\0';
		headers[2] = auth_hdr[0] ? auth_hdr : NULL;
		hs_http_response_free(resp);
		r = hs_http_send(ctx, k->http, &req, resp);
		OPENSSL_cleanse(auth_hdr, sizeof(auth_hdr));
		headers[2] = NULL;
		if (r < 0 || resp->status != 401)
			return r;
		if (resp->www_authenticate == NULL || k->access_token_given)
			return 0; /* a plain 401: reported by the caller */
		if ((r = take_challenge(ctx, k, resp->www_authenticate, attempt)) != 0)
			return r < 0 ? r : 0;
	}
	return 0;
}

/* Turns a vault error response into one actionable line. */
static int vault_error(struct hs_ctx *ctx, const struct akv_key *k, const char *what,
                       const struct hs_http_response *resp)
{
	json_t *root = json_loadb((const char *)resp->body.data, resp->body.len, 0, NULL);
	json_t *err = json_object_get(root, "error");
	const char *code = json_string_value(json_object_get(err, "code"));
	const char *msg = json_string_value(json_object_get(err, "message"));
	const char *inner =
	        json_string_value(json_object_get(json_object_get(err, "innererror"), "code"));
	char action[160] = "";
	const char *a;
	int r;

	if (msg != NULL && (a = strstr(msg, "Action: '")) != NULL)
		sscanf(a + 9, "%159[^']", action);
	if (resp->status == 403 && inner && strcmp(inner, "ForbiddenByRbac") == 0)
		r = hs_error_set(
		        ctx, HS_ERR_DENIED,
		        "%s: access denied by Azure RBAC on %s: the identity lacks the data "
		        "action %s (assign a role that grants it)",
		        what, k->vault_host, action[0] ? action : "(not named)");
	else if (resp->status == 403)
		r = hs_error_set(ctx, HS_ERR_DENIED, "%s: access denied on %s: %s", what,
		                 k->vault_host, msg ? msg : "HTTP 403");
	else if (resp->status == 401)
		r = hs_error_set(ctx, HS_ERR_AUTH, "%s: the vault %s rejected the token: %s", what,
		                 k->vault_host, msg ? msg : "HTTP 401");
	else if (resp->status == 404)
		r = hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: %s on %s (%s)", what,
		                 code ? code : "not found", k->vault_host, msg ? msg : "HTTP 404");
	else if (resp->status == 400)
		r = hs_error_set(ctx, HS_ERR_INVALID, "%s: the vault refused the request: %s: %s",
		                 what, code ? code : "BadRequest", msg ? msg : "HTTP 400");
	else
		r = hs_error_set(ctx, HS_ERR_NETWORK, "%s %s: unexpected HTTP %ld from %s%s%s",
		                 akv_service(k), what, resp->status, k->vault_host, msg ? ": " : "",
		                 msg ? msg : "");
	json_decref(root);
	return r;
}

/* GETs `path` (relative to the vault) and parses the JSON answer. */
static int vault_get_json(struct hs_ctx *ctx, struct akv_key *k, const char *path, const char *what,
                          json_t **out)
{
	struct hs_http_response resp = {0};
	char url[2048];
	int r;

	*out = NULL;
	snprintf(url, sizeof(url), "%s%s?api-version=%s", k->vault_url, path, k->api_version);
	if ((r = vault_send(ctx, k, "GET", url, NULL, &resp)) < 0)
		goto out;
	if (resp.status != 200) {
		r = vault_error(ctx, k, what, &resp);
		goto out;
	}
	*out = json_loadb((const char *)resp.body.data, resp.body.len, 0, NULL);
	if (*out == NULL || resp.body.len > AKV_JSON_MAX)
		r = hs_error_set(ctx, HS_ERR_NETWORK, "%s %s: the vault's answer is not JSON",
		                 akv_service(k), what);
out:
	hs_http_response_free(&resp);
	return r;
}

/*
 * "x5c" (base64 DER, leaf first) is not Key Vault's: `hsmsign serve` adds
 * it so that clients get the whole chain without AIA. Its first entry must
 * be the leaf given as "cer"; the others are appended to extra (each must
 * have issued the one before it, as AIA results must).
 */
static int read_x5c(struct hs_ctx *ctx, const json_t *x5c, X509 *leaf, const char *what,
                    STACK_OF(X509) * extra)
{
	X509 *prev = leaf;
	size_t i;

	if (!json_is_array(x5c))
		return 0;
	for (i = 0; i < json_array_size(x5c); i++) {
		const char *b64 = json_string_value(json_array_get(x5c, i));
		struct hs_buf der = {0};
		const unsigned char *p;
		X509 *c = NULL;

		if (b64 == NULL || hs_base64_decode(&der, b64, strlen(b64)) < 0 ||
		    der.len > INT32_MAX ||
		    (p = der.data, (c = d2i_X509(NULL, &p, (long)der.len)) == NULL)) {
			hs_buf_free(&der);
			ERR_clear_error();
			return hs_error_set(ctx, HS_ERR_NETWORK,
			                    "%s: x5c[%zu] is not a certificate", what, i);
		}
		hs_buf_free(&der);
		if (i == 0) {
			int same = X509_cmp(c, leaf) == 0;

			X509_free(c);
			if (!same)
				return hs_error_set(ctx, HS_ERR_NETWORK,
				                    "%s: x5c[0] is not the certificate itself",
				                    what);
			continue;
		}
		if (X509_check_issued(c, prev) != X509_V_OK || sk_X509_push(extra, c) <= 0) {
			X509_free(c);
			return hs_error_set(ctx, HS_ERR_NETWORK,
			                    "%s: x5c[%zu] did not issue the certificate before it",
			                    what, i);
		}
		prev = c;
	}
	return 0;
}

/* The signer certificate and versioned kid from GET certificates/...;
 * intermediates from "x5c" (hsmsign serve) go to extra. */
static int fetch_certificate(struct hs_ctx *ctx, struct akv_key *k,
                             const struct hs_azure_key_opts *o, X509 **leaf, STACK_OF(X509) * extra)
{
	char path[1024], what[600];
	struct hs_buf der = {0};
	const unsigned char *p;
	const char *cer, *kid;
	json_t *j = NULL;
	int r;

	snprintf(path, sizeof(path), "/certificates/%s%s%s", o->certificate,
	         o->certificate_version ? "/" : "",
	         o->certificate_version ? o->certificate_version : "");
	snprintf(what, sizeof(what), "certificate '%s'", o->certificate);
	if ((r = vault_get_json(ctx, k, path, what, &j)) < 0)
		return r;
	cer = json_string_value(json_object_get(j, "cer"));
	kid = json_string_value(json_object_get(j, "kid"));
	if (cer == NULL || kid == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOTFOUND,
		                 "%s has no %s (is it a certificate with a key in the vault?)",
		                 what, cer == NULL ? "certificate data" : "key id");
		goto out;
	}
	if (hs_base64_decode(&der, cer, strlen(cer)) < 0 || der.len > INT32_MAX ||
	    (p = der.data, (*leaf = d2i_X509(NULL, &p, (long)der.len)) == NULL)) {
		ERR_clear_error();
		r = hs_error_set(ctx, HS_ERR_NETWORK,
		                 "%s: the vault sent an unreadable certificate", what);
		goto out;
	}
	if ((k->kid = strdup(kid)) == NULL)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	else
		r = read_x5c(ctx, json_object_get(j, "x5c"), *leaf, what, extra);
out:
	hs_buf_free(&der);
	json_decref(j);
	return r;
}

/* Managed HSM: the versioned kid from GET keys/{name}[/{version}]. */
static int fetch_key_id(struct hs_ctx *ctx, struct akv_key *k, const char *name,
                        const char *version)
{
	char path[1024], what[600];
	const char *kid;
	json_t *j = NULL;
	int r;

	snprintf(path, sizeof(path), "/keys/%s%s%s", name, version ? "/" : "",
	         version ? version : "");
	snprintf(what, sizeof(what), "key '%s'", name);
	if ((r = vault_get_json(ctx, k, path, what, &j)) < 0)
		return r;
	kid = json_string_value(json_object_get(json_object_get(j, "key"), "kid"));
	if (kid == NULL)
		r = hs_error_set(ctx, HS_ERR_NETWORK, "%s: the HSM's answer has no key id", what);
	else if ((k->kid = strdup(kid)) == NULL)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	json_decref(j);
	return r;
}

/* The kid must name a key in this vault: the token goes wherever it points. */
static int check_kid(struct hs_ctx *ctx, const struct akv_key *k)
{
	size_t n = strlen(k->vault_url);

	if (strncasecmp(k->kid, k->vault_url, n) != 0 || strncmp(k->kid + n, "/keys/", 6) != 0)
		return hs_error_set(ctx, HS_ERR_NETWORK,
		                    "the vault named a key outside itself (%s); refusing to use it",
		                    k->kid);
	return 0;
}

/* JWS algorithm for this key and digest; for SHA-1 RSA Key Vault has no
 * RS1, so RSNULL signs a DigestInfo we build (as jsign does). */
static int sign_alg(struct hs_ctx *ctx, const struct akv_key *k, const EVP_MD *md, const char **alg)
{
	EVP_PKEY *pub = X509_get0_pubkey(sk_X509_value(k->chain, 0));
	int md_nid = EVP_MD_get_type(md), bits = EVP_PKEY_get_bits(pub);

	*alg = NULL;
	if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA) {
		*alg = md_nid == NID_sha1     ? "RSNULL"
		       : md_nid == NID_sha256 ? "RS256"
		       : md_nid == NID_sha384 ? "RS384"
		       : md_nid == NID_sha512 ? "RS512"
		                              : NULL;
	} else if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC) {
		/* Key Vault ties the digest to the curve: P-256/SHA-256 ... */
		if (bits == 256 && md_nid == NID_sha256)
			*alg = "ES256";
		else if (bits == 384 && md_nid == NID_sha384)
			*alg = "ES384";
		else if (bits == 521 && md_nid == NID_sha512)
			*alg = "ES512";
		else
			return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
			                    "Key Vault signs with an EC P-%d key only with %s; "
			                    "choose that file digest (-fd)",
			                    bits,
			                    bits == 256   ? "sha256"
			                    : bits == 384 ? "sha384"
			                                  : "sha512");
	}
	if (*alg == NULL)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "the vault key type cannot sign with %s", EVP_MD_get0_name(md));
	return 0;
}

/* POST {kid}/sign with {"alg", "value": base64url(value)}; returns the raw
 * signature bytes. */
static int post_sign(struct hs_ctx *ctx, struct akv_key *k, const char *alg,
                     const struct hs_buf *value, struct hs_buf *raw)
{
	struct hs_http_response resp = {0};
	struct hs_buf b64 = {0};
	char url[2048], *body = NULL;
	json_t *req = NULL, *ans = NULL;
	const char *sig;
	int r;

	snprintf(url, sizeof(url), "%s/sign?api-version=%s", k->kid, k->api_version);
	if ((r = hs_base64_encode(&b64, value->data, value->len, true)) < 0 ||
	    (r = hs_buf_append(&b64, "", 1)) < 0)
		goto out;
	req = json_pack("{s:s, s:s}", "alg", alg, "value", (const char *)b64.data);
	body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	if (body == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = vault_send(ctx, k, "POST", url, body, &resp)) < 0)
		goto out;
	if (resp.status != 200) {
		r = vault_error(ctx, k, "sign", &resp);
		goto out;
	}
	ans = json_loadb((const char *)resp.body.data, resp.body.len, 0, NULL);
	sig = json_string_value(json_object_get(ans, "value"));
	if (sig == NULL)
		r = hs_error_set(ctx, HS_ERR_NETWORK,
		                 "%s sign: the vault's answer has no signature", akv_service(k));
	else if (hs_base64_decode(raw, sig, strlen(sig)) < 0 || raw->len == 0)
		r = hs_error_set(ctx, HS_ERR_NETWORK,
		                 "%s sign: the vault's signature is not base64url", akv_service(k));
out:
	free(body);
	json_decref(req);
	json_decref(ans);
	hs_buf_free(&b64);
	hs_http_response_free(&resp);
	return r;
}

static int akv_sign_digest(struct hs_ctx *ctx, void *state, const EVP_MD *md, const uint8_t *digest,
                           size_t digest_len, struct hs_buf *sig)
{
	struct akv_key *k = state;
	struct hs_buf value = {0}, raw = {0};
	const char *alg;
	int r;

	if ((r = sign_alg(ctx, k, md, &alg)) < 0)
		return r;
	if (strcmp(alg, "RSNULL") == 0)
		r = hs_key_digest_info(ctx, md, digest, digest_len, &value);
	else
		r = hs_buf_append(&value, digest, digest_len);
	if (r < 0 || (r = post_sign(ctx, k, alg, &value, &raw)) < 0)
		goto out;
	if (alg[0] == 'E')
		r = hs_key_ecdsa_p1363_to_der(ctx, raw.data, raw.len, sig);
	else
		r = hs_buf_append(sig, raw.data, raw.len);
out:
	hs_buf_free(&value);
	hs_buf_free(&raw);
	return r;
}

static int akv_get_chain(struct hs_ctx *ctx, void *state, STACK_OF(X509) * *out)
{
	return hs_key_chain_copy(ctx, ((struct akv_key *)state)->chain, out);
}

static const char *akv_key_id(void *state)
{
	return ((struct akv_key *)state)->kid;
}

static unsigned long akv_requests(void *state)
{
	return hs_http_request_count(((struct akv_key *)state)->http);
}

const struct hs_key_provider hs_key_provider_azure = {
        .name = "azure-key-vault",
        .get_chain = akv_get_chain,
        .sign_digest = akv_sign_digest,
        .free = akv_free,
        .key_id = akv_key_id,
        .requests = akv_requests,
        .concurrent = true,
};

/* Leaf from the vault (or the HSM's certificate file), then the -ac files,
 * then intermediates found through AIA. */
static int build_chain(struct hs_ctx *ctx, struct akv_key *k, const struct hs_azure_key_opts *o)
{
	const char *cert_file[2] = {o->cert_file, NULL};
	X509 *leaf = NULL;
	char *cache = NULL;
	int r;

	if ((k->chain = sk_X509_new_null()) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if (k->managed_hsm) {
		const char *name = o->key ? o->key : o->certificate;

		if (o->cert_file == NULL)
			return hs_error_set(ctx, HS_ERR_INVALID,
			                    "Managed HSM stores no certificates: give the signing "
			                    "certificate with --cert FILE");
		if ((r = hs_key_add_cert_files(ctx, k->chain, cert_file)) < 0)
			return r;
		if (o->key_version != NULL) {
			k->kid = hs_strprintf("%s/keys/%s/%s", k->vault_url, name, o->key_version);
			r = k->kid ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		} else
			r = fetch_key_id(ctx, k, name, NULL);
	} else {
		STACK_OF(X509) *extra = sk_X509_new_null();

		if (extra == NULL)
			return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		if ((r = fetch_certificate(ctx, k, o, &leaf, extra)) == 0 || leaf != NULL)
			sk_X509_push(k->chain, leaf);
		while (r == 0 && sk_X509_num(extra) > 0)
			sk_X509_push(k->chain, sk_X509_shift(extra));
		sk_X509_pop_free(extra, X509_free);
	}
	if (r < 0 || (r = check_kid(ctx, k)) < 0 ||
	    (r = hs_key_add_cert_files(ctx, k->chain, o->extra_certs)) < 0)
		return r;
	if (o->no_aia)
		return 0;
	cache = o->aia_cache_dir ? strdup(o->aia_cache_dir) : hs_aia_default_cache_dir();
	r = hs_aia_complete_chain(ctx, k->http, k->chain, cache);
	free(cache);
	return r;
}

/* Normalises the vault URL and decides vault versus Managed HSM. */
static int parse_vault_url(struct hs_ctx *ctx, struct akv_key *k, const struct hs_azure_key_opts *o)
{
	size_t n;
	int r;

	if (o->vault_url == NULL || strncmp(o->vault_url, "http", 4) != 0)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "give the vault URL, e.g. https://NAME.vault.azure.net (-kvu)");
	if ((k->vault_url = strdup(o->vault_url)) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	n = strlen(k->vault_url);
	while (n > 0 && k->vault_url[n - 1] == '/')
		k->vault_url[--n] = '\0';
	k->vault_host = url_host(k->vault_url);
	if (k->vault_host == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID, "bad vault URL '%s'", o->vault_url);
	if ((r = hs_http_ready(ctx)) < 0)
		return r;
	k->loopback = hs_http_is_loopback_url(k->vault_url);
	if (!k->loopback && strncmp(k->vault_url, "https://", 8) != 0)
		return hs_error_set(ctx, HS_ERR_INVALID, "the vault URL must use https://");
	k->managed_hsm = o->managed_hsm >= 0 ? o->managed_hsm == 1
	                                     : strstr(k->vault_host, ".managedhsm.") != NULL;
	k->api_version = strdup(o->api_version ? o->api_version : HS_AZURE_API_VERSION);
	if (k->api_version == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if (!k->managed_hsm && o->certificate == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID, "give the certificate name (-kvc)");
	if (k->managed_hsm && o->key == NULL && o->certificate == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID, "give the Managed HSM key name (-kvc)");
	return 0;
}

static int open_clients(struct hs_ctx *ctx, struct akv_key *k, const struct hs_azure_key_opts *o)
{
	struct hs_http_config hc = HS_HTTP_CONFIG_INIT;
	struct hs_azure_cred_opts co = HS_AZURE_CRED_OPTS_FROM(o);
	int r;

	co.oidc_audience = o->oidc_audience;
	hs_http_config_limits(&hc, o->ca_file, o->max_retries, o->timeout_ms, o->max_total_ms,
	                      o->backoff_base_ms);
	if ((r = hs_http_new(ctx, &k->http, &hc)) < 0)
		return r;
	k->access_token_given = o->access_token != NULL;
	if (o->tenant_id != NULL && (k->tenant = strdup(o->tenant_id)) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	return hs_azure_credential_new(ctx, k->http, &co, &k->cred);
}

/*
 * Requests per second this key may be sent, from the service limits
 * (protocols.md 1.h): Key Vault counts per vault per 10 s, and the HSM
 * column is the lower one (2,000 / 500 / 250 for RSA 2048 / 3072 / 4096,
 * 2,000 for EC); Managed HSM counts per second (RSA 1,100 / 360 / 160, EC
 * 260 / 165 / 56). We aim at 90% of it.
 */
static double default_rate(const struct akv_key *k)
{
	EVP_PKEY *pub = X509_get0_pubkey(sk_X509_value(k->chain, 0));
	int bits = pub ? EVP_PKEY_get_bits(pub) : 2048;
	bool rsa = pub == NULL || EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA;
	double per_s;

	if (k->managed_hsm && rsa)
		per_s = bits <= 2048 ? 1100 : bits <= 3072 ? 360 : 160;
	else if (k->managed_hsm)
		per_s = bits <= 256 ? 260 : bits <= 384 ? 165 : 56;
	else if (rsa)
		per_s = bits <= 2048 ? 200 : bits <= 3072 ? 50 : 25;
	else
		per_s = 200;
	return per_s * 0.9;
}

/* rate: requests per second; 0: from the service limits; < 0: none. */
static int setup_rate_limit(struct hs_ctx *ctx, struct akv_key *k, double rate)
{
	if (rate < 0)
		return 0;
	if (rate == 0)
		rate = default_rate(k);
	/* A burst of 100 ms worth: any window of T seconds then sees at most
	 * rate * (T + 0.1) requests, below the limit for the vault's 10 s
	 * windows and for Managed HSM's 1 s windows alike. */
	if (hs_ratelimit_init(&k->rate_limit, rate, rate / 10) < 0)
		return hs_error_set(ctx, HS_ERR_NOMEM, "cannot create the rate limiter");
	k->rate_limit_on = true;
	hs_log(ctx, HS_LOG_DEBUG, "vault requests limited to %.1f per second", rate);
	return 0;
}

int hs_key_open_azure(struct hs_ctx *ctx, struct hs_key **out, const struct hs_azure_key_opts *opts)
{
	struct akv_key *k = calloc(1, sizeof(*k));
	int r;

	*out = NULL;
	if (k == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&k->lock, NULL);
	if ((r = parse_vault_url(ctx, k, opts)) < 0 || (r = open_clients(ctx, k, opts)) < 0 ||
	    (r = build_chain(ctx, k, opts)) < 0) {
		akv_free(k);
		return r;
	}
	if ((r = setup_rate_limit(ctx, k, opts->rate_limit)) < 0) {
		akv_free(k);
		return r;
	}
	hs_log(ctx, HS_LOG_DEBUG, "%s key %s", k->managed_hsm ? "Managed HSM" : "Key Vault",
	       k->kid);
	return hs_key_new(ctx, out, &hs_key_provider_azure, k);
}

int hs_akv_connect(struct hs_ctx *ctx, const struct hs_azure_key_opts *opts, struct akv_key **out)
{
	struct akv_key *k = calloc(1, sizeof(*k));
	int r;

	*out = NULL;
	if (k == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = parse_vault_url(ctx, k, opts)) < 0 || (r = open_clients(ctx, k, opts)) < 0) {
		akv_free(k);
		return r;
	}
	*out = k;
	return 0;
}

void hs_akv_free(struct akv_key *k)
{
	akv_free(k);
}

int hs_akv_send(struct hs_ctx *ctx, struct akv_key *k, const char *method, const char *url,
                const char *body, struct hs_http_response *resp)
{
	return vault_send(ctx, k, method, url, body, resp);
}

int hs_akv_error(struct hs_ctx *ctx, const struct akv_key *k, const char *what,
                 const struct hs_http_response *resp)
{
	return vault_error(ctx, k, what, resp);
}

const char *hs_akv_credential_source(struct akv_key *k)
{
	const char *source;

	pthread_mutex_lock(&k->lock);
	prefetch_join(NULL, k, NULL);
	source = hs_azure_credential_source(k->cred);
	pthread_mutex_unlock(&k->lock);
	return source;
}
