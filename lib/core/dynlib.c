/* dynlib.c - libraries loaded on first use (dynlib.h). */
#include <stdio.h>

#include "core.h"
#include "dynlib.h"
#include "platform.h"

bool hs_dynlib_load(struct hs_dynlib_state *st, void (*load)(void), char *why, size_t why_size)
{
	pthread_once(&st->once, load);
	if (!st->loaded && why != NULL && why_size > 0)
		snprintf(why, why_size, "%s", st->why);
	return st->loaded;
}

void *hs_dynlib_open(const char *soname, const char *fault_point, char *why, size_t why_size)
{
	if (fault_point != NULL && hs_fault(fault_point))
		soname = "libhsmsign-fault-injected.so.0";
	return hs_os_dlopen(soname, why, why_size);
}

void *hs_dynlib_sym(void *lib, const char *soname, const char *name, char *why, size_t why_size)
{
	void *sym = hs_os_dlsym(lib, name);

	if (sym == NULL)
		snprintf(why, why_size, "%s has no %s (too old a version?)", soname, name);
	return sym;
}
