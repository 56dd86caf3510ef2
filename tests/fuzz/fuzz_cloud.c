/*
 * fuzz_cloud.c - the parsers of cloud KMS answers (lib/keys/cloud_parse.h):
 * Trusted Signing status bodies with their base64-of-base64 PKCS#7 chain,
 * Vault "vault:vN:" signatures, AWS STS XML. The first byte picks the
 * parser so one corpus covers all of them.
 */
#include <stdlib.h>
#include <string.h>

#include "keys/cloud_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hs_buf sig = {0};
	char *text;

	if (size < 1)
		return 0;
	switch (data[0] % 4) {
	case 0:
		(void)hs_trusted_parse_answer(NULL, 200, data + 1, size - 1);
		break;
	case 1:
		(void)hs_trusted_parse_answer(NULL, 202, data + 1, size - 1);
		break;
	case 2:
		if ((text = strndup((const char *)data + 1, size - 1)) != NULL) {
			(void)hs_vault_parse_signature(NULL, text, &sig);
			free(text);
		}
		hs_buf_free(&sig);
		break;
	case 3:
		(void)hs_aws_parse_sts(NULL, 200, data + 1, size - 1);
		break;
	}
	return 0;
}
