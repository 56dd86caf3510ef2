/*
 * batch.h - the CLI side of batch signing: collecting inputs (arguments,
 * globs, @lists, -ifl), progress output and the JSON report.
 */
#ifndef HS_CLI_BATCH_H
#define HS_CLI_BATCH_H

#include <stddef.h>

#include "hsmsign.h"

/* The files to sign, in the order given, without duplicates. */
struct cli_inputs {
	char **paths; /* as given (globs expanded); owned */
	char **real;  /* realpath of each, for duplicate detection; owned */
	size_t n, cap;
	/* Hash set of the strings in real (open addressing, at most half
	 * full; NULL: empty slot), so that duplicates cost O(1) each. */
	const char **set;
	size_t set_size; /* a power of two, or 0 */
	size_t missing;  /* names that did not exist (reported, not kept) */
};

/* Adds one command-line operand: "@FILE" reads a list, a pattern with
 * '*', '?' or '[' is expanded ('**' crosses directories), anything else
 * is a path. Prints one line per problem; returns 0 or an exit code. */
int cli_inputs_add_arg(struct cli_inputs *in, const char *arg);
/* Adds the entries of a list file (one per line; blank lines and lines
 * starting with '#' skipped; entries may be patterns). */
int cli_inputs_add_list(struct cli_inputs *in, const char *list);
void cli_inputs_free(struct cli_inputs *in);

/* Progress and results of one batch (progress.c). */
struct cli_progress {
	size_t total, signed_n, skipped, failed;
	int tty;       /* a progress bar on stderr instead of per-file lines */
	int verbosity; /* cli_verbosity at the start */
	double start, last_draw;
	const char *output; /* --output, printed instead of the path */
};

void cli_progress_start(struct cli_progress *p, size_t total, const char *output);
/* hs_batch_fn: prints one file's outcome (or redraws the bar). */
void cli_progress_done(const struct hs_batch_item *item, size_t done, size_t total, void *userdata);
/* Clears the bar and prints the summary line (stdout, not with -q). */
void cli_progress_finish(struct cli_progress *p, size_t not_started, unsigned long requests,
                         int interrupted);
double cli_now(void);

/* Context of a report (what is the same for every file). */
struct cli_report_info {
	const char *key_id;
	const char *digest;
	const char *const *formats; /* per item, may hold NULL */
	const char *const *tsa;     /* configured TSA URLs, NULL-terminated, or NULL */
	double seconds;
	unsigned long requests;
};
/* Writes the --report JSON atomically (temp file + rename); 0 or prints
 * one line and returns EXIT_SOME_FAILED. */
int cli_report_write(const char *path, const struct hs_batch_item *items, size_t n,
                     const struct cli_report_info *info);

/* What `sign` passes to the batch driver (batch_run.c). */
struct cli_batch_params {
	int jobs;               /* -mdop; 0: the number of CPUs */
	int continue_on_error;  /* -coe */
	const char *output;     /* -o (one input only) */
	const char *report;     /* --report FILE.json, or NULL */
	const char *const *tsa; /* -tr URLs for the report, or NULL */
};

/* Checks every input (readable, format known) before anything is signed:
 * prints one line per bad input. Returns 0 when all are good, else
 * EXIT_ALL_FAILED; *formats (freed by the caller) gets each format name. */
int cli_batch_check(struct hs_ctx *ctx, const struct cli_inputs *in, const char ***formats);
/* Signs the inputs with key; returns the exit code. */
int cli_batch_sign(struct hs_ctx *ctx, struct hs_key *key, const struct hs_sign_opts *sign,
                   const struct cli_inputs *in, const char **formats,
                   const struct cli_batch_params *bp);

#endif /* HS_CLI_BATCH_H */
