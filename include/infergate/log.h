/*
 * infergate: levelled logging to the error log, and the access log.
 * The level is checked before anything is formatted. Never log a prompt, a
 * completion or a key: callers pass ids and numbers only.
 */
#ifndef INFERGATE_LOG_H
#define INFERGATE_LOG_H

#include "infergate/config.h"

extern volatile int ig_log_level_cur;

int	 ig_log_open(const struct ig_log_conf *, char **err);
void	 ig_log_close(void);
void	 ig_log_reopen(void);	/* after rotation (SIGUSR1) */
void	 ig_log_write(enum ig_log_level, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/* One already-formatted JSON line to the access log (a '\n' is added). */
void	 ig_access_write(const char *line, size_t len);
int	 ig_access_enabled(void);

#define ig_log(lvl, ...) do {						\
	if ((int)(lvl) <= ig_log_level_cur)				\
		ig_log_write((lvl), __VA_ARGS__);			\
} while (0)
#define log_error(...)	ig_log(IG_LOG_ERROR, __VA_ARGS__)
#define log_warn(...)	ig_log(IG_LOG_WARN, __VA_ARGS__)
#define log_info(...)	ig_log(IG_LOG_INFO, __VA_ARGS__)
#define log_debug(...)	ig_log(IG_LOG_DEBUG, __VA_ARGS__)

#endif
