/*
 * infergate: the `pools` and `models` sections of the config (routing/).
 * Called by ig_config_load() with the root of the main file; see
 * include/infergate/conf_yaml.h for the reader and its error format.
 */
#ifndef INFERGATE_ROUTING_CONF_H
#define INFERGATE_ROUTING_CONF_H

struct cy_ctx;
struct cy_node;
struct ig_config;

/*
 * Reads `pools` and `models` from root into cfg, then checks the relations
 * between them (unknown pools, fallbacks and route targets, duplicate names,
 * fallback cycles, route loops). Returns 0, or -1 with ctx->err set; what
 * was read is owned by cfg either way (routing_conf_free releases it).
 */
int	 routing_conf_read(struct cy_ctx *, const struct cy_node *root,
	    struct ig_config *);
void	 routing_conf_free(struct ig_config *);

#endif
