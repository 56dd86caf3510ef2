/*
 * asn1.h - the Authenticode ASN.1 structures (SpcIndirectDataContent and
 * friends, authenticode.md section 2) built and parsed with OpenSSL's ASN.1
 * templates, so that DER encoding rules come from libcrypto.
 */
#ifndef HS_ASN1_H
#define HS_ASN1_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "core/core.h"

/* Object identifiers used across the module (dotted text). */
#define HS_OID_SPC_INDIRECT_DATA             "1.3.6.1.4.1.311.2.1.4"
#define HS_OID_SPC_STATEMENT_TYPE            "1.3.6.1.4.1.311.2.1.11"
#define HS_OID_SPC_SP_OPUS_INFO              "1.3.6.1.4.1.311.2.1.12"
#define HS_OID_SPC_PE_IMAGE_DATA             "1.3.6.1.4.1.311.2.1.15"
#define HS_OID_SPC_SIPINFO                   "1.3.6.1.4.1.311.2.1.30"
#define HS_OID_SPC_CAB_DATA                  "1.3.6.1.4.1.311.2.1.25"
#define HS_OID_CTL                           "1.3.6.1.4.1.311.10.1"
#define HS_OID_SPC_INDIVIDUAL_SP_KEY_PURPOSE "1.3.6.1.4.1.311.2.1.21"
#define HS_OID_SPC_PAGE_HASHES_V1            "1.3.6.1.4.1.311.2.3.1"
#define HS_OID_SPC_PAGE_HASHES_V2            "1.3.6.1.4.1.311.2.3.2"
#define HS_OID_SPC_NESTED_SIGNATURE          "1.3.6.1.4.1.311.2.4.1"
#define HS_OID_SPC_RFC3161                   "1.3.6.1.4.1.311.3.3.1"

/*
 * DER of SpcAttributeTypeAndOptionalValue { SPC_PE_IMAGE_DATAOBJ,
 * SpcPeImageData } appended to out. Without a page hash table (table NULL)
 * the file link is the customary unicode "<<<Obsolete>>>"; with one, it is
 * the page-hash moniker (V1 for SHA-1 page hashes, V2 otherwise).
 */
int hs_spc_pe_data(struct hs_ctx *ctx, struct hs_buf *out, int page_hash_nid, const uint8_t *table,
                   size_t table_len);

/*
 * DER of SpcAttributeTypeAndOptionalValue { SPC_SIPINFO_OBJID, SpcSipInfo }
 * appended to out (authenticode.md 5.5, 7.3): SpcSipInfo ::= SEQUENCE {
 * version INTEGER, uuid OCTET STRING (the SIP GUID's 16 bytes as stored),
 * reserved1..5 INTEGER }. `reserved` NULL means all five are 0, as every
 * known SIP writes them.
 */
int hs_spc_sip_info(struct hs_ctx *ctx, struct hs_buf *out, long version, const uint8_t uuid[16],
                    const long reserved[5]);

/* DER of SpcAttributeTypeAndOptionalValue { oid, SpcLink file
 * "<<<Obsolete>>>" }: the `data` of CAB signatures (SPC_CAB_DATA_OBJID,
 * as osslsigncode writes it) and of flat-file catalog members. */
int hs_spc_obsolete_link_data(struct hs_ctx *ctx, struct hs_buf *out, const char *oid);

/* DER of SpcIndirectDataContent { data, DigestInfo { md, digest } }. */
int hs_spc_indirect_build(struct hs_ctx *ctx, struct hs_buf *out, const uint8_t *data_der,
                          size_t data_len, const EVP_MD *md, const uint8_t *digest,
                          size_t digest_len);

/* DER of SpcSpOpusInfo { programName (BMPString), moreInfo (url) }; either
 * may be NULL. */
int hs_spc_opus_info_build(struct hs_ctx *ctx, struct hs_buf *out, const char *description,
                           const char *url);

/* What verify needs from a parsed SpcIndirectDataContent. */
struct hs_spc_indirect {
	int digest_nid;      /* file digest algorithm */
	uint8_t digest[512]; /* file digest as signed (APPX: a blob of hashes) */
	size_t digest_len;
	char data_type[64];        /* dotted OID of data.type */
	struct hs_buf page_hashes; /* raw table, empty if none */
	int page_hash_nid;         /* NID_sha1 / NID_sha256 / 0 */
};

/* Parses DER SpcIndirectDataContent; HS_ERR_FORMAT when malformed. Free
 * the result's buffers with hs_spc_indirect_free(). */
int hs_spc_indirect_parse(struct hs_ctx *ctx, struct hs_spc_indirect *out, const uint8_t *der,
                          size_t len);
void hs_spc_indirect_free(struct hs_spc_indirect *spc);

/*
 * The bytes messageDigest covers: the contents octets of a DER value (its
 * tag and length removed, authenticode.md 2.3). Sets *content and *content_len
 * to point inside der. HS_ERR_FORMAT if der is not one well-formed TLV.
 */
int hs_der_contents(struct hs_ctx *ctx, const uint8_t *der, size_t len, const uint8_t **content,
                    size_t *content_len);

#endif /* HS_ASN1_H */
