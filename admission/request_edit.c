/*
 * The body edits the gateway makes before it forwards a request (the
 * upstream model name, the output cap, stream usage), spliced into the
 * received bytes instead of re-serializing the body: each edit replaces
 * one value where it stands, or adds a member before a closing brace.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "infergate/admission.h"
#include "json_scan.h"

/* Body bytes [off, off + len) replaced by up to three pieces. */
struct edit_op {
	size_t		 off;
	size_t		 len;
	struct ig_splice rep[3];
	size_t		 nrep;
};

struct edit {
	const char	*body;
	const struct ig_request_info *req;
	struct ig_request_body *out;
	struct edit_op	 op[5];		/* model, two caps, usage, the end */
	size_t		 nop;
	struct edit_op	*end;		/* members added to the body */
};

static struct edit_op *
edit_op(struct edit *e, size_t off, size_t len)
{
	struct edit_op	*op = &e->op[e->nop++];

	op->off = off;
	op->len = len;
	op->nrep = 0;
	return op;
}

static void
edit_rep(struct edit_op *op, const char *p, size_t len)
{
	op->rep[op->nrep].p = p;
	op->rep[op->nrep].len = len;
	op->nrep++;
}

/* N bytes of OUT->buf, or NULL. */
static char *
edit_alloc(struct edit *e, size_t n)
{
	struct ig_request_body *out = e->out;
	char		*p;

	if (n > sizeof(out->buf) - out->used)
		return NULL;
	p = out->buf + out->used;
	out->used += n;
	return p;
}

/* Adds a member (TEXT, starting with its ',') at the end of the body. */
static void
edit_add(struct edit *e, const char *text, size_t len)
{
	if (e->end == NULL)
		e->end = edit_op(e, e->req->close, 0);
	/* The first member added to {} has no comma before it. */
	if (e->end->nrep == 0 && e->req->empty)
		edit_rep(e->end, text + 1, len - 1);
	else
		edit_rep(e->end, text, len);
}

/*
 * NAME as a JSON string into OP: quotes around the name itself when it
 * needs no escape, else escaped into OUT->buf (as jansson's dump escapes).
 */
static int
edit_model(struct edit *e, struct edit_op *op, const char *name, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	char		*q, *p;
	size_t		 i, n = 2;
	bool		 ascii = true;

	for (i = 0; i < len; i++) {
		unsigned char	 c = (unsigned char)name[i];

		n += c == '"' || c == '\\' ? 2 : c < 0x20 ? 6 : 1;
		ascii = ascii && c < 0x80;
	}
	if (!ascii && !json_utf8_valid(name, len))
		return -1;
	if (n == len + 2) {
		edit_rep(op, "\"", 1);
		edit_rep(op, name, len);
		edit_rep(op, "\"", 1);
		return 0;
	}
	if ((p = q = edit_alloc(e, n)) == NULL)
		return -1;
	*q++ = '"';
	for (i = 0; i < len; i++) {
		unsigned char	 c = (unsigned char)name[i];

		if (c == '"' || c == '\\') {
			*q++ = '\\';
			*q++ = (char)c;
		} else if (c < 0x20) {
			memcpy(q, "\\u00", 4);
			q[4] = hex[c >> 4];
			q[5] = hex[c & 0xF];
			q += 6;
		} else
			*q++ = (char)c;
	}
	*q = '"';
	edit_rep(op, p, n);
	return 0;
}

static bool
edit_is_null(const struct edit *e, struct ig_span sp)
{
	return sp.len == 0 || e->body[sp.off] == 'n';
}

/*
 * The output cap, where ig_request_set_max_tokens() put it: into
 * max_completion_tokens when the client capped with it (and into a
 * non-null max_tokens beside it), else into max_tokens, added if absent.
 */
static int
edit_max_tokens(struct edit *e, uint64_t max_tokens)
{
	static const char add[] = ",\"max_tokens\":";
	const struct ig_request_info *req = e->req;
	struct edit_op	*op;
	char		*num;
	int		 n;

	if ((num = edit_alloc(e, 21)) == NULL)
		return -1;
	/* json_integer((json_int_t)max_tokens), as before */
	n = snprintf(num, 21, "%" PRId64, (int64_t)max_tokens);
	if (req->max_field == IG_MAX_COMPLETION_TOKENS) {
		op = edit_op(e, req->at_max_completion_tokens.off,
		    req->at_max_completion_tokens.len);
		edit_rep(op, num, (size_t)n);
		if (edit_is_null(e, req->at_max_tokens))
			return 0;
	}
	if (req->at_max_tokens.len > 0) {
		op = edit_op(e, req->at_max_tokens.off, req->at_max_tokens.len);
		edit_rep(op, num, (size_t)n);
		return 0;
	}
	edit_add(e, add, sizeof(add) - 1);
	edit_rep(e->end, num, (size_t)n);
	return 0;
}

/*
 * "include_usage": true, as ig_request_force_usage() merged it: into the
 * client's stream_options object (its value replaced, or the member added
 * before the object's '}'), else stream_options replaced or added.
 */
static void
edit_usage(struct edit *e)
{
	static const char so[] = ",\"stream_options\":{\"include_usage\":true}";
	static const char obj[] = "{\"include_usage\":true}";
	static const char iu[] = ",\"include_usage\":true";
	const struct ig_request_info *req = e->req;
	struct ig_span	 sp = req->at_stream_options;
	struct edit_op	*op;

	if (sp.len == 0) {
		edit_add(e, so, sizeof(so) - 1);
		return;
	}
	if (e->body[sp.off] != '{') {
		op = edit_op(e, sp.off, sp.len);
		edit_rep(op, obj, sizeof(obj) - 1);
		return;
	}
	if (req->at_include_usage.len > 0) {
		op = edit_op(e, req->at_include_usage.off,
		    req->at_include_usage.len);
		edit_rep(op, "true", 4);
		return;
	}
	op = edit_op(e, sp.off + sp.len - 1, 0);
	if (req->stream_options_empty)
		edit_rep(op, iu + 1, sizeof(iu) - 2);
	else
		edit_rep(op, iu, sizeof(iu) - 1);
}

static void
edit_piece(struct ig_request_body *out, const char *p, size_t len)
{
	if (len == 0)
		return;
	out->piece[out->npieces].p = p;
	out->piece[out->npieces].len = len;
	out->npieces++;
	out->len += len;
}

/* The ops in body order, the body's bytes between them. */
static void
edit_emit(struct edit *e, size_t len)
{
	struct edit_op	 tmp;
	size_t		 i, j, cur = 0;

	for (i = 1; i < e->nop; i++)
		for (j = i; j > 0 && e->op[j - 1].off > e->op[j].off; j--) {
			tmp = e->op[j];
			e->op[j] = e->op[j - 1];
			e->op[j - 1] = tmp;
		}
	for (i = 0; i < e->nop; i++) {
		struct edit_op	*op = &e->op[i];

		edit_piece(e->out, e->body + cur, op->off - cur);
		for (j = 0; j < op->nrep; j++)
			edit_piece(e->out, op->rep[j].p, op->rep[j].len);
		cur = op->off + op->len;
	}
	edit_piece(e->out, e->body + cur, len - cur);
}

int
ig_request_edit(const char *body, size_t len,
    const struct ig_request_info *req, const struct ig_request_edits *edits,
    struct ig_request_body *out)
{
	struct edit	 e;
	bool		 emb = req->endpoint == IG_EP_EMBEDDINGS;

	/* not zeroed whole: the ops are filled as they are taken */
	e.body = body;
	e.req = req;
	e.out = out;
	e.nop = 0;
	e.end = NULL;

	out->npieces = 0;
	out->len = 0;
	out->used = 0;
	if (edits->model != NULL && edit_model(&e, edit_op(&e,
	    req->at_model.off, req->at_model.len), edits->model,
	    edits->model_len) == -1)
		return -1;
	if (edits->set_max_tokens && !emb &&
	    edit_max_tokens(&e, edits->max_tokens) == -1)
		return -1;
	if (edits->force_usage && req->stream && !emb)
		edit_usage(&e);
	edit_emit(&e, len);
	return 0;
}
