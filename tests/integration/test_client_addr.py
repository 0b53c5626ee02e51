"""trusted_proxies: the client's address behind a load balancer, from
X-Forwarded-For, in the access log and as sent to the backend; ignored
from a peer that is not trusted."""
import json
import socket
import time

from conftest import access_lines, http, sim_stats
from test_proxy import CHAT, gw_config


def start(sim, gateway, workdir, trusted):
    s = sim()
    extra = ""
    if trusted is not None:
        extra = "trusted_proxies: [%s]\n" % ", ".join('"%s"' % t
                                                     for t in trusted)
    g = gateway(gw_config([s.port], workdir, extra=extra))
    return s, g


def post(g, rid, xff=None):
    headers = {"X-Request-Id": rid}
    if xff is not None:
        headers["X-Forwarded-For"] = xff
    st, _, body = http("POST", g.url + "/v1/chat/completions", CHAT,
                       headers=headers)
    assert st == 200, body


def seen(s, workdir, rid):
    """What the backend got as X-Forwarded-For, and the access log's
    client and peer, for the request RID."""
    xff = sim_stats(s)["last_request"]["headers"].get("x-forwarded-for")
    deadline = time.monotonic() + 2
    while True:
        lines = [l for l in access_lines(workdir) if l["request_id"] == rid]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return xff, lines[0]["client"], lines[0].get("peer")


def test_client_behind_trusted_proxies(sim, gateway, workdir):
    s, g = start(sim, gateway, workdir, ["127.0.0.0/8", "10.0.0.0/8"])
    # one hop: the address the proxy saw
    post(g, "r1", "203.0.113.7")
    assert seen(s, workdir, "r1") == ("203.0.113.7, 127.0.0.1",
                                      "203.0.113.7", "127.0.0.1")
    # trusted hops are skipped, from the right; ports are not addresses
    post(g, "r2", "198.51.100.1:4711, 10.1.2.3")
    assert seen(s, workdir, "r2") == ("198.51.100.1:4711, 10.1.2.3, 127.0.0.1",
                                      "198.51.100.1", "127.0.0.1")
    # what a client wrote left of the first untrusted hop is not believed
    post(g, "r3", "1.1.1.1, 203.0.113.9, 10.0.0.5")
    assert seen(s, workdir, "r3")[1] == "203.0.113.9"
    # every hop trusted: the leftmost
    post(g, "r4", "10.0.0.1, 10.0.0.2")
    assert seen(s, workdir, "r4")[1] == "10.0.0.1"
    # garbage ends the walk at the last trusted hop
    post(g, "r5", "unknown, 10.9.9.9")
    assert seen(s, workdir, "r5")[1] == "10.9.9.9"
    post(g, "r6", "not-an-address")
    assert seen(s, workdir, "r6") == ("not-an-address, 127.0.0.1",
                                      "127.0.0.1", None)
    # IPv6, bracketed with a port
    post(g, "r7", "[2001:db8::42]:443")
    assert seen(s, workdir, "r7")[1] == "2001:db8::42"
    # no header: the peer
    post(g, "r8")
    assert seen(s, workdir, "r8") == ("127.0.0.1", "127.0.0.1", None)


def test_several_forwarded_headers_are_one_list(sim, gateway, workdir):
    s, g = start(sim, gateway, workdir, ["127.0.0.1", "10.0.0.0/8"])
    body = json.dumps(CHAT).encode()
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
           b"X-Request-Id: two\r\nX-Forwarded-For: 192.0.2.10, 192.0.2.11\r\n"
           b"Content-Type: application/json\r\n"
           b"X-Forwarded-For: 10.0.0.9\r\nContent-Length: %d\r\n\r\n"
           % len(body)) + body
    with socket.create_connection(("127.0.0.1", g.port), timeout=5) as c:
        c.sendall(raw)
        assert c.recv(65536).startswith(b"HTTP/1.1 200")
    assert seen(s, workdir, "two") == (
        "192.0.2.10, 192.0.2.11, 10.0.0.9, 127.0.0.1", "192.0.2.11",
        "127.0.0.1")


def test_forwarded_for_from_untrusted_peer_ignored(sim, gateway, workdir):
    # the peer (127.0.0.1) is not in the list: anyone can write the header
    s, g = start(sim, gateway, workdir, ["10.0.0.0/8"])
    post(g, "u1", "203.0.113.7")
    assert seen(s, workdir, "u1") == ("127.0.0.1", "127.0.0.1", None)


def test_forwarded_for_ignored_without_trusted_proxies(sim, gateway, workdir):
    s, g = start(sim, gateway, workdir, None)
    post(g, "n1", "203.0.113.7")
    assert seen(s, workdir, "n1") == ("127.0.0.1", "127.0.0.1", None)


def test_forwarded_for_garbage_from_trusted_peer(sim, gateway, workdir):
    """Whatever a client behind the balancer puts in the header: every
    request is served, the client logged is an address the walk could
    verify, and the walk stops after 64 entries."""
    import ipaddress
    import random
    s, g = start(sim, gateway, workdir, ["127.0.0.0/8", "10.0.0.0/8"])
    rnd = random.Random(1207)
    pieces = ["10.0.0.1", "203.0.113.5", "::1", "[2001:db8::1]:80", "1.2.3.4:",
              ":", "[", "]", ",", " ", "\t", "256.1.1.1", "10.0.0.0/8",
              "x" * 70, "unknown", "::ffff:10.1.1.1", "1.2.3.4:99999", ""]
    for i in range(150):
        xff = "".join(rnd.choice(pieces) + rnd.choice([",", ", ", ""])
                      for _ in range(rnd.randint(1, 12)))
        post(g, "f%d" % i, xff)
    for l in access_lines(workdir):
        ipaddress.ip_address(l["client"])
    long_list = ", ".join(["10.0.0.%d" % (i % 250) for i in range(300)])
    post(g, "long", "203.0.113.1, " + long_list)
    assert seen(s, workdir, "long")[1].startswith("10.0.0.")
