/* fuzz_util.h - helpers shared by the libFuzzer harnesses. */
#ifndef HS_FUZZ_UTIL_H
#define HS_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

/*
 * Puts data into an anonymous in-memory file and writes its /proc path to
 * path: the library opens inputs by path, and memfd keeps the harness off the
 * disk. Returns the fd (close it after use) or -1.
 */
static inline int fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t path_len)
{
	int fd = memfd_create("hsmsign-fuzz", MFD_CLOEXEC);
	size_t off = 0;

	if (fd < 0)
		return -1;
	while (off < size) {
		ssize_t n = write(fd, data + off, size - off);
		if (n <= 0) {
			close(fd);
			return -1;
		}
		off += (size_t)n;
	}
	snprintf(path, path_len, "/proc/self/fd/%d", fd);
	return fd;
}

#endif /* HS_FUZZ_UTIL_H */
