/* token_cert.c - client certificate credential: a JWT assertion signed with the app's key. */
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>

#include "auth/source.h"

/* Certificate files are small; anything bigger is not one. */
#define CERT_FILE_MAX (1024 * 1024)

struct cert_source {
	struct hs_token_source base;
	EVP_PKEY *key; /* loaded on first use */
	X509 *cert;
};

/* Hands OpenSSL the configured password; never prompts. */
static int cert_password_cb(char *buf, int size, int rwflag, void *userdata)
{
	const char *pw = userdata;
	size_t n = pw ? strlen(pw) : 0;

	if (pw == NULL || n > (size_t)size)
		return -1;
	memcpy(buf, pw, n);
	return (int)n;
}

/* PEM: the private key and the first certificate that matches it. */
static int cert_load_pem(struct hs_ctx *ctx, struct cert_source *cs, const struct hs_buf *file)
{
	const char *path = cs->base.cfg->cert_path;
	BIO *bio = BIO_new_mem_buf(file->data, (int)file->len);
	X509 *x;

	if (bio == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	cs->key = PEM_read_bio_PrivateKey(bio, NULL, cert_password_cb, cs->base.cfg->cert_password);
	BIO_free(bio);
	if (cs->key == NULL)
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "no usable private key in %s", path);
	if ((bio = BIO_new_mem_buf(file->data, (int)file->len)) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	while (cs->cert == NULL && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (X509_check_private_key(x, cs->key) == 1)
			cs->cert = x;
		else
			X509_free(x);
	}
	BIO_free(bio);
	ERR_clear_error();
	if (cs->cert == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "%s has no certificate matching its private key", path);
	return 0;
}

static int cert_load_p12(struct hs_ctx *ctx, struct cert_source *cs, const struct hs_buf *file)
{
	const char *path = cs->base.cfg->cert_path;
	const char *pw = cs->base.cfg->cert_password;
	const unsigned char *p = file->data;
	PKCS12 *p12 = d2i_PKCS12(NULL, &p, (long)file->len);
	int ok;

	if (p12 == NULL)
		return hs_error_ssl(ctx, HS_ERR_FORMAT, "%s is neither PEM nor PKCS#12 (PFX)",
		                    path);
	ok = PKCS12_parse(p12, pw ? pw : "", &cs->key, &cs->cert, NULL);
	PKCS12_free(p12);
	if (!ok || cs->key == NULL || cs->cert == NULL)
		return hs_error_ssl(ctx, HS_ERR_CRYPTO,
		                    "cannot read key and certificate from %s (wrong password?)",
		                    path);
	return 0;
}

static int cert_load(struct hs_ctx *ctx, struct cert_source *cs)
{
	struct hs_buf file = {0};
	int r;

	if ((r = hs_auth_read_file(ctx, cs->base.cfg->cert_path, "client certificate",
	                           CERT_FILE_MAX, &file)) < 0)
		goto out;
	/* PEM is text: a NUL stops the search early, which only a binary PFX has. */
	if (strstr((const char *)file.data, "-----BEGIN") != NULL)
		r = cert_load_pem(ctx, cs, &file);
	else
		r = cert_load_p12(ctx, cs, &file);
out:
	hs_buf_free_secret(&file);
	return r;
}

static int cert_create(struct hs_ctx *ctx, const struct hs_auth_cfg *cfg, bool in_chain,
                       struct hs_token_source **out)
{
	*out = NULL;
	if (cfg->cert_path == NULL)
		return hs_auth_not_configured(ctx, in_chain,
		                              "credential 'certificate' needs a certificate file "
		                              "(AZURE_CLIENT_CERTIFICATE_PATH)");
	if (cfg->client_id == NULL)
		return hs_auth_not_configured(ctx, in_chain,
		                              "credential 'certificate' needs a client ID (-kvi or "
		                              "AZURE_CLIENT_ID)");
	*out = hs_auth_source_alloc(sizeof(struct cert_source), &hs_source_certificate, cfg,
	                            in_chain);
	return *out ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

static int cert_get(struct hs_ctx *ctx, struct hs_token_source *src, const char *scope,
                    const char *tenant, char **token, int64_t *expires_at)
{
	struct cert_source *cs = (struct cert_source *)src;
	char *audience = NULL, *assertion = NULL;
	int r;

	if (cs->key == NULL && (r = cert_load(ctx, cs)) < 0)
		goto out;
	if ((r = hs_entra_endpoint(ctx, src->cfg, tenant, &audience)) < 0 ||
	    (r = hs_jwt_client_assertion(ctx, cs->key, cs->cert, audience, src->cfg->client_id,
	                                 &assertion)) < 0)
		goto out;
	r = hs_entra_token(ctx, src->cfg, tenant, scope, NULL, assertion, token, expires_at);
out:
	free(audience);
	hs_secret_free(assertion);
	return r;
}

static void cert_free(struct hs_token_source *src)
{
	struct cert_source *cs = (struct cert_source *)src;

	EVP_PKEY_free(cs->key);
	X509_free(cs->cert);
	free(cs);
}

const struct hs_token_source_ops hs_source_certificate = {
        .name = "certificate",
        .create = cert_create,
        .get_token = cert_get,
        .free = cert_free,
};
