/* trust.c - the TLS roots shared by every HTTPS client (trust.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "codec.h"
#include "core.h"
#include "curl_api.h"
#include "http.h"
#include "platform.h"
#include "trust.h"

/* libcurl's built-in CA file and directory (CURLINFO_CAINFO/CAPATH). */
static struct {
	pthread_once_t once;
	bool ok;
	char *file, *dir;
} trust_defaults = {.once = PTHREAD_ONCE_INIT};

/* The store of the last CA file asked for; `loading` while one thread
 * reads it, the others wait on `cond`. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool loading;
	char *file; /* NULL: the built-in bundle */
	X509_STORE *store;
} trust_cache = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static char *trust_strdup(const char *s, bool *ok)
{
	char *d = s ? strdup(s) : NULL;

	if (s != NULL && d == NULL)
		*ok = false;
	return d;
}

static void trust_defaults_init(void)
{
#if LIBCURL_VERSION_NUM >= 0x075400
	CURL *curl;
	char *file = NULL, *dir = NULL;

	if (!hs_http_global_init() || (curl = curl_easy_init()) == NULL)
		return;
	if (curl_easy_getinfo(curl, CURLINFO_CAINFO, &file) == CURLE_OK &&
	    curl_easy_getinfo(curl, CURLINFO_CAPATH, &dir) == CURLE_OK &&
	    curl_easy_setopt(curl, CURLOPT_SSL_CTX_FUNCTION, NULL) == CURLE_OK) {
		trust_defaults.ok = true;
		trust_defaults.file = trust_strdup(file, &trust_defaults.ok);
		trust_defaults.dir = trust_strdup(dir, &trust_defaults.ok);
	}
	curl_easy_cleanup(curl);
#endif
}

bool hs_trust_available(void)
{
	pthread_once(&trust_defaults.once, trust_defaults_init);
	return trust_defaults.ok;
}

const char *hs_trust_file_name(const char *ca_file)
{
	if (ca_file != NULL)
		return ca_file;
	return hs_trust_available() && trust_defaults.file ? trust_defaults.file
	                                                   : "libcurl's CA directory";
}

/*
 * A CA file read lazily. Decoding a certificate costs OpenSSL 3.0 about
 * 0.2 ms, most of it setting up a decoder for the public key, so reading a
 * system bundle of ~140 roots took ~30 ms, and the first connection of
 * every run waited for it. OpenSSL decodes lazily only from a hashed
 * directory (its by_dir lookup); a CA file it reads whole. Here the file's
 * PEM blocks are only base64-decoded and their subject names parsed; a
 * certificate is decoded and added to the store the first time a chain
 * asks for its subject, the way by_dir does. Anything but plain
 * certificates in the file (CRLs, OpenSSL's "TRUSTED CERTIFICATE" with
 * trust settings, PEM headers) and the file is read whole, as before.
 */
struct trust_cert {
	X509_NAME *subject;
	unsigned char *der; /* OPENSSL_malloc'd by PEM_read_bio */
	long len;
	bool added; /* in the store already, or not decodable */
};

struct trust_file {
	pthread_mutex_t lock; /* the certs' `added` flags */
	struct trust_cert *certs;
	size_t n, cap;
	struct trust_file *next; /* another file in the same store, or NULL */
};

/* Frees tf and the files chained after it. */
static void trust_file_free(struct trust_file *tf)
{
	while (tf != NULL) {
		struct trust_file *next = tf->next;

		for (size_t i = 0; i < tf->n; i++) {
			X509_NAME_free(tf->certs[i].subject);
			OPENSSL_free(tf->certs[i].der);
		}
		free(tf->certs);
		pthread_mutex_destroy(&tf->lock);
		free(tf);
		tf = next;
	}
}

/* The subject of a DER certificate, the rest left undecoded:
 * Certificate ::= SEQUENCE { tbsCertificate ::= SEQUENCE { [0] version
 * OPTIONAL, serialNumber, signature, issuer, validity, subject, ... }}. */
static X509_NAME *der_cert_subject(const unsigned char *der, long der_len)
{
	const uint8_t *p = der, *end = der + der_len;
	struct hs_der_item cert, tbs, field;

	if (!hs_der_next(&p, end, &cert))
		return NULL;
	p = cert.c;
	if (!hs_der_next(&p, cert.c + cert.len, &tbs))
		return NULL;
	p = tbs.c;
	end = tbs.c + tbs.len;
	for (int i = 0; i < 5; i++) {
		if (!hs_der_next(&p, end, &field))
			return NULL;
		if (i == 0 && field.tag != 0xa0)
			i++; /* no [0] version: this was the serial number */
	}
	return d2i_X509_NAME(NULL, &p, end - p);
}

static bool trust_file_add(struct trust_file *tf, unsigned char *der, long len)
{
	X509_NAME *subject;

	if (tf->n == tf->cap) {
		size_t cap = tf->cap ? tf->cap * 2 : 64;
		struct trust_cert *v = realloc(tf->certs, cap * sizeof(*v));

		if (v == NULL)
			return false;
		tf->certs = v;
		tf->cap = cap;
	}
	if ((subject = der_cert_subject(der, len)) == NULL)
		return false;
	tf->certs[tf->n++] = (struct trust_cert){.subject = subject, .der = der, .len = len};
	return true;
}

/* Indexes a CA file: 1 and *out when it holds certificates only, 0 when it
 * holds anything else (read it whole), -1 when it cannot be read. */
static int trust_file_index(const char *file, struct trust_file **out)
{
	struct trust_file *tf = calloc(1, sizeof(*tf));
	BIO *bio = BIO_new_file(file, "r");
	char *name = NULL, *header = NULL;
	unsigned char *data = NULL;
	unsigned long err;
	long len;
	int r = -1;

	*out = NULL;
	if (tf == NULL || bio == NULL || pthread_mutex_init(&tf->lock, NULL) != 0) {
		free(tf);
		tf = NULL;
		goto out;
	}
	while (PEM_read_bio(bio, &name, &header, &data, &len) == 1) {
		if ((strcmp(name, PEM_STRING_X509) != 0 &&
		     strcmp(name, PEM_STRING_X509_OLD) != 0) ||
		    header[0] != '\0') {
			r = 0;
			goto out;
		}
		if (!trust_file_add(tf, data, len))
			goto out;
		data = NULL; /* tf's now */
		OPENSSL_free(name);
		OPENSSL_free(header);
		name = header = NULL;
	}
	/* The end of the file, unless PEM_read_bio stopped at a bad block. */
	err = ERR_peek_last_error();
	if (tf->n > 0 && ERR_GET_LIB(err) == ERR_LIB_PEM &&
	    ERR_GET_REASON(err) == PEM_R_NO_START_LINE) {
		*out = tf;
		tf = NULL;
		r = 1;
	}
out:
	ERR_clear_error();
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(data);
	BIO_free(bio);
	trust_file_free(tf);
	return r;
}

/* Adds the certificates of tf named `name` to the store, once each. */
static void trust_file_add_named(struct trust_file *tf, X509_STORE *store, const X509_NAME *name)
{
	X509 *x;

	pthread_mutex_lock(&tf->lock);
	for (size_t i = 0; i < tf->n; i++) {
		struct trust_cert *c = &tf->certs[i];
		const unsigned char *p = c->der;

		if (c->added || X509_NAME_cmp(c->subject, name) != 0)
			continue;
		c->added = true;
		if ((x = d2i_X509(NULL, &p, c->len)) != NULL)
			X509_STORE_add_cert(store, x); /* a duplicate is refused, harmlessly */
		X509_free(x);
	}
	pthread_mutex_unlock(&tf->lock);
}

/* X509_LOOKUP get_by_subject: adds the files' certificates named `name`
 * to the store, then answers from the store, lending its reference as
 * OpenSSL's own lookups do (the caller takes one of its own). */
static int trust_file_by_subject(X509_LOOKUP *lu, X509_LOOKUP_TYPE type, const X509_NAME *name,
                                 X509_OBJECT *ret)
{
	struct trust_file *tf = X509_LOOKUP_get_method_data(lu);
	X509_STORE *store = X509_LOOKUP_get_store(lu);
	X509_OBJECT *found;
	X509 *x;
	int ok = 0;

	if (type != X509_LU_X509 || tf == NULL || store == NULL)
		return 0;
	ERR_set_mark();
	for (; tf != NULL; tf = tf->next)
		trust_file_add_named(tf, store, name);
	ERR_pop_to_mark();
	if (!X509_STORE_lock(store))
		return 0;
	found = X509_OBJECT_retrieve_by_subject(X509_STORE_get0_objects(store), type, name);
	if (found != NULL && (x = X509_OBJECT_get0_X509(found)) != NULL &&
	    X509_OBJECT_set1_X509(ret, x)) {
		X509_free(x); /* lent: the store keeps it */
		ok = 1;
	}
	X509_STORE_unlock(store);
	return ok;
}

static void trust_file_lookup_free(X509_LOOKUP *lu)
{
	trust_file_free(X509_LOOKUP_get_method_data(lu));
}

static X509_LOOKUP_METHOD *trust_file_method;
static pthread_once_t trust_file_method_once = PTHREAD_ONCE_INIT;

static void trust_file_method_init(void)
{
	X509_LOOKUP_METHOD *m = X509_LOOKUP_meth_new("hsmsign lazy CA file");

	if (m != NULL && X509_LOOKUP_meth_set_get_by_subject(m, trust_file_by_subject) &&
	    X509_LOOKUP_meth_set_free(m, trust_file_lookup_free))
		trust_file_method = m; /* for the life of the process */
	else
		X509_LOOKUP_meth_free(m);
}

/* Puts a CA file in the store: indexed for lazy decoding, or read whole. */
static bool trust_load_file(X509_STORE *store, const char *file)
{
	struct trust_file *tf;
	X509_LOOKUP *lookup;
	int r;

	pthread_once(&trust_file_method_once, trust_file_method_init);
	r = trust_file_method ? trust_file_index(file, &tf) : 0;
	if (r < 0)
		return false;
	if (r == 0)
		return X509_STORE_load_file(store, file) == 1;
	if ((lookup = X509_STORE_add_lookup(store, trust_file_method)) == NULL) {
		trust_file_free(tf);
		return false;
	}
	/* A store has one lookup per method (OpenSSL hands back the one added
	 * before): a second file joins the first one's chain. */
	tf->next = X509_LOOKUP_get_method_data(lookup);
	if (!X509_LOOKUP_set_method_data(lookup, tf)) {
		tf->next = NULL;
		trust_file_free(tf);
		return false;
	}
	return true;
}

X509_STORE *hs_trust_load_from(const char *ca_file, const char *default_file,
                               const char *default_dir)
{
	X509_STORE *store = X509_STORE_new();
	const char *file = ca_file ? ca_file : default_file;
	X509_LOOKUP *lookup;

	if (store == NULL || (file != NULL && !trust_load_file(store, file)))
		goto fail;
	/* --ca-file and SSL_CERT_FILE add roots to the system's (docs/cli.md).
	 * libcurl's CA directory keeps those where there is one (Debian); where
	 * libcurl has only a bundle (macOS with Homebrew's curl, some
	 * distributions), the bundle stays too. Its failure to load is not the
	 * caller's: the file asked for is in the store. */
	if (ca_file != NULL && default_dir == NULL && default_file != NULL &&
	    strcmp(ca_file, default_file) != 0 && !trust_load_file(store, default_file))
		ERR_clear_error();
	if (default_dir != NULL &&
	    ((lookup = X509_STORE_add_lookup(store, X509_LOOKUP_hash_dir())) == NULL ||
	     !X509_LOOKUP_add_dir(lookup, default_dir, X509_FILETYPE_PEM)))
		goto fail;
	/* libcurl's default: an intermediate in the store is a trust anchor. */
	X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
	return store;
fail:
	ERR_clear_error();
	X509_STORE_free(store);
	return NULL;
}

X509_STORE *hs_trust_load(const char *ca_file)
{
	return hs_trust_load_from(ca_file, trust_defaults.file, trust_defaults.dir);
}

static bool trust_same_file(const char *a, const char *b)
{
	return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

X509_STORE *hs_trust_store(const char *ca_file)
{
	X509_STORE *store = NULL;
	char *copy = NULL;
	bool ok = true;

	if (!hs_trust_available())
		return NULL;
	pthread_mutex_lock(&trust_cache.lock);
	while (trust_cache.loading)
		pthread_cond_wait(&trust_cache.cond, &trust_cache.lock);
	if (trust_cache.store != NULL && trust_same_file(trust_cache.file, ca_file)) {
		store = X509_STORE_up_ref(trust_cache.store) ? trust_cache.store : NULL;
		pthread_mutex_unlock(&trust_cache.lock);
		return store;
	}
	trust_cache.loading = true;
	pthread_mutex_unlock(&trust_cache.lock);

	store = hs_trust_load(ca_file);
	copy = trust_strdup(ca_file, &ok);

	pthread_mutex_lock(&trust_cache.lock);
	if (store != NULL && ok && X509_STORE_up_ref(store)) {
		X509_STORE_free(trust_cache.store);
		free(trust_cache.file);
		trust_cache.store = store; /* the cache's reference */
		trust_cache.file = copy;
		copy = NULL;
	}
	trust_cache.loading = false;
	pthread_cond_broadcast(&trust_cache.cond);
	pthread_mutex_unlock(&trust_cache.lock);
	free(copy);
	return store;
}

const char *hs_trust_ca_file(const char *configured)
{
	const char *env = getenv("SSL_CERT_FILE");

	return configured ? configured : env != NULL && *env != '\0' ? env : NULL;
}

int hs_tls_preload(const char *ca_file)
{
	const char *file;
	struct hs_os_stat st;
	X509_STORE *store;

	ca_file = hs_trust_ca_file(ca_file);
	if (!hs_trust_available())
		return 0;
	/* Only a regular file: reading a FIFO or a terminal could block, and
	 * the caller waits for this call before it exits. The first connection
	 * reads anything else. */
	file = ca_file ? ca_file : trust_defaults.file;
	if (file != NULL && hs_os_stat(file, &st) != 0)
		return HS_ERR_IO;
	if (file != NULL && !st.regular)
		return 0;
	store = hs_trust_store(ca_file);
	X509_STORE_free(store);
	return store != NULL ? 0 : HS_ERR_IO;
}
