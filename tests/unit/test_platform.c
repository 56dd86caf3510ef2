/*
 * test_platform.c - the POSIX implementation of lib/core/platform.h
 * (platform_posix.c): calendar conversions against known dates, files
 * (temp files, positional I/O, atomic replace, identity, links, listing,
 * wildcards), running a program with captured output, timeout and early
 * stop, dynamic loading errors, loopback address literals and the
 * interrupt flag. platform_win32.c is compiled and linked by
 * scripts/cross-check-windows only; nothing here runs it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/platform.h"

/* --- time ---------------------------------------------------------------- */

static void test_gmtime_known_dates(void **state)
{
	static const struct {
		int64_t t;
		int year, mon, mday, hour, min, sec;
	} v[] = {
	        {0, 1970, 1, 1, 0, 0, 0},
	        {951782400, 2000, 2, 29, 0, 0, 0}, /* leap day */
	        {1700000000, 2023, 11, 14, 22, 13, 20},
	        {4102444799, 2099, 12, 31, 23, 59, 59}, /* past 2038 */
	};
	struct tm tm;

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		assert_int_equal(hs_os_gmtime(v[i].t, &tm), 0);
		assert_int_equal(tm.tm_year + 1900, v[i].year);
		assert_int_equal(tm.tm_mon + 1, v[i].mon);
		assert_int_equal(tm.tm_mday, v[i].mday);
		assert_int_equal(tm.tm_hour, v[i].hour);
		assert_int_equal(tm.tm_min, v[i].min);
		assert_int_equal(tm.tm_sec, v[i].sec);
		assert_int_equal(hs_os_timegm(&tm), v[i].t);
	}
}

/* timegm normalises out-of-range fields, as the callers rely on. */
static void test_timegm_normalises(void **state)
{
	struct tm tm = {.tm_year = 2024 - 1900, .tm_mon = 0, .tm_mday = 32}; /* Jan 32 */

	(void)state;
	assert_int_equal(hs_os_timegm(&tm), 1706745600); /* 2024-02-01 */
	assert_int_equal(tm.tm_mon, 1);
	assert_int_equal(tm.tm_mday, 1);
}

static void test_monotonic_sleep(void **state)
{
	int64_t t0 = hs_os_monotonic_us(), t1;

	(void)state;
	hs_os_sleep_us(20000);
	t1 = hs_os_monotonic_us();
	assert_true(t1 - t0 >= 20000);
	assert_true(t1 - t0 < 5000000);
	assert_true(hs_os_cpu_count() >= 1);
	assert_int_equal(hs_os_pid(), (long)getpid());
}

/* --- files --------------------------------------------------------------- */

struct dir_fixture {
	char path[512];
};

static int dir_setup(void **state)
{
	struct dir_fixture *f = calloc(1, sizeof(*f));

	snprintf(f->path, sizeof(f->path), "%s/hs-platform-XXXXXX", hs_os_tmpdir());
	assert_non_null(hs_os_mkdtemp(f->path));
	*state = f;
	return 0;
}

/* Removes the test directory and what the tests left in it (one level). */
static int dir_teardown(void **state)
{
	struct dir_fixture *f = *state;
	struct hs_os_dir *d = hs_os_opendir(f->path);
	const char *name;
	char p[1024];

	while (d != NULL && (name = hs_os_readdir(d)) != NULL) {
		snprintf(p, sizeof(p), "%s/%s", f->path, name);
		if (hs_os_unlink(p) != 0)
			hs_os_rmdir(p);
	}
	hs_os_closedir(d);
	assert_int_equal(hs_os_rmdir(f->path), 0);
	free(f);
	return 0;
}

static void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "wb");

	assert_non_null(fp);
	assert_int_equal(fputs(text, fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
}

static void test_mkstemp_pread_pwrite(void **state)
{
	struct dir_fixture *f = *state;
	struct hs_os_stat st;
	char tmpl[600], buf[16] = {0};
	int fd;

	snprintf(tmpl, sizeof(tmpl), "%s/out.hsmsign-XXXXXX", f->path);
	fd = hs_os_mkstemp(tmpl);
	assert_true(fd >= 0);
	assert_null(strstr(tmpl, "XXXXXX"));
	assert_int_equal(hs_os_fstat(fd, &st), 0);
	assert_true(st.regular);
	assert_int_equal(st.mode, 0600);
	assert_int_equal(hs_os_write(fd, "hello world", 11), 11);
	assert_int_equal(hs_os_pwrite(fd, "W", 1, 6), 1);
	assert_int_equal(hs_os_pread(fd, buf, 5, 6), 5);
	assert_memory_equal(buf, "World", 5);
	assert_int_equal(hs_os_pread(fd, buf, 16, 11), 0); /* at EOF */
	assert_int_equal(hs_os_set_mode(fd, 0640), 0);
	assert_int_equal(hs_os_fsync(fd), 0);
	assert_int_equal(hs_os_fstat(fd, &st), 0);
	assert_int_equal(st.size, 11);
	assert_int_equal(st.mode, 0640);
	assert_int_equal(hs_os_close(fd), 0);
}

/* replace() swaps the file under the name: new identity, new content. */
static void test_replace_and_identity(void **state)
{
	struct dir_fixture *f = *state;
	char a[600], b[600], buf[8] = {0};
	struct hs_os_stat before, after;
	int fd;

	snprintf(a, sizeof(a), "%s/target", f->path);
	snprintf(b, sizeof(b), "%s/target.new", f->path);
	write_file(a, "old");
	write_file(b, "new!");
	assert_int_equal(hs_os_stat(a, &before), 0);
	assert_int_equal(hs_os_replace(b, a), 0);
	hs_os_sync_dir(a);
	assert_int_equal(hs_os_stat(a, &after), 0);
	assert_true(after.ino != before.ino || after.dev != before.dev);
	assert_int_equal(after.size, 4);
	assert_int_equal(hs_os_stat(b, &after), -1);
	assert_int_equal(errno, ENOENT);
	fd = hs_os_open_read(a);
	assert_true(fd >= 0);
	assert_int_equal(hs_os_read(fd, buf, sizeof(buf)), 4);
	assert_memory_equal(buf, "new!", 4);
	hs_os_close(fd);
	assert_int_equal(hs_os_open_read(b), -1);
	assert_int_equal(errno, ENOENT);
}

static void test_links_and_realpath(void **state)
{
	struct dir_fixture *f = *state;
	char target[600], link[600], *real, *real_dir;
	struct hs_os_stat st;

	snprintf(target, sizeof(target), "%s/file", f->path);
	snprintf(link, sizeof(link), "%s/link", f->path);
	write_file(target, "x");
	assert_int_equal(symlink("file", link), 0);
	assert_int_equal(hs_os_lstat(link, &st), 0);
	assert_true(st.symlink);
	assert_false(st.regular);
	assert_int_equal(hs_os_stat(link, &st), 0);
	assert_true(st.regular);
	real = hs_os_realpath(link);
	real_dir = hs_os_realpath(f->path);
	assert_non_null(real);
	assert_non_null(real_dir);
	assert_int_equal(strncmp(real, real_dir, strlen(real_dir)), 0);
	assert_string_equal(real + strlen(real_dir), "/file");
	free(real);
	free(real_dir);
	assert_null(hs_os_realpath("/nonexistent/hsmsign/path"));
}

struct names {
	char list[10][64];
	int n;
};

static int collect(const char *path, void *userdata)
{
	struct names *n = userdata;
	const char *base = strrchr(path, '/');

	assert_true(n->n < 10);
	snprintf(n->list[n->n++], 64, "%s", base ? base + 1 : path);
	return 0;
}

static int stop_at_first(const char *path, void *userdata)
{
	(void)path;
	(*(int *)userdata)++;
	return 42;
}

static void test_glob_and_listing(void **state)
{
	struct dir_fixture *f = *state;
	const char *files[] = {"b.exe", "a.exe", "c.dll", ".hidden.exe"};
	struct names got = {0};
	struct hs_os_dir *d;
	char p[700];
	int seen = 0, calls = 0;

	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof(p), "%s/%s", f->path, files[i]);
		write_file(p, "x");
	}
	snprintf(p, sizeof(p), "%s/*.exe", f->path);
	assert_int_equal(hs_os_glob(p, collect, &got), 0);
	assert_int_equal(got.n, 2); /* sorted, no dot files */
	assert_string_equal(got.list[0], "a.exe");
	assert_string_equal(got.list[1], "b.exe");
	assert_int_equal(hs_os_glob(p, stop_at_first, &calls), 42);
	assert_int_equal(calls, 1);
	got.n = 0;
	snprintf(p, sizeof(p), "%s/*.none", f->path);
	assert_int_equal(hs_os_glob(p, collect, &got), 0);
	assert_int_equal(got.n, 0);

	d = hs_os_opendir(f->path);
	assert_non_null(d);
	for (const char *name; (name = hs_os_readdir(d)) != NULL; seen++)
		assert_true(strcmp(name, ".") != 0 && strcmp(name, "..") != 0);
	hs_os_closedir(d);
	assert_int_equal(seen, 4);
	snprintf(p, sizeof(p), "%s/missing", f->path);
	assert_null(hs_os_opendir(p));
}

static void test_new_file_mode_follows_umask(void **state)
{
	mode_t old = umask(022);

	(void)state;
	assert_int_equal(hs_os_new_file_mode(), 0644);
	umask(077);
	assert_int_equal(hs_os_new_file_mode(), 0600);
	umask(old);
}

/* --- processes ----------------------------------------------------------- */

struct captured {
	char out[256], err[256];
	size_t out_len, err_len, max;
};

static bool capture(void *userdata, int stream, const void *data, size_t len)
{
	struct captured *c = userdata;
	char *buf = stream == 1 ? c->out : c->err;
	size_t *n = stream == 1 ? &c->out_len : &c->err_len;

	if (len > 255 - *n)
		len = 255 - *n;
	memcpy(buf + *n, data, len);
	*n += len;
	return c->max == 0 || *n < c->max;
}

static void test_run_captures_and_exit_code(void **state)
{
	char *argv[] = {"sh", "-c", "printf 'out put'; printf err >&2; exit 3", NULL};
	struct captured c = {0};
	struct hs_os_exit ex;

	(void)state;
	assert_int_equal(hs_os_run(argv, 10000, capture, &c, &ex), 0);
	assert_int_equal(ex.code, 3);
	assert_false(ex.timed_out);
	assert_false(ex.stopped);
	assert_string_equal(c.out, "out put");
	assert_string_equal(c.err, "err");
}

static void test_run_timeout_stop_and_missing(void **state)
{
	char *slow[] = {"sh", "-c", "sleep 30", NULL};
	char *chatty[] = {"sh", "-c", "while :; do echo yes; done", NULL};
	char *missing[] = {"hsmsign-no-such-program", NULL};
	struct captured c = {.max = 64};
	struct hs_os_exit ex;
	int64_t t0 = hs_os_monotonic_us();

	(void)state;
	assert_int_equal(hs_os_run(slow, 300, capture, &c, &ex), 0);
	assert_true(ex.timed_out);
	assert_int_equal(ex.code, -1);
	assert_int_equal(ex.signal, 9); /* killed */
	assert_true(hs_os_monotonic_us() - t0 < 10000000);

	assert_int_equal(hs_os_run(chatty, 10000, capture, &c, &ex), 0);
	assert_true(ex.stopped);
	assert_false(ex.timed_out);
	assert_true(c.out_len >= 64);

	assert_int_equal(hs_os_run(missing, 1000, capture, &c, &ex), ENOENT);
}

/* --- dynamic loading, addresses, signals --------------------------------- */

static void test_dlopen_error_names_path(void **state)
{
	char why[512] = "";

	(void)state;
	assert_null(hs_os_dlopen("/nonexistent/libhsmsign-test.so", why, sizeof(why)));
	assert_non_null(strstr(why, "/nonexistent/libhsmsign-test.so"));
}

static void test_ip_is_loopback(void **state)
{
	static const struct {
		const char *text;
		bool loopback;
	} v[] = {
	        {"127.0.0.1", true},  {"127.255.10.2", true},
	        {"::1", true},        {"128.0.0.1", false},
	        {"10.0.0.1", false},  {"::2", false},
	        {"localhost", false}, {"127.0.0.1.evil.example", false},
	        {"[::1]", false},     {"", false},
	        {"127.1", false},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		assert_int_equal(hs_os_ip_is_loopback(v[i].text), v[i].loopback);
}

static void test_interrupt_sets_flag(void **state)
{
	static volatile sig_atomic_t flag;

	(void)state;
	flag = 0;
	hs_os_on_interrupt(&flag);
	assert_int_equal(raise(SIGTERM), 0);
	assert_int_equal(flag, 1);
	hs_os_on_interrupt(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_gmtime_known_dates),
	        cmocka_unit_test(test_timegm_normalises),
	        cmocka_unit_test(test_monotonic_sleep),
	        cmocka_unit_test_setup_teardown(test_mkstemp_pread_pwrite, dir_setup, dir_teardown),
	        cmocka_unit_test_setup_teardown(test_replace_and_identity, dir_setup, dir_teardown),
	        cmocka_unit_test_setup_teardown(test_links_and_realpath, dir_setup, dir_teardown),
	        cmocka_unit_test_setup_teardown(test_glob_and_listing, dir_setup, dir_teardown),
	        cmocka_unit_test(test_new_file_mode_follows_umask),
	        cmocka_unit_test(test_run_captures_and_exit_code),
	        cmocka_unit_test(test_run_timeout_stop_and_missing),
	        cmocka_unit_test(test_dlopen_error_names_path),
	        cmocka_unit_test(test_ip_is_loopback),
	        cmocka_unit_test(test_interrupt_sets_flag),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
