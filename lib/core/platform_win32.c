/*
 * platform_win32.c - platform.h on Windows (MinGW-w64, UCRT or MSVCRT).
 * Paths are UTF-8 everywhere else in hsmsign and UTF-16 for Windows: every
 * call that takes a path converts it here. File descriptors are C runtime
 * descriptors over handles opened with CreateFileW, so that positional I/O
 * (ReadFile/WriteFile with an OVERLAPPED offset) and sharing flags are ours
 * to choose.
 *
 * Compiled and linked here only by scripts/cross-check-windows; run only by
 * the windows job of .github/workflows/ci.yml (never run so far).
 */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>

#include <direct.h>
#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "platform.h"

/* FileRenameInfoEx, which MinGW-w64's headers declare only for
 * _WIN32_WINNT >= 0x0A000002 (the value is fixed by the Windows ABI). */
#define OS_FILE_RENAME_INFO_EX ((FILE_INFO_BY_HANDLE_CLASS)22)

/* From 1601-01-01 (FILETIME's epoch) to 1970-01-01, in 100 ns units. */
#define OS_EPOCH_DIFF 116444736000000000LL

char *strndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *copy = malloc(len + 1);

	if (copy == NULL)
		return NULL;
	memcpy(copy, s, len);
	copy[len] = '\0';
	return copy;
}

/* errno for a Windows error code, for strerror() at the call sites. */
static int os_errno(DWORD e)
{
	switch (e) {
	case ERROR_FILE_NOT_FOUND:
	case ERROR_PATH_NOT_FOUND:
	case ERROR_INVALID_NAME:
	case ERROR_BAD_NETPATH:
		return ENOENT;
	case ERROR_ACCESS_DENIED:
	case ERROR_SHARING_VIOLATION:
	case ERROR_LOCK_VIOLATION:
		return EACCES;
	case ERROR_FILE_EXISTS:
	case ERROR_ALREADY_EXISTS:
		return EEXIST;
	case ERROR_NOT_ENOUGH_MEMORY:
	case ERROR_OUTOFMEMORY:
		return ENOMEM;
	case ERROR_DISK_FULL:
	case ERROR_HANDLE_DISK_FULL:
		return ENOSPC;
	case ERROR_DIR_NOT_EMPTY:
		return ENOTEMPTY;
	default:
		return EIO;
	}
}

/* Sets errno from GetLastError(); returns -1 for `return os_fail();`. */
static int os_fail(void)
{
	errno = os_errno(GetLastError());
	return -1;
}

/* UTF-8 to UTF-16 (malloc()ed), or NULL with errno. */
static wchar_t *os_wide(const char *s)
{
	int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
	wchar_t *w;

	if (n <= 0) {
		errno = EINVAL;
		return NULL;
	}
	if ((w = malloc((size_t)n * sizeof(*w))) == NULL)
		return NULL;
	MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n);
	return w;
}

/* UTF-16 to UTF-8 (malloc()ed), or NULL with errno. */
static char *os_utf8(const wchar_t *w)
{
	int n = WideCharToMultiByte(CP_UTF8, 0, w, -1, NULL, 0, NULL, NULL);
	char *s;

	if (n <= 0) {
		errno = EINVAL;
		return NULL;
	}
	if ((s = malloc((size_t)n)) == NULL)
		return NULL;
	WideCharToMultiByte(CP_UTF8, 0, w, -1, s, n, NULL, NULL);
	return s;
}

/* --- time -------------------------------------------------------------- */

int64_t hs_os_monotonic_us(void)
{
	LARGE_INTEGER now, freq;

	QueryPerformanceCounter(&now);
	QueryPerformanceFrequency(&freq);
	return (int64_t)(now.QuadPart / freq.QuadPart) * 1000000 +
	       (int64_t)(now.QuadPart % freq.QuadPart) * 1000000 / freq.QuadPart;
}

void hs_os_sleep_us(int64_t us)
{
	if (us > 0)
		Sleep((DWORD)((us + 999) / 1000));
}

int hs_os_gmtime(int64_t t, struct tm *out)
{
	time_t tt = (time_t)t;

	return gmtime_s(out, &tt) == 0 ? 0 : -1;
}

int64_t hs_os_timegm(struct tm *tm)
{
	return (int64_t)_mkgmtime(tm);
}

/* --- system ------------------------------------------------------------ */

int hs_os_cpu_count(void)
{
	DWORD n = GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);

	return n >= 1 && n <= 4096 ? (int)n : 1;
}

long hs_os_pid(void)
{
	return (long)GetCurrentProcessId();
}

/* --- files ------------------------------------------------------------- */

static int64_t os_filetime_ns(int64_t ft)
{
	return (ft - OS_EPOCH_DIFF) * 100;
}

static HANDLE os_handle(int fd)
{
	return (HANDLE)_get_osfhandle(fd);
}

/* Fills out from an open handle. */
static int os_stat_handle(HANDLE h, struct hs_os_stat *out)
{
	BY_HANDLE_FILE_INFORMATION info;
	FILE_BASIC_INFO basic;

	if (!GetFileInformationByHandle(h, &info) ||
	    !GetFileInformationByHandleEx(h, FileBasicInfo, &basic, sizeof(basic)))
		return os_fail();
	memset(out, 0, sizeof(*out));
	out->size = ((uint64_t)info.nFileSizeHigh << 32) | info.nFileSizeLow;
	out->dev = info.dwVolumeSerialNumber;
	out->ino = ((uint64_t)info.nFileIndexHigh << 32) | info.nFileIndexLow;
	out->mtime_ns = os_filetime_ns(basic.LastWriteTime.QuadPart);
	out->ctime_ns = os_filetime_ns(basic.ChangeTime.QuadPart);
	out->directory = (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) != 0;
	out->symlink = (info.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) != 0;
	out->regular = !out->directory && !out->symlink;
	out->mode = (info.dwFileAttributes & FILE_ATTRIBUTE_READONLY) ? 0444 : 0644;
	return 0;
}

/* A handle for reading attributes; follow: resolve symbolic links. */
static HANDLE os_open_meta(const char *path, bool follow)
{
	wchar_t *w = os_wide(path);
	DWORD flags = FILE_FLAG_BACKUP_SEMANTICS | (follow ? 0 : FILE_FLAG_OPEN_REPARSE_POINT);
	HANDLE h = INVALID_HANDLE_VALUE;

	if (w != NULL)
		h = CreateFileW(w, FILE_READ_ATTRIBUTES,
		                FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
		                OPEN_EXISTING, flags, NULL);
	if (h == INVALID_HANDLE_VALUE && w != NULL)
		os_fail();
	free(w);
	return h;
}

void hs_os_advise_sequential(int fd, uint64_t len)
{
	(void)fd; /* FILE_FLAG_SEQUENTIAL_SCAN would be given at open */
	(void)len;
}

void hs_os_start_writeback(int fd, uint64_t off, uint64_t len)
{
	(void)fd; /* no equivalent; FlushFileBuffers at commit does it all */
	(void)off;
	(void)len;
}

int hs_os_set_direct(int fd, bool on)
{
	/* FILE_FLAG_NO_BUFFERING is fixed when the file is created; writes go
	 * through the cache. */
	(void)fd;
	(void)on;
	errno = ENOTSUP;
	return -1;
}

void *hs_os_alloc_aligned(size_t size)
{
	return _aligned_malloc(size, HS_OS_DIRECT_ALIGN);
}

void hs_os_free_aligned(void *p)
{
	_aligned_free(p);
}

int hs_os_open_read(const char *path)
{
	wchar_t *w = os_wide(path);
	HANDLE h;
	int fd;

	if (w == NULL)
		return -1;
	/* FILE_SHARE_DELETE: signing in place replaces the input (rename over
	 * it) while it is still open for reading. */
	h = CreateFileW(w, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
	                NULL, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
	free(w);
	if (h == INVALID_HANDLE_VALUE)
		return os_fail();
	if ((fd = _open_osfhandle((intptr_t)h, _O_RDONLY | _O_BINARY)) < 0)
		CloseHandle(h);
	return fd;
}

int hs_os_fstat(int fd, struct hs_os_stat *st)
{
	HANDLE h = os_handle(fd);

	if (h == INVALID_HANDLE_VALUE) {
		errno = EBADF;
		return -1;
	}
	return os_stat_handle(h, st);
}

static int os_stat_path(const char *path, struct hs_os_stat *st, bool follow)
{
	HANDLE h = os_open_meta(path, follow);
	int r;

	if (h == INVALID_HANDLE_VALUE)
		return -1;
	r = os_stat_handle(h, st);
	CloseHandle(h);
	return r;
}

int hs_os_stat(const char *path, struct hs_os_stat *st)
{
	return os_stat_path(path, st, true);
}

int hs_os_lstat(const char *path, struct hs_os_stat *st)
{
	return os_stat_path(path, st, false);
}

/* One ReadFile/WriteFile call at off: no more than 1 GiB at a time. */
static DWORD os_io_len(size_t len)
{
	return len > (1u << 30) ? (DWORD)1 << 30 : (DWORD)len;
}

int64_t hs_os_pread(int fd, void *buf, size_t len, uint64_t off)
{
	OVERLAPPED ov = {.Offset = (DWORD)off, .OffsetHigh = (DWORD)(off >> 32)};
	DWORD got = 0;

	if (!ReadFile(os_handle(fd), buf, os_io_len(len), &got, &ov)) {
		if (GetLastError() == ERROR_HANDLE_EOF)
			return 0;
		return os_fail();
	}
	return got;
}

int64_t hs_os_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	OVERLAPPED ov = {.Offset = (DWORD)off, .OffsetHigh = (DWORD)(off >> 32)};
	DWORD put = 0;

	if (!WriteFile(os_handle(fd), buf, os_io_len(len), &put, &ov))
		return os_fail();
	return put;
}

int64_t hs_os_read(int fd, void *buf, size_t len)
{
	return _read(fd, buf, os_io_len(len));
}

int64_t hs_os_write(int fd, const void *buf, size_t len)
{
	return _write(fd, buf, os_io_len(len));
}

int hs_os_close(int fd)
{
	return _close(fd);
}

/* Replaces the trailing "XXXXXX" of tmpl with random letters and digits. */
static int os_fill_template(char *tmpl)
{
	static const char chars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	size_t n = strlen(tmpl);
	unsigned char rnd[6];

	if (n < 6 || strcmp(tmpl + n - 6, "XXXXXX") != 0) {
		errno = EINVAL;
		return -1;
	}
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		errno = EIO;
		return -1;
	}
	for (int i = 0; i < 6; i++)
		tmpl[n - 6 + i] = chars[rnd[i] % (sizeof(chars) - 1)];
	return 0;
}

int hs_os_mkstemp(char *tmpl)
{
	char *copy = strdup(tmpl);
	int fd = -1;

	if (copy == NULL)
		return -1;
	for (int tries = 0; fd < 0 && tries < 100; tries++) {
		wchar_t *w;
		HANDLE h;

		memcpy(tmpl, copy, strlen(copy) + 1);
		if (os_fill_template(tmpl) < 0 || (w = os_wide(tmpl)) == NULL)
			break;
		/* Not inheritable, only for us (the directory's ACL applies),
		 * and deletable while open (hs_out_abort). */
		h = CreateFileW(w, GENERIC_READ | GENERIC_WRITE,
		                FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
		                CREATE_NEW, FILE_ATTRIBUTE_NORMAL, NULL);
		free(w);
		if (h == INVALID_HANDLE_VALUE) {
			if (GetLastError() == ERROR_FILE_EXISTS)
				continue;
			os_fail();
			break;
		}
		if ((fd = _open_osfhandle((intptr_t)h, _O_RDWR | _O_BINARY)) < 0) {
			CloseHandle(h);
			break;
		}
	}
	free(copy);
	return fd;
}

char *hs_os_mkdtemp(char *tmpl)
{
	char *copy = strdup(tmpl);
	char *done = NULL;

	if (copy == NULL)
		return NULL;
	for (int tries = 0; done == NULL && tries < 100; tries++) {
		wchar_t *w;
		BOOL ok;

		memcpy(tmpl, copy, strlen(copy) + 1);
		if (os_fill_template(tmpl) < 0 || (w = os_wide(tmpl)) == NULL)
			break;
		ok = CreateDirectoryW(w, NULL);
		free(w);
		if (ok)
			done = tmpl;
		else if (GetLastError() != ERROR_ALREADY_EXISTS) {
			os_fail();
			break;
		}
	}
	free(copy);
	return done;
}

FILE *hs_os_fopen(const char *path, const char *mode)
{
	wchar_t *w = os_wide(path), *wmode = os_wide(mode);
	FILE *fp = NULL;

	if (w != NULL && wmode != NULL)
		fp = _wfopen(w, wmode);
	free(w);
	free(wmode);
	return fp;
}

FILE *hs_os_fdopen(int fd, const char *mode)
{
	return _fdopen(fd, mode);
}

int hs_os_set_mode(int fd, unsigned mode)
{
	(void)fd;
	(void)mode;
	return 0;
}

unsigned hs_os_new_file_mode(void)
{
	return 0666;
}

int hs_os_fsync(int fd)
{
	return FlushFileBuffers(os_handle(fd)) ? 0 : os_fail();
}

/*
 * Rename with POSIX semantics (Windows 10 1607 and later, NTFS): replaces
 * `to` even while it is open with FILE_SHARE_DELETE, as the input of an
 * in-place signature is (hs_os_open_read). The target name must be a full
 * path. False when the system or the file system cannot do it.
 */
static bool os_replace_posix(const wchar_t *from, const wchar_t *to)
{
	DWORD n = GetFullPathNameW(to, 0, NULL, NULL);
	size_t bytes = (size_t)n * sizeof(wchar_t), size = sizeof(FILE_RENAME_INFO) + bytes;
	FILE_RENAME_INFO *info;
	HANDLE h;
	bool ok;

	if (n == 0 || (info = calloc(1, size)) == NULL)
		return false;
	/* n counted the terminating NUL; FileNameLength does not. */
	n = GetFullPathNameW(to, n, info->FileName, NULL);
	h = CreateFileW(from, DELETE | SYNCHRONIZE,
	                FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL, OPEN_EXISTING,
	                FILE_ATTRIBUTE_NORMAL, NULL);
	ok = n > 0 && h != INVALID_HANDLE_VALUE;
	if (ok) {
		info->Flags = FILE_RENAME_FLAG_REPLACE_IF_EXISTS | FILE_RENAME_FLAG_POSIX_SEMANTICS;
		info->FileNameLength = n * (DWORD)sizeof(wchar_t);
		ok = SetFileInformationByHandle(h, OS_FILE_RENAME_INFO_EX, info, (DWORD)size) != 0;
	}
	if (h != INVALID_HANDLE_VALUE)
		CloseHandle(h);
	free(info);
	return ok;
}

int hs_os_replace(const char *from, const char *to)
{
	wchar_t *wf = os_wide(from), *wt = os_wide(to);
	int r = -1;

	/* MoveFileExW is the fallback: it fails while `to` is open anywhere. */
	if (wf != NULL && wt != NULL)
		r = os_replace_posix(wf, wt) ||
		                    MoveFileExW(wf, wt,
		                                MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)
		            ? 0
		            : os_fail();
	free(wf);
	free(wt);
	return r;
}

void hs_os_sync_dir(const char *path)
{
	(void)path; /* NTFS journals the rename; there is no directory fsync */
}

/* Calls f on the UTF-16 form of path. */
static int os_path_call(const char *path, int (*f)(const wchar_t *))
{
	wchar_t *w = os_wide(path);
	int r;

	if (w == NULL)
		return -1;
	r = f(w);
	free(w);
	return r;
}

int hs_os_unlink(const char *path)
{
	return os_path_call(path, _wunlink);
}

int hs_os_mkdir(const char *path)
{
	return os_path_call(path, _wmkdir);
}

int hs_os_rmdir(const char *path)
{
	return os_path_call(path, _wrmdir);
}

char *hs_os_realpath(const char *path)
{
	HANDLE h = os_open_meta(path, true);
	wchar_t buf[32768], *p = buf;
	DWORD n;

	if (h == INVALID_HANDLE_VALUE)
		return NULL;
	n = GetFinalPathNameByHandleW(h, buf, sizeof(buf) / sizeof(buf[0]), FILE_NAME_NORMALIZED);
	CloseHandle(h);
	if (n == 0 || n >= sizeof(buf) / sizeof(buf[0])) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	/* "\\?\C:\dir" -> "C:\dir"; "\\?\UNC\server\share" -> "\\server\share". */
	if (wcsncmp(p, L"\\\\?\\UNC\\", 8) == 0) {
		p += 6;
		p[0] = L'\\';
	} else if (wcsncmp(p, L"\\\\?\\", 4) == 0) {
		p += 4;
	}
	return os_utf8(p);
}

const char *hs_os_tmpdir(void)
{
	static char dir[1024];
	wchar_t w[MAX_PATH + 1];
	DWORD n = GetTempPathW(MAX_PATH + 1, w);
	char *s;
	size_t len;

	if (n == 0 || n > MAX_PATH || (s = os_utf8(w)) == NULL)
		return ".";
	len = strlen(s);
	while (len > 1 && (s[len - 1] == '\\' || s[len - 1] == '/'))
		s[--len] = '\0';
	snprintf(dir, sizeof(dir), "%s", s);
	free(s);
	return dir;
}

struct hs_os_dir {
	HANDLE find;
	WIN32_FIND_DATAW data;
	bool have; /* data holds an entry not returned yet */
	char *name;
};

struct hs_os_dir *hs_os_opendir(const char *path)
{
	struct hs_os_dir *dir = calloc(1, sizeof(*dir));
	char *pattern = malloc(strlen(path) + 3);
	wchar_t *w = NULL;

	if (dir == NULL || pattern == NULL)
		goto fail;
	snprintf(pattern, strlen(path) + 3, "%s\\*", path);
	if ((w = os_wide(pattern)) == NULL)
		goto fail;
	dir->find = FindFirstFileW(w, &dir->data);
	if (dir->find == INVALID_HANDLE_VALUE) {
		os_fail();
		goto fail;
	}
	dir->have = true;
	free(w);
	free(pattern);
	return dir;
fail:
	free(w);
	free(pattern);
	free(dir);
	return NULL;
}

const char *hs_os_readdir(struct hs_os_dir *dir)
{
	while (dir->have || FindNextFileW(dir->find, &dir->data)) {
		dir->have = false;
		if (wcscmp(dir->data.cFileName, L".") == 0 ||
		    wcscmp(dir->data.cFileName, L"..") == 0)
			continue;
		free(dir->name);
		if ((dir->name = os_utf8(dir->data.cFileName)) != NULL)
			return dir->name;
	}
	return NULL;
}

void hs_os_closedir(struct hs_os_dir *dir)
{
	if (dir == NULL)
		return;
	FindClose(dir->find);
	free(dir->name);
	free(dir);
}

/* Paths a pattern expanded to, sorted before they are handed out. */
struct os_glob {
	char **paths;
	size_t n, cap;
};

static int os_glob_add(struct os_glob *g, const char *path)
{
	if (g->n == g->cap) {
		size_t cap = g->cap * 2 + 16;
		char **p = realloc(g->paths, cap * sizeof(*p));

		if (p == NULL)
			return -1;
		g->paths = p;
		g->cap = cap;
	}
	if ((g->paths[g->n] = strdup(path)) == NULL)
		return -1;
	g->n++;
	return 0;
}

/* Expands `rest` (one component at a time, '/' separated) below prefix.
 * FindFirstFileW matches '*' and '?' in a component itself. */
static int os_glob_expand(struct os_glob *g, const char *prefix, const char *rest)
{
	const char *slash = strchr(rest, '/');
	size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
	size_t size = strlen(prefix) + len + 2;
	char *path = malloc(size);
	WIN32_FIND_DATAW data;
	wchar_t *w = NULL;
	HANDLE find;
	int r = 0;

	if (path == NULL)
		return -1;
	snprintf(path, size, "%s%.*s", prefix, (int)len, rest);
	if (strcspn(path + strlen(prefix), "*?") == len) {
		/* No wildcard here: the component is taken as it is. */
		if (slash != NULL) {
			snprintf(path + strlen(path), 2, "/");
			r = os_glob_expand(g, path, slash + 1);
		} else {
			struct hs_os_stat st;

			if (hs_os_stat(path, &st) == 0)
				r = os_glob_add(g, path);
		}
		free(path);
		return r;
	}
	if ((w = os_wide(path)) == NULL ||
	    (find = FindFirstFileW(w, &data)) == INVALID_HANDLE_VALUE) {
		free(w);
		free(path);
		return 0; /* nothing matches here */
	}
	do {
		char *name = os_utf8(data.cFileName), *sub;
		bool dir = (data.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) != 0;
		size_t sub_size;

		if (name == NULL) {
			r = -1;
			break;
		}
		/* Like glob(3): '*' does not match a leading dot. */
		if (name[0] == '.' && rest[0] != '.') {
			free(name);
			continue;
		}
		sub_size = strlen(prefix) + strlen(name) + 2;
		if ((sub = malloc(sub_size)) == NULL) {
			free(name);
			r = -1;
			break;
		}
		snprintf(sub, sub_size, "%s%s%s", prefix, name, slash && dir ? "/" : "");
		if (slash == NULL)
			r = os_glob_add(g, sub);
		else if (dir)
			r = os_glob_expand(g, sub, slash + 1);
		free(sub);
		free(name);
	} while (r == 0 && FindNextFileW(find, &data));
	FindClose(find);
	free(w);
	free(path);
	return r;
}

static int os_glob_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int hs_os_glob(const char *pattern, int (*fn)(const char *path, void *userdata), void *userdata)
{
	struct os_glob g = {0};
	int r = os_glob_expand(&g, "", pattern);

	if (r == 0 && g.n > 1)
		qsort(g.paths, g.n, sizeof(*g.paths), os_glob_cmp);
	for (size_t i = 0; r == 0 && i < g.n; i++)
		r = fn(g.paths[i], userdata);
	for (size_t i = 0; i < g.n; i++)
		free(g.paths[i]);
	free(g.paths);
	return r;
}

/* --- processes --------------------------------------------------------- */

/* Appends s to the command line being built, quoted the way the C
 * runtime's argument parser (CommandLineToArgvW) splits it back. */
static void os_quote_arg(char *line, size_t size, const char *s)
{
	size_t n = strlen(line);

#define OS_PUT(c)                                                                                  \
	do {                                                                                       \
		if (n + 1 < size)                                                                  \
			line[n++] = (c);                                                           \
	} while (0)
	if (n > 0)
		OS_PUT(' ');
	OS_PUT('"');
	for (const char *p = s;; p++) {
		size_t slashes = 0;

		while (*p == '\\') {
			slashes++;
			p++;
		}
		if (*p == '\0') {
			/* Backslashes before the closing quote are doubled. */
			for (size_t i = 0; i < slashes * 2; i++)
				OS_PUT('\\');
			break;
		}
		for (size_t i = 0; i < (*p == '"' ? slashes * 2 + 1 : slashes); i++)
			OS_PUT('\\');
		OS_PUT(*p);
	}
	OS_PUT('"');
#undef OS_PUT
	line[n] = '\0';
}

/* True for names cmd.exe would run (batch files): refused. */
static bool os_is_batch(const char *name)
{
	size_t n = strlen(name);

	return n >= 4 &&
	       (_stricmp(name + n - 4, ".bat") == 0 || _stricmp(name + n - 4, ".cmd") == 0);
}

/* Creates an inheritable write end and a private read end. */
static bool os_pipe(HANDLE *rd, HANDLE *wr)
{
	SECURITY_ATTRIBUTES sa = {.nLength = sizeof(sa), .bInheritHandle = TRUE};

	if (!CreatePipe(rd, wr, &sa, 0))
		return false;
	SetHandleInformation(*rd, HANDLE_FLAG_INHERIT, 0);
	return true;
}

/* Moves what is waiting in pipe i to fn; closes it when the child closed it. */
static bool os_drain(HANDLE pipes[2], int i, hs_os_output_fn fn, void *userdata, bool *got)
{
	char chunk[4096];
	DWORD avail = 0, n = 0;
	bool more = true;

	if (!PeekNamedPipe(pipes[i], NULL, 0, NULL, &avail, NULL)) {
		CloseHandle(pipes[i]);
		pipes[i] = NULL;
		return true;
	}
	if (avail == 0)
		return true;
	if (!ReadFile(pipes[i], chunk, avail < sizeof(chunk) ? avail : sizeof(chunk), &n, NULL) ||
	    n == 0) {
		CloseHandle(pipes[i]);
		pipes[i] = NULL;
		return true;
	}
	*got = true;
	more = fn(userdata, i + 1, chunk, n);
	OPENSSL_cleanse(chunk, sizeof(chunk));
	return more;
}

int hs_os_run(char *const argv[], long timeout_ms, hs_os_output_fn fn, void *userdata,
              struct hs_os_exit *exit)
{
	int64_t deadline = hs_os_monotonic_us() + (int64_t)timeout_ms * 1000;
	SECURITY_ATTRIBUTES sa = {.nLength = sizeof(sa), .bInheritHandle = TRUE};
	STARTUPINFOW si = {.cb = sizeof(si), .dwFlags = STARTF_USESTDHANDLES};
	PROCESS_INFORMATION pi = {0};
	HANDLE pipes[2] = {NULL, NULL}, writers[2] = {NULL, NULL}, nul;
	char line[32768] = "";
	wchar_t *wline = NULL;
	DWORD code = 0;
	int e = 0;

	*exit = (struct hs_os_exit){.code = -1};
	if (os_is_batch(argv[0]))
		return EINVAL;
	for (int i = 0; argv[i] != NULL; i++)
		os_quote_arg(line, sizeof(line), argv[i]);
	nul = CreateFileW(L"NUL", GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE, &sa,
	                  OPEN_EXISTING, 0, NULL);
	if (nul == INVALID_HANDLE_VALUE || !os_pipe(&pipes[0], &writers[0]) ||
	    !os_pipe(&pipes[1], &writers[1]) || (wline = os_wide(line)) == NULL) {
		e = os_errno(GetLastError());
		goto out;
	}
	si.hStdInput = nul;
	si.hStdOutput = writers[0];
	si.hStdError = writers[1];
	if (!CreateProcessW(NULL, wline, NULL, NULL, TRUE, CREATE_NO_WINDOW, NULL, NULL, &si,
	                    &pi)) {
		e = os_errno(GetLastError());
		goto out;
	}
	/* Our copies of the write ends go, so that EOF shows when the child ends. */
	for (int i = 0; i < 2; i++) {
		CloseHandle(writers[i]);
		writers[i] = NULL;
	}
	while ((pipes[0] != NULL || pipes[1] != NULL) && !exit->stopped) {
		bool got = false;

		if (hs_os_monotonic_us() >= deadline) {
			exit->timed_out = true;
			break;
		}
		for (int i = 0; i < 2 && !exit->stopped; i++)
			if (pipes[i] != NULL)
				exit->stopped = !os_drain(pipes, i, fn, userdata, &got);
		if (!got)
			WaitForSingleObject(pi.hProcess, 10);
	}
	if (pipes[0] != NULL || pipes[1] != NULL)
		TerminateProcess(pi.hProcess, 1); /* our own child, stuck or too chatty */
	WaitForSingleObject(pi.hProcess, INFINITE);
	if (GetExitCodeProcess(pi.hProcess, &code))
		exit->code = (int)code;
	CloseHandle(pi.hProcess);
	CloseHandle(pi.hThread);
out:
	for (int i = 0; i < 2; i++) {
		if (pipes[i] != NULL)
			CloseHandle(pipes[i]);
		if (writers[i] != NULL)
			CloseHandle(writers[i]);
	}
	if (nul != INVALID_HANDLE_VALUE)
		CloseHandle(nul);
	free(wline);
	return e;
}

/* --- dynamic loading --------------------------------------------------- */

void *hs_os_dlopen(const char *path, char *why, size_t why_size)
{
	wchar_t *w = os_wide(path);
	HMODULE lib = NULL;
	DWORD e;
	char text[256] = "";

	if (w != NULL) {
		/* Dependencies are looked up next to the module first. */
		lib = LoadLibraryExW(w, NULL, LOAD_WITH_ALTERED_SEARCH_PATH);
		free(w);
	}
	if (lib == NULL) {
		e = GetLastError();
		FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, e,
		               0, text, sizeof(text), NULL);
		text[strcspn(text, "\r\n")] = '\0';
		snprintf(why, why_size, "%s: %s (error %lu)", path,
		         text[0] ? text : "LoadLibrary failed", (unsigned long)e);
	}
	return (void *)lib;
}

void *hs_os_dlsym(void *lib, const char *name)
{
	FARPROC f = GetProcAddress((HMODULE)lib, name);
	void *p;

	/* Function and object pointers have the same size on Windows. */
	memcpy(&p, &f, sizeof(p));
	return p;
}

void hs_os_dlclose(void *lib)
{
	FreeLibrary((HMODULE)lib);
}

/* --- terminal ---------------------------------------------------------- */

bool hs_os_isatty(int fd)
{
	return _isatty(fd) != 0;
}

/* Reads one line from the console into w (NUL-terminated). */
static void os_read_console_line(HANDLE in, wchar_t *w, size_t size)
{
	size_t n = 0;
	wchar_t c;
	DWORD got;

	while (ReadConsoleW(in, &c, 1, &got, NULL) && got == 1 && c != L'\r' && c != L'\n')
		if (n + 1 < size)
			w[n++] = c;
	w[n] = L'\0';
	c = 0;
}

int hs_os_read_secret(const char *prompt, char *buf, size_t size)
{
	HANDLE in = CreateFileW(L"CONIN$", GENERIC_READ | GENERIC_WRITE,
	                        FILE_SHARE_READ | FILE_SHARE_WRITE, NULL, OPEN_EXISTING, 0, NULL);
	HANDLE out = CreateFileW(L"CONOUT$", GENERIC_READ | GENERIC_WRITE,
	                         FILE_SHARE_READ | FILE_SHARE_WRITE, NULL, OPEN_EXISTING, 0, NULL);
	wchar_t line[512], *wprompt = os_wide(prompt);
	DWORD mode = 0, put;
	bool restore;
	int r = -1;

	if (in == INVALID_HANDLE_VALUE || out == INVALID_HANDLE_VALUE || wprompt == NULL ||
	    size == 0)
		goto out;
	buf[0] = '\0';
	restore = GetConsoleMode(in, &mode) != 0;
	if (restore)
		SetConsoleMode(in, (mode & ~(DWORD)ENABLE_ECHO_INPUT) | ENABLE_LINE_INPUT |
		                           ENABLE_PROCESSED_INPUT);
	WriteConsoleW(out, wprompt, (DWORD)wcslen(wprompt), &put, NULL);
	os_read_console_line(in, line, sizeof(line) / sizeof(line[0]));
	if (restore)
		SetConsoleMode(in, mode);
	WriteConsoleW(out, L"\r\n", 2, &put, NULL);
	if (WideCharToMultiByte(CP_UTF8, 0, line, -1, buf, (int)(size > INT_MAX ? INT_MAX : size),
	                        NULL, NULL) == 0)
		buf[0] = '\0'; /* longer than buf: treated as no answer */
	SecureZeroMemory(line, sizeof(line));
	r = 0;
out:
	if (in != INVALID_HANDLE_VALUE)
		CloseHandle(in);
	if (out != INVALID_HANDLE_VALUE)
		CloseHandle(out);
	free(wprompt);
	return r;
}

/* --- signals and process hardening ------------------------------------- */

static volatile sig_atomic_t *os_interrupt_flag;
static volatile LONG os_interrupted;

/* Runs on a thread of its own: the first Ctrl+C/Ctrl+Break only sets the
 * flag; the next one gets the default handling (the process ends). */
static BOOL WINAPI os_on_ctrl(DWORD type)
{
	if (type != CTRL_C_EVENT && type != CTRL_BREAK_EVENT && type != CTRL_CLOSE_EVENT)
		return FALSE;
	if (os_interrupt_flag == NULL || InterlockedExchange(&os_interrupted, 1) != 0)
		return FALSE;
	__atomic_store_n(os_interrupt_flag, 1, __ATOMIC_RELAXED); /* read by other threads */
	return TRUE;
}

void hs_os_on_interrupt(volatile sig_atomic_t *flag)
{
	if (flag == NULL) {
		SetConsoleCtrlHandler(os_on_ctrl, FALSE);
		os_interrupt_flag = NULL;
		return;
	}
	os_interrupt_flag = flag;
	InterlockedExchange(&os_interrupted, 0);
	SetConsoleCtrlHandler(os_on_ctrl, TRUE);
}

void hs_os_harden(void)
{
	/* No error dialogs that would hang an unattended build. Crash dumps
	 * are Windows Error Reporting's, governed by system policy; there is
	 * no per-process core limit, and no SIGXFSZ. */
	SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX | SEM_NOOPENFILEERRORBOX);
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
