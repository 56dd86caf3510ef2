/*
 * cfb.h - a small, bounds-checked reader and compacting writer of OLE
 * compound files (MS-CFB), the container of MSI/MSP/MST packages
 * (authenticode.md 5.1).
 *
 * The reader validates the whole structure at open time: every sector of
 * the FAT, DIFAT, miniFAT, directory, mini stream and each stream chain is
 * checked to lie inside the file and to belong to one chain only, so loops
 * and cross-linked chains are found before any stream is read. Stream data
 * is never loaded whole: hs_cfb_read() hands it out in chunks.
 *
 * The writer rebuilds the file compacted (no free or stale sectors), keeping
 * every entry's name, CLSID, state bits and times, so that both the content
 * digest and the MsiDigitalSignatureEx pre-hash stay the same.
 */
#ifndef HS_CFB_H
#define HS_CFB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "core/file.h"

#define HS_CFB_STORAGE 1
#define HS_CFB_STREAM  2
#define HS_CFB_ROOT    5

#define HS_CFB_NAME_MAX 64 /* bytes, UTF-16LE including the NUL */

/* One directory entry reachable from the root. */
struct hs_cfb_entry {
	uint8_t name[HS_CFB_NAME_MAX]; /* raw UTF-16LE, NUL-terminated */
	uint16_t name_len;             /* bytes including the NUL */
	uint8_t type;                  /* HS_CFB_STORAGE, _STREAM or _ROOT */
	uint8_t clsid[16];
	uint32_t state_bits;
	uint8_t ctime[8]; /* FILETIME, as stored */
	uint8_t mtime[8];
	uint32_t start;
	uint64_t size;
	/* Storages: children, in hash order (authenticode.md 5.3), as indexes
	 * into hs_cfb.kids[first_kid .. first_kid + n_kids). */
	uint32_t first_kid;
	uint32_t n_kids;
	uint32_t depth; /* 0 for the root, at most HS_CFB_MAX_DEPTH */
};

/* Storages nest a level or two in practice; the limit keeps recursion over
 * the tree (digest, pre-hash) shallow on hostile input. */
#define HS_CFB_MAX_DEPTH 32

struct hs_cfb {
	struct hs_file in; /* copy of the caller's; fd and path stay theirs */
	uint16_t major;    /* 3 or 4 */
	uint32_t sector_size;
	uint32_t n_sectors; /* sectors after the header, last one maybe short */
	uint32_t *fat;
	uint32_t fat_len;
	uint32_t *minifat;
	uint32_t minifat_len;
	uint32_t *mini_chain; /* sectors of the mini stream, in order */
	uint32_t mini_chain_len;
	/* Reachable entries; entry 0 is the root. */
	struct hs_cfb_entry *entries;
	uint32_t n_entries;
	uint32_t *kids; /* entry indexes, grouped per storage */
};

/* Parses and validates the compound file; free with hs_cfb_close(). */
int hs_cfb_open(struct hs_ctx *ctx, struct hs_cfb *cfb, const struct hs_file *in);
void hs_cfb_close(struct hs_cfb *cfb);

/* Index of the root storage's child stream with this raw name (bytes incl.
 * the NUL), or -1. */
int64_t hs_cfb_find_root_stream(const struct hs_cfb *cfb, const uint8_t *name, size_t name_len);

/* Chunk consumer for hs_cfb_read(); a negative return stops the read. */
typedef int (*hs_cfb_sink)(struct hs_ctx *ctx, void *arg, const uint8_t *data, size_t len);

/* Feeds the whole content of stream entry `idx` to sink in order. */
int hs_cfb_read(struct hs_ctx *ctx, const struct hs_cfb *cfb, uint32_t idx, hs_cfb_sink sink,
                void *arg);

/* Reads a stream of at most max bytes into out (appended). */
int hs_cfb_read_all(struct hs_ctx *ctx, const struct hs_cfb *cfb, uint32_t idx, size_t max,
                    struct hs_buf *out);

/* A root-level stream the writer adds, with data held in memory. */
struct hs_cfb_new_stream {
	const uint8_t *name; /* raw UTF-16LE incl. the NUL */
	uint16_t name_len;
	const uint8_t *data;
	size_t len;
};

/*
 * Writes the compound file to out (which must be empty), compacted, in the
 * input's sector size: every reachable entry except the root streams named
 * in `drop`, plus the streams in `add`. Entry metadata is kept as read.
 */
int hs_cfb_write(struct hs_ctx *ctx, const struct hs_cfb *cfb, struct hs_out *out,
                 const struct hs_cfb_new_stream *drop, size_t n_drop,
                 const struct hs_cfb_new_stream *add, size_t n_add);

#endif /* HS_CFB_H */
