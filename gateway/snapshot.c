/*
 * Snapshots: a loaded config and everything built from it (the routing
 * catalog, the pools' and the listeners' TLS contexts, the tenants' key
 * table),
 * reference-counted as one. A snapshot derived when DNS changed a pool's
 * addresses has a catalog of its own and shares the rest (struct
 * snap_shared) with the one it was derived from. The
 * current snapshot is published by the main thread; each thread caches a
 * reference and takes the lock only when the generation moved, so the
 * request path does one atomic load and one atomic increment.
 */
#include <pthread.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "infergate/admission.h"
#include "infergate/log.h"
#include "infergate/capacity.h"
#include "infergate/routing.h"
#include "gateway.h"

static pthread_mutex_t	 snap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ig_snapshot *snap_cur;
static _Atomic uint64_t	 snap_gen;
static __thread struct ig_snapshot *snap_cached;

/*
 * What a derived snapshot shares with the one it was derived from: the
 * TLS contexts and the tenants' key table, freed with the last
 * snapshot that uses them (not with the first snapshot, whose catalog
 * would otherwise keep every address it had).
 */
struct snap_shared {
	atomic_int	 refcnt;
	struct ssl_ctx_st **pool_tls;	/* per pool index; NULL: plain */
	uint64_t	*pool_tls_fp;
	size_t		 npools;
	struct ssl_ctx_st **listen_tls;	/* per listen index; NULL: plain */
	uint64_t	*listen_fp;
	size_t		 nlisten;
	struct ssl_ctx_st **run_tls;	/* per running listener, see gateway.h */
	size_t		 nrun;
	struct ig_auth	*auth;
};

static void
snap_shared_unref(struct snap_shared *sh)
{
	size_t i;

	if (sh == NULL ||
	    atomic_fetch_sub_explicit(&sh->refcnt, 1, memory_order_acq_rel) != 1)
		return;
	for (i = 0; sh->pool_tls != NULL && i < sh->npools; i++)
		SSL_CTX_free(sh->pool_tls[i]);
	free(sh->pool_tls);
	free(sh->pool_tls_fp);
	for (i = 0; sh->listen_tls != NULL && i < sh->nlisten; i++)
		SSL_CTX_free(sh->listen_tls[i]);
	free(sh->listen_tls);
	free(sh->listen_fp);
	for (i = 0; sh->run_tls != NULL && i < sh->nrun; i++)
		SSL_CTX_free(sh->run_tls[i]);
	free(sh->run_tls);
	ig_auth_free(sh->auth);
	free(sh);
}

/*
 * A snapshot of CONF (whose reference it takes) with SH (taken too), its
 * catalog derived from BASE's (NULL: built).
 */
static struct ig_snapshot *
snap_new(struct ig_config *conf, struct snap_shared *sh,
    const struct ig_snapshot *base, char **err)
{
	struct ig_snapshot *s, *pub;

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		*err = strdup("out of memory");
		ig_config_unref(conf);
		snap_shared_unref(sh);
		return NULL;
	}
	atomic_init(&s->refcnt, 1);
	s->conf = conf;
	s->shared = sh;
	s->pool_tls = sh->pool_tls;
	s->pool_tls_fp = sh->pool_tls_fp;
	s->listen_tls = sh->listen_tls;
	s->listen_fp = sh->listen_fp;
	s->run_tls = sh->run_tls;
	s->nrun = sh->nrun;
	s->auth = sh->auth;
	/* the published one (none at start), which may not be BASE (a
	 * reload warming its DNS names derives from its own snapshot) */
	pub = snapshot_peek();
	if ((s->catalog = ig_catalog_derive(conf, base ? base->catalog : NULL,
	    pub != NULL ? pub->catalog : NULL, resolver_lookup, NULL, err)) ==
	    NULL) {
		snapshot_unref(s);
		return NULL;
	}
	return s;
}

/* PUB's listen entry that LC is again (address and files), or -1. */
static ssize_t
snap_listen_prev(const struct ig_snapshot *pub, const struct ig_listen_conf *lc)
{
	const struct ig_listen_conf *p;
	size_t k;

	for (k = 0; pub != NULL && k < pub->conf->nlisten; k++) {
		p = &pub->conf->listen[k];
		if (p->tls_certificate != NULL && pub->listen_tls[k] != NULL &&
		    strcmp(p->address, lc->address) == 0 &&
		    strcmp(p->tls_certificate, lc->tls_certificate) == 0 &&
		    strcmp(p->tls_key, lc->tls_key) == 0)
			return (ssize_t)k;
	}
	return -1;
}

/* Builds a snapshot from a loaded config (whose reference it takes). */
struct ig_snapshot *
snapshot_create(struct ig_config *conf, char **err)
{
	const struct ig_snapshot *pub = snapshot_peek();	/* NULL at start */
	struct snap_shared *sh;
	size_t i;

	if ((sh = calloc(1, sizeof(*sh))) != NULL)
		atomic_init(&sh->refcnt, 1);
	if (sh == NULL || (sh->pool_tls = calloc(conf->npools + 1,
	    sizeof(*sh->pool_tls))) == NULL || (sh->pool_tls_fp =
	    calloc(conf->npools + 1, sizeof(*sh->pool_tls_fp))) == NULL ||
	    (sh->listen_tls = calloc(conf->nlisten + 1,
	    sizeof(*sh->listen_tls))) == NULL || (sh->listen_fp =
	    calloc(conf->nlisten + 1, sizeof(*sh->listen_fp))) == NULL) {
		*err = strdup("out of memory");
		goto fail;
	}
	sh->npools = conf->npools;
	sh->nlisten = conf->nlisten;
	for (i = 0; i < conf->nlisten; i++) {
		const struct ig_listen_conf *lc = &conf->listen[i];
		ssize_t k;

		if (lc->tls_certificate == NULL)
			continue;
		k = snap_listen_prev(pub, lc);
		if ((sh->listen_tls[i] = tls_server_ctx(lc, k >= 0 ?
		    pub->listen_tls[k] : NULL, k >= 0 ? pub->listen_fp[k] : 0,
		    &sh->listen_fp[i], err)) == NULL)
			goto fail;
	}
	for (i = 0; i < conf->npools; i++)
		if (conf->pools[i].tls_enabled && (sh->pool_tls[i] =
		    tls_client_ctx(&conf->pools[i], &sh->pool_tls_fp[i],
		    err)) == NULL)
			goto fail;
	if (workers_listen_tls(conf, sh->listen_tls, pub,
	    &sh->run_tls, &sh->nrun) == -1) {
		*err = strdup("out of memory");
		goto fail;
	}
	if (conf->ntenants > 0 && (sh->auth = ig_auth_create(conf->tenants,
	    conf->ntenants, err)) == NULL)
		goto fail;
	return snap_new(conf, sh, NULL, err);
fail:
	snap_shared_unref(sh);
	ig_config_unref(conf);
	return NULL;
}

/*
 * A snapshot of BASE's config with the routing catalog built again, from
 * the DNS backends' addresses as they are now; it shares BASE's TLS
 * contexts and key table. NULL when out of memory.
 */
struct ig_snapshot *
snapshot_derive(struct ig_snapshot *base, char **err)
{
	atomic_fetch_add_explicit(&base->shared->refcnt, 1,
	    memory_order_relaxed);
	return snap_new(ig_config_ref(base->conf), base->shared, base, err);
}

struct ig_snapshot *
snapshot_ref(struct ig_snapshot *s)
{
	atomic_fetch_add_explicit(&s->refcnt, 1, memory_order_relaxed);
	return s;
}

void
snapshot_unref(struct ig_snapshot *s)
{
	if (s == NULL ||
	    atomic_fetch_sub_explicit(&s->refcnt, 1, memory_order_acq_rel) != 1)
		return;
	ig_catalog_free(s->catalog);
	snap_shared_unref(s->shared);
	ig_config_unref(s->conf);
	free(s);
}

/* Makes `s` current; takes the caller's reference. */
void
snapshot_publish(struct ig_snapshot *s)
{
	struct ig_snapshot *old;

	size_t i;

	/* Pool limits are shared by name: the new ones hold from now on,
	 * for the requests already waiting too (woken to look again). */
	for (i = 0; i < ig_catalog_npools(s->catalog); i++) {
		struct ig_pool *p = ig_catalog_pool_at(s->catalog, i);

		ig_cap_set_max(p->cap, p->conf->max_inflight);
	}
	pthread_mutex_lock(&snap_lock);
	old = snap_cur;
	s->generation = atomic_load(&snap_gen) + 1;
	snap_cur = s;
	atomic_store(&snap_gen, s->generation);
	pthread_mutex_unlock(&snap_lock);
	if (old != NULL)
		snapshot_unref(old);
	pool_wake_all();
}

/*
 * The calling thread's current snapshot, without a reference (the
 * thread's cache holds one): valid until the thread next calls
 * snapshot_current() or snapshot_peek().
 */
struct ig_snapshot *
snapshot_peek(void)
{
	struct ig_snapshot *s = snap_cached;

	if (s == NULL || s->generation != atomic_load_explicit(&snap_gen,
	    memory_order_acquire)) {
		pthread_mutex_lock(&snap_lock);
		s = snap_cur ? snapshot_ref(snap_cur) : NULL;
		pthread_mutex_unlock(&snap_lock);
		if (snap_cached != NULL)
			snapshot_unref(snap_cached);
		snap_cached = s;
	}
	return s;
}

/* The current snapshot, with a reference for the caller. */
struct ig_snapshot *
snapshot_current(void)
{
	return snapshot_ref(snapshot_peek());
}

/* Drops this thread's cached reference (at thread exit). */
void
snapshot_thread_done(void)
{
	if (snap_cached != NULL)
		snapshot_unref(snap_cached);
	snap_cached = NULL;
}

/* Drops the published snapshot (at exit). */
void
snapshot_clear(void)
{
	pthread_mutex_lock(&snap_lock);
	if (snap_cur != NULL)
		snapshot_unref(snap_cur);
	snap_cur = NULL;
	pthread_mutex_unlock(&snap_lock);
}
