/*
 * cli.h - the hsmsign command-line tool: table-driven commands and options.
 * Only this directory prints or exits; it uses the public API alone.
 */
#ifndef HS_CLI_H
#define HS_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "hsmsign.h"
#include "platform.h" /* lib/core: the OS layer shared with the library */

/* Exit codes (docs/cli.md "Exit status"). sign's first three are the low
 * bytes of AzureSignTool's HRESULTs. */
enum cli_exit {
	EXIT_OK = 0,
	EXIT_SOME_FAILED = 1,
	EXIT_ALL_FAILED = 2,
	EXIT_NO_SIGNATURE = 10,
	EXIT_MALFORMED = 11,
	EXIT_DIGEST_MISMATCH = 12,
	EXIT_BAD_SIGNATURE = 13,
	EXIT_UNTRUSTED = 14,
	EXIT_EXPIRED = 15,
	EXIT_NO_EKU = 16,
	EXIT_BAD_TIMESTAMP = 17,
	EXIT_INVALID_ARGS = 87,
};

enum cli_arg {
	ARG_NONE,  /* a flag */
	ARG_VALUE, /* takes one value: "-x VALUE", "--long VALUE", "--long=VALUE" */
};

/* One option. `names` lists every spelling separated by '|', the first
 * short form first, e.g. "-fd|--file-digest". */
struct cli_opt {
	int id;
	const char *names;
	enum cli_arg arg;
	const char *metavar;
	const char *help;
};

struct cli_cmd {
	const char *name;
	int (*run)(const struct cli_cmd *cmd, int argc, char **argv);
	const char *synopsis; /* arguments after the command name */
	const char *summary;  /* one line */
	const char *description;
	const struct cli_opt *opts; /* terminated by {0} */
};

/* Called for each option found; returns 0 or an exit code to stop with. */
typedef int (*cli_opt_fn)(int id, const char *value, void *userdata);

/*
 * Parses argv[1..] (argv[0] is the command name) against the table. Options
 * and operands may be mixed; "--" ends options. Operands are collected into
 * operands (an array of argc entries owned by the caller). Returns 0 or
 * EXIT_INVALID_ARGS after printing one line. "-h|--help" prints the
 * command's help and returns -1.
 */
int cli_parse(const struct cli_cmd *cmd, int argc, char **argv, cli_opt_fn fn, void *userdata,
              char **operands, int *n_operands);

void cli_print_help(const struct cli_cmd *cmd, FILE *fp);
void cli_print_markdown(const struct cli_cmd *cmd, FILE *fp);
/* docgen.c: man pages and completions from the same tables. Hidden
 * commands (help-*) generate documentation and appear in none of it. */
bool cli_cmd_hidden(const struct cli_cmd *cmd);
void cli_print_man(const struct cli_cmd *cmd, FILE *fp);
void cli_print_man_index(const struct cli_cmd *cmds, size_t n, FILE *fp);
/* Writes hsmsign.1 and hsmsign-COMMAND.1 into dir; returns an exit code. */
int cli_write_man_pages(const struct cli_cmd *cmds, size_t n, const char *dir);
int cli_print_completion(const struct cli_cmd *cmds, size_t n, const char *shell, FILE *fp);

/* Diagnostics: "hsmsign: " + message on stderr. */
void cli_error(const char *fmt, ...) HS_PRINTF(1, 2);
/* Prints the context's error for `path`, without repeating the path. */
void cli_error_ctx(const struct hs_ctx *ctx, const char *path);
/* The same for an error kept from a context: its code and message (NULL
 * or empty: the code's description). */
void cli_error_path(const char *path, int code, const char *msg);

/* Verbosity: -q 0, default 1, -v 2. */
extern int cli_verbosity;
void cli_log(enum hs_log_level level, const char *msg, void *userdata);

/*
 * Reads a secret given as env:NAME, file:PATH or "stdin" into *out
 * (freed with cli_secret_free). Literal values are refused so that secrets
 * never have to sit in argv. Returns 0 or EXIT_INVALID_ARGS.
 */
int cli_secret_read(const char *option, const char *spec, char **out);
/* Whether a secret spec (or an input list) names standard input: "stdin"
 * or "-". */
bool cli_spec_is_stdin(const char *spec);
void cli_secret_free(char *secret);
/* Copies a secret into wiped-on-free memory (free with cli_secret_free). */
char *cli_secret_dup(const char *s);

int cli_cmd_sign(const struct cli_cmd *cmd, int argc, char **argv);
int cli_cmd_verify(const struct cli_cmd *cmd, int argc, char **argv);
int cli_cmd_remove(const struct cli_cmd *cmd, int argc, char **argv);
int cli_cmd_extract(const struct cli_cmd *cmd, int argc, char **argv);
int cli_cmd_digest(const struct cli_cmd *cmd, int argc, char **argv);
int cli_cmd_catalog(const struct cli_cmd *cmd, int argc, char **argv);
extern const struct cli_opt cli_catalog_opts[];
/* --script-encoding: 0, or EXIT_INVALID_ARGS after printing one line. */
int cli_parse_text_encoding(const char *value, enum hs_text_encoding *out);
/* verify --catalog: prints whether file is listed in catalog; returns its
 * exit code (EXIT_DIGEST_MISMATCH when not listed). */
int cli_catalog_check(struct hs_ctx *ctx, const char *catalog, const char *file);
int cli_cmd_pkcs11(const struct cli_cmd *cmd, int argc, char **argv);
int cli_cmd_gcp(const struct cli_cmd *cmd, int argc, char **argv);
/* `serve` (cmd_serve.c, on lib/serve). */
int cli_cmd_serve(const struct cli_cmd *cmd, int argc, char **argv);
extern const struct cli_opt cli_serve_opts[];

/* PKCS#11 (cmd_pkcs11.c): opens a token key with the PIN from pin_spec
 * (env:/file:/stdin), or a prompt on the terminal when stdin is one;
 * prints the error and returns EXIT_INVALID_ARGS on failure. */
int cli_pkcs11_open_key(struct hs_ctx *ctx, struct hs_pkcs11_key_opts *opts, const char *pin_spec,
                        struct hs_key **out);
/* hs_pin_fn that asks on /dev/tty with echo off. */
int cli_pkcs11_pin_prompt(char *buf, size_t size, const char *token, void *userdata);
int cli_cmd_timestamp(const struct cli_cmd *cmd, int argc, char **argv);
/* Two-step signing (cmd_attach.c): 'digest -o FILE.req' and 'attach'. */
int cli_digest_request(const char *file, const char *request, const char *cert,
                       enum hs_digest digest, struct hs_sign_opts *sign);
int cli_cmd_attach(const struct cli_cmd *cmd, int argc, char **argv);
/* sign --sign-request: checks the arguments (no files, -o given), then
 * writes the key's raw signature over the request's digest to output. */
int cli_check_sign_request(const char *request, const char *output, int n_files);
int cli_sign_request(struct hs_ctx *ctx, struct hs_key *key, const char *request,
                     const char *output);
extern const struct cli_opt cli_attach_opts[];

extern const struct cli_opt cli_sign_opts[];
extern const struct cli_opt cli_verify_opts[];
extern const struct cli_opt cli_remove_opts[];
extern const struct cli_opt cli_extract_opts[];
extern const struct cli_opt cli_digest_opts[];
extern const struct cli_opt cli_pkcs11_opts[];
extern const struct cli_opt cli_gcp_opts[];
extern const struct cli_opt cli_timestamp_opts[];

/* Most timestamp servers one option list holds. */
#define CLI_MAX_TSA 16

/*
 * Adds the timestamp server URLs in value — one, or a comma-separated list,
 * split in place (value is an argv string) — to the NULL-terminated list of
 * CLI_MAX_TSA + 1 entries holding *n. EXIT_INVALID_ARGS past CLI_MAX_TSA.
 */
int cli_add_tsa_urls(const char *cmd, const char **list, int *n, char *value);

#endif /* HS_CLI_H */
