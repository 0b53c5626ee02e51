/*
 * Levelled error log and the access log. Both are plain file descriptors
 * written with one write(2) per line, so lines from worker threads never
 * interleave (PIPE_BUF-sized lines are atomic on pipes; O_APPEND on files).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "infergate/log.h"

volatile int ig_log_level_cur = IG_LOG_INFO;

static int	 error_fd = 2;
static int	 access_fd = 2;	/* -1: off */
static char	*error_path;
static char	*access_path;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

static int
log_open_path(const char *path, char **err)
{
	int fd;

	if (path == NULL || strcmp(path, "-") == 0)
		return 2;
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd == -1 && err != NULL &&
	    asprintf(err, "%s: %s", path, strerror(errno)) == -1)
		*err = NULL;
	return fd;
}

/*
 * Opens the logs a config names. On failure the previous logs stay open
 * and *err says why.
 */
int
ig_log_open(const struct ig_log_conf *conf, char **err)
{
	int efd, afd = -1;

	efd = log_open_path(conf->error_log, err);
	if (efd == -1)
		return -1;
	if (conf->access_log != NULL && strcmp(conf->access_log, "off") != 0) {
		afd = log_open_path(conf->access_log, err);
		if (afd == -1) {
			if (efd != 2)
				close(efd);
			return -1;
		}
	}
	ig_log_close();
	error_fd = efd;
	access_fd = afd;
	free(error_path);
	free(access_path);
	error_path = conf->error_log ? strdup(conf->error_log) : NULL;
	access_path = afd != -1 && conf->access_log ? strdup(conf->access_log) : NULL;
	ig_log_level_cur = conf->level;
	return 0;
}

void
ig_log_close(void)
{
	if (error_fd > 2)
		close(error_fd);
	if (access_fd > 2 && access_fd != error_fd)
		close(access_fd);
	error_fd = 2;
	access_fd = 2;
}

/* Reopens the files by name (log rotation on SIGUSR1). */
void
ig_log_reopen(void)
{
	int fd;

	if (error_fd > 2 && error_path != NULL &&
	    (fd = log_open_path(error_path, NULL)) != -1) {
		dup2(fd, error_fd);
		close(fd);
	}
	if (access_fd > 2 && access_path != NULL &&
	    (fd = log_open_path(access_path, NULL)) != -1) {
		dup2(fd, access_fd);
		close(fd);
	}
}

void
ig_log_write(enum ig_log_level level, const char *fmt, ...)
{
	char buf[2048];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n, m;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(buf, sizeof(buf),
	    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ infergate[%d] %s: ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, (int)getpid(),
	    level_names[level]);
	va_start(ap, fmt);
	m = vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	(void)!write(error_fd, buf, n);
}

int
ig_access_enabled(void)
{
	return access_fd != -1;
}

void
ig_access_write(const char *line, size_t len)
{
	char stackbuf[4096];
	char *p = stackbuf;

	if (access_fd == -1)
		return;
	if (len + 1 > sizeof(stackbuf) && (p = malloc(len + 1)) == NULL)
		return;
	memcpy(p, line, len);
	p[len] = '\n';
	(void)!write(access_fd, p, len + 1);
	if (p != stackbuf)
		free(p);
}
