/* file.c - positional reads and atomic outputs (the OS calls are platform.h's). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "platform.h"

/* Writeback of a large output is started every this many bytes. */
#define OUT_WRITEBACK_STEP (8u * 1024 * 1024)

int hs_file_open(struct hs_ctx *ctx, struct hs_file *f, const char *path)
{
	struct hs_os_stat st;

	memset(f, 0, sizeof(*f));
	f->fd = -1;
	f->path = path;
	/* Opening a FIFO for reading waits for a writer, possibly for ever:
	 * what is not a regular file is refused before it is opened (and
	 * after, in case the path changed in between). */
	if (hs_os_stat(path, &st) == 0 && !st.regular)
		return hs_error_set(ctx, HS_ERR_IO, "%s: not a regular file", path);
	f->fd = hs_os_open_read(path);
	if (f->fd < 0)
		return hs_error_set(ctx, errno == ENOENT ? HS_ERR_NOTFOUND : HS_ERR_IO,
		                    "%s: cannot open: %s", path, strerror(errno));
	if (hs_os_fstat(f->fd, &st) < 0 || !st.regular) {
		int r = hs_error_set(ctx, HS_ERR_IO, "%s: not a regular file", path);
		hs_file_close(f);
		return r;
	}
	f->size = st.size;
	f->mode = (mode_t)st.mode;
	f->dev = st.dev;
	f->ino = st.ino;
	f->mtime_ns = st.mtime_ns;
	f->ctime_ns = st.ctime_ns;
	return 0;
}

int hs_file_check_unchanged(struct hs_ctx *ctx, const struct hs_file *f)
{
	struct hs_os_stat st;

	if (hs_os_stat(f->path, &st) < 0)
		return hs_error_set(ctx, HS_ERR_IO, "%s: disappeared while being signed: %s",
		                    f->path, strerror(errno));
	if (st.dev != f->dev || st.ino != f->ino || st.size != f->size ||
	    st.mtime_ns != f->mtime_ns || st.ctime_ns != f->ctime_ns)
		return hs_error_set(ctx, HS_ERR_IO,
		                    "%s: changed while it was being signed; nothing was written",
		                    f->path);
	return 0;
}

void hs_file_close(struct hs_file *f)
{
	if (f->fd >= 0)
		hs_os_close(f->fd);
	f->fd = -1;
}

int hs_file_pread(struct hs_ctx *ctx, const struct hs_file *f, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	if (off > f->size || len > f->size - off)
		return hs_error_set(
		        ctx, HS_ERR_FORMAT,
		        "%s: truncated: %zu bytes at offset %llu lie past the end (%llu)", f->path,
		        len, (unsigned long long)off, (unsigned long long)f->size);
	while (len > 0) {
		int64_t n = hs_os_pread(f->fd, p, len, off);

		if (n <= 0)
			return hs_error_set(ctx, HS_ERR_IO, "%s: read failed at offset %llu: %s",
			                    f->path, (unsigned long long)off,
			                    n < 0 ? strerror(errno) : "unexpected end of file");
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* A symbolic link is followed, so that the file it names is replaced and
 * the link stays a link; other paths are used as given. */
static char *resolve_final_path(const char *path)
{
	struct hs_os_stat st;

	if (hs_os_lstat(path, &st) == 0 && st.symlink)
		return hs_os_realpath(path);
	return strdup(path);
}

int hs_out_open(struct hs_ctx *ctx, struct hs_out *o, const char *final_path, mode_t mode)
{
	size_t n;

	memset(o, 0, sizeof(*o));
	o->fd = -1;
	o->mode = mode;
	o->final_path = resolve_final_path(final_path);
	if (o->final_path == NULL)
		return hs_error_set(ctx, HS_ERR_IO, "%s: cannot resolve: %s", final_path,
		                    strerror(errno));
	n = strlen(o->final_path) + sizeof(".hsmsign-XXXXXX");
	o->tmp_path = malloc(n);
	if (o->final_path == NULL || o->tmp_path == NULL) {
		hs_out_abort(o);
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	/* Same directory as the destination, so that rename() is atomic. */
	snprintf(o->tmp_path, n, "%s.hsmsign-XXXXXX", o->final_path);
	o->fd = hs_os_mkstemp(o->tmp_path);
	if (o->fd < 0) {
		int r = hs_error_set(ctx, HS_ERR_IO, "%s: cannot create temporary file: %s",
		                     final_path, strerror(errno));
		free(o->tmp_path);
		o->tmp_path = NULL;
		hs_out_abort(o);
		return r;
	}
	return 0;
}

/* Back to writes through the page cache (needed for anything unaligned). */
static void out_direct_off(struct hs_out *o)
{
	if (o->direct)
		(void)hs_os_set_direct(o->fd, false);
	o->direct = false;
}

static bool out_aligned(uint64_t v)
{
	return v % HS_OS_DIRECT_ALIGN == 0;
}

static int out_write_at(struct hs_ctx *ctx, struct hs_out *o, const void *buf, size_t len,
                        uint64_t off)
{
	const uint8_t *p = buf;

	if (hs_fault("write"))
		return hs_error_set(ctx, HS_ERR_IO, "%s: write failed: injected fault",
		                    o->final_path);
	if (o->direct && !(out_aligned((uintptr_t)p) && out_aligned(off) && out_aligned(len)))
		out_direct_off(o);
	while (len > 0) {
		int64_t n = hs_os_pwrite(o->fd, p, len, off);

		if (n < 0 && errno == EINVAL && o->direct) {
			/* Stricter alignment than ours, or a file system that
			 * took the flag but not the write: write normally. */
			out_direct_off(o);
			continue;
		}
		if (n < 0)
			return hs_error_set(ctx, HS_ERR_IO, "%s: write failed: %s", o->final_path,
			                    strerror(errno));
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
		if (o->direct && len > 0 && !(out_aligned((uintptr_t)p) && out_aligned(off)))
			out_direct_off(o);
	}
	return 0;
}

/*
 * A large output goes to disk at commit anyway (fsync), so caching it
 * buys nothing, and copying it into page-cache pages the kernel must first
 * allocate costs more than hashing it (docs/PERFORMANCE.md): from
 * HS_OUT_DIRECT_MIN on, aligned appends bypass the cache. The fault point
 * keeps the ordinary path testable and measurable.
 */
void hs_out_expect(struct hs_out *o, uint64_t size)
{
	if (o->fd < 0 || o->direct || size < HS_OUT_DIRECT_MIN || !out_aligned(o->size) ||
	    hs_fault("buffered-output"))
		return;
	o->direct = hs_os_set_direct(o->fd, true) == 0;
}

/*
 * Starts writing back what was appended since the last call, every
 * OUT_WRITEBACK_STEP bytes, without waiting: the disk then works while the
 * rest is hashed, and the fsync in hs_out_commit() waits only for the tail
 * (docs/PERFORMANCE.md). Advice only, so errors are ignored here; fsync
 * reports real ones.
 */
static void out_start_writeback(struct hs_out *o)
{
	if (o->size - o->flushed < OUT_WRITEBACK_STEP)
		return;
	hs_os_start_writeback(o->fd, o->flushed, o->size - o->flushed);
	o->flushed = o->size;
}

int hs_out_write(struct hs_ctx *ctx, struct hs_out *o, const void *buf, size_t len)
{
	int r = out_write_at(ctx, o, buf, len, o->size);

	if (r == 0) {
		o->size += len;
		if (o->direct)
			o->flushed = o->size; /* nothing cached to write back */
		else
			out_start_writeback(o);
	}
	return r;
}

int hs_out_zero(struct hs_ctx *ctx, struct hs_out *o, size_t n)
{
	static const uint8_t zeros[64];
	int r;

	while (n > 0) {
		size_t k = n < sizeof(zeros) ? n : sizeof(zeros);

		if ((r = hs_out_write(ctx, o, zeros, k)) < 0)
			return r;
		n -= k;
	}
	return 0;
}

int hs_out_pwrite(struct hs_ctx *ctx, struct hs_out *o, const void *buf, size_t len, uint64_t off)
{
	if (off > o->size || len > o->size - off)
		return hs_error_set(ctx, HS_ERR_INVALID, "internal: write past end of output");
	return out_write_at(ctx, o, buf, len, off);
}

int hs_out_commit(struct hs_ctx *ctx, struct hs_out *o)
{
	int r;

	if (o->source != NULL && (r = hs_file_check_unchanged(ctx, o->source)) < 0)
		return r;
	if (hs_fault("commit"))
		return hs_error_set(ctx, HS_ERR_IO, "%s: injected fault before rename",
		                    o->final_path);
	if (hs_os_set_mode(o->fd, (unsigned)o->mode) < 0 || hs_os_fsync(o->fd) < 0)
		return hs_error_set(ctx, HS_ERR_IO, "%s: cannot finish temporary file: %s",
		                    o->final_path, strerror(errno));
	if (hs_os_close(o->fd) < 0) {
		o->fd = -1;
		return hs_error_set(ctx, HS_ERR_IO, "%s: close failed: %s", o->final_path,
		                    strerror(errno));
	}
	o->fd = -1;
	if (hs_os_replace(o->tmp_path, o->final_path) < 0)
		return hs_error_set(ctx, HS_ERR_IO, "%s: cannot replace: %s", o->final_path,
		                    strerror(errno));
	hs_os_sync_dir(o->final_path);
	free(o->tmp_path);
	o->tmp_path = NULL;
	return 0;
}

void hs_out_abort(struct hs_out *o)
{
	if (o->fd >= 0)
		hs_os_close(o->fd);
	o->fd = -1;
	if (o->tmp_path != NULL)
		hs_os_unlink(o->tmp_path);
	free(o->tmp_path);
	free(o->final_path);
	o->tmp_path = NULL;
	o->final_path = NULL;
}
