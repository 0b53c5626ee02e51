/*
 * One JSON line per request. Ids, names, numbers and timings only: never
 * the prompt, the completion, or any header value that could carry a key.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <llhttp.h>

#include "infergate/log.h"
#include "gateway.h"

/* Appends the N bytes at S as a JSON string (quoted, escaped, at most 128
 * bytes of it); S NULL: null. */
static size_t
alog_strn(char *buf, size_t off, size_t cap, const char *s, size_t n)
{
	size_t i;

	if (s == NULL) {
		if (off + 4 < cap) {
			memcpy(buf + off, "null", 4);
			off += 4;
		}
		return off;
	}
	if (off + 1 < cap)
		buf[off++] = '"';
	for (i = 0; i < n && i < 128 && off + 7 < cap; i++) {
		unsigned char ch = s[i];

		if (ch == '"' || ch == '\\') {
			buf[off++] = '\\';
			buf[off++] = ch;
		} else if (ch < 0x20 || ch == 0x7f)
			off += snprintf(buf + off, cap - off, "\\u%04x", ch);
		else
			buf[off++] = ch;
	}
	if (off + 1 < cap)
		buf[off++] = '"';
	return off;
}

static size_t
alog_str(char *buf, size_t off, size_t cap, const char *s)
{
	return alog_strn(buf, off, cap, s, s != NULL ? strlen(s) : 0);
}

void
access_log_request(const struct ig_request *r)
{
	char buf[2048], ts[32];
	struct timespec now;
	struct tm tm;
	uint64_t end;
	size_t off;

	if (!ig_access_enabled())
		return;
	end = now_ns();
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	off = snprintf(buf, sizeof(buf), "{\"time\":\"%s.%03ldZ\",\"request_id\":",
	    ts, now.tv_nsec / 1000000);
	off = alog_str(buf, off, sizeof(buf), r->id[0] ? r->id : NULL);
	off += snprintf(buf + off, sizeof(buf) - off, ",\"client\":");
	off = alog_str(buf, off, sizeof(buf), r->forwarded_ip[0] != '\0' ?
	    r->forwarded_ip : r->client_ip);
	if (r->forwarded_ip[0] != '\0') {	/* behind a trusted proxy */
		off += snprintf(buf + off, sizeof(buf) - off, ",\"peer\":");
		off = alog_str(buf, off, sizeof(buf), r->client_ip);
	}
	off += snprintf(buf + off, sizeof(buf) - off, ",\"method\":");
	off = alog_str(buf, off, sizeof(buf), r->method_known ?
	    llhttp_method_name((llhttp_method_t)r->method) : NULL);
	off += snprintf(buf + off, sizeof(buf) - off, ",\"path\":");
	off = alog_str(buf, off, sizeof(buf), r->path);
	off += snprintf(buf + off, sizeof(buf) - off, ",\"model\":");
	if (r->model != NULL)
		off = alog_str(buf, off, sizeof(buf), r->model->conf->name);
	else
		off = alog_strn(buf, off, sizeof(buf), r->info.model,
		    r->info.model_len);
	off += snprintf(buf + off, sizeof(buf) - off, ",\"tenant\":");
	off = alog_str(buf, off, sizeof(buf), r->tenant ? r->tenant->id : NULL);
	off += snprintf(buf + off, sizeof(buf) - off, ",\"pool\":");
	off = alog_str(buf, off, sizeof(buf), r->model && r->model->pool ?
	    r->model->pool->conf->name : NULL);
	off += snprintf(buf + off, sizeof(buf) - off, ",\"backend\":");
	off = alog_str(buf, off, sizeof(buf), r->backend ? r->backend->name : NULL);
	off += snprintf(buf + off, sizeof(buf) - off,
	    ",\"status\":%d,\"bytes_in\":%llu,\"bytes_out\":%llu,"
	    "\"ttfb_ms\":%.3f,\"duration_ms\":%.3f,\"stream\":%s,\"attempts\":%u,"
	    "\"outcome\":", r->status,
	    (unsigned long long)r->bytes_in, (unsigned long long)r->bytes_out,
	    r->t_first_byte ? (r->t_first_byte - r->t_start) / 1e6 : 0.0,
	    (end - r->t_start) / 1e6, r->info.stream ? "true" : "false", r->attempts);
	off = alog_str(buf, off, sizeof(buf), r->outcome ? r->outcome : "ok");
	if (r->t_first_token != 0)	/* a stream's first body bytes */
		off += snprintf(buf + off, sizeof(buf) - off,
		    ",\"ttft_ms\":%.3f", (r->t_first_token - r->t_start) / 1e6);
	off += snprintf(buf + off, sizeof(buf) - off, ",\"error\":");
	off = alog_str(buf, off, sizeof(buf), r->error_code);
	if (r->pooled)
		off += snprintf(buf + off, sizeof(buf) - off,
		    ",\"priority\":\"%s\",\"queue_ms\":%.3f",
		    ig_priority_name(r->priority), r->queue_ns / 1e6);
	if (r->fell_back_from != NULL) {
		off += snprintf(buf + off, sizeof(buf) - off,
		    ",\"fallback_from\":");
		off = alog_str(buf, off, sizeof(buf),
		    r->fell_back_from->conf->name);
	}
	if (r->tenant != NULL) {
		off += snprintf(buf + off, sizeof(buf) - off,
		    ",\"tokens_in_est\":%llu,\"max_tokens\":%llu",
		    (unsigned long long)r->input_est,
		    (unsigned long long)r->max_tokens);
		if (r->usage_known || r->usage_estimated)
			off += snprintf(buf + off, sizeof(buf) - off,
			    ",\"tokens_in\":%llu,\"tokens_out\":%llu,"
			    "\"usage_estimated\":%s",
			    (unsigned long long)r->usage_prompt,
			    (unsigned long long)r->usage_completion,
			    r->usage_estimated ? "true" : "false");
		off += snprintf(buf + off, sizeof(buf) - off, ",\"refused_by\":");
		off = alog_str(buf, off, sizeof(buf), r->refused_by);
		off += snprintf(buf + off, sizeof(buf) - off,
		    ",\"would_refuse\":");
		off = alog_str(buf, off, sizeof(buf), r->would_refuse);
	}
	if (off + 2 < sizeof(buf))
		buf[off++] = '}';
	ig_access_write(buf, off);
}
