"""Backends: active health checks, passive ejection, least_inflight
balancing, when_empty."""
import json
import signal
import time

from conftest import (access_lines, free_port, http, metrics, sim_stats,
                      wait_metric)
from rawhttp import Conn, request
from test_capacity import FALLBACK_MODELS, pool_yaml
from test_proxy import gw_config

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 5}


def config(ports, workdir, pool_extra="", workers=1, models=None,
           extra_pools=""):
    return gw_config(ports, workdir, pool_extra=pool_extra + extra_pools,
                     workers=workers, models=models)


HEALTH = """
    health:
      path: /v1/models
      interval: 100ms
      timeout: 500ms
      healthy_after: 1
      unhealthy_after: 1
"""


# models m on pool p, mq on pool q
TWO_POOL_MODELS = """
models:
  - name: m
    pool: p
    upstream_model: sim-model
  - name: mq
    pool: q
    upstream_model: sim-model
"""


def up(g, port, pool="p"):
    return metrics(g).get('infergate_backend_up{pool="%s",backend='
                          '"127.0.0.1:%d"}' % (pool, port))


def wait_up(g, port, value, timeout=5.0, pool="p"):
    deadline = time.monotonic() + timeout
    while up(g, port, pool) != value:
        assert time.monotonic() < deadline, "backend %d up != %r" % (port, value)
        time.sleep(0.02)


def post(g, body=CHAT, timeout=10):
    return http("POST", g.url + "/v1/chat/completions", body, timeout=timeout)


def test_health_check_keeps_a_loading_backend_out(sim, gateway, workdir):
    # vLLM answers /health long before the model is loaded; /v1/models
    # (what the checks ask) only after: the loading one gets nothing.
    loading = sim(startup_delay=1500)
    ready = sim()
    g = gateway(config([loading.port, ready.port], workdir, HEALTH))
    wait_up(g, loading.port, 0)
    assert up(g, ready.port) == 1
    for _ in range(10):
        st, _, _ = post(g)
        assert st == 200
    assert sim_stats(loading)["requests"] == 0
    assert sim_stats(ready)["requests"] == 10
    # once loaded it is checked up and takes its share
    wait_up(g, loading.port, 1, timeout=5)
    for _ in range(20):
        assert post(g)[0] == 200
    assert sim_stats(loading)["requests"] > 0
    m = metrics(g)
    assert m['infergate_backend_health_check_failures_total{pool="p",'
             'backend="127.0.0.1:%d"}' % loading.port] >= 1


def test_dead_backend_is_ejected_after_failures(sim, gateway, workdir):
    a = sim()
    dead = free_port()      # nothing listens: connections are refused
    g = gateway(config([a.port, dead], workdir, """
    retries:
      max_per_request: 1
    ejection:
      after: 2
      duration: 30s
"""))
    for _ in range(20):
        st, _, _ = post(g)
        assert st == 200    # a refused attempt is retried on the other
    lines = [l for l in access_lines(workdir) if l["status"] == 200]
    retried = [l for l in lines if l["attempts"] == 2]
    # two failures eject it; after that no request tries it
    assert len(retried) == 2
    assert all(l["attempts"] == 1 for l in lines[-10:])
    m = metrics(g)
    key = '{pool="p",backend="127.0.0.1:%d"}' % dead
    assert m["infergate_backend_ejections_total" + key] == 1
    assert m["infergate_backend_up" + key] == 0


def test_a_backend_answering_only_errors_is_ejected_after_5xx(sim, gateway,
                                                             workdir):
    bad = sim(fail_rate=1, fail_status=500)
    good = sim()
    g = gateway(config([bad.port, good.port], workdir, """
    ejection:
      after_5xx: 2
      duration: 30s
"""))
    series = '{pool="p",backend="127.0.0.1:%d"}' % bad.port
    deadline = time.monotonic() + 5
    while metrics(g)["infergate_backend_ejections_total" + series] != 1:
        assert time.monotonic() < deadline
        st = post(g)[0]
        assert st in (200, 500)         # a 5xx is passed on, not retried
    assert sim_stats(bad)["requests"] == 2  # two in a row, then out
    assert up(g, bad.port) == 0
    for _ in range(10):
        assert post(g)[0] == 200
    assert sim_stats(bad)["requests"] == 2


def test_5xx_answers_do_not_eject_by_default(sim, gateway, workdir):
    bad = sim(fail_rate=1, fail_status=503)
    good = sim()
    g = gateway(config([bad.port, good.port], workdir))
    for _ in range(20):
        post(g)
    assert sim_stats(bad)["requests"] >= 5
    assert metrics(g)['infergate_backend_ejections_total{pool="p",backend='
                      '"127.0.0.1:%d"}' % bad.port] == 0


def test_only_ejected_backends_left_are_still_used(sim, gateway, workdir):
    # Passive ejection never empties a pool: with every backend ejected,
    # requests still go (and are answered 502, not left without a try).
    dead = free_port()
    g = gateway(config([dead], workdir, """
    ejection:
      after: 1
      duration: 30s
"""))
    for _ in range(3):
        st, _, body = post(g)
        assert st == 502
        assert json.loads(body)["error"]["code"] == "upstream_error"
    assert [l["attempts"] for l in access_lines(workdir)] == [1, 1, 1]


def test_least_inflight_avoids_the_busy_backend(sim, gateway, workdir):
    a = sim(itl=100)
    b = sim(itl=100)
    g = gateway(config([a.port, b.port], workdir))
    long = Conn(g.port, timeout=10)
    long.send(request("POST", "/v1/chat/completions",
                      dict(CHAT, stream=True, max_tokens=30)))
    assert long.read_head()[0] == 200
    busy = a if sim_stats(a)["active"] == 1 else b
    idle = b if busy is a else a
    # while one stream holds `busy`, every new request goes to `idle`
    for _ in range(6):
        assert post(g, dict(CHAT, max_tokens=1))[0] == 200
    assert sim_stats(idle)["requests"] == 6
    assert sim_stats(busy)["requests"] == 1
    m = metrics(g)
    assert m['infergate_backend_inflight{pool="p",backend="127.0.0.1:%d"}'
             % busy.port] == 1
    long.close()


def test_round_robin_alternates(sim, gateway, workdir):
    a = sim()
    b = sim()
    g = gateway(config([a.port, b.port], workdir, "    balance: round_robin\n"))
    for _ in range(10):
        assert post(g)[0] == 200
    assert sim_stats(a)["requests"] == 5 and sim_stats(b)["requests"] == 5


def test_round_robin_follows_weight(sim, gateway, workdir):
    a = sim()
    b = sim()
    cfg = config([a.port, b.port], workdir, "    balance: round_robin\n")
    cfg = cfg.replace('      - address: "127.0.0.1:%d"' % a.port,
                      '      - address: "127.0.0.1:%d"\n        weight: 3'
                      % a.port)
    g = gateway(cfg)
    for _ in range(12):
        assert post(g)[0] == 200
    assert sim_stats(a)["requests"] == 9 and sim_stats(b)["requests"] == 3


def test_when_empty_fail_gives_503_at_once(sim, gateway, workdir):
    s = sim(startup_delay=5000)
    g = gateway(config([s.port], workdir, HEALTH + "    when_empty: fail\n"))
    wait_up(g, s.port, 0)
    t0 = time.monotonic()
    st, hdrs, body = post(g)
    assert st == 503 and time.monotonic() - t0 < 0.5
    err = json.loads(body)["error"]
    assert err["code"] == "no_backend" and "ready" in err["message"]
    assert hdrs.get("retry-after") == "1"
    assert sim_stats(s)["requests"] == 0


def test_when_empty_queue_waits_for_a_backend(sim, gateway, workdir):
    s = sim(startup_delay=1200)
    g = gateway(config([s.port], workdir, HEALTH + """
    when_empty: queue
    queue:
      max_wait: 5s
"""))
    wait_up(g, s.port, 0)
    t0 = time.monotonic()
    st, _, _ = post(g)
    took = time.monotonic() - t0
    assert st == 200            # held until the checks saw it ready
    assert sim_stats(s)["requests"] >= 1
    line = access_lines(workdir)[-1]
    assert line["status"] == 200 and line["queue_ms"] > 100
    assert took < 4


def test_when_empty_queue_gives_up_after_max_wait(sim, gateway, workdir):
    s = sim(startup_delay=10000)
    g = gateway(config([s.port], workdir, HEALTH + """
    when_empty: queue
    queue:
      max_wait: 300ms
"""))
    wait_up(g, s.port, 0)
    t0 = time.monotonic()
    st, hdrs, body = post(g)
    assert st == 503 and 0.25 < time.monotonic() - t0 < 2
    assert json.loads(body)["error"]["code"] == "no_backend"
    assert hdrs.get("retry-after") == "1"


def test_when_empty_fallback(sim, gateway, workdir):
    down = sim(startup_delay=10000)
    other = sim(model="other-model")
    g = gateway(config([down.port], workdir, HEALTH + "    when_empty: fallback\n",
                       models=FALLBACK_MODELS,
                       extra_pools=pool_yaml("p2", other.port)))
    wait_up(g, down.port, 0)
    st, _, _ = post(g)
    assert st == 200
    assert sim_stats(other)["requests"] == 1
    assert access_lines(workdir)[-1]["fallback_from"] == "m"


def test_health_state_survives_reload_and_new_backend_is_checked(
        sim, gateway, workdir):
    loading = sim(startup_delay=10000)
    ready = sim()
    g = gateway(config([ready.port], workdir, HEALTH))
    wait_up(g, ready.port, 1)
    with open(g.config_path) as f:
        text = f.read()
    line = '      - address: "127.0.0.1:%d"' % ready.port
    with open(g.config_path, "w") as f:
        f.write(text.replace(line, line + '\n      - address: "127.0.0.1:%d"'
                             % loading.port))
    g.signal(signal.SIGHUP)
    wait_up(g, loading.port, 0)
    for _ in range(10):
        assert post(g)[0] == 200
    assert sim_stats(loading)["requests"] == 0
    assert up(g, ready.port) == 1
    # it was never up, so it never goes down: its first failed check is
    # what the log says of it, once
    said = "backend 127.0.0.1:%d: not up yet (first health check" % loading.port
    deadline = time.monotonic() + 5
    while said not in g.output():
        assert time.monotonic() < deadline, g.output()
        time.sleep(0.05)
    time.sleep(0.3)     # further failed checks (every 100 ms) say nothing
    assert g.output().count(said) == 1
    assert "127.0.0.1:%d: down" % loading.port not in g.output()


class SlowCheckBackend:
    """An OpenAI-ish backend whose health checks (GET) answer 200 only
    after DELAY seconds; POSTs answer a chat completion at once and are
    counted."""

    def __init__(self, delay, address="127.0.0.1", port=0):
        import http.server
        import threading
        outer = self
        self.posts = 0
        body = json.dumps({
            "id": "x", "object": "chat.completion", "created": 1,
            "model": "sim-model",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                      "total_tokens": 2}}).encode()

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def reply(self, data):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                time.sleep(delay)
                self.reply(b'{"object":"list","data":[]}')

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.posts += 1
                self.reply(body)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer((address, port), H)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


SLOW_HEALTH = HEALTH.replace("timeout: 500ms", "timeout: 5s")


def test_a_backend_a_reload_adds_waits_for_its_first_check(
        sim, gateway, workdir):
    # a new backend in a serving pool takes nothing before its first check
    # passes (here 1.5 s away); then it takes its share
    ready = sim()
    new = SlowCheckBackend(1.5)
    try:
        g = gateway(config([ready.port], workdir, SLOW_HEALTH))
        wait_up(g, ready.port, 1)
        with open(g.config_path) as f:
            text = f.read()
        line = '      - address: "127.0.0.1:%d"' % ready.port
        with open(g.config_path, "w") as f:
            f.write(text.replace(line, line + '\n      - address: '
                                 '"127.0.0.1:%d"' % new.port))
        g.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while up(g, new.port) is None:
            assert time.monotonic() < deadline, "reload not applied"
            time.sleep(0.01)
        assert up(g, new.port) == 0
        for _ in range(10):
            assert post(g)[0] == 200
        assert new.posts == 0
        wait_up(g, new.port, 1)
        for _ in range(10):
            assert post(g)[0] == 200
        assert new.posts > 0
    finally:
        new.stop()


def test_an_address_shared_with_a_pool_the_reload_adds_is_not_held_back(
        sim, gateway, workdir):
    # the reload adds NEW to serving pool p and makes pool q of NEW alone:
    # one state for both, so q's "a new pool starts ready" wins and q is
    # served at once, before NEW's first check passes
    ready = sim()
    new = SlowCheckBackend(1.5)
    try:
        g = gateway(config([ready.port], workdir, SLOW_HEALTH))
        wait_up(g, ready.port, 1)
        with open(g.config_path) as f:
            text = f.read()
        line = '      - address: "127.0.0.1:%d"' % ready.port
        text = text.replace(line, line + '\n      - address: "127.0.0.1:%d"'
                            % new.port)
        text = text.replace("\nmodels:", "\n  q:\n    backends:\n"
                            '      - address: "127.0.0.1:%d"\n' % new.port
                            + SLOW_HEALTH + "    when_empty: fail\n"
                            "\nmodels:", 1)
        text = text.replace("    upstream_model: sim-model\n",
                            "    upstream_model: sim-model\n"
                            "  - name: mq\n    pool: q\n"
                            "    upstream_model: sim-model\n", 1)
        with open(g.config_path, "w") as f:
            f.write(text)
        g.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while up(g, new.port, pool="q") is None:
            assert time.monotonic() < deadline, "reload not applied"
            time.sleep(0.01)
        st, _, body = post(g, dict(CHAT, model="mq"))
        assert st == 200, body
        assert new.posts == 1
    finally:
        new.stop()


def test_backends_of_a_starting_pool_are_ready_before_their_checks(
        gateway, workdir):
    # at start every backend is new: none waits for its first check, so
    # that a start never empties the pool
    new = SlowCheckBackend(1.5)
    try:
        g = gateway(config([new.port], workdir, SLOW_HEALTH))
        assert up(g, new.port) == 1
        assert post(g)[0] == 200
        assert new.posts == 1
    finally:
        new.stop()


def test_a_health_answer_trickled_a_byte_at_a_time_fails_the_check(
        gateway, workdir):
    # every read comes within health.timeout, the whole answer does not:
    # the check fails when its timeout is up, not when the answer ends
    import socket
    import threading
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    stop = threading.Event()

    def trickle(c):
        try:
            c.recv(4096)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            while not stop.wait(0.1):
                c.sendall(b"x")
        except OSError:
            pass
        finally:
            c.close()

    def serve():
        while not stop.is_set():
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=trickle, args=(c,), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    port = lsock.getsockname()[1]
    try:
        g = gateway(config([port], workdir, HEALTH))
        assert up(g, port) == 1         # ready until its first result
        wait_up(g, port, 0, timeout=3)
        m = metrics(g)
        assert m['infergate_backend_health_check_failures_total{pool="p",'
                 'backend="127.0.0.1:%d"}' % port] >= 1
    finally:
        stop.set()
        lsock.close()


def test_checks_count_only_in_their_own_pool(sim, gateway, workdir):
    # Pool p checks a path the backend does not serve (down for p); pool q
    # shares the address without checks and keeps using it.
    s = sim()
    g = gateway(config([s.port], workdir, HEALTH.replace("/v1/models", "/nope")
                       + "    when_empty: fail\n", models=TWO_POOL_MODELS,
                       extra_pools=pool_yaml("q", s.port)))
    wait_up(g, s.port, 0)
    assert post(g)[0] == 503
    st, _, _ = post(g, dict(CHAT, model="mq"))
    assert st == 200
    assert up(g, s.port, pool="q") == 1


def test_pool_beyond_64_backends(sim, gateway, workdir):
    # 64 dead addresses first, two live ones after: picks reach past 64.
    dead = [free_port() for _ in range(64)]
    live = [sim(), sim()]
    g = gateway(config(dead + [s.port for s in live], workdir, HEALTH +
                       "    when_empty: fail\n"))
    deadline = time.monotonic() + 10
    while any(up(g, p) != 0 for p in dead[:3] + dead[-3:]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for _ in range(8):
        assert post(g)[0] == 200
    assert sum(sim_stats(s)["requests"] for s in live) == 8


def test_backend_gone_behind_a_pooled_connection(sim, gateway, workdir):
    # The pooled connection is dead (keep-alive race: retried at once on a
    # fresh one) and the fresh one is refused: one 502, not a retry loop.
    s = sim()
    g = gateway(config([s.port], workdir))
    assert post(g)[0] == 200        # leaves a pooled connection
    s.stop()
    s.killed = True
    st, _, body = post(g)
    assert st == 502
    assert json.loads(body)["error"]["code"] == "upstream_error"
    assert post(g)[0] == 502        # and the gateway carries on


def test_retry_with_only_down_backends_left_keeps_the_real_error(
        sim, gateway, workdir):
    hangs = sim(hang_rate=1)
    loading = sim(startup_delay=10000)
    cfg = config([hangs.port, loading.port], workdir, HEALTH + """
    retries:
      max_per_request: 1
""").replace("first_byte: 2s", "first_byte: 400ms")
    g = gateway(cfg)
    wait_up(g, loading.port, 0)
    st, _, body = post(g)
    # the one try timed out; the other backend is down: 504, not 502
    assert st == 504
    assert json.loads(body)["error"]["code"] == "upstream_timeout"
    assert sim_stats(loading)["requests"] == 0


def _retry_storm(sim, gateway, workdir, budget):
    slow = sim(ttft=600)
    dead = free_port()
    g = gateway(config([dead, slow.port], workdir, """
    balance: round_robin
    retries:
      max_per_request: 1
      budget: %s
    ejection:
      after: 0
""" % budget))
    conns = []
    for _ in range(8):
        c = Conn(g.port, timeout=10)
        c.send(request("POST", "/v1/chat/completions", CHAT))
        conns.append(c)
    statuses = sorted(c.read_response().status for c in conns)
    return g, statuses


def test_retry_budget_refuses_a_retry_storm(sim, gateway, workdir):
    # Four of eight go first to the dead backend; the budget (0: the floor
    # of 3 retrying at once) lets three of them retry, not the fourth.
    g, statuses = _retry_storm(sim, gateway, workdir, "0")
    assert statuses == [200] * 7 + [502]
    m = metrics(g)
    assert m['infergate_pool_retries_refused_total{pool="p"}'] == 1
    assert m['infergate_pool_retrying{pool="p"}'] == 0


def test_retry_budget_of_whole_pool_lets_all_retry(sim, gateway, workdir):
    g, statuses = _retry_storm(sim, gateway, workdir, "1")
    assert statuses == [200] * 8
    assert metrics(g)['infergate_pool_retries_refused_total{pool="p"}'] == 0


def test_queue_depth_balancing_reads_the_servers_queues(sim, gateway, workdir):
    # A's queue is full of requests sent to it directly (the gateway has
    # none in flight there): balance: queue_depth sees it in A's metrics
    # and sends everything to B; least_inflight could not tell them apart.
    a = sim(max_concurrent=1, ttft=3000)
    b = sim(ttft=50)
    g = gateway(config([a.port, b.port], workdir, """
    balance: queue_depth
    scrape_metrics:
      path: /metrics
      interval: 100ms
"""))
    direct = []
    for _ in range(4):
        c = Conn(a.port, timeout=10)
        c.send(request("POST", "/v1/chat/completions",
                       dict(CHAT, model="sim-model")))
        direct.append(c)
    key = 'infergate_backend_queue_depth{pool="p",backend="127.0.0.1:%d"}'
    wait_metric(g, key % a.port, 3)
    for _ in range(8):
        assert post(g)[0] == 200
    assert sim_stats(b)["requests"] == 8
    assert sim_stats(a)["requests"] == 4
    for c in direct:
        c.close()


def test_scrape_reads_odd_metric_pages(gateway, workdir):
    # Labels with spaces and braces, a page without a final newline, a
    # broken line: the depth is the sum of the well-formed samples.
    import http.server
    import threading
    page = ('# HELP vllm:num_requests_waiting x\n'
            'vllm:num_requests_waiting{model_name="a b"} 2.0\n'
            'vllm:num_requests_waiting_other 50\n'
            'vllm:num_requests_waiting{broken 9\n'
            'vllm:num_requests_waiting{model_name="c"} 5').encode()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        port = srv.server_address[1]
        g = gateway(config([port], workdir, """
    balance: queue_depth
    scrape_metrics:
      interval: 100ms
"""))
        key = ('infergate_backend_queue_depth{pool="p",backend='
               '"127.0.0.1:%d"}' % port)
        wait_metric(g, key, 7)
    finally:
        srv.shutdown()


def test_parked_requests_are_bounded_and_shown(sim, gateway, workdir):
    s = sim(startup_delay=10000)
    g = gateway(config([s.port], workdir, HEALTH + """
    when_empty: queue
    queue:
      max_waiting: 1
      max_wait: 2s
"""))
    wait_up(g, s.port, 0)
    first = Conn(g.port, timeout=10)
    first.send(request("POST", "/v1/chat/completions", CHAT))
    key = 'infergate_pool_parked{pool="p"}'
    wait_metric(g, key, 1)
    # the second finds the place taken: 503 at once, not a 2 s wait
    t0 = time.monotonic()
    st, _, body = post(g)
    assert st == 503 and time.monotonic() - t0 < 0.5
    assert json.loads(body)["error"]["code"] == "no_backend"
    first.close()
    wait_metric(g, key, 0)
