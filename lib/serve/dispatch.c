/*
 * dispatch.c - the service: one request in, one response out, without
 * sockets. Routes and answers like Azure Key Vault's data plane
 * (protocols.md 1: certificate GET, key GET, sign POST, errors, the 401
 * challenge), plus /healthz and /metrics. Also owns the service object: the
 * current configuration snapshot (swapped atomically on reload), audit,
 * metrics and per-client rate limits.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "authn.h"
#include "core/codec.h"
#include "keys/provider.h"
#include "policy.h"
#include "serve_int.h"

/* What key names (config.c) and versions (hex) are made of. */
#define SD_NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"

/* Key Vault sign algorithms we know (protocols.md 1.a). */
struct sd_alg {
	const char *name;
	enum serve_alg_kind kind;
	int md_nid; /* 0: RSNULL (from the DigestInfo) */
	int ec_bits;
};
static const struct sd_alg sd_algs[] = {
        {"RS256", SERVE_ALG_RSA, NID_sha256, 0},  {"RS384", SERVE_ALG_RSA, NID_sha384, 0},
        {"RS512", SERVE_ALG_RSA, NID_sha512, 0},  {"RSNULL", SERVE_ALG_RSNULL, 0, 0},
        {"ES256", SERVE_ALG_EC, NID_sha256, 256}, {"ES384", SERVE_ALG_EC, NID_sha384, 384},
        {"ES512", SERVE_ALG_EC, NID_sha512, 521},
};

int64_t serve_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void serve_log(struct hs_serve *s, enum hs_log_level level, const char *fmt, ...)
{
	char line[HS_MSG_MAX];
	va_list ap;

	if (s->log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	for (char *p = line; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	pthread_mutex_lock(&s->log_lock);
	s->log(level, line, s->log_userdata);
	pthread_mutex_unlock(&s->log_lock);
}

/* ---- per-client rate limit --------------------------------------------- */

int serve_ratelimit_init(struct serve_ratelimit *rl)
{
	pthread_mutex_init(&rl->lock, NULL);
	rl->slots = calloc(SERVE_RL_SLOTS, sizeof(*rl->slots));
	return rl->slots ? 0 : HS_ERR_NOMEM;
}

void serve_ratelimit_destroy(struct serve_ratelimit *rl)
{
	free(rl->slots);
	rl->slots = NULL;
	pthread_mutex_destroy(&rl->lock);
}

static uint32_t sd_hash(const char *s)
{
	uint32_t h = 2166136261u;

	while (*s)
		h = (h ^ (uint8_t)*s++) * 16777619u;
	return h;
}

int serve_ratelimit_take(struct serve_ratelimit *rl, const char *client, double rate, double burst,
                         int *retry_after)
{
	struct serve_rl_entry *e = NULL, *oldest = NULL;
	int64_t now = serve_now_us();
	uint32_t h = sd_hash(client);
	int ok;

	*retry_after = 0;
	if (rate <= 0 || rl->slots == NULL)
		return 1;
	pthread_mutex_lock(&rl->lock);
	/* 8 probes; a client not found takes the stalest of them. */
	for (int i = 0; i < 8 && e == NULL; i++) {
		struct serve_rl_entry *c = &rl->slots[(h + (uint32_t)i) % SERVE_RL_SLOTS];

		if (c->client[0] != '\0' && strcmp(c->client, client) == 0)
			e = c;
		else if (oldest == NULL || c->last_us < oldest->last_us)
			oldest = c;
	}
	if (e == NULL) {
		e = oldest;
		snprintf(e->client, sizeof(e->client), "%s", client);
		e->tokens = burst;
		e->last_us = now;
	}
	e->tokens += (double)(now - e->last_us) / 1e6 * rate;
	if (e->tokens > burst)
		e->tokens = burst;
	e->last_us = now;
	ok = e->tokens >= 1.0;
	if (ok)
		e->tokens -= 1.0;
	else
		*retry_after = (int)((1.0 - e->tokens) / rate) + 1;
	pthread_mutex_unlock(&rl->lock);
	return ok;
}

/* ---- the service object ------------------------------------------------ */

static void sd_state_free(struct serve_state *st)
{
	if (st == NULL)
		return;
	serve_keyring_close(&st->ring);
	hs_authn_free(st->authn);
	serve_config_free(st->cfg);
	free(st);
}

static int sd_check_policies(struct hs_ctx *ctx, const struct serve_config *cfg)
{
	char why[256];

	for (size_t i = 0; i < cfg->n_keys; i++) {
		const json_t *allow = json_object_get(cfg->keys[i].spec, "allow");

		if (allow != NULL && hs_policy_validate(allow, why, sizeof(why)) < 0)
			return hs_error_set(ctx, HS_ERR_INVALID, "keys.%s.%s", cfg->keys[i].name,
			                    why);
	}
	return 0;
}

/* Takes cfg. */
static int sd_state_new(struct hs_ctx *ctx, struct hs_serve *s, struct serve_config *cfg,
                        struct serve_state **out)
{
	struct serve_state *st = calloc(1, sizeof(*st));
	int r;

	*out = NULL;
	if (st == NULL) {
		serve_config_free(cfg);
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	st->refs = 1;
	st->cfg = cfg;
	if ((r = sd_check_policies(ctx, cfg)) < 0 ||
	    (r = hs_authn_new(ctx, cfg->root, &st->authn)) < 0 ||
	    (r = serve_keyring_open(ctx, cfg, s->log, s->log_userdata, &st->ring)) < 0) {
		sd_state_free(st);
		return r;
	}
	*out = st;
	return 0;
}

struct serve_state *serve_state_get(struct hs_serve *s)
{
	struct serve_state *st;

	pthread_mutex_lock(&s->lock);
	st = s->state;
	st->refs++;
	pthread_mutex_unlock(&s->lock);
	return st;
}

void serve_state_put(struct hs_serve *s, struct serve_state *st)
{
	bool last;

	pthread_mutex_lock(&s->lock);
	last = --st->refs == 0;
	pthread_mutex_unlock(&s->lock);
	if (last)
		sd_state_free(st);
}

static int sd_serve_new(struct hs_ctx *ctx, struct serve_config *cfg, const char *path,
                        hs_log_fn log, void *log_userdata, struct hs_serve **out)
{
	struct hs_serve *s = calloc(1, sizeof(*s));
	int r;

	*out = NULL;
	if (s == NULL) {
		serve_config_free(cfg);
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->log_lock, NULL);
	s->log = log;
	s->log_userdata = log_userdata;
	if ((r = serve_audit_open(ctx, &s->audit, cfg->audit_log, cfg->audit_fsync)) < 0)
		goto fail;
	if ((path != NULL && (s->config_path = strdup(path)) == NULL) ||
	    serve_metrics_new(&s->metrics) < 0 || serve_ratelimit_init(&s->rl) < 0) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto fail;
	}
	if ((r = sd_state_new(ctx, s, cfg, &s->state)) < 0) {
		hs_serve_free(s);
		return r;
	}
	*out = s;
	return 0;
fail:
	serve_config_free(cfg);
	hs_serve_free(s);
	return r;
}

int hs_serve_new_json(struct hs_ctx *ctx, json_t *root, const char *base_dir, hs_log_fn log,
                      void *log_userdata, struct hs_serve **out)
{
	struct serve_config *cfg;
	int r;

	*out = NULL;
	if ((r = serve_config_parse(ctx, root, base_dir, &cfg)) < 0)
		return r;
	return sd_serve_new(ctx, cfg, NULL, log, log_userdata, out);
}

int hs_serve_new(struct hs_ctx *ctx, const char *config_path, hs_log_fn log, void *log_userdata,
                 struct hs_serve **out)
{
	struct serve_config *cfg;
	int r;

	*out = NULL;
	if ((r = serve_config_load(ctx, config_path, &cfg)) < 0)
		return r;
	return sd_serve_new(ctx, cfg, config_path, log, log_userdata, out);
}

int hs_serve_reload(struct hs_ctx *ctx, struct hs_serve *s)
{
	struct serve_state *st, *old;
	struct serve_config *cfg;
	int r;

	if (s->config_path == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID, "no configuration file to reload");
	if ((r = serve_config_load(ctx, s->config_path, &cfg)) < 0)
		return r;
	if ((r = sd_state_new(ctx, s, cfg, &st)) < 0)
		return r;
	pthread_mutex_lock(&s->lock);
	old = s->state;
	s->state = st;
	pthread_mutex_unlock(&s->lock);
	if (strcmp(old->cfg->listen_host, cfg->listen_host) != 0 || old->cfg->port != cfg->port ||
	    (old->cfg->tls_cert == NULL) != (cfg->tls_cert == NULL))
		serve_log(s, HS_LOG_WARN, "listen and tls changes take effect after a restart");
	if ((old->cfg->audit_log == NULL) != (cfg->audit_log == NULL) ||
	    (cfg->audit_log && strcmp(old->cfg->audit_log, cfg->audit_log) != 0))
		serve_log(s, HS_LOG_WARN, "audit_log changes take effect after a restart");
	serve_log(s, HS_LOG_INFO, "configuration reloaded: %zu keys", st->ring.n);
	serve_state_put(s, old);
	return 0;
}

void hs_serve_free(struct hs_serve *s)
{
	if (s == NULL)
		return;
	if (s->state != NULL)
		serve_state_put(s, s->state);
	serve_audit_close(&s->audit);
	serve_metrics_free(s->metrics);
	serve_ratelimit_destroy(&s->rl);
	free(s->config_path);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->log_lock);
	free(s);
}

/* Keys whose certificate is outside its validity period, or NULL. */
static const char *sd_unhealthy_key(const struct serve_state *st)
{
	long long now = (long long)time(NULL);

	for (size_t i = 0; i < st->ring.n; i++) {
		const struct serve_key *k = &st->ring.keys[i];

		if (k->key == NULL || (k->nbf && now < k->nbf) || (k->exp && now > k->exp))
			return k->name;
	}
	return NULL;
}

int hs_serve_healthy(struct hs_serve *s)
{
	struct serve_state *st = serve_state_get(s);
	int ok = sd_unhealthy_key(st) == NULL;

	serve_state_put(s, st);
	return ok;
}

void hs_serve_keys(struct hs_serve *s, hs_serve_key_fn fn, void *userdata)
{
	struct serve_state *st = serve_state_get(s);

	for (size_t i = 0; i < st->ring.n; i++)
		fn(st->ring.keys[i].name, st->ring.keys[i].version,
		   st->ring.keys[i].subject ? st->ring.keys[i].subject : "", userdata);
	serve_state_put(s, st);
}

/* ---- responses --------------------------------------------------------- */

void hs_serve_response_clear(struct hs_serve_response *resp)
{
	free(resp->body);
	for (size_t i = 0; i < resp->n_headers; i++)
		free(resp->headers[i].value);
	memset(resp, 0, sizeof(*resp));
}

static void sd_header(struct hs_serve_response *resp, const char *name, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void sd_header(struct hs_serve_response *resp, const char *name, const char *fmt, ...)
{
	char value[1024];
	va_list ap;

	if (resp->n_headers == HS_SERVE_MAX_RESP_HEADERS)
		return;
	va_start(ap, fmt);
	vsnprintf(value, sizeof(value), fmt, ap);
	va_end(ap);
	resp->headers[resp->n_headers].name = name;
	if ((resp->headers[resp->n_headers].value = strdup(value)) != NULL)
		resp->n_headers++;
}

static void sd_text(struct hs_serve_response *resp, int status, const char *ctype, char *body)
{
	resp->status = body ? status : 500;
	resp->content_type = ctype;
	resp->body = body ? body : strdup("out of memory\n");
	resp->body_len = resp->body ? strlen(resp->body) : 0;
}

/* Takes j. */
static void sd_json(struct hs_serve_response *resp, int status, json_t *j)
{
	char *body = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

	json_decref(j);
	sd_text(resp, status, "application/json; charset=utf-8", body);
}

/* Key Vault's error body (protocols.md 1.f). */
static void sd_error(struct hs_serve_response *resp, int status, const char *code, const char *fmt,
                     ...) __attribute__((format(printf, 4, 5)));
static void sd_error(struct hs_serve_response *resp, int status, const char *code, const char *fmt,
                     ...)
{
	char msg[HS_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* Messages quote request bytes (names, methods): keep them printable
	 * ASCII, which is also always valid JSON text. */
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	sd_json(resp, status, json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg));
}

/* ---- request helpers --------------------------------------------------- */

static const char *sd_req_header(const struct hs_serve_request *req, const char *name)
{
	for (size_t i = 0; i < req->n_headers; i++)
		if (req->headers[i].name && strcasecmp(req->headers[i].name, name) == 0)
			return req->headers[i].value;
	return NULL;
}

static bool sd_host_ok(const char *h, size_t n)
{
	if (n == 0 || n > 255)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]",
		            h[i]) ||
		    h[i] == '\0')
			return false;
	return true;
}

/* "https://host:port" as the client addressed us. */
static int sd_base_url(const struct serve_state *st, const struct hs_serve_request *req, char *out,
                       size_t out_len)
{
	const char *host = sd_req_header(req, "Host");
	const char *proto = req->tls ? "https" : "http";
	size_t host_len;

	if (st->cfg->trust_proxy) {
		const char *fh = sd_req_header(req, "X-Forwarded-Host");
		const char *fp = sd_req_header(req, "X-Forwarded-Proto");

		if (fh != NULL)
			host = fh;
		if (fp != NULL && (strncasecmp(fp, "https", 5) == 0))
			proto = "https";
		else if (fp != NULL && strncasecmp(fp, "http", 4) == 0)
			proto = "http";
	}
	if (host == NULL)
		host = "localhost";
	host_len = strcspn(host, ", ");
	if (!sd_host_ok(host, host_len))
		return -1;
	snprintf(out, out_len, "%s://%.*s", proto, (int)host_len, host);
	return 0;
}

/* Splits "/a/b/c" into at most max segments (trailing "/" ignored).
 * Returns the count, or -1 when there are more or a segment is odd. */
static int sd_split(const char *path, char segs[][128], int max)
{
	int n = 0;
	const char *p = path;

	if (p == NULL || *p != '/')
		return -1;
	while (*p == '/') {
		size_t len;

		p++;
		len = strcspn(p, "/");
		if (len == 0) {
			if (*p == '\0')
				break; /* trailing slash */
			return -1;
		}
		if (n == max || len >= 128)
			return -1;
		memcpy(segs[n], p, len);
		segs[n][len] = '\0';
		n++;
		p += len;
	}
	return n;
}

static const char *sd_auth_reason(const char *msg)
{
	if (strstr(msg, "no bearer") || strstr(msg, "missing"))
		return "missing";
	if (strstr(msg, "expired") || strstr(msg, "not yet valid") || strstr(msg, "nbf") ||
	    strstr(msg, "exp"))
		return "expired";
	if (strstr(msg, "audience"))
		return "audience";
	if (strstr(msg, "issuer"))
		return "issuer";
	if (strstr(msg, "signature") || strstr(msg, "kid") || strstr(msg, "JWKS"))
		return "signature";
	if (strstr(msg, "API token"))
		return "unknown_token";
	if (strstr(msg, "certificate"))
		return "client_certificate";
	return "other";
}

/* ---- the request context ----------------------------------------------- */

struct sd_call {
	struct hs_serve *s;
	struct serve_state *st;
	const struct hs_serve_request *req;
	struct hs_serve_response *resp;
	const char *route;
	char base[300];
	char client[64]; /* the client's address (behind a trusted proxy: X-Forwarded-For) */
	int64_t t0;
	json_t *audit; /* entry under construction, or NULL: nothing to audit */
};

static void sd_audit_finish(struct hs_serve *s, json_t *audit, const char *result,
                            const char *error, int64_t t0)
{
	if (audit == NULL)
		return;
	json_object_set_new(audit, "result", json_string(result));
	if (error != NULL && error[0] != '\0')
		json_object_set_new(audit, "error", json_string(error));
	json_object_set_new(audit, "duration_ms",
	                    json_real((double)((serve_now_us() - t0) / 100) / 10.0));
	if (serve_audit_write(&s->audit, audit) < 0)
		serve_log(s, HS_LOG_ERROR, "cannot write the audit log");
	json_decref(audit);
}

/* The claims named by the first allow rule that matches, for the audit. */
static json_t *sd_matched_claims(const json_t *allow, const struct hs_identity *id)
{
	json_t *out = json_object(), *rule, *one = json_array();
	char why[256];
	size_t i;

	if (out == NULL || one == NULL)
		goto out;
	json_array_foreach((json_t *)allow, i, rule)
	{
		const char *field;
		json_t *value;

		/* Copies: shared configuration objects never change reference
		 * counts on request threads. */
		json_array_clear(one);
		json_array_append_new(one, json_deep_copy(rule));
		if (hs_policy_allows(one, id, why, sizeof(why)) != 1)
			continue;
		json_object_foreach(rule, field, value)
		{
			json_t *claim = json_object_get(id->claims, field);

			(void)value;
			if (claim != NULL)
				json_object_set_new(out, field, json_deep_copy(claim));
		}
		break;
	}
out:
	json_decref(one);
	return out;
}

/* 401 with Key Vault's challenge (protocols.md 1.g) so SDKs find a token. */
static void sd_unauthorized(struct sd_call *c, const char *message)
{
	sd_error(c->resp, 401, "Unauthorized", "%s", message);
	sd_header(c->resp, "WWW-Authenticate",
	          "Bearer authorization=\"%s/hsmsign\", resource=\"%s\"", c->base, c->base);
}

/* Authenticates the caller. 0: go on; else the 401 is filled. */
static int sd_authenticate(struct sd_call *c, struct hs_identity *id)
{
	const char *authorization = sd_req_header(c->req, "Authorization");
	struct hs_ctx *ctx = NULL;
	int r;

	if (c->st->cfg->require_client_cert && c->req->client_cert_subject == NULL) {
		serve_metrics_auth_failure(c->s->metrics, "client_certificate");
		sd_audit_finish(c->s, c->audit, "unauthenticated", "no client certificate", c->t0);
		c->audit = NULL;
		sd_unauthorized(c, "A verified client certificate is required.");
		return -1;
	}
	if (hs_ctx_new(&ctx) < 0) {
		sd_error(c->resp, 500, "InternalServerError", "out of memory");
		return -1;
	}
	r = hs_authn_check(ctx, c->st->authn, authorization, c->req->client_cert_subject, id);
	if (r < 0) {
		const char *msg = hs_ctx_message(ctx);

		if (r == HS_ERR_NETWORK) {
			/* The issuer's keys could not be fetched: a passing
			 * outage, so ask the client to come back. */
			sd_error(c->resp, 503, "ServiceUnavailable", "%s", msg);
			sd_header(c->resp, "Retry-After", "%d", 2);
			hs_ctx_free(ctx);
			return -1;
		}
		if (r != HS_ERR_AUTH) {
			sd_error(c->resp, 500, "InternalServerError", "%s", msg);
			hs_ctx_free(ctx);
			return -1;
		}
		serve_metrics_auth_failure(c->s->metrics, sd_auth_reason(msg));
		if (authorization == NULL && c->req->client_cert_subject == NULL) {
			/* The first request of every Key Vault client: not audited. */
			json_decref(c->audit);
			c->audit = NULL;
			sd_unauthorized(c, "Request is missing a Bearer token.");
		} else {
			sd_audit_finish(c->s, c->audit, "unauthenticated", msg, c->t0);
			c->audit = NULL;
			sd_unauthorized(c, msg);
		}
		hs_ctx_free(ctx);
		return -1;
	}
	hs_ctx_free(ctx);
	if (c->audit != NULL)
		json_object_set_new(c->audit, "client",
		                    json_pack("{s:s, s:s}", "kind", id->kind, "name", id->name));
	return 0;
}

/* Applies the key's "allow" rules to an authenticated caller. 0: go on;
 * else the 403 is filled. */
static int sd_policy(struct sd_call *c, struct serve_key *key, struct hs_identity *id)
{
	char why[256];
	int r;

	r = key->allow ? hs_policy_allows(key->allow, id, why, sizeof(why)) : 0;
	if (key->allow == NULL)
		snprintf(why, sizeof(why), "the key has no allow rules (deny by default)");
	if (r != 1) {
		sd_audit_finish(c->s, c->audit, "denied", why, c->t0);
		c->audit = NULL;
		sd_error(c->resp, 403, "Forbidden", "Caller '%s' may not use key '%s': %s",
		         id->name, key->name, why);
		return -1;
	}
	if (c->audit != NULL)
		json_object_set_new(json_object_get(c->audit, "client"), "claims",
		                    sd_matched_claims(key->allow, id));
	return 0;
}

static void sd_not_found(struct sd_call *c, bool cert, const char *name, const char *version)
{
	sd_audit_finish(c->s, c->audit, "error", "not found", c->t0);
	c->audit = NULL;
	sd_error(c->resp, 404, cert ? "CertificateNotFound" : "KeyNotFound",
	         "A %s with (name/id) %s%s%s was not found in this key vault.",
	         cert ? "certificate" : "key", name, version ? "/" : "", version ? version : "");
}

static json_t *sd_attributes(const struct serve_key *k, bool cert)
{
	json_t *a = json_pack("{s:b, s:I, s:I, s:s}", "enabled", 1, "created", (json_int_t)k->nbf,
	                      "updated", (json_int_t)k->nbf, "recoveryLevel", "Purgeable");

	if (a != NULL && cert) {
		json_object_set_new(a, "nbf", json_integer(k->nbf));
		json_object_set_new(a, "exp", json_integer(k->exp));
	}
	if (a != NULL && !cert)
		json_object_set_new(a, "exportable", json_false());
	return a;
}

static void sd_certificate(struct sd_call *c, const struct serve_key *k)
{
	char id[512], kid[512], base[400];
	json_t *props;

	snprintf(base, sizeof(base), "%s/certificates/%s", c->base, k->name);
	snprintf(id, sizeof(id), "%s/%s", base, k->version);
	snprintf(kid, sizeof(kid), "%s/keys/%s/%s", c->base, k->name, k->version);
	props = k->rsa ? json_pack("{s:b, s:s, s:i, s:b}", "exportable", 0, "kty",
	                           k->hsm ? "RSA-HSM" : "RSA", "key_size", k->bits, "reuse_key", 0)
	               : json_pack("{s:b, s:s, s:s, s:b}", "exportable", 0, "kty",
	                           k->hsm ? "EC-HSM" : "EC", "crv", k->curve, "reuse_key", 0);
	sd_json(c->resp, 200,
	        json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:{s:s, s:o, s:{s:s}}, s:{}}", "id", id,
	                  "kid", kid, "x5t", k->x5t, "cer", k->cer_b64, "x5c",
	                  json_deep_copy(k->x5c), "attributes", sd_attributes(k, true), "policy",
	                  "id", base, "key_props", props, "x509_props", "subject",
	                  k->subject ? k->subject : "", "tags"));
}

static void sd_be_bytes(json_t *jwk, const char *name, const BIGNUM *bn, int width)
{
	unsigned char buf[1024];
	int n = width > 0 ? BN_bn2binpad(bn, buf, width) : BN_bn2bin(bn, buf);
	char *b64 = n > 0 && (size_t)n <= sizeof(buf) ? hs_b64url(buf, (size_t)n) : NULL;

	if (b64 != NULL)
		json_object_set_new(jwk, name, json_string(b64));
	free(b64);
}

static void sd_key(struct sd_call *c, const struct serve_key *k)
{
	EVP_PKEY *pub = X509_get0_pubkey(sk_X509_value(k->key->chain, 0));
	char kid[512];
	json_t *jwk;

	snprintf(kid, sizeof(kid), "%s/keys/%s/%s", c->base, k->name, k->version);
	jwk = json_pack("{s:s, s:s, s:[s,s]}", "kid", kid, "kty",
	                k->rsa ? (k->hsm ? "RSA-HSM" : "RSA") : (k->hsm ? "EC-HSM" : "EC"),
	                "key_ops", "sign", "verify");
	if (jwk == NULL || pub == NULL) {
		json_decref(jwk);
		sd_error(c->resp, 500, "InternalServerError", "out of memory");
		return;
	}
	if (k->rsa) {
		BIGNUM *n = NULL, *e = NULL;

		EVP_PKEY_get_bn_param(pub, "n", &n);
		EVP_PKEY_get_bn_param(pub, "e", &e);
		if (n && e) {
			sd_be_bytes(jwk, "n", n, 0);
			sd_be_bytes(jwk, "e", e, 0);
		}
		BN_free(n);
		BN_free(e);
	} else {
		BIGNUM *x = NULL, *y = NULL;

		json_object_set_new(jwk, "crv", json_string(k->curve));
		EVP_PKEY_get_bn_param(pub, "qx", &x);
		EVP_PKEY_get_bn_param(pub, "qy", &y);
		if (x && y) {
			sd_be_bytes(jwk, "x", x, k->ec_width);
			sd_be_bytes(jwk, "y", y, k->ec_width);
		}
		BN_free(x);
		BN_free(y);
	}
	ERR_clear_error();
	sd_json(c->resp, 200,
	        json_pack("{s:o, s:o}", "key", jwk, "attributes", sd_attributes(k, false)));
}

/* ---- sign -------------------------------------------------------------- */

struct sd_sign {
	struct serve_job job; /* first: the keyring hands it back */
	struct hs_serve *s;
	struct serve_state *st;
	struct hs_serve_response *resp;
	hs_serve_done_fn done;
	void *userdata;
	char kid[512];
	json_t *audit;
	int64_t t0;
};

static void sd_sign_finish(struct serve_job *job)
{
	struct sd_sign *w = (struct sd_sign *)job;
	struct hs_serve_response *resp = w->resp;
	char *value;

	if (job->result == 0 && (value = hs_b64url(job->sig, job->sig_len)) != NULL) {
		sd_json(resp, 200, json_pack("{s:s, s:s}", "kid", w->kid, "value", value));
		free(value);
		serve_metrics_sign(w->s->metrics, job->key->name, job->sign_ms);
		sd_audit_finish(w->s, w->audit, "ok", NULL, w->t0);
	} else if (job->result == HS_ERR_THROTTLED) {
		sd_error(resp, 503, "ServiceUnavailable", "%s; retry later", job->message);
		sd_header(resp, "Retry-After", "%d", 2);
		sd_audit_finish(w->s, w->audit, "error", job->message, w->t0);
	} else {
		serve_log(w->s, HS_LOG_ERROR, "key %s: signing failed: %s", job->key->name,
		          job->message[0] ? job->message : "out of memory");
		sd_error(resp, 500, "KeyOperationFailed", "signing with key '%s' failed: %s",
		         job->key->name, job->message[0] ? job->message : "out of memory");
		sd_audit_finish(w->s, w->audit, "error", job->message, w->t0);
	}
	serve_metrics_request(w->s->metrics, "sign", resp->status);
	serve_state_put(w->s, w->st);
	if (w->done)
		w->done(w->userdata);
	free(w);
}

/* Parses the sign body; fills the job or the response. */
static int sd_sign_parse(struct sd_call *c, const struct serve_key *k, struct serve_job *job)
{
	struct hs_buf raw = {0};
	const struct sd_alg *alg = NULL;
	const char *alg_name, *value;
	json_error_t jerr;
	json_t *body;
	X509_SIG *dinfo = NULL;
	int r = -1;

	body = json_loadb((const char *)c->req->body, c->req->body_len, 0, &jerr);
	alg_name = json_string_value(json_object_get(body, "alg"));
	value = json_string_value(json_object_get(body, "value"));
	if (!json_is_object(body)) {
		sd_error(c->resp, 400, "BadParameter", "The request body is not valid JSON.");
		goto out;
	}
	if (alg_name == NULL || value == NULL) {
		sd_error(c->resp, 400, "BadParameter", "Property '%s' is required.",
		         alg_name == NULL ? "alg" : "value");
		goto out;
	}
	if (c->audit)
		json_object_set_new(c->audit, "alg", json_string(alg_name));
	for (size_t i = 0; i < sizeof(sd_algs) / sizeof(sd_algs[0]); i++)
		if (strcmp(alg_name, sd_algs[i].name) == 0)
			alg = &sd_algs[i];
	if (alg == NULL) {
		sd_error(c->resp, 400, "BadParameter",
		         strncmp(alg_name, "PS", 2) == 0
		                 ? "Algorithm '%.32s' is not supported: this server's keys sign "
		                   "with "
		                   "RSA PKCS#1 v1.5 (RS256, RS384, RS512, RSNULL) or ECDSA."
		                 : "Invalid algorithm '%.32s'.",
		         alg_name);
		goto out;
	}
	if ((alg->kind == SERVE_ALG_EC) == k->rsa ||
	    (alg->kind == SERVE_ALG_EC && alg->ec_bits != k->bits)) {
		sd_error(c->resp, 400, "BadParameter",
		         "Algorithm %s is not supported by key %s (%s%s%s).", alg->name, k->name,
		         k->rsa ? "RSA" : "EC", k->rsa ? "" : " ", k->rsa ? "" : k->curve);
		goto out;
	}
	if (strlen(value) > 4096 || hs_base64_decode(&raw, value, strlen(value)) < 0) {
		sd_error(c->resp, 400, "BadParameter", "Property 'value' is not valid base64url.");
		goto out;
	}
	job->kind = alg->kind;
	if (alg->kind == SERVE_ALG_RSNULL) {
		const unsigned char *p = raw.data;
		const X509_ALGOR *algor;
		const ASN1_OCTET_STRING *dg;
		const ASN1_OBJECT *obj;

		if (raw.len > 0 && (dinfo = d2i_X509_SIG(NULL, &p, (long)raw.len)) != NULL &&
		    p == raw.data + raw.len) {
			X509_SIG_get0(dinfo, &algor, &dg);
			X509_ALGOR_get0(&obj, NULL, NULL, algor);
			job->md = hs_digest_from_nid(OBJ_obj2nid(obj))
			                  ? EVP_get_digestbynid(OBJ_obj2nid(obj))
			                  : NULL;
		}
		ERR_clear_error();
		if (job->md == NULL ||
		    (size_t)ASN1_STRING_length(dg) != (size_t)EVP_MD_get_size(job->md)) {
			sd_error(c->resp, 400, "BadParameter",
			         "RSNULL: the value must be a DER DigestInfo with SHA-1, SHA-256, "
			         "SHA-384 or SHA-512 (this server signs digests only).");
			goto out;
		}
		job->digest_len = (size_t)ASN1_STRING_length(dg);
		memcpy(job->digest, ASN1_STRING_get0_data(dg), job->digest_len);
	} else {
		job->md = EVP_get_digestbynid(alg->md_nid);
		if (job->md == NULL || raw.len != (size_t)EVP_MD_get_size(job->md)) {
			sd_error(c->resp, 400, "BadParameter",
			         "Invalid length of the digest: %zu bytes for algorithm %s "
			         "(expected "
			         "%d).",
			         raw.len, alg->name, job->md ? EVP_MD_get_size(job->md) : 0);
			goto out;
		}
		job->digest_len = raw.len;
		memcpy(job->digest, raw.data, raw.len);
	}
	if (c->audit) {
		char hex[129];

		for (size_t i = 0; i < job->digest_len; i++)
			snprintf(hex + 2 * i, 3, "%02x", job->digest[i]);
		json_object_set_new(c->audit, "digest", json_string(hex));
		json_object_set_new(c->audit, "digest_alg", json_string(EVP_MD_get0_name(job->md)));
	}
	r = 0;
out:
	X509_SIG_free(dinfo);
	hs_buf_free(&raw);
	json_decref(body);
	if (r < 0) {
		sd_audit_finish(c->s, c->audit, "error", "bad request", c->t0);
		c->audit = NULL;
	}
	return r;
}

/* 1 when queued (the call's state reference moved into the job). */
static int sd_sign(struct sd_call *c, struct serve_key *k, hs_serve_done_fn done, void *userdata)
{
	struct sd_sign *w = calloc(1, sizeof(*w));

	if (w == NULL) {
		sd_error(c->resp, 500, "InternalServerError", "out of memory");
		return 0;
	}
	if (c->req->body_len == 0 || sd_sign_parse(c, k, &w->job) < 0) {
		if (c->req->body_len == 0)
			sd_error(c->resp, 400, "BadParameter",
			         "The request body is not valid JSON.");
		free(w);
		return 0;
	}
	w->s = c->s;
	w->st = c->st;
	w->resp = c->resp;
	w->done = done;
	w->userdata = userdata;
	w->audit = c->audit;
	w->t0 = c->t0;
	w->job.finish = sd_sign_finish;
	snprintf(w->kid, sizeof(w->kid), "%s/keys/%s/%s", c->base, k->name, k->version);
	if (serve_key_submit(k, &w->job) < 0) {
		sd_error(c->resp, 503, "ServiceUnavailable",
		         "Key '%s' has too many requests waiting; retry later.", k->name);
		sd_header(c->resp, "Retry-After", "%d", 2);
		sd_audit_finish(c->s, c->audit, "error", "queue full", c->t0);
		c->audit = NULL;
		free(w);
		return 0;
	}
	c->audit = NULL;
	return 1;
}

/* ---- routing ----------------------------------------------------------- */

static json_t *sd_audit_new(const struct sd_call *c, const char *op, const char *name)
{
	return json_pack("{s:n, s:s, s:s, s:s, s:s}", "time", "op", op, "key", name, "address",
	                 c->client, "version", "");
}

/* The caller's address: the connection's, or with trust_proxy the last
 * X-Forwarded-For entry (the one our proxy added). */
static void sd_client(struct sd_call *c)
{
	const char *xff = c->st->cfg->trust_proxy ? sd_req_header(c->req, "X-Forwarded-For") : NULL;
	const char *a = c->req->client_addr ? c->req->client_addr : "-";
	size_t n;

	if (xff != NULL) {
		const char *last = strrchr(xff, ',');

		last = last ? last + 1 : xff;
		last += strspn(last, " ");
		n = strspn(last, "0123456789abcdefABCDEF.:");
		if (n > 0 && n < sizeof(c->client) && last[n + strspn(last + n, " ")] == '\0') {
			memcpy(c->client, last, n);
			c->client[n] = '\0';
			return;
		}
	}
	snprintf(c->client, sizeof(c->client), "%s", a);
}

static int sd_route(struct sd_call *c, hs_serve_done_fn done, void *userdata)
{
	const struct hs_serve_request *req = c->req;
	struct hs_identity id;
	char segs[4][128];
	const char *m = req->method ? req->method : "", *version;
	struct serve_key *k;
	bool cert, sign;
	int n = sd_split(req->path, segs, 4), retry, queued = 0;

	memset(&id, 0, sizeof(id));

	if (n == 1 && strcmp(segs[0], "healthz") == 0) {
		const char *bad = sd_unhealthy_key(c->st);

		c->route = "healthz";
		if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0)
			goto not_allowed;
		if (bad != NULL)
			sd_text(c->resp, 503, "text/plain; charset=utf-8",
			        hs_strprintf("key %s is not usable: its certificate is outside its "
			                     "validity period\n",
			                     bad));
		else
			sd_text(c->resp, 200, "text/plain; charset=utf-8", strdup("ok\n"));
		return 0;
	}
	if (n == 1 && strcmp(segs[0], "metrics") == 0) {
		c->route = "metrics";
		if (strcmp(m, "GET") != 0)
			goto not_allowed;
		sd_text(c->resp, 200, "text/plain; version=0.0.4; charset=utf-8",
		        serve_metrics_render(c->s->metrics, &c->st->ring));
		return 0;
	}
	cert = n >= 2 && strcmp(segs[0], "certificates") == 0;
	sign = n >= 3 && strcmp(segs[0], "keys") == 0 && strcmp(segs[n - 1], "sign") == 0;
	if (!(cert && n <= 3) && !(n >= 2 && n <= 3 && strcmp(segs[0], "keys") == 0 && !sign) &&
	    !(sign && n <= 4)) {
		c->route = "other";
		sd_error(c->resp, 404, "NotFound", "No such operation: %s.",
		         n < 0 ? "(bad path)" : "see docs/server.md");
		return 0;
	}
	c->route = cert ? "certificate" : sign ? "sign" : "key";
	if (strcmp(m, sign ? "POST" : "GET") != 0)
		goto not_allowed;
	for (int i = 1; i < n - (sign ? 1 : 0); i++)
		if (strspn(segs[i], SD_NAME_CHARS) != strlen(segs[i])) {
			sd_error(c->resp, 400, "BadParameter",
			         "Invalid name or version: letters, digits and '-' only.");
			return 0;
		}
	if (!serve_ratelimit_take(&c->s->rl, c->client, c->st->cfg->rps, c->st->cfg->burst,
	                          &retry)) {
		sd_error(c->resp, 429, "Throttled", "Too many requests from %s; retry after %d s.",
		         c->client, retry);
		sd_header(c->resp, "Retry-After", "%d", retry);
		return 0;
	}
	if (req->body_truncated || req->body_len > c->st->cfg->max_request_bytes) {
		sd_error(c->resp, 413, "RequestTooLarge", "The request body exceeds %zu bytes.",
		         c->st->cfg->max_request_bytes);
		return 0;
	}
	if (sd_base_url(c->st, req, c->base, sizeof(c->base)) < 0) {
		sd_error(c->resp, 400, "BadParameter", "Invalid Host header.");
		return 0;
	}
	version = (!sign && n == 3) || (sign && n == 4) ? segs[2] : NULL;
	c->audit = sd_audit_new(c, cert ? "get-certificate" : sign ? "sign" : "get-key", segs[1]);
	if (sd_authenticate(c, &id) < 0)
		goto out;
	if ((k = serve_keyring_find(&c->st->ring, segs[1])) == NULL ||
	    (version != NULL && strcmp(version, k->version) != 0)) {
		sd_not_found(c, cert, segs[1], version);
		goto out;
	}
	json_object_set_new(c->audit, "key", json_string(k->name));
	json_object_set_new(c->audit, "version", json_string(k->version));
	if (sd_policy(c, k, &id) < 0)
		goto out;
	if (cert)
		sd_certificate(c, k);
	else if (!sign)
		sd_key(c, k);
	else
		queued = sd_sign(c, k, done, userdata);
	if (!queued && c->audit != NULL) {
		sd_audit_finish(c->s, c->audit, c->resp->status == 200 ? "ok" : "error", NULL,
		                c->t0);
		c->audit = NULL;
	}
out:
	json_decref(c->audit);
	c->audit = NULL;
	hs_identity_clear(&id);
	return queued;
not_allowed:
	sd_error(c->resp, 405, "MethodNotAllowed", "Method %.16s is not allowed here.", m);
	sd_header(c->resp, "Allow", "%s",
	          strcmp(c->route, "sign") == 0      ? "POST"
	          : strcmp(c->route, "healthz") == 0 ? "GET, HEAD"
	                                             : "GET");
	return 0;
}

int hs_serve_handle(struct hs_serve *s, const struct hs_serve_request *req,
                    struct hs_serve_response *resp, hs_serve_done_fn done, void *userdata)
{
	struct sd_call c = {.s = s, .req = req, .resp = resp, .route = "other"};
	int queued;

	memset(resp, 0, sizeof(*resp));
	c.t0 = serve_now_us();
	c.st = serve_state_get(s);
	sd_client(&c);
	queued = sd_route(&c, done, userdata);
	if (queued)
		return 1; /* the job holds the state reference */
	serve_metrics_request(s->metrics, c.route, resp->status);
	serve_state_put(s, c.st);
	return 0;
}

struct sd_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

static void sd_wait_done(void *userdata)
{
	struct sd_wait *w = userdata;

	pthread_mutex_lock(&w->lock);
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

void hs_serve_handle_sync(struct hs_serve *s, const struct hs_serve_request *req,
                          struct hs_serve_response *resp)
{
	struct sd_wait w = {.done = false};

	pthread_mutex_init(&w.lock, NULL);
	pthread_cond_init(&w.cond, NULL);
	if (hs_serve_handle(s, req, resp, sd_wait_done, &w) == 1) {
		pthread_mutex_lock(&w.lock);
		while (!w.done)
			pthread_cond_wait(&w.cond, &w.lock);
		pthread_mutex_unlock(&w.lock);
	}
	pthread_mutex_destroy(&w.lock);
	pthread_cond_destroy(&w.cond);
}
