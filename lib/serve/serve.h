/*
 * serve.h - `hsmsign serve`: a self-hosted signing service that speaks the
 * Azure Key Vault data-plane protocol (certificate GET, key GET, sign POST;
 * protocols.md 1) for keys held by any hsmsign key provider.
 *
 * Three layers, each usable without the next:
 *   - the service (struct hs_serve): configuration, the keys, the
 *     authenticators, audit log, metrics, per-client rate limits;
 *     hs_serve_handle() turns one request into one response without any
 *     socket (unit tests and the fuzzer call it directly);
 *   - the keyring inside it: per-key FIFO queues with `concurrency` signing
 *     threads, bounded by max_queue and queue_timeout_seconds;
 *   - the HTTP server (struct hs_server, libmicrohttpd + GnuTLS): threads,
 *     keep-alive, body limits, TLS 1.2+, optional client certificates, and
 *     suspend/resume so that queued sign requests never block a thread.
 *
 * Part of the separate static library hsmsign_serve (not libhsmsign). It
 * never prints or exits; diagnostics go to the log callback given here.
 * Signals, privilege drop and exit codes belong to cli/cmd_serve.c.
 */
#ifndef HS_SERVE_H
#define HS_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hsmsign.h"

struct hs_serve;
struct hs_server;

/* Loads and validates the JSON configuration at path (one-line errors
 * naming the JSON path, HS_ERR_INVALID), opens every key and creates the
 * authenticators and the audit log. log/log_userdata receive the service's
 * diagnostics (from any thread; calls are serialised). *out is freed with
 * hs_serve_free(). */
int hs_serve_new(struct hs_ctx *ctx, const char *config_path, hs_log_fn log, void *log_userdata,
                 struct hs_serve **out);
/* Re-reads the configuration file given to hs_serve_new(), opens its keys
 * and swaps them in atomically: requests in flight finish with the old
 * ones. On failure the old configuration stays in service. listen, tls and
 * audit_log changes need a restart (a warning is logged). */
int hs_serve_reload(struct hs_ctx *ctx, struct hs_serve *s);
/* Waits for queued and running signatures, then frees. */
void hs_serve_free(struct hs_serve *s);
/* 1 when every configured key is usable (what /healthz reports). */
int hs_serve_healthy(struct hs_serve *s);
/* Calls fn for each key in service: its name, version (derived from the
 * certificate) and signer subject. */
typedef void (*hs_serve_key_fn)(const char *name, const char *version, const char *subject,
                                void *userdata);
void hs_serve_keys(struct hs_serve *s, hs_serve_key_fn fn, void *userdata);

/* One HTTP request as the dispatcher sees it. Strings are borrowed. */
struct hs_serve_header {
	const char *name;
	const char *value;
};
struct hs_serve_request {
	const char *method;
	const char *path;  /* without the query */
	const char *query; /* after '?', or NULL */
	const struct hs_serve_header *headers;
	size_t n_headers;
	const uint8_t *body;
	size_t body_len;
	bool body_truncated; /* the client sent more than max_request_bytes */
	const char *client_addr;
	const char *client_cert_subject; /* verified mTLS subject, or NULL */
	bool tls;                        /* the connection is TLS (ids use https) */
};

#define HS_SERVE_MAX_RESP_HEADERS 4
struct hs_serve_response {
	int status;
	const char *content_type; /* static */
	char *body;               /* malloc'd; free with hs_serve_response_clear() */
	size_t body_len;
	/* Extra headers: names static, values malloc'd. */
	struct {
		const char *name;
		char *value;
	} headers[HS_SERVE_MAX_RESP_HEADERS];
	size_t n_headers;
};
void hs_serve_response_clear(struct hs_serve_response *resp);

/* Called from a signing thread once a pending response is filled. */
typedef void (*hs_serve_done_fn)(void *userdata);

/*
 * Answers one request. Returns 0 when *resp is filled now, or 1 when the
 * request waits in a key's queue: done(userdata) is called (from a signing
 * thread) when *resp is filled. req's strings need not outlive this call;
 * resp must stay valid until done() runs.
 */
int hs_serve_handle(struct hs_serve *s, const struct hs_serve_request *req,
                    struct hs_serve_response *resp, hs_serve_done_fn done, void *userdata);
/* hs_serve_handle() that waits for a queued signature. */
void hs_serve_handle_sync(struct hs_serve *s, const struct hs_serve_request *req,
                          struct hs_serve_response *resp);

/* Starts listening as the configuration says (binds now, so privileges
 * may be dropped afterwards). */
int hs_server_start(struct hs_ctx *ctx, struct hs_serve *s, struct hs_server **out);
/* The bound port (useful with port 0). */
unsigned hs_server_port(const struct hs_server *srv);
/* Stops accepting, lets requests in flight finish (at most timeout_ms),
 * then stops the threads and frees. Returns 0, or HS_ERR_CANCELLED when
 * requests were still running at the deadline: then nothing is freed (a
 * signature still on a worker thread may use the server and the keys), and
 * the caller must exit without calling hs_serve_free(). */
int hs_server_stop(struct hs_server *srv, long timeout_ms);

#endif /* HS_SERVE_H */
