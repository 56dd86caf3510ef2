/*
 * audit.c - the append-only audit log of `hsmsign serve`: one JSON object
 * per line, written with a single write() to a file opened O_APPEND, so
 * lines from several threads (or processes) never interleave. Optionally
 * fsync()ed after each line. Tokens never reach it: entries carry the
 * identity's name and the claims that matched the policy.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "serve_int.h"

int serve_audit_open(struct hs_ctx *ctx, struct serve_audit *a, const char *path, bool fsync)
{
	a->fd = -1;
	a->fsync = fsync;
	pthread_mutex_init(&a->lock, NULL);
	if (path == NULL)
		return 0;
	a->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (a->fd < 0)
		return hs_error_set(ctx, HS_ERR_IO, "audit_log: cannot open %s: %s", path,
		                    strerror(errno));
	return 0;
}

void serve_audit_close(struct serve_audit *a)
{
	if (a->fd >= 0)
		close(a->fd);
	a->fd = -1;
	pthread_mutex_destroy(&a->lock);
}

int serve_audit_write(struct serve_audit *a, json_t *entry)
{
	struct timeval tv;
	struct tm tm;
	char when[96], *line;
	size_t n;
	ssize_t w;
	int r = 0;

	if (a->fd < 0)
		return 0;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         (long)(tv.tv_usec / 1000));
	json_object_set_new(entry, "time", json_string(when));
	if ((line = json_dumps(entry, JSON_COMPACT | JSON_PRESERVE_ORDER |
	                                      JSON_REAL_PRECISION(6))) == NULL)
		return HS_ERR_NOMEM;
	n = strlen(line);
	line[n] = '\n'; /* json_dumps leaves room for the NUL we replace */
	pthread_mutex_lock(&a->lock);
	do
		w = write(a->fd, line, n + 1);
	while (w < 0 && errno == EINTR);
	if (w != (ssize_t)(n + 1))
		r = HS_ERR_IO;
	else if (a->fsync && fsync(a->fd) < 0)
		r = HS_ERR_IO;
	pthread_mutex_unlock(&a->lock);
	free(line);
	return r;
}
