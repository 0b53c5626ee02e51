"""store.slices through the real gateway, against a real redis-server and
the simulator: a worker answers from its slice of a tenant's limits
without a round trip, several gateways hold the limits together, and what
a slice held goes back to Redis (at SIGTERM) or expires (after SIGKILL).
The policy cases themselves run with slices too, in test_admission.py
(its `env` fixture's third store)."""
import concurrent.futures as cf
import json
import signal
import socket
import time

import conftest
from conftest import http, sim_stats
from test_admission import auth, chat, config, err


def redis_cmd(port, *args):
    """One command over RESP; the reply as int, bytes, list or None."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(out)
        f = c.makefile("rb")

        def reply():
            line = f.readline().rstrip(b"\r\n")
            kind, rest = line[:1], line[1:]
            if kind == b":":
                return int(rest)
            if kind in (b"+", b"-"):
                return rest
            if kind == b"$":
                n = int(rest)
                if n < 0:
                    return None
                data = f.read(n + 2)[:-2]
                return data
            if kind == b"*":
                n = int(rest)
                return None if n < 0 else [reply() for _ in range(n)]
            raise AssertionError("bad reply %r" % line)
        return reply()


def tenant_numbers(port, tenant="acme"):
    """Requests and tokens in the minute, and live leases (slots
    included), as Redis holds them for TENANT."""
    r, t = redis_cmd(port, "HMGET", "ig:{%s}:s" % tenant, "R", "T")
    sec, usec = redis_cmd(port, "TIME")
    now = int(sec) * 1000 + int(usec) // 1000
    leases = redis_cmd(port, "ZCOUNT", "ig:{%s}:leases" % tenant,
                       "(%d" % now, "+inf")
    return int(r or 0), int(t or 0), leases


def slices_config(sim_port, redis_port, limits, **kw):
    return config(sim_port, "slices", limits=limits, redis_port=redis_port,
                  **kw)


BIG = ("      max_concurrent_requests: 1000\n"
       "      requests_per_minute: 1000000\n"
       "      tokens_per_minute: 1000000000\n"
       "      max_output_tokens: 64")


def test_slices_answer_while_redis_stalls(sim, gateway, redis):
    """Once a worker's slice holds a grant its requests do not wait for
    Redis: with redis-server stopped they are still served at once (each
    would otherwise wait out the 2 s store timeout and get a 503)."""
    s = sim()
    r = redis()
    g = gateway(slices_config(s.port, r.port, BIG, workers=1))
    for i in range(40):     # the demand that sizes the slice
        assert http("POST", g.url + "/v1/chat/completions", chat(),
                    headers=auth())[0] == 200
    m = conftest.metrics(g)
    assert m["infergate_store_slice_admissions_total"] > 0
    asks = m["infergate_store_slice_asks_total"]
    assert 0 < asks < 40
    r.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        for i in range(10):
            st, _, body = http("POST", g.url + "/v1/chat/completions", chat(),
                               headers=auth())
            assert st == 200, body
        assert time.monotonic() - t0 < 1.0
    finally:
        r.signal(signal.SIGCONT)
    m = conftest.metrics(g)
    assert m["infergate_store_fallbacks_total"] == 0


def test_slices_two_gateways_hold_rpm(sim, gateway, redis):
    """Two gateways of two workers each, 200 requests at once: never more
    than the limit between them. What a worker's slice held unused comes
    back within a period, and the rest of the limit is then taken to the
    last request; after both stop, Redis holds exactly the requests
    served."""
    s = sim()
    r = redis()
    cfg = slices_config(s.port, r.port,
                        "      requests_per_minute: 80\n"
                        "      max_output_tokens: 8")
    g1, g2 = gateway(cfg), gateway(cfg)

    def one(i):
        g = g1 if i % 2 else g2
        st, _, body = http("POST", g.url + "/v1/chat/completions",
                           chat(max_tokens=8), headers=auth(), timeout=20)
        if st == 429:
            assert err(body)["code"] == "rate_limit_exceeded"
        return st
    with cf.ThreadPoolExecutor(max_workers=40) as ex:
        codes = list(ex.map(one, range(200)))
    assert set(codes) <= {200, 429}
    served = codes.count(200)
    assert 40 <= served <= 80, served
    time.sleep(1.5)         # the slices' periods end: their rest goes back
    for i in range(100):
        if one(i) != 200:
            break
        served += 1
    assert served == 80
    for g in (g1, g2):
        g.signal(signal.SIGTERM)
        assert g.p.wait(10) == 0
    req, _, leases = tenant_numbers(r.port)
    assert req == 80
    assert leases == 0


def test_slices_two_gateways_hold_concurrency(sim, gateway, redis):
    s = sim(itl=20)
    r = redis()
    cfg = slices_config(s.port, r.port,
                        "      max_concurrent_requests: 24\n"
                        "      max_output_tokens: 64")
    g1, g2 = gateway(cfg), gateway(cfg)

    def one(i):
        g = g1 if i % 2 else g2
        return http("POST", g.url + "/v1/chat/completions",
                    chat(max_tokens=5), headers=auth(), timeout=20)[0]
    with cf.ThreadPoolExecutor(max_workers=60) as ex:
        codes = list(ex.map(one, range(300)))
    assert codes.count(200) >= 24
    assert set(codes) <= {200, 429}
    assert sim_stats(s)["max_active_by_tenant"]["acme"] <= 24
    m1, m2 = conftest.metrics(g1), conftest.metrics(g2)
    assert (m1["infergate_store_slice_admissions_total"] +
            m2["infergate_store_slice_admissions_total"]) > 0


def test_slices_sigterm_gives_back(sim, gateway, redis):
    """A gateway told to stop gives back what its slices held: Redis ends
    with the requests served and the tokens they used, and no slot."""
    s = sim()
    r = redis()
    g = gateway(slices_config(s.port, r.port, BIG))
    used = 0
    for i in range(60):
        st, _, body = http("POST", g.url + "/v1/chat/completions",
                           chat(max_tokens=16), headers=auth())
        assert st == 200
        used += json.loads(body)["usage"]["total_tokens"]
    assert conftest.metrics(g)["infergate_store_slice_admissions_total"] > 0
    req, tok, leases = tenant_numbers(r.port)
    assert req > 60 or tok > used or leases > 0     # slices hold some
    g.signal(signal.SIGTERM)
    assert g.p.wait(10) == 0
    req, tok, leases = tenant_numbers(r.port)
    assert (req, tok, leases) == (60, used, 0)


def test_slices_sigkill_slots_expire(sim, gateway, redis):
    """A gateway that dies holding slots leaks them no longer than
    lease_ttl, as it would its requests' leases."""
    s = sim(itl=50)
    r = redis()
    cfg = slices_config(s.port, r.port,
                        "      max_concurrent_requests: 64\n"
                        "      max_output_tokens: 100").replace(
        "  on_store_failure: closed\n",
        "  on_store_failure: closed\n  lease_ttl: 3s\n")
    g = gateway(cfg, extra_args=())

    def one(i):
        try:
            http("POST", g.url + "/v1/chat/completions", chat(max_tokens=40),
                 headers=auth(), timeout=10)
        except OSError:
            pass    # its gateway is killed under it
    ex = cf.ThreadPoolExecutor(max_workers=16)
    for i in range(32):
        ex.submit(one, i)
    deadline = time.monotonic() + 3
    while tenant_numbers(r.port)[2] < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    members = redis_cmd(r.port, "ZRANGE", "ig:{acme}:leases", "0", "-1")
    assert any(b":" in m for m in members)      # slots of a slice
    g.signal(signal.SIGKILL)
    g.killed = True
    ex.shutdown(wait=True)
    assert tenant_numbers(r.port)[2] > 0
    time.sleep(3.3)
    assert tenant_numbers(r.port)[2] == 0
