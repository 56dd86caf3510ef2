/*
 * kv_bench_server.c - the Key Vault server of bench/many-files, in C.
 *
 * bench/kv_bench_server.py serves the same routes on Python's asyncio. On
 * this project's two-core build machine it answered a "30 ms" sign call
 * after 31.1-31.7 ms by its own clock (asyncio waits in whole
 * milliseconds and shares the cores with the client), and spent more time
 * again reading and writing through Python's TLS layer: together some 10 %
 * of the 1,000-file benchmark's ideal went to the server, not the client.
 * This server holds each response until exactly `latency` after the request
 * arrived (a timerfd, nanoseconds), on one epoll loop with non-blocking
 * OpenSSL, so that what the benchmark measures beyond the ideal is the
 * client's. Written here rather than taken from a library: it is bench
 * infrastructure of ~500 lines on what hsmsign already has (OpenSSL,
 * jansson, libhsmsign's base64), and no packaged server injects latency
 * per call.
 *
 * It serves, on 127.0.0.1 only (the same routes and JSON as the Python one):
 *   POST /{tenant}/oauth2/v2.0/token        a bearer token (any secret)
 *   GET  /certificates/{name}[/{version}]   401 challenge without the token,
 *                                           else {"id", "kid", "cer"}
 *   POST /keys/{name}/{version}/sign        ES256 over the posted digest
 *   GET  /_bench/stats, POST /_bench/reset, POST /_bench/config?latency_ms=N
 * Every route but /_bench is answered `latency` after its request arrived.
 *
 * Usage: kv_bench_server --state-dir DIR --tls-cert PEM --tls-key PEM
 *                        --sign-key PEM --sign-cert PEM [--behind URL]
 * With --behind it speaks plain HTTP for a TLS front end whose public URL is
 * URL (bench/many-files --h2 runs nginx). Prints one JSON line
 * {"https", "http", "tls_ca", "tenant", "client_secret_file"} when ready;
 * exits when stdin closes. Linux only (epoll, timerfd). Benchmark only: no
 * authorisation beyond the bearer token, HTTP/1.1 without pipelining.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "core/codec.h"

#define TENANT     "72f988bf-86f1-41af-91ab-2d7cd011db47"
#define RESOURCE   "https://vault.azure.net"
#define IN_MAX     (64 * 1024) /* one request's head and body */
#define MAX_EVENTS 64

struct conn {
	int fd;
	SSL *ssl; /* NULL: plain HTTP */
	bool handshaken;
	char in[IN_MAX];
	size_t in_len;
	size_t req_len; /* bytes of `in` the current request takes; 0: none */
	char *out;      /* the response, once built */
	size_t out_len, out_off;
	bool held;    /* waiting for its deadline */
	bool writing; /* released, being written */
	bool close_after;
	bool is_sign;
	double arrived, deadline;
	struct conn *next_held;   /* the queue of held responses, by deadline */
	struct conn *prev, *next; /* every connection (srv.conns) */
	bool dead;                /* closed; freed after this round of events */
};

static struct {
	int ep, tfd, lfd;
	SSL_CTX *tls;
	EVP_PKEY *sign_key;
	char *cer_b64; /* the signing certificate, DER in base64 */
	char base[128], token[65];
	double latency;
	struct conn *held_head, *held_tail;
	struct conn *conns, *dead; /* open; closed, to free (the `next` links) */
	struct {
		long sign, cert_get, cert_get_unauth, token, connections, requests, in_flight,
		        peak_in_flight, other;
		double sign_seconds;
	} st;
} srv;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "kv_bench_server: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

/* ------------------------------------------------------------ encoding */

/* base64 (url: base64url without padding) as a NUL-terminated string,
 * with the project's codec (lib/core/codec.c). */
static char *b64(const unsigned char *data, size_t len, bool url)
{
	struct hs_buf out = {0};

	if (hs_base64_encode(&out, data, len, url) < 0 || hs_buf_append(&out, "", 1) < 0)
		die("out of memory");
	return (char *)out.data;
}

/* Decodes base64url into out (at most cap bytes); -1 if invalid. */
static int b64url_decode(const char *text, unsigned char *out, size_t cap)
{
	struct hs_buf buf = {0};
	int n = -1;

	if (hs_base64_decode(&buf, text, strlen(text)) == 0 && buf.len <= cap) {
		memcpy(out, buf.data, buf.len);
		n = (int)buf.len;
	}
	hs_buf_free(&buf);
	return n;
}

/* ------------------------------------------------------------- routes */

struct reply {
	int status;
	char extra[512]; /* extra header lines, each ending in \r\n */
	char *body;      /* JSON, malloc'd */
};

static char *json_text(json_t *obj)
{
	char *s = json_dumps(obj, JSON_COMPACT);

	json_decref(obj);
	if (s == NULL)
		die("out of memory");
	return s;
}

static void reply_error(struct reply *r, int status, const char *code, const char *message)
{
	r->status = status;
	r->body = json_text(json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message));
}

static void route_sign(struct reply *r, const char *name, const char *body, size_t body_len)
{
	json_t *req = json_loadb(body, body_len, 0, NULL);
	const char *alg = NULL, *value = NULL;
	unsigned char digest[64], *der = NULL, raw[64];
	size_t der_len = 0;
	const unsigned char *p;
	ECDSA_SIG *sig = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	char kid[256], *sig_b64;
	int n;

	if (req == NULL || json_unpack(req, "{s:s,s:s}", "alg", &alg, "value", &value) != 0 ||
	    (n = b64url_decode(value, digest, sizeof(digest))) < 0) {
		reply_error(r, 400, "BadParameter", "bad body");
		goto out;
	}
	if (strcmp(alg, "ES256") != 0 || n != 32) {
		reply_error(r, 400, "BadParameter", "this server signs ES256 only");
		goto out;
	}
	srv.st.sign++;
	if ((pctx = EVP_PKEY_CTX_new(srv.sign_key, NULL)) == NULL ||
	    EVP_PKEY_sign_init(pctx) <= 0 ||
	    EVP_PKEY_CTX_set_signature_md(pctx, EVP_sha256()) <= 0 ||
	    EVP_PKEY_sign(pctx, NULL, &der_len, digest, 32) <= 0 ||
	    (der = OPENSSL_malloc(der_len)) == NULL ||
	    EVP_PKEY_sign(pctx, der, &der_len, digest, 32) <= 0)
		die("ECDSA signing failed");
	p = der;
	if ((sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len)) == NULL ||
	    BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, 32) != 32 ||
	    BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + 32, 32) != 32)
		die("cannot convert the signature");
	snprintf(kid, sizeof(kid), "%s/keys/%s/v1", srv.base, name);
	sig_b64 = b64(raw, 64, true);
	r->status = 200;
	r->body = json_text(json_pack("{s:s,s:s}", "kid", kid, "value", sig_b64));
	free(sig_b64);
out:
	ECDSA_SIG_free(sig);
	OPENSSL_free(der);
	EVP_PKEY_CTX_free(pctx);
	json_decref(req);
}

static void route_bench(struct reply *r, const char *method, const char *what, const char *query)
{
	const char *lat;

	r->status = 200;
	if (strcmp(what, "stats") == 0) {
		r->body = json_text(json_pack(
		        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f}", "sign",
		        (json_int_t)srv.st.sign, "cert_get", (json_int_t)srv.st.cert_get,
		        "cert_get_unauth", (json_int_t)srv.st.cert_get_unauth, "token",
		        (json_int_t)srv.st.token, "connections", (json_int_t)srv.st.connections,
		        "requests", (json_int_t)srv.st.requests, "in_flight",
		        (json_int_t)srv.st.in_flight, "peak_in_flight",
		        (json_int_t)srv.st.peak_in_flight, "other", (json_int_t)srv.st.other,
		        "sign_seconds", srv.st.sign_seconds));
	} else if (strcmp(method, "POST") == 0 && strcmp(what, "reset") == 0) {
		long in_flight = srv.st.in_flight;

		memset(&srv.st, 0, sizeof(srv.st));
		srv.st.in_flight = in_flight;
		r->body = json_text(json_object());
	} else if (strcmp(method, "POST") == 0 && strcmp(what, "config") == 0 &&
	           (lat = strstr(query, "latency_ms=")) != NULL) {
		srv.latency = strtod(lat + strlen("latency_ms="), NULL) / 1000.0;
		r->body = json_text(json_object());
	} else {
		reply_error(r, 404, "NotFound", "no such route");
	}
}

/* Splits path into at most 5 segments (in place); returns their number. */
static int split_path(char *path, char *seg[5])
{
	int n = 0;

	for (char *s = strtok(path, "/"); s != NULL; s = strtok(NULL, "/"))
		if (n < 5)
			seg[n++] = s;
		else
			return 6;
	return n;
}

static void route(struct reply *r, const char *method, char *target, const char *auth,
                  const char *body, size_t body_len)
{
	char *query = strchr(target, '?'), *seg[5];
	char bearer[80], challenge[320];
	int n;

	if (query != NULL)
		*query++ = '\0';
	n = split_path(target, seg);
	snprintf(bearer, sizeof(bearer), "Bearer %s", srv.token);
	if (strcmp(method, "POST") == 0 && n == 4 && strcmp(seg[1], "oauth2") == 0 &&
	    strcmp(seg[2], "v2.0") == 0 && strcmp(seg[3], "token") == 0) {
		srv.st.token++;
		r->status = 200;
		r->body = json_text(json_pack("{s:s,s:i,s:i,s:s}", "token_type", "Bearer",
		                              "expires_in", 3600, "ext_expires_in", 3600,
		                              "access_token", srv.token));
		return;
	}
	if (n >= 1 && strcmp(seg[0], "_bench") == 0) {
		route_bench(r, method, n == 2 ? seg[1] : "", query ? query : "");
		return;
	}
	if (n >= 1 && (strcmp(seg[0], "certificates") == 0 || strcmp(seg[0], "keys") == 0) &&
	    (auth == NULL || strcmp(auth, bearer) != 0)) {
		if (strcmp(seg[0], "certificates") == 0)
			srv.st.cert_get_unauth++;
		snprintf(challenge, sizeof(challenge),
		         "WWW-Authenticate: Bearer authorization=\"%s/%s\", resource=\"%s\"\r\n",
		         srv.base, TENANT, RESOURCE);
		snprintf(r->extra, sizeof(r->extra), "%s", challenge);
		reply_error(r, 401, "Unauthorized", "AKV10000: token required");
		return;
	}
	if (strcmp(method, "GET") == 0 && (n == 2 || n == 3) &&
	    strcmp(seg[0], "certificates") == 0) {
		char id[256], kid[256];

		srv.st.cert_get++;
		snprintf(id, sizeof(id), "%s/certificates/%s/v1", srv.base, seg[1]);
		snprintf(kid, sizeof(kid), "%s/keys/%s/v1", srv.base, seg[1]);
		r->status = 200;
		r->body = json_text(
		        json_pack("{s:s,s:s,s:s}", "id", id, "kid", kid, "cer", srv.cer_b64));
		return;
	}
	if (strcmp(method, "POST") == 0 && n == 4 && strcmp(seg[0], "keys") == 0 &&
	    strcmp(seg[3], "sign") == 0) {
		route_sign(r, seg[1], body, body_len);
		return;
	}
	srv.st.other++;
	reply_error(r, 404, "NotFound", "no such route");
}

/* --------------------------------------------------------- connections */

/* Closes c; the memory is freed by conn_reap() once no event of the
 * current round can refer to it any more. */
static void conn_close(struct conn *c)
{
	if (c->dead)
		return;
	if (c->held) /* unlink from the queue */
		for (struct conn **pp = &srv.held_head, *prev = NULL; *pp != NULL;
		     prev = *pp, pp = &(*pp)->next_held)
			if (*pp == c) {
				*pp = c->next_held;
				if (srv.held_tail == c)
					srv.held_tail = prev;
				srv.st.in_flight--;
				break;
			}
	epoll_ctl(srv.ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		srv.conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->dead = true;
	c->next = srv.dead;
	srv.dead = c;
}

static void conn_reap(void)
{
	while (srv.dead != NULL) {
		struct conn *c = srv.dead;

		srv.dead = c->next;
		SSL_free(c->ssl);
		free(c->out);
		free(c);
	}
}

static void arm_timer(void)
{
	struct itimerspec its = {0};

	if (srv.held_head != NULL) {
		double d = srv.held_head->deadline;

		its.it_value.tv_sec = (time_t)d;
		its.it_value.tv_nsec = (long)((d - (double)(time_t)d) * 1e9);
		if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
			its.it_value.tv_nsec = 1;
	}
	timerfd_settime(srv.tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Queues c's response until its deadline; the latency rarely changes, so
 * deadlines mostly arrive in order: insert from the tail. */
static void hold(struct conn *c)
{
	struct conn **pp = &srv.held_head;

	c->held = true;
	srv.st.in_flight++;
	if (srv.st.in_flight > srv.st.peak_in_flight)
		srv.st.peak_in_flight = srv.st.in_flight;
	if (srv.held_tail == NULL || srv.held_tail->deadline <= c->deadline) {
		c->next_held = NULL;
		if (srv.held_tail != NULL)
			srv.held_tail->next_held = c;
		else
			srv.held_head = c;
		srv.held_tail = c;
	} else {
		while ((*pp)->deadline <= c->deadline)
			pp = &(*pp)->next_held;
		c->next_held = *pp;
		*pp = c;
	}
	arm_timer();
}

static void conn_events(struct conn *c, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = c};

	epoll_ctl(srv.ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Parses the request at the start of c->in once all of it is there and
 * builds its response: 1 done (held or to write), 0 incomplete, -1 bad. */
static int conn_parse(struct conn *c)
{
	char head[16384], *line, *save, *auth = NULL, *end;
	char method[8], target[1024];
	size_t head_len, body_len = 0;
	bool close_after = false;
	struct reply r = {0};
	int n;

	end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
	if (end == NULL)
		return c->in_len < sizeof(head) ? 0 : -1;
	head_len = (size_t)(end - c->in) + 4;
	if (head_len >= sizeof(head))
		return -1;
	memcpy(head, c->in, head_len - 4);
	head[head_len - 4] = '\0';
	if (sscanf(head, "%7s %1023s", method, target) != 2)
		return -1;
	for (line = strtok_r(head, "\r\n", &save); line != NULL;
	     line = strtok_r(NULL, "\r\n", &save)) {
		if (strncasecmp(line, "content-length:", 15) == 0)
			body_len = strtoul(line + 15, NULL, 10);
		else if (strncasecmp(line, "authorization:", 14) == 0)
			auth = line + 14 + strspn(line + 14, " ");
		else if (strncasecmp(line, "connection:", 11) == 0 &&
		         strcasestr(line + 11, "close"))
			close_after = true;
	}
	if (body_len > IN_MAX - head_len)
		return -1;
	if (c->in_len < head_len + body_len)
		return 0;
	c->req_len = head_len + body_len;
	c->close_after = close_after;
	c->arrived = now_s();
	c->is_sign = strstr(target, "/sign") != NULL;
	srv.st.requests++;
	route(&r, method, target, auth, c->in + head_len, body_len);
	n = asprintf(&c->out,
	             "HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
	             "Content-Length: %zu\r\nConnection: %s\r\n%s\r\n%s",
	             r.status, r.status == 200 ? "OK" : "Error", strlen(r.body),
	             close_after ? "close" : "keep-alive", r.extra, r.body);
	free(r.body);
	if (n < 0)
		die("out of memory");
	c->out_len = (size_t)n;
	c->out_off = 0;
	if (srv.latency > 0 && strncmp(target, "/_bench", 7) != 0) {
		c->deadline = c->arrived + srv.latency;
		hold(c);
	} else {
		c->writing = true;
	}
	return 1;
}

/* Reads once: 1 got bytes, 0 nothing yet, -1 closed or failed. */
static int conn_fill(struct conn *c)
{
	int n;

	if (c->in_len == IN_MAX)
		return -1;
	if (c->ssl != NULL) {
		n = SSL_read(c->ssl, c->in + c->in_len, (int)(IN_MAX - c->in_len));
		if (n <= 0) {
			int e = SSL_get_error(c->ssl, n);

			ERR_clear_error();
			return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
		}
	} else {
		n = (int)read(c->fd, c->in + c->in_len, IN_MAX - c->in_len);
		if (n <= 0)
			return n < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
	}
	c->in_len += (size_t)n;
	return 1;
}

/* Writes the released response: 1 all written, 0 blocked, -1 failed. */
static int conn_flush(struct conn *c)
{
	while (c->out_off < c->out_len) {
		int n;

		if (c->ssl != NULL) {
			n = SSL_write(c->ssl, c->out + c->out_off, (int)(c->out_len - c->out_off));
			if (n <= 0) {
				int e = SSL_get_error(c->ssl, n);

				ERR_clear_error();
				return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? 0
				                                                             : -1;
			}
		} else {
			n = (int)write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
			if (n < 0)
				return errno == EAGAIN || errno == EINTR ? 0 : -1;
		}
		c->out_off += (size_t)n;
	}
	return 1;
}

/* Moves c on as far as it goes without waiting: handshake, read, parse,
 * write, next request. Its epoll interest follows what it waits for (none
 * while its response is held: the client sends nothing meanwhile).
 * False when the connection must close. */
static bool conn_progress(struct conn *c)
{
	for (;;) {
		int r;

		if (c->ssl != NULL && !c->handshaken) {
			r = SSL_accept(c->ssl);
			if (r != 1) {
				r = SSL_get_error(c->ssl, r);
				ERR_clear_error();
				if (r != SSL_ERROR_WANT_READ && r != SSL_ERROR_WANT_WRITE)
					return false;
				conn_events(c, r == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT);
				return true;
			}
			c->handshaken = true;
		}
		if (c->held) {
			conn_events(c, 0);
			return true;
		}
		if (c->writing) {
			if ((r = conn_flush(c)) <= 0) {
				conn_events(c, EPOLLOUT);
				return r == 0;
			}
			if (c->is_sign)
				srv.st.sign_seconds += now_s() - c->arrived;
			free(c->out);
			c->out = NULL;
			c->writing = false;
			if (c->close_after)
				return false;
			memmove(c->in, c->in + c->req_len, c->in_len - c->req_len);
			c->in_len -= c->req_len;
			c->req_len = 0;
		}
		if ((r = conn_parse(c)) < 0)
			return false;
		if (r == 1)
			continue;
		if ((r = conn_fill(c)) < 0)
			return false;
		if (r == 0) {
			conn_events(c, EPOLLIN);
			return true;
		}
	}
}

static void conn_event(struct conn *c, uint32_t events)
{
	if (c->dead)
		return;
	if ((events & (EPOLLERR | EPOLLHUP)) || !conn_progress(c))
		conn_close(c);
}

static void accept_all(void)
{
	for (;;) {
		int fd = accept4(srv.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;
		struct conn *c;
		struct epoll_event ev = {.events = EPOLLIN};

		if (fd < 0)
			return;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if ((c = calloc(1, sizeof(*c))) == NULL)
			die("out of memory");
		c->fd = fd;
		if (srv.tls != NULL) {
			if ((c->ssl = SSL_new(srv.tls)) == NULL || !SSL_set_fd(c->ssl, fd))
				die("SSL_new failed");
		}
		srv.st.connections++;
		c->next = srv.conns;
		if (srv.conns != NULL)
			srv.conns->prev = c;
		srv.conns = c;
		ev.data.ptr = c;
		epoll_ctl(srv.ep, EPOLL_CTL_ADD, fd, &ev);
	}
}

/* Sends every held response whose deadline has come. */
static void release_due(void)
{
	uint64_t expirations;
	double t = now_s();

	if (read(srv.tfd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
		die("timerfd read failed");
	while (srv.held_head != NULL && srv.held_head->deadline <= t) {
		struct conn *c = srv.held_head;

		srv.held_head = c->next_held;
		if (srv.held_head == NULL)
			srv.held_tail = NULL;
		c->held = false;
		srv.st.in_flight--;
		c->writing = true;
		if (!conn_progress(c))
			conn_close(c);
	}
	arm_timer();
}

/* ---------------------------------------------------------------- setup */

static EVP_PKEY *read_key(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;

	if (f != NULL)
		fclose(f);
	if (k == NULL)
		die("cannot read the signing key");
	return k;
}

static char *read_cert_b64(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	unsigned char *der = NULL;
	int n = x ? i2d_X509(x, &der) : -1;
	char *s;

	if (f != NULL)
		fclose(f);
	if (n <= 0)
		die("cannot read the signing certificate");
	s = b64(der, (size_t)n, false);
	OPENSSL_free(der);
	X509_free(x);
	return s;
}

static int listen_loopback(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 512) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) != 0)
		die("cannot listen on 127.0.0.1");
	srv.lfd = fd;
	return ntohs(a.sin_port);
}

static void add_fd(int fd, void *tag)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tag};

	if (epoll_ctl(srv.ep, EPOLL_CTL_ADD, fd, &ev) != 0)
		die("epoll_ctl failed");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"state-dir", required_argument, NULL, 'd'},
	                                     {"tls-cert", required_argument, NULL, 'c'},
	                                     {"tls-key", required_argument, NULL, 'k'},
	                                     {"sign-key", required_argument, NULL, 's'},
	                                     {"sign-cert", required_argument, NULL, 'x'},
	                                     {"behind", required_argument, NULL, 'b'},
	                                     {NULL, 0, NULL, 0}};
	const char *dir = NULL, *tls_cert = NULL, *tls_key = NULL, *sign_key = NULL,
	           *sign_cert = NULL, *behind = NULL;
	char secret_file[4096];
	unsigned char rnd[32];
	int o, port;
	FILE *f;
	static int tag_listen, tag_timer, tag_stdin;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'd':
			dir = optarg;
			break;
		case 'c':
			tls_cert = optarg;
			break;
		case 'k':
			tls_key = optarg;
			break;
		case 's':
			sign_key = optarg;
			break;
		case 'x':
			sign_cert = optarg;
			break;
		case 'b':
			behind = optarg;
			break;
		default:
			return 2;
		}
	}
	if (dir == NULL || sign_key == NULL || sign_cert == NULL ||
	    (behind == NULL && (tls_cert == NULL || tls_key == NULL))) {
		fprintf(stderr,
		        "usage: kv_bench_server --state-dir DIR --tls-cert PEM --tls-key PEM "
		        "--sign-key PEM --sign-cert PEM [--behind URL]\n");
		return 2;
	}
	srv.sign_key = read_key(sign_key);
	srv.cer_b64 = read_cert_b64(sign_cert);
	if (behind == NULL &&
	    ((srv.tls = SSL_CTX_new(TLS_server_method())) == NULL ||
	     SSL_CTX_use_certificate_chain_file(srv.tls, tls_cert) != 1 ||
	     SSL_CTX_use_PrivateKey_file(srv.tls, tls_key, SSL_FILETYPE_PEM) != 1))
		die("cannot set up TLS");
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		die("no randomness");
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(srv.token + 2 * i, 3, "%02x", rnd[i]);
	port = listen_loopback();
	snprintf(srv.base, sizeof(srv.base), "%s", behind ? behind : "");
	if (behind == NULL)
		snprintf(srv.base, sizeof(srv.base), "https://127.0.0.1:%d", port);
	snprintf(secret_file, sizeof(secret_file), "%s/client-secret.txt", dir);
	if ((f = fopen(secret_file, "w")) == NULL || fputs("bench-secret\n", f) < 0 || fclose(f))
		die("cannot write the client secret file");
	if ((srv.ep = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
	    (srv.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) < 0)
		die("epoll/timerfd failed");
	add_fd(srv.lfd, &tag_listen);
	add_fd(srv.tfd, &tag_timer);
	add_fd(0, &tag_stdin);
	printf("{\"https\": \"%s\", \"http\": \"http://127.0.0.1:%d\", \"tls_ca\": \"%s\", "
	       "\"tenant\": \"%s\", \"client_secret_file\": \"%s\"}\n",
	       srv.base, port, tls_cert ? tls_cert : "", TENANT, secret_file);
	fflush(stdout);
	for (;;) {
		struct epoll_event ev[MAX_EVENTS];
		int n = epoll_wait(srv.ep, ev, MAX_EVENTS, -1);

		for (int i = 0; i < n; i++) {
			void *tag = ev[i].data.ptr;
			char buf[256];

			if (tag == &tag_listen)
				accept_all();
			else if (tag == &tag_timer)
				release_due();
			else if (tag == &tag_stdin) {
				if (read(0, buf, sizeof(buf)) <= 0)
					goto out;
			} else {
				conn_event(tag, ev[i].events);
			}
		}
		conn_reap();
	}
out:
	while (srv.conns != NULL)
		conn_close(srv.conns);
	conn_reap();
	SSL_CTX_free(srv.tls);
	EVP_PKEY_free(srv.sign_key);
	free(srv.cer_b64);
	close(srv.tfd);
	close(srv.ep);
	close(srv.lfd);
	return 0;
}
