/*
 * fuzz_json.c - the parsers of remote answers: token responses (Entra, IMDS,
 * App Service, az), Entra/vault error bodies, JWT claims of OIDC tokens.
 * The first byte picks the parser so one corpus covers all of them.
 */
#include <stdlib.h>
#include <string.h>

#include "auth/source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hs_buf body = {0};
	char text[512], *jwt, *claim;
	char *token = NULL;
	int64_t exp = 0;

	if (size < 1 || hs_buf_append(&body, data + 1, size - 1) < 0)
		return 0;
	switch (data[0] % 4) {
	case 0:
		if (hs_auth_parse_token(NULL, "fuzz", &body, "access_token", &token, &exp) == 0)
			hs_secret_free(token);
		break;
	case 1:
		if (hs_auth_parse_token(NULL, "fuzz", &body, "accessToken", &token, &exp) == 0)
			hs_secret_free(token);
		break;
	case 2:
		hs_auth_error_text(text, sizeof(text), &body);
		break;
	case 3:
		if ((jwt = strndup((const char *)data + 1, size - 1)) != NULL) {
			claim = hs_jwt_claim(jwt, "sub");
			free(claim);
			(void)hs_jwt_exp(jwt);
			free(jwt);
		}
		break;
	}
	hs_buf_free(&body);
	return 0;
}
