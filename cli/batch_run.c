/*
 * batch_run.c - `sign` over many files: checks every input first, runs
 * hs_batch_sign() with progress output, handles SIGINT/SIGTERM (stop
 * starting files, let those in flight finish) and writes the report.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "cli.h"

/* Set on SIGINT/SIGTERM (hs_os_on_interrupt); read by the batch's
 * workers. The signal stops the batch instead of killing the process, so
 * no file is abandoned; a second signal kills, for users who really mean
 * it. */
static volatile sig_atomic_t batch_interrupted;

/*
 * Inputs are checked on up to CHECK_THREADS threads: a check opens and
 * probes the file, which waits for the disk when the cache is cold, and
 * even warm, 10,000 inputs took ~0.1 s on one thread. Errors are kept per
 * input and printed afterwards, in input order.
 */
#define CHECK_THREADS      8
#define CHECK_PARALLEL_MIN 64 /* fewer inputs: checked on the calling thread */
#define CHECK_BATCH        16 /* inputs a thread takes at a time */

struct check_run {
	const struct cli_inputs *in;
	const char **formats;
	int *codes;  /* codes[i] < 0: input i failed, with message msgs[i] */
	char **msgs; /* strdup'ed; NULL: the code's description */
	atomic_size_t next;
};

static void check_range(struct hs_ctx *ctx, struct check_run *c)
{
	size_t n = c->in->n, i;

	while ((i = atomic_fetch_add(&c->next, CHECK_BATCH)) < n) {
		size_t end = n - i < CHECK_BATCH ? n : i + CHECK_BATCH;

		for (; i < end; i++) {
			hs_ctx_clear_error(ctx);
			if (hs_file_format(ctx, c->in->paths[i], &c->formats[i]) < 0) {
				c->codes[i] = hs_ctx_error(ctx) < 0 ? hs_ctx_error(ctx) : HS_ERR_IO;
				c->msgs[i] = strdup(hs_ctx_message(ctx));
			}
		}
	}
}

static void *check_main(void *arg)
{
	struct hs_ctx *ctx = NULL;

	if (hs_ctx_new(&ctx) < 0)
		return NULL; /* the other threads check the rest */
	hs_ctx_set_log(ctx, cli_log, NULL);
	check_range(ctx, arg);
	hs_ctx_free(ctx);
	return NULL;
}

int cli_batch_check(struct hs_ctx *ctx, const struct cli_inputs *in, const char ***formats)
{
	struct check_run c = {.in = in};
	pthread_t th[CHECK_THREADS - 1];
	int started = 0, r = 0;
	size_t bad = 0;

	*formats = calloc(in->n + 1, sizeof(**formats));
	c.codes = calloc(in->n + 1, sizeof(*c.codes));
	c.msgs = calloc(in->n + 1, sizeof(*c.msgs));
	if (*formats == NULL || c.codes == NULL || c.msgs == NULL) {
		cli_error("out of memory");
		r = EXIT_ALL_FAILED;
		goto out;
	}
	c.formats = *formats;
	atomic_init(&c.next, 0);
	if (in->n >= CHECK_PARALLEL_MIN)
		while (started < CHECK_THREADS - 1 &&
		       pthread_create(&th[started], NULL, check_main, &c) == 0)
			started++;
	check_range(ctx, &c);
	while (started > 0)
		pthread_join(th[--started], NULL);
	for (size_t i = 0; i < in->n; i++) {
		if (c.codes[i] < 0) {
			cli_error_path(in->paths[i], c.codes[i], c.msgs[i]);
			bad++;
		}
	}
	r = bad == 0 ? 0 : EXIT_ALL_FAILED;
out:
	for (size_t i = 0; c.msgs != NULL && i < in->n; i++)
		free(c.msgs[i]);
	free(c.msgs);
	free(c.codes);
	return r;
}

static size_t batch_count(const struct hs_batch_item *items, size_t n, enum hs_batch_state s)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		k += items[i].state == s;
	return k;
}

static int batch_exit_code(const struct hs_batch_item *items, size_t n, size_t bad_inputs)
{
	size_t ok =
	        batch_count(items, n, HS_BATCH_SIGNED) + batch_count(items, n, HS_BATCH_SKIPPED);

	if (ok == n && bad_inputs == 0)
		return EXIT_OK;
	return ok == 0 ? EXIT_ALL_FAILED : EXIT_SOME_FAILED;
}

/* Items for the inputs that passed the check (formats[i] != NULL). */
static struct hs_batch_item *batch_items(const struct cli_inputs *in, const char **formats,
                                         const struct cli_batch_params *bp, size_t *n,
                                         const char ***item_formats)
{
	struct hs_batch_item *items = calloc(in->n + 1, sizeof(*items));

	*n = 0;
	*item_formats = calloc(in->n + 1, sizeof(**item_formats));
	if (items == NULL || *item_formats == NULL) {
		free(items);
		return NULL;
	}
	for (size_t i = 0; i < in->n; i++) {
		if (formats[i] == NULL)
			continue;
		items[*n].path = in->paths[i];
		items[*n].output = bp->output;
		(*item_formats)[(*n)++] = formats[i];
	}
	return items;
}

int cli_batch_sign(struct hs_ctx *ctx, struct hs_key *key, const struct hs_sign_opts *sign,
                   const struct cli_inputs *in, const char **formats,
                   const struct cli_batch_params *bp)
{
	struct hs_batch_opts bo = HS_BATCH_OPTS_INIT;
	struct cli_progress progress;
	const char **item_formats = NULL;
	struct hs_batch_item *items;
	size_t n, bad_inputs;
	int r;

	if ((items = batch_items(in, formats, bp, &n, &item_formats)) == NULL) {
		cli_error("out of memory");
		return EXIT_ALL_FAILED;
	}
	bad_inputs = in->n - n + in->missing;
	bo.jobs = bp->jobs;
	bo.continue_on_error = bp->continue_on_error;
	bo.file_hashes = bp->report != NULL;
	bo.cancel = &batch_interrupted;
	bo.on_done = cli_progress_done;
	bo.userdata = &progress;
	bo.log = cli_log;
	batch_interrupted = 0;
	cli_progress_start(&progress, n, bp->output);
	hs_os_on_interrupt(&batch_interrupted);
	r = hs_batch_sign(ctx, key, items, n, sign, &bo);
	hs_os_on_interrupt(NULL);
	cli_progress_finish(&progress, batch_count(items, n, HS_BATCH_NOT_STARTED),
	                    hs_key_requests(key), batch_interrupted);
	if (r < 0) {
		cli_error("%s", hs_ctx_message(ctx));
		r = EXIT_ALL_FAILED;
	} else {
		r = batch_exit_code(items, n, bad_inputs);
	}
	if (bp->report != NULL) {
		struct cli_report_info info = {.key_id = hs_key_id(key),
		                               .digest = hs_digest_name(sign->digest),
		                               .formats = item_formats,
		                               .tsa = bp->tsa,
		                               .seconds = cli_now() - progress.start,
		                               .requests = hs_key_requests(key)};
		if (cli_report_write(bp->report, items, n, &info) != 0 && r == EXIT_OK)
			r = EXIT_SOME_FAILED;
	}
	hs_batch_items_clear(items, n);
	free(items);
	free(item_formats);
	return r;
}
