/* scripted_server.c - a scripted HTTP/1.1 server on 127.0.0.1 for the unit tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "scripted_server.h"

static const char *srv_ci_find(const char *hay, const char *needle)
{
	size_t n = strlen(needle);

	for (; *hay; hay++)
		if (strncasecmp(hay, needle, n) == 0)
			return hay;
	return NULL;
}

bool srv_ci_contains(const char *hay, const char *needle)
{
	return srv_ci_find(hay, needle) != NULL;
}

/* Reads one request (headers + Content-Length body) into rq; false on EOF. */
static bool srv_read_request(int c, struct srv_request *rq)
{
	static char buf[65536];
	size_t len = 0, head_len, body_len = 0;
	char *end = NULL;
	const char *cl;
	ssize_t n;

	while (end == NULL || len < head_len + body_len) {
		if (len == sizeof(buf) - 1)
			return false;
		n = read(c, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			return false;
		len += (size_t)n;
		buf[len] = '\0';
		if (end == NULL && (end = strstr(buf, "\r\n\r\n")) != NULL) {
			head_len = (size_t)(end - buf) + 4;
			*end = '\0';
			cl = srv_ci_find(buf, "\r\nContent-Length:");
			body_len = cl ? strtoul(cl + 17, NULL, 10) : 0;
			*end = '\r';
		}
	}
	sscanf(buf, "%15s %2047s", rq->method, rq->target);
	snprintf(rq->headers, sizeof(rq->headers), "%.*s", (int)(head_len - 4), buf);
	snprintf(rq->body, sizeof(rq->body), "%.*s", (int)body_len, buf + head_len);
	return true;
}

static void srv_write_all(int c, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0 && (w = send(c, p, n, MSG_NOSIGNAL)) > 0) {
		p += w;
		n -= (size_t)w;
	}
}

static void srv_answer(int c, const struct srv_reply *rp)
{
	char head[4096], chunk[65536];
	size_t body_len = rp->big ? rp->big : rp->body ? strlen(rp->body) : 0;
	struct linger lg = {1, 0};

	if (rp->status == -1)
		setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	if (rp->status <= 0)
		return;
	snprintf(head, sizeof(head),
	         "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n", rp->status,
	         body_len, rp->headers ? rp->headers : "");
	srv_write_all(c, head, strlen(head));
	if (rp->big) {
		memset(chunk, 'x', sizeof(chunk));
		for (size_t sent = 0; sent < rp->big; sent += sizeof(chunk))
			srv_write_all(c, chunk, sizeof(chunk));
	} else if (rp->body) {
		srv_write_all(c, rp->body, body_len);
	}
}

static void *srv_main(void *arg)
{
	static const struct srv_reply exhausted = {500, NULL, "{\"error\":\"script exhausted\"}", 0,
	                                           NULL};
	static const struct srv_reply missing_header = {
	        400, NULL,
	        "{\"error\":\"invalid_request\",\"error_description\":\"Required metadata header "
	        "not "
	        "specified\"}",
	        0, NULL};
	struct srv *s = arg;
	struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
	struct srv_request rq;
	int c;

	while (!atomic_load(&s->stop)) {
		if (poll(&pfd, 1, 50) <= 0)
			continue;
		if ((c = accept(s->fd, NULL, NULL)) < 0)
			continue;
		memset(&rq, 0, sizeof(rq));
		if (srv_read_request(c, &rq)) {
			if (s->n_reqs < SRV_MAX_REQ)
				s->reqs[s->n_reqs++] = rq;
			if (s->next < s->n_script && s->script[s->next].require != NULL &&
			    !srv_ci_contains(rq.headers, s->script[s->next].require))
				srv_answer(c, &missing_header);
			else
				srv_answer(c, s->next < s->n_script ? &s->script[s->next++]
				                                    : &exhausted);
		}
		close(c);
	}
	return NULL;
}

struct srv *srv_start(const struct srv_reply *script, size_t n)
{
	struct srv *s = calloc(1, sizeof(*s));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);

	assert_non_null(s);
	s->script = script;
	s->n_script = n;
	s->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s->fd >= 0);
	assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->fd, 16), 0);
	assert_int_equal(getsockname(s->fd, (struct sockaddr *)&a, &alen), 0);
	s->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
	return s;
}

void srv_stop(struct srv *s)
{
	atomic_store(&s->stop, 1);
	pthread_join(s->thread, NULL);
	close(s->fd);
	free(s);
}

char *srv_url(const struct srv *s, const char *path)
{
	static char url[256];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", s->port, path);
	return url;
}

int closed_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
	close(fd);
	return ntohs(a.sin_port);
}

char log_text[65536];

void log_capture(enum hs_log_level level, const char *msg, void *userdata)
{
	size_t n = strlen(log_text);

	snprintf(log_text + n, sizeof(log_text) - n, "%s\n", msg);
}
