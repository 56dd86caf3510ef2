/*
 * cmd_sign.c - `hsmsign sign`: local key files or Azure Key Vault, with
 * AzureSignTool's option spellings accepted as they are.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "batch.h"
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
	O_REPLACE,
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
	O_AWS_KEY,
	O_AWS_REGION,
	O_AWS_PROFILE,
	O_AWS_ENDPOINT,
	O_GCP_KEY,
	O_GCP_TOKEN,
	O_GCP_CREDENTIALS,
	O_GCP_WIF_PROVIDER,
	O_GCP_SERVICE_ACCOUNT,
	O_GCP_ENDPOINT,
	O_HCV_KEY,
	O_HCV_ADDR,
	O_HCV_MOUNT,
	O_HCV_KEY_VERSION,
	O_HCV_TOKEN,
	O_HCV_ROLE_ID,
	O_HCV_SECRET_ID,
	O_HCV_JWT_ROLE,
	O_HCV_JWT_AUDIENCE,
	O_HCV_AUTH_MOUNT,
	O_TS_ENDPOINT,
	O_TS_ACCOUNT,
	O_TS_PROFILE,
	O_TS_API_VERSION,
	O_CA_FILE,
	O_TS_RFC3161,
	O_TS_DIGEST,
	O_TS_LEGACY,
	O_APPEND,
	O_SIGN_REQUEST,
	O_HTTP_RETRIES,
	O_HTTP_MAX_TIME,
	O_TS_OPTIONAL,
	O_TS_RETRIES,
	O_TS_TIMEOUT,
	O_REPORT,
	O_VAULT_RATE,
	O_TS_RATE,
	O_OIDC_AUDIENCE,
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
         "managed-identity, azure-cli, secret, certificate, token, default; or "
         "github-oidc-bearer (the GitHub Actions OIDC token itself, for 'hsmsign serve')"},
        {O_OIDC_AUDIENCE, "--oidc-audience", ARG_VALUE, "AUD",
         "audience of the GitHub OIDC token for --azure-credential github-oidc-bearer "
         "(default: hsmsign)"},
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
        {O_AWS_KEY, "--aws-kms-key", ARG_VALUE, "KEY",
         "AWS KMS key: id, alias/NAME or ARN (with --cert; docs/providers.md)"},
        {O_AWS_REGION, "--aws-region", ARG_VALUE, "REGION",
         "AWS region (default: the key ARN's, AWS_REGION, or the profile's)"},
        {O_AWS_PROFILE, "--aws-profile", ARG_VALUE, "NAME",
         "use only this profile of the shared AWS credentials/config files"},
        {O_AWS_ENDPOINT, "--aws-kms-endpoint", ARG_VALUE, "URL",
         "AWS KMS endpoint (default: AWS_ENDPOINT_URL_KMS or the region's)"},
        {O_GCP_KEY, "--gcp-kms-key", ARG_VALUE, "NAME",
         "Google Cloud KMS key projects/.../cryptoKeys/K[/cryptoKeyVersions/N] (with --cert)"},
        {O_GCP_TOKEN, "--gcp-access-token", ARG_VALUE, "SECRET",
         "Google OAuth access token (env:NAME, file:PATH or stdin)"},
        {O_GCP_CREDENTIALS, "--gcp-credentials", ARG_VALUE, "FILE",
         "service-account key or external_account JSON (default: "
         "GOOGLE_APPLICATION_CREDENTIALS)"},
        {O_GCP_WIF_PROVIDER, "--gcp-workload-provider", ARG_VALUE, "NAME",
         "GitHub Actions OIDC through this workload identity provider "
         "(projects/N/locations/global/workloadIdentityPools/P/providers/X)"},
        {O_GCP_SERVICE_ACCOUNT, "--gcp-service-account", ARG_VALUE, "EMAIL",
         "service account to impersonate after --gcp-workload-provider"},
        {O_GCP_ENDPOINT, "--gcp-kms-endpoint", ARG_VALUE, "URL",
         "Cloud KMS endpoint (default: https://cloudkms.googleapis.com)"},
        {O_HCV_KEY, "--vault-transit-key", ARG_VALUE, "NAME",
         "HashiCorp Vault transit key (with --cert; docs/providers.md)"},
        {O_HCV_ADDR, "--vault-addr", ARG_VALUE, "URL", "Vault address (default: VAULT_ADDR)"},
        {O_HCV_MOUNT, "--vault-transit-mount", ARG_VALUE, "PATH",
         "mount path of the transit engine (default: transit)"},
        {O_HCV_KEY_VERSION, "--vault-key-version", ARG_VALUE, "N",
         "transit key version (default: the latest)"},
        {O_HCV_TOKEN, "--vault-token", ARG_VALUE, "SECRET",
         "Vault token (env:NAME, file:PATH or stdin; default: VAULT_TOKEN, ~/.vault-token)"},
        {O_HCV_ROLE_ID, "--vault-role-id", ARG_VALUE, "ID", "AppRole login: the role id"},
        {O_HCV_SECRET_ID, "--vault-secret-id", ARG_VALUE, "SECRET",
         "AppRole login: the secret id (env:NAME, file:PATH or stdin)"},
        {O_HCV_JWT_ROLE, "--vault-jwt-role", ARG_VALUE, "ROLE",
         "JWT login with the GitHub Actions OIDC token, as this role"},
        {O_HCV_JWT_AUDIENCE, "--vault-jwt-audience", ARG_VALUE, "AUD",
         "audience of the GitHub OIDC token for --vault-jwt-role"},
        {O_HCV_AUTH_MOUNT, "--vault-auth-mount", ARG_VALUE, "PATH",
         "mount path of the AppRole or JWT auth method (default: approle or jwt)"},
        {O_TS_ENDPOINT, "--trusted-signing-endpoint", ARG_VALUE, "URL",
         "Azure Trusted Signing endpoint, e.g. https://weu.codesigning.azure.net (Azure "
         "credentials as for -kvu; docs/providers.md)"},
        {O_TS_ACCOUNT, "--trusted-signing-account", ARG_VALUE, "NAME",
         "Trusted Signing code signing account"},
        {O_TS_PROFILE, "--trusted-signing-profile", ARG_VALUE, "NAME",
         "Trusted Signing certificate profile"},
        {O_TS_API_VERSION, "--trusted-signing-api-version", ARG_VALUE, "VERSION",
         "Trusted Signing api-version (default 2022-06-15-preview)"},
        {O_CA_FILE, "--ca-file", ARG_VALUE, "FILE",
         "extra trusted roots for HTTPS (also SSL_CERT_FILE)"},
        {O_HTTP_RETRIES, "--http-retries", ARG_VALUE, "N",
         "retries of a throttled or failed vault request (default 6)"},
        {O_HTTP_MAX_TIME, "--http-max-time", ARG_VALUE, "SECONDS",
         "longest time one vault request may take with its retries (default 120)"},
        {O_DIGEST, "-fd|--fd|--file-digest", ARG_VALUE, "ALG",
         "digest: sha1, sha256 (default), sha384, sha512; a list (sha1,sha256) or a repeated "
         "-fd dual-signs: the first is the primary signature, the others are nested in it"},
        {O_OUTPUT, "-o|--output", ARG_VALUE, "FILE", "write the signed file here (one FILE only)"},
        {O_SKIP_SIGNED, "-s|--s|--skip-signed", ARG_NONE, NULL,
         "leave files that are already signed"},
        {O_REPLACE, "--replace", ARG_NONE, NULL,
         "NuGet: replace an existing signature (refused without it)"},
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
         "read more files to sign from FILE, one per line (blank lines and # comments "
         "skipped; entries may be patterns); @FILE as an operand does the same"},
        {O_MDOP, "-mdop|--mdop|--max-degree-of-parallelism", ARG_VALUE, "N",
         "most files signed at once: sign requests in flight, while up to N/2 more files are "
         "read and written (default: the number of CPUs with a local key, 16 with a remote "
         "one; 0 or -1: the default)"},
        {O_REPORT, "--report", ARG_VALUE, "FILE.json",
         "write a JSON report: per file the result or error, SHA-256 before and after, "
         "format, digest, key id, duration"},
        {O_VAULT_RATE, "--vault-rate-limit", ARG_VALUE, "N",
         "most vault requests per second (default: below the service's documented limit "
         "for the key type; 0: no limit)"},
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
        {O_TS_RATE, "--timestamp-rate-limit", ARG_VALUE, "N",
         "most requests per second to each timestamp server (default: no limit)"},
        {O_TS_TIMEOUT, "--timestamp-timeout", ARG_VALUE, "SECONDS",
         "longest wait for one timestamp server answer (default 30)"},
        {O_SIGN_REQUEST, "--sign-request", ARG_VALUE, "FILE.req",
         "sign the digest in a signing request ('hsmsign digest -o') with this key instead "
         "of files; the raw signature goes to -o, for 'hsmsign attach'"},
        {O_APPEND, "-as|--as|--append-signature", ARG_NONE, NULL,
         "keep an existing signature and nest the new one in it (not for catalogs)"},
        {O_VERBOSE, "-v|--v|--verbose", ARG_NONE, NULL, "say what is done"},
        {O_QUIET, "-q|--q|--quiet", ARG_NONE, NULL, "print errors only"},
        {O_COLORS, "--colors", ARG_NONE, NULL,
         "accepted for AzureSignTool compatibility; no effect"},
        {0},
};

#define MAX_EXTRA_CERTS 16
#define MAX_TSA         CLI_MAX_TSA
#define MAX_DIGESTS     8

struct sign_args {
	struct hs_key_file_opts key;
	struct hs_azure_key_opts azure;
	struct hs_aws_kms_key_opts aws;
	struct hs_gcp_kms_key_opts gcp;
	const char *gcp_token;
	struct hs_vault_transit_key_opts hcv;
	const char *hcv_token, *hcv_secret_id;
	struct hs_trusted_signing_key_opts ts;
	struct hs_pkcs11_key_opts p11;
	const char *pin;
	struct hs_sign_opts sign;
	const char *pfx_pass;
	const char *key_pass;
	const char *kv_secret;
	const char *kv_token;
	const char *kv_cert_pass;
	const char *input_list;
	const char *sign_request; /* --sign-request: sign this instead of files */
	const char *report;
	int jobs;
	const char *extra_certs[MAX_EXTRA_CERTS + 1];
	int n_extra_certs;
	int continue_on_error;
	int verbose, quiet, ph, nph;
	const char *ts_urls[MAX_TSA + 1];
	const char *ts_legacy[MAX_TSA + 1];
	int n_ts, n_legacy;
	enum hs_digest digests[MAX_DIGESTS + 1]; /* -fd: primary, then nested; 0-terminated */
	int n_digests;
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
	case O_SIGN_REQUEST:
		return &a->sign_request;
	case O_DESCRIPTION:
		return &a->sign.description;
	case O_DESCRIPTION_URL:
		return &a->sign.description_url;
	case O_INPUT_LIST:
		return &a->input_list;
	case O_REPORT:
		return &a->report;
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
	case O_OIDC_AUDIENCE:
		return &a->azure.oidc_audience;
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
	case O_AWS_KEY:
		return &a->aws.key_id;
	case O_AWS_REGION:
		return &a->aws.region;
	case O_AWS_PROFILE:
		return &a->aws.profile;
	case O_AWS_ENDPOINT:
		return &a->aws.endpoint;
	case O_GCP_KEY:
		return &a->gcp.key;
	case O_GCP_TOKEN:
		return &a->gcp_token;
	case O_GCP_CREDENTIALS:
		return &a->gcp.credentials_file;
	case O_GCP_WIF_PROVIDER:
		return &a->gcp.workload_provider;
	case O_GCP_SERVICE_ACCOUNT:
		return &a->gcp.service_account;
	case O_GCP_ENDPOINT:
		return &a->gcp.endpoint;
	case O_HCV_KEY:
		return &a->hcv.key;
	case O_HCV_ADDR:
		return &a->hcv.addr;
	case O_HCV_MOUNT:
		return &a->hcv.mount;
	case O_HCV_TOKEN:
		return &a->hcv_token;
	case O_HCV_ROLE_ID:
		return &a->hcv.role_id;
	case O_HCV_SECRET_ID:
		return &a->hcv_secret_id;
	case O_HCV_JWT_ROLE:
		return &a->hcv.jwt_role;
	case O_HCV_JWT_AUDIENCE:
		return &a->hcv.jwt_audience;
	case O_HCV_AUTH_MOUNT:
		return &a->hcv.auth_mount;
	case O_TS_ENDPOINT:
		return &a->ts.endpoint;
	case O_TS_ACCOUNT:
		return &a->ts.account;
	case O_TS_PROFILE:
		return &a->ts.profile;
	case O_TS_API_VERSION:
		return &a->ts.api_version;
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

/* -fd: a digest or a comma-separated list (split in place), repeatable. */
static int add_digests(struct sign_args *a, char *value)
{
	for (char *name = value, *next; name != NULL; name = next) {
		int r;

		next = strchr(name, ',');
		if (next != NULL)
			*next++ = '\0';
		if (a->n_digests == MAX_DIGESTS) {
			cli_error("sign: at most %d file digests", MAX_DIGESTS);
			return EXIT_INVALID_ARGS;
		}
		if ((r = parse_digest(name, &a->digests[a->n_digests])) != 0)
			return r;
		a->digests[++a->n_digests] = 0;
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

/* --vault-rate-limit, --timestamp-rate-limit: requests per second, 0: none. */
static int rate_opt(struct sign_args *a, int id, const char *value)
{
	char *end;
	double n = strtod(value, &end);

	if (*value == '\0' || *end != '\0' || !(n >= 0 && n <= 100000)) {
		cli_error("sign: %s takes a number of requests per second",
		          id == O_VAULT_RATE ? "--vault-rate-limit" : "--timestamp-rate-limit");
		return EXIT_INVALID_ARGS;
	}
	if (id == O_VAULT_RATE)
		a->azure.rate_limit = n > 0 ? n : -1;
	else
		a->sign.timestamp.rate_limit = n;
	return 0;
}

static int flag_opt(struct sign_args *a, int id, const char *value)
{
	switch (id) {
	case O_CERT:
		a->key.cert_path = value;
		a->azure.cert_file = value;
		a->aws.cert_file = value;
		a->gcp.cert_file = value;
		a->hcv.cert_file = value;
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
	case O_HCV_KEY_VERSION: {
		char *end;
		long n = strtol(value, &end, 10);

		if (*value == '\0' || *end != '\0' || n < 1 || n > 1000000) {
			cli_error("sign: --vault-key-version takes a version number");
			return EXIT_INVALID_ARGS;
		}
		a->hcv.key_version = n;
		break;
	}
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
	case O_REPLACE:
		a->sign.replace = 1;
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

		if (*value == '\0' || *end != '\0' || n < -1 || n > 256) {
			cli_error(
			        "sign: --max-degree-of-parallelism takes an integer from 1 to 256, "
			        "0 or -1");
			return EXIT_INVALID_ARGS;
		}
		a->jobs = n > 0 ? (int)n : 0;
		break;
	}
	case O_VAULT_RATE:
	case O_TS_RATE:
		return rate_opt(a, id, value);
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
		return cli_add_tsa_urls("sign", a->ts_urls, &a->n_ts, (char *)value);
	case O_TS_LEGACY:
		return cli_add_tsa_urls("sign", a->ts_legacy, &a->n_legacy, (char *)value);
	case O_TS_OPTIONAL:
		a->sign.timestamp.optional = 1;
		break;
	case O_TS_RETRIES:
	case O_TS_TIMEOUT:
		return ts_number_opt(a, id, value);
	case O_APPEND:
		a->sign.append = 1;
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
		return add_digests(a, (char *)value);
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
	int clouds = azure + (a->aws.key_id != NULL) + (a->gcp.key != NULL) + (a->hcv.key != NULL) +
	             (a->ts.endpoint != NULL);

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
	if (clouds > 1 || (clouds && (file || p11))) {
		cli_error("sign: give one key source: a key file, a pkcs11: URI, a vault or a "
		          "cloud KMS key");
		return EXIT_INVALID_ARGS;
	}
	if (!file && !azure && !p11 && !clouds) {
		cli_error("sign: no key: give --key and --cert, --pfx, --key pkcs11:URI, a vault "
		          "with -kvu and -kvc, or a cloud KMS key (--aws-kms-key, --gcp-kms-key, "
		          "--vault-transit-key, --trusted-signing-endpoint)");
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

	if ((r = check_exclusive(a)) != 0 || (r = check_key_source(a)) != 0)
		return r;
	if (a->sign_request != NULL)
		return cli_check_sign_request(a->sign_request, a->sign.output, n_files);
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

/* Reads a secret that AzureSignTool takes literally: env:/file:/stdin
 * forms are preferred, a literal value is accepted with a warning. */
static int read_compat_secret(const char *option, const char *spec, char **out)
{
	if (strncmp(spec, "env:", 4) == 0 || strncmp(spec, "file:", 5) == 0 ||
	    cli_spec_is_stdin(spec))
		return cli_secret_read(option, spec, out);
	if (cli_verbosity >= 1)
		cli_error("warning: %s given on the command line is visible to other processes; "
		          "use env:NAME, file:PATH or stdin",
		          option);
	*out = cli_secret_dup(spec);
	return *out ? 0 : EXIT_ALL_FAILED;
}

struct secrets {
	char *password, *kv_secret, *kv_token, *kv_cert_pass, *gcp_token, *hcv_token,
	        *hcv_secret_id;
};

static void secrets_free(struct secrets *s)
{
	cli_secret_free(s->password);
	cli_secret_free(s->kv_secret);
	cli_secret_free(s->kv_token);
	cli_secret_free(s->kv_cert_pass);
	cli_secret_free(s->gcp_token);
	cli_secret_free(s->hcv_token);
	cli_secret_free(s->hcv_secret_id);
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
	if (r == 0 && a->gcp_token != NULL)
		r = cli_secret_read("--gcp-access-token", a->gcp_token, &s->gcp_token);
	if (r == 0 && a->hcv_token != NULL)
		r = cli_secret_read("--vault-token", a->hcv_token, &s->hcv_token);
	if (r == 0 && a->hcv_secret_id != NULL)
		r = cli_secret_read("--vault-secret-id", a->hcv_secret_id, &s->hcv_secret_id);
	return r;
}

/* The cloud KMS providers share --ca-file and the --http-* knobs, which
 * the parser stores in the Azure options. */
static void cli_cloud_http_opts(const struct hs_azure_key_opts *azure, const char **ca_file,
                                int *max_retries, long *max_total_ms, long *backoff_base_ms)
{
	*ca_file = azure->ca_file;
	*max_retries = azure->max_retries;
	*max_total_ms = azure->max_total_ms;
	*backoff_base_ms = azure->backoff_base_ms;
}

/* Trusted Signing uses the Azure credential options of -kvu. */
static int open_trusted_signing(struct hs_ctx *ctx, struct sign_args *a, const struct secrets *s,
                                struct hs_key **key)
{
	struct hs_trusted_signing_key_opts *o = &a->ts;
	int r;

	cli_cloud_http_opts(&a->azure, &o->ca_file, &o->max_retries, &o->max_total_ms,
	                    &o->backoff_base_ms);
	o->credential = a->azure.credential;
	o->tenant_id = a->azure.tenant_id;
	o->client_id = a->azure.client_id;
	o->client_cert_path = a->azure.client_cert_path;
	o->authority = a->azure.authority;
	o->access_token = s->kv_token;
	o->client_secret = s->kv_secret;
	o->client_cert_password = s->kv_cert_pass;
	r = hs_key_open_trusted_signing(ctx, key, o);
	o->access_token = o->client_secret = o->client_cert_password = NULL;
	return r;
}

/* Opens the key; secrets are wiped as soon as it is open. A negative
 * return is the library's error, left in ctx for open_key_report(). */
static int open_key_quiet(struct hs_ctx *ctx, struct sign_args *a, struct hs_key **key)
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
	if (a->aws.key_id != NULL) {
		cli_cloud_http_opts(&a->azure, &a->aws.ca_file, &a->aws.max_retries,
		                    &a->aws.max_total_ms, &a->aws.backoff_base_ms);
		a->aws.extra_certs = a->extra_certs;
		r = hs_key_open_aws_kms(ctx, key, &a->aws);
	} else if (a->gcp.key != NULL) {
		cli_cloud_http_opts(&a->azure, &a->gcp.ca_file, &a->gcp.max_retries,
		                    &a->gcp.max_total_ms, &a->gcp.backoff_base_ms);
		a->gcp.extra_certs = a->extra_certs;
		a->gcp.access_token = s.gcp_token;
		r = hs_key_open_gcp_kms(ctx, key, &a->gcp);
		a->gcp.access_token = NULL;
	} else if (a->hcv.key != NULL) {
		cli_cloud_http_opts(&a->azure, &a->hcv.ca_file, &a->hcv.max_retries,
		                    &a->hcv.max_total_ms, &a->hcv.backoff_base_ms);
		a->hcv.extra_certs = a->extra_certs;
		a->hcv.token = s.hcv_token;
		a->hcv.secret_id = s.hcv_secret_id;
		r = hs_key_open_vault_transit(ctx, key, &a->hcv);
		a->hcv.token = a->hcv.secret_id = NULL;
	} else if (a->ts.endpoint != NULL) {
		r = open_trusted_signing(ctx, a, &s, key);
	} else if (a->azure.vault_url != NULL) {
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
out:
	secrets_free(&s);
	return r;
}

static int open_key_report(struct hs_ctx *ctx, int r)
{
	if (r >= 0)
		return r;
	cli_error("sign: %s", hs_ctx_message(ctx));
	return EXIT_INVALID_ARGS;
}

/* Keys in a cloud service or HSM server, reached over HTTPS. */
static bool is_remote_key(const struct sign_args *a)
{
	return a->azure.vault_url != NULL || a->aws.key_id != NULL || a->gcp.key != NULL ||
	       a->hcv.key != NULL || a->ts.endpoint != NULL;
}

static void *tls_preload_main(void *ca_file)
{
	hs_tls_preload(ca_file);
	return NULL;
}

/*
 * A remote key is opened while the inputs are collected and checked:
 * opening takes the service's round trips (token, certificate), checking
 * 10,000 inputs about 0.2 s. Not when a secret comes from stdin: it is
 * read after the input list, which may come from stdin too (-ifl
 * /dev/stdin). Nor for --sign-request or a run without inputs.
 */
static bool open_early(const struct sign_args *a, int n_operands)
{
	const char *const specs[] = {a->kv_secret, a->kv_token,  a->kv_cert_pass,
	                             a->gcp_token, a->hcv_token, a->hcv_secret_id};

	if (!is_remote_key(a) || a->sign_request != NULL ||
	    (n_operands == 0 && a->input_list == NULL))
		return false;
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++)
		if (cli_spec_is_stdin(specs[i]))
			return false;
	return true;
}

/* The key being opened on its own thread, with its own context (its
 * errors and log lines); the main thread only reads what it leaves. */
struct early_open {
	pthread_t thread;
	struct sign_args *a;
	struct hs_ctx *ctx;
	struct hs_key *key;
	int r;
};

static void *early_open_main(void *arg)
{
	struct early_open *eo = arg;

	eo->r = open_key_quiet(eo->ctx, eo->a, &eo->key);
	return NULL;
}

static bool early_open_start(struct early_open *eo, struct sign_args *a)
{
	if (hs_ctx_new(&eo->ctx) < 0)
		return false;
	hs_ctx_set_log(eo->ctx, cli_log, NULL);
	eo->a = a;
	if (pthread_create(&eo->thread, NULL, early_open_main, eo) == 0)
		return true;
	hs_ctx_free(eo->ctx);
	eo->ctx = NULL;
	return false;
}

/* Operands and -ifl entries, patterns expanded, duplicates removed. */
static int collect_inputs(const struct sign_args *a, char **files, int n_files,
                          struct cli_inputs *in)
{
	int r = 0;

	for (int i = 0; r == 0 && i < n_files; i++)
		r = cli_inputs_add_arg(in, files[i]);
	if (r == 0 && a->input_list != NULL)
		r = cli_inputs_add_list(in, a->input_list);
	return r;
}

/* Every input is checked before anything is signed (or a vault is asked):
 * without -coe one bad input means nothing is signed. */
static int check_inputs(struct hs_ctx *ctx, const struct sign_args *a, struct cli_inputs *in,
                        const char ***formats)
{
	int r = cli_batch_check(ctx, in, formats);
	size_t good = 0;

	for (size_t i = 0; i < in->n; i++)
		good += (*formats)[i] != NULL;
	if (r == 0 && in->missing == 0)
		return 0;
	if (good > 0 && a->continue_on_error)
		return 0;
	if (good > 0)
		cli_error("nothing signed: %zu input(s) cannot be signed (--continue-on-error "
		          "signs the others)",
		          in->n - good + in->missing);
	return EXIT_ALL_FAILED;
}

static int sign_inputs(struct hs_ctx *ctx, struct hs_key *key, const struct sign_args *a,
                       const struct cli_inputs *in, const char **formats)
{
	/* A remote key spends most of a file's time waiting for the network:
	 * keep more files in flight than there are CPUs. */
	bool local = strcmp(hs_key_provider_name(key), "file") == 0;
	struct cli_batch_params bp = {.jobs = a->jobs ? a->jobs
	                                      : local ? 0
	                                              : 16,
	                              .continue_on_error = a->continue_on_error,
	                              .output = a->sign.output,
	                              .report = a->report,
	                              .tsa = a->n_ts > 0 ? a->ts_urls : a->ts_legacy};

	return cli_batch_sign(ctx, key, &a->sign, in, formats, &bp);
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
	/* Trusted Signing certificates live about three days: an untimestamped
	 * signature would soon stop verifying, so a TSA is the default. */
	if (a->ts.endpoint != NULL && a->n_ts == 0 && a->n_legacy == 0) {
		a->ts_urls[a->n_ts++] = HS_TRUSTED_SIGNING_TSA;
		a->ts_urls[a->n_ts] = NULL;
	}
	if (a->n_ts > 0)
		a->sign.timestamp.urls = a->ts_urls;
	if (a->n_legacy > 0)
		a->sign.timestamp.legacy_urls = a->ts_legacy;
	if (a->verbose)
		cli_verbosity = 2;
	if (a->quiet)
		cli_verbosity = 0;
	a->sign.page_hashes = a->ph;
	if (a->n_digests > 0)
		a->sign.digest = a->digests[0];
	if (a->n_digests > 1)
		a->sign.nested_digests = a->digests + 1;
}

int cli_cmd_sign(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct sign_args a = {.key = HS_KEY_FILE_OPTS_INIT,
	                      .azure = HS_AZURE_KEY_OPTS_INIT,
	                      .aws = HS_AWS_KMS_KEY_OPTS_INIT,
	                      .gcp = HS_GCP_KMS_KEY_OPTS_INIT,
	                      .hcv = HS_VAULT_TRANSIT_KEY_OPTS_INIT,
	                      .ts = HS_TRUSTED_SIGNING_KEY_OPTS_INIT,
	                      .p11 = HS_PKCS11_KEY_OPTS_INIT,
	                      .sign = HS_SIGN_OPTS_INIT};
	int n_files = 0, r;
	char **files = calloc((size_t)argc, sizeof(*files));
	struct cli_inputs in = {0};
	const char **formats = NULL;
	struct hs_ctx *ctx = NULL;
	struct hs_key *key = NULL;
	pthread_t preload;
	bool preloading = false, opening = false;
	struct early_open eo = {0};

	if (files == NULL || hs_ctx_new(&ctx) < 0) {
		cli_error("out of memory");
		r = EXIT_ALL_FAILED;
		goto out;
	}
	if ((r = cli_parse(cmd, argc, argv, sign_opt, &a, files, &n_files)) != 0)
		goto out;
	apply_verbosity(&a);
	if (open_early(&a, n_files)) {
		if ((r = check_exclusive(&a)) != 0 || (r = check_key_source(&a)) != 0)
			goto out;
		opening = early_open_start(&eo, &a);
	}
	/* Else a remote key's first connection still needs the trusted roots:
	 * they are read while the inputs are collected and checked. */
	if (!opening && is_remote_key(&a))
		preloading = pthread_create(&preload, NULL, tls_preload_main,
		                            (void *)a.azure.ca_file) == 0;
	if ((r = collect_inputs(&a, files, n_files, &in)) != 0)
		goto out;
	if ((r = check_args(&a, (int)(in.n + in.missing))) != 0)
		goto out;
	hs_ctx_set_log(ctx, cli_log, NULL);
	if ((r = check_inputs(ctx, &a, &in, &formats)) != 0)
		goto out;
	if (opening) {
		pthread_join(eo.thread, NULL);
		opening = false;
		key = eo.key;
		if ((r = open_key_report(eo.ctx, eo.r)) != 0)
			goto out;
	} else if ((r = open_key_report(ctx, open_key_quiet(ctx, &a, &key))) != 0) {
		goto out;
	}
	if (a.sign_request != NULL) {
		r = cli_sign_request(ctx, key, a.sign_request, a.sign.output);
		goto out;
	}
	if (cli_verbosity >= 2)
		fprintf(stderr, "hsmsign: info: signing with %s key '%s', %s\n",
		        hs_key_provider_name(key), hs_key_subject(key),
		        hs_digest_name(a.sign.digest));
	r = sign_inputs(ctx, key, &a, &in, formats);
	if (r == EXIT_OK) /* a failure stays one line per file */
		warn_timestamps(&a);
out:
	/* The inputs failed while the key was still opening: the run ends
	 * now, without waiting for a service that may be slow or unreachable,
	 * and without the exit handlers, which would tear OpenSSL down under
	 * the opening thread. Nothing is being written. */
	if (opening) {
		fflush(NULL);
		_Exit(r < 0 ? EXIT_OK : r);
	}
	if (preloading)
		pthread_join(preload, NULL);
	cli_inputs_free(&in);
	free(formats);
	hs_key_free(key);
	hs_ctx_free(eo.ctx);
	hs_ctx_free(ctx);
	free(files);
	return r < 0 ? EXIT_OK : r;
}
