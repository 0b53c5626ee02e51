/*
 * TLS contexts: one server context per TLS listener (certificate and key
 * from listen[].tls), one client context per pool with `tls` (CA from
 * pools.*.tls.ca, or the system's; peer verification and the host name
 * checked against tls.server_name). Contexts are built with each snapshot
 * (start, reload) on the main thread and shared read-only by the workers
 * (SSL_new is thread-safe on a context, and holds a reference to it).
 * Errors are taken off OpenSSL's queue whole: the main thread lives on
 * after a refused reload, and the next one must not read this one's.
 * An encrypted key is refused, never prompted for (a reload would block).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "infergate/log.h"
#include "gateway.h"

static int
tls_error(char **err, const char *what, const char *file)
{
	char buf[256];

	ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));	/* the cause */
	ERR_clear_error();
	if (asprintf(err, "%s %s: %s", what, file ? file : "", buf) == -1)
		*err = NULL;
	return -1;
}

/* A passphrase is never asked for: an encrypted key fails to load. */
static int
tls_no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	return 0;
}

#define TLS_FILE_MAX	(16 * 1024 * 1024)	/* bytes of a TLS file */

/* F's bytes (at most MAX) in a malloc'ed buffer; NULL with errno. */
static char *
tls_read_all(FILE *f, size_t max, size_t *lenp)
{
	size_t len = 0, size = 0, n;
	char *buf = NULL, *nb;

	errno = 0;
	for (;;) {
		if (len == size) {
			size = size ? size * 2 : 65536;
			if (size > max + 1)
				size = max + 1;
			if (len == size) {
				free(buf);
				errno = EFBIG;
				return NULL;
			}
			if ((nb = realloc(buf, size)) == NULL) {
				free(buf);
				errno = ENOMEM;
				return NULL;
			}
			buf = nb;
		}
		n = fread(buf + len, 1, size - len, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		int e = errno ? errno : EIO;

		free(buf);
		errno = e;
		return NULL;
	}
	*lenp = len;
	return buf;
}

#define FNV_BASIS	14695981039346656037ULL

static uint64_t
tls_fnv(uint64_t h, const char *buf, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ (unsigned char)buf[i]) * 1099511628211ULL;
	return h;
}

/* FNV-1a of a listener's certificate and key files' bytes; 0: unread. */
static uint64_t
tls_pair_fp(const struct ig_listen_conf *lc)
{
	const char *path[2] = { lc->tls_certificate, lc->tls_key };
	uint64_t h = FNV_BASIS;
	size_t len, i;
	char *buf;
	FILE *f;

	for (i = 0; i < 2; i++) {
		if ((f = fopen(path[i], "rb")) == NULL)
			return 0;
		buf = tls_read_all(f, TLS_FILE_MAX, &len);
		fclose(f);
		if (buf == NULL)
			return 0;
		h = tls_fnv(h, buf, len);
		h = tls_fnv(h, "\n--\n", 4);	/* the files' boundary */
		OPENSSL_cleanse(buf, len);	/* a key's bytes */
		free(buf);
	}
	return h == 0 ? 1 : h;
}

/*
 * A server context for a TLS listener, and into *FP the fingerprint of
 * the files it was built from (0 when they changed while it was built:
 * never reused). PREV, built from files of fingerprint PREV_FP, is
 * returned (a new reference) when the files are still those, so that a
 * reload that keeps a certificate keeps its session cache and ticket
 * keys: clients resume across it. NULL with *err on failure.
 */
SSL_CTX *
tls_server_ctx(const struct ig_listen_conf *lc, SSL_CTX *prev,
    uint64_t prev_fp, uint64_t *fp, char **err)
{
	uint64_t fp0 = tls_pair_fp(lc);
	SSL_CTX *ctx;

	if (prev != NULL && fp0 != 0 && fp0 == prev_fp) {
		SSL_CTX_up_ref(prev);
		*fp = prev_fp;
		return prev;
	}
	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		tls_error(err, "TLS context", NULL);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_default_passwd_cb(ctx, tls_no_passphrase);
	if (SSL_CTX_use_certificate_chain_file(ctx, lc->tls_certificate) != 1) {
		tls_error(err, "TLS certificate", lc->tls_certificate);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, lc->tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		tls_error(err, "TLS key", lc->tls_key);
		goto fail;
	}
	*fp = fp0 != 0 && tls_pair_fp(lc) == fp0 ? fp0 : 0;
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/*
 * Loads the CA file CA into CTX's store from one read of its bytes, and
 * into *FP their FNV-1a, never 0 or 1 (1: the system's store): what is
 * trusted and what the pool key says are the same bytes even when the
 * file is replaced during a reload. Certificates and CRLs, as
 * SSL_CTX_load_verify_locations() takes them; -1 with *err on failure.
 */
static int
tls_load_ca(SSL_CTX *ctx, const char *ca, uint64_t *fp, char **err)
{
	STACK_OF(X509_INFO) *infos = NULL;
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	char *buf = NULL;
	size_t len = 0, i;
	uint64_t h;
	int ncerts = 0, rc = -1;
	BIO *bio = NULL;
	FILE *f;

	if ((f = fopen(ca, "rb")) == NULL) {
		if (asprintf(err, "TLS CA %s: %s", ca, strerror(errno)) == -1)
			*err = NULL;
		return -1;
	}
	if ((buf = tls_read_all(f, TLS_FILE_MAX, &len)) == NULL) {
		if (asprintf(err, "TLS CA %s: %s", ca, errno == EFBIG ?
		    "larger than 16 MiB" : strerror(errno)) == -1)
			*err = NULL;
		goto out;
	}
	h = tls_fnv(FNV_BASIS, buf, len);
	*fp = h < 2 ? h + 2 : h;
	if ((bio = BIO_new_mem_buf(buf, (int)len)) == NULL ||
	    (infos = PEM_X509_INFO_read_bio(bio, NULL, NULL, NULL)) == NULL) {
		tls_error(err, "TLS CA", ca);
		goto out;
	}
	for (i = 0; i < (size_t)sk_X509_INFO_num(infos); i++) {
		X509_INFO *xi = sk_X509_INFO_value(infos, (int)i);

		if ((xi->x509 != NULL && X509_STORE_add_cert(store, xi->x509) != 1) ||
		    (xi->crl != NULL && X509_STORE_add_crl(store, xi->crl) != 1)) {
			tls_error(err, "TLS CA", ca);
			goto out;
		}
		ncerts += xi->x509 != NULL;
	}
	if (ncerts == 0) {
		ERR_clear_error();
		if (asprintf(err, "TLS CA %s: no certificate in it", ca) == -1)
			*err = NULL;
		goto out;
	}
	rc = 0;
out:
	sk_X509_INFO_pop_free(infos, X509_INFO_free);
	BIO_free(bio);
	free(buf);
	fclose(f);
	return rc;
}

/*
 * A client context for a pool's backends, and into *FP a fingerprint of
 * what it trusts (tls_load_ca; the system's store is 1): pooled
 * connections are kept by it, so that a reload that changes the CA opens
 * new ones. NULL with *err on failure.
 */
SSL_CTX *
tls_client_ctx(const struct ig_pool_conf *pc, uint64_t *fp, char **err)
{
	SSL_CTX *ctx;

	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		tls_error(err, "TLS context", NULL);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	*fp = 1;
	if (pc->tls_ca != NULL) {
		if (tls_load_ca(ctx, pc->tls_ca, fp, err) == -1) {
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		tls_error(err, "TLS CA", NULL);
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
