/*
 * sign.c - the signing engine. It knows neither file layouts (formats do)
 * nor where keys live (providers do): it asks the format for the digest,
 * builds SpcIndirectDataContent and the SignedData, asks the key for one
 * signature, and has the format embed the result into an atomic output.
 */
#include <string.h>

#include "asn1.h"
#include "cms.h"
#include "formats/format.h"
#include "keys/provider.h"
#include "nest.h"
#include "pkcs7.h"
#include "sign.h"
#include "timestamp.h"

/* Page hashes use SHA-1 (V1) with SHA-1 signatures, SHA-256 (V2) else. */
static int page_hash_nid(const struct hs_sign_opts *opts, enum hs_digest digest)
{
	if (!opts->page_hashes)
		return 0;
	return digest == HS_DIGEST_SHA1 ? NID_sha1 : NID_sha256;
}

/* A plain CMS signature over the format's content (NuGet), with an RFC 3161
 * timestamp in the standard attribute. */
static int sign_cms(struct hs_ctx *ctx, struct hs_key *key, const struct hs_sign_opts *opts,
                    const EVP_MD *md, const struct hs_indirect *ind, struct hs_buf *p7)
{
	struct hs_buf unstamped = {0};
	int r;

	if (!hs_ts_wanted(&opts->timestamp))
		return hs_cms_sign(ctx, key, md, ind->content_der.data, ind->content_der.len, p7);
	if ((r = hs_cms_sign(ctx, key, md, ind->content_der.data, ind->content_der.len,
	                     &unstamped)) == 0)
		r = hs_cms_timestamp(ctx, &opts->timestamp, unstamped.data, unstamped.len, p7);
	hs_buf_free(&unstamped);
	return r;
}

/* One signature: digest pass, SignedData, timestamp (sign.h). */
int hs_sign_one(struct hs_ctx *ctx, struct hs_key *key, struct hs_doc *doc,
                const struct hs_sign_opts *opts, enum hs_digest digest, struct hs_out *copy,
                struct hs_buf *p7)
{
	struct hs_digest_params params = {.md = hs_digest_md(digest),
	                                  .page_hash_nid = page_hash_nid(opts, digest),
	                                  .msi_dse = opts->msi_dse};
	struct hs_indirect ind = {0};
	struct hs_buf spc = {0}, stamped = {0};
	struct hs_p7_params p7p;
	int r;

	params.text_encoding = (int)opts->script_encoding;
	if ((r = doc->format->digest(ctx, doc->state, &params, &ind, copy)) < 0)
		goto out;
	if (ind.md != NULL) /* the format decides (APPX: the block map's) */
		params.md = ind.md;
	hs_log(ctx, HS_LOG_DEBUG, "%s: %s Authenticode digest computed", doc->in.path,
	       EVP_MD_get0_name(params.md));
	if (doc->format->plain_cms) { /* NuGet: CMS, not Authenticode */
		r = sign_cms(ctx, key, opts, params.md, &ind, p7);
		goto out;
	}
	/* A format with content of its own (catalog CTL) has it signed as is. */
	if (ind.content_oid == NULL &&
	    (r = hs_spc_indirect_build(ctx, &spc, ind.data_der.data, ind.data_der.len, params.md,
	                               ind.digest, ind.digest_len)) < 0)
		goto out;
	p7p = (struct hs_p7_params){
	        params.md, spc.data, spc.len, opts->description, opts->description_url, NULL};
	if (ind.content_oid != NULL) {
		p7p.spc_der = ind.content_der.data;
		p7p.spc_len = ind.content_der.len;
		p7p.content_oid = ind.content_oid;
	}
	if ((r = hs_p7_sign(ctx, key, &p7p, p7)) < 0)
		goto out;
	if (hs_ts_wanted(&opts->timestamp)) {
		if ((r = hs_ts_stamp_der(ctx, &opts->timestamp, p7->data, p7->len, 0, &stamped)) <
		    0)
			goto out;
		hs_buf_free(p7);
		*p7 = stamped;
		stamped = (struct hs_buf){0};
	}
out:
	hs_indirect_free(&ind);
	hs_buf_free(&spc);
	hs_buf_free(&stamped);
	return r;
}

/* What one run writes: the primary signature (kept from the file when
 * appending) and the digests of the signatures to nest in it. */
struct sign_plan {
	struct hs_buf primary; /* the existing PKCS#7 when appending */
	const EVP_MD *primary_md;
	enum hs_digest nested[HS_NEST_MAX];
	size_t n_nested;
};

static int plan_add(struct hs_ctx *ctx, struct sign_plan *plan, enum hs_digest digest)
{
	if (plan->n_nested == HS_NEST_MAX)
		return hs_error_set(ctx, HS_ERR_INVALID, "more than %d nested signatures",
		                    HS_NEST_MAX);
	plan->nested[plan->n_nested++] = digest;
	return 0;
}

/* Decides what to sign and checks that the format allows the nesting. */
static int plan_make(struct hs_ctx *ctx, struct hs_doc *doc, const struct hs_sign_opts *opts,
                     struct sign_plan *plan)
{
	struct hs_digest_params primary = {.md = hs_digest_md(opts->digest),
	                                   .msi_dse = opts->msi_dse};
	int r;

	if (opts->append && doc->format->is_signed(doc->state)) {
		if ((r = doc->format->extract(ctx, doc->state, &plan->primary)) < 0 ||
		    (r = hs_nest_primary_md(ctx, plan->primary.data, plan->primary.len,
		                            &primary.md)) < 0 ||
		    (r = plan_add(ctx, plan, opts->digest)) < 0)
			return r;
		primary.msi_dse = 0;
	}
	plan->primary_md = primary.md;
	for (size_t i = 0; opts->nested_digests != NULL && opts->nested_digests[i] != 0; i++) {
		if (hs_digest_md(opts->nested_digests[i]) == NULL)
			return hs_error_set(ctx, HS_ERR_INVALID, "unsupported digest algorithm");
		if ((r = plan_add(ctx, plan, opts->nested_digests[i])) < 0)
			return r;
	}
	for (size_t i = 0; doc->format->check_nesting != NULL && i < plan->n_nested; i++)
		if ((r = doc->format->check_nesting(ctx, doc->state, &primary,
		                                    hs_digest_md(plan->nested[i]))) < 0)
			return r;
	return 0;
}

/* Nested signatures first (digest passes without copying), then the pass
 * that copies the file into out, whose state embed() uses. */
static int sign_doc(struct hs_ctx *ctx, struct hs_key *key, struct hs_doc *doc,
                    const struct hs_sign_opts *opts, struct hs_out *out)
{
	struct sign_plan plan = {0};
	struct hs_buf nested[HS_NEST_MAX] = {0}, primary = {0}, final = {0};
	const struct hs_buf *result = &primary;
	size_t n = 0;
	int r;

	if ((r = plan_make(ctx, doc, opts, &plan)) < 0)
		goto out;
	for (n = 0; n < plan.n_nested; n++)
		if ((r = hs_sign_one(ctx, key, doc, opts, plan.nested[n], NULL, &nested[n])) < 0)
			goto out;
	if (plan.primary.len > 0)
		r = hs_doc_copy_unsigned(ctx, doc, plan.primary_md, out);
	else
		r = hs_sign_one(ctx, key, doc, opts, opts->digest, out, &primary);
	if (r < 0)
		goto out;
	if (plan.primary.len > 0)
		result = &plan.primary;
	if (n > 0) {
		if ((r = hs_nest_add(ctx, result->data, result->len, nested, n, &final)) < 0)
			goto out;
		result = &final;
	}
	r = doc->format->embed(ctx, doc->state, result->data, result->len, out);
out:
	for (size_t i = 0; i < HS_NEST_MAX; i++)
		hs_buf_free(&nested[i]);
	hs_buf_free(&plan.primary);
	hs_buf_free(&primary);
	hs_buf_free(&final);
	return r;
}

static int check_sign_opts(struct hs_ctx *ctx, const struct hs_sign_opts *opts)
{
	if (hs_digest_md(opts->digest) == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID, "unsupported digest algorithm");
	return 0;
}

int hs_sign_file(struct hs_ctx *ctx, struct hs_key *key, const char *path,
                 const struct hs_sign_opts *opts, enum hs_sign_outcome *outcome)
{
	struct hs_doc doc;
	struct hs_out out = {.fd = -1};
	int r;

	if (outcome != NULL)
		*outcome = HS_SIGN_SIGNED;
	if ((r = check_sign_opts(ctx, opts)) < 0)
		return r;
	if ((r = hs_doc_open(ctx, &doc, path)) < 0)
		return r;
	if (opts->skip_signed && doc.format->is_signed(doc.state)) {
		hs_log(ctx, HS_LOG_INFO, "%s: already signed, skipped", path);
		if (outcome != NULL)
			*outcome = HS_SIGN_SKIPPED;
		goto out;
	}
	if (doc.format->replace_explicit && doc.format->is_signed(doc.state) && !opts->replace) {
		r = hs_error_set(ctx, HS_ERR_INVALID,
		                 "%s: already signed; --replace replaces its signature", path);
		goto out;
	}
	if (doc.format->check_signer != NULL &&
	    (r = doc.format->check_signer(ctx, doc.state, hs_key_signer(key))) < 0)
		goto out;
	if ((r = hs_out_open(ctx, &out, opts->output ? opts->output : path, doc.in.mode)) < 0)
		goto out;
	if ((r = sign_doc(ctx, key, &doc, opts, &out)) < 0)
		goto out;
	out.source = &doc.in; /* refuse if it changed meanwhile */
	r = hs_out_commit(ctx, &out);
out:
	hs_out_abort(&out);
	hs_doc_close(&doc);
	return r;
}

int hs_remove_signature(struct hs_ctx *ctx, const char *path, const char *output)
{
	struct hs_doc doc;
	struct hs_out out = {.fd = -1};
	int r;

	if ((r = hs_doc_open(ctx, &doc, path)) < 0)
		return r;
	if (!doc.format->is_signed(doc.state)) {
		r = hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", path);
		goto out;
	}
	if ((r = hs_out_open(ctx, &out, output ? output : path, doc.in.mode)) < 0 ||
	    (r = doc.format->remove(ctx, doc.state, &out)) < 0)
		goto out;
	out.source = &doc.in; /* refuse if it changed meanwhile */
	r = hs_out_commit(ctx, &out);
out:
	hs_out_abort(&out);
	hs_doc_close(&doc);
	return r;
}

int hs_extract_signature(struct hs_ctx *ctx, const char *path, uint8_t **out, size_t *out_len)
{
	struct hs_doc doc;
	struct hs_buf der = {0};
	int r;

	*out = NULL;
	*out_len = 0;
	if ((r = hs_doc_open(ctx, &doc, path)) < 0)
		return r;
	if (!doc.format->is_signed(doc.state))
		r = hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", path);
	else if ((r = doc.format->extract(ctx, doc.state, &der)) == 0)
		hs_buf_detach(&der, out, out_len);
	hs_buf_free(&der);
	hs_doc_close(&doc);
	return r;
}

int hs_digest_file(struct hs_ctx *ctx, const char *path, enum hs_digest digest, uint8_t **out,
                   size_t *out_len)
{
	struct hs_digest_params params = {.md = hs_digest_md(digest)};
	struct hs_indirect ind = {0};
	struct hs_buf buf = {0};
	struct hs_doc doc;
	int r;

	*out = NULL;
	*out_len = 0;
	if (params.md == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID, "unsupported digest algorithm");
	if ((r = hs_doc_open(ctx, &doc, path)) < 0)
		return r;
	if ((r = doc.format->digest(ctx, doc.state, &params, &ind, NULL)) == 0 &&
	    (r = hs_buf_append(&buf, ind.digest, ind.digest_len)) == 0)
		hs_buf_detach(&buf, out, out_len);
	else if (r == HS_ERR_NOMEM)
		hs_error_set(ctx, r, "out of memory");
	hs_indirect_free(&ind);
	hs_doc_close(&doc);
	return r;
}
