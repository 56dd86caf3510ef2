/*
 * metrics.c - Prometheus text exposition for `hsmsign serve` (/metrics):
 * requests by route and status, sign latency histogram per key, queue
 * depth per key, authentication failures by reason. Label values come from
 * fixed route names, configured key names and a short list of reasons, so
 * the series stay few.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve_int.h"

#define METRICS_MAX_SERIES 256

static const double hist_bounds[SERVE_HIST_BUCKETS] = {5,   10,   25,   50,   100,   250,
                                                       500, 1000, 2500, 5000, 10000, 30000};

struct metric_req {
	char route[32];
	int status;
	unsigned long long count;
};
struct metric_auth {
	char reason[32];
	unsigned long long count;
};
struct metric_hist {
	char key[128];
	unsigned long long buckets[SERVE_HIST_BUCKETS];
	unsigned long long count;
	double sum_s;
};

struct serve_metrics {
	pthread_mutex_t lock;
	struct metric_req req[METRICS_MAX_SERIES];
	size_t n_req;
	struct metric_auth auth[32];
	size_t n_auth;
	struct metric_hist hist[METRICS_MAX_SERIES];
	size_t n_hist;
};

int serve_metrics_new(struct serve_metrics **out)
{
	struct serve_metrics *m = calloc(1, sizeof(*m));

	*out = m;
	if (m == NULL)
		return HS_ERR_NOMEM;
	pthread_mutex_init(&m->lock, NULL);
	return 0;
}

void serve_metrics_free(struct serve_metrics *m)
{
	if (m == NULL)
		return;
	pthread_mutex_destroy(&m->lock);
	free(m);
}

void serve_metrics_request(struct serve_metrics *m, const char *route, int status)
{
	size_t i;

	pthread_mutex_lock(&m->lock);
	for (i = 0; i < m->n_req; i++)
		if (m->req[i].status == status && strcmp(m->req[i].route, route) == 0)
			break;
	if (i == m->n_req && m->n_req < METRICS_MAX_SERIES) {
		snprintf(m->req[i].route, sizeof(m->req[i].route), "%s", route);
		m->req[i].status = status;
		m->n_req++;
	}
	if (i < m->n_req)
		m->req[i].count++;
	pthread_mutex_unlock(&m->lock);
}

void serve_metrics_auth_failure(struct serve_metrics *m, const char *reason)
{
	size_t i;

	pthread_mutex_lock(&m->lock);
	for (i = 0; i < m->n_auth; i++)
		if (strcmp(m->auth[i].reason, reason) == 0)
			break;
	if (i == m->n_auth && m->n_auth < sizeof(m->auth) / sizeof(m->auth[0])) {
		snprintf(m->auth[i].reason, sizeof(m->auth[i].reason), "%s", reason);
		m->n_auth++;
	}
	if (i < m->n_auth)
		m->auth[i].count++;
	pthread_mutex_unlock(&m->lock);
}

void serve_metrics_sign(struct serve_metrics *m, const char *key, double ms)
{
	size_t i;

	pthread_mutex_lock(&m->lock);
	for (i = 0; i < m->n_hist; i++)
		if (strcmp(m->hist[i].key, key) == 0)
			break;
	if (i == m->n_hist && m->n_hist < METRICS_MAX_SERIES) {
		snprintf(m->hist[i].key, sizeof(m->hist[i].key), "%s", key);
		m->n_hist++;
	}
	if (i < m->n_hist) {
		struct metric_hist *h = &m->hist[i];

		for (int b = 0; b < SERVE_HIST_BUCKETS; b++)
			if (ms <= hist_bounds[b])
				h->buckets[b]++;
		h->count++;
		h->sum_s += ms / 1000.0;
	}
	pthread_mutex_unlock(&m->lock);
}

char *serve_metrics_render(struct serve_metrics *m, const struct serve_keyring *ring)
{
	struct hs_buf out = {0};
	char line[512];
	int n;

#define EMIT(...)                                                                                  \
	do {                                                                                       \
		n = snprintf(line, sizeof(line), __VA_ARGS__);                                     \
		if (n > 0)                                                                         \
			hs_buf_append(&out, line,                                                  \
			              (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);    \
	} while (0)

	pthread_mutex_lock(&m->lock);
	EMIT("# HELP hsmsign_requests_total HTTP requests by route and status.\n"
	     "# TYPE hsmsign_requests_total counter\n");
	for (size_t i = 0; i < m->n_req; i++)
		EMIT("hsmsign_requests_total{route=\"%s\",status=\"%d\"} %llu\n", m->req[i].route,
		     m->req[i].status, m->req[i].count);
	EMIT("# HELP hsmsign_auth_failures_total Rejected credentials by reason.\n"
	     "# TYPE hsmsign_auth_failures_total counter\n");
	for (size_t i = 0; i < m->n_auth; i++)
		EMIT("hsmsign_auth_failures_total{reason=\"%s\"} %llu\n", m->auth[i].reason,
		     m->auth[i].count);
	EMIT("# HELP hsmsign_sign_duration_seconds Time a key took to sign.\n"
	     "# TYPE hsmsign_sign_duration_seconds histogram\n");
	for (size_t i = 0; i < m->n_hist; i++) {
		const struct metric_hist *h = &m->hist[i];

		for (int b = 0; b < SERVE_HIST_BUCKETS; b++)
			EMIT("hsmsign_sign_duration_seconds_bucket{key=\"%s\",le=\"%g\"} %llu\n",
			     h->key, hist_bounds[b] / 1000.0, h->buckets[b]);
		EMIT("hsmsign_sign_duration_seconds_bucket{key=\"%s\",le=\"+Inf\"} %llu\n", h->key,
		     h->count);
		EMIT("hsmsign_sign_duration_seconds_sum{key=\"%s\"} %.6f\n", h->key, h->sum_s);
		EMIT("hsmsign_sign_duration_seconds_count{key=\"%s\"} %llu\n", h->key, h->count);
	}
	pthread_mutex_unlock(&m->lock);
	EMIT("# HELP hsmsign_queue_depth Sign requests waiting for their key.\n"
	     "# TYPE hsmsign_queue_depth gauge\n");
	for (size_t i = 0; ring != NULL && i < ring->n; i++)
		EMIT("hsmsign_queue_depth{key=\"%s\"} %zu\n", ring->keys[i].name,
		     serve_key_depth(&ring->keys[i]));
#undef EMIT
	if (hs_buf_append(&out, "", 1) < 0) {
		hs_buf_free(&out);
		return NULL;
	}
	return (char *)out.data;
}
