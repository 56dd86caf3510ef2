/*
 * batch_input.c - the files `sign` is given: operands, globs (with '**'),
 * @FILE and -ifl lists; duplicates (by real path) removed.
 */
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "batch.h"
#include "cli.h"

/* Longest list line and deepest directory walk we accept. */
#define INPUT_LINE_MAX 4096
#define WALK_DEPTH_MAX 64

static bool input_has_wildcard(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

/* Adds path unless a path with the same real path is already there. */
static int input_push(struct cli_inputs *in, const char *path)
{
	/* A path that cannot be resolved is kept as given: the format check
	 * reports why it cannot be opened, in the library's words. */
	char *real = realpath(path, NULL);

	if (real == NULL && (real = strdup(path)) == NULL) {
		cli_error("out of memory");
		return EXIT_ALL_FAILED;
	}
	for (size_t i = 0; i < in->n; i++) {
		if (strcmp(in->real[i], real) == 0) {
			free(real);
			return 0;
		}
	}
	if (in->n == in->cap) {
		size_t cap = in->cap * 2 + 16;
		char **p = realloc(in->paths, cap * sizeof(*p));
		char **r = p ? realloc(in->real, cap * sizeof(*r)) : NULL;

		if (p != NULL)
			in->paths = p;
		if (r == NULL)
			goto nomem;
		in->real = r;
		in->cap = cap;
	}
	if ((in->paths[in->n] = strdup(path)) == NULL)
		goto nomem;
	in->real[in->n++] = real;
	return 0;
nomem:
	free(real);
	cli_error("out of memory");
	return EXIT_ALL_FAILED;
}

/* Glob match where '*' and '?' stay within a path component and '**'
 * matches any number of whole directories ("a/ ** /b" matches "a/b"). */
static bool input_match(const char *pat, const char *s)
{
	for (; *pat != '\0'; pat++, s++) {
		if (pat[0] == '*' && pat[1] == '*') {
			pat += 2;
			if (*pat == '/')
				pat++;
			for (const char *t = s;; t++) {
				if (input_match(pat, t))
					return true;
				if (*t == '\0')
					return false;
			}
		}
		if (*pat == '*') {
			for (const char *t = s;; t++) {
				if (input_match(pat + 1, t))
					return true;
				if (*t == '\0' || *t == '/')
					return false;
			}
		}
		if (*s == '\0' || (*pat == '?' ? *s == '/' : *pat != *s))
			return false;
	}
	return *s == '\0';
}

struct walk {
	struct cli_inputs *in;
	const char *pattern;
	size_t matched;
	int r;
};

/* Visits the regular files under dir (symlinks not followed, so no loops). */
static void input_walk(struct walk *w, const char *dir, int depth)
{
	DIR *d = opendir(*dir ? dir : ".");
	struct dirent *e;
	char path[PATH_MAX];
	struct stat st;

	if (d == NULL)
		return;
	while (w->r == 0 && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s%s%s", dir,
		                     *dir && dir[strlen(dir) - 1] != '/' ? "/" : "",
		                     e->d_name) >= sizeof(path) ||
		    lstat(path, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode) && depth < WALK_DEPTH_MAX)
			input_walk(w, path, depth + 1);
		else if (S_ISREG(st.st_mode) && input_match(w->pattern, path)) {
			w->matched++;
			w->r = input_push(w->in, path);
		}
	}
	closedir(d);
}

/* Expands a pattern with '**': walks from the directory before the first
 * wildcard. Results come in directory order, so sort them per pattern. */
static int input_expand_recursive(struct cli_inputs *in, const char *pattern)
{
	struct walk w = {.in = in, .pattern = pattern};
	size_t first = in->n, base_len = strcspn(pattern, "*?[");
	char base[PATH_MAX];

	while (base_len > 0 && pattern[base_len - 1] != '/')
		base_len--;
	if (base_len >= sizeof(base))
		return 0;
	memcpy(base, pattern, base_len);
	base[base_len > 0 ? base_len - 1 : 0] = '\0';
	if (base_len == 1)
		snprintf(base, sizeof(base), "/"); /* pattern "/..." */
	input_walk(&w, base, 0);
	if (w.r == 0 && w.matched == 0) {
		cli_error("%s: no files match", pattern);
		in->missing++;
	}
	/* Keep a stable order: sort what this pattern added by name. */
	for (size_t i = first + 1; i < in->n; i++) {
		for (size_t j = i; j > first && strcmp(in->paths[j - 1], in->paths[j]) > 0; j--) {
			char *t = in->paths[j], *u = in->real[j];
			in->paths[j] = in->paths[j - 1];
			in->real[j] = in->real[j - 1];
			in->paths[j - 1] = t;
			in->real[j - 1] = u;
		}
	}
	return w.r;
}

/* Adds the regular files among glob's matches (a pattern names files,
 * not the directories it happens to match). */
static int input_push_regular(struct cli_inputs *in, const glob_t *g, const char *pattern)
{
	size_t added = 0;
	struct stat st;
	int r = 0;

	for (size_t i = 0; r == 0 && i < g->gl_pathc; i++) {
		if (stat(g->gl_pathv[i], &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		added++;
		r = input_push(in, g->gl_pathv[i]);
	}
	if (r == 0 && added == 0) {
		cli_error("%s: no files match", pattern);
		in->missing++;
	}
	return r;
}

static int input_expand(struct cli_inputs *in, const char *arg)
{
	char *pattern = strdup(arg);
	glob_t g = {0};
	int r = 0;

	if (pattern == NULL) {
		cli_error("out of memory");
		return EXIT_ALL_FAILED;
	}
	/* Windows-style patterns ("bin\*.dll") work too. */
	for (char *p = pattern; *p != '\0'; p++)
		if (*p == '\\')
			*p = '/';
	if (strstr(pattern, "**") != NULL) {
		r = input_expand_recursive(in, pattern);
	} else if (glob(pattern, 0, NULL, &g) != 0) {
		cli_error("%s: no files match", arg);
		in->missing++;
	} else {
		r = input_push_regular(in, &g, arg);
	}
	globfree(&g);
	free(pattern);
	return r;
}

int cli_inputs_add_arg(struct cli_inputs *in, const char *arg)
{
	if (arg[0] == '@' && arg[1] != '\0')
		return cli_inputs_add_list(in, arg + 1);
	if (input_has_wildcard(arg))
		return input_expand(in, arg);
	return input_push(in, arg);
}

int cli_inputs_add_list(struct cli_inputs *in, const char *list)
{
	FILE *fp = fopen(list, "r");
	char line[INPUT_LINE_MAX];
	int r = 0;

	if (fp == NULL) {
		cli_error("%s: cannot open input file list: %s", list, strerror(errno));
		return EXIT_INVALID_ARGS;
	}
	while (r == 0 && fgets(line, sizeof(line), fp) != NULL) {
		size_t len = strlen(line);
		char *s = line;

		if (len == sizeof(line) - 1 && line[len - 1] != '\n' && !feof(fp)) {
			cli_error("%s: a line is longer than %d bytes", list, INPUT_LINE_MAX - 1);
			r = EXIT_INVALID_ARGS;
			break;
		}

		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
		                   line[len - 1] == ' ' || line[len - 1] == '\t'))
			line[--len] = '\0';
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s == '\0' || *s == '#')
			continue;
		/* Entries are paths or patterns; '@' is not nested. */
		r = input_has_wildcard(s) ? input_expand(in, s) : input_push(in, s);
	}
	fclose(fp);
	return r;
}

void cli_inputs_free(struct cli_inputs *in)
{
	for (size_t i = 0; i < in->n; i++) {
		free(in->paths[i]);
		free(in->real[i]);
	}
	free(in->paths);
	free(in->real);
	memset(in, 0, sizeof(*in));
}
