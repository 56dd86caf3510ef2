/*
 * hsmsign.h - public API of libhsmsign: Authenticode signing with keys that
 * never leave their store.
 *
 * Conventions (docs/ARCHITECTURE.md):
 *  - Functions return int: 0 on success, a negative HS_ERR_* on failure.
 *  - On failure a one-line message is stored in the context; read it with
 *    hs_ctx_message(). The message never contains secrets.
 *  - Objects returned through an `out` parameter belong to the caller and are
 *    released with the matching hs_<type>_free(). Returned `const char *`
 *    strings are borrowed from the object they came from.
 *  - The library never prints, prompts or exits. Diagnostics go through the
 *    log callback set with hs_ctx_set_log().
 */
#ifndef HSMSIGN_H
#define HSMSIGN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HS_VERSION "0.1.0"

/*
 * HS_API marks what libhsmsign exports: the functions declared here and
 * nothing else (the library is built with -fvisibility=hidden). On Windows
 * the DLL exports them (dllexport while it is built) and programs import
 * them (dllimport); a program that links the static library instead
 * defines HS_STATIC.
 */
#if defined(_WIN32)
#if defined(HS_BUILDING_LIBRARY)
#define HS_API __declspec(dllexport)
#elif defined(HS_STATIC)
#define HS_API
#else
#define HS_API __declspec(dllimport)
#endif
#elif defined(__GNUC__) || defined(__clang__)
#define HS_API __attribute__((visibility("default")))
#else
#define HS_API
#endif

/* Versions for --version and bug reports; all strings are static. The
 * library versions are those loaded at run time. */
struct hs_version_info {
	const char *version;      /* HS_VERSION */
	const char *git_revision; /* at configure time; "unknown" outside git */
	const char *openssl;      /* e.g. "3.0.17" */
	const char *curl;         /* e.g. "7.88.1"; "not loadable" if it cannot be */
	const char *jansson;      /* e.g. "2.14" */
};
HS_API void hs_version_get(struct hs_version_info *out);

/* Error codes. Callers normally branch on two or three of these at most. */
enum hs_error {
	HS_OK = 0,
	HS_ERR_NOMEM = -1,       /* allocation failed */
	HS_ERR_IO = -2,          /* reading or writing a local file failed */
	HS_ERR_FORMAT = -3,      /* input file is malformed or not a known format */
	HS_ERR_UNSUPPORTED = -4, /* valid input, but a feature we do not support */
	HS_ERR_AUTH = -5,        /* credentials missing or rejected */
	HS_ERR_DENIED = -6,      /* authenticated but not permitted */
	HS_ERR_NOTFOUND = -7,    /* key, certificate or signature not present */
	HS_ERR_NETWORK = -8,     /* connection, TLS or HTTP failure */
	HS_ERR_THROTTLED = -9,   /* remote service kept throttling */
	HS_ERR_CRYPTO = -10,     /* a cryptographic operation failed */
	HS_ERR_INVALID = -11,    /* invalid argument or configuration */
	HS_ERR_CANCELLED = -12,  /* the caller cancelled the operation */
};

/* A short static name for an error code, e.g. "format error". */
HS_API const char *hs_strerror(int err);

/* Library context: holds the last error message and the log callback. One
 * context per thread; a context is not safe for concurrent use. */
struct hs_ctx;

enum hs_log_level {
	HS_LOG_ERROR = 0,
	HS_LOG_WARN = 1,
	HS_LOG_INFO = 2,
	HS_LOG_DEBUG = 3,
};

/* Log callback: `msg` is one line without a trailing newline, borrowed for
 * the duration of the call. */
typedef void (*hs_log_fn)(enum hs_log_level level, const char *msg, void *userdata);

HS_API int hs_ctx_new(struct hs_ctx **out);
HS_API void hs_ctx_free(struct hs_ctx *ctx);
HS_API void hs_ctx_set_log(struct hs_ctx *ctx, hs_log_fn fn, void *userdata);
/* Last error message ("" if none); borrowed, valid until the next call that
 * fails or hs_ctx_clear_error(). */
HS_API const char *hs_ctx_message(const struct hs_ctx *ctx);
/* Last error code (0 if none). */
HS_API int hs_ctx_error(const struct hs_ctx *ctx);
HS_API void hs_ctx_clear_error(struct hs_ctx *ctx);

/*
 * Optional: reads the trusted roots for HTTPS (ca_file, else SSL_CERT_FILE,
 * else the system's bundle) into the cache that every HTTPS connection of
 * the process uses, so that the first connection to a key store does not
 * wait for them (about 30 ms for a system bundle with OpenSSL 3.0). Meant
 * to run on a thread of the caller's while it does other work; returns when
 * the roots are read: 0, or HS_ERR_IO if they cannot be (the connection
 * reports that again). Reads only a regular file (a FIFO could block; the
 * connection reads anything else itself). Thread-safe.
 */
HS_API int hs_tls_preload(const char *ca_file);

/* Digest algorithms for the file digest and the signature. */
enum hs_digest {
	HS_DIGEST_SHA1 = 1,
	HS_DIGEST_SHA256 = 2,
	HS_DIGEST_SHA384 = 3,
	HS_DIGEST_SHA512 = 4,
};

/* Parses "sha256", "SHA-256", ... into *out. Returns HS_ERR_INVALID. */
HS_API int hs_digest_from_name(enum hs_digest *out, const char *name);
/* "sha256" etc.; "unknown" for values outside the enum. */
HS_API const char *hs_digest_name(enum hs_digest digest);

/*
 * Keys. A key is a signing key plus its certificate chain, held by a key
 * provider (a local file today; vaults and tokens later). The engine only
 * ever asks a key for its chain and for a signature over a digest.
 */
struct hs_key;

struct hs_key_file_opts {
	const char *key_path;  /* PEM or DER private key (with cert_path) */
	const char *cert_path; /* PEM/DER leaf, then intermediates (PEM) */
	const char *pfx_path;  /* PKCS#12 with key and chain (instead) */
	/* Password for an encrypted key or the PKCS#12 file, or NULL. Borrowed;
	 * the library keeps no copy after hs_key_open_file() returns. */
	const char *password;
};
#define HS_KEY_FILE_OPTS_INIT                                                                      \
	{                                                                                          \
		NULL, NULL, NULL, NULL                                                             \
	}

/* Opens a key held in local files. *out is freed with hs_key_free(). */
HS_API int hs_key_open_file(struct hs_ctx *ctx, struct hs_key **out,
                            const struct hs_key_file_opts *opts);
HS_API void hs_key_free(struct hs_key *key);
/* Subject of the signing certificate, one line; borrowed from the key. */
HS_API const char *hs_key_subject(const struct hs_key *key);
/* Name of the provider ("file", ...); static string. */
HS_API const char *hs_key_provider_name(const struct hs_key *key);
/* The key's name in its store (a Key Vault key URL), or "sha1:<thumbprint>"
 * of the signing certificate; borrowed from the key. */
HS_API const char *hs_key_id(const struct hs_key *key);
/* Requests sent to the key's remote service so far (retries included);
 * 0 for local keys. */
HS_API unsigned long hs_key_requests(const struct hs_key *key);

/*
 * Azure Key Vault and Managed HSM keys. The private key never leaves the
 * vault: per run one GET of the certificate (vaults) or key (Managed HSM),
 * then one sign request per file carrying only a digest.
 */
struct hs_azure_key_opts {
	const char *vault_url;           /* https://NAME.vault.azure.net (-kvu) */
	const char *certificate;         /* certificate name (-kvc) */
	const char *certificate_version; /* -kvcv; NULL: the current version */
	/* Managed HSM (keys only): the key name (NULL: `certificate`), its
	 * version (NULL: the current one) and the signing certificate file
	 * (PEM/DER, may hold the chain) — the HSM stores no certificates. */
	const char *key;
	const char *key_version;
	const char *cert_file;
	int managed_hsm;                /* -1: from the host name; 0 vault; 1 HSM */
	const char *const *extra_certs; /* -ac files, NULL-terminated, or NULL */
	const char *api_version;        /* NULL: HS_AZURE_API_VERSION */
	int no_aia;                     /* 1: do not fetch missing intermediates */
	const char *aia_cache_dir;      /* NULL: $XDG_CACHE_HOME/hsmsign/aia */
	const char *ca_file;            /* extra trusted TLS roots (PEM) */

	/* Credentials (see docs/azure.md): NULL fields fall back to the
	 * AZURE_* / ACTIONS_* / IDENTITY_* environment variables. */
	const char *credential;           /* NULL/"default" or a source name */
	const char *access_token;         /* -kva; borrowed, secret */
	const char *tenant_id;            /* -kvt */
	const char *client_id;            /* -kvi */
	const char *client_secret;        /* -kvs; borrowed, secret */
	const char *client_cert_path;     /* certificate credential (PEM/PKCS#12) */
	const char *client_cert_password; /* borrowed, secret */
	const char *authority;            /* -au: URL or public/china/usgov */
	/* credential "github-oidc-bearer" (a server such as `hsmsign serve`
	 * that takes the GitHub Actions OIDC token itself): its audience;
	 * NULL: "hsmsign". */
	const char *oidc_audience;

	/* HTTP behaviour; 0 means the default. */
	int max_retries;      /* 0: default 6; -1: none */
	long timeout_ms;      /* per request, default 30000 */
	long max_total_ms;    /* per call with retries, default 120000 */
	long backoff_base_ms; /* default 1000 */
	/* Client-side limit on vault requests per second, shared by all
	 * threads signing with the key: 0 derives it from the documented
	 * service limits for the key type (docs/cli.md); < 0: no limit. */
	double rate_limit;
};
#define HS_AZURE_API_VERSION "2025-07-01"
/* Designated: positional lists miss fields added later (clang
 * -Wmissing-field-initializers). */
#define HS_AZURE_KEY_OPTS_INIT                                                                     \
	{                                                                                          \
		.managed_hsm = -1                                                                  \
	}

/* Opens a key held in Azure Key Vault or Managed HSM: authenticates,
 * fetches the certificate (and missing intermediates) once. Secrets in opts
 * are copied into memory that is wiped on free; the caller may wipe its
 * own copies when this returns. *out is freed with hs_key_free(). */
HS_API int hs_key_open_azure(struct hs_ctx *ctx, struct hs_key **out,
                             const struct hs_azure_key_opts *opts);

/*
 * Key Vault certificate administration (`hsmsign vault`, `doctor`). `conn`
 * names the vault, the certificate and the credentials exactly as for
 * hs_key_open_azure(); nothing else in it is used.
 */
struct hs_vault_csr_opts {
	const char *subject;  /* "CN=Contoso Ltd, O=Contoso Ltd, C=US" */
	const char *key_type; /* RSA-HSM (default), RSA, EC-HSM, EC */
	int key_size;         /* RSA: 2048, 3072 (default) or 4096 */
	const char *curve;    /* EC: P-256 (default), P-384, P-521 */
	int validity_months;  /* 0: 12 */
	int cancel_pending;   /* 1: cancel and delete a pending request first */
};
#define HS_VAULT_CSR_OPTS_INIT                                                                     \
	{                                                                                          \
		NULL, NULL, 0, NULL, 0, 0                                                          \
	}

/* Creates the certificate with issuer "Unknown" (the CA is outside Azure):
 * a non-exportable key, codeSigning EKU, digitalSignature key usage. *csr_pem
 * (freed with hs_free()) receives the CSR for the CA as PEM. HS_ERR_INVALID
 * when a request is already pending and cancel_pending is 0. */
HS_API int hs_vault_csr(struct hs_ctx *ctx, const struct hs_azure_key_opts *conn,
                        const struct hs_vault_csr_opts *opts, char **csr_pem);

/* Merges the CA's answer into the pending request. files (NULL-terminated)
 * hold certificates as PEM, DER or PKCS#7, in any order: the one whose
 * public key is the CSR's is the leaf, the rest are sorted into its chain.
 * HS_ERR_INVALID (nothing sent) when no certificate matches the CSR. */
HS_API int hs_vault_merge(struct hs_ctx *ctx, const struct hs_azure_key_opts *conn,
                          const char *const *files);

/* Cancels and deletes the pending request of conn->certificate. */
HS_API int hs_vault_cancel_pending(struct hs_ctx *ctx, const struct hs_azure_key_opts *conn);

struct hs_vault_cert_info {
	char *subject, *issuer, *serial; /* one line each; serial in hex */
	char *not_before, *not_after;    /* "2026-01-31T12:00:00Z" */
	long days_left;                  /* negative once expired */
	int valid_now;                   /* 1: inside its validity period */
	char *key_type;                  /* "RSA-HSM 3072", "EC P-256", ... */
	int hsm;                         /* 1: the key lives in an HSM */
	int exportable;                  /* 1: the key may leave the vault */
	char *ekus;                      /* "codeSigning, ..." or "(none: any use)" */
	int code_signing;                /* 1: EKU codeSigning present */
	char *kid;                       /* versioned key id */
	/* Chain as the vault (and AIA) give it: complete when it ends at a root
	 * trusted by ca_file (or the system store). */
	int chain_complete;
	char *chain;                   /* "leaf <- Intermediate CA <- Root CA" or why incomplete */
	long long server_time;         /* the vault's Date header (Unix time), 0 unknown */
	const char *credential_source; /* static: which source gave the token */
};

/* Reads conn->certificate from the vault (and missing intermediates via
 * AIA unless conn->no_aia). roots: PEM roots for the chain check, or NULL
 * for the system store. *out is freed with hs_vault_cert_info_free(). */
HS_API int hs_vault_show(struct hs_ctx *ctx, const struct hs_azure_key_opts *conn,
                         const char *roots, struct hs_vault_cert_info **out);
HS_API void hs_vault_cert_info_free(struct hs_vault_cert_info *info);

/*
 * AWS KMS keys (docs/providers.md). The certificate comes from a file; one
 * GetPublicKey per run checks it belongs to the key, then one Sign
 * (MessageType DIGEST, SigV4-signed) per file. Credentials come from the
 * standard AWS chain: AWS_ACCESS_KEY_ID/..., the shared credentials and
 * config files (profiles), AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN,
 * GitHub Actions OIDC + AWS_ROLE_ARN, the ECS/EKS container endpoint and
 * EC2 IMDSv2. Endpoints follow AWS_ENDPOINT_URL_KMS / _STS and
 * AWS_EC2_METADATA_SERVICE_ENDPOINT.
 */
struct hs_aws_kms_key_opts {
	const char *key_id;             /* key id, alias/NAME or ARN */
	const char *cert_file;          /* signing certificate (PEM/DER, may hold the chain) */
	const char *const *extra_certs; /* more chain files, NULL-terminated, or NULL */
	const char *region;   /* NULL: the ARN's, AWS_REGION, AWS_DEFAULT_REGION, profile */
	const char *profile;  /* NULL: the credential chain; else only this profile */
	const char *endpoint; /* NULL: AWS_ENDPOINT_URL_KMS, AWS_ENDPOINT_URL, regional */
	const char *ca_file;  /* extra trusted TLS roots (PEM) */
	int max_retries;      /* 0: default 6; -1: none */
	long timeout_ms;      /* per request, default 30000 */
	long max_total_ms;    /* per call with retries, default 120000 */
	long backoff_base_ms; /* default 1000 */
};
#define HS_AWS_KMS_KEY_OPTS_INIT                                                                   \
	{                                                                                          \
		NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, 0                               \
	}

/* Opens a key held in AWS KMS. *out is freed with hs_key_free(). */
HS_API int hs_key_open_aws_kms(struct hs_ctx *ctx, struct hs_key **out,
                               const struct hs_aws_kms_key_opts *opts);

/*
 * Google Cloud KMS keys (docs/providers.md). The certificate comes from a
 * file; per run one lookup of the key version (unless given) and its public
 * key, then one asymmetricSign per file with CRC32C checked both ways.
 * Credentials: access_token, else GOOGLE_OAUTH_ACCESS_TOKEN, else GitHub
 * Actions OIDC through workload_provider, else the credentials file
 * (service-account key or external_account), else the metadata server.
 */
struct hs_gcp_kms_key_opts {
	/* projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/N];
	 * without a version: the newest enabled one */
	const char *key;
	const char *cert_file;          /* signing certificate (PEM/DER, may hold the chain) */
	const char *const *extra_certs; /* more chain files, NULL-terminated, or NULL */
	const char *access_token;       /* borrowed, secret; copied into wiped memory */
	const char *credentials_file;   /* NULL: GOOGLE_APPLICATION_CREDENTIALS */
	/* projects/N/locations/global/workloadIdentityPools/P/providers/X */
	const char *workload_provider;
	const char *service_account; /* impersonated after the WIF exchange, or NULL */
	const char *endpoint; /* NULL: CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS or Google's */
	const char *ca_file;  /* extra trusted TLS roots (PEM) */
	int max_retries;      /* 0: default 6; -1: none */
	long timeout_ms;      /* per request, default 30000 */
	long max_total_ms;    /* per call with retries, default 120000 */
	long backoff_base_ms; /* default 1000 */
};
#define HS_GCP_KMS_KEY_OPTS_INIT                                                                   \
	{                                                                                          \
		NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, 0                   \
	}

/* Opens a key held in Google Cloud KMS. *out is freed with hs_key_free(). */
HS_API int hs_key_open_gcp_kms(struct hs_ctx *ctx, struct hs_key **out,
                               const struct hs_gcp_kms_key_opts *opts);

/* One certificate chain of a Cloud HSM attestation, as checked. */
struct hs_gcp_attestation_chain {
	char *name;      /* "caviumCerts", "googleCardCerts", "googlePartitionCerts" */
	size_t count;    /* certificates in it */
	char *leaf;      /* subject of its end certificate, one line */
	char *root;      /* subject of the root it verified to, one line */
	int root_pinned; /* 1: the root came from roots_file; 0: from the chain itself */
};

struct hs_gcp_attestation {
	char *version; /* the key version attested (projects/.../cryptoKeyVersions/N) */
	char *format;  /* "CAVIUM_V2_COMPRESSED", ... */
	char *protection_level;
	size_t content_len; /* bytes of the attestation statement (as served: gzip) */
	size_t n_chains;
	struct hs_gcp_attestation_chain *chains;
};

/*
 * Downloads the HSM attestation of a key version (opts->key, credentials
 * and endpoint as for hs_key_open_gcp_kms; no certificate needed) and
 * checks each certificate chain: every chain must verify from its end
 * certificate to a root, which is one of roots_file (PEM) when given, else
 * the chain's own self-signed certificate (consistency only). Writes the
 * attestation statement to output (atomically) when output is not NULL.
 * HS_ERR_UNSUPPORTED for keys that are not HSM-protected; HS_ERR_CRYPTO
 * when a chain does not verify. *out is freed with
 * hs_gcp_attestation_free().
 */
HS_API int hs_gcp_kms_attestation(struct hs_ctx *ctx, const struct hs_gcp_kms_key_opts *opts,
                                  const char *roots_file, const char *output,
                                  struct hs_gcp_attestation **out);
HS_API void hs_gcp_attestation_free(struct hs_gcp_attestation *att);

/*
 * HashiCorp Vault transit keys (docs/providers.md). The certificate comes
 * from a file; one GET of the key per run checks it, then one prehashed
 * sign per file (RSA PKCS#1 v1.5 or DER ECDSA). Token: `token`, else
 * VAULT_TOKEN, else an AppRole login (role_id + secret_id), else a JWT
 * login with the GitHub Actions OIDC token (jwt_role), else ~/.vault-token.
 */
struct hs_vault_transit_key_opts {
	const char *addr;               /* NULL: VAULT_ADDR */
	const char *key;                /* transit key name */
	const char *mount;              /* NULL: "transit" */
	long key_version;               /* 0: the latest at open time */
	const char *vault_namespace;    /* NULL: VAULT_NAMESPACE (Enterprise) */
	const char *cert_file;          /* signing certificate (PEM/DER, may hold the chain) */
	const char *const *extra_certs; /* more chain files, NULL-terminated, or NULL */
	const char *token;              /* borrowed, secret */
	const char *role_id;            /* AppRole */
	const char *secret_id;          /* AppRole; borrowed, secret */
	const char *jwt_role;           /* JWT/OIDC auth role (GitHub Actions) */
	const char *jwt_audience;       /* audience asked of GitHub, or NULL */
	const char *auth_mount;         /* NULL: "approle" or "jwt" */
	const char *ca_file;            /* NULL: VAULT_CACERT */
	int max_retries;                /* 0: default 6; -1: none */
	long timeout_ms;                /* per request, default 30000 */
	long max_total_ms;              /* per call with retries, default 120000 */
	long backoff_base_ms;           /* default 1000 */
};
#define HS_VAULT_TRANSIT_KEY_OPTS_INIT                                                             \
	{                                                                                          \
		NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,   \
		        0, 0, 0, 0                                                                 \
	}

/* Opens a key held in a Vault transit engine. *out is freed with
 * hs_key_free(). */
HS_API int hs_key_open_vault_transit(struct hs_ctx *ctx, struct hs_key **out,
                                     const struct hs_vault_transit_key_opts *opts);

/*
 * Azure Trusted Signing (Artifact Signing) certificate profiles
 * (docs/providers.md). The service holds the key and issues the
 * certificate (valid about 3 days): opening the key makes one sign request
 * to learn the chain; each file then costs one sign request, polled until
 * it finishes. Credentials are the Key Vault ones (struct
 * hs_azure_key_opts), for scope https://codesigning.azure.net/.default.
 * Timestamp these signatures (the CLI uses Microsoft's TSA unless -tr/-t
 * is given).
 */
struct hs_trusted_signing_key_opts {
	const char *endpoint;    /* https://weu.codesigning.azure.net (REGION) */
	const char *account;     /* code signing account */
	const char *profile;     /* certificate profile */
	const char *api_version; /* NULL: HS_TRUSTED_SIGNING_API_VERSION */
	long poll_timeout_ms;    /* 0: 60000 */
	/* Credentials, as in hs_azure_key_opts; secrets borrowed. */
	const char *credential;
	const char *access_token;
	const char *tenant_id;
	const char *client_id;
	const char *client_secret;
	const char *client_cert_path;
	const char *client_cert_password;
	const char *authority;
	const char *ca_file;  /* extra trusted TLS roots (PEM) */
	int max_retries;      /* 0: default 6; -1: none */
	long timeout_ms;      /* per request, default 30000 */
	long max_total_ms;    /* per call with retries, default 120000 */
	long backoff_base_ms; /* default 1000 */
};
#define HS_TRUSTED_SIGNING_API_VERSION "2022-06-15-preview"
#define HS_TRUSTED_SIGNING_TSA         "http://timestamp.acs.microsoft.com"
#define HS_TRUSTED_SIGNING_KEY_OPTS_INIT                                                           \
	{                                                                                          \
		NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,   \
		        0, 0, 0, 0                                                                 \
	}

/* Opens a Trusted Signing certificate profile as a key. *out is freed
 * with hs_key_free(). */
HS_API int hs_key_open_trusted_signing(struct hs_ctx *ctx, struct hs_key **out,
                                       const struct hs_trusted_signing_key_opts *opts);

/*
 * Timestamps (RFC 3161 or legacy Authenticode). A timestamp authority (TSA)
 * countersigns the signature value, so the signature stays valid after the
 * signing certificate expires. TSA requests have their own retry budget,
 * separate from the key's (vault) requests. Plain http:// TSA URLs are
 * allowed: the reply is signed and checked before it is used.
 */
struct hs_timestamp_opts {
	/* RFC 3161 TSAs, NULL-terminated, tried in order until one answers
	 * with a valid token; NULL or empty: none. */
	const char *const *urls;
	/* Legacy Authenticode TSAs (counterSignature), used when urls is
	 * empty; NULL-terminated, or NULL. */
	const char *const *legacy_urls;
	enum hs_digest digest; /* RFC 3161 message imprint digest; 0: sha256 */
	/* 1: when every TSA fails, keep the signature without a timestamp (a
	 * warning is logged); 0: fail and write nothing. */
	int optional;
	int max_retries;      /* per TSA URL; 0: default 2; -1: none */
	long timeout_ms;      /* per request; 0: 30000 */
	long max_total_ms;    /* per TSA URL with retries; 0: 60000 */
	long backoff_base_ms; /* 0: 1000 */
	const char *ca_file;  /* extra trusted TLS roots for https TSAs, or NULL */
	/* Most requests per second to each TSA URL, shared by every thread of
	 * the process (batch signing); 0: no limit. */
	double rate_limit;
};
#define HS_TIMESTAMP_OPTS_INIT                                                                     \
	{                                                                                          \
		NULL, NULL, 0, 0, 0, 0, 0, 0, NULL, 0                                              \
	}

/*
 * PKCS#11 tokens and HSMs (USB dongles, network HSMs, SoftHSM). The module
 * is loaded with dlopen(); the key is named by an RFC 7512 URI. The user
 * logs in once when the key is opened and every signature reuses that
 * login (and up to `sessions` sessions).
 */
/* Asks for a PIN: writes it NUL-terminated into buf (size bytes) and
 * returns 0, or HS_ERR_CANCELLED. `token` is the token label. */
typedef int (*hs_pin_fn)(char *buf, size_t size, const char *token, void *userdata);

struct hs_pkcs11_key_opts {
	const char *module; /* PKCS#11 module (.so); NULL: the URI's module-path */
	const char *uri;    /* "pkcs11:token=...;object=..." naming the private key */
	/* Signing certificate (PEM/DER, may hold the chain); NULL: the
	 * certificate on the token with the key's CKA_ID. */
	const char *cert_file;
	const char *const *extra_certs; /* more chain files, NULL-terminated, or NULL */
	const char *pin;                /* borrowed, secret; NULL: see pin_fn */
	hs_pin_fn pin_fn;               /* asked when the token needs a PIN and pin is NULL */
	void *pin_userdata;
	int allow_pin_in_uri; /* 1: accept the URI's pin-value attribute */
	int sessions;         /* most concurrent signatures; 0: 1 (serialised) */
};
#define HS_PKCS11_KEY_OPTS_INIT                                                                    \
	{                                                                                          \
		NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0                                     \
	}

/* Opens a private key on a PKCS#11 token: loads the module, finds the
 * token and key, logs in once, loads the certificate chain. A PIN is kept
 * after this returns only for keys that demand it for every signature
 * (CKA_ALWAYS_AUTHENTICATE), in memory wiped on free. */
HS_API int hs_key_open_pkcs11(struct hs_ctx *ctx, struct hs_key **out,
                              const struct hs_pkcs11_key_opts *opts);

enum hs_pkcs11_kind {
	HS_PKCS11_SLOT = 0,
	HS_PKCS11_TOKEN = 1,
	HS_PKCS11_PRIVATE_KEY = 2,
	HS_PKCS11_CERTIFICATE = 3,
};

/* One thing found by hs_pkcs11_list(); strings are borrowed for the call. */
struct hs_pkcs11_entry {
	enum hs_pkcs11_kind kind;
	unsigned long slot_id;
	const char *label;  /* slot description, token or object label */
	const char *uri;    /* pkcs11: URI (NULL for slots) */
	const char *detail; /* "RSA 2048", a certificate subject, token flags */
};
typedef void (*hs_pkcs11_list_fn)(const struct hs_pkcs11_entry *entry, void *userdata);

/* Reports every slot, token, private key and certificate of opts->module
 * (tokens filtered by opts->uri if set). With a PIN (opts->pin or pin_fn),
 * logs in to the one token selected, so private objects show too. */
HS_API int hs_pkcs11_list(struct hs_ctx *ctx, const struct hs_pkcs11_key_opts *opts,
                          hs_pkcs11_list_fn fn, void *userdata);

/*
 * Text encodings of scripts (.ps1, .vbs, ...). A byte order mark always
 * wins; without one, HS_TEXT_AUTO decodes as Windows does: UTF-8 for
 * .ps1 .psm1 .psd1 .wsf, Windows-1252 for .ps1xml .psc1 .cdxml .vbs .js.
 */
enum hs_text_encoding {
	HS_TEXT_AUTO = 0,
	HS_TEXT_UTF8 = 1,
	HS_TEXT_UTF16LE = 2,
	HS_TEXT_UTF16BE = 3,
	HS_TEXT_CP1252 = 4,
};
/* Parses "utf-8", "utf-16le", "utf-16be", "windows-1252" (or "cp1252"),
 * "auto". Returns HS_ERR_INVALID for anything else. */
HS_API int hs_text_encoding_from_name(enum hs_text_encoding *out, const char *name);

/* Signing. */
struct hs_sign_opts {
	enum hs_digest digest;       /* file digest and signature digest */
	const char *description;     /* SpcSpOpusInfo programName, or NULL */
	const char *description_url; /* SpcSpOpusInfo moreInfo URL, or NULL */
	int page_hashes;             /* 1: include PE page hashes */
	int skip_signed;             /* 1: leave already-signed files alone */
	/* Where to write the result; NULL signs in place. Either way the
	 * result appears atomically (temp file + rename) and a failure leaves
	 * the input byte-identical. */
	const char *output;
	/* Timestamp each new signature (zero: none; HS_TIMESTAMP_OPTS_INIT). */
	struct hs_timestamp_opts timestamp;
	int msi_dse; /* 1: MSI: add MsiDigitalSignatureEx (metadata pre-hash) */
	/* Scripts without a byte order mark: how their bytes are decoded
	 * (HS_TEXT_AUTO: by file type, see enum hs_text_encoding). */
	enum hs_text_encoding script_encoding;
	/* 1: when the file is already signed, keep its signature and nest the
	 * new one(s) in it (1.3.6.1.4.1.311.2.4.1) instead of replacing it;
	 * an unsigned file is signed as usual. Not for catalogs. */
	int append;
	/* More signatures nested in the new one, one per digest (dual signing:
	 * digest sha1 with {HS_DIGEST_SHA256, 0}); 0-terminated, or NULL. Each
	 * gets its own page hashes and timestamp as the options say. */
	const enum hs_digest *nested_digests;
	/* 1: replace an existing signature of a format that keeps it unless
	 * told (NuGet); other formats replace theirs anyway. */
	int replace;
};
#define HS_SIGN_OPTS_INIT                                                                          \
	{                                                                                          \
		.digest = HS_DIGEST_SHA256, .timestamp = HS_TIMESTAMP_OPTS_INIT                    \
	}

enum hs_sign_outcome {
	HS_SIGN_SIGNED = 0,  /* a new signature was written */
	HS_SIGN_SKIPPED = 1, /* already signed and skip_signed was set */
};

/* Signs one file. *outcome (may be NULL) says whether it was skipped. */
HS_API int hs_sign_file(struct hs_ctx *ctx, struct hs_key *key, const char *path,
                        const struct hs_sign_opts *opts, enum hs_sign_outcome *outcome);

/* Detects and parses a file as hs_sign_file() would, without signing:
 * *format is a static name ("pe", "msi", ...). */
HS_API int hs_file_format(struct hs_ctx *ctx, const char *path, const char **format);

/*
 * Batch signing: many files with one key, up to `jobs` at once on worker
 * threads (each with its own context). Hashing runs in parallel, and a
 * remote key has at most `jobs` sign requests in flight; up to jobs/2 more
 * threads read and write files meanwhile. Every file is
 * signed atomically as by hs_sign_file(): when the batch stops (a failure
 * without continue_on_error, or *cancel set), files in flight finish and
 * no new one starts; none is ever left partly written.
 */
enum hs_batch_state {
	HS_BATCH_NOT_STARTED = 0, /* stopped or cancelled before this file */
	HS_BATCH_SIGNED = 1,
	HS_BATCH_SKIPPED = 2, /* already signed and skip_signed was set */
	HS_BATCH_FAILED = 3,
};

struct hs_batch_item {
	const char *path;   /* in: borrowed */
	const char *output; /* in: where to write; NULL: in place */
	/* Out, filled by hs_batch_sign(): */
	enum hs_batch_state state;
	int error;       /* HS_ERR_* when FAILED */
	char *message;   /* one line when FAILED; freed by hs_batch_items_clear() */
	double seconds;  /* wall time spent on this file */
	int have_sha256; /* 1: the two hashes below are set (opts.file_hashes) */
	uint8_t sha256_before[32], sha256_after[32];
	/* RFC 3161 timestamp of the new signature (opts.file_hashes and a
	 * timestamp requested): "2025-01-31T12:00:00Z" and the TSA's subject;
	 * empty strings when there is none. */
	char timestamp_time[24];
	char tsa_subject[256];
};

/* Called once per finished file, never concurrently; `done` counts the
 * finished files including this one. */
typedef void (*hs_batch_fn)(const struct hs_batch_item *item, size_t done, size_t total,
                            void *userdata);

struct hs_batch_opts {
	int jobs;              /* sign calls at once; <= 0: the number of CPUs */
	int continue_on_error; /* 1: a failure does not stop the batch */
	int file_hashes;       /* 1: SHA-256 of each file before and after */
	/* Set to nonzero (e.g. by a SIGINT handler) to stop starting files. */
	const volatile int *cancel;
	hs_batch_fn on_done;
	void *userdata;
	hs_log_fn log; /* log callback of the worker contexts, or NULL */
	void *log_userdata;
};
#define HS_BATCH_OPTS_INIT                                                                         \
	{                                                                                          \
		0, 0, 0, NULL, NULL, NULL, NULL, NULL                                              \
	}

/* Signs items[0..n). Returns 0 when the batch ran (each item says how its
 * file fared), or a negative error when it could not start (threads,
 * memory). ctx gets the message of such an error only. */
HS_API int hs_batch_sign(struct hs_ctx *ctx, struct hs_key *key, struct hs_batch_item *items,
                         size_t n, const struct hs_sign_opts *sign,
                         const struct hs_batch_opts *opts);
/* Frees what hs_batch_sign() stored in the items (not the items). */
HS_API void hs_batch_items_clear(struct hs_batch_item *items, size_t n);

/* Verification. */
enum hs_verify_status {
	HS_VERIFY_OK = 0,
	HS_VERIFY_NO_SIGNATURE,    /* the file carries no signature */
	HS_VERIFY_MALFORMED,       /* file or signature cannot be parsed */
	HS_VERIFY_DIGEST_MISMATCH, /* file content changed after signing */
	HS_VERIFY_BAD_SIGNATURE,   /* messageDigest or signature value wrong */
	HS_VERIFY_UNTRUSTED,       /* chain does not reach a trusted root */
	HS_VERIFY_EXPIRED,         /* a certificate is expired/not yet valid */
	HS_VERIFY_NO_EKU,          /* signer lacks the codeSigning EKU */
	HS_VERIFY_BAD_TIMESTAMP,   /* a timestamp is present but does not verify */
};

/* A short static description of a status, e.g. "digest mismatch". */
HS_API const char *hs_verify_status_name(enum hs_verify_status status);

struct hs_signature_info {
	enum hs_verify_status status;
	unsigned depth;        /* 0: primary signature, 1: nested in it */
	enum hs_digest digest; /* file digest algorithm; 0 if unknown */
	char *subject;         /* signer subject (one line), may be NULL */
	char *issuer;          /* signer issuer (one line), may be NULL */
	int page_hashes;       /* 0 absent, 1 present and correct,
	                        * -1 present and wrong */
	char *reason;          /* why status != OK, one line, else NULL */
	/* Timestamp: 0 none, 1 RFC 3161, 2 legacy Authenticode. When valid,
	 * the signer's chain was judged at timestamp_time. */
	int timestamp;
	char *timestamp_time; /* "2025-01-31T12:00:00Z", or NULL */
	char *tsa_subject;    /* subject of the TSA certificate, or NULL */
	char *tsa_digest;     /* imprint digest name ("sha256"), or NULL */
};

struct hs_verify_opts {
	const char *ca_file; /* PEM roots to trust; NULL: the system store */
	/* PEM roots for timestamp authorities; NULL: the system store */
	const char *tsa_ca_file;
	enum hs_text_encoding script_encoding; /* as in hs_sign_opts */
};
#define HS_VERIFY_OPTS_INIT                                                                        \
	{                                                                                          \
		NULL, NULL, 0                                                                      \
	}

struct hs_verify_result {
	enum hs_verify_status status; /* the first non-OK signature's */
	size_t count;                 /* entries in sigs */
	struct hs_signature_info *sigs;
};

/*
 * Verifies every signature in a file. Returns 0 when the file could be
 * read (look at (*out)->status for the verdict: a malformed file or one in
 * no supported format is HS_VERIFY_MALFORMED) or a negative error when it
 * could not be read at all (missing or unreadable file, bad ca_file).
 * *out is freed with hs_verify_result_free().
 */
HS_API int hs_verify_file(struct hs_ctx *ctx, const char *path, const struct hs_verify_opts *opts,
                          struct hs_verify_result **out);
HS_API void hs_verify_result_free(struct hs_verify_result *result);

/*
 * Adds or replaces the timestamp of an existing signature without any key:
 * index 0 is the primary signature, 1.. the nested ones in order. The
 * signature values stay byte-identical. Writes to output (NULL: in place)
 * atomically. HS_ERR_NOTFOUND when the file is not signed or has no such
 * signature; HS_ERR_INVALID when opts names no TSA.
 */
HS_API int hs_timestamp_file(struct hs_ctx *ctx, const char *path,
                             const struct hs_timestamp_opts *opts, unsigned index,
                             const char *output);

/*
 * Catalogs (.cat). hs_catalog_create() writes an unsigned catalog listing
 * files (sign it with hs_sign_file()): each member carries the file's
 * Authenticode digest when hsmsign knows its format, else the hash of the
 * whole file, and its base name. digest: HS_DIGEST_SHA1 (catalog version
 * 1) or HS_DIGEST_SHA256 (version 2). The output appears atomically.
 */
HS_API int hs_catalog_create(struct hs_ctx *ctx, const char *output, const char *const *files,
                             size_t n_files, enum hs_digest digest);
/* Sets *listed to 1 when a member of catalog carries file's digest (with
 * the catalog's algorithm), else 0. The catalog's own signature is not
 * checked here: verify it with hs_verify_file(). */
HS_API int hs_catalog_lookup(struct hs_ctx *ctx, const char *catalog, const char *file,
                             int *listed);

/* Removes the signature from a file, in place when output is NULL.
 * HS_ERR_NOTFOUND when the file is not signed. */
HS_API int hs_remove_signature(struct hs_ctx *ctx, const char *path, const char *output);

/* Copies the DER PKCS#7 ContentInfo embedded in a file into *out (freed
 * with hs_free()). HS_ERR_NOTFOUND when the file is not signed. */
HS_API int hs_extract_signature(struct hs_ctx *ctx, const char *path, uint8_t **out,
                                size_t *out_len);

/* Nested signatures: index 0 is the primary signature (removing it removes
 * every signature; extracting it gives the whole PKCS#7), 1.. the nested
 * ones in file order. HS_ERR_NOTFOUND when there is no such signature. */
HS_API int hs_remove_signature_index(struct hs_ctx *ctx, const char *path, unsigned index,
                                     const char *output);
HS_API int hs_extract_signature_index(struct hs_ctx *ctx, const char *path, unsigned index,
                                      uint8_t **out, size_t *out_len);

/*
 * Two-step signing (docs/cli.md "Two-step signing"). hs_request_create()
 * writes request_path (JSON): the digest a key must sign for path signed
 * with opts (digest, description, page hashes, MSI pre-hash, script
 * encoding; one signature, no nesting) by the certificate chain in
 * cert_file (PEM, signer first). hs_attach_signature() finishes path
 * (atomically, to opts->output or in place; opts->timestamp applies):
 * with request_path, sig is the raw signature over the request's digest
 * (RSA PKCS#1 v1.5 or DER ECDSA), refused unless the file and options
 * still give that digest and the signature matches the certificate; with
 * request_path NULL, sig is a whole DER PKCS#7 (from hs_extract_signature()
 * of a file with the same content), refused unless its file digest matches.
 * Either way nothing is written on refusal. With RSA the result is
 * byte-identical to hs_sign_file() with the same key and options.
 */
HS_API int hs_request_create(struct hs_ctx *ctx, const char *path, const char *cert_file,
                             const struct hs_sign_opts *opts, const char *request_path);
HS_API int hs_attach_signature(struct hs_ctx *ctx, const char *path, const char *request_path,
                               const uint8_t *sig, size_t sig_len, const struct hs_sign_opts *opts);
/* Signs a request's digest with key (any provider), whose certificate must
 * be the request's signer: *out (freed with hs_free()) receives the raw
 * signature that hs_attach_signature() takes. */
HS_API int hs_request_sign(struct hs_ctx *ctx, struct hs_key *key, const char *request_path,
                           uint8_t **out, size_t *out_len);

/* Computes the Authenticode digest of a file (signed or not) as a signer
 * would: *out (freed with hs_free()) receives *out_len bytes. */
HS_API int hs_digest_file(struct hs_ctx *ctx, const char *path, enum hs_digest digest,
                          uint8_t **out, size_t *out_len);

/* Frees memory returned by the library through a plain pointer. */
HS_API void hs_free(void *ptr);

#ifdef __cplusplus
}
#endif
#endif /* HSMSIGN_H */
