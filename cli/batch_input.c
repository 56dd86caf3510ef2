/*
 * batch_input.c - the files `sign` is given: operands, globs (with '**'),
 * @FILE and -ifl lists; duplicates (by real path) removed.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "cli.h"

/* Longest list line and deepest directory walk we accept. */
#define INPUT_LINE_MAX 4096
#define WALK_DEPTH_MAX 64

static bool input_has_wildcard(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

/* FNV-1a, for the set of real paths. */
static uint64_t input_hash(const char *s)
{
	uint64_t h = 14695981039346656037ULL;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

/* The slot of the set that holds real, or the empty one where it goes. */
static const char **input_slot(const struct cli_inputs *in, const char *real)
{
	size_t mask = in->set_size - 1, i = (size_t)input_hash(real) & mask;

	while (in->set[i] != NULL && strcmp(in->set[i], real) != 0)
		i = (i + 1) & mask;
	return &in->set[i];
}

/* Makes room for one more path in the set (kept at most half full). */
static int input_set_reserve(struct cli_inputs *in)
{
	const char **old = in->set;
	size_t old_size = in->set_size;

	if ((in->n + 1) * 2 <= in->set_size)
		return 0;
	in->set_size = old_size ? old_size * 2 : 64;
	if ((in->set = calloc(in->set_size, sizeof(*in->set))) == NULL) {
		in->set = old;
		in->set_size = old_size;
		return -1;
	}
	for (size_t i = 0; i < old_size; i++)
		if (old[i] != NULL)
			*input_slot(in, old[i]) = old[i];
	free(old);
	return 0;
}

/* Adds path unless a path with the same real path is already there. */
static int input_push(struct cli_inputs *in, const char *path)
{
	/* A path that cannot be resolved is kept as given: the format check
	 * reports why it cannot be opened, in the library's words. */
	char *real = hs_os_realpath(path);
	const char **slot;

	if (real == NULL && (real = strdup(path)) == NULL) {
		cli_error("out of memory");
		return EXIT_ALL_FAILED;
	}
	if (input_set_reserve(in) < 0)
		goto nomem;
	slot = input_slot(in, real);
	if (*slot != NULL) {
		free(real);
		return 0;
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
	*slot = real;
	return 0;
nomem:
	free(real);
	cli_error("out of memory");
	return EXIT_ALL_FAILED;
}

/* Matching state: (pattern, string) positions already known not to
 * match, so that each is tried once. Without it, a pattern with many
 * stars backtracks exponentially (found by fuzz_cli: a 60-byte list line
 * hung the walk). */
struct match_memo {
	const char *pat0, *s0;
	size_t s_len;
	uint8_t *failed; /* (strlen(pat0) + 1) x (s_len + 1) bits, or NULL */
};

static bool input_match_at(struct match_memo *m, const char *pat, const char *s);

/* Glob match where '*' and '?' stay within a path component and '**'
 * matches any number of whole directories ("a/ ** /b" matches "a/b"). */
static bool input_match_body(struct match_memo *m, const char *pat, const char *s)
{
	for (; *pat != '\0'; pat++, s++) {
		if (pat[0] == '*' && pat[1] == '*') {
			pat += 2;
			if (*pat == '/')
				pat++;
			for (const char *t = s;; t++) {
				if (input_match_at(m, pat, t))
					return true;
				if (*t == '\0')
					return false;
			}
		}
		if (*pat == '*') {
			for (const char *t = s;; t++) {
				if (input_match_at(m, pat + 1, t))
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

static bool input_match_at(struct match_memo *m, const char *pat, const char *s)
{
	size_t bit = (size_t)(pat - m->pat0) * (m->s_len + 1) + (size_t)(s - m->s0);
	bool ok;

	if (m->failed != NULL && (m->failed[bit / 8] >> (bit % 8) & 1))
		return false;
	ok = input_match_body(m, pat, s);
	if (!ok && m->failed != NULL)
		m->failed[bit / 8] |= (uint8_t)(1u << (bit % 8));
	return ok;
}

static bool input_match(const char *pat, const char *s)
{
	struct match_memo m = {.pat0 = pat, .s0 = s, .s_len = strlen(s)};
	size_t bits = (strlen(pat) + 1) * (m.s_len + 1);
	bool ok;

	/* Patterns and paths are at most PATH_MAX: a few MiB at worst. On
	 * allocation failure the match still runs, only without the memo. */
	m.failed = calloc(bits / 8 + 1, 1);
	ok = input_match_at(&m, pat, s);
	free(m.failed);
	return ok;
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
	struct hs_os_dir *d = hs_os_opendir(*dir ? dir : ".");
	const char *name;
	char path[PATH_MAX];
	struct hs_os_stat st;

	if (d == NULL)
		return;
	while (w->r == 0 && (name = hs_os_readdir(d)) != NULL) {
		if ((size_t)snprintf(path, sizeof(path), "%s%s%s", dir,
		                     *dir && dir[strlen(dir) - 1] != '/' ? "/" : "",
		                     name) >= sizeof(path) ||
		    hs_os_lstat(path, &st) != 0)
			continue;
		if (st.directory && depth < WALK_DEPTH_MAX)
			input_walk(w, path, depth + 1);
		else if (st.regular && input_match(w->pattern, path)) {
			w->matched++;
			w->r = input_push(w->in, path);
		}
	}
	hs_os_closedir(d);
}

struct input_pair {
	char *path, *real;
};

static int input_pair_cmp(const void *a, const void *b)
{
	return strcmp(((const struct input_pair *)a)->path, ((const struct input_pair *)b)->path);
}

/* Sorts the inputs from first on by name (the set holds the same strings,
 * so it stays valid). */
static int input_sort(struct cli_inputs *in, size_t first)
{
	size_t k = in->n - first;
	struct input_pair *v;

	if (k < 2)
		return 0;
	if ((v = malloc(k * sizeof(*v))) == NULL) {
		cli_error("out of memory");
		return EXIT_ALL_FAILED;
	}
	for (size_t i = 0; i < k; i++)
		v[i] = (struct input_pair){in->paths[first + i], in->real[first + i]};
	qsort(v, k, sizeof(*v), input_pair_cmp);
	for (size_t i = 0; i < k; i++) {
		in->paths[first + i] = v[i].path;
		in->real[first + i] = v[i].real;
	}
	free(v);
	return 0;
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
	if (w.r == 0)
		w.r = input_sort(in, first);
	return w.r;
}

struct glob_add {
	struct cli_inputs *in;
	size_t added;
};

/* hs_os_glob() callback: adds a match if it is a regular file (a pattern
 * names files, not the directories it happens to match). */
static int input_push_regular(const char *path, void *userdata)
{
	struct glob_add *g = userdata;
	struct hs_os_stat st;

	if (hs_os_stat(path, &st) != 0 || !st.regular)
		return 0;
	g->added++;
	return input_push(g->in, path);
}

static int input_expand(struct cli_inputs *in, const char *arg)
{
	char *pattern = strdup(arg);
	struct glob_add g = {.in = in};
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
	} else if ((r = hs_os_glob(pattern, input_push_regular, &g)) == 0 && g.added == 0) {
		cli_error("%s: no files match", arg);
		in->missing++;
	} else if (r < 0) {
		cli_error("%s: cannot expand: %s", arg, strerror(errno));
		r = EXIT_ALL_FAILED;
	}
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
	FILE *fp = hs_os_fopen(list, "r");
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
	free(in->set);
	memset(in, 0, sizeof(*in));
}
