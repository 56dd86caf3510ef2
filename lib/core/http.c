/* http.c - the HTTP client: libcurl with TLS always verified, bounded bodies, retries. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "curl_api.h"
#include "http.h"
#include "ratelimit.h"
#include "trust.h"

/* Largest response body we keep: Key Vault and Entra answers are a few KiB. */
#define HTTP_BODY_MAX ((size_t)4 * 1024 * 1024)
/* Longest header value we keep (WWW-Authenticate, Content-Type, Retry-After). */
#define HTTP_HEADER_MAX 8192
/* Exponential backoff stops growing here. */
#define HTTP_BACKOFF_CAP_MS     60000L
#define HTTP_CONNECT_TIMEOUT_MS 10000L
/* The Azure Instance Metadata Service: link-local, never routed, plain http. */
#define HTTP_IMDS_HOST "169.254.169.254"

/* Most idle easy handles kept for reuse; more threads simply make more. */
#define HTTP_POOL_MAX 64

/* Most connections kept open in the shared cache (about one per thread in flight). */
#define HTTP_MAX_CONNECTS 256

/* A transfer handed to the engine thread, on the submitting thread's stack. */
struct http_job {
	CURL *curl;
	CURLcode rc;
	bool done;
	pthread_cond_t cond; /* signalled under engine_lock when done */
	struct http_job *next;
};

/*
 * A client may be used by many threads at once: each request borrows an
 * easy handle from the pool and hands it to the engine, one thread that
 * drives every transfer of this client through one libcurl multi handle.
 * The multi handle's connection cache is what lets concurrent requests
 * reuse each other's connections and, when the server speaks HTTP/2, be
 * streams of one connection instead of one TLS connection per thread in
 * flight (docs/PERFORMANCE.md). TLS sessions and DNS answers are shared
 * through a share handle. The engine starts with the first request; if
 * its thread cannot start, each request runs on its own thread as before
 * (curl_easy_perform), which is slower, not wrong.
 */
struct hs_http {
	pthread_mutex_t pool_lock;
	CURL *idle[HTTP_POOL_MAX];
	int n_idle;
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	pthread_mutex_t engine_lock; /* the fields below */
	CURLM *multi;
	pthread_t engine;
	int engine_state; /* 0: not started, 1: running, -1: cannot start */
	bool engine_stop;
	struct http_job *pending, **pending_tail; /* submitted, not yet added */
	unsigned long requests;                   /* attempts sent, under pool_lock */
	pthread_mutex_t store_lock;               /* the two fields below */
	X509_STORE *store;                        /* trusted roots, see http_ssl_ctx() */
	bool store_failed;                        /* the roots could not be read */
	char *ca_file;
	char *user_agent;
	char *no_proxy; /* NO_PROXY plus the local hosts (tests, managed identity) */
	long timeout_ms;
	int max_retries;
	long max_total_ms;
	long backoff_base_ms;
	long max_retry_after_ms;
};

/* What one attempt captured besides the response. */
struct http_attempt {
	struct hs_http_response *resp;
	bool too_large;
	long retry_after_ms;   /* -1: no Retry-After header */
	long connect_code;     /* a proxy's answer to CONNECT when it failed, or 0 */
	bool proxy_tls_failed; /* the HTTPS proxy's certificate did not verify */
	char errbuf[CURL_ERROR_SIZE];
};

/* The parts of a URL we log and name in messages: never the query string. */
struct http_url {
	char origin[256]; /* scheme://host[:port] */
	char path[256];
	char host[200];
};

static pthread_once_t http_global_once = PTHREAD_ONCE_INIT;
static bool http_global_ok;
static char http_global_why[600];

static void http_global_init(void)
{
	char why[512];
	CURLcode rc;

	if (!hs_curl_api_load(why, sizeof(why))) {
		snprintf(http_global_why, sizeof(http_global_why),
		         "libcurl could not be loaded: %s (install libcurl, on Debian libcurl4)",
		         why);
		return;
	}
	if ((rc = curl_global_init(CURL_GLOBAL_DEFAULT)) != CURLE_OK) {
		snprintf(http_global_why, sizeof(http_global_why),
		         "libcurl initialisation failed: %s", curl_easy_strerror(rc));
		return;
	}
	http_global_ok = true;
}

bool hs_http_global_init(void)
{
	pthread_once(&http_global_once, http_global_init);
	return http_global_ok;
}

int hs_http_ready(struct hs_ctx *ctx)
{
	if (hs_http_global_init())
		return 0;
	return hs_error_set(ctx, HS_ERR_UNSUPPORTED, "%s", http_global_why);
}

static long http_now_ms(void)
{
	return (long)(hs_os_monotonic_us() / 1000);
}

static void http_sleep_ms(long ms)
{
	hs_os_sleep_us((int64_t)ms * 1000);
}

static char *http_strdup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

/* NO_PROXY (or no_proxy) extended with loopback and IMDS: CURLOPT_NOPROXY replaces the
 * environment's list, and a proxy must never see managed-identity or test traffic. */
static char *http_no_proxy(void)
{
	static const char local[] = "localhost,127.0.0.0/8,::1," HTTP_IMDS_HOST;
	const char *env = getenv("NO_PROXY");
	size_t n;
	char *list;

	if (env == NULL || *env == '\0')
		env = getenv("no_proxy");
	if (env != NULL && strcmp(env, "*") == 0)
		return strdup(env);
	n = (env ? strlen(env) + 1 : 0) + sizeof(local);
	if ((list = malloc(n)) != NULL)
		snprintf(list, n, "%s%s%s", env ? env : "", env && *env ? "," : "", local);
	return list;
}

static void http_share_lock(CURL *handle, curl_lock_data data, curl_lock_access access,
                            void *userptr)
{
	struct hs_http *http = userptr;

	(void)handle;
	(void)access;
	pthread_mutex_lock(&http->share_locks[data]);
}

static void http_share_unlock(CURL *handle, curl_lock_data data, void *userptr)
{
	struct hs_http *http = userptr;

	(void)handle;
	pthread_mutex_unlock(&http->share_locks[data]);
}

/* TLS sessions and DNS answers shared by the pool's handles (connections
 * live in the engine's multi handle). */
static CURLSH *http_share_new(struct hs_http *http)
{
	CURLSH *sh = curl_share_init();

	if (sh == NULL)
		return NULL;
	curl_share_setopt(sh, CURLSHOPT_LOCKFUNC, http_share_lock);
	curl_share_setopt(sh, CURLSHOPT_UNLOCKFUNC, http_share_unlock);
	curl_share_setopt(sh, CURLSHOPT_USERDATA, http);
	curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	return sh;
}

/* Engine thread: called under engine_lock when a transfer is over. */
static void http_job_finish(struct http_job *job, CURLcode rc)
{
	job->rc = rc;
	job->done = true;
	pthread_cond_signal(&job->cond);
}

/* Adds the submitted transfers to the multi handle. */
static void http_engine_take_pending(struct hs_http *http)
{
	struct http_job *job, *next;

	pthread_mutex_lock(&http->engine_lock);
	job = http->pending;
	http->pending = NULL;
	http->pending_tail = &http->pending;
	pthread_mutex_unlock(&http->engine_lock);
	for (; job != NULL; job = next) {
		next = job->next;
		curl_easy_setopt(job->curl, CURLOPT_PRIVATE, job);
		if (curl_multi_add_handle(http->multi, job->curl) != CURLM_OK) {
			pthread_mutex_lock(&http->engine_lock);
			http_job_finish(job, CURLE_OUT_OF_MEMORY);
			pthread_mutex_unlock(&http->engine_lock);
		}
	}
}

/* Hands finished transfers back to their threads. */
static void http_engine_reap(struct hs_http *http)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(http->multi, &left)) != NULL) {
		CURL *curl = msg->easy_handle;
		CURLcode rc = msg->data.result;
		struct http_job *job = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(curl, CURLINFO_PRIVATE, (char **)&job);
		curl_multi_remove_handle(http->multi, curl); /* msg is invalid now */
		pthread_mutex_lock(&http->engine_lock);
		http_job_finish(job, rc);
		pthread_mutex_unlock(&http->engine_lock);
	}
}

static void *http_engine_main(void *arg)
{
	struct hs_http *http = arg;
	int running = 0;

	for (;;) {
		bool stop;

		pthread_mutex_lock(&http->engine_lock);
		stop = http->engine_stop && http->pending == NULL && running == 0;
		pthread_mutex_unlock(&http->engine_lock);
		if (stop)
			break;
		http_engine_take_pending(http);
		curl_multi_perform(http->multi, &running);
		http_engine_reap(http);
		/* Sleeps until a socket is ready, a timeout is due, or a thread
		 * submits a transfer (curl_multi_wakeup). */
		curl_multi_poll(http->multi, NULL, 0, 1000, NULL);
	}
	return NULL;
}

/* Starts the engine once; false if it cannot run (then requests run on
 * their own threads). */
static bool http_engine_start(struct hs_http *http)
{
	bool running;

	pthread_mutex_lock(&http->engine_lock);
	if (http->engine_state == 0) {
		http->engine_state = -1;
		http->multi = curl_multi_init();
		if (http->multi != NULL) {
			curl_multi_setopt(http->multi, CURLMOPT_PIPELINING,
			                  (long)CURLPIPE_MULTIPLEX);
			/* Idle connections kept: about one per request in flight
			 * with HTTP/1.1 servers (libcurl's default is 4 per handle
			 * added, which is about that too, but bounded here). */
			curl_multi_setopt(http->multi, CURLMOPT_MAXCONNECTS,
			                  (long)HTTP_MAX_CONNECTS);
			if (pthread_create(&http->engine, NULL, http_engine_main, http) == 0)
				http->engine_state = 1;
		}
		if (http->engine_state < 0 && http->multi != NULL) {
			curl_multi_cleanup(http->multi);
			http->multi = NULL;
		}
	}
	running = http->engine_state > 0;
	pthread_mutex_unlock(&http->engine_lock);
	return running;
}

/* Every connection of this client gets the process's shared store of
 * trusted roots (trust.h), the client's reference taken on its first. */
static CURLcode http_ssl_ctx(CURL *curl, void *ssl_ctx, void *userdata)
{
	(void)curl;
	struct hs_http *http = userdata;
	CURLcode rc = CURLE_OK;

	pthread_mutex_lock(&http->store_lock);
	if (http->store == NULL && !http->store_failed) {
		http->store = hs_trust_store(http->ca_file);
		http->store_failed = http->store == NULL;
	}
	if (http->store != NULL)
		SSL_CTX_set1_cert_store(ssl_ctx, http->store); /* takes a reference */
	else
		rc = CURLE_SSL_CACERT_BADFILE;
	pthread_mutex_unlock(&http->store_lock);
	return rc;
}

/* The shared store where libcurl's TLS library takes one (OpenSSL), else
 * libcurl's own CA loading. */
static void http_set_trust(struct hs_http *http, CURL *curl)
{
	if (hs_trust_available() &&
	    curl_easy_setopt(curl, CURLOPT_SSL_CTX_FUNCTION, http_ssl_ctx) == CURLE_OK) {
		curl_easy_setopt(curl, CURLOPT_SSL_CTX_DATA, http);
		curl_easy_setopt(curl, CURLOPT_CAINFO, NULL);
		curl_easy_setopt(curl, CURLOPT_CAPATH, NULL);
	} else if (http->ca_file != NULL) {
		curl_easy_setopt(curl, CURLOPT_CAINFO, http->ca_file);
	}
}

/* Runs one transfer: on the engine, waiting for it, or right here. */
static CURLcode http_perform(struct hs_http *http, CURL *curl)
{
	struct http_job job = {.curl = curl};
	CURLcode rc;

	if (!http_engine_start(http) || pthread_cond_init(&job.cond, NULL) != 0)
		return curl_easy_perform(curl);
	pthread_mutex_lock(&http->engine_lock);
	*http->pending_tail = &job;
	http->pending_tail = &job.next;
	pthread_mutex_unlock(&http->engine_lock);
	curl_multi_wakeup(http->multi);
	pthread_mutex_lock(&http->engine_lock);
	while (!job.done)
		pthread_cond_wait(&job.cond, &http->engine_lock);
	rc = job.rc;
	pthread_mutex_unlock(&http->engine_lock);
	pthread_cond_destroy(&job.cond);
	return rc;
}

/* Stops the engine; every transfer has finished (the client is being
 * freed, so no thread is using it). */
static void http_engine_stop(struct hs_http *http)
{
	bool running;

	pthread_mutex_lock(&http->engine_lock);
	running = http->engine_state > 0;
	http->engine_stop = true;
	pthread_mutex_unlock(&http->engine_lock);
	if (running) {
		curl_multi_wakeup(http->multi);
		pthread_join(http->engine, NULL);
	}
	if (http->multi != NULL)
		curl_multi_cleanup(http->multi);
	http->multi = NULL;
}

/* Borrows an easy handle (a new one when none is idle); NULL: no memory. */
static CURL *http_take_handle(struct hs_http *http)
{
	CURL *curl = NULL;

	pthread_mutex_lock(&http->pool_lock);
	if (http->n_idle > 0)
		curl = http->idle[--http->n_idle];
	pthread_mutex_unlock(&http->pool_lock);
	return curl != NULL ? curl : curl_easy_init();
}

static void http_return_handle(struct hs_http *http, CURL *curl)
{
	if (curl == NULL)
		return;
	pthread_mutex_lock(&http->pool_lock);
	if (http->n_idle < HTTP_POOL_MAX) {
		http->idle[http->n_idle++] = curl;
		curl = NULL;
	}
	pthread_mutex_unlock(&http->pool_lock);
	if (curl != NULL)
		curl_easy_cleanup(curl);
}

unsigned long hs_http_request_count(struct hs_http *http)
{
	unsigned long n;

	pthread_mutex_lock(&http->pool_lock);
	n = http->requests;
	pthread_mutex_unlock(&http->pool_lock);
	return n;
}

/* Copies the common connection options into cfg. */
void hs_http_config_limits(struct hs_http_config *cfg, const char *ca_file, int max_retries,
                           long timeout_ms, long max_total_ms, long backoff_base_ms)
{
	cfg->ca_file = ca_file;
	cfg->max_retries = max_retries;
	cfg->timeout_ms = timeout_ms;
	cfg->max_total_ms = max_total_ms;
	cfg->backoff_base_ms = backoff_base_ms;
}

int hs_http_new(struct hs_ctx *ctx, struct hs_http **out, const struct hs_http_config *cfg)
{
	static const struct hs_http_config defaults = HS_HTTP_CONFIG_INIT;
	struct hs_http *http = NULL;
	const char *ca_file;
	int r;

	*out = NULL;
	if (cfg == NULL)
		cfg = &defaults;
	if ((r = hs_http_ready(ctx)) < 0)
		return r;
	if ((http = calloc(1, sizeof(*http))) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	ca_file = hs_trust_ca_file(cfg->ca_file);
	http->ca_file = http_strdup_or_null(ca_file);
	http->user_agent = strdup(cfg->user_agent ? cfg->user_agent : "hsmsign/" HS_VERSION);
	http->no_proxy = http_no_proxy();
	pthread_mutex_init(&http->pool_lock, NULL);
	pthread_mutex_init(&http->engine_lock, NULL);
	pthread_mutex_init(&http->store_lock, NULL);
	http->pending_tail = &http->pending;
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&http->share_locks[i], NULL);
	http->share = http_share_new(http);
	if (http->user_agent == NULL || http->no_proxy == NULL || http->share == NULL ||
	    (ca_file != NULL && http->ca_file == NULL)) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory creating the HTTP client");
		goto out;
	}
	http->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 30000;
	http->max_retries = cfg->max_retries < 0 ? 0 : cfg->max_retries == 0 ? 6 : cfg->max_retries;
	http->max_total_ms = cfg->max_total_ms > 0 ? cfg->max_total_ms : 120000;
	http->backoff_base_ms = cfg->backoff_base_ms > 0 ? cfg->backoff_base_ms : 1000;
	http->max_retry_after_ms = cfg->max_retry_after_ms > 0 ? cfg->max_retry_after_ms : 60000;
	*out = http;
	http = NULL;
	r = 0;
out:
	hs_http_free(http);
	return r;
}

void hs_http_free(struct hs_http *http)
{
	if (http == NULL)
		return;
	http_engine_stop(http);
	/* Handles go before the share handle they use. */
	while (http->n_idle > 0)
		curl_easy_cleanup(http->idle[--http->n_idle]);
	if (http->share != NULL)
		curl_share_cleanup(http->share);
	pthread_mutex_destroy(&http->pool_lock);
	pthread_mutex_destroy(&http->engine_lock);
	pthread_mutex_destroy(&http->store_lock);
	X509_STORE_free(http->store);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&http->share_locks[i]);
	free(http->ca_file);
	free(http->user_agent);
	free(http->no_proxy);
	free(http);
}

void hs_http_response_free(struct hs_http_response *resp)
{
	if (resp == NULL)
		return;
	/* Bodies may carry access tokens: always wipe. */
	hs_buf_free_secret(&resp->body);
	free(resp->www_authenticate);
	free(resp->content_type);
	resp->www_authenticate = NULL;
	resp->content_type = NULL;
}

/* Splits url into the parts we may show; false if curl cannot parse it. */
static bool http_url_parts(const char *url, struct http_url *parts, char *scheme, size_t scheme_len)
{
	CURLU *u = curl_url();
	char *s = NULL, *host = NULL, *port = NULL, *path = NULL;
	bool ok = false;

	memset(parts, 0, sizeof(*parts));
	if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
		goto out;
	if (curl_url_get(u, CURLUPART_SCHEME, &s, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
		goto out;
	curl_url_get(u, CURLUPART_PORT, &port, 0);
	curl_url_get(u, CURLUPART_PATH, &path, 0);
	snprintf(scheme, scheme_len, "%s", s);
	snprintf(parts->host, sizeof(parts->host), "%s", host);
	snprintf(parts->origin, sizeof(parts->origin), "%s://%s%s%s", s, host, port ? ":" : "",
	         port ? port : "");
	snprintf(parts->path, sizeof(parts->path), "%s", path ? path : "/");
	ok = true;
out:
	curl_free(s);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	return ok;
}

/* True when a host name (as curl parses it, IPv6 in brackets) is loopback. */
static bool http_host_is_loopback(const char *host)
{
	char inner[64];
	size_t n = strlen(host);

	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (strchr(host, ':') == NULL)
		return hs_os_ip_is_loopback(host); /* IPv4 */
	if (n > 2 && n < sizeof(inner) && host[0] == '[' && host[n - 1] == ']') {
		memcpy(inner, host + 1, n - 2);
		inner[n - 2] = '\0';
		return strchr(inner, ':') != NULL && hs_os_ip_is_loopback(inner);
	}
	return false;
}

bool hs_http_is_loopback_url(const char *url)
{
	struct http_url parts;
	char scheme[16];

	if (url == NULL || !hs_http_global_init() ||
	    !http_url_parts(url, &parts, scheme, sizeof(scheme)))
		return false;
	if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)
		return false;
	return http_host_is_loopback(parts.host);
}

char *hs_http_urlencode(const char *s)
{
	char *escaped, *copy;

	if (s == NULL || strlen(s) > INT32_MAX || !hs_http_global_init())
		return NULL;
	escaped = curl_easy_escape(NULL, s, (int)strlen(s));
	if (escaped == NULL)
		return NULL;
	copy = strdup(escaped);
	OPENSSL_cleanse(escaped, strlen(escaped));
	curl_free(escaped);
	return copy;
}

/* Body sink: stops the transfer past HTTP_BODY_MAX. */
static size_t http_write_cb(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct http_attempt *at = userdata;
	struct hs_buf *body = &at->resp->body;
	size_t n = size * nmemb;

	if (n > HTTP_BODY_MAX - body->len) {
		at->too_large = true;
		return 0;
	}
	/* Keep one spare byte for the terminating NUL. */
	if (hs_buf_reserve(body, n + 1) < 0)
		return 0;
	memcpy(body->data + body->len, data, n);
	body->len += n;
	body->data[body->len] = '\0';
	return n;
}

/* Retry-After: delta-seconds or an HTTP date; -1 when unparsable. */
static long http_parse_retry_after(const char *value)
{
	char *end;
	long long secs;
	time_t when, now;

	if (*value >= '0' && *value <= '9') {
		errno = 0;
		secs = strtoll(value, &end, 10);
		if (errno != 0 || secs > 86400L * 365)
			secs = 86400L * 365;
		return (long)secs * 1000;
	}
	when = curl_getdate(value, NULL);
	if (when == -1)
		return -1;
	now = time(NULL);
	return when > now ? (long)(when - now) * 1000 : 0;
}

/* Header sink: keeps WWW-Authenticate, Content-Type and Retry-After of the last response. */
static size_t http_header_cb(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct http_attempt *at = userdata;
	size_t n = size * nmemb, name_len;
	const char *colon, *value, *end;
	char **slot = NULL;
	char tmp[64];

	if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		/* A new response (after 100 Continue or a proxy CONNECT): start over. */
		free(at->resp->www_authenticate);
		free(at->resp->content_type);
		at->resp->www_authenticate = at->resp->content_type = NULL;
		at->resp->date = 0;
		at->retry_after_ms = -1;
		return n;
	}
	colon = memchr(data, ':', n);
	if (colon == NULL)
		return n;
	name_len = (size_t)(colon - data);
	value = colon + 1;
	end = data + n;
	while (value < end && (*value == ' ' || *value == '\t'))
		value++;
	while (end > value && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	if ((size_t)(end - value) > HTTP_HEADER_MAX)
		return n;
	if (name_len == 16 && strncasecmp(data, "WWW-Authenticate", 16) == 0) {
		if (at->resp->www_authenticate == NULL)
			slot = &at->resp->www_authenticate;
	} else if (name_len == 12 && strncasecmp(data, "Content-Type", 12) == 0) {
		free(at->resp->content_type);
		at->resp->content_type = NULL;
		slot = &at->resp->content_type;
	} else if (name_len == 11 && strncasecmp(data, "Retry-After", 11) == 0 &&
	           (size_t)(end - value) < sizeof(tmp)) {
		memcpy(tmp, value, (size_t)(end - value));
		tmp[end - value] = '\0';
		at->retry_after_ms = http_parse_retry_after(tmp);
	} else if (name_len == 4 && strncasecmp(data, "Date", 4) == 0 &&
	           (size_t)(end - value) < sizeof(tmp)) {
		memcpy(tmp, value, (size_t)(end - value));
		tmp[end - value] = '\0';
		at->resp->date = curl_getdate(tmp, NULL);
		if (at->resp->date < 0)
			at->resp->date = 0;
	}
	if (slot != NULL)
		*slot = strndup(value, (size_t)(end - value));
	return n;
}

/* Sets the method and body; the body is not copied (it may be a secret). */
static void http_set_method(CURL *curl, const struct hs_http_request *req)
{
	const char *method = req->method ? req->method : "GET";
	bool has_body = req->body != NULL || strcmp(method, "POST") == 0 ||
	                strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0;

	if (strcmp(method, "GET") == 0 && req->body == NULL) {
		curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
		return;
	}
	if (strcmp(method, "HEAD") == 0) {
		curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
		return;
	}
	if (has_body) {
		curl_easy_setopt(curl, CURLOPT_POST, 1L);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS,
		                 req->body ? (const char *)req->body : "");
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
	}
	if (strcmp(method, "POST") != 0)
		curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
}

/* Builds the header list: the caller's headers plus "Expect:" (no 100-continue). */
static struct curl_slist *http_headers(const struct hs_http_request *req)
{
	struct curl_slist *list = NULL, *next;

	for (const char *const *h = req->headers; h != NULL && *h != NULL; h++) {
		if ((next = curl_slist_append(list, *h)) == NULL)
			goto fail;
		list = next;
	}
	if ((next = curl_slist_append(list, "Expect:")) == NULL)
		goto fail;
	return next;
fail:
	curl_slist_free_all(list);
	return NULL;
}

/* One request on a borrowed easy handle; returns curl's result. */
/* After a failed transfer: whether the proxy (HTTPS_PROXY) refused the
 * tunnel or its certificate did not verify, so that the error names the
 * proxy and not the server. */
static void http_proxy_failure(CURL *curl, CURLcode rc, struct http_attempt *at)
{
	long code = 0, verify = 0;

	at->connect_code = 0;
	at->proxy_tls_failed = false;
	if (rc == CURLE_OK)
		return;
	if (curl_easy_getinfo(curl, CURLINFO_HTTP_CONNECTCODE, &code) == CURLE_OK && code >= 300)
		at->connect_code = code;
	if (curl_easy_getinfo(curl, CURLINFO_PROXY_SSL_VERIFYRESULT, &verify) == CURLE_OK &&
	    verify != 0)
		at->proxy_tls_failed = true;
}

static CURLcode http_attempt_once(struct hs_http *http, CURL *curl,
                                  const struct hs_http_request *req, struct curl_slist *headers,
                                  long timeout_ms, struct http_attempt *at)
{
	CURLcode rc;

	hs_ratelimit_acquire(req->rate_limit);
	pthread_mutex_lock(&http->pool_lock);
	http->requests++;
	pthread_mutex_unlock(&http->pool_lock);
	curl_easy_reset(curl);
	curl_easy_setopt(curl, CURLOPT_SHARE, http->share);
	/* Without the engine, the handle's own connection cache: bounded the
	 * same way (libcurl's default of 5 once made a batch open one TLS
	 * connection per request, docs/PERFORMANCE.md). */
	curl_easy_setopt(curl, CURLOPT_MAXCONNECTS, (long)HTTP_MAX_CONNECTS);
	/* Concurrent requests to one server wait for the first connection to
	 * say whether it multiplexes (HTTP/2) rather than each opening its
	 * own; with HTTP/1.1 they then open their own. */
	curl_easy_setopt(curl, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(curl, CURLOPT_URL, req->url);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
	http_set_trust(http, curl);
	curl_easy_setopt(curl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_NOPROXY, http->no_proxy);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
	                 timeout_ms < HTTP_CONNECT_TIMEOUT_MS ? timeout_ms
	                                                      : HTTP_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, http->user_agent);
	curl_easy_setopt(curl, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, http_write_cb);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, at);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, http_header_cb);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, at);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, at->errbuf);
	http_set_method(curl, req);
	at->errbuf[0] = '\0';
	rc = http_perform(http, curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &at->resp->status);
	http_proxy_failure(curl, rc, at);
	/* The error buffer belongs to this frame's caller: detach it. */
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
	return rc;
}

static bool http_retryable_status(const struct hs_http_request *req,
                                  const struct hs_http_response *resp)
{
	long s = resp->status;

	if (s == 429 || (s >= 500 && s <= 599 && s != 501 && s != 505))
		return true;
	return s == 403 && req->retry_rbac_denial && resp->body.data != NULL &&
	       strstr((const char *)resp->body.data, "ForbiddenByRbac") != NULL;
}

static bool http_retryable_curl(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

static bool http_tls_trust_error(CURLcode rc)
{
	return rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
	       rc == CURLE_SSL_ISSUER_ERROR || rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH ||
	       rc == CURLE_SSL_CRL_BADFILE;
}

/* Backoff before retry `attempt` (1-based): Retry-After if given, else full jitter. */
static long http_backoff_ms(const struct hs_http *http, int attempt, long retry_after_ms)
{
	unsigned int rnd = 0;
	long cap = http->backoff_base_ms;

	if (retry_after_ms >= 0)
		return retry_after_ms < http->max_retry_after_ms ? retry_after_ms
		                                                 : http->max_retry_after_ms;
	for (int i = 1; i < attempt && cap < HTTP_BACKOFF_CAP_MS; i++)
		cap *= 2;
	if (cap > HTTP_BACKOFF_CAP_MS)
		cap = HTTP_BACKOFF_CAP_MS;
	if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
		rnd = (unsigned int)rand();
	return (long)(rnd % (unsigned long)(cap + 1));
}

/* Resets the response for a new attempt, keeping the body's allocation. */
static void http_response_reset(struct hs_http_response *resp)
{
	if (resp->body.data != NULL)
		OPENSSL_cleanse(resp->body.data, resp->body.cap);
	resp->body.len = 0;
	resp->status = 0;
	free(resp->www_authenticate);
	free(resp->content_type);
	resp->www_authenticate = resp->content_type = NULL;
}

/* "Service (origin)" or the origin alone, for error messages. */
static const char *http_who(const struct hs_http_request *req, const struct http_url *u, char *buf,
                            size_t len)
{
	if (req->service == NULL)
		return u->origin;
	snprintf(buf, len, "%s (%s)", req->service, u->origin);
	return buf;
}

/* Names the CA file when the shared store could not read it (libcurl only
 * knows that the SSL_CTX callback failed). */
static void http_trust_error(struct hs_http *http, CURLcode rc, struct http_attempt *at)
{
	bool failed;

	pthread_mutex_lock(&http->store_lock);
	failed = http->store_failed;
	pthread_mutex_unlock(&http->store_lock);
	if (rc == CURLE_SSL_CACERT_BADFILE && failed)
		snprintf(at->errbuf, sizeof(at->errbuf), "cannot read the trusted roots in %s",
		         hs_trust_file_name(http->ca_file));
}

/* The final error for a failed transfer (no response). */
static int http_curl_error(struct hs_ctx *ctx, const struct hs_http_request *req,
                           const struct http_url *u, CURLcode rc, const struct http_attempt *at,
                           int attempts, long elapsed_ms)
{
	const char *why = at->errbuf[0] ? at->errbuf : curl_easy_strerror(rc);
	char buf[sizeof(u->origin) + 128];
	const char *who = http_who(req, u, buf, sizeof(buf));

	if (at->too_large)
		return hs_error_set(ctx, HS_ERR_NETWORK,
		                    "%s%s%s%s: response too large (more than %zu bytes)",
		                    req->service ? req->service : "", req->service ? " (" : "",
		                    u->origin, req->service ? ")" : u->path, HTTP_BODY_MAX);
	if (at->proxy_tls_failed)
		return hs_error_set(
		        ctx, HS_ERR_NETWORK,
		        "TLS certificate of the proxy (HTTPS_PROXY) not trusted: %s (set "
		        "--ca-file or SSL_CERT_FILE to add a root)",
		        why);
	if (at->connect_code == 407)
		return hs_error_set(
		        ctx, HS_ERR_AUTH,
		        "%s: the proxy (HTTPS_PROXY) refused its credentials (HTTP 407): "
		        "give them in the proxy URL, http://USER:PASSWORD@HOST:PORT",
		        who);
	if (at->connect_code >= 400 && at->connect_code < 500)
		return hs_error_set(
		        ctx, HS_ERR_NETWORK,
		        "%s: the proxy (HTTPS_PROXY) refused the tunnel to %s (HTTP %ld)", who,
		        u->host, at->connect_code);
	if (http_tls_trust_error(rc))
		return hs_error_set(ctx, HS_ERR_NETWORK,
		                    "TLS certificate of %s not trusted: %s (set --ca-file or "
		                    "SSL_CERT_FILE to add a root)",
		                    u->host, why);
	if (http_retryable_curl(rc) && attempts > 1)
		return hs_error_set(ctx, HS_ERR_NETWORK, "%s: %s (after %d attempts in %.1f s)",
		                    who, why, attempts, (double)elapsed_ms / 1000.0);
	return hs_error_set(ctx, HS_ERR_NETWORK, "%s: %s", who, why);
}

/* Checks the URL before any traffic: http(s) only, plain http only to local hosts. */
static int http_check_url(struct hs_ctx *ctx, const char *url, bool allow_plain_http,
                          struct http_url *u)
{
	char scheme[16];

	if (url == NULL || !http_url_parts(url, u, scheme, sizeof(scheme)))
		return hs_error_set(ctx, HS_ERR_INVALID, "invalid URL");
	if (strcasecmp(scheme, "https") == 0)
		return 0;
	if (strcasecmp(scheme, "http") != 0)
		return hs_error_set(ctx, HS_ERR_INVALID, "unsupported URL scheme '%s' in %s",
		                    scheme, u->origin);
	if (allow_plain_http || http_host_is_loopback(u->host) ||
	    strcmp(u->host, HTTP_IMDS_HOST) == 0)
		return 0;
	return hs_error_set(ctx, HS_ERR_INVALID,
	                    "refusing plain http:// to %s: only loopback hosts may use http, use "
	                    "https",
	                    u->host);
}

int hs_http_send(struct hs_ctx *ctx, struct hs_http *http, const struct hs_http_request *req,
                 struct hs_http_response *resp)
{
	struct http_attempt at = {.resp = resp};
	struct curl_slist *headers = NULL;
	CURL *curl = NULL;
	struct http_url u;
	long start = http_now_ms(), elapsed = 0, wait_ms, budget;
	int max_attempts, r;
	CURLcode rc = CURLE_OK;
	bool retryable;

	memset(resp, 0, sizeof(*resp));
	if ((r = http_check_url(ctx, req->url, req->allow_plain_http, &u)) < 0)
		goto out;
	if ((headers = http_headers(req)) == NULL || (curl = http_take_handle(http)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	max_attempts = req->no_retry ? 1 : http->max_retries + 1;
	for (int attempt = 1;; attempt++) {
		http_response_reset(resp);
		at.too_large = false;
		at.retry_after_ms = -1;
		budget = http->max_total_ms - elapsed;
		if (budget < 1)
			budget = 1; /* curl reads 0 as "no timeout" */
		rc = http_attempt_once(http, curl, req, headers,
		                       budget < http->timeout_ms ? budget : http->timeout_ms, &at);
		resp->attempts = attempt;
		elapsed = http_now_ms() - start;
		if (rc == CURLE_OK)
			hs_log(ctx, HS_LOG_DEBUG, "%s %s%s -> HTTP %ld (attempt %d, %ld ms)",
			       req->method ? req->method : "GET", u.origin, u.path, resp->status,
			       attempt, elapsed);
		else
			hs_log(ctx, HS_LOG_DEBUG, "%s %s%s -> %s (attempt %d, %ld ms)",
			       req->method ? req->method : "GET", u.origin, u.path,
			       curl_easy_strerror(rc), attempt, elapsed);
		/* A proxy that refuses the tunnel (4xx) will refuse it again. */
		retryable = rc == CURLE_OK
		                    ? http_retryable_status(req, resp)
		                    : !at.too_large && http_retryable_curl(rc) &&
		                              (at.connect_code < 400 || at.connect_code >= 500);
		if (!retryable)
			break;
		wait_ms = http_backoff_ms(http, attempt, at.retry_after_ms);
		if (attempt >= max_attempts || elapsed + wait_ms >= http->max_total_ms)
			break;
		hs_log(ctx, HS_LOG_DEBUG, "retrying %s%s in %ld ms", u.origin, u.path, wait_ms);
		http_sleep_ms(wait_ms);
		elapsed = http_now_ms() - start;
	}
	if (rc != CURLE_OK) {
		http_trust_error(http, rc, &at);
		r = http_curl_error(ctx, req, &u, rc, &at, resp->attempts, elapsed);
		goto out;
	}
	if (resp->status == 429) {
		char buf[sizeof(u.origin) + 128];

		r = hs_error_set(ctx, HS_ERR_THROTTLED,
		                 "%s: still throttled (HTTP 429) after %d attempts in %.1f s",
		                 http_who(req, &u, buf, sizeof(buf)), resp->attempts,
		                 (double)elapsed / 1000.0);
		goto out;
	}
	if (resp->body.data == NULL && hs_buf_reserve(&resp->body, 1) == 0)
		resp->body.data[0] = '\0';
	r = 0;
out:
	http_return_handle(http, curl);
	curl_slist_free_all(headers);
	return r;
}
