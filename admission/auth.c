/*
 * API-key authentication: a table from sha256(key) to tenant, built once
 * per config load. Tenant files hold only the hashes, so a leaked config
 * leaks no key; the digest is compared in constant time so a lookup tells
 * nothing about how close a guess came.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "infergate/admission.h"

struct auth_slot {
	uint8_t		 digest[32];
	const struct ig_tenant_conf *tenant;	/* NULL: empty slot */
};

struct ig_auth {
	struct auth_slot *slots;
	size_t		 mask;		/* nslots - 1, nslots a power of two */
	uint64_t	 serial;	/* see struct ig_auth_memo */
};

static _Atomic uint64_t auth_serial;

static EVP_MD	*auth_md;		/* fetched once, never freed */

static void
auth_fetch(void)
{
	auth_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/*
 * sha256 of KEY. The implementation is fetched once: EVP_sha256() makes
 * EVP_Digest() look the algorithm up in the provider tables on every
 * call, which costs more than hashing a key.
 */
static void
auth_sha256(const char *key, size_t keylen, uint8_t out[32])
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	unsigned int	 n = 32;

	pthread_once(&once, auth_fetch);
	if (EVP_Digest(key, keylen, out, &n, auth_md != NULL ? auth_md :
	    EVP_sha256(), NULL) != 1)
		abort();	/* sha256 cannot fail short of a broken libcrypto */
}

/* The digest is uniformly distributed: its first bytes are the hash. */
static size_t
auth_slot_of(const uint8_t digest[32], size_t mask)
{
	uint64_t	 h;

	memcpy(&h, digest, sizeof(h));
	return (size_t)h & mask;
}

struct ig_auth *
ig_auth_create(const struct ig_tenant_conf *tenants, size_t ntenants,
    char **err)
{
	struct ig_auth	*auth;
	size_t		 nkeys = 0, nslots = 16, i, k, s;

	*err = NULL;
	for (i = 0; i < ntenants; i++)
		nkeys += tenants[i].nkeys;
	while (nslots < nkeys * 2)
		nslots *= 2;
	if ((auth = calloc(1, sizeof(*auth))) == NULL ||
	    (auth->slots = calloc(nslots, sizeof(*auth->slots))) == NULL)
		goto nomem;
	auth->mask = nslots - 1;
	auth->serial = atomic_fetch_add(&auth_serial, 1) + 1;
	for (i = 0; i < ntenants; i++) {
		for (k = 0; k < tenants[i].nkeys; k++) {
			const uint8_t *d = tenants[i].keys[k];

			s = auth_slot_of(d, auth->mask);
			while (auth->slots[s].tenant != NULL) {
				if (memcmp(auth->slots[s].digest, d, 32) == 0) {
					if (asprintf(err, "tenant %s: key %zu is "
					    "also a key of tenant %s",
					    tenants[i].id, k + 1,
					    auth->slots[s].tenant->id) == -1)
						*err = NULL;
					goto fail;
				}
				s = (s + 1) & auth->mask;
			}
			memcpy(auth->slots[s].digest, d, 32);
			auth->slots[s].tenant = &tenants[i];
		}
	}
	return auth;
nomem:
	*err = strdup("out of memory");
fail:
	ig_auth_free(auth);
	return NULL;
}

void
ig_auth_free(struct ig_auth *auth)
{
	if (auth == NULL)
		return;
	free(auth->slots);
	free(auth);
}

const struct ig_tenant_conf *
ig_auth_lookup(const struct ig_auth *auth, const char *key, size_t keylen)
{
	const struct ig_tenant_conf *found = NULL;
	uint8_t		 d[32];
	size_t		 s;

	if (auth == NULL || key == NULL || keylen == 0)
		return NULL;
	auth_sha256(key, keylen, d);
	/* Linear probing ends at an empty slot: the table is at most half full. */
	for (s = auth_slot_of(d, auth->mask); auth->slots[s].tenant != NULL;
	    s = (s + 1) & auth->mask) {
		if (CRYPTO_memcmp(auth->slots[s].digest, d, 32) == 0) {
			found = auth->slots[s].tenant;
			break;
		}
	}
	explicit_bzero(d, sizeof(d));
	return found;
}

const struct ig_tenant_conf *
ig_auth_lookup_memo(const struct ig_auth *auth, struct ig_auth_memo *m,
    const char *key, size_t keylen)
{
	const struct ig_tenant_conf *t;
	char		*k;

	if (auth == NULL || key == NULL || keylen == 0)
		return NULL;
	if (m->serial == auth->serial && m->keylen == keylen &&
	    CRYPTO_memcmp(m->key, key, keylen) == 0)
		return m->tenant;
	if ((t = ig_auth_lookup(auth, key, keylen)) == NULL)
		return NULL;
	if (keylen > m->cap) {
		/* A new copy, not realloc: realloc could leave the old one. */
		if ((k = malloc(keylen)) == NULL) {
			ig_auth_memo_clear(m);
			return t;
		}
		ig_auth_memo_clear(m);
		m->key = k;
		m->cap = keylen;
	} else if (m->keylen > 0)
		explicit_bzero(m->key, m->keylen);
	memcpy(m->key, key, keylen);
	m->keylen = keylen;
	m->tenant = t;
	m->serial = auth->serial;
	return t;
}

void
ig_auth_memo_clear(struct ig_auth_memo *m)
{
	if (m->key != NULL) {
		explicit_bzero(m->key, m->cap);
		free(m->key);
	}
	memset(m, 0, sizeof(*m));
}

static int
auth_blank(char c)
{
	return c == ' ' || c == '\t';
}

int
ig_auth_key_from_header(const char *name, const char *value, size_t len,
    const char **key, size_t *keylen)
{
	const char	*p = value, *e = value + len;

	while (p < e && auth_blank(*p))
		p++;
	while (e > p && auth_blank(e[-1]))
		e--;
	if (strcasecmp(name, "authorization") == 0) {
		if (e - p < 7 || strncasecmp(p, "bearer", 6) != 0 ||
		    !auth_blank(p[6]))
			return 0;
		p += 7;
		while (p < e && auth_blank(*p))
			p++;
	} else if (strcasecmp(name, "api-key") != 0 &&
	    strcasecmp(name, "x-api-key") != 0)
		return 0;
	if (p == e)
		return 0;
	*key = p;
	*keylen = (size_t)(e - p);
	return 1;
}

void
ig_auth_hash_hex(const char *key, size_t keylen, char out[72])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t		 d[32];
	size_t		 i;

	auth_sha256(key, keylen, d);
	memcpy(out, "sha256:", 7);
	for (i = 0; i < 32; i++) {
		out[7 + 2 * i] = hex[d[i] >> 4];
		out[8 + 2 * i] = hex[d[i] & 0xf];
	}
	out[71] = '\0';
	explicit_bzero(d, sizeof(d));
}

int
ig_auth_hash_line(FILE *in, FILE *out, char **err)
{
	char		*line = NULL, hash[72];
	size_t		 cap = 0;
	ssize_t		 n;
	int		 rc = -1;

	*err = NULL;
	if ((n = getline(&line, &cap, in)) == -1) {
		*err = strdup("no key on standard input");
		goto done;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	if (n == 0) {
		*err = strdup("empty key");
		goto done;
	}
	ig_auth_hash_hex(line, (size_t)n, hash);
	if (fprintf(out, "%s\n", hash) < 0 || fflush(out) == EOF) {
		*err = strdup("cannot write the hash");
		goto done;
	}
	rc = 0;
done:
	if (line != NULL)
		explicit_bzero(line, cap);
	free(line);
	return rc;
}
