/*
 * stream.c - a read/hash pipeline over an input file (stream.h).
 *
 * Up to three threads share a ring of nslots chunk buffers. The
 * reader reads chunk k into slot k % nslots once the chunk that used
 * the slot before has been hashed and consumed, runs prepare() and
 * publishes it; the writer runs consume() on published chunks, in order;
 * the calling thread hashes them, in order. Reading (a copy out of the
 * page cache) and writing (a copy into it) together cost about as much as
 * hashing, the one step that cannot go faster than one core: on two idle
 * cores the pass takes about as long as (read + write + hash) / 2, on
 * three or more as long as hashing. Slots are aligned so that a consumer
 * can write them past the page cache (hs_out_expect). Without consume() there is no writer;
 * if it cannot start, the reader consumes each chunk after publishing it.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "platform.h"
#include "stream.h"

/* Four slots keep the threads busy while every copy is in memory. A long
 * range (whose output bypasses the page cache, file.h hs_out_expect) gets
 * more, so that the disk's pauses do not stall the reader and with it the
 * hasher: measured on 1 GiB, 4 slots left the hasher waiting 10-20 % of
 * the pass, 32 about 1 % (docs/PERFORMANCE.md). Memory: nslots MiB per
 * file being streamed, whatever its size. */
#define STREAM_SLOTS      4
#define STREAM_SLOTS_DEEP 32
#define STREAM_DEEP_MIN   (64u * HS_IO_CHUNK)

struct stream {
	const struct hs_file *in;
	uint64_t end;
	const struct hs_stream_ops *ops;
	void *arg;
	uint8_t *slot[STREAM_SLOTS_DEEP];
	unsigned nslots;
	bool writer; /* consume() runs on the writer thread */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* Under lock: progress of each side, in chunks, and whether any side
	 * failed (then every side stops; its error is in its own context). */
	uint64_t published;
	uint64_t hashed;
	uint64_t consumed;
	bool stop;
	int read_r, write_r;
	struct hs_ctx read_ctx, write_ctx;
};

/* Bytes in the chunk that starts at pos. */
static size_t stream_chunk_len(uint64_t end, uint64_t pos)
{
	return end - pos < HS_IO_CHUNK ? (size_t)(end - pos) : HS_IO_CHUNK;
}

/* Reads and prepares one chunk (both paths). */
static int stream_read(struct hs_ctx *ctx, const struct stream *s, uint8_t *buf, size_t n,
                       uint64_t pos)
{
	int r;

	if ((r = hs_file_pread(ctx, s->in, buf, n, pos)) < 0)
		return r;
	if (s->ops->prepare != NULL)
		return s->ops->prepare(ctx, s->arg, buf, n, pos);
	return 0;
}

/* Every callback on the calling thread, with one buffer. */
static int stream_serial(struct hs_ctx *ctx, struct stream *s)
{
	uint8_t *buf = malloc(HS_IO_CHUNK);
	const struct hs_stream_ops *ops = s->ops;
	size_t n;
	int r;

	if (buf == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (uint64_t pos = 0; pos < s->end; pos += n) {
		n = stream_chunk_len(s->end, pos);
		if ((r = stream_read(ctx, s, buf, n, pos)) < 0 ||
		    (ops->hash != NULL && (r = ops->hash(ctx, s->arg, buf, n, pos)) < 0) ||
		    (ops->consume != NULL && (r = ops->consume(ctx, s->arg, buf, n, pos)) < 0))
			goto out;
	}
	r = 0;
out:
	free(buf);
	return r;
}

/* Records progress (*counter = value) or a failure, and wakes the others. */
static void stream_post(struct stream *s, uint64_t *counter, uint64_t value, bool failed)
{
	pthread_mutex_lock(&s->lock);
	if (failed)
		s->stop = true;
	else
		*counter = value;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

/* Under lock: chunks that every side is done with. */
static uint64_t stream_done(const struct stream *s)
{
	return s->writer && s->consumed < s->hashed ? s->consumed : s->hashed;
}

/* Reader: waits until slot k is free; false when the pass stopped. */
static bool stream_wait_slot(struct stream *s, uint64_t k)
{
	bool go;

	pthread_mutex_lock(&s->lock);
	while (!s->stop && k - stream_done(s) >= s->nslots)
		pthread_cond_wait(&s->cond, &s->lock);
	go = !s->stop;
	pthread_mutex_unlock(&s->lock);
	return go;
}

/* Writer and caller: waits for chunk k; false when the pass stopped. */
static bool stream_wait_chunk(struct stream *s, uint64_t k)
{
	bool ready;

	pthread_mutex_lock(&s->lock);
	while (!s->stop && s->published <= k)
		pthread_cond_wait(&s->cond, &s->lock);
	ready = !s->stop;
	pthread_mutex_unlock(&s->lock);
	return ready;
}

static void *stream_read_thread(void *arg)
{
	struct stream *s = arg;
	uint64_t k = 0, pos = 0;
	size_t n;
	int r = 0;

	for (; pos < s->end; pos += n, k++) {
		uint8_t *buf = s->slot[k % s->nslots];

		n = stream_chunk_len(s->end, pos);
		if (!stream_wait_slot(s, k))
			return NULL;
		r = stream_read(&s->read_ctx, s, buf, n, pos);
		stream_post(s, &s->published, k + 1, r < 0);
		/* With no writer, consume() here, while the caller hashes. */
		if (r == 0 && !s->writer && s->ops->consume != NULL &&
		    (r = s->ops->consume(&s->read_ctx, s->arg, buf, n, pos)) < 0)
			stream_post(s, NULL, 0, true);
		if (r < 0) {
			s->read_r = r;
			return NULL;
		}
	}
	return NULL;
}

static void *stream_write_thread(void *arg)
{
	struct stream *s = arg;
	uint64_t k = 0, pos = 0;
	size_t n;
	int r;

	for (; pos < s->end; pos += n, k++) {
		n = stream_chunk_len(s->end, pos);
		if (!stream_wait_chunk(s, k))
			return NULL;
		r = s->ops->consume(&s->write_ctx, s->arg, s->slot[k % s->nslots], n, pos);
		stream_post(s, &s->consumed, k + 1, r < 0);
		if (r < 0) {
			s->write_r = r;
			return NULL;
		}
	}
	return NULL;
}

/* The calling thread's part: hashes every chunk, in order. */
static int stream_hash_loop(struct hs_ctx *ctx, struct stream *s)
{
	uint64_t k = 0, pos = 0;
	size_t n;
	int r = 0;

	for (; pos < s->end; pos += n, k++) {
		n = stream_chunk_len(s->end, pos);
		if (!stream_wait_chunk(s, k))
			break;
		if (s->ops->hash != NULL)
			r = s->ops->hash(ctx, s->arg, s->slot[k % s->nslots], n, pos);
		stream_post(s, &s->hashed, k + 1, r < 0);
		if (r < 0)
			break;
	}
	return r;
}

/* After the joins: the reader's or the writer's error, into ctx. */
static int stream_thread_error(struct hs_ctx *ctx, const struct stream *s)
{
	const struct hs_ctx *failed = s->read_r < 0 ? &s->read_ctx : &s->write_ctx;
	int r = s->read_r < 0 ? s->read_r : s->write_r;

	if (r == 0)
		return 0;
	return hs_error_set(ctx, r, "%s", failed->message[0] ? failed->message : "read failed");
}

/* Starts the threads and hashes; the caller's thread does everything if
 * the reader cannot start. Slots and lock are set up. */
static int stream_run(struct hs_ctx *ctx, struct stream *s)
{
	pthread_t reader, writer;
	int r;

	s->writer = s->ops->consume != NULL &&
	            pthread_create(&writer, NULL, stream_write_thread, s) == 0;
	if (pthread_create(&reader, NULL, stream_read_thread, s) != 0) {
		if (s->writer) {
			stream_post(s, NULL, 0, true);
			pthread_join(writer, NULL);
		}
		return stream_serial(ctx, s);
	}
	r = stream_hash_loop(ctx, s);
	pthread_join(reader, NULL);
	if (s->writer)
		pthread_join(writer, NULL);
	return r < 0 ? r : stream_thread_error(ctx, s);
}

/* The threaded pass; falls back to stream_serial() without threads. */
static int stream_threaded(struct hs_ctx *ctx, struct stream *s)
{
	int r;

	for (unsigned i = 0; i < s->nslots; i++)
		if ((s->slot[i] = hs_os_alloc_aligned(HS_IO_CHUNK)) == NULL) {
			r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
			goto out;
		}
	if (pthread_mutex_init(&s->lock, NULL) != 0) {
		r = stream_serial(ctx, s);
		goto out;
	}
	if (pthread_cond_init(&s->cond, NULL) != 0) {
		pthread_mutex_destroy(&s->lock);
		r = stream_serial(ctx, s);
		goto out;
	}
	r = stream_run(ctx, s);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
out:
	for (unsigned i = 0; i < s->nslots; i++)
		hs_os_free_aligned(s->slot[i]);
	return r;
}

int hs_stream_file(struct hs_ctx *ctx, const struct hs_file *in, uint64_t end,
                   const struct hs_stream_ops *ops, void *arg)
{
	struct stream s = {.in = in, .end = end, .ops = ops, .arg = arg};

	if (end > in->size)
		return hs_error_set(ctx, HS_ERR_INVALID, "internal: stream past end of %s",
		                    in->path);
	if (end < HS_STREAM_THREAD_MIN)
		return stream_serial(ctx, &s);
	/* Advice only: larger read-ahead on a cold cache (not worth a system
	 * call per file in a batch of small ones). */
	hs_os_advise_sequential(in->fd, end);
	s.nslots = end >= STREAM_DEEP_MIN ? STREAM_SLOTS_DEEP : STREAM_SLOTS;
	return stream_threaded(ctx, &s);
}
