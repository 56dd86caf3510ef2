/*
 * cfb.c - reading and validating an OLE compound file (MS-CFB). The
 * compacting writer is in cfb_write.c.
 *
 * Why our own: libgsf (the only maintained compound-file library in Debian)
 * hides the directory entries' times and state bits that the
 * MsiDigitalSignatureEx pre-hash covers, cannot write them back, and lays
 * the file out its own way; osslsigncode dropped it for the same reason
 * (authenticode.md 5.6). A reader and writer of just what MSI signing
 * needs is small, and every length in it is checked against the file.
 */
#include <stdlib.h>
#include <string.h>

#include "cfb_int.h"

/* The directory is read whole: 64 MiB is half a million entries, far more
 * than any installer (hundreds to a few thousand). */
#define CFB_MAX_DIR_BYTES (64u * 1024 * 1024)

/* Parser state while hs_cfb_open() runs. */
struct cfb_parse {
	struct hs_ctx *ctx;
	struct hs_cfb *cfb;
	uint8_t hdr[CFB_HDR_LEN];
	uint8_t *used;      /* per sector: already part of a chain */
	uint8_t *mini_used; /* per mini sector */
	uint32_t mini_capacity;
	uint8_t *dir; /* the raw directory stream */
	uint32_t n_raw;
	uint8_t *visited; /* per raw directory entry */
	uint32_t *raw_of; /* per kept entry: its raw directory id */
	uint32_t *stack;
	uint32_t n_kids;
};

uint16_t hs_cfb_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

uint32_t hs_cfb_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t cfb_le64(const uint8_t *p)
{
	return (uint64_t)hs_cfb_le32(p) | (uint64_t)hs_cfb_le32(p + 4) << 32;
}

uint64_t hs_cfb_sector_off(const struct hs_cfb *cfb, uint32_t sector)
{
	return ((uint64_t)sector + 1) * cfb->sector_size;
}

static int cfb_bad(struct cfb_parse *p, const char *what, uint32_t value)
{
	return hs_error_set(p->ctx, HS_ERR_FORMAT, "%s: malformed compound file: %s (%#x)",
	                    p->cfb->in.path, what, value);
}

/* Marks a sector as belonging to a chain: in range and used only once, so
 * that chains that loop or share sectors are refused. */
static int cfb_claim(struct cfb_parse *p, uint32_t sector, const char *what)
{
	if (sector >= p->cfb->n_sectors)
		return cfb_bad(p, what, sector);
	if (p->used[sector])
		return hs_error_set(p->ctx, HS_ERR_FORMAT,
		                    "%s: malformed compound file: sector %#x used twice "
		                    "(loop or cross-linked chain in %s)",
		                    p->cfb->in.path, sector, what);
	p->used[sector] = 1;
	return 0;
}

static int cfb_next(struct cfb_parse *p, uint32_t sector, uint32_t *next)
{
	if (sector >= p->cfb->fat_len)
		return cfb_bad(p, "sector beyond the FAT", sector);
	*next = p->cfb->fat[sector];
	return 0;
}

/*
 * Follows a FAT chain from start, claiming each sector. With want !=
 * CFB_UNTIL_END exactly `want` sectors are taken (the chain must be at
 * least that long); otherwise up to ENDOFCHAIN. *out (may be NULL) gets
 * the sectors in order.
 */
#define CFB_UNTIL_END UINT32_MAX
static int cfb_chain(struct cfb_parse *p, uint32_t start, uint32_t want, const char *what,
                     uint32_t **out, uint32_t *n_out)
{
	uint32_t sector = start, n = 0, cap = want != CFB_UNTIL_END ? want : 64, *list = NULL;
	int r;

	while (n < want && sector != CFB_ENDOFCHAIN) {
		if ((r = cfb_claim(p, sector, what)) < 0)
			goto out;
		if (out != NULL && (list == NULL || n == cap)) {
			uint32_t *grown;

			cap = list == NULL ? cap : cap * 2;
			if ((grown = realloc(list, (size_t)cap * sizeof(*list))) == NULL) {
				r = hs_error_set(p->ctx, HS_ERR_NOMEM, "out of memory");
				goto out;
			}
			list = grown;
		}
		if (out != NULL)
			list[n] = sector;
		n++;
		if (n < want && (r = cfb_next(p, sector, &sector)) < 0)
			goto out;
	}
	if (want != CFB_UNTIL_END && n < want) {
		r = cfb_bad(p, "chain shorter than its size", n);
		goto out;
	}
	if (out != NULL) {
		*out = list;
		list = NULL;
	}
	if (n_out != NULL)
		*n_out = n;
	r = 0;
out:
	free(list);
	return r;
}

static uint32_t cfb_div_up(uint64_t n, uint32_t unit)
{
	return (uint32_t)((n + unit - 1) / unit);
}

/* Header fields that must hold for us to read the file at all. */
static int cfb_parse_header(struct cfb_parse *p)
{
	static const uint8_t magic[8] = {0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1};
	struct hs_cfb *cfb = p->cfb;
	uint16_t shift;
	int r;

	if (cfb->in.size < CFB_HDR_LEN)
		return cfb_bad(p, "file shorter than the header", (uint32_t)cfb->in.size);
	if ((r = hs_file_pread(p->ctx, &cfb->in, p->hdr, CFB_HDR_LEN, 0)) < 0)
		return r;
	if (memcmp(p->hdr, magic, sizeof(magic)) != 0 || hs_cfb_le16(p->hdr + 0x1c) != 0xfffe)
		return cfb_bad(p, "bad signature or byte order", hs_cfb_le16(p->hdr + 0x1c));
	cfb->major = hs_cfb_le16(p->hdr + 0x1a);
	shift = hs_cfb_le16(p->hdr + 0x1e);
	if (!((cfb->major == 3 && shift == 9) || (cfb->major == 4 && shift == 12)))
		return hs_error_set(p->ctx, HS_ERR_UNSUPPORTED,
		                    "%s: compound file version %u with sector shift %u",
		                    cfb->in.path, cfb->major, shift);
	if (hs_cfb_le16(p->hdr + 0x20) != 6 || hs_cfb_le32(p->hdr + 0x38) != CFB_MINI_CUTOFF)
		return hs_error_set(p->ctx, HS_ERR_UNSUPPORTED,
		                    "%s: compound file with a non-standard mini stream",
		                    cfb->in.path);
	cfb->sector_size = 1u << shift;
	if (cfb->in.size <= cfb->sector_size ||
	    cfb->in.size - cfb->sector_size > (uint64_t)CFB_MAXREGSECT * cfb->sector_size)
		return cfb_bad(p, "file size does not fit the sector size",
		               (uint32_t)(cfb->in.size & 0xffffffff));
	cfb->n_sectors = cfb_div_up(cfb->in.size - cfb->sector_size, cfb->sector_size);
	return 0;
}

/* The sector numbers of the FAT: 109 in the header, the rest in the DIFAT
 * chain whose sectors end with the next DIFAT sector's number. */
static int cfb_fat_sectors(struct cfb_parse *p, uint32_t n_fat, uint32_t *list)
{
	uint32_t per = p->cfb->sector_size / 4 - 1, sector = hs_cfb_le32(p->hdr + 0x44);
	uint32_t n_difat = hs_cfb_le32(p->hdr + 0x48), n = 0;
	uint8_t buf[CFB_MAX_SECTOR];
	int r;

	for (; n < n_fat && n < CFB_DIFAT_IN_HDR; n++)
		list[n] = hs_cfb_le32(p->hdr + 0x4c + 4 * n);
	for (uint32_t d = 0; n < n_fat; d++) {
		if (d >= n_difat)
			return cfb_bad(p, "DIFAT shorter than the FAT sector count", n_fat);
		if ((r = cfb_claim(p, sector, "DIFAT")) < 0 ||
		    (r = hs_file_pread(p->ctx, &p->cfb->in, buf, p->cfb->sector_size,
		                       hs_cfb_sector_off(p->cfb, sector))) < 0)
			return r;
		for (uint32_t i = 0; i < per && n < n_fat; i++)
			list[n++] = hs_cfb_le32(buf + 4 * i);
		sector = hs_cfb_le32(buf + 4 * per);
	}
	return 0;
}

static int cfb_read_u32s(struct cfb_parse *p, const uint32_t *sectors, uint32_t n, uint32_t *out,
                         const char *what)
{
	uint32_t per = p->cfb->sector_size / 4;
	uint8_t buf[CFB_MAX_SECTOR];
	int r;

	for (uint32_t i = 0; i < n; i++) {
		if (what != NULL && (r = cfb_claim(p, sectors[i], what)) < 0)
			return r;
		if ((r = hs_file_pread(p->ctx, &p->cfb->in, buf, p->cfb->sector_size,
		                       hs_cfb_sector_off(p->cfb, sectors[i]))) < 0)
			return r;
		for (uint32_t j = 0; j < per; j++)
			out[(size_t)i * per + j] = hs_cfb_le32(buf + 4 * j);
	}
	return 0;
}

static int cfb_load_fat(struct cfb_parse *p)
{
	struct hs_cfb *cfb = p->cfb;
	uint32_t n_fat = hs_cfb_le32(p->hdr + 0x2c), *list = NULL;
	int r;

	if (n_fat == 0 || n_fat > cfb->n_sectors || (uint64_t)n_fat * cfb->sector_size > HS_BUF_MAX)
		return cfb_bad(p, "FAT sector count", n_fat);
	list = calloc(n_fat, sizeof(*list));
	cfb->fat_len = n_fat * (cfb->sector_size / 4);
	cfb->fat = calloc(cfb->fat_len, sizeof(*cfb->fat));
	if (list == NULL || cfb->fat == NULL) {
		r = hs_error_set(p->ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = cfb_fat_sectors(p, n_fat, list)) < 0)
		goto out;
	r = cfb_read_u32s(p, list, n_fat, cfb->fat, "FAT");
out:
	free(list);
	return r;
}

static int cfb_load_dir(struct cfb_parse *p)
{
	uint32_t *list = NULL, n = 0;
	int r;

	if ((r = cfb_chain(p, hs_cfb_le32(p->hdr + 0x30), CFB_UNTIL_END, "directory", &list, &n)) <
	    0)
		return r;
	if (n == 0 || (uint64_t)n * p->cfb->sector_size > CFB_MAX_DIR_BYTES) {
		r = hs_error_set(p->ctx, n == 0 ? HS_ERR_FORMAT : HS_ERR_UNSUPPORTED,
		                 "%s: compound file directory of %u sectors", p->cfb->in.path, n);
		goto out;
	}
	p->n_raw = n * (p->cfb->sector_size / CFB_DIRENT_LEN);
	if ((p->dir = malloc((size_t)n * p->cfb->sector_size)) == NULL) {
		r = hs_error_set(p->ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < n && r == 0; i++)
		r = hs_file_pread(p->ctx, &p->cfb->in, p->dir + (size_t)i * p->cfb->sector_size,
		                  p->cfb->sector_size, hs_cfb_sector_off(p->cfb, list[i]));
out:
	free(list);
	return r;
}

static int cfb_load_minifat(struct cfb_parse *p)
{
	struct hs_cfb *cfb = p->cfb;
	uint32_t *list = NULL, n = 0;
	int r;

	if ((r = cfb_chain(p, hs_cfb_le32(p->hdr + 0x3c), CFB_UNTIL_END, "miniFAT", &list, &n)) < 0)
		return r;
	cfb->minifat_len = n * (cfb->sector_size / 4);
	if (n > 0 && (cfb->minifat = calloc(cfb->minifat_len, sizeof(uint32_t))) == NULL) {
		r = hs_error_set(p->ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	r = cfb_read_u32s(p, list, n, cfb->minifat, NULL);
out:
	free(list);
	return r;
}

/* Decodes one raw directory entry, checking what the digest relies on. */
static int cfb_decode_entry(struct cfb_parse *p, uint32_t id, struct hs_cfb_entry *e)
{
	const uint8_t *d = p->dir + (size_t)id * CFB_DIRENT_LEN;

	memset(e, 0, sizeof(*e));
	e->name_len = hs_cfb_le16(d + 0x40);
	if (e->name_len < 2 || e->name_len > HS_CFB_NAME_MAX || e->name_len % 2 != 0 ||
	    d[e->name_len - 2] != 0 || d[e->name_len - 1] != 0)
		return cfb_bad(p, "directory entry name", id);
	memcpy(e->name, d, e->name_len);
	e->type = d[0x42];
	memcpy(e->clsid, d + 0x50, 16);
	e->state_bits = hs_cfb_le32(d + 0x60);
	memcpy(e->ctime, d + 0x64, 8);
	memcpy(e->mtime, d + 0x6c, 8);
	e->start = hs_cfb_le32(d + 0x74);
	/* Version 3 readers must ignore the high half (MS-CFB 2.6.3). */
	e->size = p->cfb->major == 3 ? hs_cfb_le32(d + 0x78) : cfb_le64(d + 0x78);
	if (e->type == HS_CFB_STREAM && e->size > p->cfb->in.size)
		return cfb_bad(p, "stream larger than the file", id);
	return 0;
}

/* Claims the mini sectors of a stream below the cutoff. */
static int cfb_claim_mini(struct cfb_parse *p, const struct hs_cfb_entry *e)
{
	uint32_t sector = e->start, want = cfb_div_up(e->size, CFB_MINI_SECTOR);

	for (uint32_t i = 0; i < want; i++) {
		if (sector >= p->mini_capacity)
			return cfb_bad(p, "mini sector out of range", sector);
		if (p->mini_used[sector])
			return cfb_bad(p, "mini sector used twice (loop or cross-link)", sector);
		p->mini_used[sector] = 1;
		sector = p->cfb->minifat[sector];
	}
	return 0;
}

/* The root entry and the mini stream it holds. */
static int cfb_load_root(struct cfb_parse *p)
{
	struct hs_cfb *cfb = p->cfb;
	struct hs_cfb_entry *root = &cfb->entries[0];
	int r;

	if ((r = cfb_decode_entry(p, 0, root)) < 0)
		return r;
	if (root->type != HS_CFB_ROOT || root->size > cfb->in.size)
		return cfb_bad(p, "root entry", root->type);
	p->visited[0] = 1;
	cfb->n_entries = 1;
	if ((r = cfb_chain(p, root->start, cfb_div_up(root->size, cfb->sector_size), "mini stream",
	                   &cfb->mini_chain, &cfb->mini_chain_len)) < 0)
		return r;
	p->mini_capacity = (uint32_t)(root->size / CFB_MINI_SECTOR);
	if (p->mini_capacity > cfb->minifat_len)
		p->mini_capacity = cfb->minifat_len;
	p->mini_used = calloc(p->mini_capacity + 1, 1);
	if (p->mini_used == NULL)
		return hs_error_set(p->ctx, HS_ERR_NOMEM, "out of memory");
	return 0;
}

/* Checks a child entry and claims the sectors of its data. */
static int cfb_check_child(struct cfb_parse *p, const struct hs_cfb_entry *e, uint32_t id)
{
	if (e->type != HS_CFB_STREAM && e->type != HS_CFB_STORAGE)
		return cfb_bad(p, "directory entry type in the tree", id);
	if (e->type == HS_CFB_STORAGE || e->size == 0)
		return 0;
	if (e->size < CFB_MINI_CUTOFF)
		return cfb_claim_mini(p, e);
	return cfb_chain(p, e->start, cfb_div_up(e->size, p->cfb->sector_size), "stream", NULL,
	                 NULL);
}

/* Adds the children of storage `parent` (the red-black tree under its child
 * id) to the entry list, each raw entry at most once. */
static int cfb_collect_kids(struct cfb_parse *p, uint32_t parent, uint32_t child)
{
	struct hs_cfb *cfb = p->cfb;
	uint32_t top = 0, id;
	int r;

	cfb->entries[parent].first_kid = p->n_kids;
	if (child != CFB_NOSTREAM)
		p->stack[top++] = child;
	while (top > 0) {
		const uint8_t *d;

		id = p->stack[--top];
		if (id >= p->n_raw || p->visited[id])
			return cfb_bad(p,
			               id >= p->n_raw ? "directory entry id out of range"
			                              : "directory entry reached twice (loop)",
			               id);
		p->visited[id] = 1;
		if ((r = cfb_decode_entry(p, id, &cfb->entries[cfb->n_entries])) < 0 ||
		    (r = cfb_check_child(p, &cfb->entries[cfb->n_entries], id)) < 0)
			return r;
		cfb->entries[cfb->n_entries].depth = cfb->entries[parent].depth + 1;
		if (cfb->entries[cfb->n_entries].depth > HS_CFB_MAX_DEPTH)
			return cfb_bad(p, "storages nested too deeply", id);
		p->raw_of[cfb->n_entries] = id;
		p->cfb->kids[p->n_kids++] = cfb->n_entries++;
		d = p->dir + (size_t)id * CFB_DIRENT_LEN;
		if (hs_cfb_le32(d + 0x44) != CFB_NOSTREAM)
			p->stack[top++] = hs_cfb_le32(d + 0x44);
		if (hs_cfb_le32(d + 0x48) != CFB_NOSTREAM)
			p->stack[top++] = hs_cfb_le32(d + 0x48);
	}
	cfb->entries[parent].n_kids = p->n_kids - cfb->entries[parent].first_kid;
	return 0;
}

/* Hash order (authenticode.md 5.3): memcmp of the raw names including the
 * NUL; a name that is a prefix sorts first because its NUL is lower. */
static int cfb_hash_cmp(const void *a, const void *b)
{
	const struct hs_cfb_entry *const *x = a, *const *y = b;
	uint16_t n = (*x)->name_len < (*y)->name_len ? (*x)->name_len : (*y)->name_len;
	int c = memcmp((*x)->name, (*y)->name, n);

	if (c != 0 || (*x)->name_len == (*y)->name_len)
		return c;
	return (*x)->name_len > (*y)->name_len ? -1 : 1;
}

/* Sorts one storage's children into hash order; equal names are refused,
 * they would make the digest ambiguous. */
static int cfb_sort_kids(struct cfb_parse *p, struct hs_cfb_entry *s)
{
	struct hs_cfb *cfb = p->cfb;
	const struct hs_cfb_entry **v;

	if (s->n_kids < 2)
		return 0;
	if ((v = calloc(s->n_kids, sizeof(*v))) == NULL)
		return hs_error_set(p->ctx, HS_ERR_NOMEM, "out of memory");
	for (uint32_t i = 0; i < s->n_kids; i++)
		v[i] = &cfb->entries[cfb->kids[s->first_kid + i]];
	qsort(v, s->n_kids, sizeof(*v), cfb_hash_cmp);
	for (uint32_t i = 0; i < s->n_kids; i++) {
		if (i > 0 && cfb_hash_cmp(&v[i - 1], &v[i]) == 0) {
			free(v);
			return cfb_bad(p, "two entries with the same name", i);
		}
		cfb->kids[s->first_kid + i] = (uint32_t)(v[i] - cfb->entries);
	}
	free(v);
	return 0;
}

/* Walks the tree breadth first: the entry list grows behind the cursor. */
static int cfb_load_tree(struct cfb_parse *p)
{
	struct hs_cfb *cfb = p->cfb;
	int r;

	cfb->entries = calloc(p->n_raw, sizeof(*cfb->entries));
	cfb->kids = calloc(p->n_raw, sizeof(*cfb->kids));
	p->visited = calloc(p->n_raw, 1);
	/* Pops are bounded by n_raw and each pushes at most two ids. */
	p->stack = calloc((size_t)p->n_raw + 2, sizeof(*p->stack));
	p->raw_of = calloc(p->n_raw, sizeof(*p->raw_of));
	if (cfb->entries == NULL || cfb->kids == NULL || p->visited == NULL || p->stack == NULL ||
	    p->raw_of == NULL)
		return hs_error_set(p->ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = cfb_load_root(p)) < 0)
		return r;
	for (uint32_t i = 0; i < cfb->n_entries; i++) {
		const uint8_t *d;

		if (cfb->entries[i].type == HS_CFB_STREAM)
			continue;
		d = p->dir + (size_t)p->raw_of[i] * CFB_DIRENT_LEN;
		if ((r = cfb_collect_kids(p, i, hs_cfb_le32(d + 0x4c))) < 0 ||
		    (r = cfb_sort_kids(p, &cfb->entries[i])) < 0)
			return r;
	}
	return 0;
}

int hs_cfb_open(struct hs_ctx *ctx, struct hs_cfb *cfb, const struct hs_file *in)
{
	struct cfb_parse p = {.ctx = ctx, .cfb = cfb};
	int r;

	memset(cfb, 0, sizeof(*cfb));
	cfb->in = *in;
	if ((r = cfb_parse_header(&p)) < 0)
		goto out;
	if ((p.used = calloc(cfb->n_sectors, 1)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = cfb_load_fat(&p)) < 0 || (r = cfb_load_dir(&p)) < 0 ||
	    (r = cfb_load_minifat(&p)) < 0 || (r = cfb_load_tree(&p)) < 0)
		goto out;
	r = 0;
out:
	free(p.used);
	free(p.mini_used);
	free(p.dir);
	free(p.visited);
	free(p.raw_of);
	free(p.stack);
	if (r < 0)
		hs_cfb_close(cfb);
	return r;
}

void hs_cfb_close(struct hs_cfb *cfb)
{
	free(cfb->fat);
	free(cfb->minifat);
	free(cfb->mini_chain);
	free(cfb->entries);
	free(cfb->kids);
	memset(cfb, 0, sizeof(*cfb));
}

int64_t hs_cfb_find_root_stream(const struct hs_cfb *cfb, const uint8_t *name, size_t name_len)
{
	const struct hs_cfb_entry *root = &cfb->entries[0];

	for (uint32_t i = 0; i < root->n_kids; i++) {
		const struct hs_cfb_entry *e = &cfb->entries[cfb->kids[root->first_kid + i]];

		if (e->type == HS_CFB_STREAM && e->name_len == name_len &&
		    memcmp(e->name, name, name_len) == 0)
			return cfb->kids[root->first_kid + i];
	}
	return -1;
}

/* A stream below the cutoff: its mini sectors, gathered into one buffer
 * (at most 4095 bytes). open() checked every mini sector and chain. */
static int cfb_read_mini(struct hs_ctx *ctx, const struct hs_cfb *cfb, const struct hs_cfb_entry *e,
                         hs_cfb_sink sink, void *arg)
{
	uint8_t buf[CFB_MINI_CUTOFF];
	uint32_t sector = e->start;
	size_t done = 0;
	int r;

	while (done < e->size) {
		uint64_t off = (uint64_t)sector * CFB_MINI_SECTOR;
		uint32_t idx = (uint32_t)(off / cfb->sector_size);
		size_t n =
		        e->size - done < CFB_MINI_SECTOR ? (size_t)e->size - done : CFB_MINI_SECTOR;

		if (idx >= cfb->mini_chain_len)
			return hs_error_set(ctx, HS_ERR_FORMAT, "%s: mini sector %#x out of range",
			                    cfb->in.path, sector);
		if ((r = hs_file_pread(ctx, &cfb->in, buf + done, n,
		                       hs_cfb_sector_off(cfb, cfb->mini_chain[idx]) +
		                               off % cfb->sector_size)) < 0)
			return r;
		done += n;
		sector = sector < cfb->minifat_len ? cfb->minifat[sector] : CFB_ENDOFCHAIN;
	}
	return sink(ctx, arg, buf, done);
}

/* Reads `len` bytes of consecutive sectors starting at `first` and hands
 * them to the sink. */
static int cfb_read_run(struct hs_ctx *ctx, const struct hs_cfb *cfb, uint8_t *buf, uint32_t first,
                        size_t len, hs_cfb_sink sink, void *arg)
{
	int r;

	if ((r = hs_file_pread(ctx, &cfb->in, buf, len, hs_cfb_sector_off(cfb, first))) < 0)
		return r;
	return sink(ctx, arg, buf, len);
}

/* A regular stream: runs of adjacent sectors are read in one call, up to
 * HS_IO_CHUNK bytes at a time. */
static int cfb_read_big(struct hs_ctx *ctx, const struct hs_cfb *cfb, const struct hs_cfb_entry *e,
                        hs_cfb_sink sink, void *arg)
{
	uint8_t *buf = malloc(HS_IO_CHUNK);
	uint64_t left = e->size;
	uint32_t sector = e->start, run_start = e->start;
	size_t run = 0;
	int r = 0;

	if (buf == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	while (left > 0 && r == 0) {
		size_t n = left < cfb->sector_size ? (size_t)left : cfb->sector_size;

		if (run > 0 && (sector != run_start + run / cfb->sector_size ||
		                run + cfb->sector_size > HS_IO_CHUNK)) {
			r = cfb_read_run(ctx, cfb, buf, run_start, run, sink, arg);
			run = 0;
		}
		if (run == 0)
			run_start = sector;
		run += n;
		left -= n;
		if (left > 0)
			sector = sector < cfb->fat_len ? cfb->fat[sector] : CFB_ENDOFCHAIN;
		if (left > 0 && sector >= cfb->n_sectors)
			r = hs_error_set(ctx, HS_ERR_FORMAT, "%s: stream chain broken at %#x",
			                 cfb->in.path, sector);
	}
	if (r == 0 && run > 0)
		r = cfb_read_run(ctx, cfb, buf, run_start, run, sink, arg);
	free(buf);
	return r;
}

int hs_cfb_read(struct hs_ctx *ctx, const struct hs_cfb *cfb, uint32_t idx, hs_cfb_sink sink,
                void *arg)
{
	const struct hs_cfb_entry *e;

	if (idx >= cfb->n_entries || cfb->entries[idx].type != HS_CFB_STREAM)
		return hs_error_set(ctx, HS_ERR_INVALID, "internal: not a stream entry");
	e = &cfb->entries[idx];
	if (e->size == 0)
		return 0;
	if (e->size < CFB_MINI_CUTOFF)
		return cfb_read_mini(ctx, cfb, e, sink, arg);
	return cfb_read_big(ctx, cfb, e, sink, arg);
}

static int cfb_append_sink(struct hs_ctx *ctx, void *arg, const uint8_t *data, size_t len)
{
	if (hs_buf_append(arg, data, len) < 0)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	return 0;
}

int hs_cfb_read_all(struct hs_ctx *ctx, const struct hs_cfb *cfb, uint32_t idx, size_t max,
                    struct hs_buf *out)
{
	if (cfb->entries[idx].size > max)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "%s: stream of %llu bytes is too large", cfb->in.path,
		                    (unsigned long long)cfb->entries[idx].size);
	return hs_cfb_read(ctx, cfb, idx, cfb_append_sink, out);
}
