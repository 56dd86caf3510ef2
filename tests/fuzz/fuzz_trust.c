/*
 * fuzz_trust.c - a CA file (--ca-file, SSL_CERT_FILE) read into a store of
 * trusted roots (core/trust.c): PEM blocks indexed by subject without
 * decoding, certificates decoded when a chain asks for them. Each input is
 * read as a CA file and the test PKI's leaf chain is verified against it,
 * which drives the lazy lookup over the input's subjects.
 * HS_FUZZ_CA names the test PKI's root.pem (scripts/fuzz); the leaf and
 * the intermediate are read from the same directory.
 */
#include <libgen.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/trust.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static X509 *read_pki(const char *name)
{
	const char *ca = getenv("HS_FUZZ_CA");
	char dir[4096], path[4200];
	FILE *f;
	X509 *x = NULL;

	if (ca == NULL || strlen(ca) >= sizeof(dir))
		return NULL;
	strcpy(dir, ca);
	snprintf(path, sizeof(path), "%s/%s", dirname(dir), name);
	if ((f = fopen(path, "r")) != NULL) {
		x = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
	}
	return x;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static X509 *leaf, *inter;
	static int ready;
	char path[64];
	int fd = fuzz_memfile(data, size, path, sizeof(path));
	X509_STORE *store;

	if (!ready) {
		ready = 1;
		leaf = read_pki("leaf-rsa2048.pem");
		inter = read_pki("intermediate.pem");
	}
	if (fd < 0 || !hs_trust_available()) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	store = hs_trust_load(path);
	if (store != NULL && leaf != NULL && inter != NULL) {
		STACK_OF(X509) *chain = sk_X509_new_null();
		X509_STORE_CTX *vctx = X509_STORE_CTX_new();

		if (chain != NULL && vctx != NULL && sk_X509_push(chain, inter) > 0 &&
		    X509_STORE_CTX_init(vctx, store, leaf, chain) == 1)
			X509_verify_cert(vctx);
		X509_STORE_CTX_free(vctx);
		sk_X509_free(chain); /* inter stays ours */
	}
	X509_STORE_free(store);
	close(fd);
	return 0;
}
