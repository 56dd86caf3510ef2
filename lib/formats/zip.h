/*
 * zip.h - a small ZIP reader for signing packages in place (APPX/MSIX).
 *
 * Why not a library: signing must keep every entry's bytes where they are
 * and only append (the APPX digest covers the local records byte for
 * byte). libzip and minizip re-serialise entries on write; we only need to
 * read the central directory, read a few small entries, and write a new
 * central directory, so this reader does just that. Entry data is streamed
 * by the caller with hs_file_pread(); only the central directory (bounded)
 * is held in memory.
 */
#ifndef HS_ZIP_H
#define HS_ZIP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/core.h"
#include "core/file.h"

/* Largest central directory we accept (memory is proportional to it). */
#define HS_ZIP_CD_MAX ((size_t)64 * 1024 * 1024)

struct hs_zip_entry {
	const char *name; /* points into the central directory copy, not NUL-terminated */
	uint16_t name_len;
	uint16_t flags;
	uint16_t method;
	uint32_t crc;
	uint64_t csize, usize, local_off;
	size_t rec_off, rec_len; /* the record inside hs_zip.cd */
	size_t z64_off;          /* offset in cd of the zip64 local-offset field, 0 if none */
	uint64_t span_end;       /* where the next local record (or the CD) starts */
};

struct hs_zip {
	struct hs_buf cd; /* the central directory as read */
	struct hs_zip_entry *entries;
	size_t n_entries;
	uint64_t cd_offset, cd_size;
	bool zip64;
	uint8_t eocd[22];
	struct hs_buf comment;  /* EOCD comment */
	uint8_t eocd64[56];     /* the zip64 EOCD record's fixed part */
	struct hs_buf eocd64_x; /* its extensible data */
	uint8_t locator[20];
};

/* Parses the end records and the central directory of f. */
int hs_zip_open(struct hs_ctx *ctx, struct hs_zip *zip, const struct hs_file *f);
void hs_zip_close(struct hs_zip *zip);
/* Index of the entry called name, or -1. */
long hs_zip_find(const struct hs_zip *zip, const char *name);
/* Reads and uncompresses an entry (stored or deflate) of at most max
 * bytes into out, checking its CRC. out belongs to the caller and may hold
 * partial data after a failure: free it either way. */
int hs_zip_read(struct hs_ctx *ctx, const struct hs_zip *zip, const struct hs_file *f,
                const struct hs_zip_entry *e, size_t max, struct hs_buf *out);
/* Raw deflate (no zlib header) of data into out. */
int hs_zip_deflate(struct hs_ctx *ctx, const uint8_t *data, size_t len, struct hs_buf *out);
uint32_t hs_zip_crc32(const uint8_t *data, size_t len);

static inline uint16_t hs_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t hs_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t hs_le64(const uint8_t *p)
{
	return (uint64_t)hs_le32(p) | (uint64_t)hs_le32(p + 4) << 32;
}
static inline void hs_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void hs_put32(uint8_t *p, uint32_t v)
{
	hs_put16(p, (uint16_t)v);
	hs_put16(p + 2, (uint16_t)(v >> 16));
}
static inline void hs_put64(uint8_t *p, uint64_t v)
{
	hs_put32(p, (uint32_t)v);
	hs_put32(p + 4, (uint32_t)(v >> 32));
}

#endif /* HS_ZIP_H */
