/*
 * platform.h - the operating system behind one small interface, one concern
 * per section: time, files and directories, processes, dynamic loading,
 * terminal, signals and process hardening, network addresses. Two files
 * implement it: platform_posix.c (Linux, macOS, the BSDs) and
 * platform_win32.c (Windows with MinGW-w64); nothing else in lib/ or cli/
 * includes an operating system header. The CLI uses this header as well as
 * the public one: it is the portability layer both share, not library API
 * (the shared library does not export it).
 *
 * Threads stay pthreads everywhere: MinGW-w64 provides them (winpthreads).
 * MSVC is not a target. Random numbers come from OpenSSL (RAND_bytes).
 *
 * Conventions: paths are UTF-8 (platform_win32.c converts them to UTF-16);
 * file descriptors are C runtime descriptors; functions that mirror a POSIX
 * call return what it returns and set errno, so that callers keep their
 * strerror(errno) messages.
 */
#ifndef HS_PLATFORM_H
#define HS_PLATFORM_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

/*
 * printf-style format checking. On MinGW the "printf" archetype means the
 * Microsoft C runtime's formats; hsmsign is built with
 * __USE_MINGW_ANSI_STDIO=1 (C99 formats such as %zu and %lld), which is
 * what "gnu_printf" checks. Clang knows no gnu_printf, hence the macro.
 */
#if defined(__MINGW32__)
#define HS_PRINTF(fmt, first) __attribute__((format(gnu_printf, fmt, first)))
#else
#define HS_PRINTF(fmt, first) __attribute__((format(printf, fmt, first)))
#endif

#ifdef _WIN32
/* POSIX 2008 strndup(), which the Microsoft C runtime lacks; provided by
 * platform_win32.c under its POSIX name so that callers stay unchanged. */
char *strndup(const char *s, size_t n);
#endif

/* --- time -------------------------------------------------------------- */

/* Microseconds on a monotonic clock (arbitrary origin). */
int64_t hs_os_monotonic_us(void);
/* Sleeps at least `us` microseconds (interrupted sleeps are resumed). */
void hs_os_sleep_us(int64_t us);
/* gmtime_r(): UTC calendar time of Unix time t; 0, or -1 if out of range. */
int hs_os_gmtime(int64_t t, struct tm *out);
/* timegm(): Unix time of a UTC calendar time (tm is normalised); -1 on error. */
int64_t hs_os_timegm(struct tm *tm);

/* --- system ------------------------------------------------------------ */

/* Online processors, at least 1. */
int hs_os_cpu_count(void);
/* This process's id. */
long hs_os_pid(void);

/* --- files ------------------------------------------------------------- */

/* Advice only, errors ignored; nothing where the system has no such call. */
/* The file will be read sequentially up to len (posix_fadvise). */
void hs_os_advise_sequential(int fd, uint64_t len);
/* Start writing [off, off + len) back to disk without waiting for it
 * (Linux sync_file_range), so that a later fsync waits for less. */
void hs_os_start_writeback(int fd, uint64_t off, uint64_t len);
/* Writes to fd bypass the page cache (on) or go through it again (off):
 * Linux O_DIRECT, macOS F_NOCACHE. While on (Linux), every write needs a
 * buffer, offset and length aligned to HS_OS_DIRECT_ALIGN. 0, or -1 where
 * the system or the file system does not support it. */
#define HS_OS_DIRECT_ALIGN 4096
int hs_os_set_direct(int fd, bool on);
/* Memory aligned to HS_OS_DIRECT_ALIGN, or NULL; freed with
 * hs_os_free_aligned() (Windows needs its own free for it). */
void *hs_os_alloc_aligned(size_t size);
void hs_os_free_aligned(void *p);

/* What hsmsign needs from stat(). dev/ino identify the file (Windows: the
 * volume serial number and the file index). */
struct hs_os_stat {
	uint64_t size;
	uint64_t dev, ino;
	int64_t mtime_ns, ctime_ns; /* Windows: last write and change times */
	unsigned mode;              /* permission bits (07777) */
	bool regular, directory, symlink;
};

/* open(path, O_RDONLY | O_CLOEXEC) (binary on Windows); fd or -1. */
int hs_os_open_read(const char *path);
int hs_os_fstat(int fd, struct hs_os_stat *st);
/* stat(): follows symbolic links. */
int hs_os_stat(const char *path, struct hs_os_stat *st);
/* lstat(): a symbolic link is described, not followed. */
int hs_os_lstat(const char *path, struct hs_os_stat *st);
/* pread()/pwrite() at an absolute offset; EINTR is retried. */
int64_t hs_os_pread(int fd, void *buf, size_t len, uint64_t off);
int64_t hs_os_pwrite(int fd, const void *buf, size_t len, uint64_t off);
/* read()/write() at the current offset; EINTR is retried. */
int64_t hs_os_read(int fd, void *buf, size_t len);
int64_t hs_os_write(int fd, const void *buf, size_t len);
int hs_os_close(int fd);
/* mkstemp(): creates the file named by tmpl (ending in "XXXXXX", replaced)
 * exclusively, readable and writable by the owner only; fd or -1. */
int hs_os_mkstemp(char *tmpl);
/* mkdtemp(): the same for a directory; tmpl or NULL. */
char *hs_os_mkdtemp(char *tmpl);
/* fopen() with a UTF-8 path (Windows: _wfopen, where fopen would take the
 * ANSI code page). */
FILE *hs_os_fopen(const char *path, const char *mode);
/* fdopen() of a descriptor from hs_os_mkstemp(). */
FILE *hs_os_fdopen(int fd, const char *mode);
/* fchmod(). Windows has no POSIX modes: 0 without doing anything. */
int hs_os_set_mode(int fd, unsigned mode);
/* The mode a new ordinary file gets: 0666 less the umask. */
unsigned hs_os_new_file_mode(void);
/* fsync(): the file's data and metadata reach the disk. */
int hs_os_fsync(int fd);
/* rename() that atomically replaces an existing `to` (Windows: with POSIX
 * semantics where NTFS has them, so also while `to` is open for reading;
 * else MoveFileExW, which fails then). */
int hs_os_replace(const char *from, const char *to);
/* Makes a completed hs_os_replace() into path durable (fsync of the
 * directory on POSIX; nothing on Windows, which has no directory fsync). */
void hs_os_sync_dir(const char *path);
int hs_os_unlink(const char *path);
/* mkdir(path, 0755). */
int hs_os_mkdir(const char *path);
int hs_os_rmdir(const char *path);
/* The absolute path with every symbolic link resolved (malloc()ed), or
 * NULL with errno. */
char *hs_os_realpath(const char *path);
/* The directory for temporary files: TMPDIR (POSIX) or GetTempPath
 * (Windows), without a trailing separator; a static buffer. */
const char *hs_os_tmpdir(void);

/* Directory listing: names other than "." and "..", in directory order. */
struct hs_os_dir;
/* NULL with errno when the directory cannot be read. */
struct hs_os_dir *hs_os_opendir(const char *path);
/* The next name (borrowed until the next call), or NULL at the end. */
const char *hs_os_readdir(struct hs_os_dir *dir);
void hs_os_closedir(struct hs_os_dir *dir);

/* Expands a wildcard pattern ('*', '?'; POSIX also "[...]"), '/' as the
 * separator, and calls fn with each existing path that matches, sorted;
 * fn returning non-zero stops and is returned. 0 also when nothing
 * matched (then fn was never called); -1 with errno on failure. */
int hs_os_glob(const char *pattern, int (*fn)(const char *path, void *userdata), void *userdata);

/* --- processes --------------------------------------------------------- */

/* How hs_os_run()'s child ended. */
struct hs_os_exit {
	int code;       /* exit status when it exited, else -1 */
	int signal;     /* the signal that ended it (POSIX), else 0 */
	bool timed_out; /* killed after timeout_ms */
	bool stopped;   /* killed because the output callback said stop */
};

/* Receives the child's output as it comes: stream 1 is stdout, 2 stderr.
 * Returns false to stop (the child is then killed). */
typedef bool (*hs_os_output_fn)(void *userdata, int stream, const void *data, size_t len);

/*
 * Runs argv[0] (searched in PATH, no shell; argv NULL-terminated) with
 * stdin on the null device, hands its output to fn, and waits for it to
 * end or for timeout_ms. The read buffers are wiped (output may be a
 * token). 0 when the program ran (see *exit), or an errno value when it
 * could not be started. Windows: argv[0] must be an executable (.exe);
 * batch files (.cmd) are not run, since cmd.exe would re-parse the
 * arguments.
 */
int hs_os_run(char *const argv[], long timeout_ms, hs_os_output_fn fn, void *userdata,
              struct hs_os_exit *exit);

/* --- dynamic loading --------------------------------------------------- */

/* dlopen(RTLD_NOW | RTLD_LOCAL) / LoadLibrary; NULL with the reason in why
 * (naming the path) on failure. */
void *hs_os_dlopen(const char *path, char *why, size_t why_size);
void *hs_os_dlsym(void *lib, const char *name);
void hs_os_dlclose(void *lib);

/* --- terminal ---------------------------------------------------------- */

/* Whether fd (0, 1 or 2) is a terminal. */
bool hs_os_isatty(int fd);
/* Shows prompt on the terminal (not stdout/stderr) and reads one line
 * with echo off into buf (NUL-terminated, truncated to size - 1). 0, or
 * -1 when there is no terminal. */
int hs_os_read_secret(const char *prompt, char *buf, size_t size);

/* --- signals and process hardening ------------------------------------- */

/* On the first SIGINT or SIGTERM (Windows: Ctrl+C, Ctrl+Break) sets *flag
 * to 1 instead of ending the process; the next one ends it as usual.
 * hs_os_on_interrupt(NULL) restores the previous handlers. */
void hs_os_on_interrupt(volatile sig_atomic_t *flag);
/* For a process that holds secrets: no core dumps, not dumpable (Linux:
 * also no ptrace by the same user), and a file-size limit fails writes
 * (EFBIG) instead of killing the process. */
void hs_os_harden(void);

/* --- network addresses ------------------------------------------------- */

/* True when text is an IPv4 or IPv6 address literal (no brackets) in the
 * loopback range (127.0.0.0/8, ::1). */
bool hs_os_ip_is_loopback(const char *text);

#endif /* HS_PLATFORM_H */
