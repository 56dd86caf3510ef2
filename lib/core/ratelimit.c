/* ratelimit.c - token bucket for client-side throttling (ratelimit.h). */
#include <stdio.h>
#include <string.h>

#include "platform.h"
#include "ratelimit.h"

/* Named buckets (one per TSA URL): few services per process, so a small
 * static table, never freed. */
#define RL_SHARED_MAX 32
#define RL_NAME_MAX   512

static struct {
	char name[RL_NAME_MAX];
	struct hs_ratelimit rl;
} rl_shared[RL_SHARED_MAX];
static int rl_n_shared;
static pthread_mutex_t rl_shared_lock = PTHREAD_MUTEX_INITIALIZER;

static long long rl_now_us(void)
{
	return (long long)hs_os_monotonic_us();
}

static void rl_sleep_us(long long us)
{
	hs_os_sleep_us((int64_t)us);
}

int hs_ratelimit_init(struct hs_ratelimit *rl, double rate, double burst)
{
	rl->rate = rate;
	rl->burst = burst >= 1.0 ? burst : 1.0;
	rl->tokens = rl->burst;
	rl->last_us = rl_now_us();
	rl->waits = 0;
	return pthread_mutex_init(&rl->lock, NULL) == 0 ? 0 : -1;
}

void hs_ratelimit_destroy(struct hs_ratelimit *rl)
{
	if (rl != NULL)
		pthread_mutex_destroy(&rl->lock);
}

void hs_ratelimit_acquire(struct hs_ratelimit *rl)
{
	long long now, wait_us = 0;

	if (rl == NULL || rl->rate <= 0)
		return;
	pthread_mutex_lock(&rl->lock);
	now = rl_now_us();
	rl->tokens += (double)(now - rl->last_us) * rl->rate / 1e6;
	if (rl->tokens > rl->burst)
		rl->tokens = rl->burst;
	rl->last_us = now;
	/* Reserve now, wait after unlocking: later callers queue behind us. */
	rl->tokens -= 1.0;
	if (rl->tokens < 0) {
		wait_us = (long long)(-rl->tokens * 1e6 / rl->rate);
		rl->waits++;
	}
	pthread_mutex_unlock(&rl->lock);
	if (wait_us > 0)
		rl_sleep_us(wait_us);
}

struct hs_ratelimit *hs_ratelimit_shared(const char *name, double rate)
{
	struct hs_ratelimit *rl = NULL;
	int i;

	if (rate <= 0 || strlen(name) >= RL_NAME_MAX)
		return NULL;
	pthread_mutex_lock(&rl_shared_lock);
	for (i = 0; i < rl_n_shared && strcmp(rl_shared[i].name, name) != 0; i++)
		;
	if (i < rl_n_shared) {
		rl = &rl_shared[i].rl;
	} else if (rl_n_shared < RL_SHARED_MAX &&
	           hs_ratelimit_init(&rl_shared[i].rl, rate, rate / 10) == 0) {
		snprintf(rl_shared[i].name, RL_NAME_MAX, "%s", name);
		rl = &rl_shared[rl_n_shared++].rl;
	}
	pthread_mutex_unlock(&rl_shared_lock);
	return rl;
}
