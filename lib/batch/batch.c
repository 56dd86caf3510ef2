/*
 * batch.c - batch signing (hs_batch_sign): worker threads, each with its
 * own context, take the next file from a shared index. A file is signed
 * start to finish by one thread (hash, one sign call, embed, commit). With
 * N jobs the key takes at most N sign calls at once, and there are N + N/2
 * threads: while N files wait for their signature, the others create,
 * hash, write and fsync files, which on a disk costs a third as much as a
 * 30 ms vault call (docs/PERFORMANCE.md) and would otherwise leave the
 * vault idle. Stopping (first failure, or the caller's cancel flag) only
 * stops handing out files: a file is never abandoned midway.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pkcs7.h>
#include <openssl/ts.h>
#include <openssl/x509.h>

#include "authenticode/asn1.h"
#include "authenticode/timestamp.h"
#include "formats/format.h"
#include "keys/provider.h"

/* More threads than this would only add contention. */
#define BATCH_JOBS_MAX 256

struct batch_run {
	pthread_mutex_t lock; /* next, done, stop, and the on_done calls */
	size_t next, done, n;
	bool stop;
	struct hs_batch_item *items;
	struct hs_key *key;
	const struct hs_sign_opts *sign;
	const struct hs_batch_opts *opts;
};

int hs_file_format(struct hs_ctx *ctx, const char *path, const char **format)
{
	struct hs_doc doc;
	int r;

	*format = NULL;
	if ((r = hs_doc_open(ctx, &doc, path)) < 0)
		return r;
	*format = doc.format->name;
	hs_doc_close(&doc);
	return 0;
}

static double batch_now(void)
{
	return (double)hs_os_monotonic_us() / 1e6;
}

/* SHA-256 of a whole file into md; -1 when it cannot be read. */
static int batch_sha256(const char *path, uint8_t md[32])
{
	static const size_t chunk = 1 << 20;
	EVP_MD_CTX *mdctx = EVP_MD_CTX_new();
	uint8_t *buf = malloc(chunk);
	int fd = hs_os_open_read(path), r = -1;
	int64_t got;

	if (mdctx == NULL || buf == NULL || fd < 0 ||
	    EVP_DigestInit_ex(mdctx, EVP_sha256(), NULL) != 1)
		goto out;
	while ((got = hs_os_read(fd, buf, chunk)) != 0) {
		if (got < 0 || EVP_DigestUpdate(mdctx, buf, (size_t)got) != 1)
			goto out;
	}
	r = EVP_DigestFinal_ex(mdctx, md, NULL) == 1 ? 0 : -1;
out:
	if (fd >= 0)
		hs_os_close(fd);
	free(buf);
	EVP_MD_CTX_free(mdctx);
	return r;
}

/* The RFC 3161 token in the primary SignerInfo's unsigned attributes. */
static PKCS7 *batch_token(const PKCS7 *p7)
{
	STACK_OF(PKCS7_SIGNER_INFO) *signers = PKCS7_get_signer_info((PKCS7 *)p7);
	PKCS7_SIGNER_INFO *si = sk_PKCS7_SIGNER_INFO_value(signers, 0);
	ASN1_OBJECT *oid = OBJ_txt2obj(HS_OID_SPC_RFC3161, 1);
	X509_ATTRIBUTE *attr;
	ASN1_TYPE *type;
	const unsigned char *p;
	PKCS7 *token = NULL;
	int i;

	if (si != NULL && oid != NULL &&
	    (i = X509at_get_attr_by_OBJ(si->unauth_attr, oid, -1)) >= 0 &&
	    (attr = X509at_get_attr(si->unauth_attr, i)) != NULL &&
	    (type = X509_ATTRIBUTE_get0_type(attr, 0)) != NULL && type->type == V_ASN1_SEQUENCE) {
		p = type->value.sequence->data;
		token = d2i_PKCS7(NULL, &p, type->value.sequence->length);
	}
	ASN1_OBJECT_free(oid);
	return token;
}

/* Fills the item's timestamp time and TSA from its signed output, for the
 * report. Best effort: what cannot be read stays empty. */
static void batch_timestamp_info(struct hs_ctx *ctx, struct hs_batch_item *item)
{
	const char *path = item->output ? item->output : item->path;
	uint8_t *der = NULL;
	size_t len = 0;
	const unsigned char *p;
	PKCS7 *p7 = NULL, *token = NULL;
	TS_TST_INFO *tst = NULL;
	STACK_OF(X509) *tsa = NULL;
	struct tm tm;

	if (hs_extract_signature(ctx, path, &der, &len) < 0 || len > INT32_MAX)
		goto out;
	p = der;
	if ((p7 = d2i_PKCS7(NULL, &p, (long)len)) == NULL || (token = batch_token(p7)) == NULL ||
	    (tst = PKCS7_to_TS_TST_INFO(token)) == NULL)
		goto out;
	if (ASN1_TIME_to_tm(TS_TST_INFO_get_time(tst), &tm) == 1)
		strftime(item->timestamp_time, sizeof(item->timestamp_time), "%Y-%m-%dT%H:%M:%SZ",
		         &tm);
	tsa = PKCS7_get0_signers(token, NULL, 0);
	if (sk_X509_num(tsa) > 0)
		X509_NAME_oneline(X509_get_subject_name(sk_X509_value(tsa, 0)), item->tsa_subject,
		                  sizeof(item->tsa_subject));
out:
	ERR_clear_error();
	hs_ctx_clear_error(ctx);
	sk_X509_free(tsa);
	TS_TST_INFO_free(tst);
	PKCS7_free(token);
	PKCS7_free(p7);
	hs_free(der);
}

/* Signs one item with this thread's context and fills its result. */
static void batch_sign_one(struct batch_run *run, struct hs_ctx *ctx, struct hs_batch_item *item)
{
	struct hs_sign_opts sign = *run->sign;
	enum hs_sign_outcome outcome = HS_SIGN_SIGNED;
	double start = batch_now();
	int before = -1, r;

	sign.output = item->output;
	hs_ctx_clear_error(ctx);
	if (run->opts->file_hashes)
		before = batch_sha256(item->path, item->sha256_before);
	r = hs_sign_file(ctx, run->key, item->path, &sign, &outcome);
	if (r < 0) {
		item->state = HS_BATCH_FAILED;
		item->error = r;
		item->message = strdup(hs_ctx_message(ctx));
	} else {
		item->state = outcome == HS_SIGN_SKIPPED ? HS_BATCH_SKIPPED : HS_BATCH_SIGNED;
	}
	if (before == 0 &&
	    batch_sha256(item->output ? item->output : item->path, item->sha256_after) == 0)
		item->have_sha256 = 1;
	if (r == 0 && outcome == HS_SIGN_SIGNED && run->opts->file_hashes &&
	    hs_ts_wanted(&run->sign->timestamp))
		batch_timestamp_info(ctx, item);
	item->seconds = batch_now() - start;
}

/* The next item to sign, or NULL when the batch is finished or stopping. */
static struct hs_batch_item *batch_take(struct batch_run *run)
{
	struct hs_batch_item *item = NULL;

	pthread_mutex_lock(&run->lock);
	/* Set by a signal handler, possibly on another thread: an atomic
	 * load (the handler stores atomically too, platform_posix.c). */
	if (run->opts->cancel != NULL && __atomic_load_n(run->opts->cancel, __ATOMIC_RELAXED))
		run->stop = true;
	if (!run->stop && run->next < run->n)
		item = &run->items[run->next++];
	pthread_mutex_unlock(&run->lock);
	return item;
}

static void batch_finish(struct batch_run *run, const struct hs_batch_item *item)
{
	pthread_mutex_lock(&run->lock);
	run->done++;
	if (item->state == HS_BATCH_FAILED && !run->opts->continue_on_error)
		run->stop = true;
	if (run->opts->on_done != NULL)
		run->opts->on_done(item, run->done, run->n, run->opts->userdata);
	pthread_mutex_unlock(&run->lock);
}

static void *batch_worker(void *arg)
{
	struct batch_run *run = arg;
	struct hs_batch_item *item;
	struct hs_ctx *ctx = NULL;

	if (hs_ctx_new(&ctx) < 0)
		return NULL; /* the other workers carry on; hs_batch_sign checks */
	hs_ctx_set_log(ctx, run->opts->log, run->opts->log_userdata);
	while ((item = batch_take(run)) != NULL) {
		batch_sign_one(run, ctx, item);
		batch_finish(run, item);
	}
	hs_ctx_free(ctx);
	return NULL;
}

/* Sign calls at once: opts->jobs, or the number of CPUs. */
static int batch_jobs(const struct hs_batch_opts *opts)
{
	long jobs = opts->jobs;

	if (jobs <= 0)
		jobs = hs_os_cpu_count();
	if (jobs < 1)
		jobs = 1;
	if (jobs > BATCH_JOBS_MAX)
		jobs = BATCH_JOBS_MAX;
	return (int)jobs;
}

/* Worker threads for `jobs` sign calls at once: half as many again for
 * the file work around them (one job stays one thread: strictly one file
 * at a time), never more than there are files. */
static int batch_threads(int jobs, size_t n)
{
	long threads = jobs > 1 ? jobs + (jobs + 1) / 2 : 1;

	if (threads > BATCH_JOBS_MAX + BATCH_JOBS_MAX / 2)
		threads = BATCH_JOBS_MAX + BATCH_JOBS_MAX / 2;
	if ((size_t)threads > n)
		threads = (long)n;
	return (int)threads;
}

/* Starts the workers and waits for them; the calling thread is one of
 * them, so a one-thread batch runs without any other. */
static int batch_run_threads(struct hs_ctx *ctx, struct batch_run *run, int count)
{
	pthread_t *threads = calloc((size_t)count, sizeof(*threads));
	int started = 0, r = 0;

	if (threads == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	for (; started < count - 1; started++) {
		if (pthread_create(&threads[started], NULL, batch_worker, run) != 0)
			break; /* fewer threads is slower, not wrong */
	}
	batch_worker(run);
	for (int i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	free(threads);
	if (run->done < run->n && !run->stop)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory starting the batch");
	return r;
}

int hs_batch_sign(struct hs_ctx *ctx, struct hs_key *key, struct hs_batch_item *items, size_t n,
                  const struct hs_sign_opts *sign, const struct hs_batch_opts *opts)
{
	static const struct hs_batch_opts defaults = HS_BATCH_OPTS_INIT;
	struct batch_run run = {.n = n, .items = items, .key = key, .sign = sign};
	int jobs, r;

	run.opts = opts != NULL ? opts : &defaults;
	for (size_t i = 0; i < n; i++) {
		items[i].state = HS_BATCH_NOT_STARTED;
		items[i].error = 0;
		items[i].message = NULL;
		items[i].seconds = 0;
		items[i].have_sha256 = 0;
		items[i].timestamp_time[0] = items[i].tsa_subject[0] = '\0';
	}
	if (n == 0)
		return 0;
	if (pthread_mutex_init(&run.lock, NULL) != 0)
		return hs_error_set(ctx, HS_ERR_NOMEM, "cannot create a mutex");
	jobs = batch_jobs(run.opts);
	hs_key_limit_inflight(key, jobs);
	r = batch_run_threads(ctx, &run, batch_threads(jobs, n));
	hs_key_limit_inflight(key, 0);
	pthread_mutex_destroy(&run.lock);
	return r;
}

void hs_batch_items_clear(struct hs_batch_item *items, size_t n)
{
	for (size_t i = 0; items != NULL && i < n; i++) {
		free(items[i].message);
		items[i].message = NULL;
	}
}
