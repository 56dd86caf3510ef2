/*
 * scripted_server.h - a scripted HTTP/1.1 server on 127.0.0.1 for the unit tests.
 *
 * One request per connection: each request (headers + Content-Length body) is
 * recorded and answered with the next reply of the script; once the script is
 * exhausted, every request gets a 500. A reply may require a request header,
 * and answers IMDS's 400 when the request lacks it.
 *
 * Also a log sink for hs_ctx_set_log() that collects the library's log lines,
 * so that tests can check what was (and was not) logged.
 */
#ifndef HS_TEST_SCRIPTED_SERVER_H
#define HS_TEST_SCRIPTED_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "hsmsign.h"

#define SRV_MAX_REQ 64

struct srv_reply {
	int status;          /* 0: close without answering; -1: reset (RST) */
	const char *headers; /* extra "Name: value\r\n" lines, or NULL */
	const char *body;    /* or NULL */
	size_t big;          /* > 0: a body of this many bytes instead */
	const char *require; /* a header line (case-insensitive) the request must carry, else
	                      * IMDS's 400; or NULL */
};

struct srv_request {
	char method[16];
	char target[2048];
	char headers[4096];
	char body[8192];
};

struct srv {
	int fd;
	int port;
	pthread_t thread;
	const struct srv_reply *script;
	size_t n_script;
	size_t next;
	struct srv_request reqs[SRV_MAX_REQ];
	size_t n_reqs;
	atomic_int stop; /* set by srv_stop() on the test thread */
};

/* Whether hay contains needle, ignoring case. */
bool srv_ci_contains(const char *hay, const char *needle);

/* Starts a server answering with the n replies of script (which must outlive it). */
struct srv *srv_start(const struct srv_reply *script, size_t n);
void srv_stop(struct srv *s);

/* "http://127.0.0.1:<port><path>", in a static buffer. */
char *srv_url(const struct srv *s, const char *path);

/* A port on which nothing listens. */
int closed_port(void);

/* The log lines captured so far, one per line; tests reset it with log_text[0] = '\0'. */
extern char log_text[65536];

/* An hs_log_fn appending msg and a newline to log_text. */
void log_capture(enum hs_log_level level, const char *msg, void *userdata);

#endif
