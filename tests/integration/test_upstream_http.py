"""Backend responses the simulator never sends, from a scripted raw
backend: close-delimited bodies, trailers, malformed heads. Each gets its
exact outcome and the gateway keeps serving."""
import hashlib
import json
import socket
import threading

import pytest

from conftest import access_lines, free_port, http, sim_stats
from test_proxy import CHAT, gw_config

BODY = json.dumps({"id": "x", "object": "chat.completion", "created": 1,
                   "model": "m", "choices": [],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                             "total_tokens": 2}}).encode()


def chunk(b):
    return b"%x\r\n" % len(b) + b + b"\r\n"


class RawBackend:
    """Answers every request with RESPONSE; closes after it when CLOSE
    (a FIN, after which it waits for the gateway's own close)."""

    def __init__(self, response, close):
        self.response, self.close = response, close
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.stopping = False
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(5)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, rest = buf.split(b"\r\n\r\n", 1)
                n = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":", 1)[1])
                while len(rest) < n:
                    d = c.recv(65536)
                    if not d:
                        return
                    rest += d
                buf = rest[n:]
                c.sendall(self.response)
                if self.close:
                    c.shutdown(socket.SHUT_WR)
                    while c.recv(65536):
                        pass
                    return
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stopping = True
        self.t.join()
        self.ls.close()


@pytest.fixture
def backend(gateway, workdir):
    started = []

    def start(response, close=False):
        b = RawBackend(response, close)
        started.append(b)
        return b, gateway(gw_config([b.port], workdir, workers=1))
    yield start
    for b in started:
        b.stop()


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize("stream", [False, True])
def test_close_delimited_body_completes(backend, stream):
    b, g = backend(HEAD + b"\r\n" + BODY, close=True)
    st, hdrs, body = http("POST", g.url + "/v1/chat/completions",
                          dict(CHAT, stream=stream))
    assert st == 200
    assert body == BODY
    assert http("GET", g.url + "/v1/models")[0] == 200


@pytest.mark.parametrize("stream", [False, True])
def test_chunked_trailer_skipped(backend, stream):
    b, g = backend(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunk(BODY) +
                   b"0\r\nX-Trailer: 1\r\n\r\n")
    for i in range(3):
        st, hdrs, body = http("POST", g.url + "/v1/chat/completions",
                              dict(CHAT, stream=stream))
        assert st == 200
        assert body == BODY
        assert "x-trailer" not in hdrs


MALFORMED = [
    ("empty_header_name", HEAD + b": v\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY),
    ("cl_and_te", HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" +
     chunk(BODY) + b"0\r\n\r\n"),
    ("duplicate_cl", HEAD + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n"
     % (len(BODY), len(BODY)) + BODY),
    ("bad_chunk_size", HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"),
    ("head_padded_3mib", HEAD + b"X-Pad:" + b" " * (3 << 20) + b"v\r\n"
     b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY),
]


@pytest.mark.parametrize("name,response", MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_malformed_response_gives_502(backend, name, response):
    b, g = backend(response)
    st, _, body = http("POST", g.url + "/v1/chat/completions", CHAT)
    assert st == 502, (name, body)
    err = json.loads(body)["error"]
    assert err["code"] == "upstream_error", err
    assert err["message"].startswith("the backend failed: "), err


NO_RETRY_POOL = """    balance: round_robin
    retries:
      max_per_request: 1
    ejection:
      after: 0
"""


@pytest.mark.parametrize("close,status", [(True, 502), (False, 504)])
def test_a_request_the_backend_got_is_not_sent_again(sim, gateway, workdir,
                                                     close, status):
    # the backend reads the request, then closes without a byte of answer
    # (a crash) or keeps it past first_byte (a long generation): the
    # client gets the failure; it never goes on to the next backend, which
    # would do the work (and, for a crash, crash) again
    s = sim()
    b = RawBackend(b"", close)
    try:
        g = gateway(gw_config([b.port, s.port], workdir, workers=1,
                              pool_extra=NO_RETRY_POOL))
        statuses = sorted(http("POST", g.url + "/v1/chat/completions",
                               CHAT)[0] for _ in range(2))
        assert statuses == [200, status]
        assert sim_stats(s)["requests"] == 1
    finally:
        b.stop()


def test_a_request_that_never_reached_the_backend_is_retried(sim, gateway,
                                                             workdir):
    s = sim()
    g = gateway(gw_config([free_port(), s.port], workdir, workers=1,
                          pool_extra=NO_RETRY_POOL))
    for _ in range(4):
        assert http("POST", g.url + "/v1/chat/completions", CHAT)[0] == 200
    assert sim_stats(s)["requests"] == 4


KEY = "sk-upstream-http"
TENANT = ('tenants:\n  - id: t\n    keys: ["sha256:%s"]\n'
          % hashlib.sha256(KEY.encode()).hexdigest())


def sse_response(events, sep):
    body = b"".join(chunk(e.encode() + sep) for e in events)
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n")


CONTENT = ('data: {"id":"x","object":"chat.completion.chunk","created":1,'
           '"model":"m","choices":[{"index":0,"delta":{"content":"hi"},'
           '"finish_reason":null}]}')
USAGE = ('data: {"id":"x","object":"chat.completion.chunk","created":1,'
         '"model":"m","choices":[],"usage":{"prompt_tokens":3,'
         '"completion_tokens":7,"total_tokens":10}}')


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n", b"\n\r\n"])
def test_sse_events_with_crlf_line_ends_are_read(gateway, workdir, sep):
    # sse-starlette (llama.cpp's Python server) ends lines with CRLF: the
    # events are still read one by one, the usage chunk the gateway asked
    # for is taken out and charged
    b = RawBackend(sse_response([CONTENT, USAGE, "data: [DONE]"], sep), False)
    try:
        g = gateway(gw_config([b.port], workdir, workers=1, extra=TENANT))
        st, _, body = http("POST", g.url + "/v1/chat/completions",
                           dict(CHAT, stream=True),
                           headers={"Authorization": "Bearer " + KEY})
        assert st == 200
        assert b'"content":"hi"' in body and b"data: [DONE]" in body
        assert b'"usage"' not in body
        line = access_lines(workdir)[-1]
        assert line["tokens_out"] == 7 and line["usage_estimated"] is False
    finally:
        b.stop()


def test_an_sse_event_past_1_mib_is_passed_on_unread(gateway, workdir):
    big = "data: " + "x" * (1536 * 1024)
    b = RawBackend(sse_response([big, CONTENT, "data: [DONE]"], b"\n\n"),
                   False)
    try:
        g = gateway(gw_config([b.port], workdir, workers=1, extra=TENANT))
        st, _, body = http("POST", g.url + "/v1/chat/completions",
                           dict(CHAT, stream=True),
                           headers={"Authorization": "Bearer " + KEY})
        assert st == 200
        assert big.encode() in body and b"data: [DONE]" in body
        assert "passed on unread" in g.output()
    finally:
        b.stop()


def test_backends_are_asked_for_identity_encoding(sim, gateway, workdir):
    # the gateway reads bodies (usage) and writes its own events into
    # streams: a compressed body would defeat both
    s = sim()
    g = gateway(gw_config([s.port], workdir, workers=1))
    st, _, _ = http("POST", g.url + "/v1/chat/completions", CHAT,
                    headers={"Accept-Encoding": "gzip, br"})
    assert st == 200
    assert sim_stats(s)["last_request"]["headers"]["accept-encoding"] == \
        "identity"
