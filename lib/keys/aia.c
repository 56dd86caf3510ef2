/*
 * aia.c - completing a signer's chain from AIA caIssuers URLs, as Windows
 * does when it builds chains. Key Vault returns only the leaf certificate,
 * so without this the embedded chain would lack its intermediates and
 * verifiers that do not fetch them (osslsigncode, older Windows) would fail.
 * Fetched certificates are trusted for nothing: each must have issued and
 * signed the certificate before it, and chain trust is still the verifier's
 * business. Plain http:// is allowed here for that reason.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "akv.h"
#include "core/file.h"

/* Intermediates fetched at most per chain; real chains have 1-2. */
#define AIA_MAX_DEPTH 4
/* Largest certificate accepted from an AIA URL. */
#define AIA_CERT_MAX (64 * 1024)

char *hs_aia_default_cache_dir(void)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");

	if (xdg != NULL && *xdg == '/')
		return hs_strprintf("%s/hsmsign/aia", xdg);
	if (home != NULL && *home == '/')
		return hs_strprintf("%s/.cache/hsmsign/aia", home);
	return NULL;
}

/* First caIssuers URI of x, or NULL. */
static char *ca_issuers_url(X509 *x)
{
	AUTHORITY_INFO_ACCESS *aia = X509_get_ext_d2i(x, NID_info_access, NULL, NULL);
	char *url = NULL;

	for (int i = 0; aia != NULL && i < sk_ACCESS_DESCRIPTION_num(aia) && url == NULL; i++) {
		ACCESS_DESCRIPTION *ad = sk_ACCESS_DESCRIPTION_value(aia, i);

		if (OBJ_obj2nid(ad->method) == NID_ad_ca_issuers && ad->location->type == GEN_URI) {
			const ASN1_IA5STRING *uri = ad->location->d.uniformResourceIdentifier;
			url = strndup((const char *)uri->data, (size_t)uri->length);
		}
	}
	AUTHORITY_INFO_ACCESS_free(aia);
	return url;
}

/* Certificate from DER or PEM bytes. */
static X509 *parse_cert(const uint8_t *data, size_t len)
{
	const unsigned char *p = data;
	X509 *x = len <= AIA_CERT_MAX ? d2i_X509(NULL, &p, (long)len) : NULL;
	BIO *bio;

	if (x == NULL && len <= AIA_CERT_MAX && (bio = BIO_new_mem_buf(data, (int)len)) != NULL) {
		x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
		BIO_free(bio);
	}
	ERR_clear_error();
	return x;
}

/* Cache file name for a URL: a hash, so URLs need no escaping. */
static void cache_path(char *out, size_t size, const char *dir, const char *url)
{
	unsigned char h[32];
	char hex[65];

	EVP_Digest(url, strlen(url), h, NULL, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", h[i]);
	snprintf(out, size, "%s/%s.cer", dir, hex);
}

static X509 *cache_load(const char *path)
{
	uint8_t buf[AIA_CERT_MAX];
	FILE *fp = hs_os_fopen(path, "rb");
	size_t n;

	if (fp == NULL)
		return NULL;
	n = fread(buf, 1, sizeof(buf), fp);
	fclose(fp);
	return parse_cert(buf, n);
}

/* mkdir -p for the cache; failures only cost a refetch next time. */
static void cache_store(const char *dir, const char *path, X509 *x)
{
	char tmp[4200], *p, *copy = strdup(dir);
	unsigned char *der = NULL;
	int len = i2d_X509(x, &der);
	FILE *fp;

	for (p = copy ? copy + 1 : NULL; p != NULL && (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		hs_os_mkdir(copy);
		*p = '/';
	}
	if (copy != NULL)
		hs_os_mkdir(copy);
	free(copy);
	snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, hs_os_pid());
	if (len > 0 && (fp = hs_os_fopen(tmp, "wb")) != NULL) {
		int ok = fwrite(der, 1, (size_t)len, fp) == (size_t)len;
		if (fclose(fp) == 0 && ok)
			hs_os_replace(tmp, path);
		else
			hs_os_unlink(tmp);
	}
	OPENSSL_free(der);
}

static int fetch_cert(struct hs_ctx *ctx, struct hs_http *http, const char *url, X509 **out)
{
	struct hs_http_request req = {.method = "GET", .url = url, .allow_plain_http = true};
	struct hs_http_response resp = {0};
	int r;

	*out = NULL;
	if ((r = hs_http_send(ctx, http, &req, &resp)) < 0)
		goto out;
	if (resp.status != 200)
		r = hs_error_set(ctx, HS_ERR_NETWORK, "cannot fetch intermediate %s: HTTP %ld", url,
		                 resp.status);
	else if ((*out = parse_cert(resp.body.data, resp.body.len)) == NULL)
		r = hs_error_set(ctx, HS_ERR_NETWORK, "%s is not a certificate", url);
out:
	hs_http_response_free(&resp);
	return r;
}

/* The issuer of x among certs, or NULL. */
static X509 *find_issuer(STACK_OF(X509) * certs, X509 *x)
{
	for (int i = 0; i < sk_X509_num(certs); i++) {
		X509 *c = sk_X509_value(certs, i);

		if (c != x && X509_check_issued(c, x) == X509_V_OK)
			return c;
	}
	return NULL;
}

static bool is_self_issued(X509 *x)
{
	return X509_check_issued(x, x) == X509_V_OK;
}

/* Gets the issuer of x from its AIA URL (cache first) and checks it. */
static int issuer_from_aia(struct hs_ctx *ctx, struct hs_http *http, X509 *x, const char *cache_dir,
                           X509 **out)
{
	char path[4096];
	char *url = ca_issuers_url(x);
	X509 *c = NULL;
	int r = 0;

	*out = NULL;
	if (url == NULL)
		return 0;
	if (cache_dir != NULL) {
		cache_path(path, sizeof(path), cache_dir, url);
		c = cache_load(path);
	}
	if (c == NULL && (r = fetch_cert(ctx, http, url, &c)) == 0 && cache_dir != NULL)
		cache_store(cache_dir, path, c);
	if (c != NULL &&
	    (X509_check_issued(c, x) != X509_V_OK || X509_verify(x, X509_get0_pubkey(c)) != 1)) {
		ERR_clear_error();
		r = hs_error_set(ctx, HS_ERR_CRYPTO, "the certificate at %s did not issue %s", url,
		                 "the certificate that names it");
		X509_free(c);
		c = NULL;
	}
	if (c != NULL)
		hs_log(ctx, HS_LOG_INFO, "added intermediate certificate from %s", url);
	free(url);
	*out = c;
	return r;
}

int hs_aia_complete_chain(struct hs_ctx *ctx, struct hs_http *http, STACK_OF(X509) * chain,
                          const char *cache_dir)
{
	X509 *x = sk_X509_value(chain, 0);

	for (int depth = 0; x != NULL && depth < AIA_MAX_DEPTH; depth++) {
		X509 *issuer = find_issuer(chain, x);
		int r;

		if (is_self_issued(x))
			return 0;
		if (issuer == NULL) {
			if ((r = issuer_from_aia(ctx, http, x, cache_dir, &issuer)) < 0)
				return r;
			if (issuer == NULL)
				return 0; /* no AIA: the user's chain is what it is */
			if (is_self_issued(issuer)) {
				X509_free(issuer); /* a root: verifiers must trust it already */
				return 0;
			}
			if (!sk_X509_push(chain, issuer)) {
				X509_free(issuer);
				return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
			}
		}
		x = issuer;
	}
	return 0;
}
