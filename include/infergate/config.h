/*
 * infergate: the configuration as plain data.
 *
 * ig_config_load() builds a complete, validated, immutable struct ig_config
 * from one YAML file and the tenant files it names; nothing here holds
 * runtime state (sockets, counters, health), so a config can be built whole
 * off to the side, compared and swapped on reload (nginx's ngx_init_cycle).
 * A config is reference-counted: every request holds the config it started
 * with until it ends.
 *
 * Each module owns the keys of its own section: gateway/config.c the
 * top-level keys (listen, admin, workers, log, limits, shutdown_grace),
 * admission/admission_conf.c `store`, `tenants` and `tenant_files`,
 * routing/routing_conf.c `pools` and `models`. gateway/conf_yaml.c is the
 * shared table-driven YAML reader they all use.
 *
 * Durations are kept in milliseconds; 0 in a limit means "no limit" unless a
 * field says otherwise.
 */
#ifndef INFERGATE_CONFIG_H
#define INFERGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ig_log_level { IG_LOG_ERROR, IG_LOG_WARN, IG_LOG_INFO, IG_LOG_DEBUG };

struct ig_listen_conf {
	char		*address;	/* "host:port", "[v6]:port" */
	char		*tls_certificate;	/* NULL: plain TCP */
	char		*tls_key;
};

struct ig_log_conf {
	enum ig_log_level level;
	char		*access_log;	/* path, "-" (stderr) or "off" */
	char		*error_log;	/* path or "-" */
};

struct ig_limits_conf {
	uint64_t	 max_header_bytes;
	uint64_t	 max_headers;
	uint64_t	 max_body_bytes;
	uint64_t	 header_timeout_ms;
	uint64_t	 body_timeout_ms;
	uint64_t	 keepalive_timeout_ms;
	uint64_t	 max_requests_per_connection;
	uint64_t	 max_response_bytes;	/* buffered non-streaming reply */
};

/* --- store (admission/) ------------------------------------------------ */

enum ig_store_type { IG_STORE_LOCAL, IG_STORE_REDIS };
enum ig_store_failure { IG_STORE_FAIL_CLOSED, IG_STORE_FAIL_OPEN,
	IG_STORE_FAIL_LOCAL };

struct ig_store_conf {
	enum ig_store_type type;
	char		*redis_address;	/* host:port or unix:/path */
	char		*redis_password_file;	/* NULL: none */
	char		*redis_password;	/* read from the file at load */
	uint64_t	 redis_database;
	uint64_t	 redis_timeout_ms;
	char		*redis_key_prefix;
	enum ig_store_failure on_failure;
	uint64_t	 replicas;
	uint64_t	 lease_ttl_ms;
	uint64_t	 day_offset_s;	/* start of the budget day after 00:00 UTC */
	bool		 slices;	/* redis: admit from per-worker slices */
	uint64_t	 slice_period_ms;	/* a slice's requests and tokens last */
};

/* --- tenants (admission/) ---------------------------------------------- */

enum ig_priority { IG_PRIO_LOW, IG_PRIO_NORMAL, IG_PRIO_HIGH };
enum ig_over_limit { IG_OVER_CLAMP, IG_OVER_REJECT };

struct ig_tenant_limits {	/* 0: unlimited */
	uint64_t	 max_input_tokens;
	uint64_t	 max_output_tokens;
	uint64_t	 max_concurrent_requests;
	uint64_t	 daily_token_budget;
	uint64_t	 requests_per_minute;
	uint64_t	 tokens_per_minute;
};

struct ig_tenant_conf {
	char		*id;
	uint8_t		(*keys)[32];	/* sha256 of each API key */
	size_t		 nkeys;
	char		*tier;		/* NULL: none */
	char		**models;	/* names, or a single "*" */
	size_t		 nmodels;
	enum ig_priority priority;
	enum ig_priority max_priority;
	enum ig_over_limit on_output_over_limit;
	bool		 shadow;
	struct ig_tenant_limits limits;
	char		*file;		/* where it was defined, for messages */
	int		 line;
};

/* --- pools and models (routing/) --------------------------------------- */

enum ig_balance { IG_BALANCE_LEAST_INFLIGHT, IG_BALANCE_ROUND_ROBIN,
	IG_BALANCE_QUEUE_DEPTH };
enum ig_when_empty { IG_EMPTY_QUEUE, IG_EMPTY_FALLBACK, IG_EMPTY_FAIL };

struct ig_backend_conf {
	char		*address;	/* "host:port"; NULL when dns is set */
	char		*dns;		/* name re-resolved every resolve_every */
	uint64_t	 port;		/* with dns */
	uint64_t	 resolve_every_ms;
	uint64_t	 weight;
};

struct ig_pool_conf {
	char		*name;
	struct ig_backend_conf *backends;
	size_t		 nbackends;
	enum ig_balance	 balance;
	char		*scrape_path;	/* NULL: no scraping */
	uint64_t	 scrape_interval_ms;
	char		*health_path;	/* NULL: no active checks */
	uint64_t	 health_interval_ms;
	uint64_t	 health_timeout_ms;
	uint64_t	 healthy_after;
	uint64_t	 unhealthy_after;
	uint64_t	 eject_after;	/* transport failures in a row; 0: off */
	uint64_t	 eject_after_5xx;	/* 5xx responses in a row; 0: off */
	uint64_t	 eject_ms;
	uint64_t	 max_inflight;	/* 0: unlimited */
	uint64_t	 queue_max_waiting;
	uint64_t	 queue_max_wait_ms;
	enum ig_when_empty when_empty;
	uint64_t	 connect_timeout_ms;
	uint64_t	 first_byte_timeout_ms;
	uint64_t	 idle_timeout_ms;
	uint64_t	 request_timeout_ms;
	uint64_t	 retries_max_per_request;
	double		 retries_budget;
	uint64_t	 keepalive_connections;	/* idle upstream conns kept per backend per worker */
	char		*tls_ca;	/* tls_enabled: TLS to the backends */
	char		*tls_server_name;
	bool		 tls_enabled;
};

struct ig_route_conf {
	bool		 has_max_input_tokens;
	uint64_t	 max_input_tokens;	/* matches when input <= this */
	char		*tier;		/* matches the tenant's tier */
	char		*tenant;	/* matches the tenant id */
	char		*model;		/* the model this rule picks */
};

struct ig_model_conf {
	char		*name;
	char		*pool;		/* NULL for a virtual (route) model */
	char		*upstream_model;	/* NULL: sent as is */
	uint64_t	 context_tokens;	/* 0: unknown */
	double		 bytes_per_token;
	uint64_t	 tokens_per_message;	/* estimate overhead per message */
	char		**fallback;
	size_t		 nfallback;
	struct ig_route_conf *routes;
	size_t		 nroutes;
};

/* --- the whole ------------------------------------------------------- */

/* How DNS backends are resolved (gateway/resolver.c). */
struct ig_resolver_conf {
	char		**nameservers;	/* "ip" or "ip:port"; none: resolv.conf's */
	size_t		 nnameservers;
	uint64_t	 timeout_ms;	/* per query attempt */
	uint64_t	 attempts;
};

/* An address block of trusted_proxies (gateway/client_addr.c). */
struct ig_cidr {
	int		 family;	/* AF_INET, AF_INET6 */
	uint8_t		 addr[16];	/* network order, 4 or 16 bytes */
	unsigned	 bits;		/* the prefix length */
};

struct ig_config {
	int		 refcnt;	/* atomic; see ig_config_ref() */
	char		*path;
	struct ig_listen_conf *listen;
	size_t		 nlisten;
	char		*admin_address;
	uint64_t	 workers;	/* resolved: "auto" is the CPU count */
	struct ig_log_conf log;
	struct ig_limits_conf limits;
	uint64_t	 shutdown_grace_ms;
	struct ig_cidr	*trusted_proxies;	/* X-Forwarded-For from these */
	size_t		 ntrusted_proxies;
	struct ig_resolver_conf resolver;
	struct ig_store_conf store;
	struct ig_pool_conf *pools;
	size_t		 npools;
	struct ig_model_conf *models;
	size_t		 nmodels;
	struct ig_tenant_conf *tenants;
	size_t		 ntenants;
	char		**tenant_files;	/* the globs as written */
	size_t		 ntenant_files;
};

/*
 * Loads and validates FILE. Returns a config with one reference, or NULL
 * with *err set to a malloc'd "file:line:col: key: message" (caller frees).
 */
struct ig_config *ig_config_load(const char *file, char **err);
struct ig_config *ig_config_ref(struct ig_config *);
void		 ig_config_unref(struct ig_config *);

const struct ig_pool_conf *ig_config_pool(const struct ig_config *, const char *);
const struct ig_model_conf *ig_config_model(const struct ig_config *, const char *);

/* "250ms", "5s", "2m", "1h" -> milliseconds; -1 on a malformed value. */
int		 ig_parse_duration(const char *, uint64_t *ms);

/*
 * A name server of resolver.nameservers: an IPv4 or IPv6 address with an
 * optional port ("10.96.0.10", "10.96.0.10:53", "[fd00::a]:53") into
 * *FAMILY (AF_INET, AF_INET6), ADDR (an in_addr or in6_addr) and *PORT
 * (53 when none is given); -1 when S is not one.
 */
int		 ig_parse_nameserver(const char *s, int *family, void *addr,
		    uint16_t *port);

/*
 * An address or a CIDR block of trusted_proxies ("10.0.0.0/8",
 * "192.0.2.7", "fd00::/8") into OUT, host bits cleared; -1 when S is not
 * one.
 */
int		 ig_parse_cidr(const char *s, struct ig_cidr *out);

#endif
