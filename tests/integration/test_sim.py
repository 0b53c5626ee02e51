"""Black-box tests of the model-server simulator (build/infergate-sim).

The gateway's own tests lean on the simulator's token rule, timing, fault
injection and /sim/stats, so each of them is pinned down here. Streaming
responses are read on raw sockets so that chunk framing and arrival times are
what the wire carried. Timing asserts are loose on purpose: lower bounds (the
simulator never answers early) and generous upper bounds.
"""
import http.client as http_client
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import SIM, free_port, http, sim_stats

MODEL = "sim-model"


@pytest.fixture(autouse=True)
def clean_exit(workdir, procs):
    """Every simulator a test started must exit 0 on SIGTERM, with nothing
    from the sanitizers in its log (ASan/UBSan builds: IG_BUILD=build/asan)."""
    yield
    for p in procs:
        rc = p.stop()
        with open(p.log_path, errors="replace") as f:
            log = f.read()
        assert rc == 0, "%s exited %s:\n%s" % (p.name, rc, log)
        assert "Sanitizer" not in log and "runtime error" not in log, log


def chat_body(content="hello world", **kw):
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    body.update(kw)
    return body


# ---- a raw HTTP/1.1 client -------------------------------------------------

class Conn:
    """One socket; requests written by hand, responses parsed by hand."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, method, path, body=None, headers=None):
        self.sock.sendall(request_bytes(method, path, body, headers))

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def readline(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_to_eof(self):
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        data, self.buf = self.buf, b""
        return data

    def head(self):
        """(status, {lower-cased name: value})"""
        status = int(self.readline().split()[1])
        headers = {}
        while True:
            line = self.readline()
            if not line:
                return status, headers
            k, v = line.decode().split(":", 1)
            headers[k.strip().lower()] = v.strip()

    def chunk(self):
        """The next chunk's data; b"" for the last chunk of the body."""
        size = int(self.readline().split(b";")[0], 16)
        if size == 0:
            assert self.readline() == b""
            return b""
        data = self.read(size)
        assert self.read(2) == b"\r\n"
        return data

    def response(self):
        """A whole Content-Length or chunked response: (status, headers, body)."""
        status, headers = self.head()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                c = self.chunk()
                if not c:
                    break
                body += c
            return status, headers, body
        return status, headers, self.read(int(headers.get("content-length", 0)))


def request_bytes(method, path, body=None, headers=None):
    data = b""
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, path)
    if body is not None:
        head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(data)
    for k, v in (headers or {}).items():
        head += "%s: %s\r\n" % (k, v)
    return (head + "\r\n").encode() + data


class Stream:
    """What one streaming response delivered."""

    def __init__(self):
        self.status = None
        self.headers = {}
        self.events = []        # (seconds since the request, "[DONE]" or dict)
        self.complete = False   # the chunked body ended properly
        self.eof = False        # the connection closed before that


def read_stream(conn, t0):
    """Read an SSE response on conn; every chunk must hold one event."""
    st = Stream()
    st.status, st.headers = conn.head()
    try:
        while True:
            c = conn.chunk()
            if not c:
                st.complete = True
                break
            assert c.startswith(b"data: ") and c.endswith(b"\n\n"), c
            assert c.count(b"data: ") == 1, "one event per chunk: %r" % c
            text = c[6:-2].decode()
            st.events.append((time.monotonic() - t0,
                              text if text == "[DONE]" else json.loads(text)))
    except EOFError:
        st.eof = True
    return st


def stream(port, path, body, headers=None, timeout=10.0):
    conn = Conn(port, timeout)
    try:
        t0 = time.monotonic()
        conn.send("POST", path, body, headers)
        return read_stream(conn, t0)
    finally:
        conn.close()


def wait_stats(s, pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        st = sim_stats(s)
        if pred(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError("stats never matched: %s" % st)
        time.sleep(0.02)


def post(s, path, body, **kw):
    status, headers, data = http("POST", s.url + path, body, **kw)
    return status, headers, json.loads(data) if data else None


# ---- non-streaming ---------------------------------------------------------

def test_chat_usage_and_format(sim):
    s = sim()
    body = {"model": MODEL, "max_tokens": 5, "messages": [
        {"role": "system", "content": "You are helpful."},   # 16 bytes: 4 + 4
        {"role": "user", "content": "hello world"},          # 11 bytes: 4 + 3
    ]}
    status, headers, r = post(s, "/v1/chat/completions", body)
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) > 0
    assert r["id"].startswith("cmpl-sim-")
    assert r["object"] == "chat.completion"
    assert r["model"] == MODEL and isinstance(r["created"], int)
    assert len(r["choices"]) == 1
    ch = r["choices"][0]
    assert ch["message"] == {"role": "assistant",
                             "content": "tok0 tok1 tok2 tok3 tok4 "}
    assert ch["finish_reason"] == "length"
    assert r["usage"] == {"prompt_tokens": 17, "completion_tokens": 5,
                          "total_tokens": 22}


def test_chat_content_parts_and_max_completion_tokens(sim):
    s = sim()
    body = {"model": MODEL, "max_completion_tokens": 2, "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "abcdefgh"},             # 8 bytes
            {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
            {"type": "text", "text": "a"},                    # 1 byte
        ]},
        {"role": "assistant", "content": None},               # 0 bytes
    ]}
    status, _, r = post(s, "/v1/chat/completions", body)
    assert status == 200
    # (4 + ceil(9/4)) + (4 + 0) + 2
    assert r["usage"] == {"prompt_tokens": 13, "completion_tokens": 2,
                          "total_tokens": 15}
    assert r["choices"][0]["message"]["content"] == "tok0 tok1 "


def test_completions_usage(sim):
    s = sim(default_max_tokens=3)
    status, _, r = post(s, "/v1/completions",
                        {"model": MODEL, "prompt": "abcdefghi"})
    assert status == 200
    assert r["object"] == "text_completion"
    assert r["choices"][0]["text"] == "tok0 tok1 tok2 "
    assert r["choices"][0]["finish_reason"] == "length"
    assert r["usage"] == {"prompt_tokens": 3, "completion_tokens": 3,
                          "total_tokens": 6}
    # an array of strings: ceil(3/4) + ceil(5/4)
    status, _, r = post(s, "/v1/completions",
                        {"model": MODEL, "prompt": ["abc", "defgh"],
                         "max_tokens": 1})
    assert status == 200
    assert r["usage"] == {"prompt_tokens": 3, "completion_tokens": 1,
                          "total_tokens": 4}


def test_default_max_tokens_is_16(sim):
    s = sim()
    _, _, r = post(s, "/v1/completions", {"model": MODEL, "prompt": "x"})
    assert r["usage"]["completion_tokens"] == 16
    assert r["choices"][0]["text"].split() == ["tok%d" % i for i in range(16)]


def test_embeddings(sim):
    s = sim()
    body = {"model": MODEL, "input": ["a", "bcdef"]}
    status, _, r = post(s, "/v1/embeddings", body)
    assert status == 200
    assert r["object"] == "list"
    assert r["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert [d["index"] for d in r["data"]] == [0, 1]
    for d in r["data"]:
        assert d["object"] == "embedding"
        assert len(d["embedding"]) == 8
        assert all(isinstance(x, float) and -1 <= x <= 1 for x in d["embedding"])
    assert r["data"][0]["embedding"] != r["data"][1]["embedding"]
    _, _, again = post(s, "/v1/embeddings", body)
    assert again["data"] == r["data"]            # deterministic
    _, _, one = post(s, "/v1/embeddings", {"model": MODEL, "input": "bcdef"})
    assert one["usage"]["prompt_tokens"] == 2
    assert one["data"][0]["embedding"] == r["data"][1]["embedding"]


def test_non_streaming_waits_like_a_model(sim):
    s = sim(ttft=150, itl=50)
    t0 = time.monotonic()
    status, _, r = post(s, "/v1/chat/completions", chat_body(max_tokens=5))
    elapsed = time.monotonic() - t0
    assert status == 200 and r["usage"]["completion_tokens"] == 5
    assert elapsed >= 0.3           # 150 + 4 * 50 ms
    assert elapsed < 5


def test_models_health_metrics(sim):
    s = sim(model="m-1")
    status, _, body = http("GET", s.url + "/v1/models")
    assert status == 200
    r = json.loads(body)
    assert r["object"] == "list"
    assert len(r["data"]) == 1
    m = r["data"][0]
    assert m["id"] == "m-1" and m["object"] == "model"
    assert m["owned_by"] == "infergate-sim" and isinstance(m["created"], int)

    status, _, body = http("GET", s.url + "/health")
    assert status == 200 and body == b""

    status, headers, body = http("GET", s.url + "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    text = body.decode()
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
        assert "# HELP %s " % name in text
        assert "# TYPE %s gauge" % name in text
        assert '%s{model_name="m-1"} 0\n' % name in text


def test_bad_json_is_400(sim):
    s = sim()
    status, _, body = http("POST", s.url + "/v1/chat/completions", '{"model": ')
    assert status == 400
    err = json.loads(body)["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] is None and err["code"] is None
    assert err["message"]
    # valid JSON of the wrong shape is refused too
    status, _, body = post(s, "/v1/chat/completions", {"model": MODEL})
    assert status == 400 and "messages" in body["error"]["message"]
    status, _, body = post(s, "/v1/chat/completions", chat_body(max_tokens="x"))
    assert status == 400
    assert sim_stats(s)["requests"] == 3


def test_wrong_model_is_404(sim):
    s = sim()
    status, _, body = post(s, "/v1/chat/completions",
                           dict(chat_body(), model="gpt-4"))
    assert status == 404
    err = body["error"]
    assert err["code"] == "model_not_found"
    assert err["type"] == "invalid_request_error"
    assert "gpt-4" in err["message"]
    status, _, body = post(s, "/v1/embeddings", {"model": "x", "input": "a"})
    assert status == 404 and body["error"]["code"] == "model_not_found"


def test_unknown_path_and_method(sim):
    s = sim()
    status, _, body = http("GET", s.url + "/v2/nothing")
    assert status == 404 and "error" in json.loads(body)
    status, _, _ = http("GET", s.url + "/v1/chat/completions")
    assert status == 405


def test_last_request_and_tenant(sim):
    s = sim()
    body = chat_body(max_tokens=1)
    status, _, _ = post(s, "/v1/chat/completions", body, headers={
        "Authorization": "Bearer sk-test", "X-Request-Id": "req-42",
        "X-Infergate-Tenant": "acme"})
    assert status == 200
    last = sim_stats(s)["last_request"]
    assert last["body"] == body
    h = last["headers"]
    assert h["authorization"] == "Bearer sk-test"
    assert h["x-request-id"] == "req-42"
    assert h["x-infergate-tenant"] == "acme"
    assert h["content-type"] == "application/json"
    # a GET on another endpoint does not replace it
    http("GET", s.url + "/v1/models")
    assert sim_stats(s)["last_request"]["body"] == body


# ---- streaming -------------------------------------------------------------

def test_stream_chat_format_and_timing(sim):
    s = sim(ttft=200, itl=50)
    st = stream(s.port, "/v1/chat/completions", chat_body(max_tokens=10, stream=True))
    assert st.status == 200
    assert st.headers["content-type"] == "text/event-stream"
    assert st.headers["transfer-encoding"] == "chunked"
    assert st.complete and not st.eof
    assert st.events[-1][1] == "[DONE]"
    chunks = [e for _, e in st.events[:-1]]
    assert len(chunks) == 10
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("cmpl-sim-")
    for i, c in enumerate(chunks):
        assert c["object"] == "chat.completion.chunk"
        assert c["model"] == MODEL
        assert "usage" not in c
        (ch,) = c["choices"]
        assert ch["index"] == 0
        assert ch["delta"]["content"] == "tok%d " % i
        assert ch["finish_reason"] == ("length" if i == 9 else None)
        assert ("role" in ch["delta"]) == (i == 0)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    t_first, t_end = st.events[0][0], st.events[-1][0]
    assert t_first >= 0.15                  # ttft 200 ms
    assert t_end - t_first >= 0.3           # 9 gaps of 50 ms
    assert t_end < 5
    st2 = sim_stats(s)
    assert st2["completed"] == 1 and st2["active"] == 0


def test_stream_completions_format(sim):
    s = sim()
    st = stream(s.port, "/v1/completions",
                {"model": MODEL, "prompt": "abcd", "max_tokens": 3, "stream": True})
    assert st.complete
    chunks = [e for _, e in st.events[:-1]]
    assert st.events[-1][1] == "[DONE]"
    assert [c["choices"][0]["text"] for c in chunks] == ["tok0 ", "tok1 ", "tok2 "]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "length"]
    assert all("usage" not in c for c in chunks)


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", chat_body("abcdefgh", max_tokens=4)),  # 4+2+2
    ("/v1/completions", {"model": MODEL, "prompt": "abcdefghijklmnopqrstuvwxyz123456", "max_tokens": 4}),
])
def test_stream_include_usage(sim, path, body):
    s = sim()
    body = dict(body, stream=True, stream_options={"include_usage": True})
    st = stream(s.port, path, body)
    assert st.complete
    events = [e for _, e in st.events]
    assert events[-1] == "[DONE]"
    final = events[-2]
    assert final["choices"] == []
    assert final["usage"] == {"prompt_tokens": 8, "completion_tokens": 4,
                              "total_tokens": 12}
    content = events[:-2]
    assert len(content) == 4
    for c in content:
        assert "usage" in c and c["usage"] is None
        assert len(c["choices"]) == 1
    # asked for false: no usage anywhere
    body["stream_options"] = {"include_usage": False}
    st = stream(s.port, path, body)
    assert all("usage" not in e for _, e in st.events[:-1])
    assert len(st.events) == 5


def test_stream_client_disconnect_cancels(sim):
    s = sim(ttft=0, itl=100)
    conn = Conn(s.port, timeout=5)
    conn.send("POST", "/v1/chat/completions", chat_body(max_tokens=50, stream=True))
    st, _ = conn.head()
    assert st == 200
    assert conn.chunk().startswith(b"data: ")
    assert sim_stats(s)["active"] == 1
    conn.close()
    st = wait_stats(s, lambda x: x["cancelled"] == 1 and x["active"] == 0)
    assert st["completed"] == 0


def test_queued_client_disconnect_cancels(sim):
    s = sim(itl=100, max_concurrent=1)
    first = Conn(s.port, timeout=5)
    first.send("POST", "/v1/chat/completions", chat_body(max_tokens=30, stream=True))
    wait_stats(s, lambda x: x["active"] == 1)
    second = Conn(s.port, timeout=5)
    second.send("POST", "/v1/chat/completions", chat_body(max_tokens=3, stream=True))
    wait_stats(s, lambda x: x["waiting"] == 1)
    second.close()
    wait_stats(s, lambda x: x["waiting"] == 0 and x["cancelled"] == 1)
    first.close()
    st = wait_stats(s, lambda x: x["active"] == 0)
    assert st["cancelled"] == 2 and st["max_active"] == 1


def test_stream_stamps(sim):
    """--stamp: each JSON event opens with its write time, the first also
    with the request's read time, on the clock a client here reads too."""
    s = sim(stamp=True, itl=20)
    conn = Conn(s.port)
    try:
        t_send = time.monotonic_ns()
        conn.send("POST", "/v1/chat/completions",
                  chat_body(max_tokens=5, stream=True,
                            stream_options={"include_usage": True}))
        status, _ = conn.head()
        assert status == 200
        raw, recv = [], []
        while True:
            c = conn.chunk()
            if not c:
                break
            recv.append(time.monotonic_ns())
            raw.append(c)
    finally:
        conn.close()
    assert raw[-1] == b"data: [DONE]\n\n"
    events = [json.loads(c[6:-2]) for c in raw[:-1]]
    assert len(events) == 6                     # 5 tokens + usage
    assert all(c.startswith(b'data: {"sim_ts":') for c in raw[:-1])
    ts = [e["sim_ts"] for e in events]
    assert all(isinstance(t, int) for t in ts)
    assert "sim_req_ts" in events[0]
    assert all("sim_req_ts" not in e for e in events[1:])
    # the client's write < request read < first write < first receive
    assert t_send <= events[0]["sim_req_ts"] <= ts[0] <= recv[0]
    assert all(t <= r for t, r in zip(ts, recv))
    assert all(b - a >= 15e6 for a, b in zip(ts[:4], ts[1:5]))   # itl 20 ms
    # otherwise the usual events
    assert [e["choices"][0]["delta"]["content"] for e in events[:5]] == \
        ["tok%d " % i for i in range(5)]
    assert events[5]["choices"] == [] and events[5]["usage"]["completion_tokens"] == 5
    # completions too; non-streaming replies and unstamped sims carry none
    st = stream(s.port, "/v1/completions",
                {"model": MODEL, "prompt": "x", "max_tokens": 2, "stream": True})
    assert all("sim_ts" in e for _, e in st.events[:-1])
    _, _, r = post(s, "/v1/chat/completions", chat_body(max_tokens=2))
    assert "sim_ts" not in r and "sim_req_ts" not in r
    plain = sim()
    st = stream(plain.port, "/v1/chat/completions", chat_body(max_tokens=2, stream=True))
    assert all("sim_ts" not in e and "sim_req_ts" not in e for _, e in st.events[:-1])


def test_stamp_request_time_is_arrival(sim):
    """sim_req_ts is when the request arrived in the socket (the kernel's
    receive time), not when the simulator got round to reading it: here
    it is stopped for 300 ms while the request arrives."""
    s = sim(stamp=True)
    conn = Conn(s.port)
    try:
        os.kill(s.pid, signal.SIGSTOP)
        try:
            t_send = time.monotonic_ns()
            conn.send("POST", "/v1/chat/completions",
                      chat_body(max_tokens=1, stream=True))
            time.sleep(0.3)
        finally:
            os.kill(s.pid, signal.SIGCONT)
        status, _ = conn.head()
        first = json.loads(conn.chunk()[6:-2])
    finally:
        conn.close()
    assert status == 200
    assert t_send <= first["sim_req_ts"] < t_send + 100e6
    assert first["sim_ts"] >= t_send + 250e6      # written after the stop


# ---- startup delay, faults -------------------------------------------------

def test_startup_delay(sim):
    s = sim(startup_delay=1500)
    status, _, _ = http("GET", s.url + "/health")
    assert status == 200
    status, _, body = http("GET", s.url + "/v1/models")
    assert status == 503
    assert "error" in json.loads(body)
    status, _, _ = post(s, "/v1/chat/completions", chat_body(max_tokens=1))
    assert status == 503
    deadline = time.monotonic() + 10
    while True:
        status, _, _ = http("GET", s.url + "/v1/models")
        if status == 200:
            break
        assert status == 503 and time.monotonic() < deadline
        time.sleep(0.05)
    status, _, _ = post(s, "/v1/chat/completions", chat_body(max_tokens=1))
    assert status == 200


def test_fail_rate(sim):
    s = sim(fail_rate=1)
    status, _, body = post(s, "/v1/chat/completions", chat_body())
    assert status == 500
    assert body["error"]["message"]
    status, _, body = post(s, "/v1/embeddings", {"model": MODEL, "input": "x"})
    assert status == 500
    st = sim_stats(s)
    assert st["failed_injected"] == 2 and st["completed"] == 0

    s = sim(fail_rate=1, fail_status=429)
    status, _, body = post(s, "/v1/completions", {"model": MODEL, "prompt": "x"})
    assert status == 429 and "error" in body


def test_fail_rate_is_seeded(sim):
    def pattern(seed):
        s = sim(fail_rate=0.5, seed=seed)
        out = [post(s, "/v1/completions", {"model": MODEL, "prompt": "x",
                                           "max_tokens": 1})[0]
               for _ in range(24)]
        assert sim_stats(s)["failed_injected"] == out.count(500)
        return out
    a = pattern(7)
    assert a == pattern(7)
    assert 200 in a and 500 in a


def test_close_rate_stream_truncated(sim):
    s = sim(close_rate=1, close_after=3)
    st = stream(s.port, "/v1/chat/completions", chat_body(max_tokens=10, stream=True))
    assert st.status == 200
    assert st.eof and not st.complete
    assert all(e != "[DONE]" for _, e in st.events)
    assert [e["choices"][0]["delta"]["content"] for _, e in st.events] == \
        ["tok0 ", "tok1 ", "tok2 "]
    st = wait_stats(s, lambda x: x["closed_injected"] == 1 and x["active"] == 0)
    assert st["completed"] == 0 and st["cancelled"] == 0


def test_close_rate_non_streaming_half_body(sim):
    s = sim(close_rate=1)
    conn = Conn(s.port, timeout=5)
    try:
        conn.send("POST", "/v1/chat/completions", chat_body(max_tokens=20))
        status, headers = conn.head()
        body = conn.read_to_eof()
    finally:
        conn.close()
    assert status == 200
    assert 0 < len(body) < int(headers["content-length"])
    assert sim_stats(s)["closed_injected"] == 1


def test_hang_rate(sim):
    s = sim(hang_rate=1)
    conn = Conn(s.port, timeout=1.0)
    try:
        conn.send("POST", "/v1/chat/completions", chat_body(max_tokens=1))
        with pytest.raises(socket.timeout):
            conn.head()
        st = sim_stats(s)           # the simulator itself still answers
        assert st["hung_injected"] == 1
        assert st["active"] == 0 and st["completed"] == 0
    finally:
        conn.close()
    status, _, _ = http("GET", s.url + "/health")
    assert status == 200


# ---- concurrency, connections ----------------------------------------------

def test_max_concurrent_queues_fifo(sim):
    s = sim(itl=100, max_concurrent=2)
    conns, t0s = [], []
    try:
        for i in range(5):
            c = Conn(s.port, timeout=10)
            t0s.append(time.monotonic())
            c.send("POST", "/v1/chat/completions",
                   chat_body(max_tokens=4, stream=True),
                   headers={"X-Infergate-Tenant": "t%d" % (i % 2)})
            conns.append(c)
            wait_stats(s, lambda x, n=i + 1: x["requests"] == n)
        st = sim_stats(s)
        assert st["active"] == 2 and st["waiting"] == 3
        _, _, metrics = http("GET", s.url + "/metrics")
        assert b'vllm:num_requests_waiting{model_name="sim-model"} 3\n' in metrics
        assert b'vllm:num_requests_running{model_name="sim-model"} 2\n' in metrics

        results = [None] * 5

        def reader(i):
            results[i] = read_stream(conns[i], t0s[i])
        threads = [threading.Thread(target=reader, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=15)
    finally:
        for c in conns:
            c.close()
    assert all(r is not None and r.complete for r in results)
    first = [t0s[i] + r.events[0][0] for i, r in enumerate(results)]
    # admitted in arrival order: two at once, then as slots free up
    assert first[2] >= first[0] + 0.15
    assert first[4] >= first[2] + 0.15
    st = sim_stats(s)
    assert st["max_active"] == 2
    assert st["completed"] == 5 and st["waiting"] == 0 and st["active"] == 0
    by_tenant = st["max_active_by_tenant"]
    assert set(by_tenant) == {"t0", "t1"}
    assert all(1 <= n <= 2 for n in by_tenant.values())


def test_max_active_by_tenant(sim):
    s = sim(itl=100)
    conns = []
    try:
        for tenant in ("a", "a", "a", "b"):
            c = Conn(s.port, timeout=5)
            c.send("POST", "/v1/chat/completions",
                   chat_body(max_tokens=5, stream=True),
                   headers={"X-Infergate-Tenant": tenant})
            conns.append(c)
        wait_stats(s, lambda x: x["active"] == 4)
    finally:
        for c in conns:
            c.close()
    st = wait_stats(s, lambda x: x["active"] == 0)
    assert st["max_active_by_tenant"] == {"a": 3, "b": 1}
    assert st["max_active"] == 4


def test_keep_alive_counts_one_connection(sim):
    s = sim()
    before = sim_stats(s)["connections"]
    c = http_client.HTTPConnection("127.0.0.1", s.port, timeout=5)
    try:
        for _ in range(3):
            c.request("POST", "/v1/chat/completions",
                      json.dumps(chat_body(max_tokens=2)),
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            assert r.status == 200
            json.loads(r.read())
        c.request("POST", "/v1/completions",
                  json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 2,
                              "stream": True}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200
        assert r.read().endswith(b"data: [DONE]\n\n")
        c.request("GET", "/v1/models")
        r = c.getresponse()
        assert r.status == 200
        r.read()
    finally:
        c.close()
    # our one connection, plus the one that asks for these stats
    assert sim_stats(s)["connections"] - before == 2


def test_pipelined_requests(sim):
    s = sim()
    conn = Conn(s.port, timeout=5)
    try:
        conn.sock.sendall(
            request_bytes("POST", "/v1/completions",
                          {"model": MODEL, "prompt": "x", "max_tokens": 1}) +
            request_bytes("POST", "/v1/completions",
                          {"model": MODEL, "prompt": "x", "max_tokens": 2,
                           "stream": True}) +
            request_bytes("GET", "/health"))
        status, _, body = conn.response()
        assert status == 200 and json.loads(body)["choices"][0]["text"] == "tok0 "
        status, headers, body = conn.response()
        assert status == 200 and body.endswith(b"data: [DONE]\n\n")
        status, _, body = conn.response()
        assert status == 200 and body == b""
    finally:
        conn.close()


def test_many_concurrent_streams(sim):
    """A small load check: 200 streams at once all finish, in about one stream's time."""
    s = sim(ttft=20, itl=20, max_concurrent=0)
    conns = []
    try:
        t0 = time.monotonic()
        for _ in range(200):
            c = Conn(s.port, timeout=10)
            c.send("POST", "/v1/chat/completions", chat_body(max_tokens=16, stream=True))
            conns.append(c)
        results = [read_stream(c, t0) for c in conns]
        elapsed = time.monotonic() - t0
    finally:
        for c in conns:
            c.close()
    assert all(r.complete and len(r.events) == 17 for r in results)
    assert elapsed < 8
    st = sim_stats(s)
    assert st["completed"] == 200 and st["max_active"] > 50


# ---- flags, signals ----------------------------------------------------------

@pytest.mark.parametrize("argv", [
    [],                                         # --port is required
    ["--port", "0"],
    ["--port", "70000"],
    ["--port", "x"],
    ["--port", "%PORT", "--fail-rate", "1.5"],
    ["--port", "%PORT", "--close-rate", "-0.1"],
    ["--port", "%PORT", "--hang-rate", "nan"],
    ["--port", "%PORT", "--ttft", "-1"],
    ["--port", "%PORT", "--itl", "10ms"],
    ["--port", "%PORT", "--fail-status", "200"],
    ["--port", "%PORT", "--default-max-tokens", "0"],
    ["--port", "%PORT", "--seed", "-3"],
    ["--port", "%PORT", "--model", ""],
    ["--port", "%PORT", "--address", "localhost.invalid"],
    ["--port", "%PORT", "--no-such-flag"],
    ["--port", "%PORT", "extra"],
    ["--port", "%PORT", "--stamp=1"],           # takes no value
])
def test_bad_flags_exit_2(argv):
    port = str(free_port())
    argv = [port if a == "%PORT" else a for a in argv]
    p = subprocess.run([SIM] + argv, capture_output=True, timeout=10)
    assert p.returncode == 2, (argv, p.stderr)
    assert p.stderr.strip()


def test_help():
    p = subprocess.run([SIM, "--help"], capture_output=True, timeout=10)
    assert p.returncode == 0
    out = p.stdout.decode()
    for flag in ("--port", "--ttft", "--itl", "--max-concurrent",
                 "--startup-delay", "--fail-rate", "--close-rate",
                 "--close-after", "--hang-rate", "--seed", "--stamp",
                 "Token rule"):
        assert flag in out


def test_sigterm_exits_cleanly_mid_stream(sim):
    s = sim(itl=100, max_concurrent=1)
    conns = []
    try:
        for _ in range(2):                      # one generating, one queued
            c = Conn(s.port, timeout=5)
            c.send("POST", "/v1/chat/completions",
                   chat_body(max_tokens=50, stream=True))
            conns.append(c)
        hung = Conn(s.port, timeout=5)
        conns.append(hung)
        wait_stats(s, lambda x: x["active"] == 1 and x["waiting"] == 1)
        assert s.stop() == 0
    finally:
        for c in conns:
            c.close()
    with open(s.log_path) as f:
        log = f.read()
    assert "ERROR" not in log and "runtime error" not in log
