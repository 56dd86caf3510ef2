/*
 * progress.c - what a batch prints: a progress bar on a terminal, one line
 * per file otherwise, a summary line, and the --report JSON file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "cli.h"

/* Redraw the bar at most this often (seconds). */
#define BAR_INTERVAL 0.1
#define BAR_WIDTH    30

double cli_now(void)
{
	return (double)hs_os_monotonic_us() / 1e6;
}

void cli_progress_start(struct cli_progress *p, size_t total, const char *output)
{
	memset(p, 0, sizeof(*p));
	p->total = total;
	p->verbosity = cli_verbosity;
	p->output = output;
	/* A bar only when someone watches and per-file lines were not asked. */
	p->tty = total > 1 && cli_verbosity == 1 && hs_os_isatty(2);
	p->start = cli_now();
}

static void progress_clear(const struct cli_progress *p)
{
	if (p->tty)
		fputs("\r\033[K", stderr);
}

static void progress_draw(struct cli_progress *p, size_t done)
{
	double now = cli_now(), elapsed = now - p->start;
	double rate = elapsed > 0 ? (double)done / elapsed : 0;
	int filled = (int)((double)BAR_WIDTH * (double)done / (double)p->total);
	char bar[BAR_WIDTH + 1];

	if (done < p->total && now - p->last_draw < BAR_INTERVAL)
		return;
	p->last_draw = now;
	memset(bar, '#', (size_t)filled);
	memset(bar + filled, '.', (size_t)(BAR_WIDTH - filled));
	bar[BAR_WIDTH] = '\0';
	fprintf(stderr, "\r[%s] %zu/%zu  %.1f files/s  ETA %.0f s\033[K", bar, done, p->total, rate,
	        rate > 0 ? (double)(p->total - done) / rate : 0.0);
	fflush(stderr);
}

/* One file's line: errors on stderr, results on stdout (not with -q). */
static void progress_line(const struct cli_progress *p, const struct hs_batch_item *item)
{
	const char *path = p->output ? p->output : item->path;
	size_t n = strlen(item->path);

	if (item->state == HS_BATCH_FAILED) {
		const char *msg = item->message ? item->message : hs_strerror(item->error);
		/* Library messages about a file usually start with its path. */
		if (strncmp(msg, item->path, n) == 0 && msg[n] == ':')
			cli_error("%s", msg);
		else
			cli_error("%s: %s", item->path, msg);
		return;
	}
	if (p->tty || p->verbosity < 1)
		return;
	if (p->verbosity >= 2)
		printf("%s %s (%.3f s)\n",
		       item->state == HS_BATCH_SKIPPED ? "Skipped (already signed):" : "Signed:",
		       path, item->seconds);
	else
		printf("%s %s\n",
		       item->state == HS_BATCH_SKIPPED ? "Skipped (already signed):" : "Signed:",
		       path);
}

void cli_progress_done(const struct hs_batch_item *item, size_t done, size_t total, void *userdata)
{
	struct cli_progress *p = userdata;

	(void)total;
	if (item->state == HS_BATCH_SIGNED)
		p->signed_n++;
	else if (item->state == HS_BATCH_SKIPPED)
		p->skipped++;
	else
		p->failed++;
	if (item->state == HS_BATCH_FAILED)
		progress_clear(p);
	progress_line(p, item);
	if (p->tty)
		progress_draw(p, done);
}

void cli_progress_finish(struct cli_progress *p, size_t not_started, unsigned long requests,
                         int interrupted)
{
	double elapsed = cli_now() - p->start;

	progress_clear(p);
	if (interrupted)
		cli_error("interrupted: %zu file(s) not started; every file is either signed or "
		          "untouched",
		          not_started);
	else if (not_started > 0)
		cli_error("stopped after the first failure: %zu file(s) not signed "
		          "(use --continue-on-error to go on)",
		          not_started);
	if (p->verbosity < 1 || p->total < 2)
		return;
	printf("Summary: %zu signed, %zu skipped, %zu failed, %zu not started in %.2f s "
	       "(%.1f files/s)",
	       p->signed_n, p->skipped, p->failed, not_started, elapsed,
	       elapsed > 0 ? (double)(p->signed_n + p->skipped) / elapsed : 0.0);
	if (requests > 0)
		printf(", %lu vault requests", requests);
	putchar('\n');
	fflush(stdout);
}

/* Writes s as a JSON string. */
static void json_str(FILE *fp, const char *s)
{
	if (s == NULL) {
		fputs("null", fp);
		return;
	}
	fputc('"', fp);
	for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
		if (*c == '"' || *c == '\\')
			fprintf(fp, "\\%c", *c);
		else if (*c < 0x20)
			fprintf(fp, "\\u%04x", *c);
		else
			fputc(*c, fp);
	}
	fputc('"', fp);
}

static void json_hex(FILE *fp, int have, const uint8_t *md)
{
	if (!have) {
		fputs("null", fp);
		return;
	}
	fputc('"', fp);
	for (int i = 0; i < 32; i++)
		fprintf(fp, "%02x", md[i]);
	fputc('"', fp);
}

static const char *report_result(enum hs_batch_state state)
{
	switch (state) {
	case HS_BATCH_SIGNED:
		return "signed";
	case HS_BATCH_SKIPPED:
		return "skipped";
	case HS_BATCH_FAILED:
		return "failed";
	default:
		return "not-started";
	}
}

static void report_item(FILE *fp, const struct hs_batch_item *item, const char *format,
                        const struct cli_report_info *info)
{
	fputs("    {\"path\": ", fp);
	json_str(fp, item->path);
	fputs(", \"output\": ", fp);
	json_str(fp, item->output ? item->output : item->path);
	fputs(", \"format\": ", fp);
	json_str(fp, format);
	fputs(", \"digest\": ", fp);
	json_str(fp, info->digest);
	fputs(", \"key_id\": ", fp);
	json_str(fp, info->key_id);
	fputs(",\n     \"result\": ", fp);
	json_str(fp, report_result(item->state));
	fputs(", \"error\": ", fp);
	json_str(fp, item->state == HS_BATCH_FAILED
	                     ? (item->message ? item->message : hs_strerror(item->error))
	                     : NULL);
	fprintf(fp, ", \"duration_s\": %.6f,\n     \"sha256_before\": ", item->seconds);
	json_hex(fp, item->have_sha256, item->sha256_before);
	fputs(", \"sha256_after\": ", fp);
	json_hex(fp, item->have_sha256, item->sha256_after);
	fputs(",\n     \"timestamp_time\": ", fp);
	json_str(fp, item->timestamp_time[0] ? item->timestamp_time : NULL);
	fputs(", \"tsa\": ", fp);
	json_str(fp, item->tsa_subject[0] ? item->tsa_subject : NULL);
	fputs("}", fp);
}

static void report_body(FILE *fp, const struct hs_batch_item *items, size_t n,
                        const struct cli_report_info *info)
{
	size_t counts[4] = {0};

	for (size_t i = 0; i < n; i++)
		counts[items[i].state <= HS_BATCH_FAILED ? items[i].state : 0]++;
	fputs("{\n  \"tool\": \"hsmsign " HS_VERSION "\",\n  \"key_id\": ", fp);
	json_str(fp, info->key_id);
	fputs(",\n  \"digest\": ", fp);
	json_str(fp, info->digest);
	fputs(",\n  \"timestamp_servers\": [", fp);
	for (size_t i = 0; info->tsa != NULL && info->tsa[i] != NULL; i++) {
		fputs(i ? ", " : "", fp);
		json_str(fp, info->tsa[i]);
	}
	fprintf(fp,
	        "],\n  \"summary\": {\"files\": %zu, \"signed\": %zu, \"skipped\": %zu, "
	        "\"failed\": %zu, \"not_started\": %zu, \"duration_s\": %.6f, "
	        "\"vault_requests\": %lu},\n  \"files\": [\n",
	        n, counts[HS_BATCH_SIGNED], counts[HS_BATCH_SKIPPED], counts[HS_BATCH_FAILED],
	        counts[HS_BATCH_NOT_STARTED], info->seconds, info->requests);
	for (size_t i = 0; i < n; i++) {
		report_item(fp, &items[i], info->formats ? info->formats[i] : NULL, info);
		fputs(i + 1 < n ? ",\n" : "\n", fp);
	}
	fputs("  ]\n}\n", fp);
}

int cli_report_write(const char *path, const struct hs_batch_item *items, size_t n,
                     const struct cli_report_info *info)
{
	size_t len = strlen(path) + 16;
	char *tmp = malloc(len);
	FILE *fp = NULL;
	int fd = -1, sync_fd = -1, r = EXIT_SOME_FAILED;
	bool created = false;

	if (tmp == NULL)
		goto out;
	snprintf(tmp, len, "%s.XXXXXX", path);
	if ((fd = hs_os_mkstemp(tmp)) < 0)
		goto out;
	created = true;
	/* mkstemp makes 0600; a report is an ordinary file (umask applies). */
	if (hs_os_set_mode(fd, hs_os_new_file_mode()) != 0)
		goto out;
	sync_fd = fd;
	if ((fp = hs_os_fdopen(fd, "w")) == NULL)
		goto out;
	fd = -1;
	report_body(fp, items, n, info);
	if (fflush(fp) != 0 || hs_os_fsync(sync_fd) != 0 || fclose(fp) != 0) {
		fp = NULL;
		goto out;
	}
	fp = NULL;
	if (hs_os_replace(tmp, path) == 0)
		r = 0;
out:
	if (r != 0) {
		cli_error("%s: cannot write the report: %s", path, strerror(errno));
		if (created)
			hs_os_unlink(tmp);
	}
	if (fp != NULL)
		fclose(fp);
	if (fd >= 0)
		hs_os_close(fd);
	free(tmp);
	return r;
}
