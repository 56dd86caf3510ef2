/* cmd_verify.c - `hsmsign verify`. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

enum { O_CA_FILE = 1, O_VERBOSE, O_QUIET, O_TSA_CA_FILE, O_JSON, O_CATALOG, O_SCRIPT_ENCODING };

struct verify_args {
	struct hs_verify_opts opts;
	int json;
	const char *catalog; /* --catalog: FILEs are looked up in it */
};

const struct cli_opt cli_verify_opts[] = {
        {O_CA_FILE, "--ca-file|-ca", ARG_VALUE, "FILE",
         "trust the PEM root certificates in FILE instead of the system store"},
        {O_TSA_CA_FILE, "--tsa-ca-file", ARG_VALUE, "FILE",
         "trust the PEM timestamp authority roots in FILE instead of the system store"},
        {O_JSON, "--json", ARG_NONE, NULL,
         "print one JSON object per file (one line each) instead of text"},
        {O_CATALOG, "--catalog|-c", ARG_VALUE, "CAT",
         "verify the catalog CAT's signature, then check that each FILE is listed in it"},
        {O_SCRIPT_ENCODING, "--script-encoding", ARG_VALUE, "ENC",
         "scripts without a byte order mark: utf-8, utf-16le, utf-16be or windows-1252"},
        {O_VERBOSE, "-v|--verbose", ARG_NONE, NULL, "say more"},
        {O_QUIET, "-q|--quiet", ARG_NONE, NULL, "print failures only"},
        {0},
};

static int verify_opt(int id, const char *value, void *userdata)
{
	struct verify_args *a = userdata;

	if (id == O_CA_FILE)
		a->opts.ca_file = value;
	else if (id == O_TSA_CA_FILE)
		a->opts.tsa_ca_file = value;
	else if (id == O_JSON)
		a->json = 1;
	else if (id == O_CATALOG)
		a->catalog = value;
	else if (id == O_SCRIPT_ENCODING)
		return cli_parse_text_encoding(value, &a->opts.script_encoding);
	else if (id == O_VERBOSE)
		cli_verbosity = 2;
	else if (id == O_QUIET)
		cli_verbosity = 0;
	return 0;
}

/* Exit code for a verdict (docs/cli.md "Exit status"). */
static int status_exit(enum hs_verify_status s)
{
	switch (s) {
	case HS_VERIFY_OK:
		return EXIT_OK;
	case HS_VERIFY_NO_SIGNATURE:
		return EXIT_NO_SIGNATURE;
	case HS_VERIFY_MALFORMED:
		return EXIT_MALFORMED;
	case HS_VERIFY_DIGEST_MISMATCH:
		return EXIT_DIGEST_MISMATCH;
	case HS_VERIFY_BAD_SIGNATURE:
		return EXIT_BAD_SIGNATURE;
	case HS_VERIFY_UNTRUSTED:
		return EXIT_UNTRUSTED;
	case HS_VERIFY_EXPIRED:
		return EXIT_EXPIRED;
	case HS_VERIFY_NO_EKU:
		return EXIT_NO_EKU;
	case HS_VERIFY_BAD_TIMESTAMP:
		return EXIT_BAD_TIMESTAMP;
	}
	return EXIT_MALFORMED;
}

static const char *page_hash_text(int state)
{
	return state == 0 ? "none" : state > 0 ? "ok" : "MISMATCH";
}

static void print_result(const char *path, const struct hs_verify_result *res)
{
	if (res->status == HS_VERIFY_OK) {
		if (cli_verbosity >= 1)
			printf("%s: OK\n", path);
	} else {
		printf("%s: FAILED (%s)\n", path, hs_verify_status_name(res->status));
	}
	for (size_t i = 0; i < res->count; i++) {
		const struct hs_signature_info *s = &res->sigs[i];

		if (cli_verbosity < 1 && res->status == HS_VERIFY_OK)
			break;
		if (s->subject == NULL && s->digest == 0) { /* nothing parsed */
			printf("  %s: %s\n", hs_verify_status_name(s->status),
			       s->reason ? s->reason : "");
			continue;
		}
		printf("  signature %zu%s: %s, signer \"%s\", issuer \"%s\", page hashes: %s\n",
		       i + 1, s->depth ? " (nested)" : "", hs_digest_name(s->digest),
		       s->subject ? s->subject : "?", s->issuer ? s->issuer : "?",
		       page_hash_text(s->page_hashes));
		if (s->timestamp_time != NULL)
			printf("    timestamp: %s (%s), TSA \"%s\"\n", s->timestamp_time,
			       s->timestamp == 2 ? "Authenticode" : "RFC 3161",
			       s->tsa_subject ? s->tsa_subject : "?");
		else if (s->timestamp == 0 && s->status == HS_VERIFY_OK)
			printf("    timestamp: none\n");
		if (s->status != HS_VERIFY_OK)
			printf("    %s: %s\n", hs_verify_status_name(s->status),
			       s->reason ? s->reason : "");
	}
}

/* Prints s as a JSON string (control characters escaped), or null. */
static void json_str(const char *s)
{
	if (s == NULL) {
		fputs("null", stdout);
		return;
	}
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void json_kv(const char *key, const char *value, int comma)
{
	printf("%s\"%s\": ", comma ? ", " : "", key);
	json_str(value);
}

/* One line: {"file", "status", "signatures": [...]}. */
static void print_json(const char *path, const struct hs_verify_result *res)
{
	static const char *const ts_kind[] = {NULL, "rfc3161", "authenticode"};

	putchar('{');
	json_kv("file", path, 0);
	json_kv("status", hs_verify_status_name(res->status), 1);
	printf(", \"valid\": %s, \"signatures\": [",
	       res->status == HS_VERIFY_OK ? "true" : "false");
	for (size_t i = 0; i < res->count; i++) {
		const struct hs_signature_info *s = &res->sigs[i];

		printf("%s{\"index\": %zu, \"nested\": %s", i ? ", " : "", i,
		       s->depth ? "true" : "false");
		json_kv("status", hs_verify_status_name(s->status), 1);
		json_kv("digest", s->digest ? hs_digest_name(s->digest) : NULL, 1);
		json_kv("subject", s->subject, 1);
		json_kv("issuer", s->issuer, 1);
		json_kv("page_hashes", page_hash_text(s->page_hashes), 1);
		json_kv("reason", s->reason, 1);
		printf(", \"timestamp\": ");
		if (s->timestamp == 0) {
			fputs("null", stdout);
		} else {
			printf("{");
			json_kv("kind", ts_kind[s->timestamp > 2 ? 0 : s->timestamp], 0);
			json_kv("time", s->timestamp_time, 1);
			json_kv("tsa", s->tsa_subject, 1);
			json_kv("digest", s->tsa_digest, 1);
			putchar('}');
		}
		putchar('}');
	}
	printf("]}\n");
}

/* Verifies one file; returns its exit code. */
static int verify_one(struct hs_ctx *ctx, const char *path, const struct verify_args *a)
{
	const struct hs_verify_opts *opts = &a->opts;
	struct hs_verify_result *res = NULL;
	int code;

	hs_ctx_clear_error(ctx);
	if (hs_verify_file(ctx, path, opts, &res) < 0) {
		cli_error_ctx(ctx, path);
		return EXIT_ALL_FAILED;
	}
	if (a->json)
		print_json(path, res);
	else
		print_result(path, res);
	code = status_exit(res->status);
	hs_verify_result_free(res);
	return code;
}

int cli_cmd_verify(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct verify_args a = {.opts = HS_VERIFY_OPTS_INIT};
	char **files = calloc((size_t)argc, sizeof(*files));
	struct hs_ctx *ctx = NULL;
	int n_files = 0, r, first = EXIT_OK;

	if (files == NULL || hs_ctx_new(&ctx) < 0) {
		cli_error("out of memory");
		r = EXIT_ALL_FAILED;
		goto out;
	}
	if ((r = cli_parse(cmd, argc, argv, verify_opt, &a, files, &n_files)) != 0)
		goto out;
	if (n_files == 0) {
		cli_error("verify: no files given (see 'hsmsign verify --help')");
		r = EXIT_INVALID_ARGS;
		goto out;
	}
	hs_ctx_set_log(ctx, cli_log, NULL);
	/* With --catalog the catalog's signature vouches for the files. */
	if (a.catalog != NULL)
		first = verify_one(ctx, a.catalog, &a);
	for (int i = 0; i < n_files; i++) {
		int code = a.catalog != NULL ? cli_catalog_check(ctx, a.catalog, files[i])
		                             : verify_one(ctx, files[i], &a);

		if (first == EXIT_OK)
			first = code;
	}
	r = first;
out:
	hs_ctx_free(ctx);
	free(files);
	return r < 0 ? EXIT_OK : r;
}
