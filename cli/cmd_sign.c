/*
 * cmd_sign.c - `hsmsign sign`: local key files or Azure Key Vault, with
 * AzureSignTool's option spellings accepted as they are.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

enum {
	O_KEY = 1,
	O_P11_MODULE,
	O_P11_PIN,
	O_P11_ALLOW_PIN_IN_URI,
	O_P11_SESSIONS,
	O_CERT,
	O_PFX,
	O_PFX_PASS,
	O_KEY_PASS,
	O_DIGEST,
	O_OUTPUT,
	O_SKIP_SIGNED,
	O_DESCRIPTION,
	O_DESCRIPTION_URL,
	O_PAGE_HASHES,
	O_NO_PAGE_HASHES,
	O_MSI_DSE,
	O_SCRIPT_ENCODING,
	O_VERBOSE,
	O_QUIET,
	O_CONTINUE,
	O_INPUT_LIST,
	O_MDOP,
	O_COLORS,
	O_KV_URL,
	O_KV_CERT,
	O_KV_CERT_VERSION,
	O_KV_CLIENT_ID,
	O_KV_SECRET,
	O_KV_TENANT,
	O_KV_TOKEN,
	O_KV_MANAGED,
	O_KV_AUTHORITY,
	O_KV_ADD_CERT,
	O_KV_CREDENTIAL,
	O_KV_CLIENT_CERT,
	O_KV_CLIENT_CERT_PASS,
	O_KV_API_VERSION,
	O_KV_MHSM,
	O_KV_KEY_VERSION,
	O_NO_AIA,
	O_CA_FILE,
	O_TS_RFC3161,
	O_TS_DIGEST,
	O_TS_LEGACY,
	O_APPEND,
	O_HTTP_RETRIES,
	O_HTTP_MAX_TIME,
	O_TS_OPTIONAL,
	O_TS_RETRIES,
	O_TS_TIMEOUT,
};

const struct cli_opt cli_sign_opts[] = {
        {O_KEY, "--key", ARG_VALUE, "KEY",
         "private key file (PEM or DER), with --cert; or a pkcs11: URI (RFC 7512) naming a "
         "key on a PKCS#11 token"},
        {O_P11_MODULE, "--pkcs11-module", ARG_VALUE, "PATH",
         "PKCS#11 module (.so) of the token or HSM (with --key pkcs11:...)"},
        {O_P11_PIN, "--pin", ARG_VALUE, "SECRET",
         "token PIN: env:NAME, file:PATH or stdin (default: asked on the terminal)"},
        {O_P11_ALLOW_PIN_IN_URI, "--allow-pin-in-uri", ARG_NONE, NULL,
         "accept a pin-value attribute in the pkcs11: URI"},
        {O_P11_SESSIONS, "--pkcs11-sessions", ARG_VALUE, "N",
         "most concurrent signatures on the token (default 1)"},
        {O_CERT, "--cert", ARG_VALUE, "FILE",
         "certificate chain (PEM: signer, then intermediates; or one DER certificate); with "
         "Managed HSM, the signing certificate"},
        {O_PFX, "--pfx", ARG_VALUE, "FILE", "PKCS#12 file holding the key and the chain"},
        {O_PFX_PASS, "--pfx-pass", ARG_VALUE, "SECRET",
         "PKCS#12 password: env:NAME, file:PATH or stdin"},
        {O_KEY_PASS, "--key-pass", ARG_VALUE, "SECRET",
         "password of an encrypted key file: env:NAME, file:PATH or stdin"},
        {O_KV_URL, "-kvu|--kvu|--azure-key-vault-url", ARG_VALUE, "URL",
         "Azure Key Vault (https://NAME.vault.azure.net) or Managed HSM URL"},
        {O_KV_CERT, "-kvc|--kvc|--azure-key-vault-certificate", ARG_VALUE, "NAME",
         "certificate name in the vault (Managed HSM: the key name)"},
        {O_KV_CERT_VERSION, "-kvcv|--kvcv|--azure-key-vault-certificate-version", ARG_VALUE,
         "VERSION", "certificate version (default: the current one)"},
        {O_KV_CLIENT_ID, "-kvi|--kvi|--azure-key-vault-client-id", ARG_VALUE, "ID",
         "application (client) id; with -kvs a client secret, else selects a workload or "
         "user-assigned managed identity"},
        {O_KV_SECRET, "-kvs|--kvs|--azure-key-vault-client-secret", ARG_VALUE, "SECRET",
         "client secret: env:NAME, file:PATH, stdin (a literal value works but is visible to "
         "other processes)"},
        {O_KV_TENANT, "-kvt|--kvt|--azure-key-vault-tenant-id", ARG_VALUE, "ID",
         "directory (tenant) id"},
        {O_KV_TOKEN, "-kva|--kva|--azure-key-vault-accesstoken", ARG_VALUE, "TOKEN",
         "a ready access token: env:NAME, file:PATH, stdin (or a literal value)"},
        {O_KV_MANAGED, "-kvm|--kvm|--azure-key-vault-managed-identity", ARG_NONE, NULL,
         "use the default credential chain (environment, workload identity, GitHub OIDC, "
         "managed identity, Azure CLI)"},
        {O_KV_CREDENTIAL, "--azure-credential", ARG_VALUE, "NAME",
         "use one credential source: environment, workload-identity, github-oidc, "
         "managed-identity, azure-cli, secret, certificate, token, default"},
        {O_KV_CLIENT_CERT, "--azure-client-certificate", ARG_VALUE, "FILE",
         "client certificate credential (PEM with key, or PKCS#12)"},
        {O_KV_CLIENT_CERT_PASS, "--azure-client-certificate-password", ARG_VALUE, "SECRET",
         "its password: env:NAME, file:PATH or stdin"},
        {O_KV_AUTHORITY, "-au|--au|--azure-authority", ARG_VALUE, "CLOUD",
         "public (default), china, usgov (gov), or an authority URL"},
        {O_KV_ADD_CERT, "-ac|--ac|--additional-certificates", ARG_VALUE, "FILE",
         "more certificates for the embedded chain (repeatable)"},
        {O_KV_API_VERSION, "--azure-api-version", ARG_VALUE, "VERSION",
         "Key Vault api-version (default " HS_AZURE_API_VERSION ")"},
        {O_KV_MHSM, "--azure-managed-hsm", ARG_NONE, NULL,
         "the URL is a Managed HSM (automatic for *.managedhsm.azure.net)"},
        {O_KV_KEY_VERSION, "--azure-key-version", ARG_VALUE, "VERSION",
         "Managed HSM key version (default: the current one)"},
        {O_NO_AIA, "--no-aia", ARG_NONE, NULL,
         "do not fetch missing intermediate certificates from AIA URLs"},
        {O_CA_FILE, "--ca-file", ARG_VALUE, "FILE",
         "extra trusted roots for HTTPS (also SSL_CERT_FILE)"},
        {O_HTTP_RETRIES, "--http-retries", ARG_VALUE, "N",
         "retries of a throttled or failed vault request (default 6)"},
        {O_HTTP_MAX_TIME, "--http-max-time", ARG_VALUE, "SECONDS",
         "longest time one vault request may take with its retries (default 120)"},
        {O_DIGEST, "-fd|--fd|--file-digest", ARG_VALUE, "ALG",
         "digest: sha1, sha256 (default), sha384, sha512"},
        {O_OUTPUT, "-o|--output", ARG_VALUE, "FILE", "write the signed file here (one FILE only)"},
        {O_SKIP_SIGNED, "-s|--s|--skip-signed", ARG_NONE, NULL,
         "leave files that are already signed"},
        {O_DESCRIPTION, "-d|--d|--description", ARG_VALUE, "TEXT",
         "description shown by Windows (SpcSpOpusInfo programName)"},
        {O_DESCRIPTION_URL, "-du|--du|--description-url", ARG_VALUE, "URL",
         "URL shown with the description (SpcSpOpusInfo moreInfo)"},
        {O_PAGE_HASHES, "-ph|--ph|--page-hashing|--page-hashes", ARG_NONE, NULL,
         "include PE page hashes (SHA-1 pages for sha1, SHA-256 otherwise)"},
        {O_NO_PAGE_HASHES, "-nph|--nph|--no-page-hashing|--no-page-hashes", ARG_NONE, NULL,
         "do not include page hashes (default)"},
        {O_MSI_DSE, "--msi-dse|-add-msi-dse", ARG_NONE, NULL,
         "MSI: add an MsiDigitalSignatureEx stream, so the signature also covers the "
         "entries' names, sizes and times (kept automatically when re-signing a package "
         "that has one)"},
        {O_SCRIPT_ENCODING, "--script-encoding", ARG_VALUE, "ENC",
         "scripts without a byte order mark: utf-8, utf-16le, utf-16be or windows-1252 "
         "(default: as Windows reads the file type)"},
        {O_CONTINUE, "-coe|--coe|--continue-on-error", ARG_NONE, NULL,
         "keep signing the other files after a failure (default: stop at the first)"},
        {O_INPUT_LIST, "-ifl|--ifl|--input-file-list", ARG_VALUE, "FILE",
         "read more files to sign from FILE, one per line (blank lines skipped)"},
        {O_MDOP, "-mdop|--mdop|--max-degree-of-parallelism", ARG_VALUE, "N",
         "most files signed at once; files are signed one at a time in this version"},
        {O_TS_RFC3161, "-tr|--tr|--timestamp-rfc3161", ARG_VALUE, "URL",
         "RFC 3161 timestamp server; repeat or separate with commas to fail over in order"},
        {O_TS_DIGEST, "-td|--td|--timestamp-digest", ARG_VALUE, "ALG",
         "timestamp imprint digest (with -tr): sha1, sha256 (default), sha384, sha512"},
        {O_TS_LEGACY, "-t|--t|--timestamp-authenticode", ARG_VALUE, "URL",
         "legacy Authenticode timestamp server (compatibility only; prefer -tr)"},
        {O_TS_OPTIONAL, "--timestamp-optional", ARG_NONE, NULL,
         "if every timestamp server fails, sign without a timestamp (warning) instead of "
         "failing"},
        {O_TS_RETRIES, "--timestamp-retries", ARG_VALUE, "N",
         "retries per timestamp server of a throttled or failed request (default 2)"},
        {O_TS_TIMEOUT, "--timestamp-timeout", ARG_VALUE, "SECONDS",
         "longest wait for one timestamp server answer (default 30)"},
        {O_APPEND, "-as|--as|--append-signature", ARG_NONE, NULL,
         "add a nested signature (not yet supported: refused)"},
        {O_VERBOSE, "-v|--v|--verbose", ARG_NONE, NULL, "say what is done"},
        {O_QUIET, "-q|--q|--quiet", ARG_NONE, NULL, "print errors only"},
        {O_COLORS, "--colors", ARG_NONE, NULL,
         "accepted for AzureSignTool compatibility; no effect"},
        {0},
};

#define MAX_EXTRA_CERTS 16
#define MAX_TSA         16

struct sign_args {
	struct hs_key_file_opts key;
	struct hs_azure_key_opts azure;
	struct hs_pkcs11_key_opts p11;
	const char *pin;
	struct hs_sign_opts sign;
	const char *pfx_pass;
	const char *key_pass;
	const char *kv_secret;
	const char *kv_token;
	const char *kv_cert_pass;
	const char *input_list;
	const char *unsupported; /* first not-yet-supported option seen */
	const char *extra_certs[MAX_EXTRA_CERTS + 1];
	int n_extra_certs;
	int continue_on_error;
	int verbose, quiet, ph, nph;
	const char *ts_urls[MAX_TSA + 1];
	const char *ts_legacy[MAX_TSA + 1];
	int n_ts, n_legacy;
};

/* Options that set a plain string field. */
static const char **string_field(struct sign_args *a, int id)
{
	switch (id) {
	case O_KEY:
		return &a->key.key_path;
	case O_PFX:
		return &a->key.pfx_path;
	case O_PFX_PASS:
		return &a->pfx_pass;
	case O_KEY_PASS:
		return &a->key_pass;
	case O_OUTPUT:
		return &a->sign.output;
	case O_DESCRIPTION:
		return &a->sign.description;
	case O_DESCRIPTION_URL:
		return &a->sign.description_url;
	case O_INPUT_LIST:
		return &a->input_list;
	case O_KV_URL:
		return &a->azure.vault_url;
	case O_KV_CERT:
		return &a->azure.certificate;
	case O_KV_CERT_VERSION:
		return &a->azure.certificate_version;
	case O_KV_CLIENT_ID:
		return &a->azure.client_id;
	case O_KV_SECRET:
		return &a->kv_secret;
	case O_KV_TENANT:
		return &a->azure.tenant_id;
	case O_KV_TOKEN:
		return &a->kv_token;
	case O_KV_AUTHORITY:
		return &a->azure.authority;
	case O_KV_CREDENTIAL:
		return &a->azure.credential;
	case O_KV_CLIENT_CERT:
		return &a->azure.client_cert_path;
	case O_KV_CLIENT_CERT_PASS:
		return &a->kv_cert_pass;
	case O_KV_API_VERSION:
		return &a->azure.api_version;
	case O_KV_KEY_VERSION:
		return &a->azure.key_version;
	case O_CA_FILE:
		return &a->azure.ca_file;
	}
	return NULL;
}

static int parse_digest(const char *value, enum hs_digest *out)
{
	if (hs_digest_from_name(out, value) < 0) {
		cli_error("sign: unknown digest '%s' (sha1, sha256, sha384, sha512)", value);
		return EXIT_INVALID_ARGS;
	}
	return 0;
}

/* Adds the comma-separated URLs in value (split in place: it is an argv
 * string) to a NULL-terminated list. */
static int add_tsa_urls(const char **list, int *n, char *value)
{
	for (char *url = value, *next; url != NULL; url = next) {
		next = strchr(url, ',');
		if (next != NULL)
			*next++ = '\0';
		if (*url == '\0')
			continue;
		if (*n == MAX_TSA) {
			cli_error("sign: at most %d timestamp servers", MAX_TSA);
			return EXIT_INVALID_ARGS;
		}
		list[(*n)++] = url;
		list[*n] = NULL;
	}
	return 0;
}

static int ts_number_opt(struct sign_args *a, int id, const char *value)
{
	char *end;
	long n = strtol(value, &end, 10);

	if (*value == '\0' || *end != '\0' || n < 0 || n > 3600) {
		cli_error("sign: %s takes a whole number",
		          id == O_TS_RETRIES ? "--timestamp-retries" : "--timestamp-timeout");
		return EXIT_INVALID_ARGS;
	}
	if (id == O_TS_RETRIES)
		a->sign.timestamp.max_retries = n == 0 ? -1 : (int)n;
	else
		a->sign.timestamp.timeout_ms = n * 1000;
	return 0;
}

static int flag_opt(struct sign_args *a, int id, const char *value)
{
	switch (id) {
	case O_CERT:
		a->key.cert_path = value;
		a->azure.cert_file = value;
		a->p11.cert_file = value;
		break;
	case O_P11_MODULE:
		a->p11.module = value;
		break;
	case O_P11_PIN:
		a->pin = value;
		break;
	case O_P11_ALLOW_PIN_IN_URI:
		a->p11.allow_pin_in_uri = 1;
		break;
	case O_P11_SESSIONS: {
		char *end;
		long n = strtol(value, &end, 10);

		if (*value == '\0' || *end != '\0' || n < 1 || n > 64) {
			cli_error("sign: --pkcs11-sessions takes a number from 1 to 64");
			return EXIT_INVALID_ARGS;
		}
		a->p11.sessions = (int)n;
		break;
	}
	case O_SKIP_SIGNED:
		a->sign.skip_signed = 1;
		break;
	case O_PAGE_HASHES:
		a->ph = 1;
		break;
	case O_NO_PAGE_HASHES:
		a->nph = 1;
		break;
	case O_MSI_DSE:
		a->sign.msi_dse = 1;
		break;
	case O_VERBOSE:
		a->verbose = 1;
		break;
	case O_QUIET:
		a->quiet = 1;
		break;
	case O_CONTINUE:
		a->continue_on_error = 1;
		break;
	case O_KV_MANAGED:
		a->azure.credential = a->azure.credential ? a->azure.credential : "default";
		break;
	case O_KV_MHSM:
		a->azure.managed_hsm = 1;
		break;
	case O_NO_AIA:
		a->azure.no_aia = 1;
		break;
	case O_COLORS:
		break;
	case O_MDOP: {
		char *end;
		long n = strtol(value, &end, 10);

		if (*value == '\0' || *end != '\0' || n < -1) {
			cli_error("sign: --max-degree-of-parallelism takes a positive integer, 0 "
			          "or -1");
			return EXIT_INVALID_ARGS;
		}
		break;
	}
	case O_HTTP_RETRIES:
	case O_HTTP_MAX_TIME: {
		char *end;
		long n = strtol(value, &end, 10);

		if (*value == '\0' || *end != '\0' || n < 0 || n > 100000) {
			cli_error("sign: %s takes a whole number",
			          id == O_HTTP_RETRIES ? "--http-retries" : "--http-max-time");
			return EXIT_INVALID_ARGS;
		}
		if (id == O_HTTP_RETRIES)
			a->azure.max_retries = n == 0 ? -1 : (int)n;
		else
			a->azure.max_total_ms = n * 1000;
		break;
	}
	case O_KV_ADD_CERT:
		if (a->n_extra_certs == MAX_EXTRA_CERTS) {
			cli_error("sign: at most %d --additional-certificates", MAX_EXTRA_CERTS);
			return EXIT_INVALID_ARGS;
		}
		a->extra_certs[a->n_extra_certs++] = value;
		break;
	case O_TS_RFC3161:
		return add_tsa_urls(a->ts_urls, &a->n_ts, (char *)value);
	case O_TS_LEGACY:
		return add_tsa_urls(a->ts_legacy, &a->n_legacy, (char *)value);
	case O_TS_OPTIONAL:
		a->sign.timestamp.optional = 1;
		break;
	case O_TS_RETRIES:
	case O_TS_TIMEOUT:
		return ts_number_opt(a, id, value);
	case O_APPEND:
		if (!a->unsupported)
			a->unsupported = "--append-signature";
		break;
	case O_TS_DIGEST:
		return parse_digest(value, &a->sign.timestamp.digest);
	}
	return 0;
}

static int sign_opt(int id, const char *value, void *userdata)
{
	struct sign_args *a = userdata;
	const char **field = string_field(a, id);

	if (field != NULL) {
		*field = value;
		return 0;
	}
	if (id == O_DIGEST)
		return parse_digest(value, &a->sign.digest);
	if (id == O_SCRIPT_ENCODING)
		return cli_parse_text_encoding(value, &a->sign.script_encoding);
	return flag_opt(a, id, value);
}

static int check_exclusive(const struct sign_args *a)
{
	static const char *const pairs[][2] = {
	        {"--quiet", "--verbose"},
	        {"--page-hashing", "--no-page-hashing"},
	};
	const int set[][2] = {{a->quiet, a->verbose}, {a->ph, a->nph}};

	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		if (set[i][0] && set[i][1]) {
			cli_error("sign: %s and %s cannot be combined", pairs[i][0], pairs[i][1]);
			return EXIT_INVALID_ARGS;
		}
	}
	return 0;
}

static bool is_pkcs11_uri(const char *key)
{
	return key != NULL && strncasecmp(key, "pkcs11:", 7) == 0;
}

static int check_key_source(const struct sign_args *a)
{
	bool p11 = is_pkcs11_uri(a->key.key_path);
	bool file = a->key.pfx_path || (a->key.key_path && !p11);
	bool azure = a->azure.vault_url != NULL;

	if ((p11 && (a->key.pfx_path || azure)) ||
	    (!p11 && (a->p11.module || a->pin || a->p11.sessions))) {
		cli_error("sign: --pkcs11-module, --pin and --pkcs11-sessions go with --key "
		          "pkcs11:URI, and no other key");
		return EXIT_INVALID_ARGS;
	}
	if (file && azure) {
		cli_error("sign: give a key file (--key/--pfx) or a vault (-kvu), not both");
		return EXIT_INVALID_ARGS;
	}
	if (!file && !azure && !p11) {
		cli_error(
		        "sign: no key: give --key and --cert, --pfx, --key pkcs11:URI, or a vault "
		        "with -kvu and -kvc");
		return EXIT_INVALID_ARGS;
	}
	if (file && a->key.pfx_path == NULL && a->key.cert_path == NULL) {
		cli_error("sign: --key needs its certificate chain (--cert)");
		return EXIT_INVALID_ARGS;
	}
	if (a->pfx_pass != NULL && a->key_pass != NULL) {
		cli_error("sign: give --pfx-pass or --key-pass, not both");
		return EXIT_INVALID_ARGS;
	}
	return 0;
}

static int check_args(const struct sign_args *a, int n_files)
{
	int r;

	if (a->unsupported != NULL) {
		cli_error("sign: %s is not yet supported by this version of hsmsign; "
		          "run without it",
		          a->unsupported);
		return EXIT_INVALID_ARGS;
	}
	if ((r = check_exclusive(a)) != 0 || (r = check_key_source(a)) != 0)
		return r;
	if (n_files == 0) {
		cli_error("sign: no files to sign (see 'hsmsign sign --help')");
		return EXIT_INVALID_ARGS;
	}
	if (a->sign.output != NULL && n_files > 1) {
		cli_error("sign: --output needs exactly one input file");
		return EXIT_INVALID_ARGS;
	}
	return 0;
}

/* Adds the lines of an input file list to files (capacity *cap, grown);
 * the caller frees the added strings. */
static int read_input_list(const char *path, char ***files, int *n, int *cap)
{
	FILE *fp = fopen(path, "r");
	char *line = NULL;
	size_t size = 0;
	ssize_t len;

	if (fp == NULL) {
		cli_error("sign: %s: cannot open input file list", path);
		return EXIT_INVALID_ARGS;
	}
	while ((len = getline(&line, &size, fp)) >= 0) {
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (len == 0)
			continue;
		if (*n == *cap) {
			char **grown = realloc(*files, sizeof(**files) * (size_t)(*cap * 2 + 16));
			if (grown == NULL)
				break;
			*files = grown;
			*cap = *cap * 2 + 16;
		}
		(*files)[(*n)++] = line;
		line = NULL;
		size = 0;
	}
	free(line);
	fclose(fp);
	return 0;
}

/* Reads a secret that AzureSignTool takes literally: env:/file:/stdin
 * forms are preferred, a literal value is accepted with a warning. */
static int read_compat_secret(const char *option, const char *spec, char **out)
{
	if (strncmp(spec, "env:", 4) == 0 || strncmp(spec, "file:", 5) == 0 ||
	    strcmp(spec, "stdin") == 0 || strcmp(spec, "-") == 0)
		return cli_secret_read(option, spec, out);
	if (cli_verbosity >= 1)
		cli_error("warning: %s given on the command line is visible to other processes; "
		          "use env:NAME, file:PATH or stdin",
		          option);
	*out = cli_secret_dup(spec);
	return *out ? 0 : EXIT_ALL_FAILED;
}

struct secrets {
	char *password, *kv_secret, *kv_token, *kv_cert_pass;
};

static void secrets_free(struct secrets *s)
{
	cli_secret_free(s->password);
	cli_secret_free(s->kv_secret);
	cli_secret_free(s->kv_token);
	cli_secret_free(s->kv_cert_pass);
	memset(s, 0, sizeof(*s));
}

static int read_secrets(const struct sign_args *a, struct secrets *s)
{
	const char *spec = a->pfx_pass ? a->pfx_pass : a->key_pass;
	int r = 0;

	if (spec != NULL)
		r = cli_secret_read(a->pfx_pass ? "--pfx-pass" : "--key-pass", spec, &s->password);
	if (r == 0 && a->kv_secret != NULL)
		r = read_compat_secret("--azure-key-vault-client-secret", a->kv_secret,
		                       &s->kv_secret);
	if (r == 0 && a->kv_token != NULL)
		r = read_compat_secret("--azure-key-vault-accesstoken", a->kv_token, &s->kv_token);
	if (r == 0 && a->kv_cert_pass != NULL)
		r = cli_secret_read("--azure-client-certificate-password", a->kv_cert_pass,
		                    &s->kv_cert_pass);
	return r;
}

/* Opens the key; secrets are wiped as soon as it is open. */
static int open_key(struct hs_ctx *ctx, struct sign_args *a, struct hs_key **key)
{
	struct secrets s = {0};
	int r;

	if (is_pkcs11_uri(a->key.key_path)) {
		a->p11.uri = a->key.key_path;
		a->p11.extra_certs = a->extra_certs;
		return cli_pkcs11_open_key(ctx, &a->p11, a->pin, key);
	}
	if ((r = read_secrets(a, &s)) != 0)
		goto out;
	if (a->azure.vault_url != NULL) {
		a->azure.client_secret = s.kv_secret;
		a->azure.access_token = s.kv_token;
		a->azure.client_cert_password = s.kv_cert_pass;
		a->azure.extra_certs = a->extra_certs;
		r = hs_key_open_azure(ctx, key, &a->azure);
		a->azure.client_secret = a->azure.access_token = a->azure.client_cert_password =
		        NULL;
	} else {
		a->key.password = s.password;
		r = hs_key_open_file(ctx, key, &a->key);
		a->key.password = NULL;
	}
	if (r < 0) {
		cli_error("sign: %s", hs_ctx_message(ctx));
		r = EXIT_INVALID_ARGS;
	}
out:
	secrets_free(&s);
	return r;
}

static int sign_all(struct hs_ctx *ctx, struct hs_key *key, const struct sign_args *a, char **files,
                    int n_files)
{
	int failed = 0, i;

	for (i = 0; i < n_files; i++) {
		enum hs_sign_outcome outcome;

		hs_ctx_clear_error(ctx);
		if (hs_sign_file(ctx, key, files[i], &a->sign, &outcome) < 0) {
			cli_error_ctx(ctx, files[i]);
			failed++;
			if (!a->continue_on_error && i + 1 < n_files) {
				cli_error("stopped after the first failure: %d file(s) not signed "
				          "(use --continue-on-error to go on)",
				          n_files - i - 1);
				failed += n_files - i - 1;
				break;
			}
		} else if (cli_verbosity >= 1) {
			printf("%s %s\n",
			       outcome == HS_SIGN_SKIPPED ? "Skipped (already signed):" : "Signed:",
			       a->sign.output ? a->sign.output : files[i]);
		}
	}
	if (failed == 0)
		return EXIT_OK;
	return failed == n_files ? EXIT_ALL_FAILED : EXIT_SOME_FAILED;
}

/* AzureSignTool's warnings about timestamps (peers/azuresigntool.md). */
static void warn_timestamps(const struct sign_args *a)
{
	if (cli_verbosity < 1)
		return;
	if (a->n_ts == 0 && a->n_legacy == 0)
		cli_error("warning: Signatures will not be timestamped. Signatures will become "
		          "invalid when the signing certificate expires.");
	else if (a->n_ts == 0)
		cli_error("warning: Authenticode timestamps should only be used for compatibility "
		          "purposes. RFC 3161 timestamps should be used (-tr).");
}

static void apply_verbosity(struct sign_args *a)
{
	/* Test knob: tests shrink the retry backoff (docs/cli.md). */
	const char *backoff = getenv("HSMSIGN_HTTP_BACKOFF_MS");

	if (backoff != NULL && *backoff != '\0')
		a->azure.backoff_base_ms = a->sign.timestamp.backoff_base_ms =
		        strtol(backoff, NULL, 10);
	if (a->n_ts > 0)
		a->sign.timestamp.urls = a->ts_urls;
	if (a->n_legacy > 0)
		a->sign.timestamp.legacy_urls = a->ts_legacy;
	if (a->verbose)
		cli_verbosity = 2;
	if (a->quiet)
		cli_verbosity = 0;
	a->sign.page_hashes = a->ph;
}

int cli_cmd_sign(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct sign_args a = {.key = HS_KEY_FILE_OPTS_INIT,
	                      .azure = HS_AZURE_KEY_OPTS_INIT,
	                      .p11 = HS_PKCS11_KEY_OPTS_INIT,
	                      .sign = HS_SIGN_OPTS_INIT};
	int cap = argc, n_files = 0, n_argv = 0, r;
	char **files = calloc((size_t)cap, sizeof(*files));
	struct hs_ctx *ctx = NULL;
	struct hs_key *key = NULL;

	if (files == NULL || hs_ctx_new(&ctx) < 0) {
		cli_error("out of memory");
		r = EXIT_ALL_FAILED;
		goto out;
	}
	if ((r = cli_parse(cmd, argc, argv, sign_opt, &a, files, &n_files)) != 0)
		goto out;
	apply_verbosity(&a);
	n_argv = n_files;
	if (a.input_list != NULL &&
	    (r = read_input_list(a.input_list, &files, &n_files, &cap)) != 0)
		goto out;
	if ((r = check_args(&a, n_files)) != 0)
		goto out;
	hs_ctx_set_log(ctx, cli_log, NULL);
	if ((r = open_key(ctx, &a, &key)) != 0)
		goto out;
	if (cli_verbosity >= 2)
		fprintf(stderr, "hsmsign: info: signing with %s key '%s', %s\n",
		        hs_key_provider_name(key), hs_key_subject(key),
		        hs_digest_name(a.sign.digest));
	r = sign_all(ctx, key, &a, files, n_files);
	if (r == EXIT_OK) /* a failure stays one line per file */
		warn_timestamps(&a);
out:
	for (int i = n_argv; i < n_files; i++)
		free(files[i]);
	hs_key_free(key);
	hs_ctx_free(ctx);
	free(files);
	return r < 0 ? EXIT_OK : r;
}
