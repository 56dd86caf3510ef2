/* test_http.c - the HTTP client against a scripted server on 127.0.0.1: retries,
 * Retry-After, bounded time and bodies, error messages, loopback-only http. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "core/http.h"
#include "scripted_server.h"

/* ---- helpers ---- */

struct fixture {
	struct hs_ctx *ctx;
	struct hs_http *http;
};

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fixture_new(struct fixture *f, int max_retries, long max_total_ms,
                        long max_retry_after_ms)
{
	struct hs_http_config cfg = HS_HTTP_CONFIG_INIT;

	cfg.max_retries = max_retries;
	cfg.max_total_ms = max_total_ms;
	cfg.backoff_base_ms = 20;
	cfg.max_retry_after_ms = max_retry_after_ms;
	cfg.timeout_ms = 5000;
	log_text[0] = '\0';
	assert_int_equal(hs_ctx_new(&f->ctx), 0);
	hs_ctx_set_log(f->ctx, log_capture, NULL);
	assert_int_equal(hs_http_new(f->ctx, &f->http, &cfg), 0);
}

static void fixture_free(struct fixture *f)
{
	hs_http_free(f->http);
	hs_ctx_free(f->ctx);
}

static int get(struct fixture *f, const char *url, struct hs_http_response *resp)
{
	struct hs_http_request req = {.method = "GET", .url = url};

	return hs_http_send(f->ctx, f->http, &req, resp);
}

/* ---- tests ---- */

static void loopback_urls(void **state)
{
	static const struct {
		const char *url;
		bool loopback;
	} cases[] = {
	        {"http://127.0.0.1:8080/x", true},
	        {"http://127.1.2.3/", true},
	        {"http://localhost/", true},
	        {"https://LOCALHOST:1/", true},
	        {"http://[::1]:80/a", true},
	        {"http://128.0.0.1/", false},
	        {"http://localhost.evil.com/", false},
	        {"http://127.0.0.1.evil.com/", false},
	        {"https://vault.azure.net/", false},
	        {"ftp://127.0.0.1/", false},
	        {"http://169.254.169.254/", false},
	        {"not a url", false},
	        {"http://[::2]/", false},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (hs_http_is_loopback_url(cases[i].url) != cases[i].loopback)
			fail_msg("hs_http_is_loopback_url(%s)", cases[i].url);
	}
	assert_false(hs_http_is_loopback_url(NULL));
}

static void plain_http_refused(void **state)
{
	struct hs_http_response resp;
	struct fixture f;

	(void)state;
	fixture_new(&f, 0, 0, 0);
	assert_int_equal(get(&f, "http://example.invalid/keys?x=1", &resp), HS_ERR_INVALID);
	assert_non_null(strstr(hs_ctx_message(f.ctx), "example.invalid"));
	assert_non_null(strstr(hs_ctx_message(f.ctx), "http"));
	assert_int_equal(resp.attempts, 0);
	hs_http_response_free(&resp);
	hs_ctx_clear_error(f.ctx);
	assert_int_equal(get(&f, "ftp://127.0.0.1/", &resp), HS_ERR_INVALID);
	hs_http_response_free(&resp);
	hs_ctx_clear_error(f.ctx);
	/* allow_plain_http (AIA downloads) lifts the rule; "localhost." is not loopback
	 * for the rule but resolves locally, so nothing leaves the machine. */
	{
		struct hs_http_request req = {.method = "GET", .allow_plain_http = true};
		char url[64];

		snprintf(url, sizeof(url), "http://localhost.:%d/", closed_port());
		req.url = url;
		assert_false(hs_http_is_loopback_url(url));
		assert_int_equal(hs_http_send(f.ctx, f.http, &req, &resp), HS_ERR_NETWORK);
		hs_http_response_free(&resp);
		hs_ctx_clear_error(f.ctx);
		req.allow_plain_http = false;
		assert_int_equal(hs_http_send(f.ctx, f.http, &req, &resp), HS_ERR_INVALID);
		hs_http_response_free(&resp);
	}
	fixture_free(&f);
}

static void urlencode(void **state)
{
	char *s = hs_http_urlencode("a b/c?d=\xc3\xa9&~");

	(void)state;
	assert_string_equal(s, "a%20b%2Fc%3Fd%3D%C3%A9%26~");
	free(s);
}

static void retry_after_then_ok(void **state)
{
	static const struct srv_reply script[] = {
	        {429, "Retry-After: 1\r\n", "{\"error\":{\"code\":\"Throttled\"}}", 0, NULL},
	        {200, "Content-Type: application/json\r\n", "{\"ok\":true}", 0, NULL},
	};
	struct srv *s = srv_start(script, 2);
	struct hs_http_response resp;
	struct fixture f;
	long t0, dt;

	(void)state;
	fixture_new(&f, 0, 0, 0);
	t0 = now_ms();
	assert_int_equal(get(&f, srv_url(s, "/a?secret=1"), &resp), 0);
	dt = now_ms() - t0;
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.attempts, 2);
	assert_string_equal((char *)resp.body.data, "{\"ok\":true}");
	assert_int_equal(resp.body.len, 11);
	assert_string_equal(resp.content_type, "application/json");
	assert_true(dt >= 900 && dt < 3000);
	assert_null(strstr(log_text, "secret=1"));
	assert_non_null(strstr(log_text, "/a"));
	hs_http_response_free(&resp);
	fixture_free(&f);
	srv_stop(s);
}

static void retry_after_date_capped(void **state)
{
	static const struct srv_reply script[] = {
	        {503, "Retry-After: 30\r\n", NULL, 0, NULL},
	        {503, "Retry-After: Wed, 21 Oct 2099 07:28:00 GMT\r\n", NULL, 0, NULL},
	        {200, NULL, "ok", 0, NULL},
	};
	struct srv *s = srv_start(script, 3);
	struct hs_http_response resp;
	struct fixture f;
	long t0;

	(void)state;
	fixture_new(&f, 0, 0, 150);
	t0 = now_ms();
	assert_int_equal(get(&f, srv_url(s, "/"), &resp), 0);
	assert_true(now_ms() - t0 < 2000);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.attempts, 3);
	hs_http_response_free(&resp);
	fixture_free(&f);
	srv_stop(s);
}

static void throttled_until_retries_run_out(void **state)
{
	static const struct srv_reply script[] = {
	        {429, NULL, "{}", 0, NULL}, {429, NULL, "{}", 0, NULL}, {429, NULL, "{}", 0, NULL},
	        {429, NULL, "{}", 0, NULL}, {200, NULL, "{}", 0, NULL},
	};
	struct srv *s = srv_start(script, 5);
	struct hs_http_response resp;
	struct fixture f;

	(void)state;
	fixture_new(&f, 3, 0, 0);
	assert_int_equal(get(&f, srv_url(s, "/keys"), &resp), HS_ERR_THROTTLED);
	assert_int_equal(resp.attempts, 4);
	assert_int_equal(s->n_reqs, 4);
	assert_non_null(
	        strstr(hs_ctx_message(f.ctx), "still throttled (HTTP 429) after 4 attempts"));
	assert_non_null(strstr(hs_ctx_message(f.ctx), "127.0.0.1"));
	hs_http_response_free(&resp);
	fixture_free(&f);
	srv_stop(s);
}

static void persistent_503_bounded_in_time(void **state)
{
	static struct srv_reply script[200];
	struct srv *s;
	struct hs_http_response resp;
	struct fixture f;
	long t0, dt;

	(void)state;
	for (size_t i = 0; i < 200; i++)
		script[i] = (struct srv_reply){503, NULL, "{\"error\":\"busy\"}", 0, NULL};
	s = srv_start(script, 200);
	fixture_new(&f, 100, 1200, 0);
	t0 = now_ms();
	assert_int_equal(get(&f, srv_url(s, "/"), &resp), 0);
	dt = now_ms() - t0;
	assert_int_equal(resp.status, 503);
	assert_true(resp.attempts > 2);
	assert_int_equal((size_t)resp.attempts, s->n_reqs);
	assert_true(dt < 1500);
	hs_http_response_free(&resp);
	fixture_free(&f);
	srv_stop(s);
}

static void final_statuses_not_retried(void **state)
{
	static const int statuses[] = {501, 505, 400, 404, 401, 403};
	struct hs_http_response resp;
	struct fixture f;

	(void)state;
	for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
		struct srv_reply script[2] = {{statuses[i], NULL, "{}", 0, NULL},
		                              {200, NULL, "", 0, NULL}};
		struct srv *s = srv_start(script, 2);

		fixture_new(&f, 0, 0, 0);
		assert_int_equal(get(&f, srv_url(s, "/"), &resp), 0);
		assert_int_equal(resp.status, statuses[i]);
		assert_int_equal(resp.attempts, 1);
		hs_http_response_free(&resp);
		fixture_free(&f);
		srv_stop(s);
	}
}

static void connection_reset_retried(void **state)
{
	static const struct srv_reply script[] = {
	        {0, NULL, NULL, 0, NULL}, {-1, NULL, NULL, 0, NULL}, {200, NULL, "fine", 0, NULL}};
	struct srv *s = srv_start(script, 3);
	struct hs_http_response resp;
	struct fixture f;

	(void)state;
	fixture_new(&f, 0, 0, 0);
	assert_int_equal(get(&f, srv_url(s, "/"), &resp), 0);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.attempts, 3);
	assert_string_equal((char *)resp.body.data, "fine");
	hs_http_response_free(&resp);
	fixture_free(&f);
	srv_stop(s);
}

static void connection_refused_names_host(void **state)
{
	struct hs_http_response resp;
	struct fixture f;
	char url[64];

	(void)state;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", closed_port());
	fixture_new(&f, 2, 0, 0);
	assert_int_equal(get(&f, url, &resp), HS_ERR_NETWORK);
	assert_int_equal(resp.attempts, 3);
	assert_non_null(strstr(hs_ctx_message(f.ctx), "127.0.0.1"));
	assert_non_null(strstr(hs_ctx_message(f.ctx), "after 3 attempts"));
	hs_http_response_free(&resp);
	fixture_free(&f);
}

static void oversized_body_refused(void **state)
{
	static const struct srv_reply script[] = {{200, NULL, NULL, 5 * 1024 * 1024, NULL}};
	struct srv *s = srv_start(script, 1);
	struct hs_http_response resp;
	struct fixture f;

	(void)state;
	fixture_new(&f, 0, 0, 0);
	assert_int_equal(get(&f, srv_url(s, "/big"), &resp), HS_ERR_NETWORK);
	assert_non_null(strstr(hs_ctx_message(f.ctx), "response too large"));
	assert_int_equal(resp.attempts, 1);
	hs_http_response_free(&resp);
	fixture_free(&f);
	srv_stop(s);
}

static void challenge_header_captured(void **state)
{
	static const struct srv_reply script[] = {
	        {401,
	         "WWW-Authenticate: Bearer authorization=\"https://login.microsoftonline.com/t1\", "
	         "resource=\"https://vault.azure.net\"\r\nWWW-Authenticate: Basic\r\n"
	         "Content-Type: application/json; charset=utf-8\r\n",
	         "{\"error\":{\"code\":\"Unauthorized\",\"message\":\"AKV10000: Request is missing "
	         "a "
	         "Bearer or PoP token.\"}}",
	         0, NULL}};
	struct srv *s = srv_start(script, 1);
	struct hs_http_response resp;
	struct fixture f;

	(void)state;
	fixture_new(&f, 0, 0, 0);
	assert_int_equal(get(&f, srv_url(s, "/certificates/c"), &resp), 0);
	assert_int_equal(resp.status, 401);
	assert_int_equal(resp.attempts, 1);
	assert_string_equal(resp.www_authenticate,
	                    "Bearer authorization=\"https://login.microsoftonline.com/t1\", "
	                    "resource=\"https://vault.azure.net\"");
	assert_string_equal(resp.content_type, "application/json; charset=utf-8");
	assert_non_null(strstr((char *)resp.body.data, "AKV10000"));
	hs_http_response_free(&resp);
	fixture_free(&f);
	srv_stop(s);
}

static void rbac_denial_retried_when_asked(void **state)
{
	static const char denied[] =
	        "{\"error\":{\"code\":\"Forbidden\",\"message\":\"Caller is not "
	        "authorized\",\"innererror\":{\"code\":\"ForbiddenByRbac\"}}}";
	static const struct srv_reply script[] = {{403, NULL, denied, 0, NULL},
	                                          {200, NULL, "{}", 0, NULL},
	                                          {403, NULL, denied, 0, NULL}};
	struct srv *s = srv_start(script, 3);
	struct hs_http_request req = {.method = "POST", .body = "{}", .body_len = 2};
	struct hs_http_response resp;
	struct fixture f;

	(void)state;
	fixture_new(&f, 0, 0, 0);
	req.url = srv_url(s, "/keys/k/v/sign");
	req.retry_rbac_denial = true;
	assert_int_equal(hs_http_send(f.ctx, f.http, &req, &resp), 0);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.attempts, 2);
	hs_http_response_free(&resp);
	req.retry_rbac_denial = false;
	assert_int_equal(hs_http_send(f.ctx, f.http, &req, &resp), 0);
	assert_int_equal(resp.status, 403);
	assert_int_equal(resp.attempts, 1);
	hs_http_response_free(&resp);
	fixture_free(&f);
	srv_stop(s);
}

static void no_retry_means_one_attempt(void **state)
{
	static const struct srv_reply script[] = {{503, NULL, "", 0, NULL},
	                                          {200, NULL, "", 0, NULL}};
	struct srv *s = srv_start(script, 2);
	struct hs_http_request req = {.method = "GET", .no_retry = true};
	struct hs_http_response resp;
	struct fixture f;

	(void)state;
	fixture_new(&f, 0, 0, 0);
	req.url = srv_url(s, "/");
	assert_int_equal(hs_http_send(f.ctx, f.http, &req, &resp), 0);
	assert_int_equal(resp.status, 503);
	assert_int_equal(resp.attempts, 1);
	hs_http_response_free(&resp);
	fixture_free(&f);
	srv_stop(s);
}

static void request_sent_and_secrets_never_logged(void **state)
{
	static const char secret[] = "PLANTED-s3cr3t-VALUE";
	static const struct srv_reply script[] = {{500, NULL, "{\"error\":\"x\"}", 0, NULL},
	                                          {429, NULL, "", 0, NULL},
	                                          {429, NULL, "", 0, NULL}};
	struct srv *s = srv_start(script, 3);
	const char *headers[] = {"Authorization: Bearer PLANTED-s3cr3t-VALUE",
	                         "Content-Type: application/x-www-form-urlencoded", NULL};
	struct hs_http_request req = {.method = "POST", .headers = headers};
	struct hs_http_response resp;
	char url[512], body[] = "client_secret=PLANTED-s3cr3t-VALUE&x=1";
	struct fixture f;

	(void)state;
	snprintf(url, sizeof(url), "%s?sig=%s", srv_url(s, "/tok"), secret);
	req.url = url;
	req.body = body;
	req.body_len = strlen(body);
	fixture_new(&f, 2, 0, 0);
	assert_int_equal(hs_http_send(f.ctx, f.http, &req, &resp), HS_ERR_THROTTLED);
	assert_int_equal(s->n_reqs, 3);
	assert_string_equal(s->reqs[0].method, "POST");
	assert_string_equal(s->reqs[2].body, body);
	assert_true(srv_ci_contains(s->reqs[1].headers, "authorization: bearer PLANTED"));
	assert_false(srv_ci_contains(s->reqs[0].headers, "Expect:"));
	assert_non_null(strstr(log_text, "POST"));
	assert_null(strstr(log_text, secret));
	assert_null(strstr(hs_ctx_message(f.ctx), secret));
	hs_http_response_free(&resp);
	fixture_free(&f);
	srv_stop(s);
}

static void handle_reused_across_requests(void **state)
{
	static const struct srv_reply script[] = {{200, NULL, "one", 0, NULL},
	                                          {404, NULL, "two", 0, NULL},
	                                          {200, NULL, "three", 0, NULL}};
	struct srv *s = srv_start(script, 3);
	struct hs_http_response resp;
	struct fixture f;
	const char *want[] = {"one", "two", "three"};

	(void)state;
	fixture_new(&f, 0, 0, 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(get(&f, srv_url(s, "/r"), &resp), 0);
		assert_string_equal((char *)resp.body.data, want[i]);
		hs_http_response_free(&resp);
	}
	fixture_free(&f);
	srv_stop(s);
}

static void proxy_bypassed_for_local_hosts(void **state)
{
	static const struct srv_reply script[] = {{200, NULL, "direct", 0, NULL}};
	struct srv *s = srv_start(script, 1);
	struct hs_http_response resp;
	struct fixture f;
	char proxy[64];

	(void)state;
	snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%d", closed_port());
	setenv("http_proxy", proxy, 1);
	setenv("NO_PROXY", "example.com", 1);
	fixture_new(&f, 0, 0, 0);
	assert_int_equal(get(&f, srv_url(s, "/"), &resp), 0);
	unsetenv("http_proxy");
	unsetenv("NO_PROXY");
	assert_string_equal((char *)resp.body.data, "direct");
	hs_http_response_free(&resp);
	fixture_free(&f);
	srv_stop(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(loopback_urls),
	        cmocka_unit_test(plain_http_refused),
	        cmocka_unit_test(urlencode),
	        cmocka_unit_test(retry_after_then_ok),
	        cmocka_unit_test(retry_after_date_capped),
	        cmocka_unit_test(throttled_until_retries_run_out),
	        cmocka_unit_test(persistent_503_bounded_in_time),
	        cmocka_unit_test(final_statuses_not_retried),
	        cmocka_unit_test(connection_reset_retried),
	        cmocka_unit_test(connection_refused_names_host),
	        cmocka_unit_test(oversized_body_refused),
	        cmocka_unit_test(challenge_header_captured),
	        cmocka_unit_test(rbac_denial_retried_when_asked),
	        cmocka_unit_test(no_retry_means_one_attempt),
	        cmocka_unit_test(request_sent_and_secrets_never_logged),
	        cmocka_unit_test(handle_reused_across_requests),
	        cmocka_unit_test(proxy_bypassed_for_local_hosts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
