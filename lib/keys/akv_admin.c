/*
 * akv_admin.c - Key Vault certificate administration for `hsmsign vault`:
 * the CSR workflow with issuer "Unknown" (protocols.md 1.e). create makes
 * the key in the vault and returns a CSR; the CA's answer is merged back
 * into the pending request. The requests reuse akv.c's challenge handling
 * and its error messages (which name a missing RBAC data action).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509v3.h>

#include "akv.h"
#include "core/codec.h"
#include "core/file.h"

/* Largest JSON answer and certificate file we accept. */
#define ADMIN_JSON_MAX  (1024 * 1024)
#define ADMIN_FILE_MAX  (1024 * 1024)
#define ADMIN_MAX_CERTS 16

/* One vault request on {vault}/certificates/{name}{suffix}; *out gets the
 * JSON answer of a 2xx status, else the error is set (`conflict`, when not
 * NULL, is the message for a 409). */
static int admin_call_409(struct hs_ctx *ctx, struct akv_key *k, const char *method,
                          const char *name, const char *suffix, json_t *body, const char *what,
                          const char *conflict, json_t **out)
{
	struct hs_http_response resp = {0};
	char *url = hs_strprintf("%s/certificates/%s%s?api-version=%s", k->vault_url, name, suffix,
	                         k->api_version);
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	int r;

	*out = NULL;
	if (url == NULL || (body != NULL && text == NULL)) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = hs_akv_send(ctx, k, method, url, text, &resp)) < 0)
		goto out;
	if (resp.status == 409 && conflict != NULL) {
		r = hs_error_set(ctx, HS_ERR_INVALID, "%s", conflict);
		goto out;
	}
	if (resp.status < 200 || resp.status > 299) {
		r = hs_akv_error(ctx, k, what, &resp);
		goto out;
	}
	if (resp.body.len > ADMIN_JSON_MAX ||
	    (*out = json_loadb((const char *)resp.body.data, resp.body.len, 0, NULL)) == NULL)
		r = hs_error_set(ctx, HS_ERR_NETWORK, "%s: the vault's answer is not JSON", what);
out:
	free(url);
	free(text);
	hs_http_response_free(&resp);
	return r;
}

/* admin_call_409() without special 409 handling. */
static int admin_call(struct hs_ctx *ctx, struct akv_key *k, const char *method, const char *name,
                      const char *suffix, json_t *body, const char *what, json_t **out)
{
	return admin_call_409(ctx, k, method, name, suffix, body, what, NULL, out);
}

/* The key part of the policy; checks type, size and curve. */
static int csr_key_props(struct hs_ctx *ctx, const struct hs_vault_csr_opts *o, json_t **out)
{
	const char *kty = o->key_type ? o->key_type : "RSA-HSM";
	int size = o->key_size ? o->key_size : 3072;
	const char *crv = o->curve ? o->curve : "P-256";

	*out = NULL;
	if (strcmp(kty, "RSA-HSM") == 0 || strcmp(kty, "RSA") == 0) {
		if (size != 2048 && size != 3072 && size != 4096)
			return hs_error_set(ctx, HS_ERR_INVALID,
			                    "RSA key size %d: choose 2048, 3072 or 4096", size);
		*out = json_pack("{s:b, s:s, s:i, s:b}", "exportable", 0, "kty", kty, "key_size",
		                 size, "reuse_key", 0);
	} else if (strcmp(kty, "EC-HSM") == 0 || strcmp(kty, "EC") == 0) {
		if (strcmp(crv, "P-256") != 0 && strcmp(crv, "P-384") != 0 &&
		    strcmp(crv, "P-521") != 0)
			return hs_error_set(ctx, HS_ERR_INVALID,
			                    "curve '%s': choose P-256, P-384 or P-521", crv);
		*out = json_pack("{s:b, s:s, s:s, s:b}", "exportable", 0, "kty", kty, "crv", crv,
		                 "reuse_key", 0);
	} else
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "key type '%s': choose RSA-HSM, RSA, EC-HSM or EC", kty);
	return *out ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

/* The create body: non-exportable key, codeSigning, issuer Unknown. */
static int csr_body(struct hs_ctx *ctx, const struct hs_vault_csr_opts *o, json_t **out)
{
	json_t *key_props = NULL;
	int r;

	*out = NULL;
	if (o->subject == NULL || strstr(o->subject, "CN=") == NULL)
		return hs_error_set(
		        ctx, HS_ERR_INVALID,
		        "give the certificate subject, e.g. --subject \"CN=Contoso Ltd, "
		        "O=Contoso Ltd, C=US\"");
	if (o->validity_months < 0 || o->validity_months > 120)
		return hs_error_set(ctx, HS_ERR_INVALID, "validity: 1 to 120 months");
	if ((r = csr_key_props(ctx, o, &key_props)) < 0)
		return r;
	*out = json_pack("{s:{s:o, s:{s:s}, s:{s:s, s:[s], s:[s], s:i}, s:{s:s}}, s:{s:b}}",
	                 "policy", "key_props", key_props, "secret_props", "contentType",
	                 "application/x-pkcs12", "x509_props", "subject", o->subject, "ekus",
	                 "1.3.6.1.5.5.7.3.3", "key_usage", "digitalSignature", "validity_months",
	                 o->validity_months ? o->validity_months : 12, "issuer", "name", "Unknown",
	                 "attributes", "enabled", 1);
	return *out ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

/* Decodes the operation's base64 DER "csr" member. */
static int operation_csr(struct hs_ctx *ctx, const json_t *op, const char *name, X509_REQ **out)
{
	const char *b64 = json_string_value(json_object_get(op, "csr"));
	struct hs_buf der = {0};
	const unsigned char *p;

	*out = NULL;
	if (b64 != NULL && hs_base64_decode(&der, b64, strlen(b64)) == 0 && der.len < INT32_MAX) {
		p = der.data;
		*out = d2i_X509_REQ(NULL, &p, (long)der.len);
	}
	hs_buf_free(&der);
	if (*out == NULL) {
		ERR_clear_error();
		return hs_error_set(
		        ctx, HS_ERR_NETWORK,
		        "certificate '%s': the vault's pending request has no readable CSR", name);
	}
	return 0;
}

/* PEM text of a CSR, malloc'd. */
static int csr_pem(struct hs_ctx *ctx, X509_REQ *req, char **out)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long n;

	*out = NULL;
	if (bio != NULL && PEM_write_bio_X509_REQ(bio, req) == 1 &&
	    (n = BIO_get_mem_data(bio, &data)) > 0)
		*out = strndup(data, (size_t)n);
	BIO_free(bio);
	return *out ? 0 : hs_error_ssl(ctx, HS_ERR_NOMEM, "cannot write the CSR");
}

/* PATCH cancellation_requested, then DELETE the operation. */
static int cancel_pending(struct hs_ctx *ctx, struct akv_key *k, const char *name)
{
	json_t *body = json_pack("{s:b}", "cancellation_requested", 1), *ans = NULL;
	char what[600];
	int r;

	snprintf(what, sizeof(what), "cancel the pending request of '%s'", name);
	if (body == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	r = admin_call(ctx, k, "PATCH", name, "/pending", body, what, &ans);
	json_decref(ans);
	ans = NULL;
	if (r == 0)
		r = admin_call(ctx, k, "DELETE", name, "/pending", NULL, what, &ans);
	json_decref(ans);
	json_decref(body);
	return r;
}

int hs_vault_cancel_pending(struct hs_ctx *ctx, const struct hs_azure_key_opts *conn)
{
	struct akv_key *k = NULL;
	int r;

	if ((r = hs_akv_connect(ctx, conn, &k)) == 0)
		r = cancel_pending(ctx, k, conn->certificate);
	hs_akv_free(k);
	return r;
}

/* POST create; a 409 means a request is already pending. */
static int create_certificate(struct hs_ctx *ctx, struct akv_key *k, const char *name, json_t *body,
                              json_t **op)
{
	char what[600], conflict[800];

	snprintf(what, sizeof(what), "create certificate '%s'", name);
	snprintf(conflict, sizeof(conflict),
	         "certificate '%s' already has a pending request: merge the CA's answer with "
	         "'hsmsign vault merge', or start over with --cancel-pending",
	         name);
	return admin_call_409(ctx, k, "POST", name, "/create", body, what, conflict, op);
}

int hs_vault_csr(struct hs_ctx *ctx, const struct hs_azure_key_opts *conn,
                 const struct hs_vault_csr_opts *opts, char **csr_pem_out)
{
	struct akv_key *k = NULL;
	json_t *body = NULL, *op = NULL;
	X509_REQ *req = NULL;
	int r;

	*csr_pem_out = NULL;
	if ((r = csr_body(ctx, opts, &body)) < 0 || (r = hs_akv_connect(ctx, conn, &k)) < 0)
		goto out;
	if (opts->cancel_pending && (r = cancel_pending(ctx, k, conn->certificate)) < 0) {
		if (r != HS_ERR_NOTFOUND)
			goto out;
		hs_ctx_clear_error(ctx); /* nothing was pending */
	}
	if ((r = create_certificate(ctx, k, conn->certificate, body, &op)) < 0 ||
	    (r = operation_csr(ctx, op, conn->certificate, &req)) < 0)
		goto out;
	r = csr_pem(ctx, req, csr_pem_out);
out:
	X509_REQ_free(req);
	json_decref(op);
	json_decref(body);
	hs_akv_free(k);
	return r;
}

/* Moves every certificate of a PKCS#7 (certs-only) into all. */
static int take_pkcs7_certs(PKCS7 *p7, STACK_OF(X509) * all)
{
	STACK_OF(X509) *certs = NULL;

	if (PKCS7_type_is_signed(p7) && p7->d.sign != NULL)
		certs = p7->d.sign->cert;
	for (int i = 0; i < sk_X509_num(certs); i++) {
		X509 *x = sk_X509_value(certs, i);
		if (!X509_up_ref(x) || !sk_X509_push(all, x))
			return -1;
	}
	return sk_X509_num(certs) > 0 ? 0 : -1;
}

/* Certificates of one file: PEM certificates, PEM or DER PKCS#7, DER. */
static int parse_cert_blob(const uint8_t *data, size_t len, STACK_OF(X509) * all)
{
	BIO *bio = BIO_new_mem_buf(data, (int)len);
	const unsigned char *p = data;
	PKCS7 *p7 = NULL;
	X509 *x;
	int n = 0, r = -1;

	while (bio != NULL && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
		if (sk_X509_push(all, x))
			n++;
		else
			X509_free(x);
	ERR_clear_error();
	if (n > 0) {
		r = 0;
	} else if (BIO_reset(bio) == 1 && (p7 = PEM_read_bio_PKCS7(bio, NULL, NULL, NULL))) {
		r = take_pkcs7_certs(p7, all);
	} else if (p = data, (p7 = d2i_PKCS7(NULL, &p, (long)len)) != NULL) {
		r = take_pkcs7_certs(p7, all);
	} else if (p = data, (x = d2i_X509(NULL, &p, (long)len)) != NULL) {
		r = sk_X509_push(all, x) ? 0 : (X509_free(x), -1);
	}
	ERR_clear_error();
	PKCS7_free(p7);
	BIO_free(bio);
	return r;
}

/* Reads a whole (small) file into data, refusing more than ADMIN_FILE_MAX. */
static int read_small_file(struct hs_ctx *ctx, const char *path, struct hs_buf *data)
{
	struct hs_file f;
	int r;

	if ((r = hs_file_open(ctx, &f, path)) < 0)
		return r;
	if (f.size == 0 || f.size > ADMIN_FILE_MAX)
		r = hs_error_set(ctx, HS_ERR_FORMAT, "%s: %s", path,
		                 f.size == 0 ? "empty file" : "too large for certificates");
	else if (hs_buf_reserve(data, (size_t)f.size) < 0)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	else if ((r = hs_file_pread(ctx, &f, data->data, (size_t)f.size, 0)) == 0)
		data->len = (size_t)f.size;
	hs_file_close(&f);
	return r;
}

/* Reads every certificate of the files into *out. */
static int load_answer(struct hs_ctx *ctx, const char *const *files, STACK_OF(X509) * *out)
{
	struct hs_buf data = {0};
	int r = 0;

	if ((*out = sk_X509_new_null()) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	for (size_t i = 0; files != NULL && files[i] != NULL && r == 0; i++) {
		hs_buf_free(&data);
		if ((r = read_small_file(ctx, files[i], &data)) < 0)
			break;
		if (parse_cert_blob(data.data, data.len, *out) < 0)
			r = hs_error_set(ctx, HS_ERR_FORMAT,
			                 "%s: no certificate in it (PEM, DER or PKCS#7 expected)",
			                 files[i]);
	}
	hs_buf_free(&data);
	if (r == 0 && sk_X509_num(*out) == 0)
		r = hs_error_set(ctx, HS_ERR_INVALID, "give the CA's certificate file(s)");
	if (r == 0 && sk_X509_num(*out) > ADMIN_MAX_CERTS)
		r = hs_error_set(ctx, HS_ERR_INVALID, "more than %d certificates given",
		                 ADMIN_MAX_CERTS);
	return r;
}

/* Removes and returns the certificate of certs that issued `child`. */
static X509 *take_issuer(STACK_OF(X509) * certs, X509 *child)
{
	for (int i = 0; i < sk_X509_num(certs); i++)
		if (X509_check_issued(sk_X509_value(certs, i), child) == X509_V_OK)
			return sk_X509_delete(certs, i);
	return NULL;
}

/* Sorts certs into leaf (the CSR's key), issuer, its issuer, ... */
static int sort_chain(struct hs_ctx *ctx, const char *name, EVP_PKEY *csr_key,
                      STACK_OF(X509) * certs, STACK_OF(X509) * *chain)
{
	X509 *x = NULL;

	for (int i = 0; i < sk_X509_num(certs) && x == NULL; i++)
		if (EVP_PKEY_eq(X509_get0_pubkey(sk_X509_value(certs, i)), csr_key) == 1)
			x = sk_X509_delete(certs, i);
	if (x == NULL)
		return hs_error_set(
		        ctx, HS_ERR_INVALID,
		        "none of the certificates carries the public key of the pending "
		        "CSR of '%s' (is it the CA's answer to another request?); "
		        "nothing was merged",
		        name);
	if ((*chain = sk_X509_new_null()) == NULL || !sk_X509_push(*chain, x)) {
		X509_free(x);
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	while (X509_check_issued(x, x) != X509_V_OK && (x = take_issuer(certs, x)) != NULL)
		if (!sk_X509_push(*chain, x)) {
			X509_free(x);
			return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		}
	if (sk_X509_num(certs) > 0)
		hs_log(ctx, HS_LOG_WARN, "%d certificate(s) not in the leaf's chain left out",
		       sk_X509_num(certs));
	return 0;
}

/* {"x5c": [base64 DER, ...]} */
static int merge_body(struct hs_ctx *ctx, STACK_OF(X509) * chain, json_t **out)
{
	json_t *x5c = json_array();
	int r = 0;

	for (int i = 0; x5c != NULL && i < sk_X509_num(chain) && r == 0; i++) {
		unsigned char *der = NULL;
		struct hs_buf b64 = {0};
		int n = i2d_X509(sk_X509_value(chain, i), &der);

		if (n <= 0 || hs_base64_encode(&b64, der, (size_t)n, false) < 0 ||
		    hs_buf_append(&b64, "", 1) < 0 ||
		    json_array_append_new(x5c, json_string((const char *)b64.data)) < 0)
			r = -1;
		OPENSSL_free(der);
		hs_buf_free(&b64);
	}
	*out = x5c && r == 0 ? json_pack("{s:o}", "x5c", x5c) : NULL;
	if (*out == NULL && x5c != NULL && r != 0)
		json_decref(x5c);
	return *out ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

/* GET pending: the CSR's public key, or why there is nothing to merge. */
static int pending_key(struct hs_ctx *ctx, struct akv_key *k, const char *name, EVP_PKEY **out)
{
	json_t *op = NULL;
	X509_REQ *req = NULL;
	char what[600];
	int r;

	*out = NULL;
	snprintf(what, sizeof(what), "pending request of certificate '%s'", name);
	if ((r = admin_call(ctx, k, "GET", name, "/pending", NULL, what, &op)) < 0 ||
	    (r = operation_csr(ctx, op, name, &req)) < 0)
		goto out;
	if ((*out = X509_REQ_get_pubkey(req)) == NULL)
		r = hs_error_ssl(ctx, HS_ERR_NETWORK, "%s: the CSR has no public key", what);
out:
	X509_REQ_free(req);
	json_decref(op);
	return r;
}

int hs_vault_merge(struct hs_ctx *ctx, const struct hs_azure_key_opts *conn,
                   const char *const *files)
{
	STACK_OF(X509) *certs = NULL, *chain = NULL;
	struct akv_key *k = NULL;
	EVP_PKEY *csr_key = NULL;
	json_t *body = NULL, *ans = NULL;
	char what[600];
	int r;

	if ((r = load_answer(ctx, files, &certs)) < 0 || (r = hs_akv_connect(ctx, conn, &k)) < 0 ||
	    (r = pending_key(ctx, k, conn->certificate, &csr_key)) < 0 ||
	    (r = sort_chain(ctx, conn->certificate, csr_key, certs, &chain)) < 0 ||
	    (r = merge_body(ctx, chain, &body)) < 0)
		goto out;
	snprintf(what, sizeof(what), "merge into certificate '%s'", conn->certificate);
	r = admin_call(ctx, k, "POST", conn->certificate, "/pending/merge", body, what, &ans);
out:
	json_decref(ans);
	json_decref(body);
	EVP_PKEY_free(csr_key);
	sk_X509_pop_free(chain, X509_free);
	sk_X509_pop_free(certs, X509_free);
	hs_akv_free(k);
	return r;
}
