"""Hostile and malformed requests: each gets its exact status, never a crash,
and the gateway keeps serving."""
import json
import os
import socket
import time

import pytest

from conftest import VALGRIND, http, metrics, sim_stats
from rawhttp import Conn, request
from test_proxy import gw_config, CHAT

GOOD = json.dumps(CHAT).encode()


def post(headers, body=b"", path="/v1/chat/completions", version="1.1"):
    return ("POST %s HTTP/%s\r\n" % (path, version)).encode() + \
        headers.encode() + b"\r\n" + body


# (name, raw request bytes, expected status, connection must close)
CASES = [
    ("cl_and_te", post("Host: x\r\nContent-Length: 4\r\n"
                       "Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400, True),
    ("duplicate_cl", post("Host: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n",
                          b"{}"), 400, True),
    ("invalid_cl", post("Host: x\r\nContent-Length: 1x\r\n", b"{}"), 400, True),
    ("negative_cl", post("Host: x\r\nContent-Length: -5\r\n", b"{}"), 400, True),
    ("te_gzip_chunked", post("Host: x\r\nTransfer-Encoding: gzip, chunked\r\n",
                             b"0\r\n\r\n"), 400, True),
    ("te_chunked_identity", post("Host: x\r\nTransfer-Encoding: chunked, identity\r\n",
                                 b"0\r\n\r\n"), 400, True),
    ("te_identity", post("Host: x\r\nTransfer-Encoding: identity\r\n", b""), 400, True),
    ("te_twice", post("Host: x\r\nTransfer-Encoding: chunked\r\n"
                      "Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400, True),
    ("bad_chunk_size", post("Host: x\r\nTransfer-Encoding: chunked\r\n",
                            b"zz\r\n{}\r\n0\r\n\r\n"), 400, True),
    ("bare_lf", b"POST /v1/chat/completions HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}",
     400, True),
    ("bare_cr", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\rContent-Length: 2\r\n\r\n{}",
     400, True),
    ("obs_fold", post("Host: x\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n", b"{}"), 400, True),
    ("space_before_colon", post("Host: x\r\nContent-Length : 2\r\n", b"{}"), 400, True),
    ("nul_in_header", post("Host: x\r\nX-A: a\x00b\r\nContent-Length: 2\r\n", b"{}"),
     400, True),
    ("empty_header_name", post("Host: x\r\n: v\r\nContent-Length: 2\r\n", b"{}"),
     400, True),
    ("rtsp_request_line", post("Host: x\r\nContent-Length: 2\r\n", b"{}")
     .replace(b"HTTP/1.1", b"RTSP/1.0"), 400, True),
    ("missing_host", post("Content-Length: %d\r\n" % len(GOOD), GOOD), 400, True),
    ("two_hosts", post("Host: x\r\nHost: y\r\nContent-Length: %d\r\n" % len(GOOD), GOOD),
     400, True),
    ("garbage_request_line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
     400, True),
    ("bad_version", b"GET /v1/models HTTP/9.7\r\nHost: x\r\n\r\n", 505, True),
    ("http2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, True),
    ("header_too_large", post("Host: x\r\nX-Big: %s\r\n" % ("a" * 20000), b""), 431, True),
    ("too_many_headers", post("Host: x\r\n" + "".join("X-H%d: v\r\n" % i for i in range(150)),
                              b""), 431, True),
    ("body_too_large_cl", post("Host: x\r\nContent-Length: 100000\r\n", b"{"), 413, True),
    ("body_too_large_chunked", post("Host: x\r\nTransfer-Encoding: chunked\r\n",
                                    b"%x\r\n" % 70000 + b"a" * 70000 + b"\r\n0\r\n\r\n"),
     413, True),
    ("expect_unknown", post("Host: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n", b"{}"),
     417, True),
    ("invalid_json", request("POST", "/v1/chat/completions", "{model: m"), 400, False),
    ("not_an_object", request("POST", "/v1/chat/completions", "[1,2]"), 400, False),
    ("deep_nesting", request("POST", "/v1/chat/completions", "[" * 30000 + "]" * 30000),
     400, False),
    ("non_utf8", request("POST", "/v1/chat/completions",
                         b'{"model":"m","messages":[{"role":"user","content":"\xff\xfe"}]}'),
     400, False),
    ("empty_body", request("POST", "/v1/chat/completions", b""), 400, False),
    ("missing_model", request("POST", "/v1/chat/completions", {"messages": []}), 400, False),
    ("model_not_string", request("POST", "/v1/chat/completions", {"model": 7}), 400, False),
    ("stream_not_bool", request("POST", "/v1/chat/completions",
                                {"model": "m", "stream": "yes"}), 400, False),
    ("unknown_model", request("POST", "/v1/chat/completions", {"model": "nope"}), 404, False),
    ("unknown_path", request("GET", "/v2/whatever"), 404, False),
    ("get_on_post_endpoint", request("GET", "/v1/chat/completions"), 405, False),
    ("delete_models", request("DELETE", "/v1/models"), 405, False),
    ("put_completions", request("PUT", "/v1/completions", GOOD), 405, False),
    ("duplicate_json_keys", request("POST", "/v1/chat/completions",
                                    '{"model":"m","model":"x"}'), 400, False),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    # module-scoped processes: one gateway for the whole table
    import conftest
    workdir = str(tmp_path_factory.mktemp("hostile"))
    procs = []
    s_port = conftest.free_port()
    s = conftest.Proc([conftest.SIM, "--port", str(s_port)], "sim", workdir)
    procs.append(s)
    conftest.wait_port(s_port, proc=s.p)
    s.port, s.url = s_port, "http://127.0.0.1:%d" % s_port
    port, admin = conftest.free_port(), conftest.free_port()
    path = workdir + "/gw.yaml"
    with open(path, "w") as f:
        f.write(gw_config([s_port], workdir).replace("{port}", str(port))
                .replace("{admin_port}", str(admin)))
    argv = [conftest.GATEWAY, "-c", path]
    if conftest.VALGRIND:
        argv = ["valgrind", "--quiet", "--error-exitcode=99",
                "--leak-check=full", "--errors-for-leak-kinds=definite"] + argv
    g = conftest.Proc(argv, "gw", workdir)
    procs.append(g)
    conftest.wait_port(port, timeout=30, proc=g.p)
    g.port, g.url = port, "http://127.0.0.1:%d" % port
    g.admin_url = "http://127.0.0.1:%d" % admin
    yield s, g
    rc = g.stop()
    s.stop()
    assert rc in (0, None), g.output()
    assert g.sanitizer_report() is None, g.output()


@pytest.mark.parametrize("name,raw,status,closes", CASES, ids=[c[0] for c in CASES])
def test_hostile(env, name, raw, status, closes):
    s, g = env
    c = Conn(g.port)
    c.send(raw)
    r = c.read_response()
    assert r.status == status, (name, r.status, r.body)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if status == 405:
        assert r.header("allow")
    if name in ("missing_model", "model_not_string"):
        assert err["param"] == "model"
    if name == "stream_not_bool":
        assert err["param"] == "stream"
    if name == "unknown_model":
        assert err["code"] == "model_not_found"
    if closes:
        assert r.header("connection") == "close"
        assert c.closed()
    else:
        # a well-framed refusal keeps the connection: the next request works
        c.send(request("POST", "/v1/chat/completions", CHAT))
        assert c.read_response().status == 200
    c.close()
    assert http("POST", g.url + "/v1/chat/completions", CHAT)[0] == 200


def test_header_dribbled_one_byte_a_second(env):
    s, g = env
    c = Conn(g.port, timeout=5)
    t0 = time.monotonic()
    raw = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
    got = None
    for b in raw:
        try:
            c.send(bytes([b]))
        except OSError:
            break
        time.sleep(0.25)
        if time.monotonic() - t0 > 3:
            break
    r = c.read_response()
    assert r.status == 408
    assert time.monotonic() - t0 < 4
    assert c.closed()


def test_body_timeout(env):
    s, g = env
    c = Conn(g.port, timeout=5)
    c.send(post("Host: x\r\nContent-Length: 100\r\n", b'{"model":'))
    t0 = time.monotonic()
    r = c.read_response()
    assert r.status == 408
    assert time.monotonic() - t0 < 3


def test_idle_keepalive_closed(env):
    s, g = env
    c = Conn(g.port, timeout=8)
    c.send(request("GET", "/v1/models"))
    assert c.read_response().status == 200
    assert c.closed(timeout=7)


def test_http10_without_host(env):
    s, g = env
    c = Conn(g.port)
    c.send(b"GET /v1/models HTTP/1.0\r\n\r\n")
    r = c.read_response()
    assert r.status == 200
    assert c.closed()


def test_flood_of_bad_requests(env):
    s, g = env
    for i in range(200):
        c = Conn(g.port)
        c.send(CASES[i % len(CASES)][1])
        try:
            c.read_response()
        except (EOFError, OSError):
            pass
        c.close()
    assert http("POST", g.url + "/v1/chat/completions", CHAT)[0] == 200
    assert http("GET", g.admin_url + "/health/live")[0] == 200


def test_http_1_x_minor_served_as_1_1(env):
    # any 1.x is HTTP/1.1 to us (RFC 9110 2.5); 2.0 and up get 505
    s, g = env
    c = Conn(g.port)
    c.send(b"GET /v1/models HTTP/1.2\r\nHost: x\r\n\r\n")
    assert c.read_response().status == 200
    c.send(b"GET /v1/models HTTP/3.0\r\nHost: x\r\n\r\n")
    assert c.read_response().status == 505
    c.close()


def test_header_section_padding_bounded(env):
    # what llhttp skips unbounded (whitespace) still counts toward 2 MiB
    s, g = env
    c = Conn(g.port)
    try:
        c.send(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Pad:" +
               b" " * (3 << 20) + b"v\r\n\r\n")
    except OSError:
        pass            # refused before it was all sent
    r = c.read_response()
    assert r.status == 431
    assert c.closed()
    c.close()


# --- out of file descriptors --------------------------------------------

NOFILE = 64


def _fds(g):
    return len(os.listdir("/proc/%d/fd" % g.pid))


def _wait_fds(g, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while _fds(g) < n:
        assert time.monotonic() < deadline, "%d fds, not %d" % (_fds(g), n)
        time.sleep(0.01)


def _fill_to(g, n):
    """Idle client connections until the gateway holds N descriptors."""
    conns = []
    # the readiness polls' admin connections close first
    before, deadline = -1, time.monotonic() + 5
    while _fds(g) != before:
        assert time.monotonic() < deadline
        before = _fds(g)
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while _fds(g) < n:
        assert time.monotonic() < deadline, "%d fds, not %d" % (_fds(g), n)
        had = _fds(g)
        conns.append(socket.create_connection(("127.0.0.1", g.port)))
        # accepted; health checks' own sockets come and go meanwhile
        wait = time.monotonic() + 0.5
        while _fds(g) <= had and time.monotonic() < wait:
            time.sleep(0.005)
    return conns


@pytest.mark.skipif(VALGRIND, reason="valgrind keeps descriptors of its own")
def test_out_of_descriptors_pauses_accept_and_recovers(sim, gateway, workdir):
    # every descriptor taken by idle clients: the listener pauses (not a
    # busy loop logging each failed accept), those in hand go on, health
    # checks wait (they would fail on our side), and connections are
    # accepted again once some close
    s = sim()
    g = gateway(gw_config([s.port], workdir, workers=1, pool_extra="""
    health:
      interval: 100ms
      healthy_after: 1
      unhealthy_after: 1
"""), nofile=NOFILE)
    idle = [socket.create_connection(("127.0.0.1", g.port))
            for _ in range(NOFILE - _fds(g) + 8)]
    _wait_fds(g, NOFILE)
    # the admin listener too (a scrape or a probe meanwhile)
    idle.append(socket.create_connection(("127.0.0.1", g.admin_port)))
    time.sleep(1.5)
    for c in idle:
        c.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            st = http("POST", g.url + "/v1/chat/completions", CHAT,
                      timeout=2)[0]
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert st == 200
    m = metrics(g)
    assert m["infergate_accept_pauses_total"] >= 1
    # the health checks had no socket either: skipped, not failures
    assert m['infergate_backend_health_check_failures_total{pool="p",'
             'backend="127.0.0.1:%d"}' % s.port] == 0
    assert "health checks skipped: Too many open files" in g.output()
    # logged at most once a second per listener, not once per accept
    assert 2 <= g.output().count("accept: Too many open files") <= 8
    assert "Error from accept() call" not in g.output()


@pytest.mark.skipif(VALGRIND, reason="valgrind keeps descriptors of its own")
def test_checks_without_a_descriptor_do_not_mark_backends_down(sim, gateway,
                                                               workdir):
    # one descriptor left for the checks of four backends: those that find
    # none are not failures of the backends
    sims = [sim() for _ in range(4)]
    g = gateway(gw_config([s.port for s in sims], workdir, workers=1,
                          pool_extra="""
    health:
      interval: 100ms
      healthy_after: 1
      unhealthy_after: 1
""").replace("header_timeout: 1s", "header_timeout: 30s"), nofile=NOFILE)
    idle = _fill_to(g, NOFILE - 1)
    time.sleep(1.0)
    for c in idle:
        c.close()
    time.sleep(0.3)
    m = metrics(g)
    for s in sims:
        assert m['infergate_backend_health_check_failures_total{pool="p",'
                 'backend="127.0.0.1:%d"}' % s.port] == 0
        assert m['infergate_backend_up{pool="p",backend="127.0.0.1:%d"}'
                 % s.port] == 1


@pytest.mark.skipif(VALGRIND, reason="valgrind keeps descriptors of its own")
def test_no_descriptor_for_the_backend_is_503_not_an_ejection(sim, gateway,
                                                               workdir):
    s = sim()
    g = gateway(gw_config([s.port], workdir, workers=1, pool_extra="""
    ejection:
      after: 1
      duration: 60s
""").replace("header_timeout: 1s", "header_timeout: 30s"), nofile=NOFILE)
    # all but one descriptor taken: the last client's request finds none
    # for its backend connection
    idle = _fill_to(g, NOFILE - 1)
    c = Conn(g.port)
    _wait_fds(g, NOFILE)
    c.send(request("POST", "/v1/chat/completions", CHAT))
    r = c.read_response()
    assert r.status == 503
    assert r.json()["error"]["code"] == "gateway_overloaded"
    assert r.header("retry-after") == "1"
    c.close()
    for i in idle:
        i.close()
    time.sleep(0.2)
    m = metrics(g)
    assert m["infergate_upstream_no_socket_total"] == 1
    assert m['infergate_backend_ejections_total{pool="p",backend='
             '"127.0.0.1:%d"}' % s.port] == 0
    assert http("POST", g.url + "/v1/chat/completions", CHAT)[0] == 200


# --- mutated requests (a seeded black-box fuzz) -------------------------

SEEDS = [
    request("POST", "/v1/chat/completions", CHAT),
    request("POST", "/v1/chat/completions", dict(CHAT, stream=True)),
    request("POST", "/v1/completions",
            {"model": "m", "prompt": ["a", "b"], "max_tokens": 3}),
    request("POST", "/v1/embeddings", {"model": "m", "input": "hi"}),
    request("GET", "/v1/models"),
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    b"5\r\n" + GOOD[:5] + b"\r\n%x\r\n" % (len(GOOD) - 5) + GOOD[5:] +
    b"\r\n0\r\n\r\n",
]

TOKENS = [b"\r\n", b"\n", b"\r", b":", b" ", b"\x00", b"\xff", b"{", b"}",
          b"\"", b"\\u0000", b"\\ud800", b"Content-Length: 99999999999\r\n",
          b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", b"9" * 30,
          b"-1", b"HTTP/1.1", b"HTTP/9.9", b"%00", b"\t", b"a" * 5000]


def _mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(5)
        i = rng.randrange(len(data) + 1)
        if op == 0 and data:                    # flip a byte
            data[min(i, len(data) - 1)] = rng.randrange(256)
        elif op == 1:                           # insert a token
            data[i:i] = rng.choice(TOKENS)
        elif op == 2:                           # delete a run
            del data[i:i + rng.randint(1, 16)]
        elif op == 3:                           # duplicate a run
            data[i:i] = data[i:i + rng.randint(1, 64)]
        else:                                   # cut it short
            del data[i:]
    return bytes(data)


def test_mutated_requests_never_hurt_the_gateway(env):
    # 1,200 seeded mutations of valid requests, two to a keep-alive
    # connection, written in random pieces, eight connections at a time:
    # every answer is HTTP (an error in the OpenAI form when it is JSON)
    # or a close, and the gateway serves as before (the sanitizers and
    # valgrind watch it too). A request cut short waits for more: its
    # client gives up after 0.5 s.
    import random
    import threading
    s, g = env
    rng = random.Random(20261202)
    cases = [_mutate(rng, rng.choice(SEEDS)) + _mutate(rng, rng.choice(SEEDS))
             for _ in range(1200 if not VALGRIND else 240)]
    answered, bad = [0], []

    def run(mine):
        r2 = random.Random(len(mine))
        for data in mine:
            c = Conn(g.port, timeout=0.5)
            try:
                while data:
                    k = r2.randint(1, len(data))
                    c.send(data[:k])
                    data = data[k:]
                r = c.read_response()
            except (EOFError, OSError):
                continue
            finally:
                c.close()
            answered[0] += 1
            if not 100 <= r.status <= 599:
                bad.append(r.raw_head)
            elif r.status >= 400 and r.body.startswith(b"{"):
                err = json.loads(r.body).get("error", {})
                if set(err) != {"message", "type", "param", "code"}:
                    bad.append(r.body)
    ts = [threading.Thread(target=run, args=(cases[i::8],)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not bad, bad[:3]
    # a good share is answered at once (the rest wait for more bytes)
    assert answered[0] >= len(cases) // (10 if VALGRIND else 5)
    assert http("POST", g.url + "/v1/chat/completions", CHAT)[0] == 200
    assert http("GET", g.admin_url + "/health/live")[0] == 200
