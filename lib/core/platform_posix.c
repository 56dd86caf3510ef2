/*
 * platform_posix.c - platform.h on POSIX systems (Linux, macOS, the BSDs).
 * Linux-only calls are behind __linux__ with a portable fallback.
 */
#ifdef __linux__
#define _GNU_SOURCE /* sync_file_range() */
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <libgen.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <openssl/crypto.h>

#include "platform.h"

#ifdef __APPLE__
/* A macOS shared library cannot refer to environ directly. */
#include <crt_externs.h>
#define environ (*_NSGetEnviron())
#else
extern char **environ;
#endif

/* --- time -------------------------------------------------------------- */

int64_t hs_os_monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void hs_os_sleep_us(int64_t us)
{
	struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};

	if (us <= 0)
		return;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

int hs_os_gmtime(int64_t t, struct tm *out)
{
	time_t tt = (time_t)t;

	return gmtime_r(&tt, out) != NULL ? 0 : -1;
}

int64_t hs_os_timegm(struct tm *tm)
{
	return (int64_t)timegm(tm);
}

/* --- system ------------------------------------------------------------ */

int hs_os_cpu_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n >= 1 && n <= 4096 ? (int)n : 1;
}

long hs_os_pid(void)
{
	return (long)getpid();
}

/* --- files ------------------------------------------------------------- */

/* Nanosecond times: Linux and the BSDs name them differently. */
#ifdef __APPLE__
#define ST_MTIM st_mtimespec
#define ST_CTIM st_ctimespec
#else
#define ST_MTIM st_mtim
#define ST_CTIM st_ctim
#endif

static void os_fill_stat(struct hs_os_stat *out, const struct stat *st)
{
	out->size = st->st_size > 0 ? (uint64_t)st->st_size : 0;
	out->dev = (uint64_t)st->st_dev;
	out->ino = (uint64_t)st->st_ino;
	out->mtime_ns = (int64_t)st->ST_MTIM.tv_sec * 1000000000 + st->ST_MTIM.tv_nsec;
	out->ctime_ns = (int64_t)st->ST_CTIM.tv_sec * 1000000000 + st->ST_CTIM.tv_nsec;
	out->mode = (unsigned)st->st_mode & 07777;
	out->regular = S_ISREG(st->st_mode);
	out->directory = S_ISDIR(st->st_mode);
	out->symlink = S_ISLNK(st->st_mode);
}

void hs_os_advise_sequential(int fd, uint64_t len)
{
#ifdef POSIX_FADV_SEQUENTIAL
	(void)posix_fadvise(fd, 0, (off_t)len, POSIX_FADV_SEQUENTIAL);
#else
	(void)fd;
	(void)len;
#endif
}

void hs_os_start_writeback(int fd, uint64_t off, uint64_t len)
{
#if defined(__linux__) && defined(SYNC_FILE_RANGE_WRITE)
	(void)sync_file_range(fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE);
#else
	(void)fd;
	(void)off;
	(void)len;
#endif
}

int hs_os_set_direct(int fd, bool on)
{
#if defined(__linux__) && defined(O_DIRECT)
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0)
		return -1;
	flags = on ? flags | O_DIRECT : flags & ~O_DIRECT;
	return fcntl(fd, F_SETFL, flags) == 0 ? 0 : -1;
#elif defined(F_NOCACHE)
	return fcntl(fd, F_NOCACHE, on ? 1 : 0) == 0 ? 0 : -1;
#else
	(void)fd;
	(void)on;
	errno = ENOTSUP;
	return -1;
#endif
}

void *hs_os_alloc_aligned(size_t size)
{
	void *p = NULL;

	return posix_memalign(&p, HS_OS_DIRECT_ALIGN, size) == 0 ? p : NULL;
}

void hs_os_free_aligned(void *p)
{
	free(p);
}

int hs_os_open_read(const char *path)
{
	return open(path, O_RDONLY | O_CLOEXEC);
}

int hs_os_fstat(int fd, struct hs_os_stat *out)
{
	struct stat st;

	if (fstat(fd, &st) != 0)
		return -1;
	os_fill_stat(out, &st);
	return 0;
}

int hs_os_stat(const char *path, struct hs_os_stat *out)
{
	struct stat st;

	if (stat(path, &st) != 0)
		return -1;
	os_fill_stat(out, &st);
	return 0;
}

int hs_os_lstat(const char *path, struct hs_os_stat *out)
{
	struct stat st;

	if (lstat(path, &st) != 0)
		return -1;
	os_fill_stat(out, &st);
	return 0;
}

int64_t hs_os_pread(int fd, void *buf, size_t len, uint64_t off)
{
	ssize_t n;

	while ((n = pread(fd, buf, len, (off_t)off)) < 0 && errno == EINTR)
		;
	return n;
}

int64_t hs_os_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	ssize_t n;

	while ((n = pwrite(fd, buf, len, (off_t)off)) < 0 && errno == EINTR)
		;
	return n;
}

int64_t hs_os_read(int fd, void *buf, size_t len)
{
	ssize_t n;

	while ((n = read(fd, buf, len)) < 0 && errno == EINTR)
		;
	return n;
}

int64_t hs_os_write(int fd, const void *buf, size_t len)
{
	ssize_t n;

	while ((n = write(fd, buf, len)) < 0 && errno == EINTR)
		;
	return n;
}

int hs_os_close(int fd)
{
	return close(fd);
}

int hs_os_mkstemp(char *tmpl)
{
	int fd = mkstemp(tmpl);

	if (fd >= 0)
		fcntl(fd, F_SETFD, FD_CLOEXEC);
	return fd;
}

char *hs_os_mkdtemp(char *tmpl)
{
	return mkdtemp(tmpl);
}

FILE *hs_os_fopen(const char *path, const char *mode)
{
	return fopen(path, mode);
}

FILE *hs_os_fdopen(int fd, const char *mode)
{
	return fdopen(fd, mode);
}

int hs_os_set_mode(int fd, unsigned mode)
{
	return fchmod(fd, (mode_t)mode);
}

unsigned hs_os_new_file_mode(void)
{
	/* umask() can only be read by setting it; put it straight back. */
	mode_t mask = umask(0);

	umask(mask);
	return 0666 & ~(unsigned)mask;
}

int hs_os_fsync(int fd)
{
	return fsync(fd);
}

int hs_os_replace(const char *from, const char *to)
{
	return rename(from, to);
}

void hs_os_sync_dir(const char *path)
{
	char *copy = strdup(path);
	int fd;

	if (copy == NULL)
		return;
#ifdef O_DIRECTORY
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
#else
	fd = open(dirname(copy), O_RDONLY | O_CLOEXEC);
#endif
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	free(copy);
}

int hs_os_unlink(const char *path)
{
	return unlink(path);
}

int hs_os_mkdir(const char *path)
{
	return mkdir(path, 0755);
}

int hs_os_rmdir(const char *path)
{
	return rmdir(path);
}

char *hs_os_realpath(const char *path)
{
	return realpath(path, NULL);
}

const char *hs_os_tmpdir(void)
{
	static char dir[1024];
	const char *t = getenv("TMPDIR");
	size_t n;

	if (t == NULL || *t == '\0' || (n = strlen(t)) >= sizeof(dir))
		return "/tmp";
	memcpy(dir, t, n + 1);
	while (n > 1 && dir[n - 1] == '/')
		dir[--n] = '\0';
	return dir;
}

struct hs_os_dir {
	DIR *d;
};

struct hs_os_dir *hs_os_opendir(const char *path)
{
	struct hs_os_dir *dir = malloc(sizeof(*dir));

	if (dir == NULL)
		return NULL;
	if ((dir->d = opendir(path)) == NULL) {
		free(dir);
		return NULL;
	}
	return dir;
}

const char *hs_os_readdir(struct hs_os_dir *dir)
{
	struct dirent *e;

	while ((e = readdir(dir->d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			return e->d_name;
	return NULL;
}

void hs_os_closedir(struct hs_os_dir *dir)
{
	if (dir == NULL)
		return;
	closedir(dir->d);
	free(dir);
}

int hs_os_glob(const char *pattern, int (*fn)(const char *path, void *userdata), void *userdata)
{
	glob_t g = {0};
	int r = glob(pattern, 0, NULL, &g);

	if (r == GLOB_NOMATCH) {
		globfree(&g);
		return 0;
	}
	if (r != 0) {
		globfree(&g);
		errno = r == GLOB_NOSPACE ? ENOMEM : EIO;
		return -1;
	}
	for (size_t i = 0; r == 0 && i < g.gl_pathc; i++)
		r = fn(g.gl_pathv[i], userdata);
	globfree(&g);
	return r;
}

/* --- processes --------------------------------------------------------- */

/* Starts argv[0] with stdout/stderr on pipes and stdin on /dev/null;
 * errno-style result. */
static int os_spawn(char *const argv[], pid_t *pid, int fds[2])
{
	posix_spawn_file_actions_t fa;
	int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1}, e;

	if (pipe(out_pipe) != 0 || pipe(err_pipe) != 0) {
		e = errno;
		goto fail;
	}
	if ((e = posix_spawn_file_actions_init(&fa)) != 0)
		goto fail;
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
	posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
	posix_spawn_file_actions_addclose(&fa, out_pipe[0]);
	posix_spawn_file_actions_addclose(&fa, err_pipe[0]);
	e = posix_spawnp(pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (e != 0)
		goto fail;
	close(out_pipe[1]);
	close(err_pipe[1]);
	fds[0] = out_pipe[0];
	fds[1] = err_pipe[0];
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		if (out_pipe[i] >= 0)
			close(out_pipe[i]);
		if (err_pipe[i] >= 0)
			close(err_pipe[i]);
	}
	return e;
}

/* Reads one chunk of stream i (0 stdout, 1 stderr) to fn; closes it at
 * EOF or error. False when fn wants no more. */
static bool os_read_some(int fds[2], int i, hs_os_output_fn fn, void *userdata)
{
	char chunk[4096];
	ssize_t n = read(fds[i], chunk, sizeof(chunk));
	bool more = true;

	if (n < 0 && errno == EINTR)
		return true;
	if (n <= 0) {
		close(fds[i]);
		fds[i] = -1;
		return true;
	}
	more = fn(userdata, i + 1, chunk, (size_t)n);
	OPENSSL_cleanse(chunk, sizeof(chunk));
	return more;
}

int hs_os_run(char *const argv[], long timeout_ms, hs_os_output_fn fn, void *userdata,
              struct hs_os_exit *exit)
{
	int64_t deadline = hs_os_monotonic_us() + (int64_t)timeout_ms * 1000;
	struct pollfd pfd[2];
	int fds[2] = {-1, -1}, status = 0, e;
	pid_t pid;

	*exit = (struct hs_os_exit){.code = -1};
	if ((e = os_spawn(argv, &pid, fds)) != 0)
		return e;
	while ((fds[0] >= 0 || fds[1] >= 0) && !exit->stopped) {
		int64_t left = (deadline - hs_os_monotonic_us()) / 1000;
		int n;

		if (left <= 0) {
			exit->timed_out = true;
			break;
		}
		for (int i = 0; i < 2; i++)
			pfd[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
		n = poll(pfd, 2, (int)left);
		if (n < 0 && errno != EINTR)
			break;
		for (int i = 0; n > 0 && i < 2 && !exit->stopped; i++)
			if (fds[i] >= 0 && (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				exit->stopped = !os_read_some(fds, i, fn, userdata);
	}
	if (fds[0] >= 0 || fds[1] >= 0)
		kill(pid, SIGKILL); /* our own child, stuck or too chatty */
	for (int i = 0; i < 2; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status))
		exit->code = WEXITSTATUS(status);
	else if (WIFSIGNALED(status))
		exit->signal = WTERMSIG(status);
	return 0;
}

/* --- dynamic loading --------------------------------------------------- */

void *hs_os_dlopen(const char *path, char *why, size_t why_size)
{
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);

	if (lib == NULL) {
		/* dlerror() names the path and the reason (missing file,
		 * wrong architecture, missing dependency). */
		const char *e = dlerror();
		snprintf(why, why_size, "%s", e ? e : path);
	}
	return lib;
}

void *hs_os_dlsym(void *lib, const char *name)
{
	return dlsym(lib, name);
}

void hs_os_dlclose(void *lib)
{
	dlclose(lib);
}

/* --- terminal ---------------------------------------------------------- */

bool hs_os_isatty(int fd)
{
	return isatty(fd) == 1;
}

/* Reads one line from the terminal into buf. */
static void os_read_tty_line(int fd, char *buf, size_t size)
{
	size_t n = 0;
	char c;

	while (read(fd, &c, 1) == 1 && c != '\n' && c != '\r')
		if (n + 1 < size)
			buf[n++] = c;
	buf[n] = '\0';
	c = 0;
}

int hs_os_read_secret(const char *prompt, char *buf, size_t size)
{
	int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	struct termios old, quiet;
	bool restore;

	if (fd < 0 || size == 0)
		return -1;
	buf[0] = '\0';
	/* Echo goes off before the prompt shows, so nothing typed after
	 * it can be echoed or flushed away. */
	restore = tcgetattr(fd, &old) == 0;
	if (restore) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(fd, TCSAFLUSH, &quiet);
	}
	if (write(fd, prompt, strlen(prompt)) >= 0)
		os_read_tty_line(fd, buf, size);
	if (restore)
		tcsetattr(fd, TCSANOW, &old);
	if (write(fd, "\n", 1) < 0) {
		/* the secret is read; a lost newline does not matter */
	}
	close(fd);
	return 0;
}

/* --- signals and process hardening ------------------------------------- */

static volatile sig_atomic_t *os_interrupt_flag;
static struct sigaction os_old_int, os_old_term;

static void os_on_signal(int sig)
{
	int saved = errno;

	(void)sig;
	/* An atomic store: the flag is read by other threads (a plain
	 * sig_atomic_t is only safe within one thread; ThreadSanitizer). */
	if (os_interrupt_flag != NULL)
		__atomic_store_n(os_interrupt_flag, 1, __ATOMIC_RELAXED);
	errno = saved;
}

void hs_os_on_interrupt(volatile sig_atomic_t *flag)
{
	struct sigaction sa;

	if (flag == NULL) {
		sigaction(SIGINT, &os_old_int, NULL);
		sigaction(SIGTERM, &os_old_term, NULL);
		os_interrupt_flag = NULL;
		return;
	}
	os_interrupt_flag = flag;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = os_on_signal;
	/* SA_RESETHAND: the second signal has the default effect. */
	sa.sa_flags = SA_RESTART | SA_RESETHAND;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &os_old_int);
	sigaction(SIGTERM, &sa, &os_old_term);
}

void hs_os_harden(void)
{
	struct rlimit none = {0, 0};

	setrlimit(RLIMIT_CORE, &none);
#ifdef __linux__
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
#endif
	signal(SIGXFSZ, SIG_IGN);
}

/* --- network addresses ------------------------------------------------- */

bool hs_os_ip_is_loopback(const char *text)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (inet_pton(AF_INET, text, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, text, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}
