/* opts.c - table-driven option parsing, help and diagnostics. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_verbosity = 1;

void cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("hsmsign: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void cli_error_path(const char *path, int code, const char *msg)
{
	size_t n = strlen(path);

	if (msg == NULL || *msg == '\0')
		msg = hs_strerror(code);
	/* Library messages about a file usually start with its path. */
	if (strncmp(msg, path, n) == 0 && msg[n] == ':')
		cli_error("%s", msg);
	else
		cli_error("%s: %s", path, msg);
}

void cli_error_ctx(const struct hs_ctx *ctx, const char *path)
{
	cli_error_path(path, hs_ctx_error(ctx), hs_ctx_message(ctx));
}

void cli_log(enum hs_log_level level, const char *msg, void *userdata)
{
	static const char *const prefix[] = {"error", "warning", "info", "debug"};

	(void)userdata;
	if ((level == HS_LOG_WARN && cli_verbosity < 1) ||
	    (level >= HS_LOG_INFO && cli_verbosity < 2))
		return;
	fprintf(stderr, "hsmsign: %s: %s\n", prefix[level], msg);
}

/* Does `arg` equal one of the '|'-separated spellings in names? */
static bool name_matches(const char *names, const char *arg, size_t arg_len)
{
	while (*names) {
		const char *end = strchr(names, '|');
		size_t len = end ? (size_t)(end - names) : strlen(names);

		if (len == arg_len && strncmp(names, arg, len) == 0)
			return true;
		if (end == NULL)
			break;
		names = end + 1;
	}
	return false;
}

static const struct cli_opt *find_opt(const struct cli_opt *opts, const char *arg, size_t len)
{
	for (; opts->names != NULL; opts++)
		if (name_matches(opts->names, arg, len))
			return opts;
	return NULL;
}

/* Handles one option at argv[*i]; advances *i past a separate value. */
static int parse_one(const struct cli_cmd *cmd, int argc, char **argv, int *i, cli_opt_fn fn,
                     void *userdata)
{
	const char *arg = argv[*i], *eq = NULL, *value = NULL;
	size_t len = strlen(arg);
	const struct cli_opt *opt;

	if (strncmp(arg, "--", 2) == 0 && (eq = strchr(arg, '=')) != NULL)
		len = (size_t)(eq - arg);
	opt = find_opt(cmd->opts, arg, len);
	if (opt == NULL) {
		cli_error("%s: unknown option '%.*s' (see 'hsmsign %s --help')", cmd->name,
		          (int)len, arg, cmd->name);
		return EXIT_INVALID_ARGS;
	}
	if (opt->arg == ARG_NONE) {
		if (eq != NULL) {
			cli_error("%s: option '%.*s' takes no value", cmd->name, (int)len, arg);
			return EXIT_INVALID_ARGS;
		}
		return fn(opt->id, NULL, userdata);
	}
	if (eq != NULL) {
		value = eq + 1;
	} else if (*i + 1 < argc) {
		value = argv[++*i];
	} else {
		cli_error("%s: option '%s' needs a value (%s)", cmd->name, arg, opt->metavar);
		return EXIT_INVALID_ARGS;
	}
	return fn(opt->id, value, userdata);
}

int cli_parse(const struct cli_cmd *cmd, int argc, char **argv, cli_opt_fn fn, void *userdata,
              char **operands, int *n_operands)
{
	bool only_operands = false;
	int r;

	*n_operands = 0;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];

		if (only_operands || arg[0] != '-' || arg[1] == '\0') {
			operands[(*n_operands)++] = argv[i];
		} else if (strcmp(arg, "--") == 0) {
			only_operands = true;
		} else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0 ||
		           strcmp(arg, "-?") == 0) {
			cli_print_help(cmd, stdout);
			return -1;
		} else if ((r = parse_one(cmd, argc, argv, &i, fn, userdata)) != 0) {
			return r;
		}
	}
	return 0;
}

/* "-fd, --file-digest ALG" */
static void format_names(const struct cli_opt *opt, char *buf, size_t size)
{
	size_t n = 0;

	for (const char *p = opt->names; *p && n + 3 < size; p++) {
		if (*p == '|') {
			buf[n++] = ',';
			buf[n++] = ' ';
		} else {
			buf[n++] = *p;
		}
	}
	buf[n] = '\0';
	if (opt->arg == ARG_VALUE)
		snprintf(buf + n, size - n, " %s", opt->metavar);
}

void cli_print_help(const struct cli_cmd *cmd, FILE *fp)
{
	char names[128];

	fprintf(fp, "usage: hsmsign %s %s\n\n%s\n", cmd->name, cmd->synopsis, cmd->description);
	if (cmd->opts[0].names != NULL)
		fprintf(fp, "\noptions:\n");
	for (const struct cli_opt *o = cmd->opts; o->names != NULL; o++) {
		format_names(o, names, sizeof(names));
		if (strlen(names) <= 28)
			fprintf(fp, "  %-28s %s\n", names, o->help);
		else
			fprintf(fp, "  %s\n  %-28s %s\n", names, "", o->help);
	}
	fprintf(fp, "  %-28s %s\n", "-h, --help", "show this help");
}

void cli_print_markdown(const struct cli_cmd *cmd, FILE *fp)
{
	char names[128];

	fprintf(fp, "## hsmsign %s\n\n```\nhsmsign %s %s\n```\n\n%s\n\n", cmd->name, cmd->name,
	        cmd->synopsis, cmd->description);
	if (cmd->opts[0].names == NULL)
		return;
	fprintf(fp, "| option | meaning |\n| --- | --- |\n");
	for (const struct cli_opt *o = cmd->opts; o->names != NULL; o++) {
		format_names(o, names, sizeof(names));
		fprintf(fp, "| `%s` | %s |\n", names, o->help);
	}
	fprintf(fp, "\n");
}

int cli_add_tsa_urls(const char *cmd, const char **list, int *n, char *value)
{
	for (char *url = value, *next; url != NULL; url = next) {
		next = strchr(url, ',');
		if (next != NULL)
			*next++ = '\0';
		if (*url == '\0')
			continue;
		if (*n == CLI_MAX_TSA) {
			cli_error("%s: at most %d timestamp servers", cmd, CLI_MAX_TSA);
			return EXIT_INVALID_ARGS;
		}
		list[(*n)++] = url;
		list[*n] = NULL;
	}
	return 0;
}
