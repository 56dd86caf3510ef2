/*
 * config.c - the `hsmsign serve` configuration file (JSON; docs/server.md
 * "Configuration reference"): parsing, validation with one-line errors that
 * name the JSON path, and secrets given as env:NAME or file:PATH.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "serve_int.h"

#define CFG_SECRET_MAX 4096

static const char *const cfg_top_keys[] = {"listen",      "tls",      "audit_log", "audit_fsync",
                                           "trust_proxy", "limits",   "issuers",   "api_tokens",
                                           "keys",        "$comment", NULL};
static const char *const cfg_tls_keys[] = {"certificate", "key", "client_ca",
                                           "require_client_certificate", NULL};
static const char *const cfg_limit_keys[] = {"max_request_bytes",
                                             "requests_per_second_per_client",
                                             "burst",
                                             "max_queue",
                                             "queue_timeout_seconds",
                                             "max_connections",
                                             "threads",
                                             NULL};
static const char *const cfg_providers[] = {"file",    "pkcs11",        "azure", "aws-kms",
                                            "gcp-kms", "vault-transit", NULL};

static bool cfg_in(const char *s, const char *const *list)
{
	for (size_t i = 0; list[i] != NULL; i++)
		if (strcmp(s, list[i]) == 0)
			return true;
	return false;
}

/* Refuses members of obj not in allowed (typos would silently do nothing). */
static int cfg_known(struct hs_ctx *ctx, const json_t *obj, const char *where,
                     const char *const *allowed)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)obj, k, v)
	{
		(void)v;
		if (!cfg_in(k, allowed))
			return hs_error_set(ctx, HS_ERR_INVALID, "%s%s%s: unknown setting", where,
			                    where[0] ? "." : "", k);
	}
	return 0;
}

/* Optional string member: *out borrowed, NULL when absent. */
static int cfg_string(struct hs_ctx *ctx, const json_t *obj, const char *key, const char *where,
                      const char **out)
{
	json_t *v = json_object_get(obj, key);

	*out = NULL;
	if (v == NULL)
		return 0;
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 4096)
		return hs_error_set(ctx, HS_ERR_INVALID, "%s%s%s: must be a non-empty string",
		                    where, where[0] ? "." : "", key);
	*out = json_string_value(v);
	return 0;
}

static int cfg_bool(struct hs_ctx *ctx, const json_t *obj, const char *key, const char *where,
                    bool *out)
{
	json_t *v = json_object_get(obj, key);

	if (v == NULL)
		return 0;
	if (!json_is_boolean(v))
		return hs_error_set(ctx, HS_ERR_INVALID, "%s%s%s: must be true or false", where,
		                    where[0] ? "." : "", key);
	*out = json_is_true(v);
	return 0;
}

static int cfg_number(struct hs_ctx *ctx, const json_t *obj, const char *key, const char *where,
                      double min, double max, bool integer, double *out)
{
	json_t *v = json_object_get(obj, key);
	double d;

	if (v == NULL)
		return 0;
	if (!json_is_number(v) || (integer && !json_is_integer(v)))
		goto bad;
	d = json_number_value(v);
	if (d < min || d > max)
		goto bad;
	*out = d;
	return 0;
bad:
	return hs_error_set(ctx, HS_ERR_INVALID, "%s.%s: must be %s from %g to %g", where, key,
	                    integer ? "an integer" : "a number", min, max);
}

/* A path relative to the configuration file's directory; malloc'd. */
static char *cfg_path(const char *base_dir, const char *p)
{
	if (p[0] == '/' || base_dir == NULL)
		return strdup(p);
	return hs_strprintf("%s/%s", base_dir, p);
}

static bool cfg_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return false;
}

/* "HOST:PORT" or "[V6]:PORT". */
static int cfg_listen(struct hs_ctx *ctx, struct serve_config *cfg, const char *listen)
{
	const char *colon, *host = listen;
	size_t host_len;
	char *end;
	long port;

	if (listen[0] == '[') {
		const char *close = strchr(listen, ']');
		if (close == NULL || close[1] != ':')
			goto bad;
		host = listen + 1;
		host_len = (size_t)(close - host);
		colon = close + 1;
	} else {
		if ((colon = strrchr(listen, ':')) == NULL)
			goto bad;
		host_len = (size_t)(colon - listen);
	}
	if (host_len == 0 || host_len >= sizeof(cfg->listen_host))
		goto bad;
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535)
		goto bad;
	memcpy(cfg->listen_host, host, host_len);
	cfg->listen_host[host_len] = '\0';
	cfg->port = (unsigned)port;
	cfg->loopback = cfg_is_loopback(cfg->listen_host);
	return 0;
bad:
	return hs_error_set(ctx, HS_ERR_INVALID,
	                    "listen: expected \"HOST:PORT\" or \"[IPV6]:PORT\", got \"%s\"",
	                    listen);
}

static int cfg_tls(struct hs_ctx *ctx, struct serve_config *cfg, const json_t *tls)
{
	const char *cert, *key, *ca;
	int r;

	if (!json_is_object(tls))
		return hs_error_set(ctx, HS_ERR_INVALID, "tls: must be an object");
	if ((r = cfg_known(ctx, tls, "tls", cfg_tls_keys)) < 0 ||
	    (r = cfg_string(ctx, tls, "certificate", "tls", &cert)) < 0 ||
	    (r = cfg_string(ctx, tls, "key", "tls", &key)) < 0 ||
	    (r = cfg_string(ctx, tls, "client_ca", "tls", &ca)) < 0 ||
	    (r = cfg_bool(ctx, tls, "require_client_certificate", "tls",
	                  &cfg->require_client_cert)) < 0)
		return r;
	if (cert == NULL || key == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID, "tls.%s: missing (the server's %s file)",
		                    cert == NULL ? "certificate" : "key",
		                    cert == NULL ? "certificate chain PEM" : "private key PEM");
	if (cfg->require_client_cert && ca == NULL)
		return hs_error_set(
		        ctx, HS_ERR_INVALID,
		        "tls.client_ca: required when require_client_certificate is true");
	cfg->tls_cert = cfg_path(cfg->base_dir, cert);
	cfg->tls_key = cfg_path(cfg->base_dir, key);
	cfg->tls_client_ca = ca ? cfg_path(cfg->base_dir, ca) : NULL;
	if (cfg->tls_cert == NULL || cfg->tls_key == NULL || (ca && cfg->tls_client_ca == NULL))
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	return 0;
}

static int cfg_limits(struct hs_ctx *ctx, struct serve_config *cfg, const json_t *lim)
{
	double body = (double)cfg->max_request_bytes, queue = (double)cfg->max_queue;
	double timeout = cfg->queue_timeout_s, conns = cfg->max_connections, threads = cfg->threads;
	int r;

	if (lim == NULL)
		return 0;
	if (!json_is_object(lim))
		return hs_error_set(ctx, HS_ERR_INVALID, "limits: must be an object");
	if ((r = cfg_known(ctx, lim, "limits", cfg_limit_keys)) < 0 ||
	    (r = cfg_number(ctx, lim, "max_request_bytes", "limits", 1024, 16 * 1024 * 1024, true,
	                    &body)) < 0 ||
	    (r = cfg_number(ctx, lim, "requests_per_second_per_client", "limits", 0, 1e6, false,
	                    &cfg->rps)) < 0 ||
	    (r = cfg_number(ctx, lim, "burst", "limits", 1, 1e7, false, &cfg->burst)) < 0 ||
	    (r = cfg_number(ctx, lim, "max_queue", "limits", 0, 1e7, true, &queue)) < 0 ||
	    (r = cfg_number(ctx, lim, "queue_timeout_seconds", "limits", 1, 86400, true,
	                    &timeout)) < 0 ||
	    (r = cfg_number(ctx, lim, "max_connections", "limits", 1, 65536, true, &conns)) < 0 ||
	    (r = cfg_number(ctx, lim, "threads", "limits", 1, 256, true, &threads)) < 0)
		return r;
	cfg->max_request_bytes = (size_t)body;
	cfg->max_queue = (size_t)queue;
	cfg->queue_timeout_s = (int)timeout;
	cfg->max_connections = (unsigned)conns;
	cfg->threads = (unsigned)threads;
	return 0;
}

/* Key Vault object names: 1-127 of [0-9a-zA-Z-]. */
static bool cfg_key_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 127)
		return false;
	return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") == n;
}

static int cfg_keys(struct hs_ctx *ctx, struct serve_config *cfg, const json_t *keys)
{
	const char *name, *provider;
	json_t *spec, *v;
	size_t i = 0;
	int r;

	if (!json_is_object(keys) || json_object_size(keys) == 0)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "keys: must be an object naming at least one key");
	cfg->keys = calloc(json_object_size(keys), sizeof(*cfg->keys));
	if (cfg->keys == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	json_object_foreach((json_t *)keys, name, spec)
	{
		char where[160];

		snprintf(where, sizeof(where), "keys.%.127s", name);
		if (!cfg_key_name_ok(name))
			return hs_error_set(ctx, HS_ERR_INVALID,
			                    "%s: key names are 1-127 letters, digits and '-'",
			                    where);
		if (!json_is_object(spec))
			return hs_error_set(ctx, HS_ERR_INVALID, "%s: must be an object", where);
		if ((r = cfg_string(ctx, spec, "provider", where, &provider)) < 0)
			return r;
		if (provider == NULL || !cfg_in(provider, cfg_providers))
			return hs_error_set(
			        ctx, HS_ERR_INVALID,
			        "%s.provider: must be one of file, pkcs11, azure, aws-kms, "
			        "gcp-kms, vault-transit",
			        where);
		if ((v = json_object_get(spec, "concurrency")) != NULL &&
		    (!json_is_integer(v) || json_integer_value(v) < 1 ||
		     json_integer_value(v) > 64))
			return hs_error_set(ctx, HS_ERR_INVALID,
			                    "%s.concurrency: must be an integer from 1 to 64",
			                    where);
		if ((v = json_object_get(spec, "allow")) != NULL) {
			size_t j;
			json_t *rule;

			if (!json_is_array(v))
				return hs_error_set(ctx, HS_ERR_INVALID,
				                    "%s.allow: must be an array of rules", where);
			json_array_foreach(v, j, rule)
			{
				if (!json_is_object(rule) || json_object_size(rule) == 0)
					return hs_error_set(
					        ctx, HS_ERR_INVALID,
					        "%s.allow[%zu]: must be a non-empty object "
					        "of claim: value",
					        where, j);
			}
		}
		if ((v = json_object_get(spec, "certificates")) != NULL) {
			size_t j;
			json_t *c;

			if (!json_is_array(v))
				return hs_error_set(ctx, HS_ERR_INVALID,
				                    "%s.certificates: must be an array of files",
				                    where);
			json_array_foreach(v, j, c)
			{
				if (!json_is_string(c))
					return hs_error_set(
					        ctx, HS_ERR_INVALID,
					        "%s.certificates[%zu]: must be a file name", where,
					        j);
			}
		}
		cfg->keys[i].name = name;
		cfg->keys[i].spec = spec;
		i++;
	}
	cfg->n_keys = i;
	return 0;
}

int serve_config_parse(struct hs_ctx *ctx, json_t *root, const char *base_dir,
                       struct serve_config **out)
{
	struct serve_config *cfg = calloc(1, sizeof(*cfg));
	const char *listen, *audit;
	json_t *tls;
	int r;

	*out = NULL;
	if (cfg == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	cfg->root = json_incref(root);
	cfg->max_request_bytes = 65536;
	cfg->rps = 50;
	cfg->burst = 200;
	cfg->max_queue = 10000;
	cfg->queue_timeout_s = 120;
	cfg->max_connections = 2048;
	cfg->threads = 8;
	if (base_dir != NULL && (cfg->base_dir = strdup(base_dir)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (!json_is_object(root)) {
		r = hs_error_set(ctx, HS_ERR_INVALID, "the configuration must be a JSON object");
		goto out;
	}
	if ((r = cfg_known(ctx, root, "", cfg_top_keys)) < 0 ||
	    (r = cfg_string(ctx, root, "listen", "", &listen)) < 0 ||
	    (r = cfg_string(ctx, root, "audit_log", "", &audit)) < 0 ||
	    (r = cfg_bool(ctx, root, "audit_fsync", "", &cfg->audit_fsync)) < 0 ||
	    (r = cfg_bool(ctx, root, "trust_proxy", "", &cfg->trust_proxy)) < 0)
		goto out;
	if (listen == NULL) {
		r = hs_error_set(ctx, HS_ERR_INVALID, "listen: missing (e.g. \"0.0.0.0:8443\")");
		goto out;
	}
	if ((r = cfg_listen(ctx, cfg, listen)) < 0)
		goto out;
	if ((tls = json_object_get(root, "tls")) != NULL && (r = cfg_tls(ctx, cfg, tls)) < 0)
		goto out;
	if (tls == NULL && !cfg->loopback) {
		r = hs_error_set(ctx, HS_ERR_INVALID,
		                 "listen: plain HTTP (no \"tls\") is allowed only on a loopback "
		                 "address, not %s (configure tls, or listen on 127.0.0.1 behind a "
		                 "TLS proxy)",
		                 cfg->listen_host);
		goto out;
	}
	if (audit != NULL && (cfg->audit_log = cfg_path(cfg->base_dir, audit)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = cfg_limits(ctx, cfg, json_object_get(root, "limits"))) < 0 ||
	    (r = cfg_keys(ctx, cfg, json_object_get(root, "keys"))) < 0)
		goto out;
	*out = cfg;
	cfg = NULL;
out:
	serve_config_free(cfg);
	return r;
}

int serve_config_load(struct hs_ctx *ctx, const char *path, struct serve_config **out)
{
	json_error_t jerr;
	json_t *root;
	char *dir = NULL, *slash;
	int r;

	*out = NULL;
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID, "%s: line %d: %s", path, jerr.line,
		                    jerr.text);
	if ((dir = strdup(path)) == NULL) {
		json_decref(root);
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	if ((slash = strrchr(dir, '/')) != NULL)
		*slash = '\0';
	r = serve_config_parse(ctx, root, slash ? dir : NULL, out);
	json_decref(root);
	free(dir);
	return r;
}

void serve_config_free(struct serve_config *cfg)
{
	if (cfg == NULL)
		return;
	json_decref(cfg->root);
	free(cfg->base_dir);
	free(cfg->tls_cert);
	free(cfg->tls_key);
	free(cfg->tls_client_ca);
	free(cfg->audit_log);
	free(cfg->keys);
	free(cfg);
}

static char *secret_dup(const char *s, size_t n)
{
	char *copy = OPENSSL_secure_malloc(n + 1);

	if (copy != NULL) {
		memcpy(copy, s, n);
		copy[n] = '\0';
	}
	return copy;
}

int serve_secret_read(struct hs_ctx *ctx, const char *spec, const char *what, char **out)
{
	char buf[CFG_SECRET_MAX + 2];
	size_t n;
	FILE *f;

	*out = NULL;
	if (strncmp(spec, "env:", 4) == 0) {
		const char *v = getenv(spec + 4);
		if (v == NULL)
			return hs_error_set(ctx, HS_ERR_INVALID,
			                    "%s: environment variable %.64s is not set", what,
			                    spec + 4);
		*out = secret_dup(v, strlen(v));
	} else if (strncmp(spec, "file:", 5) == 0) {
		if ((f = fopen(spec + 5, "rb")) == NULL)
			return hs_error_set(ctx, HS_ERR_INVALID, "%s: cannot open %s: %s", what,
			                    spec + 5, strerror(errno));
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		if (n > CFG_SECRET_MAX) {
			OPENSSL_cleanse(buf, sizeof(buf));
			return hs_error_set(ctx, HS_ERR_INVALID, "%s: %s is too large", what,
			                    spec + 5);
		}
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
			n--;
		*out = secret_dup(buf, n);
		OPENSSL_cleanse(buf, sizeof(buf));
	} else {
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "%s: give secrets as env:NAME or file:PATH, never literally",
		                    what);
	}
	return *out ? 0 : hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
}

void serve_secret_free(char *s)
{
	if (s != NULL)
		OPENSSL_secure_clear_free(s, strlen(s) + 1);
}
