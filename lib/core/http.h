/*
 * http.h - the one HTTP client of libhsmsign (libcurl underneath).
 *
 * TLS verification is always on. Extra roots come from the config's ca_file
 * or the SSL_CERT_FILE environment variable; HTTPS_PROXY/NO_PROXY are
 * honoured by libcurl. Plain http:// is refused except for loopback hosts
 * (127.0.0.0/8, ::1, localhost), which only local test servers and the
 * managed-identity endpoints use, the link-local IMDS address 169.254.169.254,
 * and requests that set allow_plain_http. Loopback and IMDS never go through
 * a proxy. Connections are reused across requests.
 *
 * hs_http_send() retries 429, 5xx (except 501/505), timeouts and connection
 * resets with exponential backoff and full jitter, honouring Retry-After
 * (seconds or HTTP date) when present, bounded by max_retries and
 * max_total_ms. Header values that carry secrets (Authorization, and
 * any the caller marks) are never logged.
 */
#ifndef HS_HTTP_H
#define HS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "core.h"

struct hs_http;

struct hs_http_config {
	const char *ca_file;     /* extra PEM roots, or NULL */
	long timeout_ms;         /* per attempt; 0: 30000 */
	int max_retries;         /* retries after the first attempt; <0: 0; 0: default 6 */
	long max_total_ms;       /* whole call including waits; 0: 120000 */
	long backoff_base_ms;    /* first backoff; 0: 1000 (tests set it low) */
	long max_retry_after_ms; /* cap on a server's Retry-After; 0: 60000 */
	const char *user_agent;  /* NULL: "hsmsign/<version>" */
};
#define HS_HTTP_CONFIG_INIT                                                                        \
	{                                                                                          \
		NULL, 0, 0, 0, 0, 0, NULL                                                          \
	}

struct hs_http_request {
	const char *method; /* "GET", "POST", ... */
	const char *url;
	const char *const *headers; /* NULL-terminated "Name: value" list, or NULL */
	const void *body;           /* or NULL */
	size_t body_len;
	bool no_retry; /* one attempt only */
	/* Also retry 403 responses whose body says ForbiddenByRbac (role
	 * assignments take minutes to propagate). */
	bool retry_rbac_denial;
	/* Allow plain http:// to any host. Only for data that is verified by
	 * other means: CA certificates from an AIA caIssuers URL (their
	 * signature is checked against the child certificate). */
	bool allow_plain_http;
	/* Client-side limit shared by the requests to one service: every
	 * attempt, retries included, takes a token first. NULL: none. */
	struct hs_ratelimit *rate_limit;
	/* The service, as error messages name it ("Azure Key Vault"), or
	 * NULL (the messages then name only the URL's origin). */
	const char *service;
};

struct hs_http_response {
	long status;            /* HTTP status of the final attempt */
	struct hs_buf body;     /* NUL-terminated for convenience; len excludes it */
	char *www_authenticate; /* first WWW-Authenticate header, or NULL */
	char *content_type;     /* or NULL */
	int attempts;           /* how many requests were sent */
	long long date;         /* the Date header as Unix time, or 0 (clock skew checks) */
};

struct hs_ratelimit;

/* Creates a client; free with hs_http_free(). A client may be used by
 * several threads at once (each with its own ctx); its handles share
 * connections, TLS sessions and DNS answers. */
/* Fills cfg's TLS roots, retry and timeout limits from a provider's options. */
void hs_http_config_limits(struct hs_http_config *cfg, const char *ca_file, int max_retries,
                           long timeout_ms, long max_total_ms, long backoff_base_ms);
int hs_http_new(struct hs_ctx *ctx, struct hs_http **out, const struct hs_http_config *cfg);
void hs_http_free(struct hs_http *http);

/*
 * Sends a request, retrying as described above. Returns 0 when a final
 * response arrived (whatever its status: the caller interprets 4xx), or
 * HS_ERR_NETWORK (connection/TLS failure after retries; message names the
 * host and curl's reason), HS_ERR_THROTTLED (still 429 when the retry budget
 * ran out), HS_ERR_INVALID (bad URL, plain http to a non-loopback host).
 * The response is freed with hs_http_response_free() in every case.
 */
int hs_http_send(struct hs_ctx *ctx, struct hs_http *http, const struct hs_http_request *req,
                 struct hs_http_response *resp);
void hs_http_response_free(struct hs_http_response *resp);
/* Requests sent so far (every attempt, retries included). */
unsigned long hs_http_request_count(struct hs_http *http);

/* Loads libcurl where it is loaded on first use (curl_api.h) and runs its
 * global initialisation, once per process; false if either failed.
 * Everything in this file calls it first. */
bool hs_http_global_init(void);
/* hs_http_global_init() as an error: 0, or HS_ERR_UNSUPPORTED with the
 * one-line reason in ctx (hs_http_new() fails the same way). Key providers
 * call it before checking an endpoint's scheme, so that a missing libcurl
 * is not reported as a bad URL. */
int hs_http_ready(struct hs_ctx *ctx);

/* True for http(s) URLs whose host is loopback (false, too, when libcurl
 * cannot be loaded: hs_http_new() then says why). */
bool hs_http_is_loopback_url(const char *url);

/* Percent-encodes s for a query string or form body; free() the result.
 * NULL when out of memory or libcurl cannot be loaded. */
char *hs_http_urlencode(const char *s);

#endif /* HS_HTTP_H */
