/* test_trust.c - the trusted roots shared by the HTTPS clients (core/trust.h):
 * read once per process, certificates decoded only when a chain needs them,
 * and chains verified against them exactly as against a fully read file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/core.h"
#include "core/trust.h"

static char *pki_file(const char *name)
{
	const char *fix = getenv("HS_FIXTURES");

	return fix ? hs_strprintf("%s/pki/%s", fix, name) : NULL;
}

static X509 *load_cert(const char *name)
{
	char *path = pki_file(name);
	FILE *f = path ? fopen(path, "r") : NULL;
	X509 *x;

	assert_non_null(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	free(path);
	assert_non_null(x);
	return x;
}

/* A temporary file made of the named fixtures' first certificates, each
 * written as `pem_name` blocks would be: "CERTIFICATE" or, with aux set,
 * OpenSSL's "TRUSTED CERTIFICATE". The caller unlinks and frees it. */
static char *roots_file(const char *const *names, bool aux)
{
	char *path = strdup("/tmp/hs-test-roots-XXXXXX");
	int fd = path ? mkstemp(path) : -1;
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;

	assert_non_null(f);
	/* Text between blocks, as in some distributions' bundles. */
	fputs("# test roots\n", f);
	for (; *names != NULL; names++) {
		X509 *x = load_cert(*names);

		assert_int_equal(aux ? PEM_write_X509_AUX(f, x) : PEM_write_X509(f, x), 1);
		X509_free(x);
	}
	fclose(f);
	return path;
}

/* How many certificates a store holds (decoded). */
static int store_certs(X509_STORE *store)
{
	STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(store);
	int n = 0;

	X509_STORE_lock(store);
	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++)
		n += X509_OBJECT_get_type(sk_X509_OBJECT_value(objs, i)) == X509_LU_X509;
	X509_STORE_unlock(store);
	return n;
}

/* X509_verify_cert of a leaf fixture with the test intermediate as the
 * untrusted chain, against store: 1 verified, 0 not. */
static int verify_leaf(X509_STORE *store, const char *leaf_name)
{
	X509 *leaf = load_cert(leaf_name), *inter = load_cert("intermediate.pem");
	STACK_OF(X509) *chain = sk_X509_new_null();
	X509_STORE_CTX *vctx = X509_STORE_CTX_new();
	int ok;

	assert_non_null(chain);
	assert_non_null(vctx);
	assert_true(sk_X509_push(chain, inter) > 0);
	assert_int_equal(X509_STORE_CTX_init(vctx, store, leaf, chain), 1);
	ok = X509_verify_cert(vctx);
	X509_STORE_CTX_free(vctx);
	sk_X509_pop_free(chain, X509_free);
	X509_free(leaf);
	return ok == 1;
}

/* Read once per process: every client gets the same store, including
 * after hs_tls_preload(); a file that cannot be read fails without
 * replacing what is cached. */
static void trust_store_read_once(void **state)
{
	char *root = pki_file("root.pem"), *chain = pki_file("leaf-rsa2048-chain.pem");
	X509_STORE *a, *b, *c;

	(void)state;
	if (root == NULL || !hs_trust_available())
		skip();
	assert_int_equal(hs_tls_preload(root), 0);
	a = hs_trust_store(root);
	b = hs_trust_store(root);
	assert_non_null(a);
	assert_ptr_equal(a, b);
	assert_true(verify_leaf(a, "leaf-rsa2048.pem"));
	assert_int_equal(hs_tls_preload("/nonexistent/roots.pem"), HS_ERR_IO);
	assert_null(hs_trust_store("/nonexistent/roots.pem"));
	c = hs_trust_store(root);
	assert_ptr_equal(c, a);
	X509_STORE_free(c);
	/* Another file: another store, with that file's certificates (the
	 * intermediate is a trust anchor: libcurl's partial-chain flag). */
	c = hs_trust_store(chain);
	assert_non_null(c);
	assert_ptr_not_equal(c, a);
	assert_true(verify_leaf(c, "leaf-ec256.pem"));
	X509_STORE_free(c);
	X509_STORE_free(b);
	X509_STORE_free(a);
	free(chain);
	free(root);
}

/* Opens the store of a file of the named roots; counts the certificates
 * decoded into it before and after two chains were verified against it. */
static void expect_decoded(const char *const *names, bool aux, int before, int after)
{
	char *path = roots_file(names, aux);
	X509_STORE *store = hs_trust_store(path);

	assert_non_null(store);
	assert_int_equal(store_certs(store), before);
	assert_true(verify_leaf(store, "leaf-rsa2048.pem"));
	assert_true(verify_leaf(store, "leaf-ec256.pem"));
	assert_int_equal(store_certs(store), after);
	X509_STORE_free(store);
	unlink(path);
	free(path);
}

/* A file of certificates is indexed, not decoded: a certificate enters the
 * store when a chain asks for its subject, once, and a root that is not
 * in the file is not trusted. */
static void trust_file_decoded_lazily(void **state)
{
	const char *const names[] = {"other-root.pem", "root.pem", NULL};
	const char *const others[] = {"other-root.pem", NULL};
	char *path;
	X509_STORE *store;

	(void)state;
	if (!hs_trust_available())
		skip();
	expect_decoded(names, false, 0, 1); /* root.pem alone */
	path = roots_file(others, false);
	store = hs_trust_store(path);
	assert_non_null(store);
	assert_false(verify_leaf(store, "leaf-rsa2048.pem"));
	X509_STORE_free(store);
	unlink(path);
	free(path);
}

/* 1 when the self-signed fixture `name` verifies against store (it is one
 * of its roots), else 0. */
static int root_in_store(X509_STORE *store, const char *name)
{
	X509 *root = load_cert(name);
	X509_STORE_CTX *vctx = X509_STORE_CTX_new();
	int ok;

	assert_non_null(vctx);
	assert_int_equal(X509_STORE_CTX_init(vctx, store, root, NULL), 1);
	ok = X509_verify_cert(vctx);
	X509_STORE_CTX_free(vctx);
	X509_free(root);
	return ok == 1;
}

/* The store hs_trust_load_from() builds: whether the test PKI's leaf
 * verifies (root.pem) and whether other-root.pem is one of its roots. */
static void expect_roots(const char *file, const char *bundle, const char *dir, bool leaf,
                         bool other)
{
	X509_STORE *store = hs_trust_load_from(file, bundle, dir);

	assert_non_null(store);
	assert_int_equal(verify_leaf(store, "leaf-rsa2048.pem"), leaf);
	assert_int_equal(root_in_store(store, "other-root.pem"), other);
	X509_STORE_free(store);
}

/* --ca-file adds to the system's roots. With a CA directory (Debian's
 * libcurl) the directory keeps them; with only a bundle (macOS, some
 * distributions) the bundle is read as well, indexed in the same store
 * as the given file; a bundle that cannot be read does not fail the
 * given file. Without --ca-file, the bundle alone. */
static void trust_ca_file_adds_to_bundle(void **state)
{
	const char *const mine[] = {"root.pem", NULL};
	const char *const system[] = {"other-root.pem", NULL};
	char *file = roots_file(mine, false), *bundle = roots_file(system, false);
	char dir[] = "/tmp/hs-test-cadir-XXXXXX";

	(void)state;
	assert_non_null(mkdtemp(dir));
	expect_roots(file, bundle, NULL, true, true);
	/* A CA directory (empty here) stands for the system's roots. */
	expect_roots(file, bundle, dir, true, false);
	expect_roots(file, "/nonexistent/bundle.pem", NULL, true, false);
	expect_roots(NULL, bundle, NULL, false, true);
	rmdir(dir);
	unlink(file);
	unlink(bundle);
	free(file);
	free(bundle);
}

/* Anything but plain certificates and the file is read whole, as OpenSSL
 * reads it: "TRUSTED CERTIFICATE" blocks carry trust settings. */
static void trust_file_with_aux_read_whole(void **state)
{
	const char *const names[] = {"other-root.pem", "root.pem", NULL};

	(void)state;
	if (!hs_trust_available())
		skip();
	expect_decoded(names, true, 2, 2);
}

static char *write_temp(const char *text)
{
	char *path = strdup("/tmp/hs-test-roots-XXXXXX");
	int fd = path ? mkstemp(path) : -1;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

/* What OpenSSL refuses to read, the index refuses too: no certificate, a
 * block that is not DER, bad base64. */
static void trust_file_bad_refused(void **state)
{
	static const char *const bad[] = {
	        "",
	        "no PEM here\n",
	        "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
	        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
	};

	(void)state;
	if (!hs_trust_available())
		skip();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *path = write_temp(bad[i]);

		assert_null(hs_trust_store(path));
		unlink(path);
		free(path);
	}
}

/* A FIFO is left to the connection: reading it ahead could block. */
static void trust_preload_skips_fifo(void **state)
{
	char path[] = "/tmp/hs-test-roots-XXXXXX";
	int fd = mkstemp(path);

	(void)state;
	if (!hs_trust_available())
		skip();
	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(hs_tls_preload(path), 0); /* returns: nothing opened it */
	unlink(path);
}

struct trust_race {
	const char *file;
	X509_STORE *store;
	int verified;
};

static void *trust_race_main(void *arg)
{
	struct trust_race *t = arg;

	t->store = hs_trust_store(t->file);
	t->verified = t->store != NULL && verify_leaf(t->store, "leaf-rsa2048.pem");
	return NULL;
}

/* Threads asking at once: one reads the file, the others wait for it; their
 * chains then decode the root once between them. */
static void trust_store_concurrent(void **state)
{
	const char *const names[] = {"other-root.pem", "root.pem", NULL};
	char *file = roots_file(names, false);
	struct trust_race t[8];
	pthread_t th[8];

	(void)state;
	if (!hs_trust_available())
		skip();
	for (int i = 0; i < 8; i++) {
		t[i].file = file;
		assert_int_equal(pthread_create(&th[i], NULL, trust_race_main, &t[i]), 0);
	}
	for (int i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 8; i++) {
		assert_non_null(t[i].store);
		assert_ptr_equal(t[i].store, t[0].store);
		assert_true(t[i].verified);
	}
	assert_int_equal(store_certs(t[0].store), 1);
	for (int i = 0; i < 8; i++)
		X509_STORE_free(t[i].store);
	unlink(file);
	free(file);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(trust_store_read_once),
	        cmocka_unit_test(trust_file_decoded_lazily),
	        cmocka_unit_test(trust_file_with_aux_read_whole),
	        cmocka_unit_test(trust_ca_file_adds_to_bundle),
	        cmocka_unit_test(trust_file_bad_refused),
	        cmocka_unit_test(trust_store_concurrent),
	        cmocka_unit_test(trust_preload_skips_fifo),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
