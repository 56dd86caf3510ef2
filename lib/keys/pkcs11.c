/*
 * pkcs11.c - the `pkcs11` key provider: a private key on a PKCS#11 token
 * or HSM, named by an RFC 7512 URI. The user logs in once when the key is
 * opened; every signature reuses that login through a small pool of
 * sessions (one by default: many tokens cannot sign concurrently). RSA
 * signs with CKM_RSA_PKCS over a DigestInfo built here, EC with CKM_ECDSA
 * whose r||s answer becomes DER; key.c checks every signature against the
 * certificate before it is used.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "p11.h"

/* Most sessions a key opens, and certificates read from one token. */
#define P11_MAX_SESSIONS 64
#define P11_MAX_CERTS    64
/* Largest signature we accept: RSA 8192 bits. */
#define P11_SIG_MAX 1024

struct p11_key {
	struct p11_module *mod;
	CK_SLOT_ID slot;
	char label[33]; /* token label, for messages */
	CK_OBJECT_HANDLE key;
	uint8_t *key_id; /* CKA_ID, may be NULL */
	size_t key_id_len;
	CK_KEY_TYPE key_type;
	CK_MECHANISM_TYPE mech;
	char *pin; /* kept only for CKA_ALWAYS_AUTHENTICATE keys */
	STACK_OF(X509) * chain;
	pthread_mutex_t lock;
	pthread_cond_t idle;
	bool lock_ready;
	CK_SESSION_HANDLE sessions[P11_MAX_SESSIONS];
	bool busy[P11_MAX_SESSIONS];
	size_t n_open, max_sessions;
};

static void p11_key_free(void *state)
{
	struct p11_key *k = state;

	if (k == NULL)
		return;
	if (k->mod != NULL) {
		for (size_t i = 0; i < k->n_open; i++)
			k->mod->f->C_CloseSession(k->sessions[i]);
		hs_p11_module_free(k->mod);
	}
	if (k->pin != NULL)
		OPENSSL_clear_free(k->pin, strlen(k->pin));
	if (k->lock_ready) {
		pthread_mutex_destroy(&k->lock);
		pthread_cond_destroy(&k->idle);
	}
	free(k->key_id);
	sk_X509_pop_free(k->chain, X509_free);
	free(k);
}

/* Opens one more read-only session; the login of the first one applies
 * to it too (PKCS#11 logins are per application, not per session). */
static int open_session(struct hs_ctx *ctx, struct p11_key *k, CK_SESSION_HANDLE *out)
{
	CK_RV rv = k->mod->f->C_OpenSession(k->slot, CKF_SERIAL_SESSION, NULL, NULL, out);

	return rv == CKR_OK ? 0 : hs_p11_error(ctx, rv, "C_OpenSession");
}

/* Takes an idle session, opening one while under the limit, else waits. */
static int acquire_session(struct hs_ctx *ctx, struct p11_key *k, size_t *slot)
{
	int r = 0;

	pthread_mutex_lock(&k->lock);
	for (;;) {
		size_t i;

		for (i = 0; i < k->n_open && k->busy[i]; i++)
			;
		if (i < k->n_open)
			break;
		if (k->n_open < k->max_sessions) {
			if ((r = open_session(ctx, k, &k->sessions[i])) == 0)
				k->n_open++;
			break;
		}
		pthread_cond_wait(&k->idle, &k->lock);
	}
	if (r == 0) {
		for (*slot = 0; k->busy[*slot]; (*slot)++)
			;
		k->busy[*slot] = true;
	}
	pthread_mutex_unlock(&k->lock);
	return r;
}

static void release_session(struct p11_key *k, size_t slot)
{
	pthread_mutex_lock(&k->lock);
	k->busy[slot] = false;
	pthread_cond_signal(&k->idle);
	pthread_mutex_unlock(&k->lock);
}

/* C_SignInit + (context-specific login) + C_Sign on one session. */
static int sign_raw(struct hs_ctx *ctx, struct p11_key *k, CK_SESSION_HANDLE session,
                    const struct hs_buf *in, uint8_t *out, CK_ULONG *out_len)
{
	CK_MECHANISM mech = {k->mech, NULL, 0};
	CK_RV rv;

	if ((rv = k->mod->f->C_SignInit(session, &mech, k->key)) != CKR_OK)
		return hs_p11_error(ctx, rv, "C_SignInit");
	if (k->pin != NULL) {
		rv = k->mod->f->C_Login(session, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR *)k->pin,
		                        strlen(k->pin));
		if (rv != CKR_OK)
			return hs_p11_error(ctx, rv,
			                    "per-signature login (CKA_ALWAYS_AUTHENTICATE)");
	}
	rv = k->mod->f->C_Sign(session, in->data, in->len, out, out_len);
	return rv == CKR_OK ? 0 : hs_p11_error(ctx, rv, "C_Sign");
}

static int p11_sign_digest(struct hs_ctx *ctx, void *state, const EVP_MD *md, const uint8_t *digest,
                           size_t digest_len, struct hs_buf *sig)
{
	struct p11_key *k = state;
	struct hs_buf in = {0};
	uint8_t raw[P11_SIG_MAX];
	CK_ULONG raw_len = sizeof(raw);
	size_t slot = 0;
	int r;

	if (k->mech == CKM_RSA_PKCS)
		r = hs_key_digest_info(ctx, md, digest, digest_len, &in);
	else if ((r = hs_buf_append(&in, digest, digest_len)) < 0)
		r = hs_error_set(ctx, r, "out of memory");
	if (r < 0 || (r = acquire_session(ctx, k, &slot)) < 0)
		goto out;
	r = sign_raw(ctx, k, k->sessions[slot], &in, raw, &raw_len);
	release_session(k, slot);
	if (r < 0)
		goto out;
	if (raw_len > sizeof(raw)) {
		r = hs_error_set(ctx, HS_ERR_CRYPTO, "PKCS#11 C_Sign: bad signature length");
		goto out;
	}
	if (k->mech == CKM_ECDSA)
		r = hs_key_ecdsa_p1363_to_der(ctx, raw, raw_len, sig);
	else if ((r = hs_buf_append(sig, raw, raw_len)) < 0)
		r = hs_error_set(ctx, r, "out of memory");
out:
	hs_buf_free(&in);
	return r;
}

static int p11_get_chain(struct hs_ctx *ctx, void *state, STACK_OF(X509) * *out)
{
	return hs_key_chain_copy(ctx, ((struct p11_key *)state)->chain, out);
}

const struct hs_key_provider hs_key_provider_pkcs11 = {
        .name = "pkcs11",
        .get_chain = p11_get_chain,
        .sign_digest = p11_sign_digest,
        .free = p11_key_free,
        .concurrent = true,
};

/* Picks the one token the URI selects. */
static int select_slot(struct hs_ctx *ctx, struct p11_key *k, const struct p11_uri *uri)
{
	CK_SLOT_ID *slots;
	CK_TOKEN_INFO ti;
	CK_RV rv;
	size_t n;
	int r;

	if ((r = hs_p11_find_slots(ctx, k->mod, uri, &slots, &n)) < 0)
		return r;
	if (n == 1)
		k->slot = slots[0];
	free(slots);
	if (n == 0 && uri->attr[P11_SLOT_ID] != NULL &&
	    k->mod->f->C_GetTokenInfo(uri->slot_id, &ti) == CKR_TOKEN_NOT_PRESENT)
		return hs_error_set(ctx, HS_ERR_NOTFOUND,
		                    "PKCS#11 slot %lu has no token (CKR_TOKEN_NOT_PRESENT): insert "
		                    "it",
		                    (unsigned long)uri->slot_id);
	if (n == 0)
		return hs_error_set(ctx, HS_ERR_NOTFOUND,
		                    "no PKCS#11 token matches the URI (is it plugged in? see "
		                    "'hsmsign pkcs11 list')");
	if (n > 1)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "the PKCS#11 URI matches %zu tokens: add token= or serial=", n);
	if ((rv = k->mod->f->C_GetTokenInfo(k->slot, &ti)) != CKR_OK)
		return hs_p11_error(ctx, rv, "C_GetTokenInfo");
	HS_P11_TEXT(k->label, ti.label);
	return 0;
}

/* Finds the one private key the URI names (after login: private keys are
 * usually invisible before). */
static int find_key(struct hs_ctx *ctx, struct p11_key *k, CK_SESSION_HANDLE session,
                    const struct p11_uri *uri)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[3] = {{CKA_CLASS, &cls, sizeof(cls)}};
	CK_ULONG n_tmpl = 1;
	CK_OBJECT_HANDLE found[2];
	size_t n;
	int r;

	if (uri->attr[P11_OBJECT] != NULL)
		tmpl[n_tmpl++] = (CK_ATTRIBUTE){CKA_LABEL, uri->attr[P11_OBJECT],
		                                strlen(uri->attr[P11_OBJECT])};
	if (uri->attr[P11_ID] != NULL)
		tmpl[n_tmpl++] = (CK_ATTRIBUTE){CKA_ID, uri->attr[P11_ID], uri->id_len};
	if ((r = hs_p11_find_objects(ctx, k->mod, session, tmpl, n_tmpl, found, 2, &n)) < 0)
		return r;
	if (n == 0)
		return hs_error_set(ctx, HS_ERR_NOTFOUND,
		                    "no private key on PKCS#11 token '%s' matches the URI (see "
		                    "'hsmsign pkcs11 list')",
		                    k->label);
	if (n > 1)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "several private keys on PKCS#11 token '%s' match the URI: add "
		                    "id= or object=",
		                    k->label);
	k->key = found[0];
	r = hs_p11_get_attr(ctx, k->mod, session, k->key, CKA_ID, &k->key_id, &k->key_id_len);
	return r == HS_ERR_NOTFOUND ? 0 : r;
}

/* Reads a CK_ULONG or CK_BBOOL attribute; `def` when absent. */
static CK_ULONG get_ulong(struct p11_key *k, CK_SESSION_HANDLE session, CK_ATTRIBUTE_TYPE type,
                          CK_ULONG def, size_t size)
{
	CK_ULONG v = 0;
	CK_BBOOL b = 0;
	CK_ATTRIBUTE a = {type, size == sizeof(b) ? (void *)&b : (void *)&v, size};

	if (k->mod->f->C_GetAttributeValue(session, k->key, &a, 1) != CKR_OK)
		return def;
	return size == sizeof(b) ? b : v;
}

/* Chooses the mechanism for the key type and checks the token has it. */
static int choose_mechanism(struct hs_ctx *ctx, struct p11_key *k, CK_SESSION_HANDLE session)
{
	CK_MECHANISM_INFO info;
	CK_RV rv;

	k->key_type =
	        get_ulong(k, session, CKA_KEY_TYPE, CK_UNAVAILABLE_INFORMATION, sizeof(CK_ULONG));
	if (k->key_type == CKK_RSA)
		k->mech = CKM_RSA_PKCS;
	else if (k->key_type == CKK_EC)
		k->mech = CKM_ECDSA;
	else
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "the PKCS#11 key is neither RSA nor EC (CKA_KEY_TYPE 0x%lx)",
		                    (unsigned long)k->key_type);
	rv = k->mod->f->C_GetMechanismInfo(k->slot, k->mech, &info);
	if (rv == CKR_MECHANISM_INVALID || (rv == CKR_OK && !(info.flags & CKF_SIGN)))
		return hs_error_set(
		        ctx, HS_ERR_UNSUPPORTED,
		        "PKCS#11 token '%s' cannot sign with %s (CKR_MECHANISM_INVALID)", k->label,
		        k->mech == CKM_RSA_PKCS ? "CKM_RSA_PKCS" : "CKM_ECDSA");
	return 0;
}

/* The token's certificates with the key's CKA_ID (signer candidates) or
 * all of them (id NULL), as X509s appended to *out. */
static int token_certs(struct hs_ctx *ctx, struct p11_key *k, CK_SESSION_HANDLE session,
                       const uint8_t *id, size_t id_len, STACK_OF(X509) * out)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_ATTRIBUTE tmpl[2] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, (void *)id, id_len}};
	CK_OBJECT_HANDLE found[P11_MAX_CERTS];
	size_t n;
	int r;

	r = hs_p11_find_objects(ctx, k->mod, session, tmpl, id ? 2 : 1, found, P11_MAX_CERTS, &n);
	for (size_t i = 0; r == 0 && i < n; i++) {
		uint8_t *der;
		size_t len;
		const unsigned char *p;
		X509 *x;

		if ((r = hs_p11_get_attr(ctx, k->mod, session, found[i], CKA_VALUE, &der, &len)) <
		    0) {
			r = r == HS_ERR_NOTFOUND ? 0 : r;
			continue;
		}
		p = der;
		x = d2i_X509(NULL, &p, (long)len);
		free(der);
		if (x != NULL && !sk_X509_push(out, x))
			X509_free(x);
	}
	ERR_clear_error();
	return r;
}

/* 1 if the token key's public half is the certificate's, 0 if not, -1
 * when the token does not tell (key.c's signature check still runs). */
static int key_matches_cert(struct p11_key *k, CK_SESSION_HANDLE session, X509 *cert)
{
	EVP_PKEY *pub = X509_get0_pubkey(cert);
	BIGNUM *n = NULL, *mod = NULL;
	uint8_t *modulus = NULL;
	size_t len;
	int match = -1;

	if (pub == NULL || k->key_type != CKK_RSA)
		return -1; /* EC private keys carry no public point */
	if (EVP_PKEY_get_base_id(pub) != EVP_PKEY_RSA)
		return 0;
	if (hs_p11_get_attr(NULL, k->mod, session, k->key, CKA_MODULUS, &modulus, &len) == 0 &&
	    EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_N, &n) &&
	    (mod = BN_bin2bn(modulus, (int)len, NULL)) != NULL)
		match = BN_cmp(n, mod) == 0;
	BN_free(n);
	BN_free(mod);
	free(modulus);
	ERR_clear_error();
	return match;
}

/* Moves the certificate that belongs to the key to the front; with
 * several candidates and no way to tell, the first one stays. */
static int signer_first(struct hs_ctx *ctx, struct p11_key *k, CK_SESSION_HANDLE session,
                        const char *source)
{
	for (int i = 0; i < sk_X509_num(k->chain); i++) {
		X509 *x = sk_X509_value(k->chain, i);
		int m = key_matches_cert(k, session, x);

		if (m == 1 && i > 0) {
			sk_X509_delete(k->chain, i);
			sk_X509_unshift(k->chain, x);
		}
		if (m != 0)
			return 0;
	}
	return hs_error_set(ctx, HS_ERR_INVALID,
	                    "the PKCS#11 key does not belong to the certificate from %s", source);
}

/* Adds the token's CA certificates that issued the chain's last one. */
static int add_token_issuers(struct hs_ctx *ctx, struct p11_key *k, CK_SESSION_HANDLE session)
{
	STACK_OF(X509) *all = sk_X509_new_null();
	int r, added = 1;

	if (all == NULL)
		return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
	r = token_certs(ctx, k, session, NULL, 0, all);
	for (int depth = 0; r == 0 && added && depth < 8; depth++) {
		X509 *tail = sk_X509_value(k->chain, sk_X509_num(k->chain) - 1);

		added = 0;
		if (X509_check_issued(tail, tail) == X509_V_OK)
			break; /* a self-signed root: verifiers must already trust it */
		for (int i = 0; i < sk_X509_num(all) && !added; i++) {
			X509 *x = sk_X509_value(all, i);

			if (X509_cmp(x, tail) != 0 && X509_check_issued(x, tail) == X509_V_OK &&
			    X509_check_issued(x, x) != X509_V_OK && X509_up_ref(x)) {
				sk_X509_push(k->chain, x);
				added = 1;
			}
		}
	}
	sk_X509_pop_free(all, X509_free);
	return r;
}

/* The chain: --cert file, else the token's certificate with the key's
 * id plus the token's intermediates; then the extra files. */
static int load_chain(struct hs_ctx *ctx, struct p11_key *k, CK_SESSION_HANDLE session,
                      const struct hs_pkcs11_key_opts *opts)
{
	int r;

	if (opts->cert_file != NULL) {
		if ((r = hs_load_certs(ctx, opts->cert_file, &k->chain)) < 0 ||
		    (r = signer_first(ctx, k, session, opts->cert_file)) < 0)
			return r;
	} else {
		if ((k->chain = sk_X509_new_null()) == NULL)
			return hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		if (k->key_id != NULL &&
		    (r = token_certs(ctx, k, session, k->key_id, k->key_id_len, k->chain)) < 0)
			return r;
		if (sk_X509_num(k->chain) == 0)
			return hs_error_set(
			        ctx, HS_ERR_NOTFOUND,
			        "PKCS#11 token '%s' holds no certificate with the key's "
			        "CKA_ID: give the certificate with --cert",
			        k->label);
		if ((r = signer_first(ctx, k, session, "the token")) < 0 ||
		    (r = add_token_issuers(ctx, k, session)) < 0)
			return r;
	}
	return hs_key_add_cert_files(ctx, k->chain, opts->extra_certs);
}

/* URI checks that need no module: PIN policy and the object type. */
static int check_uri(struct hs_ctx *ctx, const struct p11_uri *uri,
                     const struct hs_pkcs11_key_opts *opts)
{
	if (uri->pin_value != NULL && !opts->allow_pin_in_uri)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "the PKCS#11 URI carries a PIN (pin-value), which leaks into "
		                    "logs and shell history: use --pin, or --allow-pin-in-uri");
	if (uri->pin_source != NULL)
		return hs_error_set(ctx, HS_ERR_UNSUPPORTED,
		                    "the PKCS#11 URI's pin-source is not supported: use --pin "
		                    "file:PATH");
	if (uri->attr[P11_TYPE] != NULL && strcmp(uri->attr[P11_TYPE], "private") != 0)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "the PKCS#11 URI must name the private key (type=private), not "
		                    "type=%s",
		                    uri->attr[P11_TYPE]);
	if (opts->module == NULL && uri->module_path == NULL)
		return hs_error_set(ctx, HS_ERR_INVALID,
		                    "give the PKCS#11 module (--pkcs11-module PATH)");
	if (opts->sessions < 0 || opts->sessions > P11_MAX_SESSIONS)
		return hs_error_set(ctx, HS_ERR_INVALID, "PKCS#11 sessions must be 1 to %d",
		                    P11_MAX_SESSIONS);
	return 0;
}

/* The session limit: what was asked, within what the token allows. */
static void set_max_sessions(struct p11_key *k, const struct hs_pkcs11_key_opts *opts)
{
	CK_TOKEN_INFO ti;

	k->max_sessions = opts->sessions > 0 ? (size_t)opts->sessions : 1;
	if (k->mod->f->C_GetTokenInfo(k->slot, &ti) == CKR_OK &&
	    ti.ulMaxSessionCount != CK_EFFECTIVELY_INFINITE &&
	    ti.ulMaxSessionCount != CK_UNAVAILABLE_INFORMATION && ti.ulMaxSessionCount > 0 &&
	    ti.ulMaxSessionCount < k->max_sessions)
		k->max_sessions = ti.ulMaxSessionCount;
}

/* Everything after the module is loaded: token, login, key, chain. */
static int open_token_key(struct hs_ctx *ctx, struct p11_key *k, const struct p11_uri *uri,
                          const struct hs_pkcs11_key_opts *opts)
{
	CK_SESSION_HANDLE session;
	char *pin = NULL;
	int r;

	if ((r = select_slot(ctx, k, uri)) < 0 || (r = open_session(ctx, k, &session)) < 0)
		return r;
	k->sessions[0] = session;
	k->n_open = 1;
	if ((r = hs_p11_login(ctx, k->mod, session, k->slot, opts, uri, &pin)) < 0 ||
	    (r = find_key(ctx, k, session, uri)) < 0 || (r = choose_mechanism(ctx, k, session)) < 0)
		goto out;
	if (get_ulong(k, session, CKA_ALWAYS_AUTHENTICATE, 0, sizeof(CK_BBOOL))) {
		/* Such keys (e.g. YubiKey PIV slot 9c) want the PIN again for
		 * every signature. */
		hs_log(ctx, HS_LOG_DEBUG, "the key needs the PIN for every signature");
		k->pin = pin;
		pin = NULL;
	}
	if ((r = load_chain(ctx, k, session, opts)) < 0)
		goto out;
	set_max_sessions(k, opts);
	r = 0;
out:
	if (pin != NULL)
		OPENSSL_clear_free(pin, strlen(pin));
	return r;
}

int hs_key_open_pkcs11(struct hs_ctx *ctx, struct hs_key **out,
                       const struct hs_pkcs11_key_opts *opts)
{
	struct p11_key *k = calloc(1, sizeof(*k));
	struct p11_uri uri;
	int r;

	*out = NULL;
	if ((r = hs_p11_uri_parse(ctx, opts->uri, &uri)) < 0 ||
	    (r = check_uri(ctx, &uri, opts)) < 0)
		goto out;
	if (k == NULL || pthread_mutex_init(&k->lock, NULL) != 0) {
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (pthread_cond_init(&k->idle, NULL) != 0) {
		pthread_mutex_destroy(&k->lock);
		r = hs_error_set(ctx, HS_ERR_NOMEM, "out of memory");
		goto out;
	}
	k->lock_ready = true;
	if ((r = hs_p11_module_load(ctx, opts->module ? opts->module : uri.module_path, &k->mod)) <
	            0 ||
	    (r = open_token_key(ctx, k, &uri, opts)) < 0)
		goto out;
	hs_log(ctx, HS_LOG_DEBUG, "PKCS#11 key on token '%s', up to %zu session(s)", k->label,
	       k->max_sessions);
	r = hs_key_new(ctx, out, &hs_key_provider_pkcs11, k);
	k = NULL; /* hs_key_new owns it, even on failure */
out:
	p11_key_free(k);
	hs_p11_uri_free(&uri);
	return r;
}
