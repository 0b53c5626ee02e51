/*
 * infergate: main, signals, config (re)load.
 *
 * The main thread owns the signals, the admin listener and config reload;
 * the workers own the request path (worker.c).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "infergate/admission.h"
#include "infergate/config.h"
#include "infergate/capacity.h"
#include "infergate/log.h"
#include "gateway.h"

#ifndef IG_DEFAULT_CONFIG
#define IG_DEFAULT_CONFIG "/etc/infergate/infergate.yaml"
#endif

static const char	*config_path = IG_DEFAULT_CONFIG;
static struct event_base *main_base;

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: infergate [-t] [-c file]\n"
	    "       infergate -k          (read an API key on stdin, print its hash)\n"
	    "       infergate -v | -h\n"
	    "  -c file  configuration file (default %s)\n"
	    "  -t       check the configuration and exit: 0 valid, 1 not\n"
	    "  -k       print the sha256 line of the API key read on stdin\n"
	    "  -v       print the version\n"
	    "  -h       this help\n"
	    "signals: SIGTERM/SIGINT stop (in-flight requests get shutdown_grace),\n"
	    "         SIGHUP reloads the configuration, SIGUSR1 reopens the logs\n",
	    IG_DEFAULT_CONFIG);
}

/* -k: reads a key on stdin, prints "sha256:<hex>". Never echoes the key. */
static int
hash_key(void)
{
	char *err = NULL;

	if (ig_auth_hash_line(stdin, stdout, &err) == -1) {
		fprintf(stderr, "infergate: %s\n", err ? err : "cannot read the key");
		free(err);
		return 1;
	}
	return 0;
}

static struct event *drain_timer;

/* While the workers drain, the admin listener keeps answering. */
static void
drain_check_cb(evutil_socket_t fd, short what, void *arg)
{
	if (workers_running() == 0)
		event_base_loopbreak(main_base);
}

/*
 * The graceful stop: readiness 503, every worker closes its listeners and
 * finishes (see workers_drain), the admin listener answers meanwhile;
 * the main loop ends when the last worker is done.
 */
void
gateway_drain(const char *why)
{
	struct ig_snapshot *snap;
	struct timeval tv = { 0, 20 * 1000 };

	if (drain_timer != NULL)
		return;
	log_info("%s: stopping", why);
	admin_set_ready(false);
	snap = snapshot_current();
	workers_drain(snap->conf->shutdown_grace_ms);
	snapshot_unref(snap);
	drain_timer = event_new(main_base, -1, EV_PERSIST, drain_check_cb, NULL);
	if (drain_timer == NULL || event_add(drain_timer, &tv) == -1)
		event_base_loopbreak(main_base);	/* joined at once */
}

static void
signal_stop_cb(evutil_socket_t sig, short what, void *arg)
{
	char why[32];

	snprintf(why, sizeof(why), "signal %d", (int)sig);
	gateway_drain(why);
}

static bool
conf_has_dns(const struct ig_config *conf)
{
	size_t i, j;

	for (i = 0; i < conf->npools; i++)
		for (j = 0; j < conf->pools[i].nbackends; j++)
			if (conf->pools[i].backends[j].dns != NULL)
				return true;
	return false;
}

/* A reload whose new DNS names have not answered yet (resolver.c). */
static struct ig_snapshot *warm_snap;
static uint64_t	 warm_t0;

static void
reload_published(struct ig_snapshot *snap, uint64_t t0)
{
	if (snap->conf->log.level != (enum ig_log_level)ig_log_level_cur)
		ig_log_level_cur = snap->conf->log.level;
	snapshot_publish(snap);
	resolver_published();
	admin_reloads_ok++;
	log_info("configuration reloaded from %s in %.1f ms", config_path,
	    (now_ns() - t0) / 1e6);
}

/*
 * SIGHUP: load and validate the config off to the side; publish it only
 * if it is valid (a refused one touches nothing, its resolver section
 * included), and once the DNS names it adds have answered (see
 * resolver.c; a newer SIGHUP meanwhile replaces it). Requests in flight
 * keep the snapshot they started with.
 */
static void
signal_reload_cb(evutil_socket_t sig, short what, void *arg)
{
	struct ig_config *conf;
	struct ig_snapshot *snap, *fresh;
	char *err = NULL;
	uint64_t t0 = now_ns();
	size_t pending;

	if ((conf = ig_config_load(config_path, &err)) == NULL ||
	    (snap = snapshot_create(conf, &err)) == NULL) {
		log_error("reload refused, keeping the running config: %s",
		    err ? err : "out of memory");
		free(err);
		admin_reloads_failed++;
		return;
	}
	workers_listen_check(snap->conf);
	workers_store_check(snap->conf);
	if (warm_snap != NULL)
		snapshot_unref(warm_snap);	/* replaced by this one */
	warm_snap = NULL;
	if ((pending = resolver_prepare(snap->conf)) > 0) {
		log_info("reload: waiting for %zu DNS name%s to answer", pending,
		    pending == 1 ? "" : "s");
		warm_snap = snap;
		warm_t0 = t0;
		return;
	}
	/* Built before its names were prepared: again, with their sets
	 * (an answer known at once, a name the old config had). */
	if (conf_has_dns(snap->conf) &&
	    (fresh = snapshot_derive(snap, &err)) != NULL) {
		snapshot_unref(snap);
		snap = fresh;
	}
	free(err);
	reload_published(snap, t0);
}

/* The warming reload's names have answered: its catalog with them. */
static void
dns_warm(void)
{
	struct ig_snapshot *snap;
	char *err = NULL;

	if (warm_snap == NULL)	/* the start's: main() publishes it */
		return;
	if ((snap = snapshot_derive(warm_snap, &err)) == NULL) {
		log_error("reload refused, keeping the running config: %s",
		    err ? err : "out of memory");
		free(err);
		admin_reloads_failed++;
		resolver_abandon();
	} else
		reload_published(snap, warm_t0);
	snapshot_unref(warm_snap);
	warm_snap = NULL;
}

/* A DNS name of the published config changed: its catalog again. */
static void
dns_changed(void)
{
	struct ig_snapshot *cur = snapshot_current(), *snap;
	char *err = NULL;

	if ((snap = snapshot_derive(cur, &err)) == NULL) {
		log_error("dns: cannot rebuild the routing catalog: %s",
		    err ? err : "out of memory");
		free(err);
	} else
		snapshot_publish(snap);
	snapshot_unref(cur);
}

static void
signal_reopen_cb(evutil_socket_t sig, short what, void *arg)
{
	ig_log_reopen();
}

int
main(int argc, char *argv[])
{
	struct ig_config *conf;
	struct ig_snapshot *snap = NULL;
	struct event *ev[4] = { NULL };
	char *err = NULL;
	int ch, test_only = 0, i, rc = 1;
	uint64_t grace = 0;

	while ((ch = getopt(argc, argv, "c:tkvh")) != -1) {
		switch (ch) {
		case 'c':
			config_path = optarg;
			break;
		case 't':
			test_only = 1;
			break;
		case 'k':
			return hash_key();
		case 'v':
			printf("infergate %s\n", IG_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if ((conf = ig_config_load(config_path, &err)) == NULL) {
		fprintf(stderr, "infergate: %s\n", err ? err : "out of memory");
		if (test_only)
			fprintf(stderr, "infergate: configuration file %s test "
			    "failed\n", config_path);
		free(err);
		return 1;
	}
	if (test_only) {
		/* what a start or a reload builds from it too: the TLS
		 * certificates, keys and CAs read, static backends' hosts
		 * resolved, the tenants' key table */
		if ((snap = snapshot_create(conf, &err)) == NULL) {
			fprintf(stderr, "infergate: %s\n", err ? err :
			    "out of memory");
			fprintf(stderr, "infergate: configuration file %s test "
			    "failed\n", config_path);
			free(err);
			return 1;
		}
		snapshot_unref(snap);
		printf("infergate: configuration file %s test is successful\n",
		    config_path);
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);	/* until its handler is set (start-up) */
	evthread_use_pthreads();
	if (ig_log_open(&conf->log, &err) == -1) {
		fprintf(stderr, "infergate: %s\n", err ? err : "cannot open logs");
		free(err);
		ig_config_unref(conf);
		return 1;
	}
	if ((main_base = event_base_new()) == NULL ||
	    resolver_start(main_base, dns_changed, dns_warm) == -1) {
		log_error("cannot create the event base");
		ig_config_unref(conf);
		goto done;
	}
	/* The DNS backends' first answers, before anything is served. */
	if (resolver_prepare(conf) > 0)
		resolver_wait();
	if ((snap = snapshot_create(conf, &err)) == NULL) {
		log_error("%s", err ? err : "out of memory");
		free(err);
		goto done;
	}
	snapshot_publish(snapshot_ref(snap));
	resolver_published();
	grace = snap->conf->shutdown_grace_ms;
	if (admin_start(main_base, snap->conf->admin_address, &err) == -1 ||
	    workers_start(snap, &err) == -1 || health_start(main_base) == -1) {
		log_error("%s", err ? err : "out of memory");
		free(err);
		goto done;
	}
	ev[0] = evsignal_new(main_base, SIGTERM, signal_stop_cb, NULL);
	ev[1] = evsignal_new(main_base, SIGINT, signal_stop_cb, NULL);
	ev[2] = evsignal_new(main_base, SIGHUP, signal_reload_cb, NULL);
	ev[3] = evsignal_new(main_base, SIGUSR1, signal_reopen_cb, NULL);
	for (i = 0; i < 4; i++)
		if (ev[i] != NULL)
			evsignal_add(ev[i], NULL);
	log_info("infergate %s started: %zu workers, %zu listeners, admin %s",
	    IG_VERSION, (size_t)snap->conf->workers, snap->conf->nlisten,
	    snap->conf->admin_address);
	snapshot_unref(snap);
	snap = NULL;
	admin_set_ready(true);
	event_base_dispatch(main_base);
	admin_set_ready(false);
	rc = 0;
done:
	workers_drain(grace);	/* no-op when gateway_drain ran */
	workers_join();
	workers_free();
	if (drain_timer != NULL)
		event_free(drain_timer);
	admin_stop();
	health_stop();
	for (i = 0; i < 4; i++)
		if (ev[i] != NULL)
			event_free(ev[i]);
	if (warm_snap != NULL)
		snapshot_unref(warm_snap);
	warm_snap = NULL;
	/* What the checks freed above left to the loop (bufferevents'
	 * deferred callbacks and finalizers) runs before the base goes. */
	if (main_base != NULL)
		event_base_loop(main_base, EVLOOP_NONBLOCK);
	resolver_stop();
	if (snap != NULL)
		snapshot_unref(snap);
	snapshot_thread_done();
	snapshot_clear();
	ig_cap_free_all();
	if (main_base != NULL)
		event_base_free(main_base);
	log_info("stopped");
	ig_log_close();
	libevent_global_shutdown();
	return rc;
}
