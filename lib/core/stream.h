/*
 * stream.h - one pass over a byte range of an input file, with reading,
 * writing and hashing on separate threads, so that signing a large file
 * costs about as much time as hashing it (docs/PERFORMANCE.md).
 *
 * Chunks of HS_IO_CHUNK bytes go through the callbacks in file order:
 * prepare() sees a chunk first and may change it (zero a header field);
 * then consume() (copy to the output) and hash() see the same bytes,
 * possibly at the same time on different threads, so both must only read
 * the chunk and must not share unsynchronised state with each other. Each
 * callback runs on one thread at a time, in file order.
 * A range shorter than HS_STREAM_THREAD_MIN, or a thread that cannot be
 * started, runs every callback on the calling thread.
 */
#ifndef HS_STREAM_H
#define HS_STREAM_H

#include <stdint.h>

#include "file.h"

/* Ranges at least this long are streamed on several threads. */
#define HS_STREAM_THREAD_MIN (8u * HS_IO_CHUNK)

/* The callbacks; any may be NULL. Each returns 0 or a negative HS_ERR_*
 * (set in the ctx it is given, which for prepare() and consume() may be a
 * private one whose error is copied into the caller's). */
struct hs_stream_ops {
	int (*prepare)(struct hs_ctx *ctx, void *arg, uint8_t *buf, size_t n, uint64_t off);
	int (*consume)(struct hs_ctx *ctx, void *arg, const uint8_t *buf, size_t n, uint64_t off);
	int (*hash)(struct hs_ctx *ctx, void *arg, const uint8_t *buf, size_t n, uint64_t off);
};

/* Streams in's bytes [0, end) through ops (end <= in->size). Memory used:
 * a few HS_IO_CHUNK buffers, whatever the size. */
int hs_stream_file(struct hs_ctx *ctx, const struct hs_file *in, uint64_t end,
                   const struct hs_stream_ops *ops, void *arg);

#endif /* HS_STREAM_H */
