/* trust.c - the TLS roots shared by every HTTPS client (trust.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/err.h>

#include "core.h"
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

static X509_STORE *trust_load(const char *ca_file)
{
	X509_STORE *store = X509_STORE_new();
	const char *file = ca_file ? ca_file : trust_defaults.file;
	X509_LOOKUP *lookup;

	if (store == NULL || (file != NULL && X509_STORE_load_file(store, file) != 1))
		goto fail;
	if (trust_defaults.dir != NULL &&
	    ((lookup = X509_STORE_add_lookup(store, X509_LOOKUP_hash_dir())) == NULL ||
	     !X509_LOOKUP_add_dir(lookup, trust_defaults.dir, X509_FILETYPE_PEM)))
		goto fail;
	/* libcurl's default: an intermediate in the store is a trust anchor. */
	X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
	return store;
fail:
	ERR_clear_error();
	X509_STORE_free(store);
	return NULL;
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

	store = trust_load(ca_file);
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
