/*
 * server.c - the HTTP side of `hsmsign serve`: libmicrohttpd with a thread
 * pool, keep-alive, bounded request bodies, TLS 1.2+ through GnuTLS (the
 * TLS library libmicrohttpd uses) and optional client certificates. A sign
 * request that waits in a key's queue suspends its connection and is
 * resumed by the signing thread, so queued requests occupy no thread.
 */
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "mhd_api.h"
#include "serve_int.h"

/* TLS 1.2 and 1.3 only (GnuTLS priority string). */
#define SV_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define SV_MAX_HEADERS    64
#define SV_PEM_MAX        (1024 * 1024)

struct hs_server {
	struct hs_serve *s;
	struct MHD_Daemon *d;
	unsigned port;
	bool tls;
	char *cert_pem, *key_pem, *ca_pem;
	size_t key_pem_len;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	long pending; /* requests waiting for a signature */
};

struct sv_conn {
	struct hs_server *srv;
	struct MHD_Connection *c;
	struct hs_buf body;
	size_t max_body;
	bool truncated;
	bool started, answered;
	pthread_mutex_t lock;
	bool done, suspended;
	struct hs_serve_response resp;
};

static char *sv_read_pem(struct hs_ctx *ctx, const char *path, const char *what, size_t *len)
{
	struct hs_buf b = {0};
	char chunk[4096];
	size_t n;
	FILE *f = fopen(path, "rb");

	if (f == NULL) {
		hs_error_set(ctx, HS_ERR_IO, "%s: cannot open %s: %s", what, path, strerror(errno));
		return NULL;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (b.len + n > SV_PEM_MAX || hs_buf_append(&b, chunk, n) < 0)
			break;
	OPENSSL_cleanse(chunk, sizeof(chunk));
	fclose(f);
	if (n > 0 || hs_buf_append(&b, "", 1) < 0) {
		hs_buf_free_secret(&b);
		hs_error_set(ctx, HS_ERR_INVALID, "%s: %s is too large", what, path);
		return NULL;
	}
	if (len)
		*len = b.len;
	return (char *)b.data;
}

static void sv_mhd_log(void *cls, const char *fmt, va_list ap)
        __attribute__((format(printf, 2, 0)));
static void sv_mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct hs_server *srv = cls;
	char line[512];

	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\r\n")] = '\0';
	serve_log(srv->s, HS_LOG_WARN, "http: %s", line);
}

/* Subject of a client certificate that GnuTLS verified against
 * tls.client_ca, RFC 2253 ("CN=build01,O=Acme"); NULL when none. */
static char *sv_client_subject(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
	        MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	const gnutls_datum_t *peers;
	gnutls_session_t sess;
	unsigned int status = 0, n = 0;
	const unsigned char *p;
	char *subject = NULL, *data;
	X509 *x = NULL;
	BIO *bio = NULL;
	long len;

	if (ci == NULL || (sess = ci->tls_session) == NULL)
		return NULL;
	if (gnutls_certificate_verify_peers2(sess, &status) != GNUTLS_E_SUCCESS || status != 0)
		return NULL;
	if ((peers = gnutls_certificate_get_peers(sess, &n)) == NULL || n == 0)
		return NULL;
	p = peers[0].data;
	if ((x = d2i_X509(NULL, &p, (long)peers[0].size)) == NULL ||
	    (bio = BIO_new(BIO_s_mem())) == NULL ||
	    X509_NAME_print_ex(bio, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) < 0)
		goto out;
	if ((len = BIO_get_mem_data(bio, &data)) > 0)
		subject = strndup(data, (size_t)len);
out:
	ERR_clear_error();
	BIO_free(bio);
	X509_free(x);
	return subject;
}

struct sv_headers {
	struct hs_serve_header h[SV_MAX_HEADERS];
	size_t n;
};

static enum MHD_Result sv_header_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
	struct sv_headers *hs = cls;

	(void)kind;
	if (hs->n < SV_MAX_HEADERS && key != NULL) {
		hs->h[hs->n].name = key;
		hs->h[hs->n].value = value ? value : "";
		hs->n++;
	}
	return MHD_YES;
}

static void sv_client_addr(struct MHD_Connection *c, char *out, size_t out_len)
{
	const union MHD_ConnectionInfo *ci =
	        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;
	socklen_t sl = sa && sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
	                                               : sizeof(struct sockaddr_in);

	snprintf(out, out_len, "-");
	if (sa != NULL)
		getnameinfo(sa, sl, out, (socklen_t)out_len, NULL, 0, NI_NUMERICHOST);
}

static enum MHD_Result sv_queue(struct MHD_Connection *c, struct hs_serve_response *resp)
{
	struct MHD_Response *r =
	        MHD_create_response_from_buffer(resp->body_len, resp->body, MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ok;

	if (r == NULL)
		return MHD_NO;
	if (resp->content_type)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
	for (size_t i = 0; i < resp->n_headers; i++)
		MHD_add_response_header(r, resp->headers[i].name, resp->headers[i].value);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	ok = MHD_queue_response(c, (unsigned)resp->status, r);
	MHD_destroy_response(r);
	return ok;
}

/* The signing thread filled cr->resp. Once the connection is resumed, an
 * HTTP thread answers and may free cr at once: nothing here touches cr
 * after MHD_resume_connection(). */
/* Content-Length above max. */
static bool sv_too_large(struct MHD_Connection *c, size_t max)
{
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
	unsigned long long n;
	char *end;

	if (cl == NULL)
		return false;
	n = strtoull(cl, &end, 10);
	return end != cl && n > max;
}

static void sv_done(void *userdata)
{
	struct sv_conn *cr = userdata;
	struct hs_server *srv = cr->srv;
	struct MHD_Connection *c = cr->c;
	bool resume;

	pthread_mutex_lock(&cr->lock);
	cr->done = true;
	resume = cr->suspended;
	cr->suspended = false;
	pthread_mutex_unlock(&cr->lock);
	pthread_mutex_lock(&srv->lock);
	srv->pending--;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
	if (resume)
		MHD_resume_connection(c);
}

static enum MHD_Result sv_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	struct hs_server *srv = cls;
	struct sv_conn *cr = *con_cls;
	struct sv_headers hs = {.n = 0};
	struct hs_serve_request req = {0};
	char addr[64], *subject = NULL;
	int r;

	(void)version;
	if (cr == NULL) {
		struct serve_state *st;

		if ((cr = calloc(1, sizeof(*cr))) == NULL)
			return MHD_NO;
		cr->srv = srv;
		cr->c = c;
		pthread_mutex_init(&cr->lock, NULL);
		st = serve_state_get(srv->s);
		cr->max_body = st->cfg->max_request_bytes;
		serve_state_put(srv->s, st);
		*con_cls = cr;
		/* A declared body over the limit is answered (413) before it is
		 * read: no 100 Continue, and the connection closes after. */
		if (!sv_too_large(c, cr->max_body))
			return MHD_YES;
		cr->truncated = true;
	}
	if (*upload_data_size > 0) {
		size_t n = *upload_data_size;

		*upload_data_size = 0;
		if (cr->started)
			return MHD_YES; /* answered already (413): the rest is dropped */
		if (cr->body.len + n > cr->max_body)
			cr->truncated = true; /* chunked: answered 413 at the end */
		else if (hs_buf_append(&cr->body, upload_data, n) < 0)
			return MHD_NO;
		return MHD_YES;
	} else if (cr->started) {
		/* Resumed after the signature (or answered early): answer. */
		if (cr->answered)
			return MHD_YES;
		cr->answered = true;
		return sv_queue(c, &cr->resp);
	}
	cr->started = true;
	MHD_get_connection_values(c, MHD_HEADER_KIND, sv_header_cb, &hs);
	sv_client_addr(c, addr, sizeof(addr));
	if (srv->tls)
		subject = sv_client_subject(c);
	req.method = method;
	req.path = url;
	req.headers = hs.h;
	req.n_headers = hs.n;
	req.body = cr->body.data;
	req.body_len = cr->body.len;
	req.body_truncated = cr->truncated;
	req.client_addr = addr;
	req.client_cert_subject = subject;
	req.tls = srv->tls;
	pthread_mutex_lock(&srv->lock);
	srv->pending++;
	pthread_mutex_unlock(&srv->lock);
	r = hs_serve_handle(srv->s, &req, &cr->resp, sv_done, cr);
	free(subject);
	if (r == 1) {
		pthread_mutex_lock(&cr->lock);
		if (!cr->done) {
			cr->suspended = true;
			MHD_suspend_connection(c);
			pthread_mutex_unlock(&cr->lock);
			return MHD_YES;
		}
		pthread_mutex_unlock(&cr->lock);
	} else {
		pthread_mutex_lock(&srv->lock);
		srv->pending--;
		pthread_cond_broadcast(&srv->cond);
		pthread_mutex_unlock(&srv->lock);
	}
	cr->answered = true;
	return sv_queue(c, &cr->resp);
}

static void sv_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct sv_conn *cr = *con_cls;

	(void)cls;
	(void)c;
	(void)toe;
	if (cr == NULL)
		return;
	hs_buf_free(&cr->body);
	hs_serve_response_clear(&cr->resp);
	pthread_mutex_destroy(&cr->lock);
	free(cr);
	*con_cls = NULL;
}

static void sv_free(struct hs_server *srv)
{
	free(srv->cert_pem);
	if (srv->key_pem)
		OPENSSL_clear_free(srv->key_pem, srv->key_pem_len);
	free(srv->ca_pem);
	pthread_mutex_destroy(&srv->lock);
	pthread_cond_destroy(&srv->cond);
	free(srv);
}

int hs_server_start(struct hs_ctx *ctx, struct hs_serve *s, struct hs_server **out)
{
	struct hs_server *srv = calloc(1, sizeof(*srv));
	struct serve_state *st = serve_state_get(s);
	const struct serve_config *cfg = st->cfg;
	struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
	                         .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai = NULL;
	unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO |
	                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	struct MHD_OptionItem opts[16];
	size_t n = 0;
	char port[16], why[512];
	int r = 0, gai;

	*out = NULL;
	if (!hs_mhd_api_load(why, sizeof(why))) {
		free(srv);
		serve_state_put(s, st);
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "libmicrohttpd could not be loaded: %s (install libmicrohttpd, "
		                    "on Debian libmicrohttpd12)",
		                    why);
	}
	if (srv == NULL) {
		serve_state_put(s, st);
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	srv->s = s;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->cond, NULL);
	snprintf(port, sizeof(port), "%u", cfg->port);
	if ((gai = getaddrinfo(cfg->listen_host, port, &hints, &ai)) != 0 || ai == NULL) {
		r = hs_error_set(ctx, HS_ERR_INVALID, "listen: cannot resolve %s: %s",
		                 cfg->listen_host, gai_strerror(gai));
		goto out;
	}
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (cfg->tls_cert != NULL) {
		srv->tls = true;
		flags |= MHD_USE_TLS;
		if ((srv->cert_pem = sv_read_pem(ctx, cfg->tls_cert, "tls.certificate", NULL)) ==
		            NULL ||
		    (srv->key_pem = sv_read_pem(ctx, cfg->tls_key, "tls.key", &srv->key_pem_len)) ==
		            NULL ||
		    (cfg->tls_client_ca != NULL &&
		     (srv->ca_pem = sv_read_pem(ctx, cfg->tls_client_ca, "tls.client_ca", NULL)) ==
		             NULL)) {
			r = hs_ctx_error(ctx);
			goto out;
		}
		opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, srv->cert_pem};
		opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, srv->key_pem};
		opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
		                                    (void *)SV_TLS_PRIORITIES};
		if (srv->ca_pem != NULL)
			opts[n++] =
			        (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST, 0, srv->ca_pem};
	}
	opts[n++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, ai->ai_addr};
	opts[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, cfg->threads, NULL};
	opts[n++] =
	        (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections, NULL};
	opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, 60, NULL};
	opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, 128 * 1024, NULL};
	opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
	srv->d = MHD_start_daemon(flags, 0, NULL, NULL, sv_request, srv, MHD_OPTION_EXTERNAL_LOGGER,
	                          sv_mhd_log, srv, MHD_OPTION_NOTIFY_COMPLETED, sv_completed, srv,
	                          MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
	if (srv->d == NULL) {
		r = hs_error_set(ctx, HS_ERR_IO,
		                 "cannot listen on %s:%u (address in use, no permission, or a bad "
		                 "TLS certificate/key)",
		                 cfg->listen_host, cfg->port);
		goto out;
	}
	{
		const union MHD_DaemonInfo *di =
		        MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_BIND_PORT);
		srv->port = di ? di->port : cfg->port;
	}
	serve_log(s, HS_LOG_INFO, "listening on %s%s%s:%u (%s%s)",
	          ai->ai_family == AF_INET6 ? "[" : "", cfg->listen_host,
	          ai->ai_family == AF_INET6 ? "]" : "", srv->port, srv->tls ? "TLS" : "plain HTTP",
	          srv->ca_pem ? (cfg->require_client_cert ? ", client certificates required"
	                                                  : ", client certificates accepted")
	                      : "");
out:
	if (ai)
		freeaddrinfo(ai);
	serve_state_put(s, st);
	if (r < 0) {
		sv_free(srv);
		return r;
	}
	*out = srv;
	return 0;
}

unsigned hs_server_port(const struct hs_server *srv)
{
	return srv->port;
}

int hs_server_stop(struct hs_server *srv, long timeout_ms)
{
	struct timespec until;
	MHD_socket fd;
	long unfinished;

	if (srv == NULL)
		return 0;
	fd = MHD_quiesce_daemon(srv->d);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (timeout_ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&srv->lock);
	while (srv->pending > 0)
		if (pthread_cond_timedwait(&srv->cond, &srv->lock, &until) == ETIMEDOUT)
			break;
	unfinished = srv->pending;
	pthread_mutex_unlock(&srv->lock);
	if (unfinished > 0) {
		/* Freeing now could pull the keys from under a signature still
		 * running on a worker: leave everything to process exit. */
		serve_log(srv->s, HS_LOG_WARN, "stopping with %ld requests unfinished", unfinished);
		return HS_ERR_CANCELLED;
	}
	/* Let resumed connections send their answers. */
	usleep(100 * 1000);
	MHD_stop_daemon(srv->d);
	sv_free(srv);
	return 0;
}
