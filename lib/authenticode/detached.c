/*
 * detached.c - two-step signing (docs/cli.md "Two-step signing").
 *
 * Step one runs the signing engine with a key that only records what it is
 * asked to sign (the digest of the signed attributes) and stops there; the
 * request file keeps that digest, the options and the certificate chain.
 * Step two runs the same engine again with a key that answers with the
 * signature made elsewhere, after checking that it is asked for the very
 * same digest: a changed file or other options give another digest and are
 * refused, and the key layer checks the signature against the certificate
 * before anything is embedded. Because the engine is the same, the result
 * is byte for byte what one run with the key would have written.
 */
#include <limits.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/pkcs7.h>

#include "asn1.h"
#include "core/codec.h"
#include "core/file.h"
#include "formats/format.h"
#include "keys/provider.h"
#include "nest.h"
#include "sign.h"

#define REQ_FORMAT  "hsmsign-signing-request"
#define REQ_VERSION 1
/* A request holds a chain of a few certificates: far below this. */
#define REQ_MAX (1024 * 1024)
#define SIG_MAX (64 * 1024)

/* The key of both steps: the chain, and either the recorded digest (step
 * one) or the digest expected with its signature (step two). */
struct det_key {
	STACK_OF(X509) * chain;
	enum hs_digest digest;
	uint8_t tbs[EVP_MAX_MD_SIZE];
	size_t tbs_len;
	bool recorded;
	const uint8_t *sig; /* step two: borrowed */
	size_t sig_len;
};

static int det_get_chain(struct hs_ctx *ctx, void *state, STACK_OF(X509) * *out)
{
	struct det_key *k = state;

	*out = X509_chain_up_ref(k->chain);
	return *out != NULL ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

/* Step one records the digest and stops the engine; step two answers with
 * the external signature if asked for the recorded digest. */
static int det_sign_digest(struct hs_ctx *ctx, void *state, const EVP_MD *md, const uint8_t *digest,
                           size_t digest_len, struct hs_buf *sig)
{
	struct det_key *k = state;
	int r;

	if (k->sig == NULL) {
		if (digest_len > sizeof(k->tbs))
			return hs_error_set(ctx, HS_ERR_CRYPTO, "digest too long");
		memcpy(k->tbs, digest, digest_len);
		k->tbs_len = digest_len;
		k->recorded = true;
		return hs_error_set(ctx, HS_ERR_CANCELLED, "signing request recorded");
	}
	if (hs_digest_md(k->digest) != md || digest_len != k->tbs_len ||
	    CRYPTO_memcmp(digest, k->tbs, digest_len) != 0)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "the file or the options changed since the signing request "
		                    "was made: its digest is not the one signed");
	if ((r = hs_buf_append(sig, k->sig, k->sig_len)) < 0)
		return hs_error_set(ctx, r, "out of memory");
	return 0;
}

static void det_free(void *state)
{
	struct det_key *k = state;

	if (k != NULL)
		sk_X509_pop_free(k->chain, X509_free);
	free(k);
}

static const struct hs_key_provider det_provider = {
        .name = "external",
        .get_chain = det_get_chain,
        .sign_digest = det_sign_digest,
        .free = det_free,
};

/* Wraps chain (taken over, also on failure) into a key; *state stays
 * valid until the key is freed. */
static int det_key_open(struct hs_ctx *ctx, STACK_OF(X509) * chain, struct hs_key **out,
                        struct det_key **state)
{
	struct det_key *k = calloc(1, sizeof(*k));

	*state = k;
	if (k == NULL) {
		sk_X509_pop_free(chain, X509_free);
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	k->chain = chain;
	return hs_key_new(ctx, out, &det_provider, k);
}

/* ------------------------------------------------------------- step one */

static int json_set_hex(json_t *obj, const char *name, const uint8_t *data, size_t len)
{
	char hex[2 * EVP_MAX_MD_SIZE + 1];

	if (len > EVP_MAX_MD_SIZE)
		return -1;
	for (size_t i = 0; i < len; i++)
		snprintf(hex + 2 * i, 3, "%02x", data[i]);
	hex[2 * len] = '\0';
	return json_object_set_new(obj, name, json_string(hex));
}

static int json_set_str(json_t *obj, const char *name, const char *value)
{
	return json_object_set_new(obj, name, value ? json_string(value) : json_null());
}

/* The chain as an array of base64 DER certificates, signer first. */
static json_t *req_certs_json(STACK_OF(X509) * chain)
{
	json_t *arr = json_array();

	for (int i = 0; arr != NULL && i < sk_X509_num(chain); i++) {
		unsigned char *der = NULL;
		int len = i2d_X509(sk_X509_value(chain, i), &der);
		struct hs_buf b64 = {0};

		if (len <= 0 || hs_base64_encode(&b64, der, (size_t)len, false) < 0 ||
		    hs_buf_append(&b64, "", 1) < 0 ||
		    json_array_append_new(arr, json_string((const char *)b64.data)) < 0) {
			json_decref(arr);
			arr = NULL;
		}
		OPENSSL_free(der);
		hs_buf_free(&b64);
	}
	return arr;
}

/* DigestInfo(md, tbs): what a raw RSA PKCS#1 v1.5 signer signs. */
static int req_set_digest_info(struct hs_ctx *ctx, json_t *root, const struct det_key *k)
{
	struct hs_buf di = {0}, b64 = {0};
	int r;

	if ((r = hs_key_digest_info(ctx, hs_digest_md(k->digest), k->tbs, k->tbs_len, &di)) < 0)
		goto out;
	if (hs_base64_encode(&b64, di.data, di.len, false) < 0 || hs_buf_append(&b64, "", 1) < 0 ||
	    json_set_str(root, "digest_info", (const char *)b64.data) < 0)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
out:
	hs_buf_free(&di);
	hs_buf_free(&b64);
	return r;
}

/* The request document (format in docs/cli.md). */
static int req_build(struct hs_ctx *ctx, const char *path, const struct hs_sign_opts *opts,
                     const struct det_key *k, const struct hs_indirect *ind, json_t **out)
{
	json_t *root = json_object();
	const char *base = strrchr(path, '/');
	int bad;

	*out = NULL;
	if (root == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	bad = json_set_str(root, "format", REQ_FORMAT) |
	      json_object_set_new(root, "version", json_integer(REQ_VERSION)) |
	      json_set_str(root, "file", base ? base + 1 : path) |
	      json_set_str(root, "digest", hs_digest_name(k->digest)) |
	      json_set_hex(root, "file_digest", ind->digest, ind->digest_len) |
	      json_set_hex(root, "to_be_signed", k->tbs, k->tbs_len) |
	      json_set_str(root, "description", opts->description) |
	      json_set_str(root, "description_url", opts->description_url) |
	      json_object_set_new(root, "page_hashes", json_boolean(opts->page_hashes)) |
	      json_object_set_new(root, "msi_dse", json_boolean(opts->msi_dse)) |
	      json_object_set_new(root, "script_encoding", json_integer(opts->script_encoding)) |
	      json_object_set_new(root, "certificates", req_certs_json(k->chain));
	if (bad) {
		json_decref(root);
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	*out = root;
	return 0;
}

/* Runs the engine up to the signature and records what it asked for. The
 * file is copied as when signing (into a scratch file next to the request,
 * removed again): some formats digest a copy differently (a new MSI
 * pre-hash), and the request must hold what signing will ask for. */
static int req_record(struct hs_ctx *ctx, struct hs_doc *doc, struct hs_key *key,
                      const struct hs_sign_opts *opts, const struct det_key *k,
                      const char *request_path)
{
	struct hs_out scratch = {.fd = -1};
	struct hs_buf p7 = {0};
	int r;

	if ((r = hs_out_open(ctx, &scratch, request_path, 0600)) < 0)
		return r;
	r = hs_sign_one(ctx, key, doc, opts, opts->digest, &scratch, &p7);
	hs_out_abort(&scratch);
	hs_buf_free(&p7);
	if (r == HS_ERR_CANCELLED && k->recorded) {
		hs_ctx_clear_error(ctx);
		return 0;
	}
	return r < 0 ? r : hs_error_set(ctx, HS_ERR_CRYPTO, "the engine asked for no signature");
}

/* The file's Authenticode digest as it stands (what 'hsmsign digest'
 * prints), for people who check what they sign. */
static int req_file_digest(struct hs_ctx *ctx, struct hs_doc *doc, const struct hs_sign_opts *opts,
                           struct hs_indirect *ind)
{
	struct hs_digest_params params = {.md = hs_digest_md(opts->digest),
	                                  .text_encoding = (int)opts->script_encoding};

	return doc->format->digest(ctx, doc->state, &params, ind, NULL);
}

static int req_write(struct hs_ctx *ctx, json_t *root, const char *request_path)
{
	struct hs_out out = {.fd = -1};
	char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	int r;

	if (text == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = hs_out_open(ctx, &out, request_path, 0644)) == 0 &&
	    (r = hs_out_write(ctx, &out, text, strlen(text))) == 0 &&
	    (r = hs_out_write(ctx, &out, "\n", 1)) == 0)
		r = hs_out_commit(ctx, &out);
	hs_out_abort(&out);
	free(text);
	return r;
}

static int req_check_opts(struct hs_ctx *ctx, const struct hs_sign_opts *opts)
{
	if (hs_digest_md(opts->digest) == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID, "unsupported digest algorithm");
	if (opts->append || (opts->nested_digests != NULL && opts->nested_digests[0] != 0))
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "a signing request makes one signature; nest more with "
		                    "'sign -as' after attaching");
	return 0;
}

int hs_request_create(struct hs_ctx *ctx, const char *path, const char *cert_file,
                      const struct hs_sign_opts *opts, const char *request_path)
{
	STACK_OF(X509) *chain = NULL;
	struct hs_indirect ind = {0};
	struct hs_key *key = NULL;
	struct det_key *k = NULL;
	struct hs_doc doc = {0};
	json_t *root = NULL;
	int r;

	if ((r = req_check_opts(ctx, opts)) < 0 || (r = hs_load_certs(ctx, cert_file, &chain)) < 0)
		return r;
	if ((r = det_key_open(ctx, chain, &key, &k)) < 0)
		goto out;
	k->digest = opts->digest;
	if ((r = hs_doc_open(ctx, &doc, path)) < 0)
		goto out;
	if ((r = req_record(ctx, &doc, key, opts, k, request_path)) < 0 ||
	    (r = req_file_digest(ctx, &doc, opts, &ind)) < 0 ||
	    (r = req_build(ctx, path, opts, k, &ind, &root)) < 0 ||
	    (r = req_set_digest_info(ctx, root, k)) < 0)
		goto out;
	r = req_write(ctx, root, request_path);
out:
	json_decref(root);
	hs_indirect_free(&ind);
	hs_doc_close(&doc);
	hs_key_free(key);
	return r;
}

/* ------------------------------------------------------------- step two */

/* A parsed request; strings are borrowed from root. */
struct det_request {
	json_t *root;
	struct hs_sign_opts opts;
	STACK_OF(X509) * chain;
	uint8_t tbs[EVP_MAX_MD_SIZE];
	size_t tbs_len;
};

static void req_free(struct det_request *req)
{
	json_decref(req->root);
	sk_X509_pop_free(req->chain, X509_free);
	memset(req, 0, sizeof(*req));
}

/* A string field, or "" when absent or not a string. */
static const char *req_str(json_t *root, const char *name)
{
	const char *s = json_string_value(json_object_get(root, name));

	return s != NULL ? s : "";
}

/* An optional string field: NULL when null or absent. */
static const char *req_opt_str(json_t *root, const char *name)
{
	return json_string_value(json_object_get(root, name));
}

static int req_load(struct hs_ctx *ctx, const char *path, json_t **out)
{
	struct hs_file f = {.fd = -1};
	struct hs_buf text = {0};
	int r;

	*out = NULL;
	if ((r = hs_file_open(ctx, &f, path)) < 0)
		return r;
	if (f.size > REQ_MAX) {
		r = hs_error_set(ctx, HS_ERR_FORMAT,
		                 "%s: %llu bytes, too large for a signing request", path,
		                 (unsigned long long)f.size);
		goto out;
	}
	if ((r = hs_buf_reserve(&text, (size_t)f.size + 1)) < 0) {
		r = hs_error_set(ctx, r, "out of memory");
		goto out;
	}
	if ((r = hs_file_pread(ctx, &f, text.data, (size_t)f.size, 0)) < 0)
		goto out;
	*out = json_loadb((const char *)text.data, (size_t)f.size, JSON_REJECT_DUPLICATES, NULL);
	if (*out == NULL || !json_is_object(*out) ||
	    strcmp(req_str(*out, "format"), REQ_FORMAT) != 0 ||
	    json_integer_value(json_object_get(*out, "version")) != REQ_VERSION)
		r = hs_error_set(ctx, HS_ERR_FORMAT,
		                 "%s: not an hsmsign signing request (version %d)", path,
		                 REQ_VERSION);
out:
	hs_buf_free(&text);
	hs_file_close(&f);
	return r;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes hex of exactly want bytes. */
static int req_hex(const char *hex, uint8_t *out, size_t want)
{
	if (strlen(hex) != 2 * want)
		return -1;
	for (size_t i = 0; i < want; i++) {
		int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static int req_chain(struct hs_ctx *ctx, json_t *certs, STACK_OF(X509) * *out)
{
	size_t n = json_array_size(certs);

	if (n == 0 || n > 16 || (*out = sk_X509_new_null()) == NULL)
		return hs_error_set(ctx, HS_ERR_FORMAT, "signing request: bad certificates");
	for (size_t i = 0; i < n; i++) {
		const char *b64 = json_string_value(json_array_get(certs, i));
		struct hs_buf der = {0};
		const unsigned char *p;
		X509 *x = NULL;

		if (b64 != NULL && hs_base64_decode(&der, b64, strlen(b64)) == 0 &&
		    der.len <= LONG_MAX) {
			p = der.data;
			x = d2i_X509(NULL, &p, (long)der.len);
		}
		hs_buf_free(&der);
		if (x == NULL || !sk_X509_push(*out, x)) {
			X509_free(x);
			return hs_error_set(ctx, HS_ERR_FORMAT,
			                    "signing request: certificate %zu "
			                    "is not valid base64 DER",
			                    i + 1);
		}
	}
	return 0;
}

static int req_parse(struct hs_ctx *ctx, const char *path, struct det_request *req)
{
	json_t *enc;
	const EVP_MD *md;
	int r;

	if ((r = req_load(ctx, path, &req->root)) < 0)
		return r;
	req->opts = (struct hs_sign_opts){.digest = HS_DIGEST_SHA256};
	if (hs_digest_from_name(&req->opts.digest, req_str(req->root, "digest")) < 0 ||
	    (md = hs_digest_md(req->opts.digest)) == NULL)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: unknown digest", path);
	req->tbs_len = (size_t)EVP_MD_get_size(md);
	if (req_hex(req_str(req->root, "to_be_signed"), req->tbs, req->tbs_len) < 0)
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: to_be_signed is not a %s digest in hex", path,
		                    hs_digest_name(req->opts.digest));
	enc = json_object_get(req->root, "script_encoding");
	if (!json_is_integer(enc) || json_integer_value(enc) < HS_TEXT_AUTO ||
	    json_integer_value(enc) > HS_TEXT_CP1252)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: bad script_encoding", path);
	req->opts.script_encoding = (enum hs_text_encoding)json_integer_value(enc);
	req->opts.description = req_opt_str(req->root, "description");
	req->opts.description_url = req_opt_str(req->root, "description_url");
	req->opts.page_hashes = json_is_true(json_object_get(req->root, "page_hashes"));
	req->opts.msi_dse = json_is_true(json_object_get(req->root, "msi_dse"));
	return req_chain(ctx, json_object_get(req->root, "certificates"), &req->chain);
}

/* Raw signature: the engine runs again and gets sig for the request's
 * digest (the key layer checks it against the certificate). */
static int attach_raw(struct hs_ctx *ctx, const char *path, const char *request_path,
                      const uint8_t *sig, size_t sig_len, const struct hs_sign_opts *opts)
{
	struct det_request req = {0};
	struct hs_key *key = NULL;
	struct det_key *k = NULL;
	int r;

	if ((r = req_parse(ctx, request_path, &req)) < 0)
		goto out;
	req.opts.output = opts->output;
	req.opts.timestamp = opts->timestamp;
	r = det_key_open(ctx, req.chain, &key, &k);
	req.chain = NULL; /* the key owns it */
	if (r < 0)
		goto out;
	k->digest = req.opts.digest;
	memcpy(k->tbs, req.tbs, req.tbs_len);
	k->tbs_len = req.tbs_len;
	k->sig = sig;
	k->sig_len = sig_len;
	r = hs_sign_file(ctx, key, path, &req.opts, NULL);
out:
	hs_key_free(key);
	req_free(&req);
	return r;
}

static bool attach_is_spc(const PKCS7 *inner)
{
	char oid[64];

	return inner->type != NULL && OBJ_obj2txt(oid, sizeof(oid), inner->type, 1) > 0 &&
	       strcmp(oid, HS_OID_SPC_INDIRECT_DATA) == 0;
}

/* Checks that the primary signature of the PKCS#7 der was made over doc as
 * it is now (its SpcIndirectDataContent digest); *md gets its algorithm. */
static int attach_check_p7(struct hs_ctx *ctx, struct hs_doc *doc, const uint8_t *der, size_t len,
                           const EVP_MD **md)
{
	struct hs_digest_params params = {0};
	struct hs_spc_indirect spc = {0};
	struct hs_indirect ind = {0};
	const unsigned char *p = der;
	PKCS7 *p7 = d2i_PKCS7(NULL, &p, (long)len);
	const PKCS7 *inner;
	int r;

	/* The type first: d.other is the live member only for types OpenSSL
	 * does not know, which SpcIndirectDataContent is. */
	if (p7 == NULL || !PKCS7_type_is_signed(p7) || p7->d.sign == NULL ||
	    (inner = p7->d.sign->contents) == NULL || !attach_is_spc(inner) ||
	    inner->d.other == NULL || inner->d.other->type != V_ASN1_SEQUENCE ||
	    inner->d.other->value.sequence == NULL) {
		r = hs_error_set(ctx, HS_ERR_FORMAT,
		                 "the signature is neither a PKCS#7 Authenticode SignedData nor "
		                 "used with --request");
		goto out;
	}
	if ((r = hs_nest_primary_md(ctx, der, len, md)) < 0 ||
	    (r = hs_spc_indirect_parse(ctx, &spc, inner->d.other->value.sequence->data,
	                               (size_t)inner->d.other->value.sequence->length)) < 0)
		goto out;
	params.md = hs_digest_md(hs_digest_from_nid(spc.digest_nid));
	if (params.md == NULL) {
		r = hs_error_set(ctx, HS_ERR_UNSUPPORTED, "unsupported file digest algorithm");
		goto out;
	}
	params.page_hash_nid = spc.page_hash_nid;
	if ((r = doc->format->digest(ctx, doc->state, &params, &ind, NULL)) < 0)
		goto out;
	if (ind.digest_len != spc.digest_len ||
	    CRYPTO_memcmp(ind.digest, spc.digest, spc.digest_len) != 0 ||
	    ind.page_hashes.len != spc.page_hashes.len ||
	    (ind.page_hashes.len > 0 &&
	     memcmp(ind.page_hashes.data, spc.page_hashes.data, ind.page_hashes.len) != 0))
		r = hs_error_set(ctx, HS_ERR_INVALID,
		                 "%s: the signature was made for different content (digest "
		                 "mismatch)",
		                 doc->in.path);
out:
	hs_indirect_free(&ind);
	hs_spc_indirect_free(&spc);
	PKCS7_free(p7);
	return r;
}

/* A whole PKCS#7 (from 'extract' of a file with the same content). */
static int attach_p7(struct hs_ctx *ctx, const char *path, const uint8_t *der, size_t len,
                     const char *output)
{
	struct hs_out out = {.fd = -1};
	struct hs_doc doc = {0};
	const EVP_MD *md = NULL;
	int r;

	if (len == 0 || len > SIG_MAX * 16)
		return hs_error_set(ctx, HS_ERR_FORMAT, "signature of %zu bytes", len);
	if ((r = hs_doc_open(ctx, &doc, path)) < 0)
		return r;
	if ((r = attach_check_p7(ctx, &doc, der, len, &md)) < 0 ||
	    (r = hs_out_open(ctx, &out, output ? output : path, doc.in.mode)) < 0 ||
	    (r = hs_doc_copy_unsigned(ctx, &doc, md, &out)) < 0 ||
	    (r = doc.format->embed(ctx, doc.state, der, len, &out)) < 0)
		goto out;
	out.source = &doc.in; /* refuse if it changed meanwhile */
	r = hs_out_commit(ctx, &out);
out:
	hs_out_abort(&out);
	hs_doc_close(&doc);
	return r;
}

int hs_attach_signature(struct hs_ctx *ctx, const char *path, const char *request_path,
                        const uint8_t *sig, size_t sig_len, const struct hs_sign_opts *opts)
{
	if (request_path == NULL)
		return attach_p7(ctx, path, sig, sig_len, opts->output);
	if (sig_len == 0 || sig_len > SIG_MAX)
		return hs_error_set(ctx, HS_ERR_INVALID, "a raw signature of %zu bytes", sig_len);
	return attach_raw(ctx, path, request_path, sig, sig_len, opts);
}

int hs_request_sign(struct hs_ctx *ctx, struct hs_key *key, const char *request_path, uint8_t **out,
                    size_t *out_len)
{
	struct det_request req = {0};
	struct hs_buf sig = {0};
	int r;

	*out = NULL;
	*out_len = 0;
	if ((r = req_parse(ctx, request_path, &req)) < 0)
		goto out;
	/* The request names the signer; another key's signature would only be
	 * refused by attach later. */
	if (X509_cmp(hs_key_signer(key), sk_X509_value(req.chain, 0)) != 0) {
		r = hs_error_set(ctx, HS_ERR_INVALID,
		                 "%s: the key's certificate is not the request's signer (%s)",
		                 request_path, hs_key_subject(key));
		goto out;
	}
	if ((r = hs_key_sign_digest(ctx, key, hs_digest_md(req.opts.digest), req.tbs, req.tbs_len,
	                            &sig)) == 0)
		hs_buf_detach(&sig, out, out_len);
out:
	hs_buf_free(&sig);
	req_free(&req);
	return r;
}
