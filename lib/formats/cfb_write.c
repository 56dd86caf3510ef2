/*
 * cfb_write.c - writes a compound file compacted (authenticode.md 5.6): the
 * layout is planned first, then written front to back in one pass:
 *
 *   header | regular streams | mini stream | directory | miniFAT | FAT | DIFAT
 *
 * Every stream occupies consecutive sectors, so no sector is free or stale
 * (signtool rejects files with bytes beyond what the FAT accounts for,
 * osslsigncode#273). Each storage's children form a balanced red-black tree
 * in CFB order; directory ids are assigned breadth first.
 */
#include <stdlib.h>
#include <string.h>

#include "cfb_int.h"

#define CFBW_RED   0
#define CFBW_BLACK 1

/* One entry of the output directory. */
struct cfbw_node {
	const struct hs_cfb_entry *in;         /* NULL for an added stream */
	const struct hs_cfb_new_stream *added; /* NULL for an input entry */
	uint32_t src;                          /* input entry index */
	uint64_t size;
	uint32_t start;
	uint32_t left, right, child;
	uint8_t color;
};

/* The planned layout, in sectors. */
struct cfbw {
	struct hs_ctx *ctx;
	const struct hs_cfb *cfb;
	struct hs_out *out;
	uint32_t ss;
	struct cfbw_node *nodes;
	uint32_t n_nodes;
	uint32_t n_mini; /* mini sectors */
	uint32_t mini_start, mini_sectors;
	uint32_t dir_start, dir_sectors;
	uint32_t minifat_start, minifat_sectors;
	uint32_t fat_start, n_fat;
	uint32_t difat_start, n_difat;
	uint32_t *fat; /* n_fat * ss / 4 entries */
};

static void cfbw_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void cfbw_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static const uint8_t *cfbw_name(const struct cfbw_node *n, uint16_t *len)
{
	*len = n->in != NULL ? n->in->name_len : n->added->name_len;
	return n->in != NULL ? n->in->name : n->added->name;
}

/* Simple upper-casing for the CFB tree order: ASCII and Latin-1 letters,
 * which covers the names real files use (MSI names are in 0x3800-0x4840,
 * which have no case). */
static uint16_t cfbw_upper(uint16_t c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 0xe0 && c <= 0xfe && c != 0xf7))
		return (uint16_t)(c - 0x20);
	return c;
}

/* MS-CFB 2.6.4: shorter names first, then code units compared upper-cased. */
static int cfbw_tree_cmp(const void *a, const void *b)
{
	uint16_t la, lb;
	const uint8_t *na = cfbw_name(a, &la), *nb = cfbw_name(b, &lb);

	if (la != lb)
		return la < lb ? -1 : 1;
	for (uint16_t i = 0; i + 2 < la; i += 2) {
		uint16_t ca = cfbw_upper(hs_cfb_le16(na + i)), cb = cfbw_upper(hs_cfb_le16(nb + i));

		if (ca != cb)
			return ca < cb ? -1 : 1;
	}
	return 0;
}

static bool cfbw_dropped(const struct hs_cfb_entry *e, const struct hs_cfb_new_stream *drop,
                         size_t n_drop)
{
	for (size_t i = 0; i < n_drop; i++)
		if (e->type == HS_CFB_STREAM && e->name_len == drop[i].name_len &&
		    memcmp(e->name, drop[i].name, e->name_len) == 0)
			return true;
	return false;
}

/* Builds a balanced tree over nodes[lo, hi): the nodes on the deepest
 * level are red, all others black, which keeps black heights equal. */
static uint32_t cfbw_tree(struct cfbw_node *nodes, uint32_t lo, uint32_t hi, unsigned depth,
                          unsigned max_depth)
{
	uint32_t mid;

	if (lo >= hi)
		return CFB_NOSTREAM;
	mid = lo + (hi - lo) / 2;
	nodes[mid].left = cfbw_tree(nodes, lo, mid, depth + 1, max_depth);
	nodes[mid].right = cfbw_tree(nodes, mid + 1, hi, depth + 1, max_depth);
	nodes[mid].color = depth == max_depth && depth > 0 ? CFBW_RED : CFBW_BLACK;
	return mid;
}

static unsigned cfbw_log2(uint32_t n)
{
	unsigned d = 0;

	while (n >>= 1)
		d++;
	return d;
}

/* Appends the children of node `parent` and links them as its tree. */
static void cfbw_add_kids(struct cfbw *w, uint32_t parent, const struct hs_cfb_new_stream *drop,
                          size_t n_drop, const struct hs_cfb_new_stream *add, size_t n_add)
{
	const struct hs_cfb_entry *pe = w->nodes[parent].in;
	uint32_t base = w->n_nodes;

	for (uint32_t i = 0; i < pe->n_kids; i++) {
		uint32_t src = w->cfb->kids[pe->first_kid + i];
		const struct hs_cfb_entry *e = &w->cfb->entries[src];

		if (parent == 0 && cfbw_dropped(e, drop, n_drop))
			continue;
		w->nodes[w->n_nodes++] = (struct cfbw_node){.in = e, .src = src, .size = e->size};
	}
	for (size_t i = 0; parent == 0 && i < n_add; i++)
		w->nodes[w->n_nodes++] = (struct cfbw_node){.added = &add[i], .size = add[i].len};
	qsort(w->nodes + base, w->n_nodes - base, sizeof(*w->nodes), cfbw_tree_cmp);
	w->nodes[parent].child = CFB_NOSTREAM;
	if (w->n_nodes > base)
		w->nodes[parent].child =
		        cfbw_tree(w->nodes, base, w->n_nodes, 0, cfbw_log2(w->n_nodes - base));
}

/* Output directory in breadth-first order; node 0 is the root. */
static int cfbw_plan_dir(struct cfbw *w, const struct hs_cfb_new_stream *drop, size_t n_drop,
                         const struct hs_cfb_new_stream *add, size_t n_add)
{
	const struct hs_cfb *cfb = w->cfb;

	w->nodes = calloc((size_t)cfb->n_entries + n_add, sizeof(*w->nodes));
	if (w->nodes == NULL)
		return hs_error_set(w->ctx, HS_ERR_NOMEM, "out of memory");
	w->nodes[0] = (struct cfbw_node){
	        .in = &cfb->entries[0], .left = CFB_NOSTREAM, .right = CFB_NOSTREAM};
	w->n_nodes = 1;
	for (uint32_t i = 0; i < w->n_nodes; i++) {
		struct cfbw_node *n = &w->nodes[i];

		if (n->in != NULL && n->in->type != HS_CFB_STREAM)
			cfbw_add_kids(w, i, drop, n_drop, add, n_add);
		else
			n->child = CFB_NOSTREAM;
	}
	w->nodes[0].color = CFBW_BLACK;
	return 0;
}

static uint32_t cfbw_div_up(uint64_t n, uint32_t unit)
{
	return (uint32_t)((n + unit - 1) / unit);
}

/* Sector numbers for streams, mini stream, directory and miniFAT; then as
 * many FAT and DIFAT sectors as it takes to describe all of them. */
static int cfbw_plan_sectors(struct cfbw *w)
{
	uint32_t per = w->ss / 4;
	uint64_t next = 0, total;

	for (uint32_t i = 1; i < w->n_nodes; i++) {
		struct cfbw_node *n = &w->nodes[i];

		n->start = n->size == 0 ? CFB_ENDOFCHAIN : 0;
		if (n->in != NULL && n->in->type == HS_CFB_STORAGE) {
			n->size = 0;
			n->start = 0;
		} else if (n->size >= CFB_MINI_CUTOFF) {
			n->start = (uint32_t)next;
			next += cfbw_div_up(n->size, w->ss);
		} else if (n->size > 0) {
			n->start = w->n_mini;
			w->n_mini += cfbw_div_up(n->size, CFB_MINI_SECTOR);
		}
		if (next > CFB_MAXREGSECT)
			break;
	}
	w->mini_sectors = cfbw_div_up((uint64_t)w->n_mini * CFB_MINI_SECTOR, w->ss);
	w->mini_start = w->mini_sectors > 0 ? (uint32_t)next : CFB_ENDOFCHAIN;
	next += w->mini_sectors;
	w->dir_sectors = cfbw_div_up((uint64_t)w->n_nodes * CFB_DIRENT_LEN, w->ss);
	w->dir_start = (uint32_t)next;
	next += w->dir_sectors;
	w->minifat_sectors = cfbw_div_up((uint64_t)w->n_mini * 4, w->ss);
	w->minifat_start = w->minifat_sectors > 0 ? (uint32_t)next : CFB_ENDOFCHAIN;
	next += w->minifat_sectors;
	/* The FAT covers itself and the DIFAT: grow both until they fit. */
	for (;;) {
		uint32_t fat, difat;

		total = next + w->n_fat + w->n_difat;
		fat = cfbw_div_up(total, per);
		difat = fat > CFB_DIFAT_IN_HDR ? cfbw_div_up(fat - CFB_DIFAT_IN_HDR, per - 1) : 0;
		if (fat == w->n_fat && difat == w->n_difat)
			break;
		w->n_fat = fat;
		w->n_difat = difat;
	}
	if (total > CFB_MAXREGSECT || (uint64_t)w->n_fat * w->ss > HS_BUF_MAX)
		return hs_error_set(w->ctx, HS_ERR_UNSUPPORTED,
		                    "%s: the signed compound file would be too large",
		                    w->cfb->in.path);
	w->fat_start = (uint32_t)next;
	w->difat_start = w->n_difat > 0 ? w->fat_start + w->n_fat : CFB_ENDOFCHAIN;
	return 0;
}

/* Marks count consecutive sectors from start as one chain in table. */
static void cfbw_chain(uint32_t *table, uint32_t start, uint32_t count)
{
	for (uint32_t i = 0; i < count; i++)
		table[start + i] = i + 1 < count ? start + i + 1 : CFB_ENDOFCHAIN;
}

static int cfbw_build_fat(struct cfbw *w)
{
	size_t len = (size_t)w->n_fat * (w->ss / 4);

	if ((w->fat = malloc(len * sizeof(*w->fat))) == NULL)
		return hs_error_set(w->ctx, HS_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < len; i++)
		w->fat[i] = CFB_FREESECT;
	for (uint32_t i = 1; i < w->n_nodes; i++)
		if (w->nodes[i].size >= CFB_MINI_CUTOFF)
			cfbw_chain(w->fat, w->nodes[i].start, cfbw_div_up(w->nodes[i].size, w->ss));
	if (w->mini_sectors > 0)
		cfbw_chain(w->fat, w->mini_start, w->mini_sectors);
	cfbw_chain(w->fat, w->dir_start, w->dir_sectors);
	if (w->minifat_sectors > 0)
		cfbw_chain(w->fat, w->minifat_start, w->minifat_sectors);
	for (uint32_t i = 0; i < w->n_fat; i++)
		w->fat[w->fat_start + i] = CFB_FATSECT;
	for (uint32_t i = 0; i < w->n_difat; i++)
		w->fat[w->difat_start + i] = CFB_DIFSECT;
	return 0;
}

static int cfbw_write_header(struct cfbw *w)
{
	static const uint8_t magic[8] = {0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1};
	uint8_t h[CFB_HDR_LEN] = {0};
	int r;

	memcpy(h, magic, sizeof(magic));
	cfbw_put16(h + 0x18, 0x3e);
	cfbw_put16(h + 0x1a, w->cfb->major);
	cfbw_put16(h + 0x1c, 0xfffe);
	cfbw_put16(h + 0x1e, w->ss == 512 ? 9 : 12);
	cfbw_put16(h + 0x20, 6);
	cfbw_put32(h + 0x28, w->cfb->major == 4 ? w->dir_sectors : 0);
	cfbw_put32(h + 0x2c, w->n_fat);
	cfbw_put32(h + 0x30, w->dir_start);
	cfbw_put32(h + 0x38, CFB_MINI_CUTOFF);
	cfbw_put32(h + 0x3c, w->minifat_start);
	cfbw_put32(h + 0x40, w->minifat_sectors);
	cfbw_put32(h + 0x44, w->difat_start);
	cfbw_put32(h + 0x48, w->n_difat);
	for (uint32_t i = 0; i < CFB_DIFAT_IN_HDR; i++)
		cfbw_put32(h + 0x4c + 4 * i, i < w->n_fat ? w->fat_start + i : CFB_FREESECT);
	if ((r = hs_out_write(w->ctx, w->out, h, sizeof(h))) < 0)
		return r;
	return hs_out_zero(w->ctx, w->out, w->ss - CFB_HDR_LEN);
}

static int cfbw_sink(struct hs_ctx *ctx, void *arg, const uint8_t *data, size_t len)
{
	return hs_out_write(ctx, arg, data, len);
}

/* Writes one stream's bytes followed by zeros up to a multiple of unit. */
static int cfbw_stream(struct cfbw *w, const struct cfbw_node *n, uint32_t unit)
{
	uint64_t before = w->out->size;
	int r;

	if (n->added != NULL)
		r = hs_out_write(w->ctx, w->out, n->added->data, n->added->len);
	else
		r = hs_cfb_read(w->ctx, w->cfb, n->src, cfbw_sink, w->out);
	if (r < 0)
		return r;
	if (w->out->size - before != n->size)
		return hs_error_set(w->ctx, HS_ERR_IO, "internal: stream length changed");
	return hs_out_zero(w->ctx, w->out, (unit - n->size % unit) % unit);
}

/* Regular streams, then the mini stream padded to a whole sector. */
static int cfbw_write_data(struct cfbw *w)
{
	int r;

	for (uint32_t i = 1; i < w->n_nodes; i++)
		if (w->nodes[i].size >= CFB_MINI_CUTOFF &&
		    (r = cfbw_stream(w, &w->nodes[i], w->ss)) < 0)
			return r;
	for (uint32_t i = 1; i < w->n_nodes; i++) {
		const struct cfbw_node *n = &w->nodes[i];

		if (n->size > 0 && n->size < CFB_MINI_CUTOFF &&
		    (r = cfbw_stream(w, n, CFB_MINI_SECTOR)) < 0)
			return r;
	}
	return hs_out_zero(w->ctx, w->out,
	                   (size_t)w->mini_sectors * w->ss - (size_t)w->n_mini * CFB_MINI_SECTOR);
}

static void cfbw_dirent(const struct cfbw *w, uint32_t i, uint8_t *d)
{
	const struct cfbw_node *n = &w->nodes[i];
	uint16_t name_len;
	const uint8_t *name = cfbw_name(n, &name_len);
	uint64_t size = i == 0 ? (uint64_t)w->n_mini * CFB_MINI_SECTOR : n->size;

	memset(d, 0, CFB_DIRENT_LEN);
	memcpy(d, name, name_len);
	cfbw_put16(d + 0x40, name_len);
	d[0x42] = n->in != NULL ? n->in->type : HS_CFB_STREAM;
	d[0x43] = n->color;
	cfbw_put32(d + 0x44, n->left);
	cfbw_put32(d + 0x48, n->right);
	cfbw_put32(d + 0x4c, n->child);
	if (n->in != NULL) {
		memcpy(d + 0x50, n->in->clsid, 16);
		cfbw_put32(d + 0x60, n->in->state_bits);
		memcpy(d + 0x64, n->in->ctime, 8);
		memcpy(d + 0x6c, n->in->mtime, 8);
	}
	cfbw_put32(d + 0x74, i == 0 ? w->mini_start : n->start);
	cfbw_put32(d + 0x78, (uint32_t)size);
	/* Version 3 writers must leave the high half zero. */
	cfbw_put32(d + 0x7c, w->cfb->major == 4 ? (uint32_t)(size >> 32) : 0);
}

/* The directory, unused entries filling its last sector. */
static int cfbw_write_dir(struct cfbw *w)
{
	uint32_t total = w->dir_sectors * (w->ss / CFB_DIRENT_LEN);
	uint8_t d[CFB_DIRENT_LEN];
	int r;

	for (uint32_t i = 0; i < total; i++) {
		if (i < w->n_nodes) {
			cfbw_dirent(w, i, d);
		} else {
			memset(d, 0, sizeof(d));
			cfbw_put32(d + 0x44, CFB_NOSTREAM);
			cfbw_put32(d + 0x48, CFB_NOSTREAM);
			cfbw_put32(d + 0x4c, CFB_NOSTREAM);
		}
		if ((r = hs_out_write(w->ctx, w->out, d, sizeof(d))) < 0)
			return r;
	}
	return 0;
}

/* Writes count little-endian entries, FREESECT-padded to whole sectors. */
static int cfbw_write_table(struct cfbw *w, const uint32_t *v, size_t count, uint32_t sectors)
{
	uint8_t buf[CFB_MAX_SECTOR];
	uint32_t per = w->ss / 4;
	int r;

	for (uint32_t s = 0; s < sectors; s++) {
		for (uint32_t j = 0; j < per; j++) {
			size_t k = (size_t)s * per + j;

			cfbw_put32(buf + 4 * j, k < count ? v[k] : CFB_FREESECT);
		}
		if ((r = hs_out_write(w->ctx, w->out, buf, w->ss)) < 0)
			return r;
	}
	return 0;
}

static int cfbw_write_minifat(struct cfbw *w)
{
	uint32_t *minifat;
	int r;

	if (w->n_mini == 0)
		return 0;
	if ((minifat = malloc((size_t)w->n_mini * sizeof(*minifat))) == NULL)
		return hs_error_set(w->ctx, HS_ERR_NOMEM, "out of memory");
	for (uint32_t i = 1; i < w->n_nodes; i++)
		if (w->nodes[i].size > 0 && w->nodes[i].size < CFB_MINI_CUTOFF)
			cfbw_chain(minifat, w->nodes[i].start,
			           cfbw_div_up(w->nodes[i].size, CFB_MINI_SECTOR));
	r = cfbw_write_table(w, minifat, w->n_mini, w->minifat_sectors);
	free(minifat);
	return r;
}

/* DIFAT sectors: FAT sector numbers 109 onwards, each sector ending with
 * the number of the next DIFAT sector. */
static int cfbw_write_difat(struct cfbw *w)
{
	uint32_t per = w->ss / 4 - 1, k = CFB_DIFAT_IN_HDR;
	uint8_t buf[CFB_MAX_SECTOR];
	int r;

	for (uint32_t s = 0; s < w->n_difat; s++) {
		for (uint32_t j = 0; j < per; j++, k++)
			cfbw_put32(buf + 4 * j, k < w->n_fat ? w->fat_start + k : CFB_FREESECT);
		cfbw_put32(buf + 4 * per,
		           s + 1 < w->n_difat ? w->difat_start + s + 1 : CFB_ENDOFCHAIN);
		if ((r = hs_out_write(w->ctx, w->out, buf, w->ss)) < 0)
			return r;
	}
	return 0;
}

int hs_cfb_write(struct hs_ctx *ctx, const struct hs_cfb *cfb, struct hs_out *out,
                 const struct hs_cfb_new_stream *drop, size_t n_drop,
                 const struct hs_cfb_new_stream *add, size_t n_add)
{
	struct cfbw w = {.ctx = ctx, .cfb = cfb, .out = out, .ss = cfb->sector_size};
	int r;

	if (out->size != 0) {
		r = hs_error_set(ctx, HS_ERR_INVALID, "internal: compound file output not empty");
		goto out;
	}
	if ((r = cfbw_plan_dir(&w, drop, n_drop, add, n_add)) < 0 ||
	    (r = cfbw_plan_sectors(&w)) < 0 || (r = cfbw_build_fat(&w)) < 0)
		goto out;
	if ((r = cfbw_write_header(&w)) < 0 || (r = cfbw_write_data(&w)) < 0 ||
	    (r = cfbw_write_dir(&w)) < 0 || (r = cfbw_write_minifat(&w)) < 0 ||
	    (r = cfbw_write_table(&w, w.fat, (size_t)w.n_fat * (w.ss / 4), w.n_fat)) < 0 ||
	    (r = cfbw_write_difat(&w)) < 0)
		goto out;
	r = 0;
out:
	free(w.nodes);
	free(w.fat);
	return r;
}
