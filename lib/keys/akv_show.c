/*
 * akv_show.c - `hsmsign vault show` and the certificate half of `doctor`:
 * what the vault holds under a certificate name, and whether it can sign
 * code (validity, codeSigning EKU, HSM key, a chain that reaches a root).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "akv.h"
#include "core/codec.h"

#define SHOW_JSON_MAX (1024 * 1024)

void hs_vault_cert_info_free(struct hs_vault_cert_info *info)
{
	if (info == NULL)
		return;
	free(info->subject);
	free(info->issuer);
	free(info->serial);
	free(info->not_before);
	free(info->not_after);
	free(info->key_type);
	free(info->ekus);
	free(info->kid);
	free(info->chain);
	free(info);
}

/* One-line distinguished name, malloc'd. */
static char *show_name(const X509_NAME *name)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *s = NULL;
	long n;

	if (bio != NULL && X509_NAME_print_ex(bio, name, 0, XN_FLAG_ONELINE) >= 0 &&
	    (n = BIO_get_mem_data(bio, &data)) >= 0)
		s = strndup(data, (size_t)n);
	BIO_free(bio);
	return s;
}

/* The commonName, or the whole name when there is none; malloc'd. */
static char *show_cn(X509 *x)
{
	const X509_NAME *name = X509_get_subject_name(x);
	int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	unsigned char *utf8 = NULL;
	char *s;

	if (i < 0 ||
	    ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i))) < 0)
		return show_name(name);
	s = strdup((const char *)utf8);
	OPENSSL_free(utf8);
	return s;
}

/* "2026-01-31T12:00:00Z", malloc'd. */
static char *show_time(const ASN1_TIME *t)
{
	struct tm tm;
	char buf[32];

	if (ASN1_TIME_to_tm(t, &tm) != 1 ||
	    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		return strdup("(unreadable)");
	return strdup(buf);
}

static char *show_serial(X509 *x)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL, *s = hex ? strdup(hex) : NULL;

	OPENSSL_free(hex);
	BN_free(bn);
	return s;
}

/* The EKU names, comma-separated; sets info->code_signing. */
static char *show_ekus(X509 *x, struct hs_vault_cert_info *info)
{
	EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
	char buf[512] = "", oid[80];
	size_t used = 0;

	if (eku == NULL)
		return strdup("(none: any use)");
	for (int i = 0; i < sk_ASN1_OBJECT_num(eku); i++) {
		ASN1_OBJECT *o = sk_ASN1_OBJECT_value(eku, i);
		int nid = OBJ_obj2nid(o);

		if (nid == NID_code_sign)
			info->code_signing = 1;
		if (nid != NID_undef)
			snprintf(oid, sizeof(oid), "%s", OBJ_nid2sn(nid));
		else
			OBJ_obj2txt(oid, sizeof(oid), o, 1);
		used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s%s", i ? ", " : "",
		                         oid);
		if (used >= sizeof(buf))
			break;
	}
	EXTENDED_KEY_USAGE_free(eku);
	return strdup(buf);
}

/* Validity, days left, names, serial, EKUs of the leaf. */
static int show_leaf(struct hs_ctx *ctx, X509 *leaf, struct hs_vault_cert_info *info)
{
	int days = 0, secs = 0;

	info->subject = show_name(X509_get_subject_name(leaf));
	info->issuer = show_name(X509_get_issuer_name(leaf));
	info->serial = show_serial(leaf);
	info->not_before = show_time(X509_get0_notBefore(leaf));
	info->not_after = show_time(X509_get0_notAfter(leaf));
	info->ekus = show_ekus(leaf, info);
	if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(leaf)) == 1)
		info->days_left = days;
	info->valid_now = X509_cmp_current_time(X509_get0_notBefore(leaf)) < 0 &&
	                  X509_cmp_current_time(X509_get0_notAfter(leaf)) > 0;
	if (!info->subject || !info->issuer || !info->serial || !info->not_before ||
	    !info->not_after || !info->ekus)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	return 0;
}

/* "RSA-HSM 3072" from the policy's key_props (the key's real size from the
 * certificate when the policy says nothing). */
static int show_key(struct hs_ctx *ctx, const json_t *bundle, X509 *leaf,
                    struct hs_vault_cert_info *info)
{
	const json_t *kp = json_object_get(json_object_get(bundle, "policy"), "key_props");
	const char *kty = json_string_value(json_object_get(kp, "kty"));
	const char *crv = json_string_value(json_object_get(kp, "crv"));
	EVP_PKEY *pub = X509_get0_pubkey(leaf);
	char size[32];

	if (kty == NULL)
		kty = pub && EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC ? "EC" : "RSA";
	if (crv != NULL)
		snprintf(size, sizeof(size), "%s", crv);
	else
		snprintf(size, sizeof(size), "%d", pub ? EVP_PKEY_get_bits(pub) : 0);
	info->hsm = strstr(kty, "-HSM") != NULL;
	info->exportable = json_is_true(json_object_get(kp, "exportable"));
	info->key_type = hs_strprintf("%s %s", kty, size);
	return info->key_type ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

/* "leaf <- CA <- Root" for a verified chain, or where it stops. */
static char *chain_text(STACK_OF(X509) * chain, const char *problem)
{
	char buf[1024] = "";
	size_t used = 0;

	for (int i = 0; i < sk_X509_num(chain) && used < sizeof(buf); i++) {
		char *cn = show_cn(sk_X509_value(chain, i));
		used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s%s", i ? " <- " : "",
		                         cn ? cn : "?");
		free(cn);
	}
	if (problem == NULL)
		return strdup(buf);
	return hs_strprintf("incomplete: %s (after %s)", problem, buf);
}

/* Builds the chain from the leaf and the vault's/AIA's intermediates to
 * the roots; validity dates are judged separately (valid_now). */
static int show_chain(struct hs_ctx *ctx, STACK_OF(X509) * certs, const char *roots,
                      struct hs_vault_cert_info *info)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *vc = X509_STORE_CTX_new();
	STACK_OF(X509) *untrusted = sk_X509_dup(certs);
	int ok, r = 0;

	if (!store || !vc || !untrusted ||
	    (roots ? X509_STORE_load_file(store, roots) : X509_STORE_set_default_paths(store)) !=
	            1 ||
	    !X509_STORE_CTX_init(vc, store, sk_X509_value(certs, 0), untrusted)) {
		r = hs_error_ssl(ctx, roots ? HS_ERR_IO : HS_ERR_CRYPTO,
		                 "cannot load the trusted roots%s%s", roots ? " from " : "",
		                 roots ? roots : "");
		goto out;
	}
	X509_STORE_CTX_set_flags(vc, X509_V_FLAG_NO_CHECK_TIME);
	ok = X509_verify_cert(vc) == 1;
	info->chain_complete = ok;
	info->chain =
	        ok ? chain_text(X509_STORE_CTX_get0_chain(vc), NULL)
	           : chain_text(certs, X509_verify_cert_error_string(X509_STORE_CTX_get_error(vc)));
	ERR_clear_error();
	if (info->chain == NULL)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
out:
	sk_X509_free(untrusted);
	X509_STORE_CTX_free(vc);
	X509_STORE_free(store);
	return r;
}

/* GET certificates/{name}[/{version}] as JSON, keeping the Date header. */
static int show_fetch(struct hs_ctx *ctx, struct akv_key *k, const struct hs_azure_key_opts *o,
                      struct hs_vault_cert_info *info, json_t **out)
{
	struct hs_http_response resp = {0};
	char what[600];
	char *url =
	        hs_strprintf("%s/certificates/%s%s%s?api-version=%s", k->vault_url, o->certificate,
	                     o->certificate_version ? "/" : "",
	                     o->certificate_version ? o->certificate_version : "", k->api_version);
	int r;

	*out = NULL;
	snprintf(what, sizeof(what), "certificate '%s'", o->certificate);
	if (url == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = hs_akv_send(ctx, k, "GET", url, NULL, &resp)) < 0)
		goto out;
	info->server_time = resp.date;
	if (resp.status != 200)
		r = hs_akv_error(ctx, k, what, &resp);
	else if (resp.body.len > SHOW_JSON_MAX ||
	         (*out = json_loadb((const char *)resp.body.data, resp.body.len, 0, NULL)) == NULL)
		r = hs_error_set(ctx, HS_ERR_NETWORK, "%s: the vault's answer is not JSON", what);
out:
	free(url);
	hs_http_response_free(&resp);
	return r;
}

/* The leaf from the bundle's "cer" and its kid. */
static int show_bundle(struct hs_ctx *ctx, const json_t *j, const char *name,
                       struct hs_vault_cert_info *info, X509 **leaf)
{
	const char *cer = json_string_value(json_object_get(j, "cer"));
	const char *kid = json_string_value(json_object_get(j, "kid"));
	struct hs_buf der = {0};
	const unsigned char *p;

	*leaf = NULL;
	if (cer != NULL && hs_base64_decode(&der, cer, strlen(cer)) == 0 && der.len < INT32_MAX) {
		p = der.data;
		*leaf = d2i_X509(NULL, &p, (long)der.len);
	}
	hs_buf_free(&der);
	ERR_clear_error();
	if (*leaf == NULL)
		return hs_error_set(ctx, HS_ERR_NOTFOUND,
		                    "certificate '%s' has no certificate yet (a pending request? "
		                    "merge the CA's answer with 'hsmsign vault merge')",
		                    name);
	if (kid != NULL && (info->kid = strdup(kid)) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	return 0;
}

/* Leaf plus intermediates: the -ac files, then AIA. */
static int show_certs(struct hs_ctx *ctx, struct akv_key *k, const struct hs_azure_key_opts *o,
                      X509 *leaf, STACK_OF(X509) * *certs)
{
	char *cache;
	int r;

	if ((*certs = sk_X509_new_null()) == NULL || !X509_up_ref(leaf))
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if (!sk_X509_push(*certs, leaf)) {
		X509_free(leaf);
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	if ((r = hs_key_add_cert_files(ctx, *certs, o->extra_certs)) < 0 || o->no_aia)
		return r;
	cache = o->aia_cache_dir ? strdup(o->aia_cache_dir) : hs_aia_default_cache_dir();
	r = hs_aia_complete_chain(ctx, k->http, *certs, cache);
	free(cache);
	return r;
}

int hs_vault_show(struct hs_ctx *ctx, const struct hs_azure_key_opts *conn, const char *roots,
                  struct hs_vault_cert_info **out)
{
	struct hs_vault_cert_info *info = calloc(1, sizeof(*info));
	STACK_OF(X509) *certs = NULL;
	struct akv_key *k = NULL;
	X509 *leaf = NULL;
	json_t *j = NULL;
	int r;

	*out = NULL;
	if (info == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = hs_akv_connect(ctx, conn, &k)) < 0 || (r = show_fetch(ctx, k, conn, info, &j)) < 0)
		goto out;
	info->credential_source = hs_akv_credential_source(k);
	if ((r = show_bundle(ctx, j, conn->certificate, info, &leaf)) < 0 ||
	    (r = show_leaf(ctx, leaf, info)) < 0 || (r = show_key(ctx, j, leaf, info)) < 0 ||
	    (r = show_certs(ctx, k, conn, leaf, &certs)) < 0 ||
	    (r = show_chain(ctx, certs, roots, info)) < 0)
		goto out;
	*out = info;
	info = NULL;
out:
	sk_X509_pop_free(certs, X509_free);
	X509_free(leaf);
	json_decref(j);
	hs_akv_free(k);
	hs_vault_cert_info_free(info);
	return r;
}
