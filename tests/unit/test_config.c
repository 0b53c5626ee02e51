/*
 * Unit tests of the config loader: a table of bad configs, each with the
 * exact "file:line:col: key: message" it must give, good configs with their
 * parsed values and defaults, reference counting and durations.
 * Run from tests/unit (fixtures are relative: configs/, ../../conf/).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "infergate/admission_conf.h"
#include "infergate/config.h"
#include "../../gateway/gateway.h"	/* client_addr_in */

#define HASH_A "sha256:82dae6d443609cfcb4e698af21391e5132c679ce83b37086ada791a0fb2a43ee"
#define HASH_B "sha256:caeadb66c56dfdf14ae8064a3e08caf2968862419c0529b06a1f91f1a27a1a0c"

/* Line 1 of most rows: a valid listener. */
#define L "listen: [{address: \"127.0.0.1:8080\"}]\n"
/* Lines 2-4: a valid pool. */
#define P "pools:\n  small:\n    backends: [{address: \"127.0.0.1:8001\"}]\n"
/* Lines 2-4: a valid tenant, open to more keys at 4 spaces. */
#define T "tenants:\n  - id: a\n    keys: [\"" HASH_A "\"]\n"

/*
 * text: the main file; tenant: written to tenants.d/t.yaml when not NULL.
 * In want, "@T" is the tenant file's path, "@D" the directory and "@" the
 * main file's path.
 */
struct bad {
	const char	*text;
	const char	*tenant;
	const char	*want;
};

static const struct bad bad_configs[] = {
	/* unknown keys, at each level */
	{ L "bogus: 1\n", NULL, "@:2:1: unknown key \"bogus\"" },
	{ L "limits:\n  max_hedaers: 5\n", NULL,
	  "@:3:3: limits: unknown key \"max_hedaers\"" },
	{ L P "    timeouts: {connect: 1s, conect: 2s}\n", NULL,
	  "@:5:29: pools.small.timeouts: unknown key \"conect\"" },
	{ "listen:\n  - address: \"127.0.0.1:8080\"\n    port: 80\n", NULL,
	  "@:3:5: listen[0]: unknown key \"port\"" },
	{ L T "    budget: 5\n", NULL,
	  "@:5:5: tenants[0]: unknown key \"budget\"" },
	{ L "store:\n  redis:\n    adress: x\n", NULL,
	  "@:4:5: store.redis: unknown key \"adress\"" },
	{ L P "    name: small\n", NULL,
	  "@:5:5: pools.small: unknown key \"name\"" },
	{ L "workers: 2\nworkers: 3\n", NULL,
	  "@:3:1: duplicate key \"workers\"" },
	/* wrong types */
	{ L "limits: 5\n", NULL, "@:2:9: limits: expected a mapping" },
	{ L "limits:\n  max_headers: lots\n", NULL,
	  "@:3:16: limits.max_headers: expected a non-negative integer, "
	  "got \"lots\"" },
	{ L "admin:\n  address: [a, b]\n", NULL,
	  "@:3:12: admin.address: expected a string" },
	{ "listen: 127.0.0.1:8080\n", NULL, "@:1:9: listen: expected a list" },
	{ L T "    shadow: yes\n", NULL,
	  "@:5:13: tenants[0].shadow: expected true or false, got \"yes\"" },
	{ L "pools: [small]\n", NULL, "@:2:8: pools: expected a mapping of "
	  "pool names to pools" },
	/* out of range */
	{ L "limits:\n  max_header_bytes: 100\n", NULL,
	  "@:3:21: limits.max_header_bytes: must be between 1024 and 1048576" },
	{ L "workers: 0\n", NULL,
	  "@:2:10: workers: expected \"auto\" or a number between 1 and 256" },
	{ L P "    retries: {budget: 1.5}\n", NULL,
	  "@:5:23: pools.small.retries.budget: must be between 0 and 1" },
	{ L P "models:\n  - name: m\n    pool: small\n"
	  "    bytes_per_token: 0.1\n", NULL,
	  "@:8:22: models[0].bytes_per_token: must be between 0.5 and 64" },
	{ L "store: {replicas: 1001}\n", NULL,
	  "@:2:19: store.replicas: must be between 1 and 1000" },
	/* durations */
	{ L P "    timeouts:\n      connect: 5 seconds\n", NULL,
	  "@:6:16: pools.small.timeouts.connect: invalid duration "
	  "\"5 seconds\" (expected e.g. 250ms, 5s, 2m, 1h)" },
	{ L "shutdown_grace: 60\n", NULL, "@:2:17: shutdown_grace: invalid "
	  "duration \"60\" (expected e.g. 250ms, 5s, 2m, 1h)" },
	{ L P "    timeouts: {connect: 0}\n", NULL,
	  "@:5:25: pools.small.timeouts.connect: must be at least 1ms" },
	{ L "store: {day_offset: 24h}\n", NULL,
	  "@:2:21: store.day_offset: must be less than 24h" },
	/* enums */
	{ L "log:\n  level: verbose\n", NULL, "@:3:10: log.level: invalid value "
	  "\"verbose\" (expected one of: error, warn, info, debug)" },
	{ L P "    balance: random\n", NULL, "@:5:14: pools.small.balance: "
	  "invalid value \"random\" (expected one of: least_inflight, "
	  "round_robin, queue_depth)" },
	/* missing required keys */
	{ "admin: {address: \"127.0.0.1:9091\"}\n", NULL,
	  "@:1:1: listen: required key is missing" },
	{ "", NULL, "@:1:1: listen: required key is missing" },
	{ L P "models:\n  - pool: small\n", NULL,
	  "@:6:5: models[0].name: required key is missing" },
	{ L "tenants:\n  - keys: [\"" HASH_A "\"]\n", NULL,
	  "@:3:5: tenants[0].id: required key is missing" },
	{ "listen: []\n", NULL, "@:1:9: listen: must have at least 1 entry" },
	{ L "pools:\n  small: {balance: round_robin}\n", NULL,
	  "@:3:10: pools.small.backends: required key is missing" },
	{ L "store:\n  type: redis\n", NULL,
	  "@:3:3: store.redis.address: required when type is redis" },
	{ L "trusted_proxies: [\"10.0.0.0/33\"]\n", NULL,
	  "@:2:19: trusted_proxies: \"10.0.0.0/33\" is not an IP address or "
	  "a CIDR block (10.0.0.0/8, fd00::/8)" },
	{ L "trusted_proxies: [lb.example.com]\n", NULL,
	  "@:2:19: trusted_proxies: \"lb.example.com\" is not an IP address "
	  "or a CIDR block (10.0.0.0/8, fd00::/8)" },
	{ L "trusted_proxies: 10.0.0.0/8\n", NULL,
	  "@:2:18: trusted_proxies: must be a list of addresses or CIDR "
	  "blocks" },
	{ L "store:\n  slices: true\n", NULL,
	  "@:3:11: store.slices: only with type redis (the local store "
	  "answers without a round trip)" },
	{ L "store:\n  type: redis\n  redis: {address: \"127.0.0.1:1\"}\n"
	  "  slices: true\n  lease_ttl: 2s\n", NULL,
	  "@:5:11: store.slice_period: at most a third of lease_ttl (a "
	  "slice's slots are renewed at least once a period)" },
	{ L "store:\n  slice_period: 50ms\n", NULL,
	  "@:3:17: store.slice_period: must be between 100ms and 1m" },
	{ L P "models:\n  - name: m\n", NULL,
	  "@:6:5: models[0]: either pool or route is required" },
	/* addresses */
	{ "listen:\n  - address: localhost\n", NULL,
	  "@:2:14: listen[0].address: invalid address \"localhost\": missing "
	  "port (expected host:port)" },
	{ "listen:\n  - address: \"127.0.0.1:70000\"\n", NULL,
	  "@:2:14: listen[0].address: invalid address \"127.0.0.1:70000\": "
	  "port must be between 1 and 65535" },
	{ "listen:\n  - address: \"::1:8080\"\n", NULL,
	  "@:2:14: listen[0].address: invalid address \"::1:8080\": an IPv6 "
	  "address must be in brackets" },
	{ "listen:\n  - address: \"[::1]:8080\"\n  - address: \"[fe80::zz]:1\"\n",
	  NULL, "@:3:14: listen[1].address: invalid address \"[fe80::zz]:1\": "
	  "invalid IPv6 address" },
	{ L "pools:\n  small:\n    backends:\n      - address: \"127.0.0.1:8001\"\n"
	  "      - dns: vllm.local\n", NULL,
	  "@:6:9: pools.small.backends[1].port: required with dns" },
	{ L "pools:\n  small:\n    backends: [{weight: 2}]\n", NULL,
	  "@:4:16: pools.small.backends[0]: either address or dns is required" },
	{ "listen:\n  - address: \"0.0.0.0:8080\"\n"
	  "  - address: \"127.0.0.1:8080\"\n", NULL,
	  "@:3:14: listen[1].address: \"127.0.0.1:8080\" clashes with "
	  "listen[0].address \"0.0.0.0:8080\" (@:2:14)" },
	{ "listen:\n  - address: \"127.0.0.1:9090\"\n", NULL,
	  "@:1:1: admin.address: \"127.0.0.1:9090\" clashes with "
	  "listen[0].address \"127.0.0.1:9090\" (@:2:14): the admin endpoints "
	  "are never served on a client listener" },
	/* files */
	{ "listen:\n  - address: \"127.0.0.1:8443\"\n    tls:\n"
	  "      certificate: cert.pem\n", NULL,
	  "@:4:7: listen[0].tls.key: required key is missing" },
	{ "listen:\n  - address: \"127.0.0.1:8443\"\n"
	  "    tls: {certificate: nope.crt, key: key.pem}\n", NULL,
	  "@:3:24: listen[0].tls.certificate: cannot read \"@D/nope.crt\": "
	  "No such file or directory" },
	{ L "store:\n  redis:\n    address: \"127.0.0.1:6379\"\n"
	  "    password_file: nope.pass\n", NULL,
	  "@:5:20: store.redis.password_file: cannot read \"@D/nope.pass\": "
	  "No such file or directory" },
	/* tenants */
	{ L "tenants:\n  - id: a\n    keys: [\"sha256:82DAE6D4\"]\n", NULL,
	  "@:4:12: tenants[0].keys[0]: invalid key hash (expected \"sha256:\" "
	  "and 64 lowercase hex digits; `infergate -k` prints it)" },
	{ L "tenants:\n  - id: \"a b\"\n    keys: [\"" HASH_A "\"]\n", NULL,
	  "@:3:9: tenants[0].id: invalid tenant id \"a b\" (1 to 64 of "
	  "A-Z a-z 0-9 _ . -)" },
	{ L T "  - id: a\n    keys: [\"" HASH_B "\"]\n", NULL,
	  "@:5:9: tenants[1].id: duplicate tenant id \"a\" (also at @:3:9)" },
	{ L T "  - id: b\n    keys: [\"" HASH_A "\"]\n", NULL,
	  "@:6:12: tenants[1].keys[0]: key hash also used by tenant \"a\" "
	  "(@:4:12)" },
	{ L T "    models: [chat]\n", NULL,
	  "@:5:14: tenants[0].models[0]: unknown model \"chat\"" },
	{ L T "    priority: high\n    max_priority: low\n", NULL,
	  "@:6:19: tenants[0].max_priority: \"low\" is lower than priority "
	  "\"high\"" },
	/* models and pools */
	{ L "models:\n  - name: m\n    pool: nope\n", NULL,
	  "@:4:11: models[0].pool: unknown pool \"nope\"" },
	{ L P "models:\n  - name: m\n    pool: small\n    fallback: [x]\n", NULL,
	  "@:8:16: models[0].fallback[0]: unknown model \"x\"" },
	{ L P "models:\n  - name: m\n    pool: small\n    fallback: [m]\n", NULL,
	  "@:8:16: models[0].fallback[0]: a model cannot fall back to itself" },
	{ L P "models:\n"
	  "  - {name: a, pool: small, fallback: [b]}\n"
	  "  - {name: b, pool: small, fallback: [c]}\n"
	  "  - {name: c, pool: small, fallback: [a]}\n", NULL,
	  "@:8:39: models[2].fallback[0]: fallback cycle: a -> b -> c -> a" },
	{ L P "models:\n  - name: m\n    pool: small\n  - name: m\n"
	  "    pool: small\n", NULL,
	  "@:8:11: models[1].name: duplicate model \"m\" (also at @:6:11)" },
	{ L P "models:\n  - name: auto\n    route:\n      - model: nope\n", NULL,
	  "@:8:16: models[0].route[0].model: unknown model \"nope\"" },
	{ L P "models:\n  - name: r1\n    route: [{model: r2}]\n"
	  "  - name: r2\n    route: [{model: r1}]\n", NULL,
	  "@:9:21: models[1].route[0].model: route loop: r1 -> r2 -> r1" },
	{ L P "models:\n  - name: m\n    pool: small\n    route: [{model: m}]\n",
	  NULL, "@:8:12: models[0].route: pool and route are mutually "
	  "exclusive" },
	/* tenant files */
	{ L "tenant_files: [tenants.d/*.yaml]\n",
	  "tenants:\n  - id: b\n    keys: [\"" HASH_B "\"]\n"
	  "    priority: urgent\n",
	  "@T:4:15: tenants[0].priority: invalid value \"urgent\" (expected "
	  "one of: low, normal, high)" },
	{ L "tenant_files: [tenants.d/*.yaml]\n", "tenant: []\n",
	  "@T:1:1: unknown key \"tenant\"" },
	{ L "tenant_files: [tenants.d/*.yaml]\n", "# nothing\n",
	  "@T:1:1: tenants: required key is missing" },
	{ L T "tenant_files: [tenants.d/*.yaml]\n",
	  "tenants:\n  - id: a\n    keys: [\"" HASH_B "\"]\n",
	  "@T:2:9: tenants[0].id: duplicate tenant id \"a\" (also at @:3:9)" },
	{ L "tenant_files: [tenants.d/*.yaml]\n", "tenants:\n  - id: [\n",
	  "@T:3:1: did not find expected node content (while parsing a flow "
	  "node)" },
	/* YAML itself */
	{ "listen:\n  - address: a\n bad: [\n", NULL,
	  "@:3:2: did not find expected key (while parsing a block mapping)" },
	{ "listen:\n  - &l {address: \"127.0.0.1:8080\"}\n  - *l\n", NULL,
	  "@:3:5: listen[1]: aliases are not supported" },
	{ L "---\nworkers: 2\n", NULL, "@:2:1: only one YAML document is "
	  "allowed" },
	{ L "? [a]\n: 1\n", NULL, "@:2:3: keys must be strings" },
};

static char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	assert_int_not_equal(n, -1);
	return s;
}

static void
write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	assert_int_equal(fputs(text, fp) < 0, 0);
	assert_int_equal(fclose(fp), 0);
}

/* want with "@T", "@D" and "@" replaced. */
static char *
expand(const char *want, const char *main_path, const char *tenant_path,
    const char *dir)
{
	size_t len = 0, cap = strlen(want) * 4 + 4096;
	char *out = malloc(cap);
	const char *s;

	assert_non_null(out);
	for (s = want; *s != '\0'; s++) {
		const char *rep = NULL;

		if (s[0] == '@' && s[1] == 'T')
			rep = tenant_path, s++;
		else if (s[0] == '@' && s[1] == 'D')
			rep = dir, s++;
		else if (s[0] == '@')
			rep = main_path;
		if (rep != NULL) {
			memcpy(out + len, rep, strlen(rep));
			len += strlen(rep);
		} else
			out[len++] = *s;
	}
	out[len] = '\0';
	return out;
}

static void
test_bad_configs(void **state)
{
	char dir[] = "/tmp/igcfg.XXXXXX";
	char *main_path, *tdir, *tenant_path, *cert, *key, *want, *err;
	struct ig_config *cfg;
	size_t i, failed = 0;

	assert_non_null(mkdtemp(dir));
	main_path = xasprintf("%s/main.yaml", dir);
	tdir = xasprintf("%s/tenants.d", dir);
	tenant_path = xasprintf("%s/t.yaml", tdir);
	cert = xasprintf("%s/cert.pem", dir);
	key = xasprintf("%s/key.pem", dir);
	assert_int_equal(mkdir(tdir, 0700), 0);
	write_file(cert, "not a certificate\n");
	write_file(key, "not a key\n");
	for (i = 0; i < sizeof(bad_configs) / sizeof(bad_configs[0]); i++) {
		write_file(main_path, bad_configs[i].text);
		unlink(tenant_path);
		if (bad_configs[i].tenant != NULL)
			write_file(tenant_path, bad_configs[i].tenant);
		want = expand(bad_configs[i].want, main_path, tenant_path, dir);
		err = NULL;
		cfg = ig_config_load(main_path, &err);
		if (cfg != NULL || err == NULL || strcmp(err, want) != 0) {
			print_error("row %zu:\n  want: %s\n  got:  %s\n", i,
			    want, err ? err : "(loaded)");
			failed++;
		}
		ig_config_unref(cfg);
		free(err);
		free(want);
	}
	unlink(tenant_path);
	unlink(main_path);
	unlink(cert);
	unlink(key);
	rmdir(tdir);
	rmdir(dir);
	free(main_path);
	free(tdir);
	free(tenant_path);
	free(cert);
	free(key);
	assert_int_equal(failed, 0);
}

static void
test_missing_file(void **state)
{
	char *err = NULL;

	assert_null(ig_config_load("configs/does-not-exist.yaml", &err));
	assert_string_equal(err, "configs/does-not-exist.yaml: No such file "
	    "or directory");
	free(err);
}

/* The shipped default config loads as it is, with its example tenant. */
static void
test_default_config(void **state)
{
	static const uint8_t demo_key[32] = {
		0x82, 0xda, 0xe6, 0xd4, 0x43, 0x60, 0x9c, 0xfc, 0xb4, 0xe6,
		0x98, 0xaf, 0x21, 0x39, 0x1e, 0x51, 0x32, 0xc6, 0x79, 0xce,
		0x83, 0xb3, 0x70, 0x86, 0xad, 0xa7, 0x91, 0xa0, 0xfb, 0x2a,
		0x43, 0xee };
	const struct ig_model_conf *m;
	const struct ig_pool_conf *p;
	struct ig_config *cfg;
	char *err = NULL;

	cfg = ig_config_load("../../conf/infergate.yaml", &err);
	if (cfg == NULL)
		fail_msg("%s", err);
	assert_int_equal(cfg->nlisten, 1);
	assert_string_equal(cfg->listen[0].address, "127.0.0.1:8080");
	assert_null(cfg->listen[0].tls_certificate);
	assert_string_equal(cfg->admin_address, "127.0.0.1:9090");
	assert_true(cfg->workers >= 1 && cfg->workers <= 256);
	assert_int_equal(cfg->store.type, IG_STORE_LOCAL);
	p = ig_config_pool(cfg, "small");
	assert_non_null(p);
	assert_string_equal(p->backends[0].address, "127.0.0.1:8001");
	assert_int_equal(p->max_inflight, 64);
	m = ig_config_model(cfg, "sim-model");
	assert_non_null(m);
	assert_string_equal(m->pool, "small");
	assert_non_null(ig_config_model(cfg, "auto"));
	assert_null(ig_config_model(cfg, "nope"));
	assert_null(ig_config_pool(cfg, "nope"));
	assert_int_equal(cfg->ntenants, 1);
	assert_string_equal(cfg->tenants[0].id, "demo");
	assert_int_equal(cfg->tenants[0].nkeys, 1);
	assert_memory_equal(cfg->tenants[0].keys[0], demo_key, 32);
	assert_string_equal(cfg->tenants[0].file,
	    "../../conf/tenants.d/example.yaml");
	assert_int_equal(cfg->tenants[0].line, 10);
	assert_int_equal(cfg->tenants[0].max_priority, IG_PRIO_HIGH);
	assert_int_equal(cfg->tenants[0].limits.daily_token_budget, 2000000);
	ig_config_unref(cfg);
}

/* Only listen given: every other key takes its default. */
static void
test_defaults(void **state)
{
	struct ig_config *cfg;
	char *err = NULL;

	cfg = ig_config_load("configs/minimal.yaml", &err);
	if (cfg == NULL)
		fail_msg("%s", err);
	assert_int_equal(cfg->refcnt, 1);
	assert_string_equal(cfg->path, "configs/minimal.yaml");
	assert_string_equal(cfg->admin_address, "127.0.0.1:9090");
	assert_int_equal(cfg->workers, sysconf(_SC_NPROCESSORS_ONLN) > 256 ?
	    256 : sysconf(_SC_NPROCESSORS_ONLN));
	assert_int_equal(cfg->log.level, IG_LOG_INFO);
	assert_string_equal(cfg->log.access_log, "-");
	assert_string_equal(cfg->log.error_log, "-");
	assert_int_equal(cfg->limits.max_header_bytes, 16384);
	assert_int_equal(cfg->limits.max_headers, 100);
	assert_int_equal(cfg->limits.max_body_bytes, 4194304);
	assert_int_equal(cfg->limits.header_timeout_ms, 10000);
	assert_int_equal(cfg->limits.body_timeout_ms, 30000);
	assert_int_equal(cfg->limits.keepalive_timeout_ms, 75000);
	assert_int_equal(cfg->limits.max_requests_per_connection, 10000);
	assert_int_equal(cfg->limits.max_response_bytes, 67108864);
	assert_int_equal(cfg->shutdown_grace_ms, 60000);
	assert_int_equal(cfg->store.type, IG_STORE_LOCAL);
	assert_null(cfg->store.redis_address);
	assert_null(cfg->store.redis_password);
	assert_int_equal(cfg->store.redis_database, 0);
	assert_int_equal(cfg->store.redis_timeout_ms, 5);
	assert_string_equal(cfg->store.redis_key_prefix, "ig");
	assert_int_equal(cfg->store.on_failure, IG_STORE_FAIL_CLOSED);
	assert_int_equal(cfg->store.replicas, 1);
	assert_int_equal(cfg->store.lease_ttl_ms, 120000);
	assert_int_equal(cfg->store.day_offset_s, 0);
	assert_false(cfg->store.slices);
	assert_int_equal(cfg->store.slice_period_ms, 1000);
	assert_int_equal(cfg->npools, 0);
	assert_int_equal(cfg->nmodels, 0);
	assert_int_equal(cfg->ntenants, 0);
	assert_int_equal(cfg->ntenant_files, 0);
	ig_config_unref(cfg);
}

/* Every key set, none to its default. */
static void
test_full(void **state)
{
	const struct ig_tenant_conf *t;
	const struct ig_model_conf *m;
	const struct ig_pool_conf *p;
	struct ig_config *cfg;
	char *err = NULL;

	cfg = ig_config_load("configs/full.yaml", &err);
	if (cfg == NULL)
		fail_msg("%s", err);
	assert_int_equal(cfg->nlisten, 2);
	assert_string_equal(cfg->listen[1].address, "[::1]:8443");
	assert_string_equal(cfg->listen[1].tls_certificate,
	    "configs/tls/server.crt");
	assert_string_equal(cfg->listen[1].tls_key, "configs/tls/server.key");
	assert_string_equal(cfg->admin_address, "127.0.0.1:9191");
	assert_int_equal(cfg->workers, 3);
	assert_int_equal(cfg->log.level, IG_LOG_DEBUG);
	assert_string_equal(cfg->log.access_log, "off");
	assert_string_equal(cfg->log.error_log, "configs/error.log");
	assert_int_equal(cfg->limits.max_header_bytes, 8192);
	assert_int_equal(cfg->limits.max_headers, 50);
	assert_int_equal(cfg->limits.max_body_bytes, 1048576);
	assert_int_equal(cfg->limits.header_timeout_ms, 5000);
	assert_int_equal(cfg->limits.body_timeout_ms, 250);
	assert_int_equal(cfg->limits.keepalive_timeout_ms, 90 * 60000);
	assert_int_equal(cfg->limits.max_requests_per_connection, 0);
	assert_int_equal(cfg->limits.max_response_bytes, 1024 * 1024);
	assert_int_equal(cfg->shutdown_grace_ms, 0);
	/* addresses and blocks, the host bits of a block cleared */
	assert_int_equal(cfg->ntrusted_proxies, 4);
	assert_int_equal(cfg->trusted_proxies[0].family, AF_INET);
	assert_int_equal(cfg->trusted_proxies[0].bits, 8);
	assert_memory_equal(cfg->trusted_proxies[0].addr, "\x0a\0\0\0", 4);
	assert_int_equal(cfg->trusted_proxies[1].family, AF_INET6);
	assert_int_equal(cfg->trusted_proxies[1].bits, 8);
	assert_int_equal(cfg->trusted_proxies[1].addr[0], 0xfd);
	assert_int_equal(cfg->trusted_proxies[1].addr[1], 0);
	assert_int_equal(cfg->trusted_proxies[2].bits, 32);
	assert_memory_equal(cfg->trusted_proxies[2].addr, "\xc0\0\x02\x07", 4);
	assert_int_equal(cfg->trusted_proxies[3].bits, 127);
	assert_int_equal(cfg->trusted_proxies[3].addr[15], 0);

	assert_int_equal(cfg->store.type, IG_STORE_REDIS);
	assert_string_equal(cfg->store.redis_address, "unix:/run/redis.sock");
	assert_string_equal(cfg->store.redis_password_file,
	    "configs/redis.pass");
	assert_string_equal(cfg->store.redis_password, "s3cret");
	assert_int_equal(cfg->store.redis_database, 2);
	assert_int_equal(cfg->store.redis_timeout_ms, 20);
	assert_string_equal(cfg->store.redis_key_prefix, "gw1");
	assert_int_equal(cfg->store.on_failure, IG_STORE_FAIL_LOCAL);
	assert_int_equal(cfg->store.replicas, 3);
	assert_int_equal(cfg->store.lease_ttl_ms, 60000);
	assert_int_equal(cfg->store.day_offset_s, 8 * 3600);
	assert_true(cfg->store.slices);
	assert_int_equal(cfg->store.slice_period_ms, 500);

	assert_int_equal(cfg->npools, 2);
	p = ig_config_pool(cfg, "small");
	assert_non_null(p);
	assert_int_equal(p->nbackends, 2);
	assert_string_equal(p->backends[0].address, "127.0.0.1:8001");
	assert_int_equal(p->backends[0].weight, 3);
	assert_null(p->backends[1].address);
	assert_string_equal(p->backends[1].dns, "vllm-small.svc.local");
	assert_int_equal(p->backends[1].port, 8000);
	assert_int_equal(p->backends[1].resolve_every_ms, 10000);
	assert_int_equal(p->backends[1].weight, 1);
	assert_int_equal(p->balance, IG_BALANCE_QUEUE_DEPTH);
	assert_string_equal(p->scrape_path, "/stats");
	assert_int_equal(p->scrape_interval_ms, 500);
	assert_string_equal(p->health_path, "/ready");
	assert_int_equal(p->health_interval_ms, 3000);
	assert_int_equal(p->health_timeout_ms, 200);
	assert_int_equal(p->healthy_after, 1);
	assert_int_equal(p->unhealthy_after, 5);
	assert_int_equal(p->max_inflight, 16);
	assert_int_equal(p->queue_max_waiting, 10);
	assert_int_equal(p->queue_max_wait_ms, 2000);
	assert_int_equal(p->when_empty, IG_EMPTY_FALLBACK);
	assert_int_equal(p->connect_timeout_ms, 100);
	assert_int_equal(p->first_byte_timeout_ms, 20000);
	assert_int_equal(p->idle_timeout_ms, 5000);
	assert_int_equal(p->request_timeout_ms, 120000);
	assert_int_equal(p->retries_max_per_request, 2);
	assert_true(p->retries_budget > 0.49 && p->retries_budget < 0.51);
	assert_int_equal(p->keepalive_connections, 8);
	assert_true(p->tls_enabled);
	assert_string_equal(p->tls_ca, "configs/tls/ca.crt");
	assert_string_equal(p->tls_server_name, "vllm.internal");
	/* the second pool: defaults */
	p = ig_config_pool(cfg, "large");
	assert_non_null(p);
	assert_int_equal(p->backends[0].weight, 1);
	assert_int_equal(p->balance, IG_BALANCE_LEAST_INFLIGHT);
	assert_null(p->scrape_path);
	assert_null(p->health_path);	/* no health: no active checks */
	assert_int_equal(p->eject_after, 3);
	assert_int_equal(p->eject_ms, 10000);
	assert_int_equal(p->max_inflight, 0);
	assert_int_equal(p->queue_max_waiting, 256);
	assert_int_equal(p->queue_max_wait_ms, 5000);
	assert_int_equal(p->when_empty, IG_EMPTY_QUEUE);
	assert_int_equal(p->connect_timeout_ms, 1000);
	assert_int_equal(p->first_byte_timeout_ms, 60000);
	assert_int_equal(p->idle_timeout_ms, 30000);
	assert_int_equal(p->request_timeout_ms, 600000);
	assert_int_equal(p->retries_max_per_request, 1);
	assert_true(p->retries_budget > 0.19 && p->retries_budget < 0.21);
	assert_int_equal(p->keepalive_connections, 256);
	assert_false(p->tls_enabled);
	assert_null(p->tls_ca);

	assert_int_equal(cfg->nmodels, 3);
	m = ig_config_model(cfg, "chat-small");
	assert_non_null(m);
	assert_string_equal(m->upstream_model, "llama-1b");
	assert_int_equal(m->context_tokens, 8192);
	assert_true(m->bytes_per_token > 3.49 && m->bytes_per_token < 3.51);
	assert_int_equal(m->tokens_per_message, 7);
	assert_int_equal(m->nfallback, 0);
	m = ig_config_model(cfg, "chat-large");
	assert_non_null(m);
	assert_null(m->upstream_model);
	assert_int_equal(m->context_tokens, 0);
	assert_true(m->bytes_per_token > 3.99 && m->bytes_per_token < 4.01);
	assert_int_equal(m->tokens_per_message, 4);
	assert_int_equal(m->nfallback, 1);
	assert_string_equal(m->fallback[0], "chat-small");
	m = ig_config_model(cfg, "auto");
	assert_non_null(m);
	assert_null(m->pool);
	assert_int_equal(m->nroutes, 3);
	assert_true(m->routes[0].has_max_input_tokens);
	assert_int_equal(m->routes[0].max_input_tokens, 2000);
	assert_string_equal(m->routes[0].model, "chat-small");
	assert_false(m->routes[1].has_max_input_tokens);
	assert_string_equal(m->routes[1].tier, "premium");
	assert_string_equal(m->routes[1].tenant, "acme");
	assert_null(m->routes[2].tier);
	assert_string_equal(m->routes[2].model, "chat-large");

	/* inline first, then the files in glob order */
	assert_int_equal(cfg->ntenants, 3);
	assert_int_equal(cfg->ntenant_files, 2);
	assert_string_equal(cfg->tenant_files[0], "tenants/*.yaml");
	t = &cfg->tenants[0];
	assert_string_equal(t->id, "inline");
	assert_string_equal(t->file, "configs/full.yaml");
	assert_int_equal(t->nmodels, 1);
	assert_string_equal(t->models[0], "*");
	assert_int_equal(t->priority, IG_PRIO_NORMAL);
	assert_int_equal(t->max_priority, IG_PRIO_NORMAL);
	assert_int_equal(t->on_output_over_limit, IG_OVER_CLAMP);
	assert_false(t->shadow);
	assert_null(t->tier);
	assert_int_equal(t->limits.max_input_tokens, 0);
	assert_int_equal(t->limits.tokens_per_minute, 0);
	t = &cfg->tenants[1];
	assert_string_equal(t->id, "acme");
	assert_string_equal(t->file, "configs/tenants/acme.yaml");
	assert_int_equal(t->line, 2);
	assert_int_equal(t->nkeys, 2);
	assert_int_equal(t->keys[1][0], 0xca);
	assert_int_equal(t->keys[1][31], 0x0c);
	assert_string_equal(t->tier, "premium");
	assert_int_equal(t->nmodels, 2);
	assert_string_equal(t->models[1], "auto");
	assert_int_equal(t->priority, IG_PRIO_LOW);
	assert_int_equal(t->max_priority, IG_PRIO_HIGH);
	assert_int_equal(t->on_output_over_limit, IG_OVER_REJECT);
	assert_true(t->shadow);
	assert_int_equal(t->limits.max_input_tokens, 8000);
	assert_int_equal(t->limits.max_output_tokens, 1024);
	assert_int_equal(t->limits.max_concurrent_requests, 8);
	assert_int_equal(t->limits.daily_token_budget, 2000000);
	assert_int_equal(t->limits.requests_per_minute, 600);
	assert_int_equal(t->limits.tokens_per_minute, 200000);
	assert_string_equal(cfg->tenants[2].id, "beta");
	ig_config_unref(cfg);
}

/* An empty password_file means no password, as in the reference. */
static void
test_redis_no_password(void **state)
{
	struct ig_config *cfg;
	char *err = NULL;

	cfg = ig_config_load("configs/redis-nopass.yaml", &err);
	if (cfg == NULL)
		fail_msg("%s", err);
	assert_int_equal(cfg->store.type, IG_STORE_REDIS);
	assert_string_equal(cfg->store.redis_address, "127.0.0.1:6379");
	assert_null(cfg->store.redis_password_file);
	assert_null(cfg->store.redis_password);
	assert_int_equal(cfg->store.on_failure, IG_STORE_FAIL_OPEN);
	ig_config_unref(cfg);
}

/* A reference keeps the config alive; the last unref frees it (ASan). */
static void
test_refcount(void **state)
{
	struct ig_config *cfg, *ref;
	char *err = NULL;

	cfg = ig_config_load("configs/full.yaml", &err);
	if (cfg == NULL)
		fail_msg("%s", err);
	ref = ig_config_ref(cfg);
	assert_ptr_equal(ref, cfg);
	assert_int_equal(cfg->refcnt, 2);
	ig_config_unref(cfg);
	assert_int_equal(ref->refcnt, 1);
	assert_string_equal(ref->store.redis_password, "s3cret");
	ig_config_unref(ref);
	ig_config_unref(NULL);
}

static void
test_durations(void **state)
{
	static const struct {
		const char	*s;
		int		 rc;
		uint64_t	 ms;
	} rows[] = {
		{ "250ms", 0, 250 },
		{ "5s", 0, 5000 },
		{ "2m", 0, 120000 },
		{ "1h", 0, 3600000 },
		{ "0", 0, 0 },
		{ "0s", 0, 0 },
		{ "0ms", 0, 0 },
		{ "1h30m", 0, 5400000 },
		{ "1m30s", 0, 90000 },
		{ "2s500ms", 0, 2500 },
		{ "600s", 0, 600000 },
		{ "18446744073709551615ms", 0, UINT64_MAX },
		{ "18446744073709551616ms", -1, 0 },
		{ "18446744073709551615s", -1, 0 },
		{ "5124095576030h", 0, 5124095576030ULL * 3600000 },
		{ "5124095576031h", -1, 0 },
		{ "", -1, 0 },
		{ "5", -1, 0 },
		{ "s", -1, 0 },
		{ "-1s", -1, 0 },
		{ "1.5s", -1, 0 },
		{ "5 s", -1, 0 },
		{ " 5s", -1, 0 },
		{ "5s ", -1, 0 },
		{ "5S", -1, 0 },
		{ "5sec", -1, 0 },
		{ "1d", -1, 0 },
		{ "1s1h", -1, 0 },
		{ "1s1s", -1, 0 },
		{ "5 seconds", -1, 0 },
	};
	uint64_t ms;
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		ms = 12345;
		if (ig_parse_duration(rows[i].s, &ms) != rows[i].rc)
			fail_msg("\"%s\": want %d", rows[i].s, rows[i].rc);
		if (rows[i].rc == 0 && ms != rows[i].ms)
			fail_msg("\"%s\": got %" PRIu64, rows[i].s, ms);
	}
	assert_int_equal(ig_parse_duration(NULL, &ms), -1);
}

/* A reload's store section against the running one: which key changed. */
static void
test_store_changed(void **state)
{
	static const struct { const char *store, *key; } cases[] = {
		{ "  type: redis\n  redis: {address: \"127.0.0.1:6379\"}\n", NULL },
		{ "  type: redis\n  redis: {address: \"127.0.0.1:6380\"}\n",
		  "redis.address" },
		{ "  type: redis\n  redis: {address: \"127.0.0.1:6379\", "
		  "timeout: 9ms}\n", "redis.timeout" },
		{ "  type: redis\n  redis: {address: \"127.0.0.1:6379\"}\n"
		  "  slices: true\n", "slices" },
		{ "  type: redis\n  redis: {address: \"127.0.0.1:6379\"}\n"
		  "  on_store_failure: open\n", "on_store_failure" },
		{ "  type: redis\n  redis: {address: \"127.0.0.1:6379\"}\n"
		  "  day_offset: 1h\n", "day_offset" },
		{ "  type: local\n", "type" },
	};
	char dir[] = "/tmp/igcfg.XXXXXX", buf[64], *path, *text, *err = NULL;
	struct ig_config *base, *cfg;
	const char *key;
	size_t i;

	assert_non_null(mkdtemp(dir));
	path = xasprintf("%s/main.yaml", dir);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		text = xasprintf(L "store:\n%s", cases[i].store);
		write_file(path, text);
		free(text);
		if ((cfg = ig_config_load(path, &err)) == NULL)
			fail_msg("%zu: %s", i, err);
		if (i == 0) {
			base = cfg;
			continue;
		}
		key = admission_store_changed(base, cfg, buf, sizeof(buf));
		assert_non_null(key);
		assert_string_equal(key, cases[i].key);
		assert_null(admission_store_changed(cfg, cfg, buf,
		    sizeof(buf)));
		ig_config_unref(cfg);
	}
	ig_config_unref(base);
	unlink(path);
	rmdir(dir);
	free(path);
}

/* trusted_proxies' blocks: whole and partial bytes, both families. */
static void
test_cidr_match(void **state)
{
	static const struct { const char *cidr, *addr; bool in; } cases[] = {
		{ "10.0.0.0/8", "10.255.1.2", true },
		{ "10.0.0.0/8", "11.0.0.1", false },
		{ "172.16.0.0/12", "172.31.255.255", true },
		{ "172.16.0.0/12", "172.32.0.0", false },
		{ "192.0.2.7", "192.0.2.7", true },
		{ "192.0.2.7", "192.0.2.6", false },
		{ "0.0.0.0/0", "198.51.100.1", true },
		{ "fd00::/8", "fdff::1", true },
		{ "fd00::/8", "fe80::1", false },
		{ "2001:db8::/127", "2001:db8::1", true },
		{ "2001:db8::/127", "2001:db8::2", false },
		{ "10.0.0.0/8", "::ffff:10.0.0.1", false },	/* unmapped first */
	};
	struct ig_cidr	 c;
	uint8_t		 a[16];
	int		 fam;
	size_t		 i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(ig_parse_cidr(cases[i].cidr, &c), 0);
		fam = strchr(cases[i].addr, ':') ? AF_INET6 : AF_INET;
		assert_int_equal(inet_pton(fam, cases[i].addr, a), 1);
		if (client_addr_in(&c, 1, fam, a) != cases[i].in)
			fail_msg("%s in %s: %d", cases[i].addr, cases[i].cidr,
			    !cases[i].in);
	}
	assert_int_equal(ig_parse_cidr("10.0.0.0/", &c), -1);
	assert_int_equal(ig_parse_cidr("10.0.0.0/8x", &c), -1);
	assert_int_equal(ig_parse_cidr("::/129", &c), -1);
	assert_int_equal(ig_parse_cidr("/8", &c), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_configs),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_default_config),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_redis_no_password),
		cmocka_unit_test(test_refcount),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_cidr_match),
		cmocka_unit_test(test_store_changed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
