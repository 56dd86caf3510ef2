/*
 * asn1.c - Authenticode ASN.1 structures as OpenSSL templates. Encoding and
 * decoding go through libcrypto's template engine (DER rules, SET sorting,
 * length forms) instead of hand-written TLV code.
 */
#include <string.h>

#include <openssl/asn1t.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "asn1.h"

/* The ASN.1 template macros are laid out by hand. */
/* clang-format off */
typedef struct {
	int type;
	union {
		ASN1_BMPSTRING *unicode;
		ASN1_IA5STRING *ascii;
	} value;
} SpcString;
DECLARE_ASN1_FUNCTIONS(SpcString)

ASN1_CHOICE(SpcString) = {
	ASN1_IMP_OPT(SpcString, value.unicode, ASN1_BMPSTRING, 0),
	ASN1_IMP_OPT(SpcString, value.ascii, ASN1_IA5STRING, 1),
} ASN1_CHOICE_END(SpcString)

typedef struct {
	ASN1_OCTET_STRING *classId;
	ASN1_OCTET_STRING *serializedData;
} SpcSerializedObject;
DECLARE_ASN1_FUNCTIONS(SpcSerializedObject)

ASN1_SEQUENCE(SpcSerializedObject) = {
	ASN1_SIMPLE(SpcSerializedObject, classId, ASN1_OCTET_STRING),
	ASN1_SIMPLE(SpcSerializedObject, serializedData, ASN1_OCTET_STRING),
} ASN1_SEQUENCE_END(SpcSerializedObject)

typedef struct {
	int type;
	union {
		ASN1_IA5STRING *url;
		SpcSerializedObject *moniker;
		SpcString *file;
	} value;
} SpcLink;
DECLARE_ASN1_FUNCTIONS(SpcLink)

ASN1_CHOICE(SpcLink) = {
	ASN1_IMP_OPT(SpcLink, value.url, ASN1_IA5STRING, 0),
	ASN1_IMP_OPT(SpcLink, value.moniker, SpcSerializedObject, 1),
	ASN1_EXP_OPT(SpcLink, value.file, SpcString, 2),
} ASN1_CHOICE_END(SpcLink)

typedef struct {
	ASN1_BIT_STRING *flags;
	SpcLink *file;
} SpcPeImageData;
DECLARE_ASN1_FUNCTIONS(SpcPeImageData)

ASN1_SEQUENCE(SpcPeImageData) = {
	ASN1_SIMPLE(SpcPeImageData, flags, ASN1_BIT_STRING),
	ASN1_EXP_OPT(SpcPeImageData, file, SpcLink, 0),
} ASN1_SEQUENCE_END(SpcPeImageData)

typedef struct {
	ASN1_OBJECT *type;
	ASN1_TYPE *value;
} SpcAttributeTypeAndOptionalValue;
DECLARE_ASN1_FUNCTIONS(SpcAttributeTypeAndOptionalValue)

ASN1_SEQUENCE(SpcAttributeTypeAndOptionalValue) = {
	ASN1_SIMPLE(SpcAttributeTypeAndOptionalValue, type, ASN1_OBJECT),
	ASN1_OPT(SpcAttributeTypeAndOptionalValue, value, ASN1_ANY),
} ASN1_SEQUENCE_END(SpcAttributeTypeAndOptionalValue)

typedef struct {
	X509_ALGOR *digestAlgorithm;
	ASN1_OCTET_STRING *digest;
} DigestInfo;
DECLARE_ASN1_FUNCTIONS(DigestInfo)

ASN1_SEQUENCE(DigestInfo) = {
	ASN1_SIMPLE(DigestInfo, digestAlgorithm, X509_ALGOR),
	ASN1_SIMPLE(DigestInfo, digest, ASN1_OCTET_STRING),
} ASN1_SEQUENCE_END(DigestInfo)

typedef struct {
	SpcAttributeTypeAndOptionalValue *data;
	DigestInfo *messageDigest;
} SpcIndirectDataContent;
DECLARE_ASN1_FUNCTIONS(SpcIndirectDataContent)

ASN1_SEQUENCE(SpcIndirectDataContent) = {
	ASN1_SIMPLE(SpcIndirectDataContent, data, SpcAttributeTypeAndOptionalValue),
	ASN1_SIMPLE(SpcIndirectDataContent, messageDigest, DigestInfo),
} ASN1_SEQUENCE_END(SpcIndirectDataContent)

typedef struct {
	SpcString *programName;
	SpcLink *moreInfo;
} SpcSpOpusInfo;
DECLARE_ASN1_FUNCTIONS(SpcSpOpusInfo)

ASN1_SEQUENCE(SpcSpOpusInfo) = {
	ASN1_EXP_OPT(SpcSpOpusInfo, programName, SpcString, 0),
	ASN1_EXP_OPT(SpcSpOpusInfo, moreInfo, SpcLink, 1),
} ASN1_SEQUENCE_END(SpcSpOpusInfo)

typedef struct {
	ASN1_INTEGER *version;
	ASN1_OCTET_STRING *uuid;
	ASN1_INTEGER *reserved1;
	ASN1_INTEGER *reserved2;
	ASN1_INTEGER *reserved3;
	ASN1_INTEGER *reserved4;
	ASN1_INTEGER *reserved5;
} SpcSipInfo;
DECLARE_ASN1_FUNCTIONS(SpcSipInfo)

ASN1_SEQUENCE(SpcSipInfo) = {
	ASN1_SIMPLE(SpcSipInfo, version, ASN1_INTEGER),
	ASN1_SIMPLE(SpcSipInfo, uuid, ASN1_OCTET_STRING),
	ASN1_SIMPLE(SpcSipInfo, reserved1, ASN1_INTEGER),
	ASN1_SIMPLE(SpcSipInfo, reserved2, ASN1_INTEGER),
	ASN1_SIMPLE(SpcSipInfo, reserved3, ASN1_INTEGER),
	ASN1_SIMPLE(SpcSipInfo, reserved4, ASN1_INTEGER),
	ASN1_SIMPLE(SpcSipInfo, reserved5, ASN1_INTEGER),
} ASN1_SEQUENCE_END(SpcSipInfo)

DEFINE_STACK_OF(ASN1_OCTET_STRING)

/* The page-hash attribute inside the moniker's serializedData:
 * SET { SEQUENCE { OID, SET { OCTET STRING table } } } */
typedef struct {
	ASN1_OBJECT *type;
	STACK_OF(ASN1_OCTET_STRING) *hashes;
} SpcPageHashAttr;
DECLARE_ASN1_FUNCTIONS(SpcPageHashAttr)

ASN1_SEQUENCE(SpcPageHashAttr) = {
	ASN1_SIMPLE(SpcPageHashAttr, type, ASN1_OBJECT),
	ASN1_SET_OF(SpcPageHashAttr, hashes, ASN1_OCTET_STRING),
} ASN1_SEQUENCE_END(SpcPageHashAttr)

typedef STACK_OF(SpcPageHashAttr) SpcPageHashSet;
DEFINE_STACK_OF(SpcPageHashAttr)
DECLARE_ASN1_FUNCTIONS(SpcPageHashSet)

ASN1_ITEM_TEMPLATE(SpcPageHashSet) =
	ASN1_EX_TEMPLATE_TYPE(ASN1_TFLG_SET_OF, 0, SpcPageHashSet, SpcPageHashAttr)
ASN1_ITEM_TEMPLATE_END(SpcPageHashSet)

IMPLEMENT_ASN1_FUNCTIONS(SpcString)
IMPLEMENT_ASN1_FUNCTIONS(SpcSerializedObject)
IMPLEMENT_ASN1_FUNCTIONS(SpcLink)
IMPLEMENT_ASN1_FUNCTIONS(SpcPeImageData)
IMPLEMENT_ASN1_FUNCTIONS(SpcAttributeTypeAndOptionalValue)
IMPLEMENT_ASN1_FUNCTIONS(DigestInfo)
IMPLEMENT_ASN1_FUNCTIONS(SpcIndirectDataContent)
IMPLEMENT_ASN1_FUNCTIONS(SpcSpOpusInfo)
IMPLEMENT_ASN1_FUNCTIONS(SpcPageHashAttr)
IMPLEMENT_ASN1_FUNCTIONS(SpcPageHashSet)
IMPLEMENT_ASN1_FUNCTIONS(SpcSipInfo)
        /* clang-format on */

        /* classId of the page-hash moniker (authenticode.md 1.6). */
        static const uint8_t page_hash_class_id[16] = {0xa6, 0xb5, 0x86, 0xd5, 0xb4, 0xa1,
                                                       0x24, 0x66, 0xae, 0x05, 0xa2, 0x17,
                                                       0xda, 0x8e, 0x60, 0xd6};

/* "<<<Obsolete>>>" as UTF-16BE, the customary SpcLink file name. */
static const char obsolete_ascii[] = "<<<Obsolete>>>";

/* Appends the DER of an ASN.1 value to out. i2d returns a fresh buffer. */
static int der_append(struct hs_ctx *ctx, struct hs_buf *out, const ASN1_VALUE *val,
                      const ASN1_ITEM *it)
{
	unsigned char *der = NULL;
	int len = ASN1_item_i2d((ASN1_VALUE *)val, &der, it);
	int r;

	if (len <= 0)
		return hs_error_ssl(ctx, HS_ERR_CRYPTO, "cannot encode %s", it->sname);
	r = hs_buf_append(out, der, (size_t)len);
	OPENSSL_free(der);
	return r < 0 ? hs_error_set(ctx, r, "out of memory") : 0;
}

/* Converts ASCII/UTF-8 text into a BMPString (UTF-16BE). */
static ASN1_BMPSTRING *bmp_from_utf8(const char *text)
{
	ASN1_STRING *s = NULL;

	if (ASN1_mbstring_copy(&s, (const unsigned char *)text, -1, MBSTRING_UTF8,
	                       B_ASN1_BMPSTRING) <= 0)
		return NULL;
	return s;
}

static SpcLink *link_obsolete_file(void)
{
	SpcLink *link = SpcLink_new();

	if (link == NULL)
		return NULL;
	link->type = 2;
	link->value.file = SpcString_new();
	if (link->value.file == NULL)
		goto fail;
	link->value.file->type = 0;
	link->value.file->value.unicode = bmp_from_utf8(obsolete_ascii);
	if (link->value.file->value.unicode == NULL)
		goto fail;
	return link;
fail:
	SpcLink_free(link);
	return NULL;
}

/* DER of the page-hash SET carried in the moniker's serializedData. */
static int page_hash_serialized(struct hs_ctx *ctx, struct hs_buf *out, int nid,
                                const uint8_t *table, size_t len)
{
	const char *oid = nid == NID_sha1 ? HS_OID_SPC_PAGE_HASHES_V1 : HS_OID_SPC_PAGE_HASHES_V2;
	SpcPageHashSet *set = sk_SpcPageHashAttr_new_null();
	SpcPageHashAttr *attr = SpcPageHashAttr_new();
	ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
	int r = HS_ERR_NOMEM;

	if (set == NULL || attr == NULL || os == NULL || len > INT32_MAX)
		goto out;
	attr->type = OBJ_txt2obj(oid, 1);
	if (attr->hashes == NULL) /* the template usually allocates it */
		attr->hashes = sk_ASN1_OCTET_STRING_new_null();
	if (attr->type == NULL || attr->hashes == NULL ||
	    !ASN1_OCTET_STRING_set(os, table, (int)len))
		goto out;
	if (!sk_ASN1_OCTET_STRING_push(attr->hashes, os))
		goto out;
	os = NULL;
	if (!sk_SpcPageHashAttr_push(set, attr))
		goto out;
	attr = NULL;
	r = der_append(ctx, out, (ASN1_VALUE *)set, ASN1_ITEM_rptr(SpcPageHashSet));
out:
	if (r == HS_ERR_NOMEM)
		hs_error_set(ctx, r, "out of memory");
	ASN1_OCTET_STRING_free(os);
	SpcPageHashAttr_free(attr);
	SpcPageHashSet_free(set);
	return r;
}

static SpcLink *link_page_hashes(struct hs_ctx *ctx, int nid, const uint8_t *table, size_t len)
{
	struct hs_buf ser = {0};
	SpcLink *link = SpcLink_new();
	SpcSerializedObject *obj;

	if (link == NULL || page_hash_serialized(ctx, &ser, nid, table, len) < 0)
		goto fail;
	link->type = 1;
	obj = link->value.moniker = SpcSerializedObject_new();
	if (obj == NULL || ser.len > INT32_MAX ||
	    !ASN1_OCTET_STRING_set(obj->classId, page_hash_class_id, sizeof(page_hash_class_id)) ||
	    !ASN1_OCTET_STRING_set(obj->serializedData, ser.data, (int)ser.len))
		goto fail;
	hs_buf_free(&ser);
	return link;
fail:
	hs_buf_free(&ser);
	SpcLink_free(link);
	return NULL;
}

/* Wraps the DER of `val` as the ANY value of a type-and-value pair. */
static int type_and_value(struct hs_ctx *ctx, struct hs_buf *out, const char *oid,
                          const ASN1_VALUE *val, const ASN1_ITEM *it)
{
	SpcAttributeTypeAndOptionalValue *tv = SpcAttributeTypeAndOptionalValue_new();
	ASN1_STRING *seq = NULL;
	int r = HS_ERR_NOMEM;

	if (tv == NULL)
		goto out;
	tv->type = OBJ_txt2obj(oid, 1);
	tv->value = ASN1_TYPE_new();
	if (tv->type == NULL || tv->value == NULL)
		goto out;
	if (ASN1_item_pack((void *)val, it, &seq) == NULL)
		goto out;
	ASN1_TYPE_set(tv->value, V_ASN1_SEQUENCE, seq);
	seq = NULL;
	r = der_append(ctx, out, (ASN1_VALUE *)tv,
	               ASN1_ITEM_rptr(SpcAttributeTypeAndOptionalValue));
out:
	if (r == HS_ERR_NOMEM)
		hs_error_set(ctx, r, "out of memory");
	ASN1_STRING_free(seq);
	SpcAttributeTypeAndOptionalValue_free(tv);
	return r;
}

int hs_spc_pe_data(struct hs_ctx *ctx, struct hs_buf *out, int page_hash_nid, const uint8_t *table,
                   size_t table_len)
{
	SpcPeImageData *pe = SpcPeImageData_new();
	int r = HS_ERR_NOMEM;

	if (pe == NULL)
		goto out;
	/* flags: an empty BIT STRING, as signtool writes (Windows ignores it). */
	if (!ASN1_BIT_STRING_set(pe->flags, NULL, 0))
		goto out;
	pe->flags->flags = ASN1_STRING_FLAG_BITS_LEFT;
	if (table != NULL)
		pe->file = link_page_hashes(ctx, page_hash_nid, table, table_len);
	else
		pe->file = link_obsolete_file();
	if (pe->file == NULL)
		goto out;
	r = type_and_value(ctx, out, HS_OID_SPC_PE_IMAGE_DATA, (ASN1_VALUE *)pe,
	                   ASN1_ITEM_rptr(SpcPeImageData));
out:
	if (r == HS_ERR_NOMEM)
		hs_error_set(ctx, r, "cannot build SpcPeImageData");
	SpcPeImageData_free(pe);
	return r;
}

int hs_spc_sip_info(struct hs_ctx *ctx, struct hs_buf *out, long version, const uint8_t uuid[16],
                    const long reserved[5])
{
	static const long zeros[5];
	SpcSipInfo *sip = SpcSipInfo_new();
	const long *res = reserved != NULL ? reserved : zeros;
	int r = HS_ERR_NOMEM;

	if (sip == NULL)
		goto out;
	if (!ASN1_INTEGER_set(sip->version, version) ||
	    !ASN1_OCTET_STRING_set(sip->uuid, uuid, 16) ||
	    !ASN1_INTEGER_set(sip->reserved1, res[0]) ||
	    !ASN1_INTEGER_set(sip->reserved2, res[1]) ||
	    !ASN1_INTEGER_set(sip->reserved3, res[2]) ||
	    !ASN1_INTEGER_set(sip->reserved4, res[3]) || !ASN1_INTEGER_set(sip->reserved5, res[4]))
		goto out;
	r = type_and_value(ctx, out, HS_OID_SPC_SIPINFO, (ASN1_VALUE *)sip,
	                   ASN1_ITEM_rptr(SpcSipInfo));
out:
	if (r == HS_ERR_NOMEM)
		hs_error_set(ctx, r, "cannot build SpcSipInfo");
	SpcSipInfo_free(sip);
	return r;
}

int hs_spc_obsolete_link_data(struct hs_ctx *ctx, struct hs_buf *out, const char *oid)
{
	SpcLink *link = link_obsolete_file();
	int r;

	if (link == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "cannot build SpcLink");
	r = type_and_value(ctx, out, oid, (ASN1_VALUE *)link, ASN1_ITEM_rptr(SpcLink));
	SpcLink_free(link);
	return r;
}

int hs_spc_indirect_build(struct hs_ctx *ctx, struct hs_buf *out, const uint8_t *data_der,
                          size_t data_len, const EVP_MD *md, const uint8_t *digest,
                          size_t digest_len)
{
	SpcIndirectDataContent *idc = SpcIndirectDataContent_new();
	const unsigned char *p = data_der;
	int r = HS_ERR_NOMEM;

	if (idc == NULL || data_len > INT32_MAX || digest_len > INT32_MAX)
		goto out;
	SpcAttributeTypeAndOptionalValue_free(idc->data);
	idc->data = d2i_SpcAttributeTypeAndOptionalValue(NULL, &p, (long)data_len);
	if (idc->data == NULL) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "internal: bad SpcIndirectData data");
		goto out;
	}
	/* Parameters NULL, as every Authenticode signer writes them. */
	if (!X509_ALGOR_set0(idc->messageDigest->digestAlgorithm, OBJ_nid2obj(EVP_MD_get_type(md)),
	                     V_ASN1_NULL, NULL) ||
	    !ASN1_OCTET_STRING_set(idc->messageDigest->digest, digest, (int)digest_len))
		goto out;
	r = der_append(ctx, out, (ASN1_VALUE *)idc, ASN1_ITEM_rptr(SpcIndirectDataContent));
out:
	if (r == HS_ERR_NOMEM)
		hs_error_set(ctx, r, "cannot build SpcIndirectDataContent");
	SpcIndirectDataContent_free(idc);
	return r;
}

int hs_spc_opus_info_build(struct hs_ctx *ctx, struct hs_buf *out, const char *description,
                           const char *url)
{
	SpcSpOpusInfo *opus = SpcSpOpusInfo_new();
	int r = HS_ERR_NOMEM;

	if (opus == NULL)
		goto out;
	if (description != NULL) {
		opus->programName = SpcString_new();
		if (opus->programName == NULL)
			goto out;
		opus->programName->type = 0;
		opus->programName->value.unicode = bmp_from_utf8(description);
		if (opus->programName->value.unicode == NULL) {
			r = hs_error_set(ctx, HS_ERR_INVALID, "description is not valid UTF-8");
			goto out;
		}
	}
	if (url != NULL) {
		opus->moreInfo = SpcLink_new();
		if (opus->moreInfo == NULL)
			goto out;
		opus->moreInfo->type = 0;
		opus->moreInfo->value.url = ASN1_IA5STRING_new();
		if (opus->moreInfo->value.url == NULL ||
		    !ASN1_STRING_set(opus->moreInfo->value.url, url, -1))
			goto out;
	}
	r = der_append(ctx, out, (ASN1_VALUE *)opus, ASN1_ITEM_rptr(SpcSpOpusInfo));
out:
	if (r == HS_ERR_NOMEM)
		hs_error_set(ctx, r, "cannot build SpcSpOpusInfo");
	SpcSpOpusInfo_free(opus);
	return r;
}

/* Finds the page hash table in a parsed SpcPeImageData, if any. */
static int parse_page_hashes(struct hs_ctx *ctx, struct hs_spc_indirect *out,
                             const SpcPeImageData *pe)
{
	const SpcSerializedObject *obj;
	const unsigned char *p;
	SpcPageHashSet *set = NULL;
	SpcPageHashAttr *attr;
	ASN1_OCTET_STRING *table;
	char oid[64];
	int r = 0;

	if (pe->file == NULL || pe->file->type != 1 || pe->file->value.moniker == NULL)
		return 0;
	obj = pe->file->value.moniker;
	if (obj->classId->length != (int)sizeof(page_hash_class_id) ||
	    memcmp(obj->classId->data, page_hash_class_id, sizeof(page_hash_class_id)) != 0)
		return 0;
	p = obj->serializedData->data;
	set = d2i_SpcPageHashSet(NULL, &p, obj->serializedData->length);
	if (set == NULL || sk_SpcPageHashAttr_num(set) != 1)
		goto malformed;
	attr = sk_SpcPageHashAttr_value(set, 0);
	if (sk_ASN1_OCTET_STRING_num(attr->hashes) != 1)
		goto malformed;
	OBJ_obj2txt(oid, sizeof(oid), attr->type, 1);
	if (strcmp(oid, HS_OID_SPC_PAGE_HASHES_V1) == 0)
		out->page_hash_nid = NID_sha1;
	else if (strcmp(oid, HS_OID_SPC_PAGE_HASHES_V2) == 0)
		out->page_hash_nid = NID_sha256;
	else
		goto malformed;
	table = sk_ASN1_OCTET_STRING_value(attr->hashes, 0);
	if ((r = hs_buf_append(&out->page_hashes, table->data, (size_t)table->length)) < 0)
		r = hs_error_set(ctx, r, "out of memory");
	goto out;
malformed:
	ERR_clear_error();
	r = hs_error_set(ctx, HS_ERR_FORMAT, "malformed page hashes in signature");
out:
	SpcPageHashSet_free(set);
	return r;
}

/* Pulls the SpcPeImageData out of `data` when data.type says PE. */
static int parse_pe_data(struct hs_ctx *ctx, struct hs_spc_indirect *out,
                         const SpcAttributeTypeAndOptionalValue *data)
{
	SpcPeImageData *pe;
	int r;

	if (strcmp(out->data_type, HS_OID_SPC_PE_IMAGE_DATA) != 0 || data->value == NULL)
		return 0;
	if (data->value->type != V_ASN1_SEQUENCE)
		return hs_error_set(ctx, HS_ERR_FORMAT, "SpcPeImageData is not a SEQUENCE");
	pe = ASN1_item_unpack(data->value->value.sequence, ASN1_ITEM_rptr(SpcPeImageData));
	if (pe == NULL) {
		ERR_clear_error();
		return hs_error_set(ctx, HS_ERR_FORMAT, "malformed SpcPeImageData in signature");
	}
	r = parse_page_hashes(ctx, out, pe);
	SpcPeImageData_free(pe);
	return r;
}

int hs_spc_indirect_parse(struct hs_ctx *ctx, struct hs_spc_indirect *out, const uint8_t *der,
                          size_t len)
{
	const unsigned char *p = der;
	SpcIndirectDataContent *idc = NULL;
	const ASN1_OCTET_STRING *dg;
	int r;

	memset(out, 0, sizeof(*out));
	if (len > INT32_MAX)
		return hs_error_set(ctx, HS_ERR_FORMAT, "SpcIndirectDataContent too large");
	idc = d2i_SpcIndirectDataContent(NULL, &p, (long)len);
	if (idc == NULL || p != der + len) {
		ERR_clear_error();
		r = hs_error_set(ctx, HS_ERR_FORMAT, "malformed SpcIndirectDataContent");
		goto out;
	}
	out->digest_nid = OBJ_obj2nid(idc->messageDigest->digestAlgorithm->algorithm);
	dg = idc->messageDigest->digest;
	if (dg->length <= 0 || (size_t)dg->length > sizeof(out->digest)) {
		r = hs_error_set(ctx, HS_ERR_FORMAT, "bad digest length %d in signature",
		                 dg->length);
		goto out;
	}
	memcpy(out->digest, dg->data, (size_t)dg->length);
	out->digest_len = (size_t)dg->length;
	OBJ_obj2txt(out->data_type, sizeof(out->data_type), idc->data->type, 1);
	r = parse_pe_data(ctx, out, idc->data);
out:
	SpcIndirectDataContent_free(idc);
	if (r < 0)
		hs_spc_indirect_free(out);
	return r;
}

void hs_spc_indirect_free(struct hs_spc_indirect *spc)
{
	hs_buf_free(&spc->page_hashes);
}

int hs_der_contents(struct hs_ctx *ctx, const uint8_t *der, size_t len, const uint8_t **content,
                    size_t *content_len)
{
	const unsigned char *p = der;
	long plen;
	int tag, xclass;
	int ret;

	if (len > INT32_MAX)
		return hs_error_set(ctx, HS_ERR_FORMAT, "DER value too large");
	ret = ASN1_get_object(&p, &plen, &tag, &xclass, (long)len);
	if ((ret & 0x80) || (ret & V_ASN1_CONSTRUCTED) == 0 || plen < 0 ||
	    (size_t)(p - der) + (size_t)plen != len) {
		ERR_clear_error();
		return hs_error_set(ctx, HS_ERR_FORMAT, "malformed DER value");
	}
	*content = p;
	*content_len = (size_t)plen;
	return 0;
}
