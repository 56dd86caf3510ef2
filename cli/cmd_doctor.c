/*
 * cmd_doctor.c - `hsmsign doctor`: checks, one by one, everything signing
 * with a Key Vault certificate depends on, and ends with a checklist that
 * says how to fix each failure. The sign test costs one vault sign
 * transaction (plus one certificate read); nothing else is billed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "azure_args.h"

#define DOCTOR_MAX_TSA    CLI_MAX_TSA
#define DOCTOR_MAX_CHECKS (12 + DOCTOR_MAX_TSA)
#define DOCTOR_MAX_SKEW   300
#define DOCTOR_WARN_DAYS  30

enum { O_TSA = 1, O_ROOTS, O_NO_SIGN, O_MHSM, O_CERT };

const struct cli_opt cli_doctor_opts[] = {
        CLI_AZURE_OPTS,
        {O_TSA, "-tr|--tr|--timestamp-rfc3161", ARG_VALUE, "URL",
         "check this RFC 3161 timestamp server too (repeatable)"},
        {O_ROOTS, "--roots", ARG_VALUE, "FILE",
         "PEM roots the chain must reach (default: the system store)"},
        {O_NO_SIGN, "--no-sign-test", ARG_NONE, NULL,
         "skip the test signature (and the timestamp checks that need it)"},
        {O_MHSM, "--azure-managed-hsm", ARG_NONE, NULL,
         "the URL is a Managed HSM (automatic for *.managedhsm.azure.net)"},
        {O_CERT, "--cert", ARG_VALUE, "FILE",
         "Managed HSM: the signing certificate, as for sign (the HSM stores no certificates)"},
        {0},
};

enum check_state { CHECK_OK, CHECK_WARN, CHECK_FAIL, CHECK_SKIP };

struct check {
	const char *name;
	enum check_state state;
	char detail[600];
	char fix[400];
};

struct doctor {
	struct cli_azure_args az;
	const char *tsa[DOCTOR_MAX_TSA + 1];
	int n_tsa;
	const char *roots;
	int no_sign;
	struct check checks[DOCTOR_MAX_CHECKS];
	int n_checks;
};

static int doctor_opt(int id, const char *value, void *userdata)
{
	struct doctor *d = userdata;

	if (id >= CLI_AZURE_FIRST)
		return cli_azure_opt(&d->az, "doctor", id, value);
	if (id == O_TSA) {
		return cli_add_tsa_urls("doctor", d->tsa, &d->n_tsa, (char *)value);
	} else if (id == O_ROOTS) {
		d->roots = value;
	} else if (id == O_NO_SIGN) {
		d->no_sign = 1;
	} else if (id == O_MHSM) {
		d->az.opts.managed_hsm = 1;
	} else if (id == O_CERT) {
		d->az.opts.cert_file = value;
	}
	return 0;
}

/* Records and prints one check. fix may be NULL. */
static void report(struct doctor *d, const char *name, enum check_state state, const char *fix,
                   const char *fmt, ...) HS_PRINTF(5, 6);
static void report(struct doctor *d, const char *name, enum check_state state, const char *fix,
                   const char *fmt, ...)
{
	static const char *const tag[] = {"ok", "WARN", "FAIL", "skip"};
	struct check *c;
	va_list ap;

	if (d->n_checks == DOCTOR_MAX_CHECKS)
		return;
	c = &d->checks[d->n_checks++];
	c->name = name;
	c->state = state;
	va_start(ap, fmt);
	vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
	va_end(ap);
	snprintf(c->fix, sizeof(c->fix), "%s", fix ? fix : "");
	printf("[%-4s] %-13s %s\n", tag[state], name, c->detail);
}

/* What to do about a failed certificate read, by error kind. */
static void report_show_failure(struct doctor *d, struct hs_ctx *ctx)
{
	const char *msg = hs_ctx_message(ctx);
	int err = hs_ctx_error(ctx);

	if (err == HS_ERR_AUTH) {
		report(d, "credential", CHECK_FAIL,
		       "fix the credential the message names: for GitHub OIDC the federated "
		       "credential's subject must equal the token's 'sub' (see 'hsmsign vault role "
		       "--github-repo'), and the job needs 'permissions: id-token: write'; a "
		       "client secret may have expired",
		       "%s", msg);
		report(d, "vault", CHECK_SKIP, NULL, "needs a token");
	} else if (err == HS_ERR_NETWORK || err == HS_ERR_THROTTLED) {
		report(d, "credential", CHECK_SKIP, NULL, "the vault did not answer");
		report(d, "vault", CHECK_FAIL,
		       "check the -kvu URL, DNS, proxy variables and the vault's firewall "
		       "(ForbiddenByFirewall: allow the runner's address or use a private "
		       "endpoint)",
		       "%s", msg);
	} else {
		report(d, "credential", CHECK_OK, NULL, "a token was issued");
		report(d, "vault", CHECK_OK, NULL, "%s answered", d->az.opts.vault_url);
	}
	report(d, "certificate",
	       err == HS_ERR_AUTH || err == HS_ERR_NETWORK ? CHECK_SKIP : CHECK_FAIL,
	       err == HS_ERR_DENIED
	               ? "assign the role printed by 'hsmsign vault role' to this identity on the "
	                 "vault (it grants certificates/read and keys/sign/action); role "
	                 "assignments take a few minutes to apply"
	               : "check --name, or create the certificate with 'hsmsign vault csr'; a "
	                 "Managed HSM stores no certificates: add --azure-managed-hsm and give the "
	                 "certificate with --cert FILE (intermediates with -ac FILE)",
	       "%s", err == HS_ERR_AUTH || err == HS_ERR_NETWORK ? "needs the vault" : msg);
}

/* Validity, EKU, key, chain and clock checks from what the vault holds. */
static void report_certificate(struct doctor *d, const struct hs_vault_cert_info *i)
{
	long long skew = i->server_time ? (long long)time(NULL) - i->server_time : 0;

	report(d, "credential", CHECK_OK, NULL, "source '%s' gave a token", i->credential_source);
	report(d, "vault", CHECK_OK, NULL, "%s answered", d->az.opts.vault_url);
	report(d, "certificate", CHECK_OK, NULL, "%s", i->subject);
	report(d, "validity", i->valid_now ? CHECK_OK : CHECK_FAIL,
	       "renew: 'hsmsign vault csr' for the same name, then merge the CA's answer",
	       "%s to %s", i->not_before, i->not_after);
	report(d, "expiry",
	       i->days_left < 0                  ? CHECK_FAIL
	       : i->days_left < DOCTOR_WARN_DAYS ? CHECK_WARN
	                                         : CHECK_OK,
	       "renew the certificate before it expires (timestamped signatures stay valid)",
	       "%ld days left", i->days_left);
	report(d, "codeSigning", i->code_signing ? CHECK_OK : CHECK_FAIL,
	       "the CA must issue the certificate with the codeSigning EKU "
	       "(1.3.6.1.5.5.7.3.3)",
	       "EKU: %s", i->ekus);
	report(d, "HSM key", i->hsm ? CHECK_OK : CHECK_WARN,
	       "CAs issue code-signing certificates only for HSM keys: recreate with "
	       "'hsmsign vault csr --key-type RSA-HSM' (Premium vault)",
	       "%s%s", i->key_type, i->exportable ? ", exportable" : "");
	report(d, "chain", i->chain_complete ? CHECK_OK : CHECK_FAIL,
	       "the vault returns the leaf only: pass the CA's intermediates with -ac FILE (sign "
	       "needs them too) or use a certificate with an AIA URL; give --roots when the root "
	       "is not in the system store",
	       "%s", i->chain);
	if (i->server_time == 0)
		report(d, "clock", CHECK_WARN, NULL, "the vault sent no Date header");
	else
		report(d, "clock",
		       skew > DOCTOR_MAX_SKEW || skew < -DOCTOR_MAX_SKEW ? CHECK_FAIL : CHECK_OK,
		       "synchronise the clock (NTP): tokens and assertions fail when it is off by "
		       "more than 5 minutes",
		       "%+lld s from the vault's clock", skew);
}

/* Writes a tiny PowerShell script to sign: any signable file would do. */
static int write_probe(char *dir, size_t dir_size, char *path, size_t path_size)
{
	FILE *fp;
	int ok;

	snprintf(dir, dir_size, "%s/hsmsign-doctor-XXXXXX", hs_os_tmpdir());
	if (hs_os_mkdtemp(dir) == NULL)
		return -1;
	snprintf(path, path_size, "%s/doctor.ps1", dir);
	if ((fp = hs_os_fopen(path, "w")) == NULL)
		return -1;
	ok = fputs("Write-Output 'hsmsign doctor'\r\n", fp) >= 0;
	return fclose(fp) == 0 && ok ? 0 : -1;
}

/* Timestamps the signed probe with each TSA on its own. */
static void check_tsas(struct doctor *d, struct hs_ctx *ctx, const char *probe)
{
	for (int i = 0; i < d->n_tsa; i++) {
		struct hs_timestamp_opts t = HS_TIMESTAMP_OPTS_INIT;
		const char *one[2] = {d->tsa[i], NULL};

		if (probe == NULL) {
			report(d, "timestamp", CHECK_SKIP, NULL, "%s: needs the test signature",
			       d->tsa[i]);
			continue;
		}
		t.urls = one;
		t.max_retries = -1;
		t.backoff_base_ms = d->az.opts.backoff_base_ms;
		t.ca_file = d->az.opts.ca_file;
		hs_ctx_clear_error(ctx);
		if (hs_timestamp_file(ctx, probe, &t, 0, NULL) == 0)
			report(d, "timestamp", CHECK_OK, NULL, "%s answered with a valid token",
			       d->tsa[i]);
		else
			report(d, "timestamp", CHECK_FAIL,
			       "use another TSA (repeat -tr to fail over) or check the "
			       "proxy/firewall",
			       "%s", hs_ctx_message(ctx));
	}
}

/* Whether the URL is a Managed HSM: --azure-managed-hsm, or the host name
 * (the key provider's rule, lib/keys/akv.c). */
static bool doctor_is_mhsm(const struct doctor *d)
{
	if (d->az.opts.managed_hsm >= 0)
		return d->az.opts.managed_hsm == 1;
	return strstr(d->az.opts.vault_url, ".managedhsm.") != NULL;
}

/* One signature through the vault, checked against the certificate by
 * the library before it is embedded, then verified as a whole file.
 * Returns 0 when the probe got signed (verified or not). */
static int check_sign(struct doctor *d, struct hs_ctx *ctx, const char *probe)
{
	struct {
		struct hs_sign_opts o;
	} so = {.o = HS_SIGN_OPTS_INIT};
	struct hs_verify_opts vo = HS_VERIFY_OPTS_INIT;
	struct hs_verify_result *res = NULL;
	struct hs_key *key = NULL;
	int r = -1;

	hs_ctx_clear_error(ctx);
	if (hs_key_open_azure(ctx, &key, &d->az.opts) < 0 ||
	    hs_sign_file(ctx, key, probe, &so.o, NULL) < 0) {
		report(d, "sign test", CHECK_FAIL,
		       doctor_is_mhsm(d)
		               ? "the identity needs the Managed HSM local RBAC role 'Managed HSM "
		                 "Crypto User' (keys/sign/action) on the key; the key must belong "
		                 "to "
		                 "the --cert certificate"
		               : "the identity needs keys/sign/action on the vault ('hsmsign vault "
		                 "role'); the key must belong to the certificate",
		       "%s", hs_ctx_message(ctx));
		goto out;
	}
	r = 0; /* signed: the timestamp checks can use the file */
	vo.ca_file = d->roots;
	if (hs_verify_file(ctx, probe, &vo, &res) == 0 && res->status == HS_VERIFY_OK) {
		report(d, "sign test", CHECK_OK, NULL,
		       "one signature (1 sign transaction) verified against the certificate");
	} else {
		report(d, "sign test", CHECK_FAIL,
		       "see the chain check; give --roots with the CA's root when it is not in "
		       "the system store",
		       "the test signature does not verify: %s",
		       res ? hs_verify_status_name(res->status) : hs_ctx_message(ctx));
	}
out:
	hs_verify_result_free(res);
	hs_key_free(key);
	return r;
}

/* The test signature and the TSA checks, in a temporary directory. */
static void check_signing(struct doctor *d, struct hs_ctx *ctx)
{
	char dir[512], probe[600];
	int signed_ok = -1;

	if (d->no_sign) {
		report(d, "sign test", CHECK_SKIP, NULL, "--no-sign-test");
		check_tsas(d, ctx, NULL);
		return;
	}
	if (write_probe(dir, sizeof(dir), probe, sizeof(probe)) < 0) {
		report(d, "sign test", CHECK_FAIL, "set TMPDIR to a writable directory",
		       "cannot write a temporary file");
		check_tsas(d, ctx, NULL);
		return;
	}
	signed_ok = check_sign(d, ctx, probe);
	check_tsas(d, ctx, signed_ok == 0 ? probe : NULL);
	hs_os_unlink(probe);
	hs_os_rmdir(dir);
}

/*
 * A Managed HSM holds keys only: there is no /certificates endpoint to
 * read, so the certificate comes from --cert, as sign takes it, and the
 * test signature (which opens the key: credential, HSM, key) is the check.
 */
static void doctor_run_mhsm(struct doctor *d, struct hs_ctx *ctx)
{
	if (d->az.opts.cert_file == NULL) {
		report(d, "certificate", CHECK_FAIL,
		       "give the signing certificate with --cert FILE and its intermediates with "
		       "-ac FILE, the options 'hsmsign sign' takes for a Managed HSM (keep the "
		       "certificate with the build, e.g. in the repository)",
		       "a Managed HSM has no certificate store (no /certificates endpoint)");
		report(d, "sign test", CHECK_SKIP, NULL, "needs the certificate (--cert)");
		check_tsas(d, ctx, NULL);
		return;
	}
	report(d, "certificate", CHECK_OK, NULL, "%s (--cert; the Managed HSM holds the key)",
	       d->az.opts.cert_file);
	check_signing(d, ctx);
}

/* The closing checklist: each failure or warning with its fix. */
static int print_checklist(const struct doctor *d)
{
	int failed = 0, n = 0;

	for (int i = 0; i < d->n_checks; i++)
		failed += d->checks[i].state == CHECK_FAIL;
	printf("\n%s\n", failed ? "Checklist:" : "Everything hsmsign needs to sign works.");
	for (int i = 0; i < d->n_checks; i++) {
		const struct check *c = &d->checks[i];

		if ((c->state == CHECK_FAIL || c->state == CHECK_WARN) && c->fix[0] != '\0')
			printf("%d. [%s] %s: %s\n", ++n, c->state == CHECK_FAIL ? "FAIL" : "WARN",
			       c->name, c->fix);
	}
	return failed ? EXIT_SOME_FAILED : EXIT_OK;
}

static int doctor_run(struct doctor *d)
{
	struct hs_vault_cert_info *info = NULL;
	struct hs_ctx *ctx = cli_azure_ctx();
	int r;

	if (ctx == NULL)
		return EXIT_ALL_FAILED;
	if (doctor_is_mhsm(d)) {
		printf("hsmsign doctor: %s (Managed HSM), key '%s'\n", d->az.opts.vault_url,
		       d->az.opts.certificate);
		doctor_run_mhsm(d, ctx);
	} else {
		printf("hsmsign doctor: %s, certificate '%s'\n", d->az.opts.vault_url,
		       d->az.opts.certificate);
		if (hs_vault_show(ctx, &d->az.opts, d->roots, &info) < 0) {
			report_show_failure(d, ctx);
			check_tsas(d, ctx, NULL);
		} else {
			report_certificate(d, info);
			check_signing(d, ctx);
		}
	}
	r = print_checklist(d);
	hs_vault_cert_info_free(info);
	hs_ctx_free(ctx);
	return r;
}

int cli_cmd_doctor(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct doctor *d = calloc(1, sizeof(*d));
	char **ops = calloc((size_t)argc + 1, sizeof(*ops));
	int n_ops = 0, r;

	if (d == NULL || ops == NULL) {
		cli_error("out of memory");
		r = EXIT_ALL_FAILED;
		goto out;
	}
	cli_azure_init(&d->az);
	r = cli_parse(cmd, argc, argv, doctor_opt, d, ops, &n_ops);
	if (r == 0 && n_ops > 0) {
		cli_error("doctor: unexpected argument '%s'", ops[0]);
		r = EXIT_INVALID_ARGS;
	}
	if (r == 0 && (r = cli_azure_finish(&d->az, "doctor")) == 0)
		r = doctor_run(d);
	cli_azure_free(&d->az);
out:
	free(d);
	free(ops);
	return r < 0 ? EXIT_OK : r;
}
