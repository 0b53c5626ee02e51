"""Pool capacity: max_inflight, the bounded priority queue, fallback."""
import signal
import time

import pytest

from conftest import access_lines, metrics, sim_stats, wait_metric
from rawhttp import Conn, request
from test_proxy import gw_config


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 5}


def config(backends, workdir, max_inflight=1, max_waiting=4,
           max_wait="5s", workers=1, extra_pools="", models=None,
           tenants=""):
    return gw_config(backends, workdir, extra=tenants, workers=workers,
                     models=models, pool_extra="""    max_inflight: %d
    queue:
      max_waiting: %d
      max_wait: %s
""" % (max_inflight, max_waiting, max_wait) + extra_pools)


def send(g, body=CHAT, headers=None):
    c = Conn(g.port, timeout=10)
    c.send(request("POST", "/v1/chat/completions", body, headers))
    return c


INFL = 'infergate_pool_inflight{pool="p"}'
DEPTH = 'infergate_pool_queue_depth{pool="p"}'


@pytest.mark.parametrize("workers", [1, 2])
def test_max_inflight_queues_then_sheds(sim, gateway, workdir, workers):
    s = sim(ttft=300)
    g = gateway(config([s.port], workdir, max_inflight=1, max_waiting=2,
                       workers=workers))
    m = metrics(g)
    assert m['infergate_pool_max_inflight{pool="p"}'] == 1
    a = send(g)
    wait_metric(g, INFL, 1)
    queued = [send(g), send(g)]
    wait_metric(g, DEPTH, 2)
    # the queue is full: the fourth is shed at once, with Retry-After
    t0 = time.monotonic()
    d = send(g).read_response()
    assert time.monotonic() - t0 < 0.25
    assert d.status == 503
    assert d.header("retry-after") == "1"
    err = d.json()["error"]
    assert err["code"] == "pool_overloaded" and err["type"] == "server_error"
    assert "queue is full" in err["message"]
    # the others are served one at a time
    for c in [a] + queued:
        assert c.read_response().status == 200
    assert sim_stats(s)["max_active"] == 1
    m = wait_metric(g, INFL, 0)
    assert m[DEPTH] == 0
    assert m['infergate_pool_queued_total{pool="p"}'] == 2
    assert m['infergate_pool_shed_total{pool="p",reason="queue_full"}'] == 1
    waited = [l["queue_ms"] for l in access_lines(workdir)
              if l["status"] == 200 and l["queue_ms"] > 0]
    assert len(waited) == 2 and max(waited) >= 250


def test_queue_max_wait_gives_503(sim, gateway, workdir):
    s = sim(ttft=1500)
    g = gateway(config([s.port], workdir, max_wait="200ms"))
    a = send(g)
    wait_metric(g, INFL, 1)
    t0 = time.monotonic()
    b = send(g).read_response()
    took = time.monotonic() - t0
    assert b.status == 503 and 0.15 <= took < 1.2
    assert b.json()["error"]["code"] == "queue_timeout"
    assert b.header("retry-after") == "1"
    assert a.read_response().status == 200
    m = metrics(g)
    assert m['infergate_pool_shed_total{pool="p",reason="queue_timeout"}'] == 1
    assert sim_stats(s)["requests"] == 1


def test_higher_priority_goes_first(sim, gateway, workdir):
    s = sim(ttft=300)
    g = gateway(config([s.port], workdir, max_waiting=10))
    a = send(g)
    wait_metric(g, INFL, 1)
    low = send(g, headers={"X-Infergate-Priority": "low"})
    wait_metric(g, DEPTH, 1)
    high = send(g, headers={"X-Infergate-Priority": "high"})
    wait_metric(g, DEPTH, 2)
    assert a.read_response().status == 200
    # the high one is sent when a's slot frees; low waits for high's
    wait_metric(g, DEPTH, 1)
    assert high.read_response().status == 200
    assert low.read_response().status == 200
    done = [(l["priority"], l["queue_ms"]) for l in access_lines(workdir)]
    assert [p for p, _ in done] == ["normal", "high", "low"]


def test_full_queue_sheds_lowest_priority_youngest(sim, gateway, workdir):
    s = sim(ttft=400)
    g = gateway(config([s.port], workdir, max_waiting=2))
    a = send(g)
    wait_metric(g, INFL, 1)
    low1 = send(g, headers={"X-Infergate-Priority": "low"})
    wait_metric(g, DEPTH, 1)
    low2 = send(g, headers={"X-Infergate-Priority": "low"})
    wait_metric(g, DEPTH, 2)
    high = send(g, headers={"X-Infergate-Priority": "high"})
    # the youngest low one gives its place to the high one
    r = low2.read_response()
    assert r.status == 503 and r.header("retry-after") == "1"
    assert "higher priority" in r.json()["error"]["message"]
    assert metrics(g)[DEPTH] == 2
    # a low newcomer to a full queue is the one refused
    assert send(g, headers={"X-Infergate-Priority": "low"}).read_response() \
        .status == 503
    for c in (a, high, low1):
        assert c.read_response().status == 200
    m = metrics(g)
    assert m['infergate_pool_shed_total{pool="p",reason="displaced"}'] == 1
    assert m['infergate_pool_shed_total{pool="p",reason="queue_full"}'] == 1


def test_bad_priority_header_is_400(sim, gateway, workdir):
    s = sim()
    g = gateway(config([s.port], workdir))
    r = send(g, headers={"X-Infergate-Priority": "urgent"}).read_response()
    assert r.status == 400
    assert r.json()["error"]["code"] == "invalid_priority"
    assert sim_stats(s)["requests"] == 0


def test_client_gone_while_queued_leaves_the_queue(sim, gateway, workdir):
    s = sim(ttft=400)
    g = gateway(config([s.port], workdir, workers=2))
    a = send(g)
    wait_metric(g, INFL, 1)
    b = send(g)
    wait_metric(g, DEPTH, 1)
    b.close()
    wait_metric(g, DEPTH, 0)
    assert a.read_response().status == 200
    wait_metric(g, INFL, 0)
    # the slot and the place were given back: the next one goes at once
    t0 = time.monotonic()
    assert send(g).read_response().status == 200
    assert time.monotonic() - t0 < 1.0
    assert sim_stats(s)["requests"] == 2
    assert any(l["outcome"] == "client_abort" for l in access_lines(workdir))


# m (pool p) falls back to m2 (pool p2, served as "other-model").
FALLBACK_MODELS = """
models:
  - name: m
    pool: p
    upstream_model: sim-model
    fallback: [m2]
  - name: m2
    pool: p2
    upstream_model: other-model
"""


def pool_yaml(name, port):
    """One more pool (for extra_pools) with one backend."""
    return '\n  %s:\n    backends:\n      - address: "127.0.0.1:%d"\n' % (
        name, port)


def test_fallback_when_pool_full(sim, gateway, workdir):
    s1 = sim(ttft=400)
    s2 = sim(model="other-model")
    g = gateway(config([s1.port], workdir, max_waiting=0,
                       extra_pools=pool_yaml("p2", s2.port),
                       models=FALLBACK_MODELS))
    a = send(g)
    wait_metric(g, INFL, 1)
    r = send(g).read_response()
    assert r.status == 200
    assert sim_stats(s2)["requests"] == 1
    assert a.read_response().status == 200
    line = [l for l in access_lines(workdir) if l.get("fallback_from")]
    assert len(line) == 1
    assert line[0]["fallback_from"] == "m" and line[0]["pool"] == "p2"
    assert metrics(g)['infergate_pool_fallbacks_total{pool="p"}'] == 1


def _small_fallback(sim, gateway, workdir, tenants="", headers=None):
    """p full (one slow request in it), m2's pool free but with a context
    of 40 tokens. Returns (fallback sim, gateway, the slow request)."""
    s1 = sim(ttft=600)
    s2 = sim(model="other-model")
    models = FALLBACK_MODELS.replace("    upstream_model: other-model\n",
                                     "    upstream_model: other-model\n"
                                     "    context_tokens: 40\n")
    g = gateway(config([s1.port], workdir, max_waiting=0, tenants=tenants,
                       extra_pools=pool_yaml("p2", s2.port), models=models))
    a = send(g, headers=headers)
    wait_metric(g, INFL, 1)
    return s2, g, a


def test_fallback_skips_a_model_whose_context_is_too_small(sim, gateway,
                                                          workdir):
    # a long prompt is shed rather than sent to a model server that cannot
    # take it; a short one falls back
    s2, g, a = _small_fallback(sim, gateway, workdir)
    long = dict(CHAT, messages=[{"role": "user", "content": "hello " * 100}])
    r = send(g, long).read_response()
    assert r.status == 503
    assert r.json()["error"]["code"] == "pool_overloaded"
    # a short prompt asking more output than the context holds: shed too
    r = send(g, dict(CHAT, max_tokens=100)).read_response()
    assert r.status == 503
    r = send(g, dict(CHAT, max_tokens=5)).read_response()
    assert r.status == 200
    assert sim_stats(s2)["requests"] == 1
    assert a.read_response().status == 200


def test_fallback_counts_the_output_cap_the_gateway_writes(sim, gateway,
                                                           workdir):
    # no max_tokens from the client, the tenant's cap written into the
    # body: that is the output the fallback's context must hold
    tenants = """
tenants:
  - id: t
    keys: ["sha256:%s"]
    models: ["*"]
    limits:
      max_output_tokens: 100
""" % __import__("hashlib").sha256(b"key-t").hexdigest()
    auth = {"Authorization": "Bearer key-t"}
    s2, g, a = _small_fallback(sim, gateway, workdir, tenants, auth)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    r = send(g, body, headers=auth).read_response()
    assert r.status == 503
    assert sim_stats(s2)["requests"] == 0
    assert a.read_response().status == 200


def test_tenant_priority_and_its_cap(sim, gateway, workdir):
    s = sim()
    tenants = """
tenants:
  - id: t
    keys: ["sha256:%s"]
    models: ["*"]
    priority: low
    max_priority: normal
""" % __import__("hashlib").sha256(b"key-t").hexdigest()
    g = gateway(config([s.port], workdir, tenants=tenants))
    auth = {"Authorization": "Bearer key-t"}
    assert send(g, headers=auth).read_response().status == 200
    assert send(g, headers=dict(auth, **{"X-Infergate-Priority": "high"})) \
        .read_response().status == 200
    assert [l["priority"] for l in access_lines(workdir)] == ["low", "normal"]


def test_reload_keeps_the_count_in_flight(sim, gateway, workdir):
    s = sim(ttft=500)
    g = gateway(config([s.port], workdir, workers=2))
    a = send(g)
    wait_metric(g, INFL, 1)
    with open(g.config_path) as f:
        text = f.read()
    with open(g.config_path, "w") as f:
        f.write(text.replace("max_waiting: 4", "max_waiting: 5"))
    g.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while metrics(g).get("infergate_reloads_total") != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    b = send(g)
    wait_metric(g, DEPTH, 1)   # a's slot still counts after the reload
    assert a.read_response().status == 200
    assert b.read_response().status == 200
    assert sim_stats(s)["max_active"] == 1


def test_slots_pass_between_workers(sim, gateway, workdir):
    # Six connections spread over two workers (SO_REUSEPORT): a slot that
    # comes free on one worker must reach the waiters of the other, or
    # they would wait out max_wait (3s) and get 503.
    s = sim(ttft=150)
    g = gateway(config([s.port], workdir, max_waiting=8, max_wait="3s",
                       workers=2))
    t0 = time.monotonic()
    conns = [send(g) for _ in range(6)]
    statuses = [c.read_response().status for c in conns]
    assert statuses == [200] * 6
    assert time.monotonic() - t0 < 2.5
    assert sim_stats(s)["max_active"] == 1
    assert metrics(g)['infergate_pool_queued_total{pool="p"}'] >= 4


def test_reload_raising_max_inflight_frees_the_waiters(sim, gateway, workdir):
    s = sim(ttft=1500)
    g = gateway(config([s.port], workdir, max_waiting=4))
    a = send(g)
    wait_metric(g, INFL, 1)
    b = send(g)
    wait_metric(g, DEPTH, 1)
    with open(g.config_path) as f:
        text = f.read()
    with open(g.config_path, "w") as f:
        f.write(text.replace("max_inflight: 1", "max_inflight: 4"))
    g.signal(signal.SIGHUP)
    t0 = time.monotonic()
    # the waiter is held to the new limit at once, not when a finishes
    wait_metric(g, DEPTH, 0, timeout=1.0)
    assert time.monotonic() - t0 < 1.0
    # out of the queue is not yet at the backend: its arrival is polled
    # (a's 1.5 s to its first token is what tells at once from later)
    while sim_stats(s)["max_active"] < 2 and time.monotonic() - t0 < 1.0:
        time.sleep(0.01)
    assert sim_stats(s)["max_active"] == 2
    assert a.read_response().status == 200
    assert b.read_response().status == 200
    assert metrics(g)['infergate_pool_max_inflight{pool="p"}'] == 4
