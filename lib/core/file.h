/*
 * file.h - reading inputs with bounds-checked positional reads, and writing
 * outputs atomically (temp file in the destination directory, fsync, rename).
 */
#ifndef HS_FILE_H
#define HS_FILE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "core.h"

/* Size of the streaming buffer used by every pass over a file. */
#define HS_IO_CHUNK (1024 * 1024)

/* An input opened read-only. */
struct hs_file {
	int fd;
	uint64_t size;
	mode_t mode;
	const char *path; /* borrowed from the caller */
	/* Identity and times at open, to notice a file changed under us. */
	uint64_t dev, ino;
	int64_t mtime_ns, ctime_ns;
};

int hs_file_open(struct hs_ctx *ctx, struct hs_file *f, const char *path);
void hs_file_close(struct hs_file *f);
/* Reads exactly len bytes at off; HS_ERR_FORMAT if they lie past EOF. */
int hs_file_pread(struct hs_ctx *ctx, const struct hs_file *f, void *buf, size_t len, uint64_t off);

/* An output being written to a temp file until hs_out_commit(). */
struct hs_out {
	int fd;
	char *tmp_path;
	char *final_path;
	uint64_t size;    /* bytes appended so far */
	uint64_t flushed; /* bytes whose writeback has been started */
	bool direct;      /* writes bypass the page cache (hs_out_expect) */
	mode_t mode;
	/* The input this output is made from, or NULL. If it changed since it
	 * was opened (another process wrote to it while we hashed or waited
	 * for a remote signature), commit refuses: the output would mix old
	 * and new content, or silently drop the other writer's change. */
	const struct hs_file *source;
};

/* Creates a temp file next to final_path that will get `mode`. */
int hs_out_open(struct hs_ctx *ctx, struct hs_out *o, const char *final_path, mode_t mode);
/* Tells the output that about `size` bytes will be appended. From
 * HS_OUT_DIRECT_MIN on, aligned appends then bypass the page cache where
 * the system allows it (docs/PERFORMANCE.md); any other write switches
 * back to ordinary writes. Advice only: nothing fails because of it. */
#define HS_OUT_DIRECT_MIN (64u * 1024 * 1024)
void hs_out_expect(struct hs_out *o, uint64_t size);
/* Appends len bytes. */
int hs_out_write(struct hs_ctx *ctx, struct hs_out *o, const void *buf, size_t len);
/* Appends n zero bytes. */
int hs_out_zero(struct hs_ctx *ctx, struct hs_out *o, size_t n);
/* Overwrites len bytes at off (off + len <= size). */
int hs_out_pwrite(struct hs_ctx *ctx, struct hs_out *o, const void *buf, size_t len, uint64_t off);
/* HS_ERR_IO if f's size, times or identity changed since hs_file_open. */
int hs_file_check_unchanged(struct hs_ctx *ctx, const struct hs_file *f);
/* fsyncs, renames over final_path and fsyncs the directory; first checks
 * o->source with hs_file_check_unchanged() when it is set. */
int hs_out_commit(struct hs_ctx *ctx, struct hs_out *o);
/* Removes the temp file if not committed; safe on a zeroed or committed o. */
void hs_out_abort(struct hs_out *o);

#endif /* HS_FILE_H */
