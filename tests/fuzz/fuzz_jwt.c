/*
 * fuzz_jwt.c - `hsmsign serve` authentication on untrusted input: bearer
 * tokens (JWT parsing, base64url, JSON, signature checks against a fixed
 * JWKS, claims; API tokens), JWKS documents, and allow rules and claims for
 * the policy matcher. The first byte picks the target:
 *   0: Authorization "Bearer <rest>" checked, then the policy on success
 *   1: <rest> installed as the issuer's JWKS, then a fixed token checked
 *   2: <rest> as a key's "allow" rules against fixed claims
 *   3: <rest> as the claims of an identity against fixed rules
 * Seeds (tests/fuzz/seeds/jwt) were signed by the keys of FUZZ_JWKS at
 * FUZZ_NOW; their private keys were thrown away.
 */
#include <stdlib.h>
#include <string.h>

#include "serve/authn.h"
#include "serve/oidc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NOW 1700000000

static const char FUZZ_JWKS[] =
        "{\"keys\": [{\"kty\": \"RSA\", \"use\": \"sig\", \"kid\": \"fuzz-rsa\", \"n\": \"r2-bX2J"
        "rzCJWB5na3UwPKbuBWJ8_IF3-yQ_ZhpfkRCrXFh6MP8Rb-6D337_JzPWvrV_3TshWqF30NspBMEQ-ba6EyayxWgV"
        "QC30dDBaII1O3LZ3TJpyWiuyHhjSyULiz9K5YciTPC7NEjs8T91ZQnMb5bknasU4I9JABfUDJUrXZCc71gtgWgAm"
        "dpsQDtc8P2GgqLBjAjeRlRPaaDxp77yqyIuGpnGUrapm-Rk9iQOcUyzbF-ihZG72WD0O73y3gYVKiMIT5v20jw-0"
        "1TN5aTyWWRnk5GYnMN1_UqOepaWhaozgaX3vxqdaxDGN5vKke9kRkwq67lJOzTJzF_Egmlw\", \"e\": \"AQAB"
        "\"}, {\"kty\": \"EC\", \"use\": \"sig\", \"kid\": \"fuzz-ec\", \"crv\": \"P-256\", \"x\""
        ": \"bGgbzxJ38wV9dmj0DusCm0OjKec0rgn2_JYnUni48U0\", \"y\": \"_4ZOTc-1wKPSXLAb1-LJyOv9g1Xh"
        "Mtr-FbjTPMIdb9U\"}]}";

/* sha256("fuzz-api-token") is configured as API token "ci". */
static const char FUZZ_CONFIG[] =
        "{\"issuers\":[{\"issuer\":\"https://issuer.fuzz\",\"audiences\":[\"hsmsign\"]}],"
        "\"api_tokens\":[{\"name\":\"ci\",\"sha256\":"
        "\"%s\"}]}";

static const char FUZZ_RULES[] =
        "[{\"iss\":\"https://issuer.fuzz\",\"repository\":\"acme/*\",\"ref\":\"refs/heads/main\"},"
        "{\"iss\":\"https://issuer.fuzz\",\"aud\":\"hsm*\",\"ref_protected\":\"true\"},"
        "{\"api_token\":\"ci\"},{\"mtls_subject\":\"CN=*,O=Acme\"}]";

static const char FUZZ_CLAIMS[] =
        "{\"iss\":\"https://issuer.fuzz\",\"sub\":\"repo:acme/app:ref:refs/heads/main\","
        "\"aud\":[\"x\",\"hsmsign\"],\"repository\":\"acme/app\",\"ref\":\"refs/heads/main\","
        "\"ref_protected\":true,\"repository_id\":74}";

/* The rs256 seed: checked against fuzzed JWKS documents. */
static const char FUZZ_TOKEN[] =
        "Bearer "
        "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZ1enotcnNhIn0.eyJpc3MiOiJodHRwczovL2lzc3Vlci5mdXp6IiwiYXVk"
        "IjoiaHNtc2lnbiIsInN1YiI6InJlcG86YWNtZS9hcHA6cmVmOnJlZnMvaGVhZHMvbWFpbiIsInJlcG9zaXRvcnki"
        "OiJhY21lL2FwcCIsInJlZiI6InJlZnMvaGVhZHMvbWFpbiIsImlhdCI6MTY5OTk5OTk5NSwibmJmIjoxNjk5OTk5"
        "OTk1LCJleHAiOjE3MDAwMDAzMDB9.ln_ipRZgQUwnbjSyk0s3rOPUcv7dj6BI0s8tC5fyMJZEgXoc0NfxQE44zBy"
        "X1LALLa71246MNnAD1GQoUkIJBwd1X96Tg2qmFj9CukHe4N2VpOYgFUqVPxZelFFo_dSDfF4IilqptFuM7zHIWvM"
        "clk2Dz-wbZi2NeRSTY6yZGzfd3moGRkTV86LeEiPuuaYzrylbKvS9TLB9sSqXxXG94SJr1CtOln5frElY7RsvhHK"
        "YLde5Tki-6IKH3smTqoU2nyxQUuRqZai4Vd72XLrl2SK6e0PGKpqoBFUM8iPY7iuOZ6-qM2-MJIjmctCLYuyqh9j"
        "TFGR-3cEs3zuZSIlX5w";

static int64_t fuzz_clock(void *arg)
{
	(void)arg;
	return FUZZ_NOW;
}

/* An authenticator with the fixed JWKS installed and the clock stopped. */
static struct hs_authn *fuzz_authn(struct hs_ctx *ctx)
{
	char config[512];
	unsigned char d[32];
	unsigned int n = 0;
	char hex[65];
	struct hs_authn *a = NULL;
	json_t *root;

	EVP_Digest("fuzz-api-token", 14, d, &n, EVP_sha256(), NULL);
	for (unsigned i = 0; i < n; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	snprintf(config, sizeof(config), FUZZ_CONFIG, hex);
	root = json_loads(config, 0, NULL);
	if (root == NULL || hs_authn_new(ctx, root, &a) < 0)
		abort();
	json_decref(root);
	hs_oidc_set_clock(hs_authn_oidc(a), fuzz_clock, NULL);
	if (hs_oidc_set_jwks(ctx, hs_authn_oidc(a), "https://issuer.fuzz", FUZZ_JWKS,
	                     sizeof(FUZZ_JWKS) - 1) < 0)
		abort();
	return a;
}

/* The policy: rules text against claims text (either may be invalid JSON). */
static void fuzz_policy(const char *rules_text, size_t rules_len, const char *claims_text,
                        size_t claims_len)
{
	json_t *rules = json_loadb(rules_text, rules_len, 0, NULL);
	struct hs_identity id = {.kind = "oidc", .name = "fuzz"};
	char why[256];

	id.claims = json_loadb(claims_text, claims_len, 0, NULL);
	(void)hs_policy_allows(rules, &id, why, sizeof(why));
	json_decref(rules);
	hs_identity_clear(&id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct hs_ctx *ctx;
	static struct hs_authn *fixed, *rekeyed;
	struct hs_identity id;
	json_t *rules;
	char *text, why[256];

	if (ctx == NULL) {
		if (hs_ctx_new(&ctx) < 0)
			abort();
		fixed = fuzz_authn(ctx);
		rekeyed = fuzz_authn(ctx);
	}
	if (size < 1 || (text = malloc(size + 7)) == NULL)
		return 0;
	memcpy(text, "Bearer ", 7);
	memcpy(text + 7, data + 1, size - 1);
	text[size + 6] = '\0';
	hs_ctx_clear_error(ctx);
	switch (data[0] % 4) {
	case 0:
		if (strlen(text) == size + 6 && hs_authn_check(ctx, fixed, text, NULL, &id) == 0) {
			rules = json_loads(FUZZ_RULES, 0, NULL);
			(void)hs_policy_allows(rules, &id, why, sizeof(why));
			json_decref(rules);
			hs_identity_clear(&id);
		}
		break;
	case 1:
		if (hs_oidc_set_jwks(ctx, hs_authn_oidc(rekeyed), "https://issuer.fuzz", text + 7,
		                     size - 1) == 0 &&
		    hs_authn_check(ctx, rekeyed, FUZZ_TOKEN, NULL, &id) == 0)
			hs_identity_clear(&id);
		break;
	case 2:
		fuzz_policy(text + 7, size - 1, FUZZ_CLAIMS, sizeof(FUZZ_CLAIMS) - 1);
		break;
	case 3:
		fuzz_policy(FUZZ_RULES, sizeof(FUZZ_RULES) - 1, text + 7, size - 1);
		break;
	}
	free(text);
	return 0;
}
