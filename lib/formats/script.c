/*
 * script.c - PowerShell (.ps1 .psm1 .psd1 .ps1xml .psc1 .cdxml) and Windows
 * Script Host (.vbs .js .wsf) scripts (authenticode.md section 7). The
 * signature is base64 text in a comment block; the digest covers the
 * script's characters without that block, as UTF-16LE.
 *
 * Scripts have no magic bytes, so the format is chosen by file extension
 * (probe_name). The file is decoded once into UTF-16 code units (`text`,
 * without the byte order mark); block positions are unit indices, and the
 * output is written from the input's own bytes, so the encoding and line
 * endings of the script survive exactly.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "authenticode/asn1.h"
#include "core/codec.h"
#include "formats/format.h"

/* Scripts are read whole; no real script comes near this. */
#define SCRIPT_MAX_SIZE ((uint64_t)64 * 1024 * 1024)
#define SCRIPT_B64_LINE 64

/* One signature block style and SIP (authenticode.md 7.1, 7.3). */
struct script_style {
	const char *name;
	const char *start, *end;     /* header and footer lines */
	const char *prefix, *suffix; /* around each base64 line */
	bool wsh;                    /* WSH: BOM not hashed, length suffix */
	bool wsf;                    /* block goes before the last </job> */
	bool utf8_default;           /* BOM-less files are UTF-8, else cp1252 */
	long sip_version;
	uint8_t sip_uuid[16];
};

static const struct script_style script_ps = {"PowerShell",
                                              "# SIG # Begin signature block",
                                              "# SIG # End signature block",
                                              "# ",
                                              "",
                                              false,
                                              false,
                                              true,
                                              65536,
                                              {0x1f, 0xcc, 0x3b, 0x60, 0x59, 0x4b, 0x08, 0x4e, 0xb7,
                                               0x24, 0xd2, 0xc6, 0x29, 0x7e, 0xf3, 0x51}};
static const struct script_style script_psxml = {"PowerShell XML",
                                                 "<!-- SIG # Begin signature block -->",
                                                 "<!-- SIG # End signature block -->",
                                                 "<!-- ",
                                                 " -->",
                                                 false,
                                                 false,
                                                 false,
                                                 65536,
                                                 {0x1f, 0xcc, 0x3b, 0x60, 0x59, 0x4b, 0x08, 0x4e,
                                                  0xb7, 0x24, 0xd2, 0xc6, 0x29, 0x7e, 0xf3, 0x51}};
static const struct script_style script_vbs = {"VBScript",
                                               "'' SIG '' Begin signature block",
                                               "'' SIG '' End signature block",
                                               "'' SIG '' ",
                                               "",
                                               true,
                                               false,
                                               false,
                                               1,
                                               {0x4e, 0xf0, 0x29, 0x16, 0x99, 0x27, 0xb5, 0x4d,
                                                0x8f, 0xe5, 0xac, 0xe1, 0x0f, 0x17, 0xeb, 0xab}};
static const struct script_style script_js = {"JScript",
                                              "// SIG // Begin signature block",
                                              "// SIG // End signature block",
                                              "// SIG // ",
                                              "",
                                              true,
                                              false,
                                              false,
                                              1,
                                              {0x10, 0xe0, 0xc9, 0x06, 0xce, 0x38, 0xd4, 0x11, 0xa2,
                                               0xa3, 0x00, 0x10, 0x4b, 0xd3, 0x50, 0x90}};
static const struct script_style script_wsf = {"WSF",
                                               "<signature>",
                                               "</signature>",
                                               "** SIG ** ",
                                               "",
                                               true,
                                               true,
                                               true,
                                               1,
                                               {0x70, 0x05, 0x61, 0x1a, 0xce, 0x38, 0xd4, 0x11,
                                                0xa2, 0xa3, 0x00, 0x10, 0x4b, 0xd3, 0x50, 0x90}};

static const struct {
	const char *ext;
	const struct script_style *style;
} script_exts[] = {
        {".ps1", &script_ps},       {".psm1", &script_ps},    {".psd1", &script_ps},
        {".ps1xml", &script_psxml}, {".psc1", &script_psxml}, {".cdxml", &script_psxml},
        {".vbs", &script_vbs},      {".js", &script_js},      {".wsf", &script_wsf},
};

/* Windows-1252 0x80..0x9F; the five undefined bytes map to themselves, as
 * Windows' own decoder (and jsign's Windows1252Extended) does. */
static const uint16_t cp1252_high[32] = {
        0x20ac, 0x0081, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x008d, 0x017d, 0x008f, 0x0090, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022,
        0x2013, 0x2014, 0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0x009d, 0x017e, 0x0178};

struct script_state {
	struct hs_file in; /* copy of the caller's; fd and path stay theirs */
	const struct script_style *style;
	uint8_t *raw; /* the whole file */
	size_t raw_len;
	size_t bom_len;
	enum hs_text_encoding enc; /* how text was decoded */
	uint16_t *text;            /* UTF-16 code units after the BOM */
	size_t n;
	size_t blk_start, blk_end; /* the signature block in text, if any */
	bool has_block;
	size_t insert_at; /* where a new block goes, in content units */
	bool copied;
	uint64_t copy_len;
};

int hs_text_encoding_from_name(enum hs_text_encoding *out, const char *name)
{
	static const struct {
		const char *name;
		enum hs_text_encoding enc;
	} names[] = {
	        {"auto", HS_TEXT_AUTO},        {"utf-8", HS_TEXT_UTF8},
	        {"utf8", HS_TEXT_UTF8},        {"utf-16le", HS_TEXT_UTF16LE},
	        {"utf-16be", HS_TEXT_UTF16BE}, {"windows-1252", HS_TEXT_CP1252},
	        {"cp1252", HS_TEXT_CP1252},
	};

	for (size_t i = 0; name != NULL && i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcasecmp(name, names[i].name) == 0) {
			*out = names[i].enc;
			return 0;
		}
	}
	return HS_ERR_INVALID;
}

static const struct script_style *script_style_for(const char *path)
{
	size_t len = strlen(path);

	for (size_t i = 0; i < sizeof(script_exts) / sizeof(script_exts[0]); i++) {
		size_t el = strlen(script_exts[i].ext);

		if (len > el && strcasecmp(path + len - el, script_exts[i].ext) == 0)
			return script_exts[i].style;
	}
	return NULL;
}

static bool script_probe(const uint8_t *head, size_t len)
{
	(void)head;
	(void)len;
	return false; /* scripts have no magic bytes: see probe_name */
}

static bool script_probe_name(const char *path)
{
	return script_style_for(path) != NULL;
}

/* --- decoding ---------------------------------------------------------- */

/* The byte order mark, if any: sets *enc and returns its length. */
static size_t script_bom(const uint8_t *p, size_t n, enum hs_text_encoding *enc)
{
	if (n >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf) {
		*enc = HS_TEXT_UTF8;
		return 3;
	}
	if (n >= 2 && p[0] == 0xff && p[1] == 0xfe) {
		*enc = HS_TEXT_UTF16LE;
		return 2;
	}
	if (n >= 2 && p[0] == 0xfe && p[1] == 0xff) {
		*enc = HS_TEXT_UTF16BE;
		return 2;
	}
	return 0;
}

/* Text never holds NUL, so a NUL byte in a BOM-less file means UTF-16. */
static enum hs_text_encoding script_guess(const struct script_state *st)
{
	size_t n = st->raw_len < HS_PROBE_LEN ? st->raw_len : HS_PROBE_LEN;

	for (size_t i = 0; i < n; i++)
		if (st->raw[i] == 0)
			return i % 2 ? HS_TEXT_UTF16LE : HS_TEXT_UTF16BE;
	return st->style->utf8_default ? HS_TEXT_UTF8 : HS_TEXT_CP1252;
}

/* Decodes one strict UTF-8 sequence at p (n bytes left) into *cp; returns
 * its length, or 0 when invalid (overlong, surrogate, out of range). */
static size_t script_utf8_char(const uint8_t *p, size_t n, uint32_t *cp)
{
	static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
	size_t len = p[0] < 0x80             ? 1
	             : (p[0] & 0xe0) == 0xc0 ? 2
	             : (p[0] & 0xf0) == 0xe0 ? 3
	             : (p[0] & 0xf8) == 0xf0 ? 4
	                                     : 0;
	uint32_t c;

	if (len == 0 || len > n)
		return 0;
	c = len == 1 ? p[0] : (uint32_t)(p[0] & (0x7f >> len));
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3f);
	}
	if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

static int script_decode_utf8(struct hs_ctx *ctx, struct script_state *st, const uint8_t *p,
                              size_t n)
{
	uint32_t c = 0;

	for (size_t i = 0, k; i < n; i += k) {
		if ((k = script_utf8_char(p + i, n - i, &c)) == 0)
			return hs_error_set(
			        ctx, HS_ERR_FORMAT,
			        "%s: not valid UTF-8 at byte %zu (see --script-encoding)",
			        st->in.path, st->bom_len + i);
		if (c >= 0x10000) {
			st->text[st->n++] = (uint16_t)(0xd800 + ((c - 0x10000) >> 10));
			c = 0xdc00 + ((c - 0x10000) & 0x3ff);
		}
		st->text[st->n++] = (uint16_t)c;
	}
	return 0;
}

/* Decodes raw (after the BOM) with st->enc into st->text. */
static int script_decode(struct hs_ctx *ctx, struct script_state *st)
{
	const uint8_t *p = st->raw + st->bom_len;
	size_t n = st->raw_len - st->bom_len;

	free(st->text);
	st->n = 0;
	if ((st->text = malloc((n ? n : 1) * sizeof(*st->text))) == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	if (st->enc == HS_TEXT_UTF8)
		return script_decode_utf8(ctx, st, p, n);
	if (st->enc == HS_TEXT_CP1252) {
		for (size_t i = 0; i < n; i++)
			st->text[st->n++] =
			        p[i] >= 0x80 && p[i] < 0xa0 ? cp1252_high[p[i] - 0x80] : p[i];
		return 0;
	}
	if (n % 2 != 0)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: UTF-16 text has an odd length",
		                    st->in.path);
	for (size_t i = 0; i < n; i += 2)
		st->text[st->n++] = st->enc == HS_TEXT_UTF16LE ? (uint16_t)(p[i] | p[i + 1] << 8)
		                                               : (uint16_t)(p[i] << 8 | p[i + 1]);
	return 0;
}

/* Bytes that text[0..units) occupies in the file (after the BOM). */
static size_t script_byte_len(const struct script_state *st, size_t units)
{
	size_t bytes = 0;

	if (st->enc == HS_TEXT_UTF16LE || st->enc == HS_TEXT_UTF16BE)
		return units * 2;
	if (st->enc == HS_TEXT_CP1252)
		return units;
	for (size_t i = 0; i < units; i++) {
		uint16_t c = st->text[i];

		if (c >= 0xd800 && c <= 0xdbff) { /* a pair: 4 bytes for 2 units */
			bytes += 4;
			i++;
		} else {
			bytes += c < 0x80 ? 1 : c < 0x800 ? 2 : 3;
		}
	}
	return bytes;
}

/* --- the signature block ---------------------------------------------- */

/* Whether the ASCII string s occurs in text at unit index at. */
static bool script_match(const struct script_state *st, size_t at, const char *s)
{
	size_t len = strlen(s);

	if (at > st->n || len > st->n - at)
		return false;
	for (size_t i = 0; i < len; i++)
		if (st->text[at + i] != (uint8_t)s[i])
			return false;
	return true;
}

/* Length of a line break at `at` ("\r\n" or "\n"), 0 if none. */
static size_t script_eol(const struct script_state *st, size_t at)
{
	if (script_match(st, at, "\r\n"))
		return 2;
	return script_match(st, at, "\n") ? 1 : 0;
}

/* The last index >= from where s occurs at a line start, or SIZE_MAX. */
static size_t script_find_line(const struct script_state *st, size_t from, const char *s, bool last)
{
	size_t found = SIZE_MAX;

	for (size_t i = from; i < st->n; i++) {
		if ((i == 0 || st->text[i - 1] == '\n') && script_match(st, i, s)) {
			found = i;
			if (!last)
				break;
		}
	}
	return found;
}

/*
 * Finds the block: a line break, the header line, the base64 lines and the
 * footer line with its line break (authenticode.md 7.1). LF-only breaks are
 * accepted so that a block whose line endings were converted is still
 * found (and replaced, as jsign does).
 */
static int script_find_block(struct hs_ctx *ctx, struct script_state *st)
{
	size_t head = script_find_line(st, 0, st->style->start, true), foot;

	st->has_block = false;
	if (head == SIZE_MAX || head == 0)
		return 0;
	foot = script_find_line(st, head, st->style->end, false);
	if (foot == SIZE_MAX)
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: signature block has no end line",
		                    st->in.path);
	st->blk_start = head - 1;
	if (st->blk_start > 0 && st->text[st->blk_start - 1] == '\r')
		st->blk_start--;
	st->blk_end = foot + strlen(st->style->end);
	st->blk_end += script_eol(st, st->blk_end);
	st->has_block = true;
	return 0;
}

/* Units of the script without its block. */
static size_t script_content_len(const struct script_state *st)
{
	return st->has_block ? st->n - (st->blk_end - st->blk_start) : st->n;
}

/* Content unit i (content = text without the block) as a text index. */
static size_t script_text_index(const struct script_state *st, size_t i)
{
	return st->has_block && i >= st->blk_start ? i + (st->blk_end - st->blk_start) : i;
}

/* Whether the ASCII string s occurs in the content at content index at. */
static bool script_content_match(const struct script_state *st, size_t at, const char *s)
{
	size_t len = strlen(s);

	if (at > script_content_len(st) || len > script_content_len(st) - at)
		return false;
	for (size_t i = 0; i < len; i++)
		if (st->text[script_text_index(st, at + i)] != (uint8_t)s[i])
			return false;
	return true;
}

/* WSF: the new block goes before the last "</job>" of the content. */
static int script_insertion(struct hs_ctx *ctx, struct script_state *st)
{
	size_t n = script_content_len(st);

	st->insert_at = n;
	if (!st->style->wsf)
		return 0;
	for (size_t i = n; i-- > 0;) {
		if (script_content_match(st, i, "</job>")) {
			st->insert_at = i;
			return 0;
		}
	}
	return hs_error_set(ctx, HS_ERR_FORMAT, "%s: WSF file has no </job> element", st->in.path);
}

/* Decodes with enc (AUTO: BOM, else guess) and locates block and
 * insertion point. */
static int script_load(struct hs_ctx *ctx, struct script_state *st, enum hs_text_encoding enc)
{
	enum hs_text_encoding bom_enc = HS_TEXT_AUTO;
	int r;

	st->bom_len = script_bom(st->raw, st->raw_len, &bom_enc);
	st->enc = bom_enc != HS_TEXT_AUTO ? bom_enc : enc != HS_TEXT_AUTO ? enc : script_guess(st);
	if ((r = script_decode(ctx, st)) < 0) {
		/* text holds part of a decoding now: the block found by an earlier
		 * load (open() falls back to Windows-1252) indexes another text. */
		st->has_block = false;
		st->n = st->insert_at = 0;
		return r;
	}
	if ((r = script_find_block(ctx, st)) < 0)
		return r;
	return script_insertion(ctx, st);
}

/* --- open ------------------------------------------------------------- */

static void script_close(void *state)
{
	struct script_state *st = state;

	if (st == NULL)
		return;
	free(st->raw);
	free(st->text);
	free(st);
}

static int script_open(struct hs_ctx *ctx, const struct hs_file *in, void **state)
{
	struct script_state *st = calloc(1, sizeof(*st));
	int r;

	*state = NULL;
	if (st == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	st->in = *in;
	st->style = script_style_for(in->path);
	if (st->style == NULL) {
		r = hs_error_set(ctx, HS_ERR_FORMAT, "%s: not a script extension", in->path);
		goto fail;
	}
	if (in->size > SCRIPT_MAX_SIZE) {
		r = hs_error_set(ctx, HS_ERR_UNSUPPORTED, "%s: script larger than %llu bytes",
		                 in->path, (unsigned long long)SCRIPT_MAX_SIZE);
		goto fail;
	}
	st->raw_len = (size_t)in->size;
	if ((st->raw = malloc(st->raw_len ? st->raw_len : 1)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto fail;
	}
	if ((r = hs_file_pread(ctx, in, st->raw, st->raw_len, 0)) < 0)
		goto fail;
	/* Text that is not what its type implies may still be signed with
	 * --script-encoding: locate the block as Windows-1252 (any byte is
	 * valid there, the markers are ASCII); digest() decodes for real. */
	if ((r = script_load(ctx, st, HS_TEXT_AUTO)) == HS_ERR_FORMAT && st->bom_len == 0) {
		hs_ctx_clear_error(ctx);
		r = script_load(ctx, st, HS_TEXT_CP1252);
	}
	if (r < 0)
		goto fail;
	*state = st;
	return 0;
fail:
	script_close(st);
	return r;
}

static bool script_is_signed(void *state)
{
	const struct script_state *st = state;

	return st->has_block;
}

/* --- digest and output ------------------------------------------------ */

/* Hashes content units [a, b) as UTF-16LE. */
static int script_hash_units(const struct script_state *st, EVP_MD_CTX *md, size_t a, size_t b)
{
	uint8_t buf[4096];
	size_t k = 0;

	for (size_t i = a; i < b; i++) {
		uint16_t c = st->text[script_text_index(st, i)];

		buf[k++] = (uint8_t)c;
		buf[k++] = (uint8_t)(c >> 8);
		if (k == sizeof(buf) || i + 1 == b) {
			if (!EVP_DigestUpdate(md, buf, k))
				return -1;
			k = 0;
		}
	}
	return 0;
}

/* The digest: PowerShell hashes the BOM as U+FEFF; WSH does not, and
 * appends the content length in units (u32 LE; jsign WSHScript). */
static int script_hash(const struct script_state *st, EVP_MD_CTX *md)
{
	static const uint8_t feff[2] = {0xff, 0xfe};
	uint32_t n = (uint32_t)script_content_len(st);
	uint8_t le[4] = {(uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};

	if (!st->style->wsh && st->bom_len > 0 && !EVP_DigestUpdate(md, feff, sizeof(feff)))
		return -1;
	if (script_hash_units(st, md, 0, script_content_len(st)) < 0)
		return -1;
	return st->style->wsh ? (EVP_DigestUpdate(md, le, sizeof(le)) ? 0 : -1) : 0;
}

/* Writes the file bytes of content units [a, b). */
static int script_write_content(struct hs_ctx *ctx, const struct script_state *st,
                                struct hs_out *out, size_t a, size_t b)
{
	size_t gap = st->has_block ? st->blk_end - st->blk_start : 0;
	size_t ta, tb;
	int r;

	if (b <= a)
		return 0;
	/* A range crossing the block is written as two pieces. */
	if (gap > 0 && a < st->blk_start && b > st->blk_start) {
		if ((r = script_write_content(ctx, st, out, a, st->blk_start)) < 0)
			return r;
		return script_write_content(ctx, st, out, st->blk_start, b);
	}
	ta = gap > 0 && a >= st->blk_start ? a + gap : a;
	tb = ta + (b - a);
	ta = script_byte_len(st, ta);
	tb = script_byte_len(st, tb);
	return hs_out_write(ctx, out, st->raw + st->bom_len + ta, tb - ta);
}

static int script_digest(struct hs_ctx *ctx, void *state, const struct hs_digest_params *params,
                         struct hs_indirect *out, struct hs_out *copy)
{
	struct script_state *st = state;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int len = 0;
	int r;

	hs_indirect_free(out);
	st->copied = false;
	if ((r = script_load(ctx, st, (enum hs_text_encoding)params->text_encoding)) < 0)
		goto out;
	if (md == NULL || !EVP_DigestInit_ex(md, params->md, NULL) || script_hash(st, md) < 0 ||
	    !EVP_DigestFinal_ex(md, out->digest, &len)) {
		r = hs_error_ssl(ctx, HS_ERR_CRYPTO, "%s: digest failed", st->in.path);
		goto out;
	}
	out->digest_len = len;
	if ((r = hs_spc_sip_info(ctx, &out->data_der, st->style->sip_version, st->style->sip_uuid,
	                         NULL)) < 0)
		goto out;
	if (copy != NULL && ((r = hs_out_write(ctx, copy, st->raw, st->bom_len)) < 0 ||
	                     (r = script_write_content(ctx, st, copy, 0, st->insert_at)) < 0))
		goto out;
	st->copied = copy != NULL;
	st->copy_len = copy != NULL ? copy->size : 0;
out:
	EVP_MD_CTX_free(md);
	return r;
}

/* Appends ASCII text in the file's encoding. */
static int script_put(struct hs_ctx *ctx, const struct script_state *st, struct hs_buf *out,
                      const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		uint8_t two[2] = {0, (uint8_t)s[i]};
		bool wide = st->enc == HS_TEXT_UTF16LE || st->enc == HS_TEXT_UTF16BE;
		int r;

		if (st->enc == HS_TEXT_UTF16LE) {
			two[0] = (uint8_t)s[i];
			two[1] = 0;
		}
		r = wide ? hs_buf_append(out, two, 2) : hs_buf_append(out, s + i, 1);
		if (r < 0)
			return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	return 0;
}

static int script_put_str(struct hs_ctx *ctx, const struct script_state *st, struct hs_buf *out,
                          const char *s)
{
	return script_put(ctx, st, out, s, strlen(s));
}

/* The block text: CRLF, header, prefixed base64 lines, footer, CRLF. */
static int script_block(struct hs_ctx *ctx, const struct script_state *st, const uint8_t *der,
                        size_t len, struct hs_buf *out)
{
	struct hs_buf b64 = {0};
	int r;

	if (hs_base64_encode(&b64, der, len, false) < 0) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = script_put_str(ctx, st, out, "\r\n")) < 0 ||
	    (r = script_put_str(ctx, st, out, st->style->start)) < 0 ||
	    (r = script_put_str(ctx, st, out, "\r\n")) < 0)
		goto out;
	for (size_t i = 0; i < b64.len; i += SCRIPT_B64_LINE) {
		size_t n = b64.len - i < SCRIPT_B64_LINE ? b64.len - i : SCRIPT_B64_LINE;

		if ((r = script_put_str(ctx, st, out, st->style->prefix)) < 0 ||
		    (r = script_put(ctx, st, out, (const char *)b64.data + i, n)) < 0 ||
		    (r = script_put_str(ctx, st, out, st->style->suffix)) < 0 ||
		    (r = script_put_str(ctx, st, out, "\r\n")) < 0)
			goto out;
	}
	if ((r = script_put_str(ctx, st, out, st->style->end)) < 0)
		goto out;
	r = script_put_str(ctx, st, out, "\r\n");
out:
	hs_buf_free(&b64);
	return r;
}

static int script_embed(struct hs_ctx *ctx, void *state, const uint8_t *pkcs7, size_t len,
                        struct hs_out *out)
{
	struct script_state *st = state;
	struct hs_buf block = {0};
	int r;

	if (!st->copied || out->size != st->copy_len)
		return hs_error_set(
		        ctx, HS_ERR_INVALID,
		        "internal: script embed needs digest() to write the text first");
	if ((r = script_block(ctx, st, pkcs7, len, &block)) == 0 &&
	    (r = hs_out_write(ctx, out, block.data, block.len)) == 0)
		r = script_write_content(ctx, st, out, st->insert_at, script_content_len(st));
	st->copied = false;
	hs_buf_free(&block);
	return r;
}

/* --- extract and remove ----------------------------------------------- */

/* Appends the base64 of one block line (prefix and suffix stripped). */
static int script_line_b64(struct hs_ctx *ctx, const struct script_state *st, size_t a, size_t b,
                           struct hs_buf *b64)
{
	size_t pl = strlen(st->style->prefix), sl = strlen(st->style->suffix);

	if (b - a < pl + sl || !script_match(st, a, st->style->prefix) ||
	    !script_match(st, b - sl, st->style->suffix))
		return hs_error_set(ctx, HS_ERR_FORMAT, "%s: malformed line in the signature block",
		                    st->in.path);
	for (size_t i = a + pl; i < b - sl; i++) {
		char c = (char)st->text[i];

		if (st->text[i] > 0x7f || hs_buf_append(b64, &c, 1) < 0)
			return hs_error_set(ctx, st->text[i] > 0x7f ? HS_ERR_FORMAT : HS_ERR_NOMEM,
			                    "%s: bad character in the signature block",
			                    st->in.path);
	}
	return 0;
}

static int script_extract(struct hs_ctx *ctx, void *state, struct hs_buf *out)
{
	const struct script_state *st = state;
	size_t pos, foot;
	struct hs_buf b64 = {0};
	int r = 0;

	if (!st->has_block)
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", st->in.path);
	pos = script_find_line(st, st->blk_start, st->style->start, false);
	pos += strlen(st->style->start);
	pos += script_eol(st, pos);
	foot = script_find_line(st, pos, st->style->end, false);
	while (r == 0 && pos < foot) {
		size_t eol = pos;

		while (eol < foot && st->text[eol] != '\r' && st->text[eol] != '\n')
			eol++;
		r = script_line_b64(ctx, st, pos, eol, &b64);
		pos = eol + script_eol(st, eol);
		if (r == 0 && pos == eol && pos < foot)
			r = hs_error_set(ctx, HS_ERR_FORMAT, "%s: malformed signature block",
			                 st->in.path);
	}
	if (r == 0 && hs_base64_decode(out, (const char *)b64.data, b64.len) < 0)
		r = hs_error_set(ctx, HS_ERR_FORMAT, "%s: signature block is not valid base64",
		                 st->in.path);
	hs_buf_free(&b64);
	return r;
}

static int script_remove(struct hs_ctx *ctx, void *state, struct hs_out *out)
{
	const struct script_state *st = state;
	int r;

	if (!st->has_block)
		return hs_error_set(ctx, HS_ERR_NOTFOUND, "%s: not signed", st->in.path);
	if ((r = hs_out_write(ctx, out, st->raw, st->bom_len)) < 0)
		return r;
	return script_write_content(ctx, st, out, 0, script_content_len(st));
}

const struct hs_format hs_format_script = {
        .name = "script",
        .probe = script_probe,
        .open = script_open,
        .is_signed = script_is_signed,
        .digest = script_digest,
        .embed = script_embed,
        .extract = script_extract,
        .remove = script_remove,
        .close = script_close,
        .probe_name = script_probe_name,
};
