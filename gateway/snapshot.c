/*
 * Snapshots: a loaded config and everything built from it (the routing
 * catalog, the pools' TLS contexts, the tenants' key table),
 * reference-counted as one. A snapshot derived when DNS changed a pool's
 * addresses has a catalog of its own and shares the rest with the one it
 * was derived from (its origin). The
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

/* Builds a snapshot from a loaded config (whose reference it takes). */
struct ig_snapshot *
snapshot_create(struct ig_config *conf, char **err)
{
	struct ig_snapshot *s;
	size_t i;

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		*err = strdup("out of memory");
		ig_config_unref(conf);
		return NULL;
	}
	atomic_init(&s->refcnt, 1);
	s->conf = conf;
	if ((s->catalog = ig_catalog_create(conf, resolver_lookup, NULL,
	    err)) == NULL) {
		snapshot_unref(s);
		return NULL;
	}
	if ((s->pool_tls = calloc(conf->npools + 1, sizeof(*s->pool_tls))) == NULL) {
		*err = strdup("out of memory");
		snapshot_unref(s);
		return NULL;
	}
	for (i = 0; i < conf->npools; i++)
		if (conf->pools[i].tls_enabled && (s->pool_tls[i] =
		    tls_client_ctx(&conf->pools[i], err)) == NULL) {
			snapshot_unref(s);
			return NULL;
		}
	if (conf->ntenants > 0 && (s->auth = ig_auth_create(conf->tenants,
	    conf->ntenants, err)) == NULL) {
		snapshot_unref(s);
		return NULL;
	}
	return s;
}

/*
 * A snapshot of BASE's config with the routing catalog built again, from
 * the DNS backends' addresses as they are now; it shares BASE's TLS
 * contexts and key table (through a reference to the snapshot that owns
 * them). NULL when out of memory.
 */
struct ig_snapshot *
snapshot_derive(struct ig_snapshot *base, char **err)
{
	struct ig_snapshot *s, *origin = base->origin ? base->origin : base;

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		*err = strdup("out of memory");
		return NULL;
	}
	atomic_init(&s->refcnt, 1);
	s->conf = ig_config_ref(base->conf);
	s->origin = snapshot_ref(origin);
	s->pool_tls = origin->pool_tls;
	s->auth = origin->auth;
	if ((s->catalog = ig_catalog_create(s->conf, resolver_lookup, NULL,
	    err)) == NULL) {
		snapshot_unref(s);
		return NULL;
	}
	return s;
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
	if (s->origin != NULL)	/* derived: the rest is the origin's */
		snapshot_unref(s->origin);
	else {
		for (size_t i = 0; s->pool_tls != NULL && i < s->conf->npools;
		    i++)
			SSL_CTX_free(s->pool_tls[i]);
		free(s->pool_tls);
		ig_auth_free(s->auth);
	}
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
