/*
 * libFuzzer target: the config loader (libyaml, the table-driven reader,
 * every module's keys and their cross-checks) on arbitrary input. Each
 * input is written as the main config file of a private directory and
 * loaded; a config that loads is released again. Errors are the normal
 * answer; a crash, a leak or undefined behaviour is a bug.
 *
 *   make fuzz && build/fuzz/fuzz_config -dict=tests/fuzz/config.dict \
 *       -max_total_time=600 build/fuzz/corpus_config tests/fuzz/corpus_config
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "infergate/config.h"
#include "infergate/log.h"

int	 LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static char	*path;

/* The main file, in a directory of its own (globs and paths resolve there). */
static const char *
config_path(void)
{
	static char dir[] = "/tmp/igfuzz.XXXXXX";

	if (path != NULL)
		return path;
	if (mkdtemp(dir) == NULL || asprintf(&path, "%s/main.yaml", dir) == -1)
		abort();
	return path;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ig_config *cfg;
	FILE		*fp;
	char		*err = NULL;

	ig_log_level_cur = IG_LOG_ERROR - 1;	/* the loader's warnings: none */
	if ((fp = fopen(config_path(), "w")) == NULL)
		abort();
	if (size > 0 && fwrite(data, 1, size, fp) != size)
		abort();
	fclose(fp);
	cfg = ig_config_load(path, &err);
	/* exactly one of the two */
	if ((cfg == NULL) == (err == NULL))
		abort();
	ig_config_unref(cfg);
	free(err);
	return 0;
}
