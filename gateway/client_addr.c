/*
 * The client's address behind trusted proxies (trusted_proxies), as
 * nginx's realip module with real_ip_recursive and Envoy's trusted XFF
 * addresses decide it.
 *
 * A request whose peer is in trusted_proxies: its X-Forwarded-For headers
 * (all of them, in order, as one comma-separated list) are read from the
 * right, trusted addresses skipped; the first address that is not trusted
 * is the client. When every address is trusted, the leftmost is; an entry
 * that is not an address ("unknown", a name, garbage) ends the walk, and
 * the last trusted hop read is the client. The backend gets the list as
 * received with the peer appended. A peer that is not trusted: its
 * X-Forwarded-For is ignored (anyone can write one) and replaced by the
 * peer, as without trusted_proxies.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <string.h>

#include "gateway.h"

/* A bound on the hops read (a header is bounded by max_header_bytes). */
#define CLIENT_ADDR_HOPS	64

struct client_addr {
	int		 family;
	uint8_t		 addr[16];
};

/* An IPv4-mapped IPv6 address (a dual-stack listener's) as IPv4. */
static void
client_addr_unmap(struct client_addr *a)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	    0xff, 0xff };

	if (a->family == AF_INET6 && memcmp(a->addr, mapped, 12) == 0) {
		memmove(a->addr, a->addr + 12, 4);
		a->family = AF_INET;
	}
}

bool
client_addr_in(const struct ig_cidr *cidrs, size_t n, int family,
    const void *addr)
{
	const uint8_t	*p = addr;
	size_t		 i;
	unsigned	 full, rest;

	for (i = 0; i < n; i++) {
		const struct ig_cidr *c = &cidrs[i];

		if (c->family != family)
			continue;
		full = c->bits / 8;
		rest = c->bits % 8;
		if (memcmp(c->addr, p, full) != 0)
			continue;
		if (rest == 0 || ((p[full] ^ c->addr[full]) &
		    (uint8_t)(0xff << (8 - rest))) == 0)
			return true;
	}
	return false;
}

static bool
client_addr_trusted(const struct ig_config *conf, const struct client_addr *a)
{
	return client_addr_in(conf->trusted_proxies, conf->ntrusted_proxies,
	    a->family, a->addr);
}

/*
 * One entry of X-Forwarded-For (S, LEN, blanks trimmed): an address, with
 * a port ("192.0.2.1:4711", "[2001:db8::1]:4711") or without. -1 when it
 * is none.
 */
static int
client_addr_parse(const char *s, size_t len, struct client_addr *a,
    char text[48])
{
	char		 buf[64];
	uint16_t	 port;

	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (ig_parse_nameserver(buf, &a->family, a->addr, &port) == -1)
		return -1;
	client_addr_unmap(a);
	return inet_ntop(a->family, a->addr, text, 48) == NULL ? -1 : 0;
}

/*
 * The next entry of the list from its end: the one that ends before *END
 * in the value of header *H (going to the headers before it when a value
 * is done). Returns false when there is none left.
 */
static bool
client_addr_prev(const struct ig_request *r, size_t *h, size_t *end,
    const char **s, size_t *len)
{
	const struct ig_header *hd;
	size_t		 i, e;

	for (;;) {
		hd = &r->headers[*h];
		e = *end;
		while (e > 0 && (hd->value[e - 1] == ' ' ||
		    hd->value[e - 1] == '\t' || hd->value[e - 1] == ','))
			e--;
		if (e > 0) {
			for (i = e; i > 0 && hd->value[i - 1] != ','; i--)
				;
			*end = i;
			while (i < e && (hd->value[i] == ' ' ||
			    hd->value[i] == '\t'))
				i++;
			*s = hd->value + i;
			*len = e - i;
			return true;
		}
		do {		/* the X-Forwarded-For before this one */
			if (*h == 0)
				return false;
			(*h)--;
		} while (!client_addr_is_xff(&r->headers[*h]));
		*end = r->headers[*h].valuelen;
	}
}

bool
client_addr_is_xff(const struct ig_header *h)
{
	return h->namelen == 15 && gw_caseeq(h->name, "x-forwarded-for", 15);
}

void
client_addr_resolve(struct ig_request *r)
{
	const struct ig_config *conf = r->snap->conf;
	struct client_addr a;
	const char	*s;
	size_t		 h, end, len, hops = 0;
	char		 text[48];

	if (conf->ntrusted_proxies == 0 || r->conn == NULL)
		return;
	if (client_addr_parse(r->client_ip, strlen(r->client_ip), &a,
	    text) == -1 || !client_addr_trusted(conf, &a))
		return;
	r->xff_trusted = true;
	for (h = r->nheaders; h > 0 && !client_addr_is_xff(&r->headers[h - 1]);
	    h--)
		;
	if (h-- == 0)
		return;
	end = r->headers[h].valuelen;
	while (hops++ < CLIENT_ADDR_HOPS &&
	    client_addr_prev(r, &h, &end, &s, &len)) {
		if (client_addr_parse(s, len, &a, text) == -1)
			return;		/* the last trusted hop stays */
		memcpy(r->forwarded_ip, text, sizeof(r->forwarded_ip));
		if (!client_addr_trusted(conf, &a))
			return;
	}
}
