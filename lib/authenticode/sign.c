/*
 * sign.c - the signing engine. It knows neither file layouts (formats do)
 * nor where keys live (providers do): it asks the format for the digest,
 * builds SpcIndirectDataContent and the SignedData, asks the key for one
 * signature, and has the format embed the result into an atomic output.
 */
#include <string.h>

#include "asn1.h"
#include "formats/format.h"
#include "pkcs7.h"
#include "timestamp.h"

/* Page hashes use SHA-1 (V1) with SHA-1 signatures, SHA-256 (V2) else. */
static int page_hash_nid(const struct hs_sign_opts *opts)
{
	if (!opts->page_hashes)
		return 0;
	return opts->digest == HS_DIGEST_SHA1 ? NID_sha1 : NID_sha256;
}

/* Digest (copying into out), sign, embed. */
static int sign_doc(struct hs_ctx *ctx, struct hs_key *key, struct hs_doc *doc,
                    const struct hs_sign_opts *opts, struct hs_out *out)
{
	struct hs_digest_params params = {.md = hs_digest_md(opts->digest),
	                                  .page_hash_nid = page_hash_nid(opts),
	                                  .msi_dse = opts->msi_dse};
	struct hs_indirect ind = {0};
	struct hs_buf spc = {0}, p7 = {0}, stamped = {0};
	struct hs_p7_params p7p;
	int r;

	params.text_encoding = (int)opts->script_encoding;
	if ((r = doc->format->digest(ctx, doc->state, &params, &ind, out)) < 0)
		goto out;
	hs_log(ctx, HS_LOG_DEBUG, "%s: %s Authenticode digest computed", doc->in.path,
	       hs_digest_name(opts->digest));
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
	if ((r = hs_p7_sign(ctx, key, &p7p, &p7)) < 0)
		goto out;
	if (hs_ts_wanted(&opts->timestamp)) {
		if ((r = hs_ts_stamp_der(ctx, &opts->timestamp, p7.data, p7.len, 0, &stamped)) < 0)
			goto out;
		hs_buf_free(&p7);
		p7 = stamped;
		stamped = (struct hs_buf){0};
	}
	r = doc->format->embed(ctx, doc->state, p7.data, p7.len, out);
out:
	hs_indirect_free(&ind);
	hs_buf_free(&spc);
	hs_buf_free(&p7);
	hs_buf_free(&stamped);
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
	if ((r = hs_out_open(ctx, &out, opts->output ? opts->output : path, doc.in.mode)) < 0)
		goto out;
	if ((r = sign_doc(ctx, key, &doc, opts, &out)) < 0)
		goto out;
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
