/*
 * fuzz_serve.c - the `hsmsign serve` dispatcher (lib/serve/dispatch.c) with
 * arbitrary requests, no sockets. Input: byte 0 holds flags (bit 0: TLS,
 * bit 1: body truncated, bit 2: an mTLS subject); then "METHOD\nPATH\n",
 * header lines "Name: value\n" up to an empty line, and the body. The
 * service has a file key of each type and the API token "fuzz-token"; rate
 * limits are off so that every input reaches the routes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "serve_int.h"

#ifndef HS_FIXTURES_DIR
#define HS_FIXTURES_DIR "tests/fixtures"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct hs_serve *fz_service(void)
{
	static struct hs_serve *s;
	char hex[65], conf[4096];
	unsigned char md[32];
	const char *fx = getenv("HS_FIXTURES") ? getenv("HS_FIXTURES") : HS_FIXTURES_DIR;
	struct hs_ctx *ctx = NULL;
	json_t *root;

	if (s != NULL)
		return s;
	SHA256((const unsigned char *)"fuzz-token", 10, md);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	snprintf(conf, sizeof(conf),
	         "{\"listen\":\"127.0.0.1:0\",\"limits\":{\"requests_per_second_per_client\":0,"
	         "\"max_request_bytes\":4096},"
	         "\"api_tokens\":[{\"name\":\"f\",\"sha256\":\"%s\"}],\"keys\":{"
	         "\"rsa\":{\"provider\":\"file\",\"key\":\"%s/pki/leaf-rsa2048.key\","
	         "\"certificates\":[\"%s/pki/leaf-rsa2048-chain.pem\"],"
	         "\"allow\":[{\"api_token\":\"f\"},{\"mtls_subject\":\"CN=*\"}]},"
	         "\"ec\":{\"provider\":\"file\",\"key\":\"%s/pki/leaf-ec256.key\","
	         "\"certificates\":[\"%s/pki/leaf-ec256-chain.pem\"],"
	         "\"allow\":[{\"api_token\":\"f\"}]}}}",
	         hex, fx, fx, fx, fx);
	root = json_loads(conf, 0, NULL);
	if (root == NULL || hs_ctx_new(&ctx) < 0 ||
	    hs_serve_new_json(ctx, root, NULL, NULL, NULL, &s) < 0) {
		fprintf(stderr, "fuzz_serve: cannot create the service: %s\n",
		        ctx ? hs_ctx_message(ctx) : "out of memory");
		abort();
	}
	json_decref(root);
	hs_ctx_free(ctx);
	return s;
}

/* Next line of [*p, end) as a fresh string (without the newline). */
static char *fz_line(const uint8_t **p, const uint8_t *end)
{
	const uint8_t *nl = memchr(*p, '\n', (size_t)(end - *p));
	size_t n = nl ? (size_t)(nl - *p) : (size_t)(end - *p);
	char *s = strndup((const char *)*p, n);

	*p += n + (nl != NULL);
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hs_serve *s = fz_service();
	struct hs_serve_header headers[16];
	struct hs_serve_response resp = {0};
	struct hs_serve_request req = {0};
	char *lines[18] = {0};
	const uint8_t *p, *end = data + size;
	size_t n_lines = 0, n_headers = 0;

	if (size < 1)
		return 0;
	p = data + 1;
	lines[n_lines++] = fz_line(&p, end); /* method */
	lines[n_lines++] = fz_line(&p, end); /* path */
	while (p < end && n_headers < 16) {
		char *line = fz_line(&p, end), *colon;

		lines[n_lines++] = line;
		if (line == NULL || line[0] == '\0' || (colon = strchr(line, ':')) == NULL)
			break;
		*colon = '\0';
		headers[n_headers].name = line;
		headers[n_headers].value = colon[1] == ' ' ? colon + 2 : colon + 1;
		n_headers++;
	}
	req.method = lines[0];
	req.path = lines[1];
	req.headers = headers;
	req.n_headers = n_headers;
	req.body = p;
	req.body_len = (size_t)(end - p);
	req.tls = data[0] & 1;
	req.body_truncated = (data[0] & 2) != 0;
	req.client_cert_subject = (data[0] & 4) ? "CN=fuzz,O=Test" : NULL;
	req.client_addr = "192.0.2.1";
	if (req.method != NULL && req.path != NULL)
		hs_serve_handle_sync(s, &req, &resp);
	hs_serve_response_clear(&resp);
	for (size_t i = 0; i < n_lines; i++)
		free(lines[i]);
	return 0;
}
