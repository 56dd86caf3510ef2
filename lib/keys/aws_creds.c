/*
 * aws_creds.c - AWS credentials for the KMS provider, resolved in the order
 * the AWS SDKs use: environment, shared credentials/config files
 * (profiles), web identity token file (EKS/IRSA), GitHub Actions OIDC
 * (exchanged at STS AssumeRoleWithWebIdentity, no aws CLI needed), the
 * ECS/EKS container endpoint, EC2 IMDSv2. Every endpoint is taken from the
 * standard AWS_* variables, so tests point them at a local emulator. A
 * source that is configured but fails stops the chain with its error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "auth/auth.h"
#include "aws.h"
#include "cloud_parse.h"

#define AWS_FILE_MAX    (1024 * 1024)
#define AWS_TOKEN_MAX   (64 * 1024)
#define AWS_IMDS_URL    "http://169.254.169.254"
#define AWS_ECS_HOST    "http://169.254.170.2"
#define AWS_SKIP        1 /* positive: "not configured here", never leaves this file */
#define GH_AWS_AUDIENCE "sts.amazonaws.com"

static void aws_secret_free(char *s)
{
	if (s != NULL)
		OPENSSL_clear_free(s, strlen(s));
}

void hs_aws_creds_clear(struct hs_aws_creds *c)
{
	free(c->access_key_id);
	aws_secret_free(c->secret_access_key);
	aws_secret_free(c->session_token);
	memset(c, 0, sizeof(*c));
}

static const char *aws_env(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? v : NULL;
}

/* Copies the three strings into c; NULL session token allowed. */
static int aws_creds_set(struct hs_ctx *ctx, struct hs_aws_creds *c, const char *id,
                         const char *secret, const char *token, const char *source)
{
	hs_aws_creds_clear(c);
	c->access_key_id = strdup(id);
	c->secret_access_key = strdup(secret);
	c->session_token = token ? strdup(token) : NULL;
	c->source = source;
	if (c->access_key_id == NULL || c->secret_access_key == NULL ||
	    (token != NULL && c->session_token == NULL)) {
		hs_aws_creds_clear(c);
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	return 0;
}

/* "2026-01-01T12:00:00Z" (fractions and offsets "+00:00" tolerated) as
 * Unix seconds; 0 when unreadable (treated as non-expiring). */
static int64_t aws_parse_time(const char *s)
{
	struct tm tm = {0};

	if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
	                        &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return hs_os_timegm(&tm);
}

/* ------------------------------------------------------------ environment */

static int aws_from_env(struct hs_ctx *ctx, struct hs_aws_creds *c)
{
	const char *id = aws_env("AWS_ACCESS_KEY_ID"), *secret = aws_env("AWS_SECRET_ACCESS_KEY");

	if (id == NULL && secret == NULL)
		return AWS_SKIP;
	if (id == NULL || secret == NULL)
		return hs_error_set(ctx, HS_ERR_AUTH,
		                    "AWS credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
		                    "must be set together");
	return aws_creds_set(ctx, c, id, secret, aws_env("AWS_SESSION_TOKEN"), "environment");
}

/* ------------------------------------------------------------ shared files */

/* Path of a shared file: the variable, else ~/.aws/<name>; malloc'd. */
static char *aws_file_path(const char *var, const char *name)
{
	const char *home = aws_env("HOME");

	if (aws_env(var) != NULL)
		return strdup(aws_env(var));
	return home ? hs_strprintf("%s/.aws/%s", home, name) : NULL;
}

/* Reads a whole small file, NUL-terminated; AWS_SKIP when it is absent. */
static int aws_read_small(struct hs_ctx *ctx, const char *path, size_t max, struct hs_buf *out)
{
	FILE *fp = hs_os_fopen(path, "rb");
	char chunk[4096];
	size_t n;
	int r = 0;

	if (fp == NULL)
		return AWS_SKIP;
	while (r == 0 && (n = fread(chunk, 1, sizeof(chunk), fp)) > 0) {
		if (out->len + n > max)
			r = hs_error_set(ctx, HS_ERR_INVALID, "%s is larger than %zu bytes", path,
			                 max);
		else if (hs_buf_append(out, chunk, n) < 0)
			r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	}
	if (r == 0 && ferror(fp))
		r = hs_error_set(ctx, HS_ERR_IO, "%s: read error", path);
	fclose(fp);
	OPENSSL_cleanse(chunk, sizeof(chunk));
	if (r == 0 && hs_buf_append(out, "", 1) < 0)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	return r;
}

static char *aws_trim(char *s)
{
	size_t n;

	s += strspn(s, " \t\r\n");
	n = strlen(s);
	while (n > 0 && strchr(" \t\r\n", s[n - 1]) != NULL)
		s[--n] = '\0';
	return s;
}

/* True when an INI section header line "[...]" names the profile: the
 * credentials file uses [name], the config file [profile name] (and
 * [default]). */
static bool aws_section_is(char *line, const char *profile, bool config)
{
	char *end = strchr(line, ']');

	if (end == NULL)
		return false;
	*end = '\0';
	line = aws_trim(line + 1);
	if (config && strncmp(line, "profile", 7) == 0 && (line[7] == ' ' || line[7] == '\t'))
		line = aws_trim(line + 8);
	return strcmp(line, profile) == 0;
}

/* Value of `key` in the profile's section of an INI file, malloc'd (its
 * copy of the file is wiped), or NULL. *found says whether the section
 * exists. */
static char *aws_ini_get(const char *path, const char *profile, bool config, const char *key,
                         bool *found)
{
	struct hs_buf file = {0};
	struct hs_ctx scratch = {0};
	char *value = NULL, *next, *line;
	bool in_section = false;

	if (aws_read_small(&scratch, path, AWS_FILE_MAX, &file) != 0)
		return NULL;
	for (line = (char *)file.data; line != NULL; line = next) {
		char *eq, *t;

		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		t = aws_trim(line);
		if (*t == '[') {
			in_section = aws_section_is(t, profile, config);
			*found = *found || in_section;
			continue;
		}
		if (!in_section || *t == '#' || *t == ';' || (eq = strchr(t, '=')) == NULL)
			continue;
		*eq = '\0';
		if (strcmp(aws_trim(t), key) == 0) {
			free(value);
			value = strdup(aws_trim(eq + 1));
		}
	}
	hs_buf_free_secret(&file);
	return value;
}

/* A key from the credentials file, else the config file. */
static char *aws_profile_get(const char *profile, const char *key, bool *found)
{
	char *cred_path = aws_file_path("AWS_SHARED_CREDENTIALS_FILE", "credentials");
	char *config_path = aws_file_path("AWS_CONFIG_FILE", "config");
	char *v = NULL;

	if (cred_path != NULL)
		v = aws_ini_get(cred_path, profile, false, key, found);
	if (v == NULL && config_path != NULL)
		v = aws_ini_get(config_path, profile, true, key, found);
	free(cred_path);
	free(config_path);
	return v;
}

char *hs_aws_profile_region(const char *profile)
{
	bool found = false;

	return aws_profile_get(profile ? profile : "default", "region", &found);
}

static int aws_from_profile(struct hs_ctx *ctx, const char *profile, bool explicit,
                            struct hs_aws_creds *c)
{
	bool found = false;
	char *id = aws_profile_get(profile, "aws_access_key_id", &found);
	char *secret = aws_profile_get(profile, "aws_secret_access_key", &found);
	char *token = aws_profile_get(profile, "aws_session_token", &found);
	int r;

	if (id != NULL && secret != NULL)
		r = aws_creds_set(ctx, c, id, secret, token, "profile");
	else if (!found && !explicit)
		r = AWS_SKIP;
	else if (!found)
		r = hs_error_set(ctx, HS_ERR_AUTH,
		                 "AWS profile '%s' is in neither the shared credentials nor the "
		                 "config file",
		                 profile);
	else if (!explicit && id == NULL && secret == NULL)
		r = AWS_SKIP; /* e.g. a [default] section holding only the region */
	else
		r = hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                 "AWS profile '%s' has no aws_access_key_id and "
		                 "aws_secret_access_key (role, SSO and credential_process "
		                 "profiles are not supported; use the environment)",
		                 profile);
	free(id);
	aws_secret_free(secret);
	aws_secret_free(token);
	return r;
}

/* ------------------------------------------------------------ STS */

/* Text of <tag>...</tag> in an STS XML answer, malloc'd, or NULL. The
 * documents are small and flat enough that a search is exact. */
static char *aws_xml_text(const char *xml, const char *tag)
{
	char open[64], close[64];
	const char *a, *b;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	if ((a = strstr(xml, open)) == NULL)
		return NULL;
	a += strlen(open);
	if ((b = strstr(a, close)) == NULL)
		return NULL;
	return strndup(a, (size_t)(b - a));
}

static char *aws_sts_url(const char *region)
{
	const char *e = aws_env("AWS_ENDPOINT_URL_STS");

	if (e == NULL)
		e = aws_env("AWS_ENDPOINT_URL");
	if (e != NULL)
		return strdup(e);
	if (region != NULL)
		return hs_strprintf("https://sts.%s.amazonaws.com/", region);
	return strdup("https://sts.amazonaws.com/");
}

/* The form body of AssumeRoleWithWebIdentity (holds the token: secret). */
static char *aws_sts_body(const char *role_arn, const char *jwt)
{
	const char *session = aws_env("AWS_ROLE_SESSION_NAME");
	char *arn = hs_http_urlencode(role_arn), *tok = hs_http_urlencode(jwt);
	char *sess = hs_http_urlencode(session ? session : "hsmsign");
	char *body = NULL;

	if (arn && tok && sess)
		body = hs_strprintf("Action=AssumeRoleWithWebIdentity&Version=2011-06-15&"
		                    "RoleArn=%s&RoleSessionName=%s&WebIdentityToken=%s",
		                    arn, sess, tok);
	free(arn);
	free(sess);
	aws_secret_free(tok);
	return body;
}

/* Reads the Credentials of an STS answer, or its Error. */
static int aws_sts_answer(struct hs_ctx *ctx, const struct hs_http_response *resp,
                          const char *role_arn, const char *source, struct hs_aws_creds *c)
{
	const char *xml = (const char *)resp->body.data;
	char *id = aws_xml_text(xml, "AccessKeyId"), *secret = aws_xml_text(xml, "SecretAccessKey");
	char *token = aws_xml_text(xml, "SessionToken"), *exp = aws_xml_text(xml, "Expiration");
	char *code = NULL, *msg = NULL;
	int r;

	if (resp->status == 200 && id && secret && token) {
		if ((r = aws_creds_set(ctx, c, id, secret, token, source)) == 0)
			c->expires_at = aws_parse_time(exp);
	} else {
		code = aws_xml_text(xml, "Code");
		msg = aws_xml_text(xml, "Message");
		r = hs_error_set(
		        ctx, HS_ERR_AUTH,
		        "AWS STS AssumeRoleWithWebIdentity for %s failed (HTTP %ld): %s%s%s",
		        role_arn, resp->status,
		        code                  ? code
		        : resp->status == 200 ? "the answer is not an STS response (no credentials)"
		                              : "no error code",
		        msg ? ": " : "", msg ? msg : "");
	}
	free(id);
	aws_secret_free(secret);
	aws_secret_free(token);
	free(exp);
	free(code);
	free(msg);
	return r;
}

int hs_aws_parse_sts(struct hs_ctx *ctx, long status, const uint8_t *body, size_t len)
{
	struct hs_http_response resp = {.status = status};
	struct hs_aws_creds c = {0};
	int r;

	if (hs_buf_append(&resp.body, body, len) < 0 || hs_buf_append(&resp.body, "", 1) < 0)
		return HS_ERR_NOMEM;
	resp.body.len--; /* NUL-terminated like every http.c body */
	r = aws_sts_answer(ctx, &resp, "fuzz", "fuzz", &c);
	hs_aws_creds_clear(&c);
	hs_http_response_free(&resp);
	return r;
}

/* AssumeRoleWithWebIdentity: an unsigned STS call that trades an OIDC
 * token for temporary credentials of role_arn. */
static int aws_assume_role_web(struct hs_ctx *ctx, struct hs_http *http, const char *region,
                               const char *role_arn, const char *jwt, const char *source,
                               struct hs_aws_creds *c)
{
	const char *headers[] = {"Content-Type: application/x-www-form-urlencoded",
	                         "Accept: text/xml", NULL};
	struct hs_http_request req = {.method = "POST", .headers = headers};
	struct hs_http_response resp = {0};
	char *url = aws_sts_url(region), *body = aws_sts_body(role_arn, jwt);
	int r;

	if (url == NULL || body == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	req.url = url;
	req.body = body;
	req.body_len = strlen(body);
	req.service = "AWS STS";
	if ((r = hs_http_send(ctx, http, &req, &resp)) < 0)
		goto out;
	r = aws_sts_answer(ctx, &resp, role_arn, source, c);
out:
	hs_http_response_free(&resp);
	aws_secret_free(body);
	free(url);
	return r;
}

static int aws_from_web_identity(struct hs_ctx *ctx, struct hs_http *http, const char *region,
                                 struct hs_aws_creds *c)
{
	const char *file = aws_env("AWS_WEB_IDENTITY_TOKEN_FILE"), *role = aws_env("AWS_ROLE_ARN");
	struct hs_buf jwt = {0};
	int r;

	if (file == NULL)
		return AWS_SKIP;
	if (role == NULL)
		return hs_error_set(ctx, HS_ERR_AUTH,
		                    "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not");
	if ((r = aws_read_small(ctx, file, AWS_TOKEN_MAX, &jwt)) != 0) {
		if (r == AWS_SKIP)
			r = hs_error_set(ctx, HS_ERR_AUTH,
			                 "cannot read the web identity token file %s", file);
		goto out;
	}
	r = aws_assume_role_web(ctx, http, region, role, aws_trim((char *)jwt.data), "web-identity",
	                        c);
out:
	hs_buf_free_secret(&jwt);
	return r;
}

/* The job's GitHub Actions OIDC token for audience sts.amazonaws.com. */
static int aws_github_jwt(struct hs_ctx *ctx, struct hs_http *http, char **jwt)
{
	return hs_github_oidc_token(ctx, http, aws_env("ACTIONS_ID_TOKEN_REQUEST_URL"),
	                            aws_env("ACTIONS_ID_TOKEN_REQUEST_TOKEN"), GH_AWS_AUDIENCE,
	                            jwt);
}

static int aws_from_github(struct hs_ctx *ctx, struct hs_http *http, const char *region,
                           struct hs_aws_creds *c)
{
	const char *role = aws_env("AWS_ROLE_ARN");
	char *jwt = NULL;
	int r;

	if (role == NULL || aws_env("ACTIONS_ID_TOKEN_REQUEST_URL") == NULL ||
	    aws_env("ACTIONS_ID_TOKEN_REQUEST_TOKEN") == NULL)
		return AWS_SKIP;
	if ((r = aws_github_jwt(ctx, http, &jwt)) == 0)
		r = aws_assume_role_web(ctx, http, region, role, jwt, "github-oidc", c);
	aws_secret_free(jwt);
	return r;
}

/* ------------------------------------------------------------ ECS and IMDS */

/* {AccessKeyId, SecretAccessKey, Token, Expiration} (ECS and IMDS shape). */
static int aws_json_creds(struct hs_ctx *ctx, const struct hs_http_response *resp,
                          const char *source, struct hs_aws_creds *c)
{
	json_t *j = json_loadb((const char *)resp->body.data, resp->body.len, 0, NULL);
	const char *id = json_string_value(json_object_get(j, "AccessKeyId"));
	const char *secret = json_string_value(json_object_get(j, "SecretAccessKey"));
	const char *token = json_string_value(json_object_get(j, "Token"));
	int r;

	if (resp->status != 200 || id == NULL || secret == NULL)
		r = hs_error_set(ctx, HS_ERR_AUTH, "AWS %s credentials request failed (HTTP %ld)",
		                 source, resp->status);
	else if ((r = aws_creds_set(ctx, c, id, secret, token, source)) == 0)
		c->expires_at = aws_parse_time(json_string_value(json_object_get(j, "Expiration")));
	json_decref(j);
	return r;
}

/* The container endpoint's authorization header value (secret), if any. */
static char *aws_container_auth(struct hs_ctx *ctx)
{
	const char *file = aws_env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	struct hs_buf tok = {0};
	char *h = NULL;

	if (file != NULL && aws_read_small(ctx, file, AWS_TOKEN_MAX, &tok) == 0)
		h = hs_strprintf("Authorization: %s", aws_trim((char *)tok.data));
	else if (aws_env("AWS_CONTAINER_AUTHORIZATION_TOKEN") != NULL)
		h = hs_strprintf("Authorization: %s", aws_env("AWS_CONTAINER_AUTHORIZATION_TOKEN"));
	hs_buf_free_secret(&tok);
	return h;
}

static int aws_from_container(struct hs_ctx *ctx, struct hs_http *http, struct hs_aws_creds *c)
{
	const char *full = aws_env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	const char *rel = aws_env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	char *url = full ? strdup(full) : rel ? hs_strprintf("%s%s", AWS_ECS_HOST, rel) : NULL;
	char *auth = aws_container_auth(ctx);
	const char *headers[] = {"Accept: application/json", auth, NULL};
	/* The ECS agent answers on plain http at a fixed link-local address,
	 * like IMDS; nothing else may be reached without TLS. */
	struct hs_http_request req = {.method = "GET",
	                              .url = url,
	                              .headers = headers,
	                              .allow_plain_http = rel != NULL && full == NULL};
	struct hs_http_response resp = {0};
	int r;

	if (full == NULL && rel == NULL) {
		r = AWS_SKIP;
		goto out;
	}
	if (url == NULL) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = hs_http_send(ctx, http, &req, &resp)) == 0)
		r = aws_json_creds(ctx, &resp, "container", c);
out:
	hs_http_response_free(&resp);
	aws_secret_free(auth);
	free(url);
	return r;
}

/* One IMDS request with the session token header (if any); body in resp. */
static int aws_imds_call(struct hs_ctx *ctx, struct hs_http *http, const char *method,
                         const char *path, const char *token, struct hs_http_response *resp)
{
	const char *base = aws_env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	size_t n = strlen(base ? base : AWS_IMDS_URL);
	char *hdr = token ? hs_strprintf("X-aws-ec2-metadata-token: %s", token)
	                  : strdup("X-aws-ec2-metadata-token-ttl-seconds: 21600");
	const char *headers[] = {hdr, NULL};
	struct hs_http_request req = {.method = method, .headers = headers};
	char *url;
	int r;

	while (n > 0 && (base ? base : AWS_IMDS_URL)[n - 1] == '/')
		n--;
	url = hs_strprintf("%.*s%s", (int)n, base ? base : AWS_IMDS_URL, path);
	req.url = url;
	if (url == NULL || hdr == NULL)
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	else if ((r = hs_http_send(ctx, http, &req, resp)) == 0 && resp->status != 200)
		r = hs_error_set(ctx, HS_ERR_AUTH, "EC2 instance metadata %s: HTTP %ld", path,
		                 resp->status);
	aws_secret_free(hdr);
	free(url);
	return r;
}

/* IMDSv2: a session token (PUT), the role name, then the role's keys. */
static int aws_from_imds(struct hs_ctx *ctx, struct hs_http *http, struct hs_aws_creds *c)
{
	static const char role_path[] = "/latest/meta-data/iam/security-credentials/";
	struct hs_http_response resp = {0};
	char *token = NULL, *role = NULL, *path = NULL;
	int r;

	if (aws_env("AWS_EC2_METADATA_DISABLED") != NULL &&
	    strcasecmp(aws_env("AWS_EC2_METADATA_DISABLED"), "true") == 0)
		return AWS_SKIP;
	if ((r = aws_imds_call(ctx, http, "PUT", "/latest/api/token", NULL, &resp)) < 0)
		goto out;
	token = strndup((const char *)resp.body.data, resp.body.len);
	hs_http_response_free(&resp);
	if (token == NULL || (r = aws_imds_call(ctx, http, "GET", role_path, token, &resp)) < 0)
		goto out;
	role = strndup((const char *)resp.body.data, strcspn((const char *)resp.body.data, "\r\n"));
	hs_http_response_free(&resp);
	if (role == NULL || role[0] == '\0' || strchr(role, '/') != NULL ||
	    (path = hs_strprintf("%s%s", role_path, role)) == NULL) {
		r = hs_error_set(ctx, HS_ERR_AUTH, "EC2 instance metadata: no IAM role attached");
		goto out;
	}
	if ((r = aws_imds_call(ctx, http, "GET", path, token, &resp)) == 0)
		r = aws_json_creds(ctx, &resp, "imds", c);
out:
	hs_http_response_free(&resp);
	aws_secret_free(token);
	free(role);
	free(path);
	return r;
}

/* IMDS last, with its own short timeout: off EC2 nobody answers, and the
 * chain must not hang there. An unreachable default endpoint means "not on
 * EC2"; an endpoint set in the environment must work. */
static int aws_from_imds_probe(struct hs_ctx *ctx, const struct hs_aws_cred_cfg *cfg,
                               struct hs_aws_creds *c)
{
	struct hs_http_config hc = HS_HTTP_CONFIG_INIT;
	struct hs_http *http = NULL;
	int r;

	hc.timeout_ms = 2000;
	hc.max_retries = 1;
	hc.max_total_ms = 6000;
	hc.backoff_base_ms = cfg->backoff_base_ms;
	if ((r = hs_http_new(ctx, &http, &hc)) < 0)
		return r;
	r = aws_from_imds(ctx, http, c);
	if (r == HS_ERR_NETWORK && aws_env("AWS_EC2_METADATA_SERVICE_ENDPOINT") == NULL) {
		hs_ctx_clear_error(ctx);
		r = AWS_SKIP;
	}
	hs_http_free(http);
	return r;
}

int hs_aws_creds_resolve(struct hs_ctx *ctx, struct hs_http *http,
                         const struct hs_aws_cred_cfg *cfg, struct hs_aws_creds *out)
{
	const char *profile = cfg->profile ? cfg->profile : aws_env("AWS_PROFILE");
	int r;

	memset(out, 0, sizeof(*out));
	if (cfg->profile != NULL) /* chosen on the command line: nothing else */
		return aws_from_profile(ctx, cfg->profile, true, out);
	if ((r = aws_from_env(ctx, out)) != AWS_SKIP)
		return r;
	if ((r = aws_from_profile(ctx, profile ? profile : "default", profile != NULL, out)) !=
	    AWS_SKIP)
		return r;
	if ((r = aws_from_web_identity(ctx, http, cfg->region, out)) != AWS_SKIP)
		return r;
	if ((r = aws_from_github(ctx, http, cfg->region, out)) != AWS_SKIP)
		return r;
	if ((r = aws_from_container(ctx, http, out)) != AWS_SKIP)
		return r;
	if ((r = aws_from_imds_probe(ctx, cfg, out)) != AWS_SKIP)
		return r;
	return hs_error_set(ctx, HS_ERR_AUTH,
	                    "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a "
	                    "profile (AWS_PROFILE), AWS_ROLE_ARN with a web identity token or "
	                    "GitHub OIDC, or run on ECS/EC2 with a role");
}
