/*
 * hcvault.c - the `vault-transit` key provider: HashiCorp Vault's transit
 * secrets engine (protocols.md 5.3). At open: a Vault token (given, from
 * VAULT_TOKEN, an AppRole login, a JWT login with GitHub Actions OIDC, or
 * ~/.vault-token), the certificate from a file, and one GET of the key to
 * check that the version that signs holds the certificate's public key.
 * Then one POST {mount}/sign/{key}/{hash} per signature, prehashed, with
 * pkcs1v15 for RSA and ASN.1 (DER) ECDSA; the "vault:vN:" prefix of the
 * answer is removed.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "auth/auth.h"
#include "core/codec.h"
#include "core/http.h"
#include "cloud_parse.h"
#include "provider.h"

#define HCV_JSON_MAX   (1024 * 1024)
#define HCV_FILE_MAX   (64 * 1024)
#define HCV_NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./"

struct hcv_key {
	struct hs_http *http;
	char *addr;      /* no trailing slash */
	char *mount;     /* "transit" */
	char *name;      /* key name */
	char *namespace; /* or NULL */
	char *token;     /* secret */
	long version;    /* 0: latest */
	STACK_OF(X509) * chain;
};

static void hcv_secret_free(char *s)
{
	if (s != NULL)
		OPENSSL_clear_free(s, strlen(s));
}

static void hcv_free(void *state)
{
	struct hcv_key *k = state;

	if (k == NULL)
		return;
	hcv_secret_free(k->token);
	hs_http_free(k->http);
	sk_X509_pop_free(k->chain, X509_free);
	free(k->addr);
	free(k->mount);
	free(k->name);
	free(k->namespace);
	free(k);
}

static const char *hcv_env(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? v : NULL;
}

/* Vault wraps messages as "1 error occurred:\n\t* permission denied\n\n":
 * keeps the items, joined with "; ", in out. */
static void hcv_flatten(const char *msg, char *out, size_t size)
{
	size_t used = 0;

	out[0] = '\0';
	while (msg != NULL && *msg != '\0' && used + 1 < size) {
		size_t n = strcspn(msg, "\r\n");
		const char *line = msg;

		msg += n + strspn(msg + n, "\r\n");
		while (n > 0 && (*line == ' ' || *line == '\t' || *line == '*')) {
			line++;
			n--;
		}
		if (n == 0 || (n > 9 && (strncmp(line + n - 9, "occurred:", 9) == 0)))
			continue;
		used += (size_t)snprintf(out + used, size - used, "%s%.*s", used ? "; " : "",
		                         (int)n, line);
	}
}

/* One line from {"errors": ["..."]}. */
static int hcv_error(struct hs_ctx *ctx, const char *what, const struct hs_http_response *resp)
{
	json_t *root = json_loadb((const char *)resp->body.data, resp->body.len, 0, NULL);
	const char *msg = json_string_value(json_array_get(json_object_get(root, "errors"), 0));
	int code = resp->status == 401 || resp->status == 403 ? HS_ERR_DENIED
	           : resp->status == 404                      ? HS_ERR_NOTFOUND
	           : resp->status == 429                      ? HS_ERR_THROTTLED
	           : resp->status >= 500                      ? HS_ERR_NETWORK
	                                                      : HS_ERR_INVALID;
	char line[300];
	int r;

	hcv_flatten(msg, line, sizeof(line));
	r = hs_error_set(ctx, code, "Vault %s failed (HTTP %ld)%s%s", what, resp->status,
	                 line[0] ? ": " : "", line);
	json_decref(root);
	return r;
}

/* A Vault API call; *out gets the JSON answer of a 2xx. */
static int hcv_call(struct hs_ctx *ctx, struct hcv_key *k, const char *method, const char *path,
                    const char *body, const char *what, json_t **out)
{
	char *url = hs_strprintf("%s/v1/%s", k->addr, path);
	char *tok = k->token ? hs_strprintf("X-Vault-Token: %s", k->token) : NULL;
	char *ns = k->namespace ? hs_strprintf("X-Vault-Namespace: %s", k->namespace) : NULL;
	const char *headers[5] = {"X-Vault-Request: true", "Content-Type: application/json", NULL,
	                          NULL, NULL};
	struct hs_http_request req = {.method = method,
	                              .url = url,
	                              .headers = headers,
	                              .body = body,
	                              .body_len = body ? strlen(body) : 0};
	struct hs_http_response resp = {0};
	int r, n = 2;

	*out = NULL;
	if (url == NULL || (k->token && !tok) || (k->namespace && !ns)) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (tok != NULL)
		headers[n++] = tok;
	if (ns != NULL)
		headers[n++] = ns;
	req.service = "HashiCorp Vault";
	if ((r = hs_http_send(ctx, k->http, &req, &resp)) < 0)
		goto out;
	if (resp.status < 200 || resp.status > 299) {
		r = hcv_error(ctx, what, &resp);
		goto out;
	}
	if (resp.body.len > HCV_JSON_MAX ||
	    (*out = json_loadb((const char *)resp.body.data, resp.body.len, 0, NULL)) == NULL)
		r = hs_error_set(ctx, HS_ERR_NETWORK, "Vault %s: the answer is not JSON", what);
out:
	hs_http_response_free(&resp);
	hcv_secret_free(tok);
	free(ns);
	free(url);
	return r;
}

/* POST auth/{mount}/login with body; keeps auth.client_token. */
static int hcv_login(struct hs_ctx *ctx, struct hcv_key *k, const char *mount, json_t *body,
                     const char *what)
{
	char *path = hs_strprintf("auth/%s/login", mount);
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_t *ans = NULL;
	const char *tok;
	int r;

	if (path == NULL || text == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (strspn(mount, HCV_NAME_CHARS) != strlen(mount) || strstr(mount, "..")) {
		r = hs_error_set(ctx, HS_ERR_INVALID, "bad Vault auth mount '%s'", mount);
		goto out;
	}
	if ((r = hcv_call(ctx, k, "POST", path, text, what, &ans)) < 0)
		goto out;
	tok = json_string_value(json_object_get(json_object_get(ans, "auth"), "client_token"));
	if (tok == NULL)
		r = hs_error_set(ctx, HS_ERR_AUTH, "Vault %s: no client token in the answer", what);
	else if ((k->token = strdup(tok)) == NULL)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
out:
	if (ans != NULL) { /* the token is in the tree: wipe it */
		json_t *t = json_object_get(json_object_get(ans, "auth"), "client_token");
		if (json_is_string(t))
			OPENSSL_cleanse((void *)json_string_value(t), json_string_length(t));
	}
	json_decref(ans);
	hcv_secret_free(text);
	free(path);
	return r;
}

/* The GitHub Actions OIDC token (audience optional), secret memory. */
static int hcv_github_jwt(struct hs_ctx *ctx, struct hcv_key *k, const char *audience, char **jwt)
{
	const char *base = hcv_env("ACTIONS_ID_TOKEN_REQUEST_URL");
	const char *bearer = hcv_env("ACTIONS_ID_TOKEN_REQUEST_TOKEN");

	*jwt = NULL;
	if (base == NULL || bearer == NULL)
		return hs_error_set(ctx, HS_ERR_AUTH,
		                    "Vault JWT login needs GitHub Actions OIDC "
		                    "(ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN; permissions: id-token: "
		                    "write)");
	return hs_github_oidc_token(ctx, k->http, base, bearer, audience, jwt);
}

/* ~/.vault-token (what `vault login` leaves), or 1 when there is none. */
static int hcv_token_file(struct hs_ctx *ctx, struct hcv_key *k)
{
	const char *home = hcv_env("HOME");
	char *path = home ? hs_strprintf("%s/.vault-token", home) : NULL;
	FILE *fp = path ? hs_os_fopen(path, "r") : NULL;
	char buf[4096] = "";
	int r = 1;

	if (fp != NULL) {
		size_t n = fread(buf, 1, sizeof(buf) - 1, fp);

		buf[n] = '\0';
		buf[strcspn(buf, " \t\r\n")] = '\0';
		fclose(fp);
		if (buf[0] != '\0')
			r = (k->token = strdup(buf))
			            ? 0
			            : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	OPENSSL_cleanse(buf, sizeof(buf));
	free(path);
	return r;
}

static int hcv_authenticate(struct hs_ctx *ctx, struct hcv_key *k,
                            const struct hs_vault_transit_key_opts *o)
{
	const char *token = o->token ? o->token : hcv_env("VAULT_TOKEN");
	json_t *body = NULL;
	char *jwt = NULL;
	int r;

	if (token != NULL)
		return (k->token = strdup(token))
		               ? 0
		               : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if (o->role_id != NULL) {
		if (o->secret_id == NULL)
			return hs_error_set(ctx, HS_ERR_INVALID,
			                    "Vault AppRole login needs the secret id "
			                    "(--vault-secret-id)");
		body = json_pack("{s:s, s:s}", "role_id", o->role_id, "secret_id", o->secret_id);
		r = hcv_login(ctx, k, o->auth_mount ? o->auth_mount : "approle", body,
		              "AppRole login");
	} else if (o->jwt_role != NULL) {
		if ((r = hcv_github_jwt(ctx, k, o->jwt_audience, &jwt)) < 0)
			goto out;
		body = json_pack("{s:s, s:s}", "role", o->jwt_role, "jwt", jwt);
		r = hcv_login(ctx, k, o->auth_mount ? o->auth_mount : "jwt", body, "JWT login");
	} else if ((r = hcv_token_file(ctx, k)) == 1)
		r = hs_error_set(ctx, HS_ERR_AUTH,
		                 "no Vault credentials: give --vault-token, set VAULT_TOKEN, use "
		                 "AppRole (--vault-role-id/--vault-secret-id) or JWT "
		                 "(--vault-jwt-role), or run `vault login`");
out:
	if (body != NULL) { /* secret_id or the JWT are in the tree */
		json_t *s = json_object_get(body, o->role_id ? "secret_id" : "jwt");
		if (json_is_string(s))
			OPENSSL_cleanse((void *)json_string_value(s), json_string_length(s));
	}
	json_decref(body);
	hcv_secret_free(jwt);
	return r;
}

/* GET {mount}/keys/{name}: the signing version's public key must be the
 * certificate's. */
static int hcv_check_key(struct hs_ctx *ctx, struct hcv_key *k)
{
	char *path = hs_strprintf("%s/keys/%s", k->mount, k->name), ver[32];
	json_t *ans = NULL, *data;
	const char *pem;
	EVP_PKEY *pub = NULL;
	BIO *bio = NULL;
	long v;
	int r;

	if (path == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = hcv_call(ctx, k, "GET", path, NULL, "read key", &ans)) < 0)
		goto out;
	data = json_object_get(ans, "data");
	v = k->version ? k->version
	               : (long)json_integer_value(json_object_get(data, "latest_version"));
	snprintf(ver, sizeof(ver), "%ld", v);
	pem = json_string_value(
	        json_object_get(json_object_get(json_object_get(data, "keys"), ver), "public_key"));
	if (json_is_false(json_object_get(data, "supports_signing")) || pem == NULL) {
		r = hs_error_set(
		        ctx, HS_ERR_INVALID,
		        "Vault transit key '%s' version %ld is not an asymmetric signing key",
		        k->name, v);
		goto out;
	}
	if ((bio = BIO_new_mem_buf(pem, -1)) == NULL ||
	    (pub = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL)) == NULL)
		r = hs_error_ssl(ctx, HS_ERR_NETWORK, "Vault: unreadable public key");
	else if (!hs_key_chain_matches(k->chain, pub))
		r = hs_error_set(
		        ctx, HS_ERR_INVALID,
		        "the certificate (--cert) does not belong to Vault transit key '%s' "
		        "version %ld: its public key differs",
		        k->name, v);
	else
		k->version = v; /* pin it: a rotation mid-run must not change signers */
out:
	ERR_clear_error();
	EVP_PKEY_free(pub);
	BIO_free(bio);
	json_decref(ans);
	free(path);
	return r;
}

/* "vault:v<digits>:" then base64: the signature bytes. */
int hs_vault_parse_signature(struct hs_ctx *ctx, const char *s, struct hs_buf *sig)
{
	const char *p;

	if (s == NULL || strncmp(s, "vault:v", 7) != 0 || !isdigit((unsigned char)s[7]))
		return hs_error_set(ctx, HS_ERR_NETWORK, "Vault sign: no vault:vN: signature");
	for (p = s + 7; isdigit((unsigned char)*p); p++)
		;
	if (*p != ':' || hs_base64_decode(sig, p + 1, strlen(p + 1)) < 0 || sig->len == 0)
		return hs_error_set(ctx, HS_ERR_NETWORK, "Vault sign: malformed signature value");
	return 0;
}

static const char *hcv_hash_name(const EVP_MD *md)
{
	switch (EVP_MD_get_type(md)) {
	case NID_sha1:
		return "sha1";
	case NID_sha256:
		return "sha2-256";
	case NID_sha384:
		return "sha2-384";
	case NID_sha512:
		return "sha2-512";
	}
	return NULL;
}

static int hcv_sign_digest(struct hs_ctx *ctx, void *state, const EVP_MD *md, const uint8_t *digest,
                           size_t digest_len, struct hs_buf *sig)
{
	struct hcv_key *k = state;
	const char *hash = hcv_hash_name(md);
	struct hs_buf b64 = {0};
	char *path = NULL, *body = NULL;
	json_t *req = NULL, *ans = NULL;
	int r;

	if (hash == NULL)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED, "Vault cannot sign %s digests",
		                    EVP_MD_get0_name(md));
	if ((r = hs_base64_encode(&b64, digest, digest_len, false)) < 0 ||
	    (r = hs_buf_append(&b64, "", 1)) < 0)
		goto out;
	/* pkcs1v15 explicitly: Vault's RSA default is PSS. Ignored for ECDSA. */
	req = json_pack("{s:s, s:b, s:s, s:s, s:I}", "input", (char *)b64.data, "prehashed", 1,
	                "signature_algorithm", "pkcs1v15", "marshaling_algorithm", "asn1",
	                "key_version", (json_int_t)k->version);
	path = hs_strprintf("%s/sign/%s/%s", k->mount, k->name, hash);
	if (req == NULL || path == NULL || (body = json_dumps(req, JSON_COMPACT)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = hcv_call(ctx, k, "POST", path, body, "sign", &ans)) < 0)
		goto out;
	r = hs_vault_parse_signature(
	        ctx, json_string_value(json_object_get(json_object_get(ans, "data"), "signature")),
	        sig);
out:
	json_decref(req);
	json_decref(ans);
	free(body);
	free(path);
	hs_buf_free(&b64);
	return r;
}

static int hcv_get_chain(struct hs_ctx *ctx, void *state, STACK_OF(X509) * *out)
{
	return hs_key_chain_copy(ctx, ((struct hcv_key *)state)->chain, out);
}

/* The key's name in its service, for reports. */
static const char *hcv_key_id(void *state)
{
	const struct hcv_key *k = state;

	return k->name;
}

const struct hs_key_provider hs_key_provider_vault_transit = {
        .name = "vault-transit",
        .get_chain = hcv_get_chain,
        .sign_digest = hcv_sign_digest,
        .free = hcv_free,
        .key_id = hcv_key_id,
};

/* Address, mount, key name and namespace; names become URL paths, so only
 * their own alphabet is allowed. */
static int hcv_copy_opts(struct hs_ctx *ctx, struct hcv_key *k,
                         const struct hs_vault_transit_key_opts *o)
{
	const char *addr = o->addr ? o->addr : hcv_env("VAULT_ADDR");
	const char *ns = o->vault_namespace ? o->vault_namespace : hcv_env("VAULT_NAMESPACE");
	size_t n;
	int r;

	if (addr == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "give the Vault address (--vault-addr or "
		                    "VAULT_ADDR)");
	if (o->key == NULL || o->key[0] == '\0' ||
	    strspn(o->key, HCV_NAME_CHARS) != strlen(o->key) || strchr(o->key, '/') != NULL)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "give the Vault transit key name "
		                    "(--vault-transit-key)");
	k->addr = strdup(addr);
	k->mount = strdup(o->mount ? o->mount : "transit");
	k->name = strdup(o->key);
	k->namespace = ns ? strdup(ns) : NULL;
	k->version = o->key_version;
	if (!k->addr || !k->mount || !k->name || (ns && !k->namespace))
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	n = strlen(k->addr);
	while (n > 0 && k->addr[n - 1] == '/')
		k->addr[--n] = '\0';
	while (k->mount[0] == '/')
		memmove(k->mount, k->mount + 1, strlen(k->mount));
	if (strspn(k->mount, HCV_NAME_CHARS) != strlen(k->mount) || strstr(k->mount, "..") ||
	    k->mount[0] == '\0')
		return hs_error_set(ctx, HS_ERR_INVALID, "bad Vault transit mount '%s'", k->mount);
	if ((r = hs_http_ready(ctx)) < 0)
		return r;
	if (strncmp(k->addr, "https://", 8) != 0 && !hs_http_is_loopback_url(k->addr))
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "the Vault address must use https:// (the token travels with "
		                    "every request): %s",
		                    k->addr);
	return o->key_version < 0 ? hs_error_set(ctx, HS_ERR_INVALID, "bad Vault key version") : 0;
}

int hs_key_open_vault_transit(struct hs_ctx *ctx, struct hs_key **out,
                              const struct hs_vault_transit_key_opts *opts)
{
	struct hs_http_config hc = HS_HTTP_CONFIG_INIT;
	struct hcv_key *k = calloc(1, sizeof(*k));
	int r;

	*out = NULL;
	if (k == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	hs_http_config_limits(&hc, opts->ca_file ? opts->ca_file : hcv_env("VAULT_CACERT"),
	                      opts->max_retries, opts->timeout_ms, opts->max_total_ms,
	                      opts->backoff_base_ms);
	if ((r = hcv_copy_opts(ctx, k, opts)) < 0 ||
	    (r = hs_key_load_chain(ctx, "Vault transit", opts->cert_file, opts->extra_certs,
	                           &k->chain)) < 0 ||
	    (r = hs_http_new(ctx, &k->http, &hc)) < 0 || (r = hcv_authenticate(ctx, k, opts)) < 0 ||
	    (r = hcv_check_key(ctx, k)) < 0) {
		hcv_free(k);
		return r;
	}
	hs_log(ctx, HS_LOG_INFO, "Vault transit key %s version %ld at %s", k->name, k->version,
	       k->addr);
	return hs_key_new(ctx, out, &hs_key_provider_vault_transit, k);
}
