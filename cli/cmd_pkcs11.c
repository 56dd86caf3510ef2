/*
 * cmd_pkcs11.c - `hsmsign pkcs11 list`, and the PIN handling that `sign`
 * shares with it: --pin SECRET, or a prompt on the terminal (the library
 * never prompts; it calls back here).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "cli.h"

enum { O_MODULE = 1, O_URI, O_PIN, O_ALLOW_PIN_IN_URI };

const struct cli_opt cli_pkcs11_opts[] = {
        {O_MODULE, "--pkcs11-module", ARG_VALUE, "PATH", "the PKCS#11 module (.so) to load"},
        {O_URI, "--uri", ARG_VALUE, "URI",
         "list only the tokens this pkcs11: URI selects (e.g. pkcs11:token=NAME)"},
        {O_PIN, "--pin", ARG_VALUE, "SECRET",
         "log in to the one selected token to show private keys too: env:NAME, file:PATH "
         "or stdin"},
        {O_ALLOW_PIN_IN_URI, "--allow-pin-in-uri", ARG_NONE, NULL,
         "accept a pin-value attribute in the URI"},
        {0},
};

/* The library's PIN callback: asks on the terminal, echo off. */
int cli_pkcs11_pin_prompt(char *buf, size_t size, const char *token, void *userdata)
{
	char prompt[160];

	(void)userdata;
	snprintf(prompt, sizeof(prompt), "PIN for token '%s': ", token);
	if (size == 0 || hs_os_read_secret(prompt, buf, size) < 0)
		return HS_ERR_CANCELLED;
	return buf[0] != '\0' ? 0 : HS_ERR_CANCELLED;
}

int cli_pkcs11_open_key(struct hs_ctx *ctx, struct hs_pkcs11_key_opts *opts, const char *pin_spec,
                        struct hs_key **out)
{
	char *pin = NULL;
	int r;

	*out = NULL;
	if (pin_spec != NULL && (r = cli_secret_read("--pin", pin_spec, &pin)) != 0)
		return r;
	opts->pin = pin;
	/* Prompt only where someone can answer: never in CI logs. */
	if (pin == NULL && hs_os_isatty(0))
		opts->pin_fn = cli_pkcs11_pin_prompt;
	r = hs_key_open_pkcs11(ctx, out, opts);
	opts->pin = NULL;
	cli_secret_free(pin);
	if (r < 0) {
		cli_error("sign: %s", hs_ctx_message(ctx));
		return EXIT_INVALID_ARGS;
	}
	return 0;
}

struct pkcs11_args {
	struct hs_pkcs11_key_opts p11;
	const char *pin;
};

static int pkcs11_opt(int id, const char *value, void *userdata)
{
	struct pkcs11_args *a = userdata;

	if (id == O_MODULE)
		a->p11.module = value;
	else if (id == O_URI)
		a->p11.uri = value;
	else if (id == O_PIN)
		a->pin = value;
	else if (id == O_ALLOW_PIN_IN_URI)
		a->p11.allow_pin_in_uri = 1;
	return 0;
}

static const char *const kind_names[] = {
        [HS_PKCS11_SLOT] = "Slot",
        [HS_PKCS11_TOKEN] = "Token",
        [HS_PKCS11_PRIVATE_KEY] = "Private key",
        [HS_PKCS11_CERTIFICATE] = "Certificate",
};

static void print_entry(const struct hs_pkcs11_entry *e, void *userdata)
{
	int indent = e->kind == HS_PKCS11_SLOT ? 0 : e->kind == HS_PKCS11_TOKEN ? 2 : 4;

	(void)userdata;
	if (e->kind == HS_PKCS11_SLOT)
		printf("%s %lu: %s (%s)\n", kind_names[e->kind], e->slot_id, e->label, e->detail);
	else
		printf("%*s%s '%s': %s\n", indent, "", kind_names[e->kind], e->label, e->detail);
	if (e->uri != NULL)
		printf("%*s  %s\n", indent, "", e->uri);
}

static int run_list(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct pkcs11_args a = {.p11 = HS_PKCS11_KEY_OPTS_INIT};
	char **ops = calloc((size_t)argc + 1, sizeof(*ops));
	struct hs_ctx *ctx = NULL;
	char *pin = NULL;
	int n_ops = 0, r;

	if (ops == NULL || hs_ctx_new(&ctx) < 0) {
		cli_error("out of memory");
		r = EXIT_ALL_FAILED;
		goto out;
	}
	if ((r = cli_parse(cmd, argc, argv, pkcs11_opt, &a, ops, &n_ops)) != 0)
		goto out;
	if (n_ops != 0) {
		cli_error("pkcs11 list: unexpected argument '%s'", ops[0]);
		r = EXIT_INVALID_ARGS;
		goto out;
	}
	if (a.pin != NULL && (r = cli_secret_read("--pin", a.pin, &pin)) != 0)
		goto out;
	hs_ctx_set_log(ctx, cli_log, NULL);
	a.p11.pin = pin;
	if (hs_pkcs11_list(ctx, &a.p11, print_entry, NULL) < 0) {
		cli_error("pkcs11 list: %s", hs_ctx_message(ctx));
		r = EXIT_INVALID_ARGS;
	}
out:
	cli_secret_free(pin);
	hs_ctx_free(ctx);
	free(ops);
	return r < 0 ? EXIT_OK : r;
}

int cli_cmd_pkcs11(const struct cli_cmd *cmd, int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "list") == 0)
		return run_list(cmd, argc - 1, argv + 1);
	if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		cli_print_help(cmd, stdout);
		return EXIT_OK;
	}
	cli_error("pkcs11: give a subcommand: 'hsmsign pkcs11 list --pkcs11-module PATH'");
	return EXIT_INVALID_ARGS;
}
