/*
 * infergate: the `store`, `tenants` and `tenant_files` sections of the
 * config (admission/). Called by ig_config_load() after the models are read,
 * since tenants name models; see include/infergate/conf_yaml.h for the
 * reader and its error format.
 */
#ifndef INFERGATE_ADMISSION_CONF_H
#define INFERGATE_ADMISSION_CONF_H

#include <stddef.h>

struct cy_ctx;
struct cy_node;
struct ig_config;

/*
 * Reads `store`, the inline `tenants` and every tenant file the
 * `tenant_files` globs match (resolved against the main file's directory),
 * reads the redis password file, then checks the relations (duplicate
 * tenant ids and keys, tenants naming unknown models). Returns 0, or -1
 * with ctx->err set; what was read is owned by cfg either way
 * (admission_conf_free releases it, wiping the password).
 */
int	 admission_conf_read(struct cy_ctx *, const struct cy_node *root,
	    struct ig_config *);
void	 admission_conf_free(struct ig_config *);

/*
 * The store section of SRC into the empty config DST (its strings
 * copied; admission_conf_free() releases them, wiping the password).
 * Returns 0, or -1 when out of memory (DST left empty).
 */
int	 admission_store_copy(struct ig_config *dst,
	    const struct ig_config *src);

/*
 * The first `store` key whose value differs between A and B (the
 * password compared too, never shown), in BUF or a constant, or NULL
 * when they are the same.
 */
const char *admission_store_changed(const struct ig_config *a,
	    const struct ig_config *b, char *buf, size_t len);

#endif
