/*
 * keyring.c - the keys of a configuration: opened through the public
 * hs_key_open_*() of their provider, described once (version, certificate,
 * JWK data), and each served by a FIFO queue with `concurrency` signing
 * threads. A USB token signs one request at a time: requests wait their
 * turn (bounded by max_queue and queue_timeout_seconds) instead of failing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/sha.h>

#include "core/codec.h"
#include "keys/provider.h"
#include "serve_int.h"

#define KR_MAX_CERTS 16

/* Reads the members a provider uses; secrets via serve_secret_read(). */
struct kr_spec {
	struct hs_ctx *ctx;
	const json_t *spec;
	const char *where; /* "keys.NAME" */
	const char *base_dir;
	char *paths[KR_MAX_CERTS + 8]; /* resolved paths, freed at the end */
	size_t n_paths;
	char *secrets[4];
	size_t n_secrets;
	const char *certs[KR_MAX_CERTS + 1]; /* resolved "certificates" */
	size_t n_certs;
};

static int kr_str(struct kr_spec *s, const char *key, const char **out)
{
	json_t *v = json_object_get(s->spec, key);

	*out = NULL;
	if (v == NULL)
		return 0;
	if (!json_is_string(v) || json_string_length(v) == 0)
		return hs_error_set(s->ctx, HS_ERR_INVALID, "%s.%s: must be a non-empty string",
		                    s->where, key);
	*out = json_string_value(v);
	return 0;
}

static int kr_need(struct kr_spec *s, const char *key, const char **out)
{
	int r = kr_str(s, key, out);

	if (r == 0 && *out == NULL)
		r = hs_error_set(s->ctx, HS_ERR_INVALID, "%s.%s: missing", s->where, key);
	return r;
}

static const char *kr_resolve(struct kr_spec *s, const char *p)
{
	char *full;

	if (p == NULL || s->n_paths == sizeof(s->paths) / sizeof(s->paths[0]))
		return p;
	full = (p[0] == '/' || s->base_dir == NULL) ? strdup(p)
	                                            : hs_strprintf("%s/%s", s->base_dir, p);
	if (full == NULL)
		return p;
	s->paths[s->n_paths++] = full;
	return full;
}

/* A file member, relative to the configuration's directory. */
static int kr_file(struct kr_spec *s, const char *key, const char **out)
{
	int r = kr_str(s, key, out);

	if (r == 0 && *out != NULL)
		*out = kr_resolve(s, *out);
	return r;
}

static int kr_secret(struct kr_spec *s, const char *key, const char **out)
{
	char what[200], *value = NULL;
	const char *spec;
	int r;

	*out = NULL;
	if ((r = kr_str(s, key, &spec)) < 0 || spec == NULL)
		return r;
	snprintf(what, sizeof(what), "%s.%s", s->where, key);
	if ((r = serve_secret_read(s->ctx, spec, what, &value)) < 0)
		return r;
	s->secrets[s->n_secrets++] = value;
	*out = value;
	return 0;
}

static int kr_certs(struct kr_spec *s)
{
	json_t *arr = json_object_get(s->spec, "certificates"), *c;
	size_t i;

	json_array_foreach(arr, i, c)
	{
		if (s->n_certs == KR_MAX_CERTS)
			return hs_error_set(s->ctx, HS_ERR_INVALID,
			                    "%s.certificates: at most %d files", s->where,
			                    KR_MAX_CERTS);
		s->certs[s->n_certs++] = kr_resolve(s, json_string_value(c));
	}
	s->certs[s->n_certs] = NULL;
	return 0;
}

static void kr_spec_clear(struct kr_spec *s)
{
	for (size_t i = 0; i < s->n_paths; i++)
		free(s->paths[i]);
	for (size_t i = 0; i < s->n_secrets; i++)
		serve_secret_free(s->secrets[i]);
}

static const char *const kr_common[] = {"provider",     "concurrency", "allow",
                                        "certificates", "$comment",    NULL};

static int kr_known(struct kr_spec *s, const char *const *extra)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)s->spec, k, v)
	{
		bool ok = false;

		(void)v;
		for (size_t i = 0; kr_common[i] && !ok; i++)
			ok = strcmp(k, kr_common[i]) == 0;
		for (size_t i = 0; extra[i] && !ok; i++)
			ok = strcmp(k, extra[i]) == 0;
		if (!ok)
			return hs_error_set(s->ctx, HS_ERR_INVALID, "%s.%s: unknown setting",
			                    s->where, k);
	}
	return 0;
}

static int kr_open_file(struct kr_spec *s, struct hs_key **out)
{
	static const char *const known[] = {"key", "pfx", "password", NULL};
	struct hs_key_file_opts o = HS_KEY_FILE_OPTS_INIT;
	int r;

	if ((r = kr_known(s, known)) < 0 || (r = kr_file(s, "key", &o.key_path)) < 0 ||
	    (r = kr_file(s, "pfx", &o.pfx_path)) < 0 ||
	    (r = kr_secret(s, "password", &o.password)) < 0)
		return r;
	if (o.pfx_path == NULL && (o.key_path == NULL || s->n_certs == 0))
		return hs_error_set(s->ctx, HS_ERR_INVALID,
		                    "%s: a file key needs \"key\" and \"certificates\", or \"pfx\"",
		                    s->where);
	if (o.pfx_path == NULL)
		o.cert_path = s->certs[0];
	if ((r = hs_key_open_file(s->ctx, out, &o)) < 0)
		return r;
	/* certificates[1..] complete the chain of a key+certificate pair; with
	 * a PKCS#12 file every listed file does. */
	return hs_key_add_cert_files(s->ctx, (*out)->chain,
	                             o.pfx_path ? s->certs : s->certs + (s->n_certs ? 1 : 0));
}

static int kr_open_pkcs11(struct kr_spec *s, int concurrency, struct hs_key **out)
{
	static const char *const known[] = {"module", "uri", "pin", NULL};
	struct hs_pkcs11_key_opts o = HS_PKCS11_KEY_OPTS_INIT;
	int r;

	if ((r = kr_known(s, known)) < 0 || (r = kr_str(s, "module", &o.module)) < 0 ||
	    (r = kr_need(s, "uri", &o.uri)) < 0 || (r = kr_secret(s, "pin", &o.pin)) < 0)
		return r;
	o.cert_file = s->n_certs ? s->certs[0] : NULL;
	o.extra_certs = s->n_certs > 1 ? s->certs + 1 : NULL;
	o.sessions = concurrency;
	return hs_key_open_pkcs11(s->ctx, out, &o);
}

static int kr_open_azure(struct kr_spec *s, struct hs_key **out)
{
	static const char *const known[] = {
	        "vault_url", "certificate",   "certificate_version", "credential", "tenant_id",
	        "client_id", "client_secret", "access_token",        "ca_file",    NULL};
	struct hs_azure_key_opts o = HS_AZURE_KEY_OPTS_INIT;
	int r;

	if ((r = kr_known(s, known)) < 0 || (r = kr_need(s, "vault_url", &o.vault_url)) < 0 ||
	    (r = kr_need(s, "certificate", &o.certificate)) < 0 ||
	    (r = kr_str(s, "certificate_version", &o.certificate_version)) < 0 ||
	    (r = kr_str(s, "credential", &o.credential)) < 0 ||
	    (r = kr_str(s, "tenant_id", &o.tenant_id)) < 0 ||
	    (r = kr_str(s, "client_id", &o.client_id)) < 0 ||
	    (r = kr_secret(s, "client_secret", &o.client_secret)) < 0 ||
	    (r = kr_secret(s, "access_token", &o.access_token)) < 0 ||
	    (r = kr_file(s, "ca_file", &o.ca_file)) < 0)
		return r;
	o.extra_certs = s->n_certs ? s->certs : NULL;
	return hs_key_open_azure(s->ctx, out, &o);
}

static int kr_open_aws(struct kr_spec *s, struct hs_key **out)
{
	static const char *const known[] = {"key_id",   "region",  "profile",
	                                    "endpoint", "ca_file", NULL};
	struct hs_aws_kms_key_opts o = HS_AWS_KMS_KEY_OPTS_INIT;
	int r;

	if ((r = kr_known(s, known)) < 0 || (r = kr_need(s, "key_id", &o.key_id)) < 0 ||
	    (r = kr_str(s, "region", &o.region)) < 0 ||
	    (r = kr_str(s, "profile", &o.profile)) < 0 ||
	    (r = kr_str(s, "endpoint", &o.endpoint)) < 0 ||
	    (r = kr_file(s, "ca_file", &o.ca_file)) < 0)
		return r;
	o.cert_file = s->n_certs ? s->certs[0] : NULL;
	o.extra_certs = s->n_certs > 1 ? s->certs + 1 : NULL;
	return hs_key_open_aws_kms(s->ctx, out, &o);
}

static int kr_open_gcp(struct kr_spec *s, struct hs_key **out)
{
	static const char *const known[] = {"key",      "credentials_file", "access_token",
	                                    "endpoint", "ca_file",          NULL};
	struct hs_gcp_kms_key_opts o = HS_GCP_KMS_KEY_OPTS_INIT;
	int r;

	if ((r = kr_known(s, known)) < 0 || (r = kr_need(s, "key", &o.key)) < 0 ||
	    (r = kr_file(s, "credentials_file", &o.credentials_file)) < 0 ||
	    (r = kr_secret(s, "access_token", &o.access_token)) < 0 ||
	    (r = kr_str(s, "endpoint", &o.endpoint)) < 0 ||
	    (r = kr_file(s, "ca_file", &o.ca_file)) < 0)
		return r;
	o.cert_file = s->n_certs ? s->certs[0] : NULL;
	o.extra_certs = s->n_certs > 1 ? s->certs + 1 : NULL;
	return hs_key_open_gcp_kms(s->ctx, out, &o);
}

static int kr_open_vault(struct kr_spec *s, struct hs_key **out)
{
	static const char *const known[] = {"addr",        "key",     "mount",     "namespace",
	                                    "token",       "role_id", "secret_id", "ca_file",
	                                    "key_version", NULL};
	struct hs_vault_transit_key_opts o = HS_VAULT_TRANSIT_KEY_OPTS_INIT;
	json_t *kv;
	int r;

	if ((r = kr_known(s, known)) < 0 || (r = kr_str(s, "addr", &o.addr)) < 0 ||
	    (r = kr_need(s, "key", &o.key)) < 0 || (r = kr_str(s, "mount", &o.mount)) < 0 ||
	    (r = kr_str(s, "namespace", &o.vault_namespace)) < 0 ||
	    (r = kr_secret(s, "token", &o.token)) < 0 ||
	    (r = kr_str(s, "role_id", &o.role_id)) < 0 ||
	    (r = kr_secret(s, "secret_id", &o.secret_id)) < 0 ||
	    (r = kr_file(s, "ca_file", &o.ca_file)) < 0)
		return r;
	if ((kv = json_object_get(s->spec, "key_version")) != NULL) {
		if (!json_is_integer(kv) || json_integer_value(kv) < 1)
			return hs_error_set(s->ctx, HS_ERR_INVALID,
			                    "%s.key_version: must be a positive integer", s->where);
		o.key_version = (long)json_integer_value(kv);
	}
	o.cert_file = s->n_certs ? s->certs[0] : NULL;
	o.extra_certs = s->n_certs > 1 ? s->certs + 1 : NULL;
	return hs_key_open_vault_transit(s->ctx, out, &o);
}

static char *kr_b64(const uint8_t *data, size_t len, bool url)
{
	struct hs_buf b = {0};
	char *s = NULL;

	if (hs_base64_encode(&b, data, len, url) == 0 && hs_buf_append(&b, "", 1) == 0)
		s = (char *)b.data;
	else
		hs_buf_free(&b);
	return s;
}

static long long kr_time(const ASN1_TIME *t)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (long long)timegm(&tm);
}

/* Version, certificate data and key type from the chain. */
static int kr_describe(struct hs_ctx *ctx, struct serve_key *k)
{
	STACK_OF(X509) *chain = k->key->chain;
	X509 *leaf = sk_X509_value(chain, 0);
	EVP_PKEY *pub = X509_get0_pubkey(leaf);
	unsigned char sha256[32], sha1[20], *der = NULL;
	int der_len;

	if (leaf == NULL || pub == NULL)
		return hs_error_set(ctx, HS_ERR_CRYPTO, "key '%s' has no certificate", k->name);
	if ((der_len = i2d_X509(leaf, &der)) <= 0) {
		ERR_clear_error();
		return hs_error_set(ctx, HS_ERR_CRYPTO, "key '%s': cannot encode its certificate",
		                    k->name);
	}
	SHA256(der, (size_t)der_len, sha256);
	SHA1(der, (size_t)der_len, sha1);
	for (int i = 0; i < 16; i++)
		snprintf(k->version + 2 * i, 3, "%02x", sha256[i]);
	k->cer_b64 = kr_b64(der, (size_t)der_len, false);
	k->x5t = kr_b64(sha1, sizeof(sha1), true);
	OPENSSL_free(der);
	k->x5c = json_array();
	for (int i = 0; i < sk_X509_num(chain); i++) {
		unsigned char *d = NULL;
		int n = i2d_X509(sk_X509_value(chain, i), &d);
		char *b = n > 0 ? kr_b64(d, (size_t)n, false) : NULL;

		OPENSSL_free(d);
		if (b == NULL || k->x5c == NULL ||
		    json_array_append_new(k->x5c, json_string(b)) < 0) {
			free(b);
			return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		}
		free(b);
	}
	if (k->cer_b64 == NULL || k->x5t == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	k->nbf = kr_time(X509_get0_notBefore(leaf));
	k->exp = kr_time(X509_get0_notAfter(leaf));
	k->bits = EVP_PKEY_get_bits(pub);
	k->rsa = EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA;
	if (!k->rsa) {
		if (EVP_PKEY_get_base_id(pub) != EVP_PKEY_EC)
			return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
			                    "key '%s': only RSA and EC keys can be served",
			                    k->name);
		k->ec_width = (k->bits + 7) / 8;
		snprintf(k->curve, sizeof(k->curve), "P-%d", k->bits);
	}
	k->hsm = strcmp(hs_key_provider_name(k->key), "file") != 0;
	k->subject = strdup(hs_key_subject(k->key));
	return 0;
}

static int kr_sign(struct hs_ctx *ctx, struct serve_job *job)
{
	struct serve_key *k = job->key;
	struct hs_buf sig = {0};
	ECDSA_SIG *es = NULL;
	const unsigned char *p;
	int r;

	if ((r = hs_key_sign_digest(ctx, k->key, job->md, job->digest, job->digest_len, &sig)) < 0)
		goto out;
	if (k->rsa) {
		if (sig.len > sizeof(job->sig)) {
			r = hs_error_set(ctx, HS_ERR_CRYPTO, "signature too large");
			goto out;
		}
		memcpy(job->sig, sig.data, sig.len);
		job->sig_len = sig.len;
		goto out;
	}
	p = sig.data;
	if ((es = d2i_ECDSA_SIG(NULL, &p, (long)sig.len)) == NULL ||
	    (size_t)k->ec_width * 2 > sizeof(job->sig) ||
	    BN_bn2binpad(ECDSA_SIG_get0_r(es), job->sig, k->ec_width) < 0 ||
	    BN_bn2binpad(ECDSA_SIG_get0_s(es), job->sig + k->ec_width, k->ec_width) < 0) {
		ERR_clear_error();
		r = hs_error_set(ctx, HS_ERR_CRYPTO, "cannot convert the ECDSA signature");
		goto out;
	}
	job->sig_len = (size_t)k->ec_width * 2;
out:
	ECDSA_SIG_free(es);
	hs_buf_free(&sig);
	return r;
}

static void *kr_worker(void *arg)
{
	struct serve_key *k = arg;
	struct hs_ctx *ctx = NULL;

	if (hs_ctx_new(&ctx) == 0)
		hs_ctx_set_log(ctx, k->log, k->log_userdata);
	for (;;) {
		struct serve_job *job;
		int64_t t0;

		pthread_mutex_lock(&k->lock);
		while (k->head == NULL && !k->stopping)
			pthread_cond_wait(&k->cond, &k->lock);
		if ((job = k->head) == NULL) {
			pthread_mutex_unlock(&k->lock);
			break;
		}
		if ((k->head = job->next) == NULL)
			k->tail = NULL;
		k->queued--;
		k->running++;
		pthread_mutex_unlock(&k->lock);

		t0 = serve_now_us();
		job->message[0] = '\0';
		if (t0 - job->enqueued_us > k->queue_timeout_us) {
			job->result = HS_ERR_THROTTLED;
			snprintf(job->message, sizeof(job->message),
			         "the request waited more than %lld s for key '%s'",
			         (long long)(k->queue_timeout_us / 1000000), k->name);
		} else if (ctx == NULL) {
			job->result = HS_ERR_NOMEM;
			snprintf(job->message, sizeof(job->message), "out of memory");
		} else {
			/* Test points: a slow token (queue timeout tests), a
			 * remote HSM's latency (bench/many-files --serve). */
			long delay_ms = hs_fault_value("serve-sign-delay-ms");

			if (hs_fault("serve-slow-sign"))
				usleep(1500 * 1000);
			if (delay_ms > 0)
				usleep((useconds_t)delay_ms * 1000);
			hs_ctx_clear_error(ctx);
			job->result = kr_sign(ctx, job);
			if (job->result < 0)
				snprintf(job->message, sizeof(job->message), "%s",
				         hs_ctx_message(ctx));
		}
		job->sign_ms = (double)(serve_now_us() - t0) / 1000.0;
		job->finish(job); /* may free job */

		/* No wakeup here: idle workers wait for a job (submit signals
		 * one) or for the stop, never for this count. A broadcast here
		 * woke every idle worker after every signature, which cost
		 * more CPU than signing (docs/PERFORMANCE.md). */
		pthread_mutex_lock(&k->lock);
		k->running--;
		pthread_mutex_unlock(&k->lock);
	}
	hs_ctx_free(ctx);
	return NULL;
}

int serve_key_submit(struct serve_key *k, struct serve_job *job)
{
	int r = 0;

	job->next = NULL;
	job->key = k;
	job->enqueued_us = serve_now_us();
	pthread_mutex_lock(&k->lock);
	if (k->stopping || k->queued >= k->max_queue) {
		r = HS_ERR_THROTTLED;
	} else {
		if (k->tail)
			k->tail->next = job;
		else
			k->head = job;
		k->tail = job;
		k->queued++;
		pthread_cond_signal(&k->cond);
	}
	pthread_mutex_unlock(&k->lock);
	return r;
}

size_t serve_key_depth(struct serve_key *k)
{
	size_t n;

	pthread_mutex_lock(&k->lock);
	n = k->queued;
	pthread_mutex_unlock(&k->lock);
	return n;
}

static int kr_open_one(struct hs_ctx *ctx, const struct serve_config *cfg,
                       const struct serve_key_cfg *kc, struct serve_key *k)
{
	char where[160];
	struct kr_spec s = {
	        .ctx = ctx, .spec = kc->spec, .where = where, .base_dir = cfg->base_dir};
	const char *provider = json_string_value(json_object_get(kc->spec, "provider"));
	json_t *conc = json_object_get(kc->spec, "concurrency");
	int r;

	snprintf(where, sizeof(where), "keys.%s", kc->name);
	k->concurrency = conc ? (int)json_integer_value(conc) : 1;
	k->allow = json_object_get(kc->spec, "allow");
	if ((k->name = strdup(kc->name)) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = kr_certs(&s)) < 0)
		goto out;
	if (strcmp(provider, "file") == 0)
		r = kr_open_file(&s, &k->key);
	else if (strcmp(provider, "pkcs11") == 0)
		r = kr_open_pkcs11(&s, k->concurrency, &k->key);
	else if (strcmp(provider, "azure") == 0)
		r = kr_open_azure(&s, &k->key);
	else if (strcmp(provider, "aws-kms") == 0)
		r = kr_open_aws(&s, &k->key);
	else if (strcmp(provider, "gcp-kms") == 0)
		r = kr_open_gcp(&s, &k->key);
	else
		r = kr_open_vault(&s, &k->key);
	if (r < 0)
		goto out;
	r = kr_describe(ctx, k);
out:
	kr_spec_clear(&s);
	if (r < 0 && hs_ctx_message(ctx)[0] != '\0' &&
	    strncmp(hs_ctx_message(ctx), "keys.", 5) != 0) {
		/* Name the key in messages from the provider. */
		char msg[HS_MSG_MAX];
		int code = hs_ctx_error(ctx);

		snprintf(msg, sizeof(msg), "%s", hs_ctx_message(ctx));
		hs_ctx_clear_error(ctx);
		hs_error_set(ctx, code, "%s: %s", where, msg);
	}
	return r;
}

static int kr_start(struct hs_ctx *ctx, struct serve_key *k)
{
	pthread_mutex_init(&k->lock, NULL);
	pthread_cond_init(&k->cond, NULL);
	if ((k->threads = calloc((size_t)k->concurrency, sizeof(*k->threads))) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	for (int i = 0; i < k->concurrency; i++) {
		if (pthread_create(&k->threads[i], NULL, kr_worker, k) != 0)
			return hs_error_set(ctx, HS_ERR_NOMEM, "cannot start a signing thread");
		k->n_threads++;
	}
	return 0;
}

int serve_keyring_open(struct hs_ctx *ctx, const struct serve_config *cfg, hs_log_fn log,
                       void *log_userdata, struct serve_keyring *out)
{
	struct serve_keyring ring = {0};
	int r = 0;

	*out = ring;
	if ((ring.keys = calloc(cfg->n_keys, sizeof(*ring.keys))) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < cfg->n_keys; i++) {
		struct serve_key *k = &ring.keys[i];

		k->log = log;
		k->log_userdata = log_userdata;
		k->max_queue = cfg->max_queue;
		k->queue_timeout_us = (int64_t)cfg->queue_timeout_s * 1000000;
		ring.n = i + 1;
		if ((r = kr_open_one(ctx, cfg, &cfg->keys[i], k)) < 0 || (r = kr_start(ctx, k)) < 0)
			break;
	}
	if (r < 0) {
		serve_keyring_close(&ring);
		return r;
	}
	*out = ring;
	return 0;
}

void serve_keyring_close(struct serve_keyring *ring)
{
	for (size_t i = 0; i < ring->n; i++) {
		struct serve_key *k = &ring->keys[i];

		if (k->threads != NULL) {
			pthread_mutex_lock(&k->lock);
			k->stopping = true;
			pthread_cond_broadcast(&k->cond);
			pthread_mutex_unlock(&k->lock);
			for (size_t t = 0; t < k->n_threads; t++)
				pthread_join(k->threads[t], NULL);
			free(k->threads);
			pthread_mutex_destroy(&k->lock);
			pthread_cond_destroy(&k->cond);
		}
		hs_key_free(k->key);
		json_decref(k->x5c);
		free(k->name);
		free(k->cer_b64);
		free(k->x5t);
		free(k->subject);
	}
	free(ring->keys);
	ring->keys = NULL;
	ring->n = 0;
}

struct serve_key *serve_keyring_find(const struct serve_keyring *ring, const char *name)
{
	for (size_t i = 0; i < ring->n; i++)
		if (strcasecmp(ring->keys[i].name, name) == 0)
			return &ring->keys[i];
	return NULL;
}
