/* zip.c - central directory reader and small-entry access (zip.h). */
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "zip.h"

#define ZIP_EOCD_LEN    22
#define ZIP_LOCATOR_LEN 20
#define ZIP_EOCD64_LEN  56
#define ZIP_CDREC_LEN   46
#define ZIP_LOCAL_LEN   30
#define ZIP_COMMENT_MAX 65535

/* Finds the EOCD record: the last "PK\5\6" whose comment ends the file. */
static int zip_find_eocd(struct hs_ctx *ctx, struct hs_zip *zip, const struct hs_file *f,
                         uint64_t *eocd_off)
{
	uint8_t *tail = NULL;
	size_t len = f->size < ZIP_EOCD_LEN + ZIP_COMMENT_MAX ? (size_t)f->size
	                                                      : ZIP_EOCD_LEN + ZIP_COMMENT_MAX;
	uint64_t base = f->size - len;
	int r;

	if (len < ZIP_EOCD_LEN)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: too small to be a ZIP file", f->path);
	if ((tail = malloc(len)) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if ((r = hs_file_pread(ctx, f, tail, len, base)) < 0)
		goto out;
	r = HS_ERR_FORMAT;
	for (size_t i = len - ZIP_EOCD_LEN + 1; i-- > 0;) {
		if (memcmp(tail + i, "PK\5\6", 4) != 0 ||
		    i + ZIP_EOCD_LEN + hs_le16(tail + i + 20) != len)
			continue;
		memcpy(zip->eocd, tail + i, ZIP_EOCD_LEN);
		*eocd_off = base + i;
		r = hs_buf_append(&zip->comment, tail + i + ZIP_EOCD_LEN, len - i - ZIP_EOCD_LEN);
		if (r < 0)
			hs_error_set(ctx, r, "out of memory");
		goto out;
	}
	hs_error_set(ctx, r, "%s: ZIP end of central directory not found", f->path);
out:
	free(tail);
	return r;
}

/* Reads the zip64 locator and EOCD record if the locator precedes the EOCD. */
static int zip_read_zip64(struct hs_ctx *ctx, struct hs_zip *zip, const struct hs_file *f,
                          uint64_t eocd_off, uint64_t *end_of_cd)
{
	uint64_t rec_off, rec_size;
	int r;

	*end_of_cd = eocd_off;
	if (eocd_off < ZIP_LOCATOR_LEN + ZIP_EOCD64_LEN)
		return 0;
	if ((r = hs_file_pread(ctx, f, zip->locator, ZIP_LOCATOR_LEN, eocd_off - ZIP_LOCATOR_LEN)) <
	    0)
		return r;
	if (memcmp(zip->locator, "PK\6\7", 4) != 0)
		return 0;
	rec_off = hs_le64(zip->locator + 8);
	if (rec_off > eocd_off - ZIP_LOCATOR_LEN - ZIP_EOCD64_LEN)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: zip64 EOCD offset out of range",
		                    f->path);
	if ((r = hs_file_pread(ctx, f, zip->eocd64, ZIP_EOCD64_LEN, rec_off)) < 0)
		return r;
	rec_size = hs_le64(zip->eocd64 + 4);
	if (memcmp(zip->eocd64, "PK\6\6", 4) != 0 || rec_size < ZIP_EOCD64_LEN - 12 ||
	    rec_size - (ZIP_EOCD64_LEN - 12) > ZIP_COMMENT_MAX ||
	    rec_off + 12 + rec_size != eocd_off - ZIP_LOCATOR_LEN)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: bad zip64 EOCD record", f->path);
	if ((r = hs_buf_reserve(&zip->eocd64_x, (size_t)rec_size - (ZIP_EOCD64_LEN - 12))) < 0)
		return hs_error_set(ctx, r, "out of memory");
	zip->eocd64_x.len = (size_t)rec_size - (ZIP_EOCD64_LEN - 12);
	if ((r = hs_file_pread(ctx, f, zip->eocd64_x.data, zip->eocd64_x.len,
	                       rec_off + ZIP_EOCD64_LEN)) < 0)
		return r;
	zip->zip64 = true;
	zip->n_entries = (size_t)hs_le64(zip->eocd64 + 32);
	zip->cd_size = hs_le64(zip->eocd64 + 40);
	zip->cd_offset = hs_le64(zip->eocd64 + 48);
	*end_of_cd = rec_off;
	return 0;
}

/* Resolves 0xFFFFFFFF fields from the zip64 extended information extra
 * field (id 1), whose values appear in the order usize, csize, offset. */
static int zip_entry_zip64(struct hs_ctx *ctx, struct hs_zip_entry *e, const uint8_t *rec,
                           size_t rec_base, const uint8_t *extra, size_t extra_len)
{
	uint64_t *fields[3] = {&e->usize, &e->csize, &e->local_off};
	size_t pos = 0;

	while (pos + 4 <= extra_len) {
		uint16_t id = hs_le16(extra + pos), len = hs_le16(extra + pos + 2);
		size_t at = pos + 4;

		if (pos + 4 + len > extra_len)
			break;
		for (int i = 0; id == 1 && i < 3; i++) {
			if (*fields[i] != 0xFFFFFFFF)
				continue;
			if (at + 8 > pos + 4 + len)
				return hs_error_set(ctx, HS_ERR_FORMAT,
				                    "zip64 extra field truncated");
			*fields[i] = hs_le64(extra + at);
			if (i == 2)
				e->z64_off = rec_base + (size_t)(extra - rec) + at;
			at += 8;
		}
		if (id == 1)
			return 0;
		pos += 4 + (size_t)len;
	}
	if (e->usize == 0xFFFFFFFF || e->csize == 0xFFFFFFFF || e->local_off == 0xFFFFFFFF)
		return hs_error_set(ctx, HS_ERR_FORMAT, "zip64 extra field missing");
	return 0;
}

/* Parses one central directory record at cd[*pos]. */
static int zip_parse_record(struct hs_ctx *ctx, struct hs_zip *zip, size_t *pos,
                            struct hs_zip_entry *e)
{
	const uint8_t *rec = zip->cd.data + *pos;
	size_t left = zip->cd.len - *pos, n, x, c;

	if (left < ZIP_CDREC_LEN || memcmp(rec, "PK\1\2", 4) != 0)
		return hs_error_set(ctx, HS_ERR_FORMAT, "bad central directory record at %zu",
		                    *pos);
	n = hs_le16(rec + 28);
	x = hs_le16(rec + 30);
	c = hs_le16(rec + 32);
	if (ZIP_CDREC_LEN + n + x + c > left || n == 0)
		return hs_error_set(ctx, HS_ERR_FORMAT, "central directory record truncated");
	*e = (struct hs_zip_entry){.name = (const char *)rec + ZIP_CDREC_LEN,
	                           .name_len = (uint16_t)n,
	                           .flags = hs_le16(rec + 8),
	                           .method = hs_le16(rec + 10),
	                           .crc = hs_le32(rec + 16),
	                           .csize = hs_le32(rec + 20),
	                           .usize = hs_le32(rec + 24),
	                           .local_off = hs_le32(rec + 42),
	                           .rec_off = *pos,
	                           .rec_len = ZIP_CDREC_LEN + n + x + c};
	*pos += e->rec_len;
	return zip_entry_zip64(ctx, e, rec, e->rec_off, rec + ZIP_CDREC_LEN + n, x);
}

static int zip_cmp_off(const void *a, const void *b)
{
	const struct hs_zip_entry *const *x = a, *const *y = b;

	return (*x)->local_off < (*y)->local_off ? -1 : (*x)->local_off > (*y)->local_off;
}

/* Local records must be ordered, disjoint and before the central directory;
 * records each entry's span end (the next record's start). */
static int zip_check_spans(struct hs_ctx *ctx, struct hs_zip *zip)
{
	struct hs_zip_entry **by_off = calloc(zip->n_entries, sizeof(*by_off));
	int r = 0;

	if (by_off == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < zip->n_entries; i++)
		by_off[i] = &zip->entries[i];
	qsort(by_off, zip->n_entries, sizeof(*by_off), zip_cmp_off);
	for (size_t i = 0; i < zip->n_entries; i++) {
		struct hs_zip_entry *e = by_off[i];

		e->span_end = i + 1 < zip->n_entries ? by_off[i + 1]->local_off : zip->cd_offset;
		if (e->span_end < e->local_off + ZIP_LOCAL_LEN + e->name_len ||
		    e->span_end - e->local_off - ZIP_LOCAL_LEN < e->csize) {
			r = hs_error_set(
			        ctx, HS_ERR_FORMAT,
			        "ZIP entry %.*s overlaps the next record or the central directory",
			        (int)e->name_len, e->name);
			break;
		}
	}
	free(by_off);
	return r;
}

static int zip_read_cd(struct hs_ctx *ctx, struct hs_zip *zip, const struct hs_file *f)
{
	size_t pos = 0;
	int r;

	if (zip->cd_size > HS_ZIP_CD_MAX || zip->n_entries > zip->cd_size / ZIP_CDREC_LEN)
		return hs_error_set(ctx, HS_ERR_FORMAT,
		                    "%s: central directory too large or inconsistent", f->path);
	if (zip->n_entries == 0)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: empty ZIP archive", f->path);
	if ((r = hs_buf_reserve(&zip->cd, (size_t)zip->cd_size)) < 0 ||
	    (zip->entries = calloc(zip->n_entries, sizeof(*zip->entries))) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	zip->cd.len = (size_t)zip->cd_size;
	if ((r = hs_file_pread(ctx, f, zip->cd.data, zip->cd.len, zip->cd_offset)) < 0)
		return r;
	for (size_t i = 0; i < zip->n_entries; i++)
		if ((r = zip_parse_record(ctx, zip, &pos, &zip->entries[i])) < 0)
			return r;
	if (pos != zip->cd.len)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: central directory size mismatch",
		                    f->path);
	return zip_check_spans(ctx, zip);
}

int hs_zip_open(struct hs_ctx *ctx, struct hs_zip *zip, const struct hs_file *f)
{
	uint64_t eocd_off = 0, end_of_cd = 0;
	int r;

	memset(zip, 0, sizeof(*zip));
	if ((r = zip_find_eocd(ctx, zip, f, &eocd_off)) < 0 ||
	    (r = zip_read_zip64(ctx, zip, f, eocd_off, &end_of_cd)) < 0)
		goto out;
	if (hs_le16(zip->eocd + 4) != 0 && hs_le16(zip->eocd + 4) != 0xFFFF) {
		r = hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                 "%s: multi-disk ZIP archives are not supported", f->path);
		goto out;
	}
	if (!zip->zip64) {
		zip->n_entries = hs_le16(zip->eocd + 10);
		zip->cd_size = hs_le32(zip->eocd + 12);
		zip->cd_offset = hs_le32(zip->eocd + 16);
	}
	if (zip->cd_offset > end_of_cd || zip->cd_size != end_of_cd - zip->cd_offset) {
		r = hs_error_set(ctx, HS_ERR_FORMAT,
		                 "%s: central directory offset or size out of range", f->path);
		goto out;
	}
	r = zip_read_cd(ctx, zip, f);
out:
	if (r < 0)
		hs_zip_close(zip);
	return r;
}

void hs_zip_close(struct hs_zip *zip)
{
	hs_buf_free(&zip->cd);
	hs_buf_free(&zip->comment);
	hs_buf_free(&zip->eocd64_x);
	free(zip->entries);
	zip->entries = NULL;
	zip->n_entries = 0;
}

long hs_zip_find(const struct hs_zip *zip, const char *name)
{
	size_t len = strlen(name);

	for (size_t i = 0; i < zip->n_entries; i++)
		if (zip->entries[i].name_len == len && memcmp(zip->entries[i].name, name, len) == 0)
			return (long)i;
	return -1;
}

uint32_t hs_zip_crc32(const uint8_t *data, size_t len)
{
	uLong crc = crc32(0L, Z_NULL, 0);

	while (len > 0) {
		uInt n = len > 0x40000000 ? 0x40000000 : (uInt)len;

		crc = crc32(crc, data, n);
		data += n;
		len -= n;
	}
	return (uint32_t)crc;
}

static int zip_inflate(struct hs_ctx *ctx, const uint8_t *src, size_t slen, struct hs_buf *out,
                       size_t usize)
{
	z_stream zs = {0};
	int zr, r = 0;

	if (inflateInit2(&zs, -MAX_WBITS) != Z_OK)
		return hs_error_set(ctx, HS_ERR_NOMEM, "zlib: cannot initialise inflate");
	zs.next_in = (Bytef *)src;
	zs.avail_in = (uInt)slen;
	zs.next_out = out->data;
	zs.avail_out = (uInt)usize;
	zr = inflate(&zs, Z_FINISH);
	if (zr != Z_STREAM_END || zs.total_out != usize)
		r = hs_error_set(ctx, HS_ERR_FORMAT, "corrupt deflate data");
	inflateEnd(&zs);
	return r;
}

/* Offset of an entry's data: after its local header, whose name must match. */
static int zip_data_offset(struct hs_ctx *ctx, const struct hs_file *f,
                           const struct hs_zip_entry *e, uint64_t *out)
{
	uint8_t lh[ZIP_LOCAL_LEN];
	uint64_t start = 0;
	int r;

	if ((r = hs_file_pread(ctx, f, lh, sizeof(lh), e->local_off)) < 0)
		return r;
	if (memcmp(lh, "PK\3\4", 4) != 0 || hs_le16(lh + 26) != e->name_len)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: bad local header for %.*s", f->path,
		                    (int)e->name_len, e->name);
	start = e->local_off + ZIP_LOCAL_LEN + hs_le16(lh + 26) + hs_le16(lh + 28);
	if (start > e->span_end || e->span_end - start < e->csize)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: entry %.*s overruns its record",
		                    f->path, (int)e->name_len, e->name);
	*out = start;
	return 0;
}

int hs_zip_read(struct hs_ctx *ctx, const struct hs_zip *zip, const struct hs_file *f,
                const struct hs_zip_entry *e, size_t max, struct hs_buf *out)
{
	struct hs_buf raw = {0};
	uint64_t start = 0;
	int r;

	(void)zip;
	if (e->usize > max || e->csize > max || (e->method != 0 && e->method != 8) ||
	    (e->method == 0 && e->csize != e->usize))
		return hs_error_set(
		        ctx, HS_ERR_UNSUPPORTED,
		        "%s: entry %.*s is too large or uses an unsupported compression", f->path,
		        (int)e->name_len, e->name);
	if ((r = zip_data_offset(ctx, f, e, &start)) < 0)
		return r;
	if ((r = hs_buf_reserve(&raw, (size_t)e->csize + 1)) < 0 ||
	    (r = hs_buf_reserve(out, (size_t)e->usize + 1)) < 0) {
		r = hs_error_set(ctx, r, "out of memory");
		goto out;
	}
	if ((r = hs_file_pread(ctx, f, raw.data, (size_t)e->csize, start)) < 0)
		goto out;
	if (e->method == 0)
		memcpy(out->data, raw.data, (size_t)e->csize);
	else if ((r = zip_inflate(ctx, raw.data, (size_t)e->csize, out, (size_t)e->usize)) < 0)
		goto out;
	out->len = (size_t)e->usize;
	out->data[out->len] = 0; /* callers may treat text entries as strings */
	if (hs_zip_crc32(out->data, out->len) != e->crc)
		r = hs_error_set(ctx, HS_ERR_FORMAT, "%s: CRC mismatch in %.*s", f->path,
		                 (int)e->name_len, e->name);
out:
	hs_buf_free(&raw);
	return r;
}

int hs_zip_deflate(struct hs_ctx *ctx, const uint8_t *data, size_t len, struct hs_buf *out)
{
	z_stream zs = {0};
	uLong bound;
	int r = 0;

	if (deflateInit2(&zs, 9, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return hs_error_set(ctx, HS_ERR_NOMEM, "zlib: cannot initialise deflate");
	bound = deflateBound(&zs, (uLong)len);
	if ((r = hs_buf_reserve(out, (size_t)bound)) < 0) {
		r = hs_error_set(ctx, r, "out of memory");
		goto out;
	}
	zs.next_in = (Bytef *)data;
	zs.avail_in = (uInt)len;
	zs.next_out = out->data + out->len;
	zs.avail_out = (uInt)bound;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END) {
		r = hs_error_set(ctx, HS_ERR_CRYPTO, "zlib: deflate failed");
		goto out;
	}
	out->len += zs.total_out;
out:
	deflateEnd(&zs);
	return r;
}
