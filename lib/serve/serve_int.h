/*
 * serve_int.h - internals shared by the files of lib/serve (not for the
 * CLI): the parsed configuration, the keyring and its queues, the snapshot
 * of both that requests hold while they run, audit, metrics, rate limits.
 */
#ifndef HS_SERVE_INT_H
#define HS_SERVE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "core/core.h"
#include "serve.h"

struct hs_authn;

/* ---- config.c ---------------------------------------------------------- */

struct serve_key_cfg {
	const char *name; /* borrowed from root */
	json_t *spec;     /* borrowed from root */
};

struct serve_config {
	json_t *root; /* owned */
	char *base_dir;
	char listen_host[256];
	unsigned port;
	bool loopback;
	char *tls_cert, *tls_key, *tls_client_ca;
	bool require_client_cert;
	char *audit_log;
	bool audit_fsync;
	bool trust_proxy;
	size_t max_request_bytes;
	double rps, burst;
	size_t max_queue;
	int queue_timeout_s;
	unsigned max_connections;
	unsigned threads;
	size_t n_keys;
	struct serve_key_cfg *keys;
};

/* Parses and validates root (a reference is taken). base_dir resolves
 * relative paths (may be NULL: the current directory). */
int serve_config_parse(struct hs_ctx *ctx, json_t *root, const char *base_dir,
                       struct serve_config **out);
int serve_config_load(struct hs_ctx *ctx, const char *path, struct serve_config **out);
void serve_config_free(struct serve_config *cfg);
/* A secret given as "env:NAME" or "file:PATH" (never a literal): *out is
 * wiped-on-free memory (serve_secret_free). what names the JSON path. */
int serve_secret_read(struct hs_ctx *ctx, const char *spec, const char *what, char **out);
void serve_secret_free(char *s);

/* ---- keyring.c --------------------------------------------------------- */

enum serve_alg_kind { SERVE_ALG_RSA, SERVE_ALG_RSNULL, SERVE_ALG_EC };

struct serve_job;
struct serve_key;
typedef void (*serve_job_fn)(struct serve_job *job);

struct serve_job {
	struct serve_job *next;
	struct serve_key *key;
	const EVP_MD *md;
	uint8_t digest[64];
	size_t digest_len;
	enum serve_alg_kind kind;
	int64_t enqueued_us;
	/* Filled by the signing thread before run() is called: */
	int result; /* 0, HS_ERR_THROTTLED (queue timeout) or another error */
	char message[HS_MSG_MAX];
	uint8_t sig[1024]; /* raw: PKCS#1 or r||s */
	size_t sig_len;
	double sign_ms;
	serve_job_fn finish; /* called on the signing thread */
	void *userdata;
};

struct serve_key {
	char *name;
	char version[33]; /* first 32 hex digits of SHA-256(leaf DER) */
	struct hs_key *key;
	json_t *allow; /* borrowed from the config root, or NULL */
	bool rsa;
	bool hsm; /* not a key file: Key Vault's kty "RSA-HSM" / "EC-HSM" */
	int bits;
	int ec_width;  /* bytes of r and of s */
	char curve[8]; /* "P-256", ... */
	char *cer_b64; /* leaf DER, base64 */
	json_t *x5c;   /* [leaf, intermediates...] base64 DER */
	char *x5t;     /* base64url SHA-1 of the leaf */
	long long nbf, exp;
	char *subject;
	/* The queue: FIFO, `concurrency` threads. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct serve_job *head, *tail;
	size_t queued, running, max_queue;
	int64_t queue_timeout_us;
	bool stopping;
	int concurrency;
	pthread_t *threads;
	size_t n_threads;
	hs_log_fn log;
	void *log_userdata;
};

struct serve_keyring {
	size_t n;
	struct serve_key *keys;
};

int serve_keyring_open(struct hs_ctx *ctx, const struct serve_config *cfg, hs_log_fn log,
                       void *log_userdata, struct serve_keyring *out);
/* Stops the threads after the queues drain, frees the keys. */
void serve_keyring_close(struct serve_keyring *ring);
struct serve_key *serve_keyring_find(const struct serve_keyring *ring, const char *name);
/* Queues job on its key. 0, or HS_ERR_THROTTLED when the queue is full. */
int serve_key_submit(struct serve_key *key, struct serve_job *job);
size_t serve_key_depth(struct serve_key *key);

/* ---- audit.c ----------------------------------------------------------- */

struct serve_audit {
	int fd; /* -1: none */
	bool fsync;
	pthread_mutex_t lock;
};
int serve_audit_open(struct hs_ctx *ctx, struct serve_audit *a, const char *path, bool fsync);
void serve_audit_close(struct serve_audit *a);
/* Appends entry (plus "time") as one line with one write(). */
int serve_audit_write(struct serve_audit *a, json_t *entry);

/* ---- metrics.c --------------------------------------------------------- */

#define SERVE_HIST_BUCKETS 12
struct serve_metrics;
int serve_metrics_new(struct serve_metrics **out);
void serve_metrics_free(struct serve_metrics *m);
void serve_metrics_request(struct serve_metrics *m, const char *route, int status);
void serve_metrics_auth_failure(struct serve_metrics *m, const char *reason);
void serve_metrics_sign(struct serve_metrics *m, const char *key, double ms);
/* Prometheus text; queue depths from ring. malloc'd. */
char *serve_metrics_render(struct serve_metrics *m, const struct serve_keyring *ring);

/* ---- ratelimit (dispatch.c) -------------------------------------------- */

#define SERVE_RL_SLOTS 4096
struct serve_rl_entry {
	char client[64];
	double tokens;
	int64_t last_us;
};
struct serve_ratelimit {
	pthread_mutex_t lock;
	struct serve_rl_entry *slots;
};
int serve_ratelimit_init(struct serve_ratelimit *rl);
void serve_ratelimit_destroy(struct serve_ratelimit *rl);
/* 1 allowed; 0 limited with *retry_after seconds. rate <= 0: no limit. */
int serve_ratelimit_take(struct serve_ratelimit *rl, const char *client, double rate, double burst,
                         int *retry_after);

/* ---- the service (dispatch.c) ------------------------------------------ */

/* What one request holds while it runs: a configuration and its keys. */
struct serve_state {
	int refs; /* under hs_serve.lock */
	struct serve_config *cfg;
	struct hs_authn *authn;
	struct serve_keyring ring;
};

struct hs_serve {
	pthread_mutex_t lock; /* state pointer and refs */
	struct serve_state *state;
	char *config_path;
	hs_log_fn log;
	void *log_userdata;
	pthread_mutex_t log_lock;
	struct serve_audit audit;
	struct serve_metrics *metrics;
	struct serve_ratelimit rl;
};

/* For tests and the fuzzer: a service from a parsed configuration. */
int hs_serve_new_json(struct hs_ctx *ctx, json_t *root, const char *base_dir, hs_log_fn log,
                      void *log_userdata, struct hs_serve **out);
struct serve_state *serve_state_get(struct hs_serve *s);
void serve_state_put(struct hs_serve *s, struct serve_state *st);
/* Thread-safe logging through the service's callback. */
void serve_log(struct hs_serve *s, enum hs_log_level level, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
int64_t serve_now_us(void);

#endif /* HS_SERVE_INT_H */
