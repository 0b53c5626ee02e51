/*
 * Non-blocking socket I/O for both sides of the gateway, plain or TLS,
 * without bufferevents: what a proxy pays per request is mostly system
 * calls, and bufferevents spend four epoll_ctl and two ioctl(FIONREAD) per
 * proxied request on top of the reads and writes. Here:
 *
 *   - read interest is one persistent event added when the socket is set
 *     up and removed only while reading is paused (backpressure), so a
 *     request costs no epoll_ctl;
 *   - plain sockets are edge-triggered with EPOLLRDHUP: a recv() that
 *     returns less than it asked for has emptied the socket, so there is
 *     neither a read-until-EAGAIN nor the re-poll of every ready socket
 *     that level triggering costs at the next epoll_wait; a FIN is seen
 *     through RDHUP. TLS sockets stay level-triggered (a short SSL_read
 *     says nothing about the socket);
 *   - a read is one recv() into the worker's scratch buffer; the owner
 *     parses straight from it and only what it leaves is copied into the
 *     connection's input buffer (no FIONREAD);
 *   - output is appended during a callback and written once, with one
 *     writev(), at the end of the read or write event that produced it
 *     (worker_after_io), or by the flush event after the batch for the
 *     other callbacks (timers, the store); write interest is added only
 *     when the kernel did not take everything.
 *
 * Ownership: the owner embeds a struct ig_io and frees it with
 * io_release(). Handlers return 0, or -1 when the owner released the io
 * inside the handler; this file never touches an io after a handler said
 * -1, and calls a handler as the last thing it does otherwise. Errors met
 * while flushing are reported from io_flush_all, never from inside a call
 * the owner made.
 */
#include <errno.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "infergate/log.h"
#include "gateway.h"

/* io->flags */
#define IO_READING	0x0001	/* rev is added */
#define IO_WRITING	0x0002	/* wev is added */
#define IO_CONNECTING	0x0004	/* a connect() is in progress */
#define IO_DIRTY	0x0008	/* on the worker's flush list */
#define IO_REREAD	0x0010	/* call on_read from the flush event */
#define IO_PAUSED	0x0020	/* the owner paused reading */
#define IO_FAILED	0x0080	/* a write failed; reported once */
#define IO_SAW_EOF	0x0100	/* the peer closed its side */
#define IO_R_WANTS_W	0x0200	/* TLS: the read needs the socket writable */
#define IO_W_WANTS_R	0x0400	/* TLS: the write needs the socket readable */
#define IO_REPORTED	0x0800	/* the failure went to on_event */
#define IO_ET		0x1000	/* edge-triggered reads (plain sockets) */
#define IO_RDHUP	0x2000	/* the peer's FIN is waiting behind the data */
#define IO_RESUME	0x4000	/* read the socket from the flush event */

/* Output at or below this much after a flush counts as drained. */
#define IO_LOW_WATER	(16 * 1024)

static void	 io_read_cb(evutil_socket_t, short, void *);
static void	 io_write_cb(evutil_socket_t, short, void *);
static void	 io_write_event(struct ig_io *, short);
static void	 io_want_read(struct ig_io *);
static void	 io_want_write(struct ig_io *, bool);

/*
 * Sets up IO on the non-blocking socket FD (and SSL, or NULL) for worker
 * W. CONNECTING: a connect() is in progress and completion is reported
 * with IO_CONNECTED. Read interest starts at once. Returns 0, or -1 when
 * out of memory (FD and SSL are then still the caller's).
 */
int
io_init(struct ig_io *io, struct ig_worker *w, int fd, struct ssl_st *ssl,
    bool connecting, const struct io_handlers *h, void *arg)
{
	memset(io, 0, sizeof(*io));
	io->w = w;
	io->fd = fd;
	io->h = h;
	io->arg = arg;
	io->in = evbuffer_new();
	io->out = evbuffer_new();
	if (ssl == NULL)
		io->flags |= IO_ET;
	io->rev = event_new(w->base, fd, EV_READ | EV_PERSIST |
	    (ssl == NULL ? EV_ET | EV_CLOSED : 0), io_read_cb, io);
	io->wev = event_new(w->base, fd, EV_WRITE | EV_PERSIST, io_write_cb, io);
	if (io->in == NULL || io->out == NULL || io->rev == NULL ||
	    io->wev == NULL)
		goto fail;
	io->ssl = ssl;
	if (connecting) {
		io->flags |= IO_CONNECTING;
		io_want_write(io, true);
	}
	io_want_read(io);
	return 0;
fail:
	io->ssl = NULL;
	io->fd = -1;
	io_release(io);
	return -1;
}

static void
io_unlink_dirty(struct ig_io *io)
{
	if (!(io->flags & IO_DIRTY))
		return;
	LIST_REMOVE(io, dirty);
	io->flags &= ~(IO_DIRTY | IO_REREAD | IO_RESUME);
}

/* Closes the socket and frees what IO holds. Safe inside its handlers. */
void
io_release(struct ig_io *io)
{
	io_unlink_dirty(io);
	if (io->rev != NULL)
		event_free(io->rev);
	if (io->wev != NULL)
		event_free(io->wev);
	if (io->in != NULL)
		evbuffer_free(io->in);
	if (io->out != NULL)
		evbuffer_free(io->out);
	if (io->ssl != NULL) {
		/* A close_notify if it fits; never wait for the peer's. */
		if (!(io->flags & (IO_FAILED | IO_SAW_EOF)))
			SSL_shutdown(io->ssl);
		SSL_free(io->ssl);
	}
	if (io->fd != -1)
		close(io->fd);
	io->rev = io->wev = NULL;
	io->in = io->out = NULL;
	io->ssl = NULL;
	io->fd = -1;
}

static void
io_want_read(struct ig_io *io)
{
	bool want = !(io->flags & (IO_PAUSED | IO_SAW_EOF | IO_FAILED)) ||
	    (io->flags & IO_W_WANTS_R);

	if (want && !(io->flags & IO_READING)) {
		event_add(io->rev, NULL);
		io->flags |= IO_READING;
	} else if (!want && (io->flags & IO_READING)) {
		event_del(io->rev);
		io->flags &= ~IO_READING;
	}
}

static void
io_want_write(struct ig_io *io, bool want)
{
	struct timeval tv = { io->wtimeout_ms / 1000,
	    (io->wtimeout_ms % 1000) * 1000 };

	if (want && !(io->flags & IO_WRITING)) {
		event_add(io->wev, io->wtimeout_ms ? &tv : NULL);
		io->flags |= IO_WRITING;
	} else if (!want && (io->flags & IO_WRITING)) {
		event_del(io->wev);
		io->flags &= ~IO_WRITING;
	}
}

static void	 io_mark_dirty(struct ig_io *);

/*
 * Reading on or off (backpressure, pipelining). An edge-triggered socket
 * that was paused is read again from the flush event when resumed: what
 * arrived meanwhile raised no edge we saw (and a pause and a resume in one
 * loop iteration cancel out in libevent's changelist, so epoll is never
 * asked again either).
 */
void
io_pause_read(struct ig_io *io, bool paused)
{
	if (paused)
		io->flags |= IO_PAUSED;
	else if (io->flags & IO_PAUSED) {
		io->flags &= ~IO_PAUSED;
		if ((io->flags & IO_ET) &&
		    !(io->flags & (IO_SAW_EOF | IO_FAILED | IO_REPORTED))) {
			io_mark_dirty(io);
			io->flags |= IO_RESUME;
		}
	}
	io_want_read(io);
}

/* Puts IO on its worker's flush list and makes sure the flush runs. */
static void
io_mark_dirty(struct ig_io *io)
{
	struct ig_worker *w = io->w;

	if (io->flags & IO_DIRTY)
		return;
	io->flags |= IO_DIRTY;
	LIST_INSERT_HEAD(&w->dirty, io, dirty);
	if (!w->flush_active) {
		w->flush_active = true;
		event_active(w->flush, EV_WRITE, 0);
	}
}

/*
 * What was appended to io->out goes out at the end of the current event
 * (or of the batch, from a callback that is not an I/O event). An owner
 * with an on_drain hears from the flush even with nothing to write (a
 * connection closing once its output is out).
 */
void
io_schedule_flush(struct ig_io *io)
{
	if (evbuffer_get_length(io->out) > 0 || io->h->on_drain != NULL)
		io_mark_dirty(io);
}

/* on_read runs again from the flush event (input left in io->in). */
void
io_schedule_read(struct ig_io *io)
{
	io_mark_dirty(io);
	io->flags |= IO_REREAD;
}

bool
io_output_pending(const struct ig_io *io)
{
	return evbuffer_get_length(io->out) > 0;
}

static bool
io_retry_errno(int e)
{
	return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}

/* TLS: one SSL_write of the head of io->out. 1 wrote, 0 blocked, -1 failed. */
static int
io_ssl_write(struct ig_io *io)
{
	size_t len = evbuffer_get_length(io->out);
	unsigned char *p;
	int n, e;

	/* A write that blocked must be repeated with the same length. */
	if (io->ssl_wlen != 0)
		len = io->ssl_wlen;
	else if (len > 16384)
		len = 16384;
	if ((p = evbuffer_pullup(io->out, len)) == NULL)
		return -1;
	ERR_clear_error();
	n = SSL_write(io->ssl, p, (int)len);
	if (n > 0) {
		io->ssl_wlen = 0;
		io->flags &= ~IO_W_WANTS_R;
		evbuffer_drain(io->out, n);
		return 1;
	}
	io->ssl_wlen = len;
	e = SSL_get_error(io->ssl, n);
	if (e == SSL_ERROR_WANT_WRITE)
		return 0;
	if (e == SSL_ERROR_WANT_READ) {
		io->flags |= IO_W_WANTS_R;
		io_want_read(io);
		return 0;
	}
	return -1;
}

/*
 * Writes as much of io->out as the kernel takes. Returns 0 (all written
 * or blocked: write interest is armed) or -1 (the connection failed;
 * IO_FAILED is set). Calls no handler.
 */
static int
io_write_out(struct ig_io *io)
{
	int rc;

	if (io->flags & IO_FAILED)
		return -1;
	if (io->flags & IO_CONNECTING)
		return 0;	/* sent once connected */
	while (evbuffer_get_length(io->out) > 0) {
		if (io->ssl != NULL) {
			if ((rc = io_ssl_write(io)) == -1)
				goto fail;
			if (rc == 0)
				break;
			continue;
		}
		if (evbuffer_write(io->out, io->fd) == -1) {
			if (io_retry_errno(errno))
				break;
			goto fail;
		}
	}
	io_want_write(io, evbuffer_get_length(io->out) > 0 &&
	    !(io->flags & IO_W_WANTS_R));
	return 0;
fail:
	io->flags |= IO_FAILED;
	io_want_write(io, false);
	return -1;
}

/*
 * Reports a failure or the end of IO to its owner, once. Returns what the
 * handler returned.
 */
static int
io_report(struct ig_io *io, int what)
{
	if (io->flags & IO_REPORTED)
		return 0;
	io->flags |= IO_REPORTED;
	io_want_write(io, false);
	io->flags |= IO_PAUSED;
	io_want_read(io);
	return io->h->on_event(io, io->arg, what);
}

/*
 * After a flush: a failure, the drain notification, or a deferred read.
 * The last thing done with IO.
 */
static void	 io_do_read(struct ig_io *);

static void
io_after_flush(struct ig_io *io, bool reread, bool resume)
{
	if (io->flags & IO_FAILED) {
		io_report(io, IO_ERROR);
		return;
	}
	if (io->h->on_drain != NULL &&
	    evbuffer_get_length(io->out) <= IO_LOW_WATER) {
		if (io->h->on_drain(io, io->arg) == -1)
			return;
	}
	if (reread && io->h->on_read(io, io->arg, NULL, 0) == -1)
		return;
	if (resume && !(io->flags & IO_PAUSED))
		io_do_read(io);
}

/*
 * The worker's flush event: runs once the events of the current batch
 * have been handled (it is made active after them, at the same
 * priority), writes every connection that has output, and runs the
 * deferred reads.
 */
void
io_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	io_flush_all(arg);
}

/*
 * Writes every connection of W that has output and runs the deferred
 * reads. Called from the top of an event callback only: by the flush
 * event, and at the end of every read and write event (worker_after_io),
 * so that what one event produced leaves at once rather than after the
 * rest of the batch (the events of one epoll_wait).
 */
void
io_flush_all(struct ig_worker *w)
{
	struct ig_io *io;
	bool reread, resume;

	w->flush_active = false;
	while ((io = LIST_FIRST(&w->dirty)) != NULL) {
		reread = (io->flags & IO_REREAD) != 0;
		resume = (io->flags & IO_RESUME) != 0;
		io_unlink_dirty(io);
		io_write_out(io);
		io_after_flush(io, reread, resume);
	}
}

/* Plain: one recv() into the scratch buffer. Bytes, 0 at EOF, -1 error. */
static ssize_t
io_recv(struct ig_io *io, char *buf, size_t len, int *blocked)
{
	ssize_t n;
	int e;

	*blocked = 0;
	if (io->ssl == NULL) {
		n = recv(io->fd, buf, len, 0);
		if (n == -1 && io_retry_errno(errno)) {
			*blocked = 1;
			return -1;
		}
		return n;
	}
	ERR_clear_error();
	n = SSL_read(io->ssl, buf, (int)len);
	if (n > 0) {
		io->flags &= ~IO_R_WANTS_W;
		return n;
	}
	e = SSL_get_error(io->ssl, (int)n);
	if (e == SSL_ERROR_WANT_READ) {
		*blocked = 1;
		return -1;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		io->flags |= IO_R_WANTS_W;
		io_want_write(io, true);
		*blocked = 1;
		return -1;
	}
	if (e == SSL_ERROR_ZERO_RETURN ||
	    (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0))
		return 0;	/* close_notify, or a dirty close: both EOF */
	return -1;
}

/*
 * One read, handed to on_read straight from the scratch buffer when
 * nothing was waiting in io->in; what on_read leaves is kept in io->in.
 * Returns 1 when an edge-triggered socket may hold more (the read filled
 * the buffer, or a FIN waits behind the data), 0 when done, -1 when IO
 * was reported to its owner or released (not to be touched).
 */
static int
io_read_once(struct ig_io *io)
{
	struct ig_worker *w = io->w;
	ssize_t n;
	size_t used;
	int blocked;

	n = io_recv(io, w->rbuf, w->rbuf_size, &blocked);
	if (n == -1 && blocked)
		return 0;
	if (n <= 0) {
		if (n == 0)
			io->flags |= IO_SAW_EOF;
		io_report(io, n == 0 ? IO_EOF : IO_ERROR);
		return -1;
	}
	if (evbuffer_get_length(io->in) > 0) {
		if (evbuffer_add(io->in, w->rbuf, n) == -1) {
			io_report(io, IO_ERROR);
			return -1;
		}
		if (io->h->on_read(io, io->arg, NULL, 0) == -1)
			return -1;
	} else {
		/* The owner parses from the scratch buffer; keep what it
		 * leaves. */
		io->rused = 0;
		if (io->h->on_read(io, io->arg, w->rbuf, (size_t)n) == -1)
			return -1;
		used = io->rused;
		if (used < (size_t)n && evbuffer_add(io->in, w->rbuf + used,
		    n - used) == -1) {
			io_report(io, IO_ERROR);
			return -1;
		}
	}
	if (io->ssl != NULL && SSL_pending(io->ssl) > 0 &&
	    !(io->flags & IO_PAUSED))
		io_schedule_read(io);	/* decrypted bytes wait in OpenSSL */
	if (!(io->flags & IO_ET) ||
	    (io->flags & (IO_PAUSED | IO_SAW_EOF | IO_FAILED | IO_REPORTED)))
		return 0;
	return (size_t)n == w->rbuf_size || (io->flags & IO_RDHUP) ? 1 : 0;
}

/*
 * Readable: read until the socket is empty (edge-triggered: a short read
 * says so) or once (level-triggered, TLS).
 */
static void
io_do_read(struct ig_io *io)
{
	if (io->flags & IO_W_WANTS_R) {		/* TLS write waiting on a read */
		if (io_write_out(io) == -1) {
			io_report(io, IO_ERROR);
			return;
		}
		if (io->flags & (IO_PAUSED | IO_SAW_EOF))
			return;
	}
	while (io_read_once(io) == 1)
		;
}

/*
 * Called by on_read with the bytes it parsed out of DATA (the scratch
 * buffer it was given).
 */
void
io_consumed(struct ig_io *io, size_t n)
{
	io->rused += n;
}

static void
io_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ig_io *io = arg;
	struct ig_worker *w = io->w;

	if (what & EV_CLOSED)
		io->flags |= IO_RDHUP;
	if ((io->flags & IO_PAUSED) && !(io->flags & IO_W_WANTS_R))
		return;
	now_hold();
	io_do_read(io);
	worker_after_io(w);
	now_release();
}

/* The connect() in progress finished: 0 connected, -1 failed. */
static int
io_connected(struct ig_io *io)
{
	int err = 0;
	socklen_t len = sizeof(err);

	io->flags &= ~IO_CONNECTING;
	if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 ||
	    err != 0)
		return -1;
	return 0;
}

static void
io_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ig_io *io = arg;
	struct ig_worker *w = io->w;

	now_hold();
	io_write_event(io, what);
	worker_after_io(w);
	now_release();
}

/* Writable (or the write timeout). */
static void
io_write_event(struct ig_io *io, short what)
{

	if (what & EV_TIMEOUT) {
		io_report(io, IO_TIMEOUT);
		return;
	}
	if (io->flags & IO_CONNECTING) {
		if (io_connected(io) == -1) {
			io_report(io, IO_CONNECT_FAILED);
			return;
		}
		if (io->h->on_event(io, io->arg, IO_CONNECTED) == -1)
			return;
	}
	if (io->flags & IO_R_WANTS_W) {		/* TLS read waiting on a write */
		io->flags &= ~IO_R_WANTS_W;
		io_want_write(io, evbuffer_get_length(io->out) > 0);
		io_do_read(io);
		return;
	}
	io_write_out(io);
	io_after_flush(io, false, false);
}
