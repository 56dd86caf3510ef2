/* secret.c - reading secrets from the environment, a file or stdin. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "cli.h"

/* Longest secret accepted. */
#define SECRET_MAX 4096

static char *strip_newline(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

/* Reads at most SECRET_MAX bytes of fp into a fresh string. */
static char *read_stream(FILE *fp)
{
	char *buf = OPENSSL_zalloc(SECRET_MAX + 1);
	size_t n;

	if (buf == NULL)
		return NULL;
	n = fread(buf, 1, SECRET_MAX, fp);
	buf[n] = '\0';
	if (strlen(buf) != n) { /* a NUL inside: not a text secret */
		OPENSSL_clear_free(buf, SECRET_MAX + 1);
		return NULL;
	}
	return strip_newline(buf);
}

static char *read_file_secret(const char *path)
{
	FILE *fp = hs_os_fopen(path, "rb");
	char *s;

	if (fp == NULL)
		return NULL;
	s = read_stream(fp);
	fclose(fp);
	return s;
}

/* One line from stdin. */
static char *read_stdin_secret(void)
{
	char *buf = OPENSSL_zalloc(SECRET_MAX + 1);

	if (buf == NULL)
		return NULL;
	if (fgets(buf, SECRET_MAX + 1, stdin) == NULL) {
		OPENSSL_clear_free(buf, SECRET_MAX + 1);
		return NULL;
	}
	return strip_newline(buf);
}

char *cli_secret_dup(const char *s)
{
	size_t n = strlen(s);
	char *d = n <= SECRET_MAX ? OPENSSL_zalloc(SECRET_MAX + 1) : NULL;

	if (d != NULL)
		memcpy(d, s, n);
	return d;
}

bool cli_spec_is_stdin(const char *spec)
{
	return spec != NULL && (strcmp(spec, "stdin") == 0 || strcmp(spec, "-") == 0);
}

int cli_secret_read(const char *option, const char *spec, char **out)
{
	*out = NULL;
	if (strncmp(spec, "env:", 4) == 0) {
		const char *v = getenv(spec + 4);

		if (v == NULL) {
			cli_error("%s: environment variable %s is not set", option, spec + 4);
			return EXIT_INVALID_ARGS;
		}
		*out = cli_secret_dup(v);
	} else if (strncmp(spec, "file:", 5) == 0) {
		*out = read_file_secret(spec + 5);
	} else if (cli_spec_is_stdin(spec)) {
		*out = read_stdin_secret();
	} else {
		/* Never echo `spec`: it may be the secret itself. */
		cli_error("%s: give the secret as env:NAME, file:PATH or stdin, "
		          "not on the command line",
		          option);
		return EXIT_INVALID_ARGS;
	}
	if (*out == NULL) {
		cli_error("%s: cannot read the secret from %s", option,
		          strncmp(spec, "file:", 5) == 0 ? spec : "the given source");
		return EXIT_INVALID_ARGS;
	}
	return 0;
}

void cli_secret_free(char *secret)
{
	if (secret != NULL)
		OPENSSL_clear_free(secret, SECRET_MAX + 1);
}
