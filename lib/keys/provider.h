/*
 * provider.h - the interface every key provider implements.
 *
 * The signing engine asks a key for two things only: its certificate chain
 * (once per run) and a signature over a digest (once per file). A provider
 * that signs over HTTPS (Key Vault, KMS) or PKCS#11 fits behind the same two
 * calls; the engine never sees key material, files or HTTP.
 */
#ifndef HS_PROVIDER_H
#define HS_PROVIDER_H

#include <pthread.h>
#include <stdbool.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "core/core.h"

struct hs_key_provider {
	const char *name;
	/*
	 * Returns the signer's certificate first, then intermediates; *out
	 * belongs to the caller (sk_X509_pop_free). Called once per key.
	 */
	int (*get_chain)(struct hs_ctx *ctx, void *state, STACK_OF(X509) * *out);
	/*
	 * Signs `digest` (the hash of the signed attributes computed with md).
	 * RSA: PKCS#1 v1.5 signature over DigestInfo(md, digest).
	 * EC:  DER ECDSA-Sig-Value (providers that get r||s convert it).
	 */
	int (*sign_digest)(struct hs_ctx *ctx, void *state, const EVP_MD *md, const uint8_t *digest,
	                   size_t digest_len, struct hs_buf *sig);
	/* Releases state, wiping any secret it holds. */
	void (*free)(void *state);
	/* Optional: the key's name in its store (a vault key URL); NULL slot:
	 * the signer certificate's SHA-1 thumbprint names the key. */
	const char *(*key_id)(void *state);
	/* Optional: requests sent to a remote service so far. */
	unsigned long (*requests)(void *state);
	/* true: sign_digest may run on several threads at once (each with
	 * its own ctx), as batch signing does; false: the key layer
	 * serialises the calls. */
	bool concurrent;
};

/* A key: a provider, its state, and the chain fetched once. */
struct hs_key {
	const struct hs_key_provider *provider;
	void *state;
	STACK_OF(X509) * chain; /* [0] is the signer */
	char *subject;
	char *id;                  /* hs_key_id() */
	pthread_mutex_t sign_lock; /* serialises sign_digest unless concurrent */
	/* At most inflight_max sign_digest calls at once (0: no limit);
	 * inflight counts them, under inflight_lock. */
	pthread_mutex_t inflight_lock;
	pthread_cond_t inflight_cond;
	int inflight, inflight_max;
};

/* Wraps provider state into a key and fetches the chain; on failure the
 * state is freed too. */
int hs_key_new(struct hs_ctx *ctx, struct hs_key **out, const struct hs_key_provider *provider,
               void *state);

/* Signs through the provider and checks the result against the signer
 * certificate's public key before anyone embeds it. */
int hs_key_sign_digest(struct hs_ctx *ctx, struct hs_key *key, const EVP_MD *md,
                       const uint8_t *digest, size_t digest_len, struct hs_buf *sig);

/* At most n sign requests at once from now on (0: no limit). Batch
 * signing sets it so that more threads than n can read and write files
 * while n requests keep a remote key busy. Not while signing. */
void hs_key_limit_inflight(struct hs_key *key, int n);

/* Borrowed: the signer certificate and the intermediates (may be empty). */
X509 *hs_key_signer(const struct hs_key *key);

/* All certificates of a PEM file, or the single one of a DER file, in file
 * order; *out belongs to the caller. */
int hs_load_certs(struct hs_ctx *ctx, const char *path, STACK_OF(X509) * *out);

/* Appends DER DigestInfo { md, digest }: what a raw RSA PKCS#1 v1.5
 * signer (Key Vault RSNULL, PKCS#11 CKM_RSA_PKCS) is given to sign. */
int hs_key_digest_info(struct hs_ctx *ctx, const EVP_MD *md, const uint8_t *digest, size_t len,
                       struct hs_buf *out);
/* Appends the DER ECDSA-Sig-Value for an IEEE P1363 r||s signature (what
 * Key Vault and PKCS#11 CKM_ECDSA return). */
int hs_key_ecdsa_p1363_to_der(struct hs_ctx *ctx, const uint8_t *raw, size_t raw_len,
                              struct hs_buf *out);

/* A new reference to chain, as get_chain returns it. */
int hs_key_chain_copy(struct hs_ctx *ctx, STACK_OF(X509) * chain, STACK_OF(X509) * *out);
/* Appends every certificate of each file (NULL-terminated, or NULL) to chain. */
int hs_key_add_cert_files(struct hs_ctx *ctx, STACK_OF(X509) * chain, const char *const *files);
/* Loads cert_file into *chain, then appends the extra_certs files; a NULL
 * cert_file is an error naming service, which stores no certificates. */
int hs_key_load_chain(struct hs_ctx *ctx, const char *service, const char *cert_file,
                      const char *const *extra_certs, STACK_OF(X509) * *chain);
/* true when pub is the public key of chain[0], the signer certificate. */
bool hs_key_chain_matches(STACK_OF(X509) * chain, EVP_PKEY *pub);

extern const struct hs_key_provider hs_key_provider_file;
extern const struct hs_key_provider hs_key_provider_azure;
extern const struct hs_key_provider hs_key_provider_aws_kms;
extern const struct hs_key_provider hs_key_provider_gcp_kms;
extern const struct hs_key_provider hs_key_provider_vault_transit;
extern const struct hs_key_provider hs_key_provider_trusted_signing;

#endif /* HS_PROVIDER_H */
