/*
 * fuzz_asn1.c - the Authenticode ASN.1 parsers and base64 decoding on
 * arbitrary bytes: SpcIndirectDataContent (with page hashes), DER contents
 * extraction, base64/base64url.
 */
#include "authenticode/asn1.h"
#include "core/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hs_spc_indirect spc;
	struct hs_buf b64 = {0};
	const uint8_t *content;
	size_t content_len;

	if (hs_spc_indirect_parse(NULL, &spc, data, size) == 0)
		hs_spc_indirect_free(&spc);
	hs_der_contents(NULL, data, size, &content, &content_len);
	hs_base64_decode(&b64, (const char *)data, size);
	hs_buf_free(&b64);
	return 0;
}
