/*
 * format.h - the interface every signable file format implements.
 *
 * A format knows file layouts and nothing about keys or HTTP. The engine
 * (lib/authenticode/) drives it:
 *
 *   probe -> open -> [extract] -> digest(copy to output) -> embed -> close
 *
 * `probe` is pure and looks only at the first bytes; only the winner opens
 * the file. `digest` reads the file once, streaming, and may copy the bytes
 * that survive into the output at the same time, so that `embed` completes
 * the signed file without reading the input again.
 */
#ifndef HS_FORMAT_H
#define HS_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "core/core.h"
#include "core/file.h"

/* Bytes handed to probe(); formats must decide from at most this many. */
#define HS_PROBE_LEN 4096

/* Room for the file digest: one hash, or a format's blob of tagged
 * hashes (APPX: 4 + 5 x (4 + 64) bytes at most). */
#define HS_INDIRECT_DIGEST_MAX 512

/* What the format contributes to SpcIndirectDataContent. */
struct hs_indirect {
	/* DER of SpcAttributeTypeAndOptionalValue (the `data` field). */
	struct hs_buf data_der;
	/* The Authenticode digest of the file. */
	uint8_t digest[HS_INDIRECT_DIGEST_MAX];
	size_t digest_len;
	/* Raw page hash table (PE), empty unless requested. */
	struct hs_buf page_hashes;
	int page_hash_nid; /* NID of the page hash digest, 0 if none */
	/* Formats whose signature covers content of their own rather than an
	 * SpcIndirectDataContent (catalogs: the CTL) set both: the engine then
	 * signs content_der byte for byte with contentType content_oid, and
	 * data_der/digest are unused. NULL/empty for every other format. */
	const char *content_oid;
	struct hs_buf content_der;
	/* The digest algorithm the format imposes (APPX: the block map's),
	 * used instead of the requested one; NULL for most formats. */
	const EVP_MD *md;
};

struct hs_digest_params {
	const EVP_MD *md;
	/* Page hashes: 0 none, else the NID of the page hash digest. */
	int page_hash_nid;
	/* MSI: create an MsiDigitalSignatureEx stream (authenticode.md 5.4). */
	int msi_dse;
	/* Scripts: enum hs_text_encoding of a file without a byte order mark
	 * (0: by file type). */
	int text_encoding;
	/* Catalog member hash: digest the file as it stands, without the
	 * changes signing would make (CAB: no reserve inserted). Formats for
	 * which both are the same ignore it. */
	int as_is;
};

struct hs_format {
	const char *name; /* "pe", ... */
	/* Pure: true if the first `len` bytes look like this format. */
	bool (*probe)(const uint8_t *head, size_t len);
	/* Parses and validates the file's structure; *state is freed by close. */
	int (*open)(struct hs_ctx *ctx, const struct hs_file *in, void **state);
	/* Whether the file carries a signature now. */
	bool (*is_signed)(void *state);
	/*
	 * Computes the Authenticode digest (and page hashes if asked) in one
	 * pass. With copy != NULL, also writes the unsigned image to copy.
	 */
	int (*digest)(struct hs_ctx *ctx, void *state, const struct hs_digest_params *params,
	              struct hs_indirect *out, struct hs_out *copy);
	/* After digest(copy=out): appends the signature and fixes headers. */
	int (*embed)(struct hs_ctx *ctx, void *state, const uint8_t *pkcs7, size_t len,
	             struct hs_out *out);
	/* Copies the embedded DER PKCS#7; HS_ERR_NOTFOUND if unsigned. */
	int (*extract)(struct hs_ctx *ctx, void *state, struct hs_buf *out);
	/* Writes the file without its signature to out. */
	int (*remove)(struct hs_ctx *ctx, void *state, struct hs_out *out);
	void (*close)(void *state);
	/* Optional (NULL for formats detected by content): true if the file
	 * name says this format. Asked only when no probe() claimed the
	 * content; scripts have no magic bytes, only extensions. */
	bool (*probe_name)(const char *path);
	/* Optional (NULL: nesting allowed): returns 0 when a signature made
	 * with nested_md may be nested in a primary signed with `primary`, else
	 * sets the error (catalogs cannot nest; MSI with MsiDigitalSignatureEx
	 * only with the primary's hash, authenticode.md 4). */
	int (*check_nesting)(struct hs_ctx *ctx, void *state,
	                     const struct hs_digest_params *primary, const EVP_MD *nested_md);
	/* Optional: refuses a signer the file cannot be signed by (APPX:
	 * manifest Publisher vs certificate subject), before any output. */
	int (*check_signer)(struct hs_ctx *ctx, void *state, X509 *signer);
	/* The signed file digest is a format-defined blob (APPX), not a
	 * single hash of the digest algorithm's size. */
	bool digest_blob;
	/* Signed with plain CMS over hs_indirect.content_der (id-data), not
	 * Authenticode (NuGet): authenticode/cms.c signs and verifies it. */
	bool plain_cms;
	/* An existing signature is replaced only when asked (--replace). */
	bool replace_explicit;
};

extern const struct hs_format hs_format_pe;
extern const struct hs_format hs_format_msi;
extern const struct hs_format hs_format_cab;
extern const struct hs_format hs_format_cat;
extern const struct hs_format hs_format_script;
extern const struct hs_format hs_format_appx;
extern const struct hs_format hs_format_nupkg;

/* Finds the format of an open file from its first bytes; HS_ERR_FORMAT if
 * none claims it. */
int hs_format_detect(struct hs_ctx *ctx, const struct hs_file *in, const struct hs_format **out);

void hs_indirect_free(struct hs_indirect *ind);

/* An input file opened and parsed by the format that claims it. */
struct hs_doc {
	struct hs_file in;
	const struct hs_format *format;
	void *state;
};

/* Opens path, detects its format and parses it. On failure everything is
 * released and the message is set. Close with hs_doc_close(). */
int hs_doc_open(struct hs_ctx *ctx, struct hs_doc *doc, const char *path);
/* Safe on a zeroed or failed doc. */
void hs_doc_close(struct hs_doc *doc);

#endif /* HS_FORMAT_H */
