/*
 * file.c - the `file` key provider: a private key in a PEM/DER file with a
 * certificate chain file, or a PKCS#12 bundle holding both.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rsa.h>

#include "provider.h"

/* Largest key, certificate or PKCS#12 file we read. */
#define FILE_KEY_MAX (1024 * 1024)

struct file_key {
	EVP_PKEY *pkey;
	STACK_OF(X509) * chain; /* signer first */
};

static void file_key_free(void *state)
{
	struct file_key *fk = state;

	if (fk == NULL)
		return;
	EVP_PKEY_free(fk->pkey); /* OpenSSL wipes key material on free */
	sk_X509_pop_free(fk->chain, X509_free);
	free(fk);
}

/* Reads a whole (small) file into a memory BIO. */
static int read_bio(struct hs_ctx *ctx, const char *path, const char *what, BIO **out)
{
	BIO *file = BIO_new_file(path, "rb");
	BIO *mem = NULL;
	char chunk[4096];
	size_t total = 0;
	int n;

	*out = NULL;
	if (file == NULL) {
		ERR_clear_error();
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: cannot open %s", path, what);
	}
	mem = BIO_new(BIO_s_mem());
	while (mem != NULL && (n = BIO_read(file, chunk, sizeof(chunk))) > 0) {
		total += (size_t)n;
		if (total > FILE_KEY_MAX || BIO_write(mem, chunk, n) != n) {
			BIO_free(file);
			BIO_free(mem);
			return hs_error_set(ctx, HS_ERR_INVALID, "%s: %s file too large", path,
			                    what);
		}
	}
	OPENSSL_cleanse(chunk, sizeof(chunk));
	BIO_free(file);
	if (mem == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	*out = mem;
	return 0;
}

/* Tries PEM (possibly encrypted), then DER PKCS#8 (possibly encrypted),
 * then traditional DER. */
static EVP_PKEY *parse_key(BIO *mem, const char *password)
{
	char *data;
	long len = BIO_get_mem_data(mem, &data);
	const unsigned char *p = (const unsigned char *)data;
	EVP_PKEY *pkey;
	BIO *der;

	pkey = PEM_read_bio_PrivateKey(mem, NULL, NULL, (void *)(password ? password : ""));
	if (pkey != NULL || len <= 0)
		return pkey;
	der = BIO_new_mem_buf(data, (int)len);
	if (der != NULL)
		pkey = d2i_PKCS8PrivateKey_bio(der, NULL, NULL, (void *)(password ? password : ""));
	BIO_free(der);
	if (pkey == NULL)
		pkey = d2i_AutoPrivateKey(NULL, &p, len);
	return pkey;
}

static int load_key(struct hs_ctx *ctx, const char *path, const char *password, EVP_PKEY **out)
{
	BIO *mem;
	int r;

	if ((r = read_bio(ctx, path, "key", &mem)) < 0)
		return r;
	*out = parse_key(mem, password);
	BIO_free(mem); /* a mem BIO's buffer is cleansed on free */
	if (*out == NULL) {
		ERR_clear_error();
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "%s: cannot read private key (not PEM/DER, or wrong password)",
		                    path);
	}
	return 0;
}

int hs_load_certs(struct hs_ctx *ctx, const char *path, STACK_OF(X509) * *out)
{
	STACK_OF(X509) *certs = sk_X509_new_null();
	X509 *x;
	BIO *mem;
	int r;

	if (certs == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = read_bio(ctx, path, "certificate", &mem)) < 0) {
		sk_X509_free(certs);
		return r;
	}
	while ((x = PEM_read_bio_X509(mem, NULL, NULL, NULL)) != NULL)
		sk_X509_push(certs, x);
	if (sk_X509_num(certs) == 0) {
		(void)BIO_reset(mem);
		if ((x = d2i_X509_bio(mem, NULL)) != NULL)
			sk_X509_push(certs, x);
	}
	ERR_clear_error();
	BIO_free(mem);
	if (sk_X509_num(certs) == 0) {
		sk_X509_free(certs);
		return hs_error_set(ctx, HS_ERR_INVALID, "%s: no certificate found (PEM or DER)",
		                    path);
	}
	*out = certs;
	return 0;
}

/* Moves the certificate that matches pkey to the front of chain. */
static int put_signer_first(struct hs_ctx *ctx, EVP_PKEY *pkey, STACK_OF(X509) * chain)
{
	for (int i = 0; i < sk_X509_num(chain); i++) {
		X509 *x = sk_X509_value(chain, i);

		if (X509_check_private_key(x, pkey) == 1) {
			sk_X509_delete(chain, i);
			sk_X509_unshift(chain, x);
			return 0;
		}
	}
	ERR_clear_error();
	return hs_error_set(ctx, HS_ERR_INVALID,
	                    "the private key does not match any certificate given");
}

static int load_pkcs12(struct hs_ctx *ctx, const char *path, const char *password,
                       struct file_key *fk)
{
	PKCS12 *p12;
	X509 *leaf = NULL;
	BIO *mem;
	int r;

	if ((r = read_bio(ctx, path, "PKCS#12", &mem)) < 0)
		return r;
	p12 = d2i_PKCS12_bio(mem, NULL);
	BIO_free(mem);
	if (p12 == NULL) {
		ERR_clear_error();
		return hs_error_set(ctx, HS_ERR_INVALID, "%s: not a PKCS#12 file", path);
	}
	if (!PKCS12_parse(p12, password ? password : "", &fk->pkey, &leaf, &fk->chain)) {
		PKCS12_free(p12);
		ERR_clear_error();
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "%s: cannot open PKCS#12 (wrong password?)", path);
	}
	PKCS12_free(p12);
	if (fk->chain == NULL)
		fk->chain = sk_X509_new_null();
	if (fk->chain == NULL || (leaf != NULL && !sk_X509_unshift(fk->chain, leaf))) {
		X509_free(leaf);
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	if (fk->pkey == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID, "%s: PKCS#12 holds no private key", path);
	return 0;
}

static int load(struct hs_ctx *ctx, const struct hs_key_file_opts *opts, struct file_key *fk)
{
	int r;

	if (opts->pfx_path != NULL) {
		if (opts->key_path != NULL)
			return hs_error_set(ctx, HS_ERR_INVALID,
			                    "give either a PKCS#12 file or a key file, not both");
		if ((r = load_pkcs12(ctx, opts->pfx_path, opts->password, fk)) < 0)
			return r;
		if (opts->cert_path != NULL) {
			sk_X509_pop_free(fk->chain, X509_free);
			fk->chain = NULL;
			if ((r = hs_load_certs(ctx, opts->cert_path, &fk->chain)) < 0)
				return r;
		}
	} else {
		if (opts->key_path == NULL || opts->cert_path == NULL)
			return hs_error_set(ctx, HS_ERR_INVALID,
			                    "a key file needs its certificate chain file too");
		if ((r = load_key(ctx, opts->key_path, opts->password, &fk->pkey)) < 0)
			return r;
		if ((r = hs_load_certs(ctx, opts->cert_path, &fk->chain)) < 0)
			return r;
	}
	return put_signer_first(ctx, fk->pkey, fk->chain);
}

static int file_get_chain(struct hs_ctx *ctx, void *state, STACK_OF(X509) * *out)
{
	return hs_key_chain_copy(ctx, ((struct file_key *)state)->chain, out);
}

static int file_sign_digest(struct hs_ctx *ctx, void *state, const EVP_MD *md,
                            const uint8_t *digest, size_t digest_len, struct hs_buf *sig)
{
	struct file_key *fk = state;
	EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new(fk->pkey, NULL);
	size_t len = 0;
	int r;

	if (pctx == NULL || EVP_PKEY_sign_init(pctx) <= 0 ||
	    (EVP_PKEY_get_base_id(fk->pkey) == EVP_PKEY_RSA &&
	     EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0) ||
	    EVP_PKEY_CTX_set_signature_md(pctx, md) <= 0 ||
	    EVP_PKEY_sign(pctx, NULL, &len, digest, digest_len) <= 0) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot sign with the key file");
		goto out;
	}
	if ((r = hs_buf_reserve(sig, len)) < 0) {
		r = hs_error_set(ctx, r, "out of memory");
		goto out;
	}
	if (EVP_PKEY_sign(pctx, sig->data + sig->len, &len, digest, digest_len) <= 0) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "signing with the key file failed");
		goto out;
	}
	sig->len += len;
	r = 0;
out:
	EVP_PKEY_CTX_free(pctx);
	return r;
}

const struct hs_key_provider hs_key_provider_file = {
        .name = "file",
        .get_chain = file_get_chain,
        .sign_digest = file_sign_digest,
        .free = file_key_free,
        .concurrent = true,
};

int hs_key_open_file(struct hs_ctx *ctx, struct hs_key **out, const struct hs_key_file_opts *opts)
{
	struct file_key *fk = calloc(1, sizeof(*fk));
	int r;

	*out = NULL;
	if (fk == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = load(ctx, opts, fk)) < 0) {
		file_key_free(fk);
		return r;
	}
	return hs_key_new(ctx, out, &hs_key_provider_file, fk);
}
