/*
 * nest.c - adding, removing and extracting nested signatures in the
 * primary SignerInfo's unsigned attribute 1.3.6.1.4.1.311.2.4.1
 * (authenticode.md 4). All nested signatures are kept in one attribute, as
 * osslsigncode and jsign write them; files with several such attributes are
 * read in order and rewritten with one.
 */
#include <limits.h>
#include <string.h>

#include <openssl/objects.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>

#include "asn1.h"
#include "formats/format.h"
#include "nest.h"

/* The nested signature values of a primary SignerInfo, in file order;
 * borrowed from the SignerInfo. */
struct nest_list {
	const ASN1_STRING *values[HS_NEST_MAX + 1];
	size_t n;
};

static int nest_decode(struct hs_ctx *ctx, const uint8_t *der, size_t len, PKCS7 **out)
{
	const unsigned char *p = der;

	*out = len > 0 && len <= LONG_MAX ? d2i_PKCS7(NULL, &p, (long)len) : NULL;
	if (*out == NULL || !PKCS7_type_is_signed(*out) || (*out)->d.sign == NULL ||
	    sk_PKCS7_SIGNER_INFO_num((*out)->d.sign->signer_info) != 1) {
		PKCS7_free(*out);
		*out = NULL;
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "signature is not a SignedData with one SignerInfo");
	}
	return 0;
}

static PKCS7_SIGNER_INFO *nest_primary(PKCS7 *p7)
{
	return sk_PKCS7_SIGNER_INFO_value(p7->d.sign->signer_info, 0);
}

static bool nest_is_attr(const X509_ATTRIBUTE *attr)
{
	char text[64];

	return OBJ_obj2txt(text, sizeof(text), X509_ATTRIBUTE_get0_object((X509_ATTRIBUTE *)attr),
	                   1) > 0 &&
	       strcmp(text, HS_OID_SPC_NESTED_SIGNATURE) == 0;
}

/* Collects the nested signature values of si, refusing malformed ones. */
static int nest_collect(struct hs_ctx *ctx, PKCS7_SIGNER_INFO *si, struct nest_list *list)
{
	list->n = 0;
	for (int i = 0; i < X509at_get_attr_count(si->unauth_attr); i++) {
		X509_ATTRIBUTE *attr = X509at_get_attr(si->unauth_attr, i);

		if (!nest_is_attr(attr))
			continue;
		for (int j = 0; j < X509_ATTRIBUTE_count(attr); j++) {
			ASN1_TYPE *t = X509_ATTRIBUTE_get0_type(attr, j);

			if (t == NULL || t->type != V_ASN1_SEQUENCE)
				return hs_error_set(ctx, HS_ERR_FORMAT,
				                    "nested signature %zu is not a SEQUENCE",
				                    list->n + 1);
			if (list->n == HS_NEST_MAX)
				return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
				                    "more than %d nested signatures", HS_NEST_MAX);
			list->values[list->n++] = t->value.sequence;
		}
	}
	return 0;
}

/* Replaces every nested-signature attribute of si by one holding the
 * values in list (none: no attribute). */
static int nest_store(struct hs_ctx *ctx, PKCS7_SIGNER_INFO *si, const struct nest_list *list)
{
	ASN1_OBJECT *obj = OBJ_txt2obj(HS_OID_SPC_NESTED_SIGNATURE, 1);
	X509_ATTRIBUTE *attr = NULL;
	int r = 0;

	if (obj == NULL)
		return hs_error_ssl(ctx, HS_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < list->n; i++) {
		const ASN1_STRING *v = list->values[i];

		if ((attr == NULL &&
		     (attr = X509_ATTRIBUTE_create_by_OBJ(NULL, obj, V_ASN1_SEQUENCE, v->data,
		                                          v->length)) == NULL) ||
		    (i > 0 &&
		     !X509_ATTRIBUTE_set1_data(attr, V_ASN1_SEQUENCE, v->data, v->length))) {
			r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot build the nested signature");
			goto out;
		}
	}
	for (int i = X509at_get_attr_count(si->unauth_attr) - 1; i >= 0; i--)
		if (nest_is_attr(X509at_get_attr(si->unauth_attr, i)))
			X509_ATTRIBUTE_free(X509at_delete_attr(si->unauth_attr, i));
	if (attr != NULL && !X509at_add1_attr(&si->unauth_attr, attr))
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot add the nested signature");
	/* No unsigned attributes left: omit the field rather than encode an
	 * empty SET. */
	if (X509at_get_attr_count(si->unauth_attr) == 0) {
		sk_X509_ATTRIBUTE_free(si->unauth_attr);
		si->unauth_attr = NULL;
	}
out:
	X509_ATTRIBUTE_free(attr);
	ASN1_OBJECT_free(obj);
	return r;
}

static int nest_encode(struct hs_ctx *ctx, PKCS7 *p7, struct hs_buf *out)
{
	unsigned char *der = NULL;
	int len = i2d_PKCS7(p7, &der), r;

	if (len <= 0)
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot encode SignedData");
	r = hs_buf_append(out, der, (size_t)len);
	OPENSSL_free(der);
	return r < 0 ? hs_error_set(ctx, r, "out of memory") : 0;
}

int hs_nest_primary_md(struct hs_ctx *ctx, const uint8_t *der, size_t len, const EVP_MD **out)
{
	PKCS7 *p7 = NULL;
	int r;

	*out = NULL;
	if ((r = nest_decode(ctx, der, len, &p7)) < 0)
		return r;
	*out = hs_digest_md(
	        hs_digest_from_nid(OBJ_obj2nid(nest_primary(p7)->digest_alg->algorithm)));
	if (*out == NULL)
		r = hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                 "the existing signature uses an unsupported digest algorithm");
	PKCS7_free(p7);
	return r;
}

int hs_nest_add(struct hs_ctx *ctx, const uint8_t *der, size_t len, const struct hs_buf *nested,
                size_t n, struct hs_buf *out)
{
	struct nest_list list;
	ASN1_STRING *added[HS_NEST_MAX] = {0};
	PKCS7 *p7 = NULL;
	size_t k = 0;
	int r;

	if ((r = nest_decode(ctx, der, len, &p7)) < 0 ||
	    (r = nest_collect(ctx, nest_primary(p7), &list)) < 0)
		goto out;
	if (list.n + n > HS_NEST_MAX) {
		r = hs_error_set(ctx, HS_ERR_UNSUPPORTED, "more than %d nested signatures",
		                 HS_NEST_MAX);
		goto out;
	}
	for (k = 0; k < n; k++) {
		if ((added[k] = ASN1_STRING_new()) == NULL || nested[k].len > INT_MAX ||
		    !ASN1_STRING_set(added[k], nested[k].data, (int)nested[k].len)) {
			r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
			k++;
			goto out;
		}
		list.values[list.n++] = added[k];
	}
	if ((r = nest_store(ctx, nest_primary(p7), &list)) == 0)
		r = nest_encode(ctx, p7, out);
out:
	while (k > 0)
		ASN1_STRING_free(added[--k]);
	PKCS7_free(p7);
	return r;
}

/* Decodes der and finds nested signature index (1-based) of its primary. */
static int nest_find(struct hs_ctx *ctx, const uint8_t *der, size_t len, unsigned index, PKCS7 **p7,
                     struct nest_list *list)
{
	int r;

	if ((r = nest_decode(ctx, der, len, p7)) < 0 ||
	    (r = nest_collect(ctx, nest_primary(*p7), list)) < 0)
		return r;
	if (index == 0 || index > list->n)
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "no signature with index %u (%zu nested)",
		                    index, list->n);
	return 0;
}

int hs_nest_remove(struct hs_ctx *ctx, const uint8_t *der, size_t len, unsigned index,
                   struct hs_buf *out)
{
	struct nest_list list;
	ASN1_STRING *kept[HS_NEST_MAX] = {0};
	PKCS7 *p7 = NULL;
	size_t n = 0;
	int r;

	if ((r = nest_find(ctx, der, len, index, &p7, &list)) < 0)
		goto out;
	/* Copies: nest_store frees the attributes the values live in. */
	for (size_t i = 0; i < list.n; i++) {
		if (i + 1 == index)
			continue;
		if ((kept[n] = ASN1_STRING_dup(list.values[i])) == NULL) {
			r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
			goto out;
		}
		list.values[n] = kept[n];
		n++;
	}
	list.n = n;
	if ((r = nest_store(ctx, nest_primary(p7), &list)) == 0)
		r = nest_encode(ctx, p7, out);
out:
	while (n > 0)
		ASN1_STRING_free(kept[--n]);
	PKCS7_free(p7);
	return r;
}

int hs_nest_get(struct hs_ctx *ctx, const uint8_t *der, size_t len, unsigned index,
                struct hs_buf *out)
{
	struct nest_list list;
	PKCS7 *p7 = NULL;
	int r;

	if ((r = nest_find(ctx, der, len, index, &p7, &list)) == 0 &&
	    (r = hs_buf_append(out, list.values[index - 1]->data,
	                       (size_t)list.values[index - 1]->length)) < 0)
		hs_error_set(ctx, r, "out of memory");
	PKCS7_free(p7);
	return r;
}

/* ------------------------------------------------------------ file level */

int hs_doc_copy_unsigned(struct hs_ctx *ctx, struct hs_doc *doc, const EVP_MD *md,
                         struct hs_out *out)
{
	struct hs_digest_params params = {.md = md};
	struct hs_indirect ind = {0};
	int r = doc->format->digest(ctx, doc->state, &params, &ind, out);

	hs_indirect_free(&ind);
	return r;
}

/* Opens path and extracts its PKCS#7; HS_ERR_NOTFOUND when unsigned. */
static int nest_open_signed(struct hs_ctx *ctx, const char *path, struct hs_doc *doc,
                            struct hs_buf *der)
{
	int r;

	if ((r = hs_doc_open(ctx, doc, path)) < 0)
		return r;
	if (!doc->format->is_signed(doc->state))
		r = hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", path);
	else
		r = doc->format->extract(ctx, doc->state, der);
	if (r < 0)
		hs_doc_close(doc);
	return r;
}

/* Rewrites doc atomically with the PKCS#7 der. */
static int nest_rewrite(struct hs_ctx *ctx, struct hs_doc *doc, const struct hs_buf *der,
                        const char *output)
{
	struct hs_out out = {.fd = -1};
	const EVP_MD *md;
	int r;

	if ((r = hs_nest_primary_md(ctx, der->data, der->len, &md)) < 0 ||
	    (r = hs_out_open(ctx, &out, output ? output : doc->in.path, doc->in.mode)) < 0 ||
	    (r = hs_doc_copy_unsigned(ctx, doc, md, &out)) < 0 ||
	    (r = doc->format->embed(ctx, doc->state, der->data, der->len, &out)) < 0)
		goto out;
	out.source = &doc->in; /* refuse if it changed meanwhile */
	r = hs_out_commit(ctx, &out);
out:
	hs_out_abort(&out);
	return r;
}

int hs_remove_signature_index(struct hs_ctx *ctx, const char *path, unsigned index,
                              const char *output)
{
	struct hs_buf der = {0}, kept = {0};
	struct hs_doc doc;
	int r;

	if (index == 0)
		return hs_remove_signature(ctx, path, output);
	if ((r = nest_open_signed(ctx, path, &doc, &der)) < 0)
		return r;
	if ((r = hs_nest_remove(ctx, der.data, der.len, index, &kept)) == 0)
		r = nest_rewrite(ctx, &doc, &kept, output);
	hs_buf_free(&der);
	hs_buf_free(&kept);
	hs_doc_close(&doc);
	return r;
}

int hs_extract_signature_index(struct hs_ctx *ctx, const char *path, unsigned index, uint8_t **out,
                               size_t *out_len)
{
	struct hs_buf der = {0}, nested = {0};
	struct hs_doc doc;
	int r;

	if (index == 0)
		return hs_extract_signature(ctx, path, out, out_len);
	*out = NULL;
	*out_len = 0;
	if ((r = nest_open_signed(ctx, path, &doc, &der)) < 0)
		return r;
	if ((r = hs_nest_get(ctx, der.data, der.len, index, &nested)) == 0)
		hs_buf_detach(&nested, out, out_len);
	hs_buf_free(&der);
	hs_buf_free(&nested);
	hs_doc_close(&doc);
	return r;
}
