/*
 * TLS contexts: one server context per TLS listener (certificate and key
 * from listen[].tls), one client context per pool with `tls` (CA from
 * pools.*.tls.ca, or the system's; peer verification and the host name
 * checked against tls.server_name). Contexts are built once at start and
 * shared read-only by the workers (SSL_new is thread-safe on a context).
 */
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "infergate/log.h"
#include "gateway.h"

static int
tls_error(char **err, const char *what, const char *file)
{
	char buf[256];

	ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
	if (asprintf(err, "%s %s: %s", what, file ? file : "", buf) == -1)
		*err = NULL;
	return -1;
}

/* A server context for a TLS listener; NULL with *err on failure. */
SSL_CTX *
tls_server_ctx(const struct ig_listen_conf *lc, char **err)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (ctx == NULL) {
		tls_error(err, "TLS context", NULL);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_use_certificate_chain_file(ctx, lc->tls_certificate) != 1) {
		tls_error(err, "TLS certificate", lc->tls_certificate);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, lc->tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		tls_error(err, "TLS key", lc->tls_key);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/*
 * FNV-1a of the CA file's bytes into *FP, never 0 (0: the file could not
 * be read); the system's store is 1.
 */
static uint64_t
tls_ca_fp(const char *ca)
{
	unsigned char buf[8192];
	uint64_t h = 14695981039346656037ULL;
	size_t n, i;
	FILE *f;

	if (ca == NULL)
		return 1;
	if ((f = fopen(ca, "rb")) == NULL)
		return 0;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		for (i = 0; i < n; i++)
			h = (h ^ buf[i]) * 1099511628211ULL;
	if (ferror(f))
		h = 0;
	else if (h == 0)
		h = 2;
	fclose(f);
	return h;
}

/*
 * A client context for a pool's backends, and into *FP a fingerprint of
 * what it trusts (tls_ca_fp): pooled connections are kept by it, so that
 * a reload that changes the CA opens new ones. NULL with *err on failure.
 */
SSL_CTX *
tls_client_ctx(const struct ig_pool_conf *pc, uint64_t *fp, char **err)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL) {
		tls_error(err, "TLS context", NULL);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if ((pc->tls_ca != NULL &&
	    SSL_CTX_load_verify_locations(ctx, pc->tls_ca, NULL) != 1) ||
	    (pc->tls_ca == NULL && SSL_CTX_set_default_verify_paths(ctx) != 1)) {
		tls_error(err, "TLS CA", pc->tls_ca);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if ((*fp = tls_ca_fp(pc->tls_ca)) == 0) {
		if (asprintf(err, "TLS CA %s: cannot be read", pc->tls_ca) == -1)
			*err = NULL;
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* An SSL for one backend connection: SNI and host name verification. */
SSL *
tls_client_ssl(SSL_CTX *ctx, const struct ig_pool_conf *pc,
    const struct ig_backend *be)
{
	const char *name = pc->tls_server_name;
	char host[272];
	SSL *ssl;

	if (name == NULL) {	/* the backend's host, without the port */
		const char *colon = strrchr(be->host, ':');
		size_t n = colon ? (size_t)(colon - be->host) : strlen(be->host);

		if (n >= sizeof(host))
			n = sizeof(host) - 1;
		memcpy(host, be->host, n);
		host[n] = '\0';
		name = host;
	}
	if ((ssl = SSL_new(ctx)) == NULL)
		return NULL;
	SSL_set_tlsext_host_name(ssl, name);
	X509_VERIFY_PARAM_set1_host(SSL_get0_param(ssl), name, 0);
	return ssl;
}
