/*
 * fuzz_cli.c - the command-line side of untrusted input: the option parser
 * (cli/opts.c: "-x V", "--long V", "--long=V", aliases, "--", operands),
 * the timestamp server list splitter and the -ifl/@FILE list reader with
 * its globs (cli/batch_input.c). The first byte picks the target; the rest
 * is NUL-separated arguments or the list file's content.
 *
 * List entries are expanded against the file system, so the harness works
 * in a private directory with a few files and skips inputs that could
 * leave it (an absolute path, "..", or a component starting with "." and
 * a wildcard, which glob(3) lets match ".."): a recursive pattern from the
 * root would walk the whole machine. The CLI prints errors (stderr) and
 * help (stdout); the harness points both at /dev/null around each call.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch.h"
#include "cli.h"
#include "fuzz_util.h"

#define MAX_ARGS 64

enum { O_FLAG = 1, O_VALUE, O_TSA, O_ALIAS };

static const struct cli_opt fuzz_opts[] = {
        {O_FLAG, "-q|--quiet", ARG_NONE, NULL, "flag"},
        {O_VALUE, "-fd|--fd|--file-digest", ARG_VALUE, "ALG", "value"},
        {O_TSA, "-tr|--tr|--timestamp-rfc3161", ARG_VALUE, "URL", "list"},
        {O_ALIAS, "-as|--as|--append-signature", ARG_NONE, NULL, "alias"},
        {0},
};
static const struct cli_cmd fuzz_cmd = {"sign", NULL, "FILE...", "", "", fuzz_opts};

struct fuzz_args {
	const char *tsa[CLI_MAX_TSA + 1];
	int n_tsa;
	char values[MAX_ARGS][256];
	int n_values;
};

static int fuzz_opt(int id, const char *value, void *userdata)
{
	struct fuzz_args *a = userdata;
	char *copy;

	if (id != O_TSA || a->n_values == MAX_ARGS)
		return 0;
	copy = a->values[a->n_values++];
	snprintf(copy, sizeof(a->values[0]), "%s", value);
	return cli_add_tsa_urls("sign", a->tsa, &a->n_tsa, copy);
}

static void fuzz_argv(const uint8_t *data, size_t size)
{
	static struct fuzz_args args;
	char *buf = malloc(size + 1), *argv[MAX_ARGS + 1], *operands[MAX_ARGS + 1];
	int argc = 1, n_operands;

	if (buf == NULL)
		return;
	memcpy(buf, data, size);
	buf[size] = '\0';
	argv[0] = "sign";
	for (char *p = buf; p <= buf + size && argc < MAX_ARGS; p += strlen(p) + 1)
		argv[argc++] = p;
	argv[argc] = NULL;
	memset(&args, 0, sizeof(args));
	cli_parse(&fuzz_cmd, argc, argv, fuzz_opt, &args, operands, &n_operands);
	free(buf);
}

/* Whether a list could name something outside the harness's directory. */
static bool fuzz_list_escapes(const uint8_t *data, size_t size)
{
	bool line_start = true;

	for (size_t i = 0; i < size; i++) {
		if (line_start && (data[i] == '/' || data[i] == '\\' || data[i] == '~'))
			return true;
		if (i + 1 < size && data[i] == '.' && data[i + 1] == '.')
			return true;
		/* glob(3): ".*" at the start of a component matches ".." too */
		if (i + 1 < size && data[i] == '.' && strchr("*?[", data[i + 1]) != NULL &&
		    (line_start || data[i - 1] == '/' || data[i - 1] == '\\'))
			return true;
		if (data[i] == '\n' || data[i] == '\r')
			line_start = true;
		else if (data[i] != ' ' && data[i] != '\t')
			line_start = false;
	}
	return false;
}

static void fuzz_list(const uint8_t *data, size_t size)
{
	struct cli_inputs in = {0};
	char path[64];
	int fd;

	if (fuzz_list_escapes(data, size) ||
	    (fd = fuzz_memfile(data, size, path, sizeof(path))) < 0)
		return;
	cli_inputs_add_list(&in, path);
	cli_inputs_free(&in);
	close(fd);
}

/* A private directory with a few files to match, made the working one. */
static char fuzz_dir[PATH_MAX];

static void fuzz_cleanup(void)
{
	static const char *const files[] = {"a.exe", "b.dll", "sub/c.exe", "sub/d.ps1"};

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char p[PATH_MAX + 16];

		snprintf(p, sizeof(p), "%s/%s", fuzz_dir, files[i]);
		unlink(p);
	}
	snprintf(fuzz_dir + strlen(fuzz_dir), sizeof(fuzz_dir) - strlen(fuzz_dir), "/sub");
	rmdir(fuzz_dir);
	*strrchr(fuzz_dir, '/') = '\0';
	rmdir(fuzz_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char *const files[] = {"a.exe", "b.dll", "sub/c.exe", "sub/d.ps1"};

	(void)argc;
	(void)argv;
	snprintf(fuzz_dir, sizeof(fuzz_dir), "/tmp/hsmsign-fuzz-cli-XXXXXX");
	if (mkdtemp(fuzz_dir) == NULL || chdir(fuzz_dir) != 0 || mkdir("sub", 0700) != 0)
		abort();
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		int fd = open(files[i], O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (fd < 0)
			abort();
		close(fd);
	}
	atexit(fuzz_cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int devnull = -1;
	int saved_out, saved_err;

	if (size < 1)
		return 0;
	if (devnull < 0 && (devnull = open("/dev/null", O_WRONLY | O_CLOEXEC)) < 0)
		return 0;
	fflush(stderr);
	fflush(stdout);
	saved_out = dup(1);
	saved_err = dup(2);
	dup2(devnull, 1);
	dup2(devnull, 2);
	if (data[0] % 2 == 0)
		fuzz_argv(data + 1, size - 1);
	else
		fuzz_list(data + 1, size - 1);
	fflush(stderr);
	fflush(stdout);
	dup2(saved_out, 1);
	dup2(saved_err, 2);
	close(saved_out);
	close(saved_err);
	return 0;
}
