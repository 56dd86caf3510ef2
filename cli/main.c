/* main.c - hsmsign entry point: dispatches to the command table. */
#include <stdio.h>
#include <string.h>

#include "azure_args.h"
#include "cli.h"

static int cmd_help_markdown(const struct cli_cmd *cmd, int argc, char **argv);
static int cmd_help_man(const struct cli_cmd *cmd, int argc, char **argv);
static int cmd_help_completion(const struct cli_cmd *cmd, int argc, char **argv);

static const struct cli_opt no_opts[] = {{0}};

static const struct cli_cmd commands[] = {
        {"sign", cli_cmd_sign, "[options] FILE...", "sign files with Authenticode",
         "Signs each FILE in place (or to --output), atomically: a failed run leaves the\n"
         "input byte-identical. An existing signature is replaced unless --skip-signed.\n"
         "No signingTime attribute is added, so RSA signatures are reproducible: the same\n"
         "input, key and options give byte-identical output.",
         cli_sign_opts},
        {"verify", cli_cmd_verify, "[--ca-file ROOTS.pem] FILE...",
         "verify Authenticode signatures",
         "Recomputes each FILE's Authenticode digest and checks every signature in it:\n"
         "messageDigest, the signature value, the chain to the trusted roots, the\n"
         "codeSigning EKU and certificate validity. Exits 0 only if every file is valid.",
         cli_verify_opts},
        {"remove", cli_cmd_remove, "[-o OUT] FILE", "remove the signature from a file",
         "Strips the signature from FILE, in place or to --output.", cli_remove_opts},
        {"extract", cli_cmd_extract, "[-o OUT] [--pem] FILE", "write a file's PKCS#7 signature",
         "Writes the PKCS#7 SignedData embedded in FILE as DER (or PEM with --pem) to\n"
         "OUT, or to standard output.",
         cli_extract_opts},
        {"digest", cli_cmd_digest, "[-fd ALG] [-o FILE.req --cert CHAIN] FILE",
         "print a file's Authenticode digest, or write a signing request",
         "Prints the Authenticode digest of FILE in hex: the value a signature over it\n"
         "would carry. With -o and --cert, writes a signing request instead: the digest a\n"
         "key must sign, for 'hsmsign attach' to finish (docs/cli.md \"Two-step signing\").",
         cli_digest_opts},
        {"attach", cli_cmd_attach, "--signature SIG [--request FILE.req] [-o OUT] FILE",
         "finish two-step signing with a signature made elsewhere",
         "Embeds a signature made outside hsmsign: a raw signature over the digest in a\n"
         "signing request ('hsmsign digest FILE -o FILE.req --cert CHAIN'), or a whole\n"
         "PKCS#7 extracted from a file with the same content. The signature is checked\n"
         "against the certificate and the file's current digest before anything is\n"
         "written; the file is rewritten atomically.",
         cli_attach_opts},
        {"timestamp", cli_cmd_timestamp, "-tr URL [-tr URL...] [--index N] [-o OUT] FILE...",
         "add or replace the timestamp of signed files",
         "Asks the timestamp servers (in order, failing over) to countersign the existing\n"
         "signature of each FILE and stores the timestamp in it, replacing any earlier\n"
         "one. No key is needed and the signature bytes stay the same; the file is\n"
         "rewritten atomically and left untouched on failure.",
         cli_timestamp_opts},
        {"pkcs11", cli_cmd_pkcs11, "list --pkcs11-module PATH [--uri URI] [--pin SECRET]",
         "list PKCS#11 slots, tokens, keys and certificates",
         "Lists every slot of a PKCS#11 module, its token, and the token's private keys\n"
         "and certificates, each with the pkcs11: URI to pass to 'sign --key'. Most\n"
         "tokens show private keys only after login: give --pin (and --uri to select\n"
         "the token when there are several).",
         cli_pkcs11_opts},
        {"gcp", cli_cmd_gcp, "attestation KEYVERSION [-o FILE] [--roots FILE] [credentials]",
         "download and check the Cloud HSM attestation of a Cloud KMS key",
         "Fetches the attestation of a Google Cloud KMS key version (HSM protection\n"
         "level), verifies each of its certificate chains (to --roots when given) and\n"
         "saves the attestation statement with -o, for the CA that asks for it.\n"
         "KEYVERSION is projects/.../cryptoKeys/K[/cryptoKeyVersions/N].",
         cli_gcp_opts},
        {"catalog", cli_cmd_catalog, "create -o OUT.cat [-fd sha256|sha1] FILE...",
         "make an unsigned catalog (.cat) listing files",
         "Writes a catalog listing each FILE by its Authenticode digest (the hash of the\n"
         "whole file for formats hsmsign does not know) and its name, as driver packages\n"
         "need. Sign it with 'hsmsign sign OUT.cat'; check files against it with\n"
         "'hsmsign verify --catalog OUT.cat FILE...'.",
         cli_catalog_opts},
        {"vault", cli_cmd_vault, "csr|merge|show|role -kvu URL --name NAME [options] [FILE...]",
         "create a Key Vault certificate from a CSR, merge, show; print the role",
         "csr: creates the certificate NAME with issuer \"Unknown\" (the key is made in the\n"
         "vault, non-exportable, codeSigning EKU) and writes the CSR for the CA.\n"
         "merge FILE...: merges the CA's certificates (PEM, DER or PKCS#7, any order)\n"
         "after checking that the leaf's key is the pending CSR's. show: subject, issuer,\n"
         "validity, key, EKUs, kid and chain. role: the minimal custom role and the az\n"
         "commands to create and assign it and to federate a GitHub repository.",
         cli_vault_opts},
        {"doctor", cli_cmd_doctor, "-kvu URL --name NAME [auth options] [-tr URL...]",
         "check everything signing with a vault certificate needs",
         "Checks the credential (which source, whether it yields a token), that the vault\n"
         "answers, the certificate (validity, days left, codeSigning EKU, HSM key, chain),\n"
         "the clock against the vault's, one test signature (costs one sign transaction)\n"
         "verified against the certificate, and that each -tr timestamp server answers.\n"
         "Ends with a checklist of fixes; exits 1 when a check failed.",
         cli_doctor_opts},
#ifndef _WIN32 /* lib/serve is POSIX only */
        {"serve", cli_cmd_serve, "--config FILE [--user NAME] [--allow-root] [--check]",
         "run the signing service (Key Vault-compatible API)",
         "Serves the configured keys (file, PKCS#11, cloud KMS) over HTTPS with the Azure\n"
         "Key Vault certificate GET, key GET and sign requests, so 'hsmsign sign -kvu URL'\n"
         "and the Azure SDKs sign through it; clients send digests only. Callers\n"
         "authenticate with OIDC tokens (GitHub Actions, ...), API tokens or client\n"
         "certificates, and each key's allow rules decide who may use it. Every signature\n"
         "is audited. SIGHUP reloads the configuration, SIGTERM stops after the requests\n"
         "in flight. Exits 87 when the configuration is invalid, 2 when a key cannot be\n"
         "opened or the address cannot be bound (docs/server.md).",
         cli_serve_opts},
#endif
        {"help-markdown", cmd_help_markdown, "", "print the command reference as Markdown",
         "Prints the reference for every command in Markdown (source of docs/cli.md).", no_opts},
        {"help-man", cmd_help_man, "DIR", "write the man pages",
         "Writes hsmsign.1 and hsmsign-COMMAND.1 into DIR (installed by 'make install').", no_opts},
        {"help-completion", cmd_help_completion, "bash|zsh|fish", "print a shell completion",
         "Prints the completion script for the shell (installed by 'make install').", no_opts},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *fp)
{
	fprintf(fp, "usage: hsmsign COMMAND [options] [FILE...]\n\ncommands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (!cli_cmd_hidden(&commands[i]))
			fprintf(fp, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(fp, "\n'hsmsign COMMAND --help' describes a command; 'hsmsign --version' "
	            "prints the version.\n");
}

static int cmd_help_markdown(const struct cli_cmd *cmd, int argc, char **argv)
{
	(void)cmd;
	(void)argc;
	(void)argv;
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (!cli_cmd_hidden(&commands[i]))
			cli_print_markdown(&commands[i], stdout);
	return EXIT_OK;
}

static int cmd_help_man(const struct cli_cmd *cmd, int argc, char **argv)
{
	if (argc != 2) {
		cli_error("usage: hsmsign %s %s", cmd->name, cmd->synopsis);
		return EXIT_INVALID_ARGS;
	}
	return cli_write_man_pages(commands, N_COMMANDS, argv[1]);
}

static int cmd_help_completion(const struct cli_cmd *cmd, int argc, char **argv)
{
	if (argc != 2) {
		cli_error("usage: hsmsign %s %s", cmd->name, cmd->synopsis);
		return EXIT_INVALID_ARGS;
	}
	return cli_print_completion(commands, N_COMMANDS, argv[1], stdout);
}

static void print_version(void)
{
	struct hs_version_info v;

	hs_version_get(&v);
	printf("hsmsign %s (git %s)\nOpenSSL %s\nlibcurl %s\njansson %s\n", v.version,
	       v.git_revision, v.openssl, v.curl, v.jansson);
}

int main(int argc, char **argv)
{
	/* hsmsign holds tokens, client secrets and PINs in memory: a core
	 * dump or a ptrace attach by another process of the same user would
	 * expose them. No core files, not dumpable; and a file-size limit (or
	 * quota) must fail a write with EFBIG, which ends in a clean error and
	 * a removed temp file, not kill us. */
	hs_os_harden();
	if (argc < 2) {
		usage(stderr);
		return EXIT_INVALID_ARGS;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return EXIT_OK;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
		print_version();
		return EXIT_OK;
	}
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(&commands[i], argc - 1, argv + 1);
	cli_error("unknown command '%s' (see 'hsmsign --help')", argv[1]);
	return EXIT_INVALID_ARGS;
}
