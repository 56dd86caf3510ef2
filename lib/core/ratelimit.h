/*
 * ratelimit.h - a client-side token bucket shared by threads, so that
 * concurrent requests to one service stay below its documented limits
 * (Key Vault counts transactions per 10 s; Managed HSM per second).
 */
#ifndef HS_RATELIMIT_H
#define HS_RATELIMIT_H

#include <pthread.h>

struct hs_ratelimit {
	pthread_mutex_t lock;
	double rate;         /* tokens per second; <= 0: unlimited */
	double burst;        /* bucket size */
	double tokens;       /* may go negative: reservations waiting */
	long long last_us;   /* monotonic time of the last refill */
	unsigned long waits; /* acquisitions that had to wait */
};

/* Initialises a bucket that starts full. rate <= 0 disables it. */
int hs_ratelimit_init(struct hs_ratelimit *rl, double rate, double burst);
void hs_ratelimit_destroy(struct hs_ratelimit *rl);
/* Takes one token, sleeping until it is due; safe from many threads.
 * Fair in arrival order: each caller reserves its slot under the lock and
 * sleeps outside it. NULL or a disabled bucket returns at once. */
void hs_ratelimit_acquire(struct hs_ratelimit *rl);

/* The process-wide bucket named `name` (a service URL), created with rate
 * (and a 100 ms burst) on first use; later rates for the same name are
 * ignored. NULL (no limit) when rate <= 0 or the table is full. */
struct hs_ratelimit *hs_ratelimit_shared(const char *name, double rate);

#endif /* HS_RATELIMIT_H */
