/* key.c - provider-independent key handling: chain caching, signature
 * self-check. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include "provider.h"

/* One-line subject of a certificate, malloc'd. */
static char *name_oneline(const X509_NAME *name)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *s = NULL;
	long n;

	if (bio == NULL)
		return NULL;
	if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
		n = BIO_get_mem_data(bio, &data);
		s = n >= 0 ? strndup(data, (size_t)n) : NULL;
	}
	BIO_free(bio);
	return s;
}

/* Signatures from a certificate that is expired or not meant for code
 * signing will not verify anywhere; say so, but let the user decide. */
static void warn_unusable_signer(struct hs_ctx *ctx, X509 *signer)
{
	uint32_t eku = X509_get_extended_key_usage(signer);

	if (X509_cmp_current_time(X509_get0_notAfter(signer)) < 0)
		hs_log(ctx, HS_LOG_WARN,
		       "the signing certificate has expired: "
		       "its signatures will not verify");
	else if (X509_cmp_current_time(X509_get0_notBefore(signer)) > 0)
		hs_log(ctx, HS_LOG_WARN, "the signing certificate is not valid yet");
	if ((X509_get_extension_flags(signer) & EXFLAG_XKUSAGE) && !(eku & XKU_CODE_SIGN))
		hs_log(ctx, HS_LOG_WARN,
		       "the signing certificate lacks the codeSigning "
		       "extended key usage: Windows will reject its signatures");
}

/* The provider's name for the key, else "sha1:<thumbprint>" of the signer
 * certificate (what Windows tools show); malloc'd. */
static char *key_id_string(const struct hs_key *key)
{
	unsigned char md[20];
	unsigned int n = 0;
	char hex[2 * sizeof(md) + 8] = "sha1:";

	if (key->provider->key_id != NULL)
		return strdup(key->provider->key_id(key->state));
	if (!X509_digest(sk_X509_value(key->chain, 0), EVP_sha1(), md, &n) || n != sizeof(md))
		return NULL;
	for (unsigned int i = 0; i < n; i++)
		snprintf(hex + 5 + 2 * i, 3, "%02X", md[i]);
	return strdup(hex);
}

int hs_key_new(struct hs_ctx *ctx, struct hs_key **out, const struct hs_key_provider *provider,
               void *state)
{
	struct hs_key *key = calloc(1, sizeof(*key));
	int r;

	*out = NULL;
	if (key == NULL) {
		provider->free(state);
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	pthread_mutex_init(&key->sign_lock, NULL);
	pthread_mutex_init(&key->inflight_lock, NULL);
	pthread_cond_init(&key->inflight_cond, NULL);
	key->provider = provider;
	key->state = state;
	if ((r = provider->get_chain(ctx, state, &key->chain)) < 0)
		goto out;
	if (sk_X509_num(key->chain) < 1) {
		r = hs_error_set(ctx, HS_ERR_NOTFOUND, "%s key: no signing certificate",
		                 provider->name);
		goto out;
	}
	key->subject = name_oneline(X509_get_subject_name(sk_X509_value(key->chain, 0)));
	if (key->subject == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((key->id = key_id_string(key)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	warn_unusable_signer(ctx, sk_X509_value(key->chain, 0));
	*out = key;
	key = NULL;
	r = 0;
out:
	hs_key_free(key);
	return r;
}

void hs_key_free(struct hs_key *key)
{
	if (key == NULL)
		return;
	if (key->provider != NULL)
		key->provider->free(key->state);
	sk_X509_pop_free(key->chain, X509_free);
	free(key->subject);
	free(key->id);
	pthread_mutex_destroy(&key->sign_lock);
	pthread_mutex_destroy(&key->inflight_lock);
	pthread_cond_destroy(&key->inflight_cond);
	free(key);
}

const char *hs_key_subject(const struct hs_key *key)
{
	return key->subject;
}

const char *hs_key_id(const struct hs_key *key)
{
	return key->id;
}

unsigned long hs_key_requests(const struct hs_key *key)
{
	if (key->provider->requests == NULL)
		return 0;
	return key->provider->requests(key->state);
}

const char *hs_key_provider_name(const struct hs_key *key)
{
	return key->provider->name;
}

X509 *hs_key_signer(const struct hs_key *key)
{
	return sk_X509_value(key->chain, 0);
}

/* Verifies sig over digest with the signer certificate's public key. */
static int check_signature(struct hs_ctx *ctx, struct hs_key *key, const EVP_MD *md,
                           const uint8_t *digest, size_t digest_len, const struct hs_buf *sig)
{
	EVP_PKEY *pub = X509_get0_pubkey(hs_key_signer(key));
	EVP_PKEY_CTX *pctx = pub ? EVP_PKEY_CTX_new(pub, NULL) : NULL;
	int r = HS_ERR_CRYPTO;

	if (pctx == NULL || EVP_PKEY_verify_init(pctx) <= 0)
		goto out;
	if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA &&
	    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0)
		goto out;
	if (EVP_PKEY_CTX_set_signature_md(pctx, md) <= 0)
		goto out;
	if (EVP_PKEY_verify(pctx, sig->data, sig->len, digest, digest_len) == 1)
		r = 0;
out:
	ERR_clear_error();
	EVP_PKEY_CTX_free(pctx);
	if (r < 0)
		hs_error_set(ctx, HS_ERR_CRYPTO,
		             "%s key returned a signature that does not verify with the "
		             "certificate's public key (wrong key for this certificate?)",
		             key->provider->name);
	return r;
}

void hs_key_limit_inflight(struct hs_key *key, int n)
{
	pthread_mutex_lock(&key->inflight_lock);
	key->inflight_max = n > 0 ? n : 0;
	pthread_cond_broadcast(&key->inflight_cond);
	pthread_mutex_unlock(&key->inflight_lock);
}

/* Waits for one of the inflight_max places (none when there is no limit). */
static void key_inflight_enter(struct hs_key *key)
{
	pthread_mutex_lock(&key->inflight_lock);
	while (key->inflight_max > 0 && key->inflight >= key->inflight_max)
		pthread_cond_wait(&key->inflight_cond, &key->inflight_lock);
	key->inflight++;
	pthread_mutex_unlock(&key->inflight_lock);
}

static void key_inflight_leave(struct hs_key *key)
{
	pthread_mutex_lock(&key->inflight_lock);
	key->inflight--;
	pthread_cond_signal(&key->inflight_cond);
	pthread_mutex_unlock(&key->inflight_lock);
}

int hs_key_sign_digest(struct hs_ctx *ctx, struct hs_key *key, const EVP_MD *md,
                       const uint8_t *digest, size_t digest_len, struct hs_buf *sig)
{
	int r;

	key_inflight_enter(key);
	if (!key->provider->concurrent)
		pthread_mutex_lock(&key->sign_lock);
	r = key->provider->sign_digest(ctx, key->state, md, digest, digest_len, sig);
	if (!key->provider->concurrent)
		pthread_mutex_unlock(&key->sign_lock);
	key_inflight_leave(key);
	if (r < 0)
		return r;
	return check_signature(ctx, key, md, digest, digest_len, sig);
}

int hs_key_digest_info(struct hs_ctx *ctx, const EVP_MD *md, const uint8_t *digest, size_t len,
                       struct hs_buf *out)
{
	X509_SIG *sig = X509_SIG_new();
	X509_ALGOR *alg;
	ASN1_OCTET_STRING *os;
	unsigned char *der = NULL;
	int n = -1, r;

	if (sig != NULL) {
		X509_SIG_getm(sig, &alg, &os);
		if (X509_ALGOR_set0(alg, OBJ_nid2obj(EVP_MD_get_type(md)), V_ASN1_NULL, NULL) &&
		    ASN1_OCTET_STRING_set(os, digest, (int)len))
			n = i2d_X509_SIG(sig, &der);
	}
	X509_SIG_free(sig);
	if (n <= 0)
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot build DigestInfo");
	r = hs_buf_append(out, der, (size_t)n);
	OPENSSL_free(der);
	return r < 0 ? hs_error_set(ctx, r, "out of memory") : 0;
}

int hs_key_ecdsa_p1363_to_der(struct hs_ctx *ctx, const uint8_t *raw, size_t raw_len,
                              struct hs_buf *out)
{
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *r = NULL, *s = NULL;
	unsigned char *der = NULL;
	size_t half = raw_len / 2;
	int n = -1, ret;

	/* 2 * 66 bytes is P-521, the largest curve any store offers. */
	if (raw_len == 0 || raw_len % 2 != 0 || raw_len > 2 * 66) {
		ECDSA_SIG_free(sig);
		return hs_error_set(ctx, HS_ERR_CRYPTO,
		                    "the key returned an EC signature of bad length %zu", raw_len);
	}
	r = BN_bin2bn(raw, (int)half, NULL);
	s = BN_bin2bn(raw + half, (int)half, NULL);
	if (sig != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(sig, r, s)) {
		r = s = NULL;
		n = i2d_ECDSA_SIG(sig, &der);
	}
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(sig);
	if (n <= 0)
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot encode the EC signature");
	ret = hs_buf_append(out, der, (size_t)n);
	OPENSSL_free(der);
	return ret < 0 ? hs_error_set(ctx, ret, "out of memory") : 0;
}

/* A new reference to chain for a provider's get_chain. */
int hs_key_chain_copy(struct hs_ctx *ctx, STACK_OF(X509) * chain, STACK_OF(X509) * *out)
{
	*out = X509_chain_up_ref(chain);
	return *out ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

/* Appends every certificate of each file to chain. */
int hs_key_add_cert_files(struct hs_ctx *ctx, STACK_OF(X509) * chain, const char *const *files)
{
	for (size_t i = 0; files != NULL && files[i] != NULL; i++) {
		STACK_OF(X509) *certs = NULL;
		int r = hs_load_certs(ctx, files[i], &certs);

		if (r < 0)
			return r;
		while (sk_X509_num(certs) > 0)
			sk_X509_push(chain, sk_X509_shift(certs));
		sk_X509_free(certs);
	}
	return 0;
}

/* Loads the required --cert file, then appends the -ac files. */
int hs_key_load_chain(struct hs_ctx *ctx, const char *service, const char *cert_file,
                      const char *const *extra_certs, STACK_OF(X509) * *chain)
{
	int r;

	if (cert_file == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "%s stores no certificates: give the signing certificate with "
		                    "--cert FILE",
		                    service);
	r = hs_load_certs(ctx, cert_file, chain);

	return r < 0 ? r : hs_key_add_cert_files(ctx, *chain, extra_certs);
}

/* true when pub is the public key of the chain's signer certificate. */
bool hs_key_chain_matches(STACK_OF(X509) * chain, EVP_PKEY *pub)
{
	return EVP_PKEY_eq(pub, X509_get0_pubkey(sk_X509_value(chain, 0))) == 1;
}
