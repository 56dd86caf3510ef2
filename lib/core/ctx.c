/* ctx.c - context, errors and logging. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "core.h"

int hs_ctx_new(struct hs_ctx **out)
{
	struct hs_ctx *ctx = calloc(1, sizeof(*ctx));

	*out = ctx;
	return ctx ? 0 : HS_ERR_NOMEM;
}

void hs_ctx_free(struct hs_ctx *ctx)
{
	free(ctx);
}

void hs_ctx_set_log(struct hs_ctx *ctx, hs_log_fn fn, void *userdata)
{
	ctx->log_fn = fn;
	ctx->log_userdata = userdata;
}

const char *hs_ctx_message(const struct hs_ctx *ctx)
{
	return ctx->message;
}

int hs_ctx_error(const struct hs_ctx *ctx)
{
	return ctx->error;
}

void hs_ctx_clear_error(struct hs_ctx *ctx)
{
	ctx->error = 0;
	ctx->message[0] = '\0';
	ERR_clear_error();
}

/* Replaces control characters so that a message stays one line. */
static void one_line(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = ' ';
}

HS_PRINTF(4, 0)
static int error_vset(struct hs_ctx *ctx, int code, const char *suffix, const char *fmt, va_list ap)
{
	size_t n;

	if (ctx == NULL || ctx->error != 0)
		return code;
	ctx->error = code;
	vsnprintf(ctx->message, sizeof(ctx->message), fmt, ap);
	n = strlen(ctx->message);
	if (suffix != NULL && n < sizeof(ctx->message))
		snprintf(ctx->message + n, sizeof(ctx->message) - n, ": %s", suffix);
	one_line(ctx->message);
	return code;
}

int hs_error_set(struct hs_ctx *ctx, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	code = error_vset(ctx, code, NULL, fmt, ap);
	va_end(ap);
	return code;
}

int hs_error_ssl(struct hs_ctx *ctx, int code, const char *fmt, ...)
{
	char ssl[256] = "unknown OpenSSL error";
	unsigned long e = ERR_peek_error();
	va_list ap;

	if (e != 0)
		ERR_error_string_n(e, ssl, sizeof(ssl));
	ERR_clear_error();
	va_start(ap, fmt);
	code = error_vset(ctx, code, ssl, fmt, ap);
	va_end(ap);
	return code;
}

void hs_log(struct hs_ctx *ctx, enum hs_log_level level, const char *fmt, ...)
{
	char line[HS_MSG_MAX];
	va_list ap;

	if (ctx == NULL || ctx->log_fn == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	one_line(line);
	ctx->log_fn(level, line, ctx->log_userdata);
}

const char *hs_strerror(int err)
{
	switch (err) {
	case HS_OK:
		return "success";
	case HS_ERR_NOMEM:
		return "out of memory";
	case HS_ERR_IO:
		return "I/O error";
	case HS_ERR_FORMAT:
		return "format error";
	case HS_ERR_UNSUPPORTED:
		return "unsupported";
	case HS_ERR_AUTH:
		return "authentication failed";
	case HS_ERR_DENIED:
		return "permission denied";
	case HS_ERR_NOTFOUND:
		return "not found";
	case HS_ERR_NETWORK:
		return "network error";
	case HS_ERR_THROTTLED:
		return "throttled";
	case HS_ERR_CRYPTO:
		return "cryptographic error";
	case HS_ERR_INVALID:
		return "invalid argument";
	case HS_ERR_CANCELLED:
		return "cancelled";
	default:
		return "unknown error";
	}
}

#ifdef HSMSIGN_FAULT_INJECTION
/* The first entry of HSMSIGN_FAULT's comma-separated list that is
 * `point` (valued: `point=...`); *len is its length. NULL: none. */
static const char *fault_entry(const char *point, bool valued, size_t *len)
{
	const char *list = getenv("HSMSIGN_FAULT");
	size_t n = strlen(point);

	while (list != NULL && *list) {
		const char *end = strchr(list, ',');

		*len = end ? (size_t)(end - list) : strlen(list);
		if (*len >= n && memcmp(list, point, n) == 0 &&
		    (valued ? *len > n && list[n] == '=' : *len == n))
			return list;
		list = end ? end + 1 : NULL;
	}
	return NULL;
}
#endif

bool hs_fault(const char *point)
{
#ifdef HSMSIGN_FAULT_INJECTION
	size_t len;

	return fault_entry(point, false, &len) != NULL;
#else
	(void)point;
	return false;
#endif
}

long hs_fault_value(const char *point)
{
#ifdef HSMSIGN_FAULT_INJECTION
	size_t len, n = strlen(point);
	const char *e = fault_entry(point, true, &len);
	long v = 0;

	if (e == NULL || len <= n + 1)
		return -1;
	for (size_t i = n + 1; i < len; i++) {
		if (e[i] < '0' || e[i] > '9' || v > 600000)
			return -1;
		v = v * 10 + (e[i] - '0');
	}
	return v <= 600000 ? v : -1;
#else
	(void)point;
	return -1;
#endif
}
