/*
 * msi.c - Windows Installer packages (MSI, MSP, MST): OLE compound files
 * signed in the root stream \x05DigitalSignature (authenticode.md 5).
 *
 * The digest covers every stream's content, storages recursively, in the
 * order of the raw UTF-16LE names (cfb.c sorts them), each storage's CLSID
 * after its children; the two signature streams are left out. With an
 * \x05MsiDigitalSignatureEx stream the digest starts with that stream's
 * value, a pre-hash of the entries' metadata (names, sizes, state bits,
 * times). Signing rewrites the whole file compacted (cfb_write.c), so
 * digest(copy) only records what embed() must add.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "authenticode/asn1.h"
#include "formats/cfb.h"
#include "formats/format.h"

/* Real signatures are a few KiB to a few hundred KiB. */
#define MSI_MAX_SIGNATURE (64u * 1024 * 1024)

/* "\x05DigitalSignature" and "\x05MsiDigitalSignatureEx", UTF-16LE + NUL. */
static const uint8_t msi_ds_name[] = {
        0x05, 0, 'D', 0, 'i', 0, 'g', 0, 'i', 0, 't', 0, 'a', 0, 'l', 0, 'S', 0,
        'i',  0, 'g', 0, 'n', 0, 'a', 0, 't', 0, 'u', 0, 'r', 0, 'e', 0, 0,   0,
};
static const uint8_t msi_dse_name[] = {
        0x05, 0, 'M', 0, 's', 0, 'i', 0, 'D', 0, 'i', 0, 'g', 0, 'i', 0,
        't',  0, 'a', 0, 'l', 0, 'S', 0, 'i', 0, 'g', 0, 'n', 0, 'a', 0,
        't',  0, 'u', 0, 'r', 0, 'e', 0, 'E', 0, 'x', 0, 0,   0,
};

/* SpcSipInfo of the MSI SIP {000C10F1-0000-0000-C000-000000000046}, GUID
 * bytes as Windows stores them (authenticode.md 5.5). */
static const uint8_t msi_sip_guid[16] = {0xf1, 0x10, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00,
                                         0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x46};
#define MSI_SIP_VERSION 1

struct msi_state {
	struct hs_cfb cfb;
	int64_t ds;  /* entry of \x05DigitalSignature, or -1 */
	int64_t dse; /* entry of \x05MsiDigitalSignatureEx, or -1 */
	/* Set by digest(copy) for embed(): the pre-hash to store, if any. */
	bool copied;
	uint8_t dse_value[EVP_MAX_MD_SIZE];
	size_t dse_len;
};

static bool msi_probe(const uint8_t *head, size_t len)
{
	static const uint8_t magic[8] = {0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1};

	return len >= sizeof(magic) && memcmp(head, magic, sizeof(magic)) == 0;
}

static int msi_open(struct hs_ctx *ctx, const struct hs_file *in, void **state)
{
	struct msi_state *st = calloc(1, sizeof(*st));
	int r;

	*state = NULL;
	if (st == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = hs_cfb_open(ctx, &st->cfb, in)) < 0) {
		free(st);
		return r;
	}
	st->ds = hs_cfb_find_root_stream(&st->cfb, msi_ds_name, sizeof(msi_ds_name));
	st->dse = hs_cfb_find_root_stream(&st->cfb, msi_dse_name, sizeof(msi_dse_name));
	*state = st;
	return 0;
}

static bool msi_is_signed(void *state)
{
	const struct msi_state *st = state;

	return st->ds >= 0;
}

static void msi_close(void *state)
{
	struct msi_state *st = state;

	if (st == NULL)
		return;
	hs_cfb_close(&st->cfb);
	free(st);
}

static bool msi_is_signature_stream(const struct hs_cfb_entry *e)
{
	return e->type == HS_CFB_STREAM &&
	       ((e->name_len == sizeof(msi_ds_name) &&
	         memcmp(e->name, msi_ds_name, sizeof(msi_ds_name)) == 0) ||
	        (e->name_len == sizeof(msi_dse_name) &&
	         memcmp(e->name, msi_dse_name, sizeof(msi_dse_name)) == 0));
}

static int msi_md_sink(struct hs_ctx *ctx, void *arg, const uint8_t *data, size_t len)
{
	if (!EVP_DigestUpdate(arg, data, len))
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "hashing the package failed");
	return 0;
}

/* The content digest of one storage (authenticode.md 5.3): its streams
 * and storages in hash order, then its CLSID. */
static int msi_hash_storage(struct hs_ctx *ctx, const struct msi_state *st, EVP_MD_CTX *md,
                            uint32_t idx)
{
	const struct hs_cfb_entry *s = &st->cfb.entries[idx];
	int r;

	for (uint32_t i = 0; i < s->n_kids; i++) {
		uint32_t k = st->cfb.kids[s->first_kid + i];
		const struct hs_cfb_entry *e = &st->cfb.entries[k];

		if (idx == 0 && msi_is_signature_stream(e))
			continue;
		if (e->type == HS_CFB_STREAM)
			r = hs_cfb_read(ctx, &st->cfb, k, msi_md_sink, md);
		else
			r = msi_hash_storage(ctx, st, md, k);
		if (r < 0)
			return r;
	}
	return msi_md_sink(ctx, md, s->clsid, sizeof(s->clsid));
}

static void msi_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* One entry's metadata for the pre-hash (authenticode.md 5.4): the root
 * gives CLSID and state bits; a stream its name, size (low 32 bits), state
 * bits and times; a storage its name, CLSID, state bits and times. */
static int msi_prehash_entry(struct hs_ctx *ctx, EVP_MD_CTX *md, const struct hs_cfb_entry *e)
{
	uint8_t meta[HS_CFB_NAME_MAX + 16 + 4 + 16];
	size_t n = 0;

	if (e->type != HS_CFB_ROOT) {
		memcpy(meta, e->name, e->name_len - 2u);
		n = e->name_len - 2u;
	}
	if (e->type != HS_CFB_STREAM) {
		memcpy(meta + n, e->clsid, 16);
		n += 16;
	} else {
		msi_put32(meta + n, (uint32_t)e->size);
		n += 4;
	}
	msi_put32(meta + n, e->state_bits);
	n += 4;
	if (e->type != HS_CFB_ROOT) {
		memcpy(meta + n, e->ctime, 8);
		memcpy(meta + n + 8, e->mtime, 8);
		n += 16;
	}
	return msi_md_sink(ctx, md, meta, n);
}

/* The pre-hash walk: metadata of a storage before its children's. */
static int msi_prehash_storage(struct hs_ctx *ctx, const struct msi_state *st, EVP_MD_CTX *md,
                               uint32_t idx)
{
	const struct hs_cfb_entry *s = &st->cfb.entries[idx];
	int r;

	if ((r = msi_prehash_entry(ctx, md, s)) < 0)
		return r;
	for (uint32_t i = 0; i < s->n_kids; i++) {
		uint32_t k = st->cfb.kids[s->first_kid + i];
		const struct hs_cfb_entry *e = &st->cfb.entries[k];

		if (idx == 0 && msi_is_signature_stream(e))
			continue;
		if (e->type == HS_CFB_STREAM)
			r = msi_prehash_entry(ctx, md, e);
		else
			r = msi_prehash_storage(ctx, st, md, k);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Computes the MsiDigitalSignatureEx value into st->dse_value. */
static int msi_prehash(struct hs_ctx *ctx, struct msi_state *st, const EVP_MD *alg)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int len = 0;
	int r;

	if (md == NULL || !EVP_DigestInit_ex(md, alg, NULL)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot start the MSI pre-hash");
		goto out;
	}
	if ((r = msi_prehash_storage(ctx, st, md, 0)) < 0)
		goto out;
	if (!EVP_DigestFinal_ex(md, st->dse_value, &len)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot finish the MSI pre-hash");
		goto out;
	}
	st->dse_len = len;
	r = 0;
out:
	EVP_MD_CTX_free(md);
	return r;
}

/* The stored MsiDigitalSignatureEx, used as it is: Windows does not
 * re-derive it either (authenticode.md 5.4). */
static int msi_stored_dse(struct hs_ctx *ctx, struct msi_state *st, const EVP_MD *alg)
{
	struct hs_buf buf = {0};
	int r;

	if ((r = hs_cfb_read_all(ctx, &st->cfb, (uint32_t)st->dse, EVP_MAX_MD_SIZE, &buf)) < 0)
		goto out;
	if (buf.len != (size_t)EVP_MD_get_size(alg)) {
		r = hs_error_set(ctx, HS_ERR_FORMAT,
		                 "%s: MsiDigitalSignatureEx holds %zu bytes, not a %s digest",
		                 st->cfb.in.path, buf.len, EVP_MD_get0_name(alg));
		goto out;
	}
	memcpy(st->dse_value, buf.data, buf.len);
	st->dse_len = buf.len;
out:
	hs_buf_free(&buf);
	return r;
}

/*
 * H(dse ‖ content). Signing (copy != NULL) derives the pre-hash afresh when
 * asked for (--msi-dse) or when the input has one, so re-signing keeps the
 * package in the mode it was in; verifying uses the stored value.
 */
static int msi_file_digest(struct hs_ctx *ctx, struct msi_state *st,
                           const struct hs_digest_params *params, bool signing,
                           struct hs_indirect *out)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int len = 0;
	int r;

	st->dse_len = 0;
	if (signing && (params->msi_dse || st->dse >= 0))
		r = msi_prehash(ctx, st, params->md);
	else
		r = !signing && st->dse >= 0 ? msi_stored_dse(ctx, st, params->md) : 0;
	if (r < 0)
		goto out;
	if (md == NULL || !EVP_DigestInit_ex(md, params->md, NULL) ||
	    !EVP_DigestUpdate(md, st->dse_value, st->dse_len)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot start the MSI digest");
		goto out;
	}
	if ((r = msi_hash_storage(ctx, st, md, 0)) < 0)
		goto out;
	if (!EVP_DigestFinal_ex(md, out->digest, &len)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot finish the MSI digest");
		goto out;
	}
	out->digest_len = len;
	r = 0;
out:
	EVP_MD_CTX_free(md);
	return r;
}

static int msi_digest(struct hs_ctx *ctx, void *state, const struct hs_digest_params *params,
                      struct hs_indirect *out, struct hs_out *copy)
{
	struct msi_state *st = state;
	int r;

	hs_indirect_free(out);
	st->copied = false;
	if (params->page_hash_nid != 0)
		hs_log(ctx, HS_LOG_WARN, "%s: page hashes exist only for PE files; ignored",
		       st->cfb.in.path);
	if ((r = msi_file_digest(ctx, st, params, copy != NULL, out)) < 0)
		return r;
	if ((r = hs_spc_sip_info(ctx, &out->data_der, MSI_SIP_VERSION, msi_sip_guid, NULL)) < 0)
		return r;
	st->copied = copy != NULL;
	return 0;
}

/* Rewrites the package with the new signature (and pre-hash) streams. */
static int msi_embed(struct hs_ctx *ctx, void *state, const uint8_t *pkcs7, size_t len,
                     struct hs_out *out)
{
	struct msi_state *st = state;
	const struct hs_cfb_new_stream drop[] = {
	        {msi_ds_name, sizeof(msi_ds_name), NULL, 0},
	        {msi_dse_name, sizeof(msi_dse_name), NULL, 0},
	};
	const struct hs_cfb_new_stream add[] = {
	        {msi_ds_name, sizeof(msi_ds_name), pkcs7, len},
	        {msi_dse_name, sizeof(msi_dse_name), st->dse_value, st->dse_len},
	};

	if (!st->copied)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "internal: MSI embed needs digest(copy) first");
	if (len > MSI_MAX_SIGNATURE)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "%s: signature of %zu bytes is too large", st->cfb.in.path,
		                    len);
	st->copied = false;
	return hs_cfb_write(ctx, &st->cfb, out, drop, 2, add, st->dse_len > 0 ? 2 : 1);
}

static int msi_extract(struct hs_ctx *ctx, void *state, struct hs_buf *out)
{
	const struct msi_state *st = state;

	if (st->ds < 0)
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", st->cfb.in.path);
	if (st->cfb.entries[st->ds].size == 0)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: the DigitalSignature stream is empty",
		                    st->cfb.in.path);
	return hs_cfb_read_all(ctx, &st->cfb, (uint32_t)st->ds, MSI_MAX_SIGNATURE, out);
}

/* Both signature streams go: a pre-hash without a signature means nothing. */
static int msi_remove(struct hs_ctx *ctx, void *state, struct hs_out *out)
{
	const struct msi_state *st = state;
	const struct hs_cfb_new_stream drop[] = {
	        {msi_ds_name, sizeof(msi_ds_name), NULL, 0},
	        {msi_dse_name, sizeof(msi_dse_name), NULL, 0},
	};

	if (st->ds < 0)
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", st->cfb.in.path);
	return hs_cfb_write(ctx, &st->cfb, out, drop, 2, NULL, 0);
}

/* The pre-hash covers one digest algorithm, so with MsiDigitalSignatureEx a
 * nested signature must use the primary's (osslsigncode refuses likewise);
 * a new pre-hash cannot be made in the same run as nested signatures. */
static int msi_check_nesting(struct hs_ctx *ctx, void *state,
                             const struct hs_digest_params *primary, const EVP_MD *nested_md)
{
	const struct msi_state *st = state;

	if (st->dse < 0 && primary->msi_dse)
		return hs_error_set(
		        ctx, HS_ERR_UNSUPPORTED,
		        "%s: --msi-dse cannot be combined with nested signatures in one "
		        "run; sign with --msi-dse first, then append",
		        st->cfb.in.path);
	if (st->dse >= 0 && EVP_MD_get_type(nested_md) != EVP_MD_get_type(primary->md))
		return hs_error_set(
		        ctx, HS_ERR_UNSUPPORTED,
		        "%s: has MsiDigitalSignatureEx (%s), so a nested signature must "
		        "use the same digest, not %s",
		        st->cfb.in.path, EVP_MD_get0_name(primary->md),
		        EVP_MD_get0_name(nested_md));
	return 0;
}

const struct hs_format hs_format_msi = {
        .name = "msi",
        .probe = msi_probe,
        .open = msi_open,
        .is_signed = msi_is_signed,
        .digest = msi_digest,
        .embed = msi_embed,
        .extract = msi_extract,
        .remove = msi_remove,
        .close = msi_close,
        .check_nesting = msi_check_nesting,
};
