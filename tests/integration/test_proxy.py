"""The data path: requests through the real gateway to real simulators."""
import json
import os
import socket
import time

import pytest

import conftest
from conftest import http, sim_stats, free_port, access_lines
from rawhttp import Conn, request, sse_events


def gw_config(backends, workdir=None, extra="", pool_extra="", workers=2,
              models=None):
    backends_yaml = "\n".join(
        '      - address: "127.0.0.1:%d"' % p for p in backends)
    models = models or """
models:
  - name: m
    pool: p
    upstream_model: sim-model
  - name: m-plain
    pool: p
"""
    return """
listen:
  - address: "127.0.0.1:{port}"
admin:
  address: "127.0.0.1:{admin_port}"
workers: %d
log:
  level: info
  access_log: "%s"
limits:
  header_timeout: 1s
  body_timeout: 1s
  keepalive_timeout: 5s
  max_body_bytes: 65536
%s
pools:
  p:
    backends:
%s
    timeouts:
      connect: 1s
      first_byte: 2s
      idle: 1s
      request: 20s
%s
%s
""" % (workers, os.path.join(workdir, "access.log") if workdir else "-",
       extra, backends_yaml, pool_extra, models)


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 5}


@pytest.fixture
def setup(sim, gateway, workdir):
    def start(sim_flags=None, **kw):
        s = sim(**(sim_flags or {}))
        g = gateway(gw_config([s.port], workdir, **kw))
        return s, g
    return start


def test_chat_non_streaming(setup, workdir):
    s, g = setup()
    st, h, body = http("POST", g.url + "/v1/chat/completions", CHAT,
                       headers={"Authorization": "Bearer sk-secret-1",
                                "X-Request-Id": "req-abc.1"})
    assert st == 200, body
    o = json.loads(body)
    assert o["object"] == "chat.completion"
    assert o["usage"]["completion_tokens"] == 5
    assert h["x-request-id"] == "req-abc.1"
    last = sim_stats(s)["last_request"]
    # the model is rewritten to its upstream name; the key never forwarded
    assert last["body"]["model"] == "sim-model"
    assert "authorization" not in last["headers"]
    assert last["headers"]["x-request-id"] == "req-abc.1"
    # the access log has the request, and never the key or the prompt
    time.sleep(0.1)
    with open(os.path.join(workdir, "access.log")) as f:
        text = f.read()
    assert "sk-secret-1" not in text and "hello there" not in text
    line = [l for l in access_lines(workdir) if l["request_id"] == "req-abc.1"][0]
    assert line["status"] == 200 and line["model"] == "m" and line["pool"] == "p"
    assert line["backend"] == "127.0.0.1:%d" % s.port
    assert line["stream"] is False and line["outcome"] == "ok"


def test_request_id_generated_when_absent_or_insane(setup):
    s, g = setup()
    st, h, _ = http("POST", g.url + "/v1/chat/completions", CHAT,
                    headers={"X-Request-Id": "bad id\"<>"})
    assert st == 200
    rid = h["x-request-id"]
    assert rid and rid != "bad id\"<>"
    assert sim_stats(s)["last_request"]["headers"]["x-request-id"] == rid


def test_completions_and_embeddings(setup):
    s, g = setup()
    st, _, body = http("POST", g.url + "/v1/completions",
                       {"model": "m", "prompt": "abcdefgh", "max_tokens": 3})
    assert st == 200, body
    o = json.loads(body)
    assert o["object"] == "text_completion"
    assert o["usage"]["completion_tokens"] == 3
    assert o["usage"]["prompt_tokens"] == 2
    st, _, body = http("POST", g.url + "/v1/embeddings",
                       {"model": "m", "input": ["abcd", "efgh"]})
    assert st == 200, body
    o = json.loads(body)
    assert o["object"] == "list" and len(o["data"]) == 2


def test_models_list(setup):
    s, g = setup()
    st, _, body = http("GET", g.url + "/v1/models")
    assert st == 200
    o = json.loads(body)
    assert o["object"] == "list"
    assert sorted(m["id"] for m in o["data"]) == ["m", "m-plain"]


def test_streaming_passthrough_timing(setup):
    s, g = setup({"ttft": 150, "itl": 60})
    body = dict(CHAT, stream=True, max_tokens=10)
    c = Conn(g.port)
    t0 = time.monotonic()
    c.send(request("POST", "/v1/chat/completions", body))
    st, headers, _ = c.read_head()
    assert st == 200
    assert dict(headers)["content-type"].startswith("text/event-stream")
    times, data = [], b""
    for t, chunk in c.iter_chunks():
        assert chunk is not None
        times.append(t)
        data += chunk
    events = sse_events(data)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks
                   if ch["choices"])
    assert text == "".join("tok%d " % i for i in range(10))
    # the first chunk comes through long before the stream ends
    first, last = times[0] - t0, times[-1] - t0
    assert first < last - 0.3, (first, last)
    assert len(times) >= 5   # not buffered into one write
    c.close()


def test_streaming_completions(setup):
    s, g = setup()
    st, h, body = http("POST", g.url + "/v1/completions",
                       {"model": "m", "prompt": "x", "max_tokens": 4,
                        "stream": True})
    assert st == 200
    events = sse_events(body)
    assert events[-1] == "[DONE]"
    assert json.loads(events[0])["object"] == "text_completion"


def test_client_disconnect_cancels_generation(setup):
    s, g = setup({"itl": 50})
    c = Conn(g.port)
    c.send(request("POST", "/v1/chat/completions",
                   dict(CHAT, stream=True, max_tokens=1000)))
    st, _, _ = c.read_head()
    assert st == 200
    it = c.iter_chunks()
    next(it)
    next(it)
    c.close()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        st = sim_stats(s)
        if st["cancelled"] >= 1 and st["active"] == 0:
            break
        time.sleep(0.05)
    assert st["cancelled"] == 1 and st["active"] == 0
    # the gateway still serves, on a fresh backend connection
    code, _, _ = http("POST", g.url + "/v1/chat/completions", CHAT)
    assert code == 200


def test_keepalive_reuse(setup):
    s, g = setup(workers=1)
    before = sim_stats(s)["connections"]   # the fixture's probe and this call
    c = Conn(g.port)
    for i in range(30):
        c.send(request("POST", "/v1/chat/completions", CHAT))
        r = c.read_response()
        assert r.status == 200
    c.close()
    for i in range(10):
        assert http("POST", g.url + "/v1/chat/completions", CHAT)[0] == 200
    # 40 requests over one pooled backend connection (+1 for the stats call)
    assert sim_stats(s)["connections"] - before - 1 <= 1
    st, _, body = http("GET", g.admin_url + "/metrics")
    assert b"infergate_upstream_reuses_total" in body


def test_pipelined_requests_answered_in_order(setup):
    s, g = setup()
    c = Conn(g.port)
    reqs = b""
    for n in (1, 2, 3):
        reqs += request("POST", "/v1/completions",
                        {"model": "m", "prompt": "p", "max_tokens": n})
    reqs += request("GET", "/v1/models")
    c.send(reqs)
    for n in (1, 2, 3):
        r = c.read_response()
        assert r.status == 200
        assert r.json()["usage"]["completion_tokens"] == n
    r = c.read_response()
    assert r.status == 200 and r.json()["object"] == "list"


def test_expect_100_continue_and_chunked_body(setup):
    s, g = setup()
    body = json.dumps(CHAT).encode()
    c = Conn(g.port)
    c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
           b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body))
    # the interim response arrives before we send the body
    while b"\r\n\r\n" not in c.buf:
        c._fill()
    assert c.buf.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    c.buf = c.buf[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
    c.send(body)
    r = c.read_response()
    assert r.status == 200
    half = len(body) // 2
    c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" +
           b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
               half, body[:half], len(body) - half, body[half:]))
    r = c.read_response()
    assert r.status == 200, r.body


def test_backend_refused_gives_502(sim, gateway, workdir):
    dead = free_port()
    g = gateway(gw_config([dead], workdir))
    st, _, body = http("POST", g.url + "/v1/chat/completions", CHAT)
    assert st == 502
    err = json.loads(body)["error"]
    assert err["code"] == "upstream_error" and err["type"] == "server_error"


def test_retry_on_other_backend(sim, gateway, workdir):
    s = sim()
    dead = free_port()
    g = gateway(gw_config([dead, s.port], workdir, workers=1))
    for i in range(6):
        st, _, _ = http("POST", g.url + "/v1/chat/completions", CHAT)
        assert st == 200


def test_backend_error_status_passes_through(setup):
    s, g = setup({"fail_rate": 1, "fail_status": 503})
    st, _, body = http("POST", g.url + "/v1/chat/completions", CHAT)
    assert st == 503
    assert "error" in json.loads(body)


def _hist(m, name, pool=None):
    """{le: cumulative count} of histogram NAME, with its sum and count."""
    lab = 'pool="%s",' % pool if pool else ""
    buckets = {}
    for k, v in m.items():
        if k.startswith(name + "_bucket{" + lab + 'le="'):
            buckets[k.split('le="')[1].rstrip('"}')] = v
    sfx = '{pool="%s"}' % pool if pool else ""
    return buckets, m.get(name + "_sum" + sfx), m.get(name + "_count" + sfx)


def test_latency_histograms(setup, workdir):
    s, g = setup({"ttft_ms": 150, "itl_ms": 5})
    dur = "infergate_request_duration_seconds"
    ttft = "infergate_time_to_first_token_seconds"
    b, total, n = _hist(conftest.metrics(g), dur, "p")
    assert n == 0 and total == 0 and b["+Inf"] == 0
    assert list(b) == ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
                       "1", "2.5", "5", "10", "30", "60", "120", "300", "+Inf"]
    st, _, _ = http("POST", g.url + "/v1/chat/completions", CHAT)
    assert st == 200
    st, _, body = http("POST", g.url + "/v1/chat/completions",
                       dict(CHAT, stream=True))
    assert st == 200 and b"[DONE]" in body
    # refused by the gateway (no such model): no backend answered it
    assert http("POST", g.url + "/v1/chat/completions",
                dict(CHAT, model="nope"))[0] == 404
    m = conftest.metrics(g)
    b, total, n = _hist(m, dur, "p")
    # both waited the backend's 150 ms to the first token
    assert n == 2 and b["+Inf"] == 2 and b["0.1"] == 0, b
    assert 0.3 <= total < 20, total
    assert all(x <= y for x, y in zip(list(b.values()), list(b.values())[1:]))
    b, total, n = _hist(m, ttft, "p")
    assert n == 1 and b["+Inf"] == 1 and b["0.1"] == 0, b
    assert 0.15 <= total < 10, total
    # the access log has it too, for the stream only; the head came first
    time.sleep(0.2)
    lines = [l for l in access_lines(workdir) if l["status"] == 200]
    assert [("ttft_ms" in l) for l in lines] == [False, True], lines
    assert lines[1]["ttft_ms"] >= 150 and \
        lines[1]["ttft_ms"] >= lines[1]["ttfb_ms"], lines[1]
    # an error status from the backend is a response: counted
    s2, g2 = setup({"fail_rate": 1, "fail_status": 503})
    assert http("POST", g2.url + "/v1/chat/completions", CHAT)[0] == 503
    assert _hist(conftest.metrics(g2), dur, "p")[2] == 1


def test_backend_hang_gives_504(setup):
    s, g = setup({"hang_rate": 1})
    t0 = time.monotonic()
    st, _, body = http("POST", g.url + "/v1/chat/completions", CHAT)
    assert st == 504
    assert json.loads(body)["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - t0 < 8


def test_backend_close_mid_stream_gives_sse_error(setup):
    s, g = setup({"close_rate": 1, "close_after": 2, "itl": 20})
    st, _, body = http("POST", g.url + "/v1/chat/completions",
                       dict(CHAT, stream=True, max_tokens=10))
    assert st == 200
    events = sse_events(body)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "upstream_error"


def test_backend_close_non_streaming_gives_502(setup):
    s, g = setup({"close_rate": 1})
    st, _, body = http("POST", g.url + "/v1/chat/completions", CHAT)
    assert st == 502


def _rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_slow_client_memory_bounded(setup):
    s, g = setup(workers=1)
    before = _rss_kb(g.pid)
    c = Conn(g.port, timeout=10)
    c.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.send(request("POST", "/v1/chat/completions",
                   dict(CHAT, stream=True, max_tokens=300000)))
    c.read_head()
    # read a trickle while the backend could produce hundreds of MB
    got = 0
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        got += len(c.s.recv(1024))
        time.sleep(0.05)
    peak = _rss_kb(g.pid)
    c.close()
    assert got > 0
    # bounded buffers per request: without backpressure the gateway would
    # hold hundreds of MB here (the simulator streams at itl 0); ASan's
    # allocator adds its own overhead.
    limit = 24 if "asan" in conftest.BUILD else 8
    assert peak - before < limit * 1024, (before, peak)
    assert http("POST", g.url + "/v1/chat/completions", CHAT)[0] == 200


def test_a_client_that_falls_behind_keeps_its_stream(setup):
    # while the client does not read, the gateway stops reading the
    # backend (backpressure): that is not the backend being idle, so the
    # pool's idle timeout (1s here) does not end the stream; the client's
    # own send timeout is what bounds a client that never reads again.
    # ~20 MB of events: more than every socket buffer on the way holds
    s, g = setup(workers=1)
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    c.settimeout(10)
    c.connect(("127.0.0.1", g.port))
    c.sendall(request("POST", "/v1/chat/completions",
                      dict(CHAT, stream=True, max_tokens=100000)))
    time.sleep(2.5)
    got = bytearray()
    deadline = time.monotonic() + 30
    while not got.endswith(b"0\r\n\r\n") and time.monotonic() < deadline:
        d = c.recv(1 << 20)
        if not d:
            break
        got += d
    c.close()
    assert b"data: [DONE]" in got, bytes(got[-300:])
    assert b'"error"' not in got
    assert b"tok99999 " in got


def test_reload_keeps_serving(setup, workdir):
    import signal
    s, g = setup()
    assert http("POST", g.url + "/v1/chat/completions", CHAT)[0] == 200
    with open(g.config_path) as f:
        cfg = f.read()
    with open(g.config_path, "w") as f:
        f.write(cfg.replace("  - name: m-plain\n", "  - name: m-new\n"))
    g.signal(signal.SIGHUP)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        st, _, body = http("GET", g.url + "/v1/models")
        if b"m-new" in body:
            break
        time.sleep(0.05)
    assert b"m-new" in body
    # the pool's histograms go on counting across the reload (no reset)
    assert http("POST", g.url + "/v1/chat/completions", CHAT)[0] == 200
    assert _hist(conftest.metrics(g), "infergate_request_duration_seconds",
                 "p")[2] == 2
    # a broken config is refused and the old one keeps serving
    with open(g.config_path, "w") as f:
        f.write("listen: [\n")
    g.signal(signal.SIGHUP)
    time.sleep(0.3)
    st, _, body = http("GET", g.url + "/v1/models")
    assert st == 200 and b"m-new" in body
    _, _, m = http("GET", g.admin_url + "/metrics")
    assert b"infergate_reload_failures_total 1" in m


def test_body_forwarded_unchanged_without_rewrite(sim, gateway, workdir):
    # no upstream_model: the client's bytes go to the backend as they are
    s = sim()
    g = gateway(gw_config([s.port], workdir,
                          models="models:\n  - name: sim-model\n    pool: p\n"))
    body = '{"model":"sim-model",  "messages":[{"role":"user","content":"hi"}],\n "max_tokens":3}'
    st, _, out = http("POST", g.url + "/v1/chat/completions", body)
    assert st == 200, out
    assert json.loads(out)["usage"]["completion_tokens"] == 3
    assert sim_stats(s)["last_request"]["body"]["max_tokens"] == 3


def test_date_header(setup):
    """Every response carries one Date (RFC 9110 6.6.1): the gateway's own
    answers and proxied ones whose backend sent none (the simulator
    sends none) get the gateway's."""
    import email.utils
    s, g = setup()
    for method, path, body in (("POST", "/v1/chat/completions", CHAT),
                               ("POST", "/v1/nothing", CHAT),
                               ("GET", "/v1/models", None)):
        st, h, _ = http(method, g.url + path, body)
        when = email.utils.parsedate_to_datetime(h["date"])
        assert abs(when.timestamp() - time.time()) < 5, (path, h["date"])
        assert h["date"].endswith(" GMT")
    st, h, body = http("POST", g.url + "/v1/chat/completions",
                       dict(CHAT, stream=True))
    assert st == 200 and "date" in h


@pytest.mark.parametrize("how", ["SIGTERM", "POST /admin/drain"])
def test_graceful_stop(setup, how):
    """Stopping: the request in flight finishes, new connections are
    refused, readiness answers 503 (liveness 200) while the workers
    drain, and the process exits 0."""
    import signal
    import socket
    import threading
    s, g = setup(sim_flags={"itl": 50})
    st, hd, _ = http("GET", g.admin_url + "/admin/drain")
    assert st == 405 and hd["allow"] == "POST"
    out = {}

    def slow():
        out["r"] = http("POST", g.url + "/v1/chat/completions",
                        dict(CHAT, max_tokens=20), timeout=10)
    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 3
    while sim_stats(s)["active"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    if how == "SIGTERM":
        g.signal(signal.SIGTERM)
    else:
        st, _, body = http("POST", g.admin_url + "/admin/drain")
        assert st == 202 and body == b"draining\n"
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if http("GET", g.admin_url + "/health/ready")[0] == 503:
            break
        time.sleep(0.02)
    assert http("GET", g.admin_url + "/health/ready")[0] == 503
    assert http("GET", g.admin_url + "/health/live")[0] == 200
    assert g.p.poll() is None       # still finishing the request
    # the workers close their listeners when they get the word (each
    # from its own loop, just after readiness turned): soon, not at once
    deadline = time.monotonic() + 2
    with pytest.raises(OSError):
        while time.monotonic() < deadline:
            socket.create_connection(("127.0.0.1", g.port), timeout=2).close()
            time.sleep(0.02)
    t.join(10)
    st, _, body = out["r"]
    assert st == 200 and json.loads(body)["usage"]["completion_tokens"] == 20
    assert g.p.wait(10) == 0


def test_access_log_has_refused_requests(setup, workdir):
    """Every answer is in the access log, refusals before the request was
    whole included (they were not logged at all), with the method of the
    request line when there was one (null otherwise)."""
    s, g = setup()
    for raw, status in (
            (b"PUT /v1/chat/completions HTTP/2.0\r\nHost: gw\r\n\r\n", 505),
            (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nBad Name: x\r\n\r\n", 400),
            (b"\x01\x02 nonsense\r\n\r\n", 400),
            (b"GET /nope HTTP/1.1\r\nHost: gw\r\n\r\n", 404)):
        c = Conn(g.port)
        c.send(raw)
        assert c.read_response().status == status
        c.close()
    time.sleep(0.2)
    got = [(l["status"], l["method"], l["outcome"]) for l in access_lines(workdir)]
    assert got == [(505, "PUT", "refused"), (400, "POST", "refused"),
                   (400, None, "refused"), (404, "GET", "refused")], got
