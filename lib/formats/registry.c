/* registry.c - the list of formats; the only place a format is named. */
#include <string.h>

#include "format.h"

static const struct hs_format *const formats[] = {
        &hs_format_pe,
        &hs_format_msi,
        &hs_format_cab,
        &hs_format_cat,
        &hs_format_script, /* by file name only (probe_name) */
        &hs_format_appx,   /* by file name only (probe_name) */
        &hs_format_nupkg,  /* by file name only (probe_name) */
        NULL,
};

int hs_format_detect(struct hs_ctx *ctx, const struct hs_file *in, const struct hs_format **out)
{
	uint8_t head[HS_PROBE_LEN];
	size_t len = in->size < sizeof(head) ? (size_t)in->size : sizeof(head);
	int r;

	*out = NULL;
	if ((r = hs_file_pread(ctx, in, head, len, 0)) < 0)
		return r;
	for (size_t i = 0; formats[i] != NULL; i++) {
		if (formats[i]->probe(head, len)) {
			*out = formats[i];
			return 0;
		}
	}
	/* Content first: a file named .ps1 that is a PE is signed as a PE. */
	for (size_t i = 0; formats[i] != NULL; i++) {
		if (formats[i]->probe_name != NULL && formats[i]->probe_name(in->path)) {
			*out = formats[i];
			return 0;
		}
	}
	return hs_error_set(ctx, HS_ERR_FORMAT,
	                    "%s: not a file format hsmsign can sign (PE, MSI, CAB, catalog, "
	                    "PowerShell or WSH script, APPX/MSIX, NuGet)",
	                    in->path);
}

void hs_indirect_free(struct hs_indirect *ind)
{
	hs_buf_free(&ind->data_der);
	hs_buf_free(&ind->page_hashes);
	hs_buf_free(&ind->content_der);
	ind->content_oid = NULL;
}

int hs_doc_open(struct hs_ctx *ctx, struct hs_doc *doc, const char *path)
{
	int r;

	memset(doc, 0, sizeof(*doc));
	if ((r = hs_file_open(ctx, &doc->in, path)) < 0)
		return r;
	if ((r = hs_format_detect(ctx, &doc->in, &doc->format)) < 0 ||
	    (r = doc->format->open(ctx, &doc->in, &doc->state)) < 0) {
		hs_file_close(&doc->in);
		doc->format = NULL;
		return r;
	}
	return 0;
}

void hs_doc_close(struct hs_doc *doc)
{
	if (doc->format != NULL && doc->state != NULL)
		doc->format->close(doc->state);
	doc->state = NULL;
	doc->format = NULL;
	if (doc->in.path != NULL)
		hs_file_close(&doc->in);
}
