/*
 * gcp_attest.c - Cloud HSM attestation of a Cloud KMS key version
 * (protocols.md 5.2): GET the CryptoKeyVersion, check each of its
 * certificate chains (caviumCerts, googleCardCerts, googlePartitionCerts)
 * with OpenSSL's verifier, and save the attestation statement. CAs ask
 * for this bundle as proof that a code-signing key lives in an HSM.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "core/codec.h"
#include "core/file.h"
#include "gcp.h"
#include "provider.h"

#define ATT_CHAIN_MAX 16

static const char *const att_chain_names[] = {"caviumCerts", "googleCardCerts",
                                              "googlePartitionCerts"};

void hs_gcp_attestation_free(struct hs_gcp_attestation *att)
{
	if (att == NULL)
		return;
	for (size_t i = 0; i < att->n_chains; i++) {
		free(att->chains[i].name);
		free(att->chains[i].leaf);
		free(att->chains[i].root);
	}
	free(att->chains);
	free(att->version);
	free(att->format);
	free(att->protection_level);
	free(att);
}

static char *att_subject(X509 *cert)
{
	char buf[512];

	X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof(buf));
	return strdup(buf);
}

/* The PEM certificates of one certChains list. */
static int att_load_list(struct hs_ctx *ctx, json_t *list, const char *name, STACK_OF(X509) * *out)
{
	json_t *v;
	size_t i;

	if ((*out = sk_X509_new_null()) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	json_array_foreach(list, i, v)
	{
		const char *pem = json_string_value(v);
		BIO *bio = pem ? BIO_new_mem_buf(pem, -1) : NULL;
		X509 *cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;

		BIO_free(bio);
		if (cert == NULL || i >= ATT_CHAIN_MAX || !sk_X509_push(*out, cert)) {
			X509_free(cert);
			return hs_error_ssl(ctx, HS_ERR_NETWORK,
			                    "attestation chain %s: certificate %zu is unreadable",
			                    name, i + 1);
		}
	}
	return 0;
}

/* The certificate that issued none of the others. */
static X509 *att_leaf(STACK_OF(X509) * certs)
{
	for (int i = 0; i < sk_X509_num(certs); i++) {
		bool issuer = false;

		for (int j = 0; j < sk_X509_num(certs); j++)
			if (i != j && X509_check_issued(sk_X509_value(certs, i),
			                                sk_X509_value(certs, j)) == X509_V_OK)
				issuer = true;
		if (!issuer)
			return sk_X509_value(certs, i);
	}
	return NULL;
}

/* Verifies one chain to roots (or its own self-signed certificates). */
static int att_verify(struct hs_ctx *ctx, STACK_OF(X509) * certs, STACK_OF(X509) * roots,
                      struct hs_gcp_attestation_chain *info)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *vctx = X509_STORE_CTX_new();
	STACK_OF(X509) *anchors = roots ? roots : certs;
	X509 *leaf = att_leaf(certs);
	int r = 0;

	for (int i = 0; store && i < sk_X509_num(anchors); i++)
		if (roots || X509_check_issued(sk_X509_value(anchors, i),
		                               sk_X509_value(anchors, i)) == X509_V_OK)
			X509_STORE_add_cert(store, sk_X509_value(anchors, i));
	if (store == NULL || vctx == NULL || leaf == NULL ||
	    X509_STORE_CTX_init(vctx, store, leaf, certs) != 1) {
		r = hs_error_set(ctx, HS_ERR_CRYPTO, "attestation chain %s: no end certificate",
		                 info->name);
		goto out;
	}
	if (X509_verify_cert(vctx) != 1) {
		r = hs_error_set(ctx, HS_ERR_CRYPTO, "attestation chain %s does not verify: %s",
		                 info->name,
		                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx)));
		goto out;
	}
	info->count = (size_t)sk_X509_num(certs);
	info->leaf = att_subject(leaf);
	info->root = att_subject(sk_X509_value(X509_STORE_CTX_get0_chain(vctx),
	                                       sk_X509_num(X509_STORE_CTX_get0_chain(vctx)) - 1));
	info->root_pinned = roots != NULL;
	if (info->leaf == NULL || info->root == NULL)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
out:
	ERR_clear_error();
	X509_STORE_CTX_free(vctx);
	X509_STORE_free(store);
	return r;
}

/* Checks every non-empty chain of certChains. */
static int att_check_chains(struct hs_ctx *ctx, json_t *chains, const char *roots_file,
                            struct hs_gcp_attestation *att)
{
	STACK_OF(X509) *roots = NULL;
	int r = 0;

	if (roots_file != NULL && (r = hs_load_certs(ctx, roots_file, &roots)) < 0)
		return r;
	att->chains = calloc(3, sizeof(*att->chains));
	for (size_t i = 0; att->chains != NULL && r == 0 && i < 3; i++) {
		json_t *list = json_object_get(chains, att_chain_names[i]);
		STACK_OF(X509) *certs = NULL;

		if (json_array_size(list) == 0)
			continue;
		att->chains[att->n_chains].name = strdup(att_chain_names[i]);
		if (att->chains[att->n_chains].name == NULL)
			r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		else if ((r = att_load_list(ctx, list, att_chain_names[i], &certs)) == 0)
			r = att_verify(ctx, certs, roots, &att->chains[att->n_chains]);
		att->n_chains++;
		sk_X509_pop_free(certs, X509_free);
	}
	if (att->chains == NULL)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	else if (r == 0 && att->n_chains == 0)
		r = hs_error_set(ctx, HS_ERR_NOTFOUND,
		                 "the attestation carries no certificate chains");
	sk_X509_pop_free(roots, X509_free);
	return r;
}

/* Writes the decoded statement atomically. */
static int att_write(struct hs_ctx *ctx, const char *b64, const char *output, size_t *len)
{
	struct hs_buf content = {0};
	struct hs_out o = {.fd = -1};
	int r;

	if (hs_base64_decode(&content, b64, strlen(b64)) < 0 || content.len == 0) {
		r = hs_error_set(ctx, HS_ERR_NETWORK, "the attestation content is not base64");
		goto out;
	}
	*len = content.len;
	if (output == NULL) {
		r = 0;
		goto out;
	}
	if ((r = hs_out_open(ctx, &o, output, 0644)) == 0 &&
	    (r = hs_out_write(ctx, &o, content.data, content.len)) == 0)
		r = hs_out_commit(ctx, &o);
	hs_out_abort(&o); /* frees; removes the temp file unless committed */
out:
	hs_buf_free(&content);
	return r;
}

int hs_gcp_kms_attestation(struct hs_ctx *ctx, const struct hs_gcp_kms_key_opts *opts,
                           const char *roots_file, const char *output,
                           struct hs_gcp_attestation **out)
{
	struct hs_gcp_attestation *att = calloc(1, sizeof(*att));
	json_t *ver = NULL, *a;
	const char *level, *content;
	int r;

	*out = NULL;
	if (att == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = hs_gcp_kms_version_json(ctx, opts, &ver)) < 0)
		goto out;
	level = json_string_value(json_object_get(ver, "protectionLevel"));
	a = json_object_get(ver, "attestation");
	content = json_string_value(json_object_get(a, "content"));
	if (level == NULL || strcmp(level, "HSM") != 0 || content == NULL) {
		r = hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                 "key version %s is protected by %s: only HSM keys have an "
		                 "attestation",
		                 opts->key, level ? level : "an unknown level");
		goto out;
	}
	att->protection_level = strdup(level);
	att->version = strdup(json_string_value(json_object_get(ver, "name"))
	                              ? json_string_value(json_object_get(ver, "name"))
	                              : opts->key);
	att->format = strdup(json_string_value(json_object_get(a, "format"))
	                             ? json_string_value(json_object_get(a, "format"))
	                             : "unknown");
	if (att->protection_level == NULL || att->format == NULL || att->version == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = att_check_chains(ctx, json_object_get(a, "certChains"), roots_file, att)) < 0 ||
	    (r = att_write(ctx, content, output, &att->content_len)) < 0)
		goto out;
	*out = att;
	att = NULL;
out:
	hs_gcp_attestation_free(att);
	json_decref(ver);
	return r;
}
