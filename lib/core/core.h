/*
 * core.h - internal foundation shared by every part of libhsmsign: the
 * context, error reporting, logging, growable buffers, digests, fault points.
 */
#ifndef HS_CORE_H
#define HS_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "hsmsign.h"
#include "platform.h"

/* Longest error message kept; longer ones are truncated. */
#define HS_MSG_MAX 512

struct hs_ctx {
	int error;
	char message[HS_MSG_MAX];
	hs_log_fn log_fn;
	void *log_userdata;
};

/*
 * Records an error where it happens and returns `code`, so callers write
 * `return hs_error_set(ctx, HS_ERR_FORMAT, "...", ...)`. The first message
 * set since the last hs_ctx_clear_error() wins: a message is never
 * overwritten while the error propagates up.
 */
int hs_error_set(struct hs_ctx *ctx, int code, const char *fmt, ...) HS_PRINTF(3, 4);
/* Like hs_error_set() and appends ": <OpenSSL's first queued error>". */
int hs_error_ssl(struct hs_ctx *ctx, int code, const char *fmt, ...) HS_PRINTF(3, 4);
/* Sends one line to the log callback, if any. */
void hs_log(struct hs_ctx *ctx, enum hs_log_level level, const char *fmt, ...) HS_PRINTF(3, 4);

/* No buffer grows past this: everything we hold in memory (signatures,
 * headers, tables) is far smaller; file contents are streamed. */
#define HS_BUF_MAX ((size_t)256 * 1024 * 1024)

/* Growable byte buffer. Zero-initialise ({0}) before use. */
struct hs_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};
int hs_buf_append(struct hs_buf *buf, const void *data, size_t len);
int hs_buf_reserve(struct hs_buf *buf, size_t extra);
/* Hands the bytes over: *out owns them (free()), buf is reset. */
void hs_buf_detach(struct hs_buf *buf, uint8_t **out, size_t *out_len);
void hs_buf_free(struct hs_buf *buf);
/* Wipes before freeing: for buffers that held secrets. */
void hs_buf_free_secret(struct hs_buf *buf);

/* A formatted string in fresh memory (free()), or NULL; a portable
 * asprintf. */
char *hs_strprintf(const char *fmt, ...) HS_PRINTF(1, 2);

/* The EVP_MD for a digest enum (static, never freed), or NULL. */
const EVP_MD *hs_digest_md(enum hs_digest digest);
/* The enum for an OpenSSL NID, or 0 if not one we support. */
enum hs_digest hs_digest_from_nid(int nid);

/*
 * Fault injection for tests: true when the environment variable
 * HSMSIGN_FAULT names `point` (comma-separated list). Compiled to `false`
 * unless the build enables HSMSIGN_FAULT_INJECTION.
 */
bool hs_fault(const char *point);
/* The value N of an entry `point=N` in HSMSIGN_FAULT (N >= 0, at most
 * 600000), or -1 when there is none or the build has no fault injection. */
long hs_fault_value(const char *point);

#endif /* HS_CORE_H */
