"""DNS backends (dns, port, resolve_every; the resolver section): every
address a name gives is a backend, re-resolved as it goes, against a DNS
server the test controls (dnsserver.py). The simulators listen on other
loopback addresses (127.0.0.2, 127.0.0.3, ...) on one port, as the pods of
a headless Service do."""
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import GATEWAY, free_port, http, metrics, sim_stats, wait_metric
from dnsserver import DNSServer
from test_capacity import FALLBACK_MODELS
from test_proxy import gw_config

NAME = "pool.ig.test"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 5}


@pytest.fixture
def dns():
    d = DNSServer()
    yield d
    d.stop()


def dns_config(dns, port, workdir, pool_extra="", extra="", every="100ms",
               models=None, timeout="200ms", workers=2):
    """gw_config with pool p's one backend the name NAME (port PORT)."""
    cfg = gw_config([1], workdir, workers=workers, models=models, extra="""
resolver:
  nameservers: ["127.0.0.1:%d"]
  timeout: %s
  attempts: 1
%s""" % (dns.port, timeout, extra), pool_extra=pool_extra)
    return cfg.replace('      - address: "127.0.0.1:1"',
                       "      - dns: %s\n        port: %d\n"
                       "        resolve_every: %s" % (NAME, port, every))


def sims(sim, port, *hosts, **flags):
    return [sim(address=h, port=port, **flags) for h in hosts]


def post(g, body=CHAT, timeout=10):
    return http("POST", g.url + "/v1/chat/completions", body, timeout=timeout)


def label(port):
    return 'name="%s:%d"' % (NAME, port)


def wait_addresses(g, port, n, timeout=5.0):
    return wait_metric(g, "infergate_dns_addresses{%s}" % label(port), n,
                       timeout=timeout)


def test_every_address_is_a_backend(sim, gateway, workdir, dns):
    port = free_port()
    a, b = sims(sim, port, "127.0.0.2", "127.0.0.3")
    dns.set(NAME, ["127.0.0.2", "127.0.0.3"])
    g = gateway(dns_config(dns, port, workdir))
    for _ in range(20):
        st, _, body = post(g)
        assert st == 200, body
    assert sim_stats(a)["requests"] > 0 and sim_stats(b)["requests"] > 0
    m = metrics(g)
    assert m["infergate_dns_addresses{%s}" % label(port)] == 2
    for h in ("127.0.0.2", "127.0.0.3"):
        assert m['infergate_backend_up{pool="p",backend="%s:%d"}'
                 % (h, port)] == 1
    assert m['infergate_dns_resolutions_total{%s,result="ok"}'
             % label(port)] >= 1


def test_a_new_address_waits_for_its_first_health_check(sim, gateway,
                                                         workdir, dns):
    # a pod that joins a serving pool takes nothing before its first
    # check passes (1.5 s away), then takes its share
    from test_backends import SLOW_HEALTH, SlowCheckBackend
    port = free_port()
    sims(sim, port, "127.0.0.2")
    dns.set(NAME, ["127.0.0.2"])
    new = SlowCheckBackend(1.5, address="127.0.0.3", port=port)
    try:
        g = gateway(dns_config(dns, port, workdir, pool_extra=SLOW_HEALTH))
        series = 'infergate_backend_up{pool="p",backend="127.0.0.3:%d"}' % port
        assert post(g)[0] == 200
        dns.set(NAME, ["127.0.0.2", "127.0.0.3"])
        wait_metric(g, series, 0)       # published pending, never 1 first
        for _ in range(10):
            assert post(g)[0] == 200
        assert new.posts == 0
        wait_metric(g, series, 1, timeout=5)
        for _ in range(10):
            assert post(g)[0] == 200
        assert new.posts > 0
    finally:
        new.stop()


def test_a_name_with_more_addresses_than_a_udp_answer_holds(gateway,
                                                             workdir, dns):
    # 40 A records do not fit 512 bytes: the UDP answer comes truncated
    # and the resolver asks again over TCP, where all of them come
    port = free_port()
    hosts = ["127.0.1.%d" % i for i in range(1, 41)]
    dns.set(NAME, hosts)
    g = gateway(dns_config(dns, port, workdir, every="10s"))
    m = metrics(g)
    assert m["infergate_dns_addresses{%s}" % label(port)] == 40
    for h in (hosts[0], hosts[-1]):
        assert 'infergate_backend_up{pool="p",backend="%s:%d"}' % (h, port) \
            in m
    assert dns.tcp_queries >= 1


def test_the_access_log_names_the_address(sim, gateway, workdir, dns):
    port = free_port()
    sims(sim, port, "127.0.0.2")
    dns.set(NAME, ["127.0.0.2"])
    g = gateway(dns_config(dns, port, workdir))
    assert post(g)[0] == 200
    with open(os.path.join(workdir, "access.log")) as f:
        line = json.loads(f.readline())
    assert line["backend"] == "127.0.0.2:%d" % port


def test_a_change_moves_new_requests_and_keeps_streams(sim, gateway, workdir,
                                                       dns):
    port = free_port()
    a, b = sims(sim, port, "127.0.0.2", "127.0.0.3", itl=100)
    dns.set(NAME, ["127.0.0.2"])
    g = gateway(dns_config(dns, port, workdir))
    got = {}

    def stream():
        got["r"] = http("POST", g.url + "/v1/chat/completions",
                        dict(CHAT, stream=True, max_tokens=12), timeout=15)
    t = threading.Thread(target=stream)
    t.start()
    deadline = time.monotonic() + 5
    while sim_stats(a)["requests"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # the first answer was a change too (from no address)
    assert metrics(g)['infergate_dns_changes_total{%s}' % label(port)] == 1
    dns.set(NAME, ["127.0.0.3"])       # the pod moved
    wait_metric(g, 'infergate_dns_changes_total{%s}' % label(port), 2)
    m = metrics(g)
    assert 'infergate_backend_up{pool="p",backend="127.0.0.2:%d"}' % port \
        not in m
    assert m['infergate_backend_up{pool="p",backend="127.0.0.3:%d"}' % port] == 1
    for _ in range(10):
        assert post(g)[0] == 200
    assert sim_stats(a)["requests"] == 1
    assert sim_stats(b)["requests"] == 10
    t.join(timeout=15)
    st, _, body = got["r"]
    assert st == 200
    assert body.rstrip().endswith(b"data: [DONE]")
    assert body.count(b'"content"') >= 12   # every token came through


def test_a_dns_failure_keeps_the_last_addresses(sim, gateway, workdir, dns):
    port = free_port()
    a, = sims(sim, port, "127.0.0.2")
    dns.set(NAME, ["127.0.0.2"])
    g = gateway(dns_config(dns, port, workdir))
    for mode in ("drop", "servfail"):
        dns.mode = mode
        before = metrics(g).get('infergate_dns_resolutions_total{%s,'
                                'result="failed"}' % label(port), 0)
        deadline = time.monotonic() + 5
        while metrics(g)['infergate_dns_resolutions_total{%s,result='
                         '"failed"}' % label(port)] < before + 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert metrics(g)["infergate_dns_addresses{%s}" % label(port)] == 1
        assert post(g)[0] == 200
    # stopping with a query in flight is clean (conftest checks the exit)
    dns.mode = "drop"
    time.sleep(0.15)


def assert_failures_keep_the_set(g, port, n=1):
    """Two lookups fail (DNS as the test set it) and the set stays."""
    deadline = time.monotonic() + 5
    while metrics(g)['infergate_dns_resolutions_total{%s,result="failed"}'
                     % label(port)] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    m = metrics(g)
    assert m["infergate_dns_addresses{%s}" % label(port)] == n
    assert m['infergate_dns_resolutions_total{%s,result="empty"}'
             % label(port)] == 0


def test_a_lost_a_answer_is_a_failure_not_an_empty_name(sim, gateway,
                                                         workdir, dns):
    # AAAA says "no data" but A never answers: that is a failure (the
    # set stays), not a name without addresses
    port = free_port()
    sims(sim, port, "127.0.0.2")
    dns.set(NAME, ["127.0.0.2"])
    g = gateway(dns_config(dns, port, workdir))
    dns.mode = "drop_a"
    assert_failures_keep_the_set(g, port)
    assert post(g)[0] == 200


def test_an_ipv6_name_whose_aaaa_fails_keeps_its_address(gateway, workdir,
                                                        dns):
    # A says "no data" (there is none), AAAA does not answer: a failure
    port = free_port()
    dns.set(NAME, ["fd00::5"])
    g = gateway(dns_config(dns, port, workdir))
    m = metrics(g)
    assert m["infergate_dns_addresses{%s}" % label(port)] == 1
    assert m['infergate_backend_up{pool="p",backend="[fd00::5]:%d"}'
             % port] == 1
    dns.mode = "drop_aaaa"
    assert_failures_keep_the_set(g, port)


def test_past_256_addresses_the_first_256_are_used_and_said_once(
        gateway, workdir, dns):
    port = free_port()
    dns.set(NAME, ["127.0.%d.%d" % (2 + i // 250, 1 + i % 250)
                   for i in range(300)])
    g = gateway(dns_config(dns, port, workdir, every="100ms"))
    assert metrics(g)["infergate_dns_addresses{%s}" % label(port)] == 256
    deadline = time.monotonic() + 5
    while dns.queries(NAME) < 8:        # a few lookups more (UDP + TCP)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert g.output().count("more than 256 IPv4 addresses") == 1


def test_a_server_that_drops_aaaa_does_not_freeze_an_ipv4_name(
        sim, gateway, workdir, dns):
    # A and AAAA are two lookups: A's answer applies while AAAA times out
    # (the lookup counts as failed, the IPv6 part, none here, is kept)
    port = free_port()
    sims(sim, port, "127.0.0.2", "127.0.0.3")
    dns.set(NAME, ["127.0.0.2"])
    g = gateway(dns_config(dns, port, workdir))
    dns.mode = "drop_aaaa"
    dns.set(NAME, ["127.0.0.2", "127.0.0.3"])
    wait_metric(g, 'infergate_backend_up{pool="p",backend="127.0.0.3:%d"}'
                % port, 1)
    m = metrics(g)
    assert m["infergate_dns_addresses{%s}" % label(port)] == 2
    assert m['infergate_dns_resolutions_total{%s,result="failed"}'
             % label(port)] >= 1


def test_both_families_come_from_the_name_the_search_list_found(
        sim, gateway, workdir, dns):
    # "pool" with the search list "ig.test other.test": A answers for
    # pool.ig.test, so AAAA is asked of pool.ig.test too, not walked on to
    # pool.other.test (another name, whose AAAA would be a wrong backend)
    port = free_port()
    sims(sim, port, "127.0.0.2")
    dns.set("pool.ig.test", ["127.0.0.2"])
    dns.set("pool.other.test", ["fd00::9"])
    cfg = dns_config(dns, port, workdir).replace("dns: %s" % NAME,
                                                 "dns: pool")
    g = gateway(cfg, env={"LOCALDOMAIN": "ig.test other.test",
                          "RES_OPTIONS": "ndots:5"})
    m = metrics(g)
    assert m['infergate_dns_addresses{name="pool:%d"}' % port] == 1
    assert 'infergate_backend_up{pool="p",backend="127.0.0.2:%d"}' % port in m
    assert not any("fd00::9" in k for k in m)
    assert post(g)[0] == 200


def test_a_reload_to_other_name_servers_asks_them(sim, gateway, workdir,
                                                  dns):
    # a new resolver section makes a new resolver: the lookup out on the
    # old one (its server slow) is asked again of the new server
    port = free_port()
    sims(sim, port, "127.0.0.2", "127.0.0.3")
    dns.set(NAME, ["127.0.0.2"])
    other = DNSServer()
    try:
        other.set(NAME, ["127.0.0.3"])
        # the next lookup is due 3 s after the reload: one that came
        # within 2.5 s was asked again, not made by the timer
        g = gateway(dns_config(dns, port, workdir, every="3s",
                               timeout="5s"))
        dns.delay = 2.5
        time.sleep(3.4)                 # a lookup is out, slow
        with open(g.config_path) as f:
            text = f.read()
        with open(g.config_path, "w") as f:
            f.write(text.replace('["127.0.0.1:%d"]' % dns.port,
                                 '["127.0.0.1:%d"]' % other.port))
        g.signal(signal.SIGHUP)
        # the catalog with the new address is published after the count
        wait_metric(g, 'infergate_backend_up{pool="p",backend='
                    '"127.0.0.3:%d"}' % port, 1, timeout=2.5)
        m = metrics(g)
        assert m["infergate_dns_addresses{%s}" % label(port)] == 1
        assert m["infergate_dns_changes_total{%s}" % label(port)] == 2
        assert other.queries(NAME) >= 1
    finally:
        other.stop()


def test_a_name_without_addresses_empties_the_pool(sim, gateway, workdir,
                                                    dns):
    # NOERROR with no record (NODATA): libevent's getaddrinfo calls it a
    # failure; the gateway asks again to tell it apart
    port = free_port()
    sims(sim, port, "127.0.0.2")
    dns.set(NAME, ["127.0.0.2"])
    g = gateway(dns_config(dns, port, workdir, pool_extra="""
    when_empty: fail
"""))
    assert post(g)[0] == 200
    dns.set(NAME, [])
    wait_addresses(g, port, 0)
    assert post(g)[0] == 503


def test_no_such_name_empties_the_pool(sim, gateway, workdir, dns):
    port = free_port()
    a, = sims(sim, port, "127.0.0.2")
    dns.set(NAME, ["127.0.0.2"])
    g = gateway(dns_config(dns, port, workdir, pool_extra="""
    when_empty: fail
"""))
    assert post(g)[0] == 200
    dns.set(NAME, None)                 # scaled to zero: NXDOMAIN
    wait_addresses(g, port, 0)
    st, h, body = post(g)
    assert st == 503
    assert json.loads(body)["error"]["code"] == "no_backend"
    assert h.get("retry-after") == "1"
    assert metrics(g)['infergate_dns_resolutions_total{%s,result="empty"}'
                      % label(port)] >= 1
    dns.set(NAME, ["127.0.0.2"])
    wait_addresses(g, port, 1)
    assert post(g)[0] == 200


def test_a_parked_request_goes_on_when_the_name_gains_an_address(
        sim, gateway, workdir, dns):
    # scale from zero: when_empty: queue holds the request until a pod is
    # there, and it goes to the address the name gained meanwhile
    port = free_port()
    a, = sims(sim, port, "127.0.0.2")
    g = gateway(dns_config(dns, port, workdir, pool_extra="""
    when_empty: queue
    queue:
      max_waiting: 10
      max_wait: 8s
"""))
    assert metrics(g)["infergate_dns_addresses{%s}" % label(port)] == 0
    got = {}
    t = threading.Thread(target=lambda: got.update(r=post(g, timeout=12)))
    t0 = time.monotonic()
    t.start()
    wait_metric(g, 'infergate_pool_parked{pool="p"}', 1)
    dns.set(NAME, ["127.0.0.2"])
    t.join(timeout=12)
    assert got["r"][0] == 200, got["r"]
    assert time.monotonic() - t0 < 6
    assert sim_stats(a)["requests"] == 1


def test_an_address_back_after_leaving_starts_afresh(sim, gateway, workdir,
                                                      dns):
    # a pod's address that left and came back is a new pod: its old
    # ejection is forgotten with the last catalog that held it
    port = free_port()
    b, = sims(sim, port, "127.0.0.3")
    dead = "127.0.0.4"                  # nothing listens there
    dns.set(NAME, ["127.0.0.3", dead])
    g = gateway(dns_config(dns, port, workdir, workers=2, pool_extra="""
    retries:
      max_per_request: 1
    ejection:
      after: 1
      duration: 60s
"""))
    series = '{pool="p",backend="%s:%d"}' % (dead, port)
    deadline = time.monotonic() + 5
    while metrics(g).get("infergate_backend_ejections_total" + series) != 1:
        assert time.monotonic() < deadline
        assert post(g)[0] == 200
    assert metrics(g)["infergate_backend_up" + series] == 0
    dns.set(NAME, ["127.0.0.3"])
    wait_metric(g, "infergate_dns_changes_total{%s}" % label(port), 2)
    # no request meanwhile: the publish itself makes every worker let the
    # old catalog go
    time.sleep(0.2)
    dns.set(NAME, ["127.0.0.3", dead])
    m = wait_metric(g, "infergate_dns_changes_total{%s}" % label(port), 3)
    assert m["infergate_backend_up" + series] == 1
    assert m["infergate_backend_ejections_total" + series] == 0


class Blackhole:
    """HOST:PORT listening with a full accept queue: a connect's SYN is
    dropped, so it times out (a request that never reaches a backend)."""

    def __init__(self, host, port):
        self.ls = socket.socket()
        self.ls.bind((host, port))
        self.ls.listen(0)
        self.fill = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex((host, port))
            self.fill.append(c)
        time.sleep(0.1)

    def close(self):
        for c in self.fill:
            c.close()
        self.ls.close()


def test_a_retry_after_a_change_goes_to_an_untried_address(
        sim, gateway, workdir, dns):
    # the first attempt was on a snapshot that a DNS change replaced while
    # it ran (connecting to an address that never answers); the retry
    # picks from the new one, not the failed address
    port = free_port()
    b, = sims(sim, port, "127.0.0.3")
    dead = "127.0.0.4"
    hole = Blackhole(dead, port)
    try:
        g = gateway(dns_config(dns, port, workdir, workers=1, pool_extra="""
    when_empty: queue
    queue:
      max_waiting: 10
      max_wait: 8s
    retries:
      max_per_request: 2
      budget: 1
"""))
        got = {}
        t = threading.Thread(target=lambda: got.update(r=post(g, timeout=15)))
        t.start()
        wait_metric(g, 'infergate_pool_parked{pool="p"}', 1)
        dns.set(NAME, [dead])               # unparked onto the dead one
        wait_metric(g, 'infergate_pool_parked{pool="p"}', 0)
        dns.set(NAME, [dead, "127.0.0.3"])  # a change while it connects
        wait_addresses(g, port, 2)
        t.join(timeout=15)
        assert got["r"][0] == 200, got["r"]
        assert sim_stats(b)["requests"] == 1
        assert "connect timeout" in g.output()
    finally:
        hole.close()


def test_a_fallback_after_a_change_uses_its_own_pool(sim, gateway, workdir,
                                                      dns):
    port = free_port()
    other = sim(model="other-model")
    dns.set(NAME, None)                 # p: no address
    dns.set("other.ig.test", ["127.0.0.5"])
    g = gateway(dns_config(dns, port, workdir, models=FALLBACK_MODELS,
                           workers=1,
                           pool_extra="""
    when_empty: fallback
  p2:
    backends:
      - address: "127.0.0.1:%d"
  p3:
    backends:
      - dns: other.ig.test
        port: 9
        resolve_every: 100ms
""" % other.port))
    assert post(g)[0] == 200
    # a request whose head came before a publish, its body after
    body = json.dumps(CHAT).encode()
    sk = socket.create_connection(("127.0.0.1", g.port))
    sk.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d"
               b"\r\n\r\n" % len(body))
    time.sleep(0.1)
    dns.set("other.ig.test", ["127.0.0.6"])     # a new snapshot
    wait_metric(g, 'infergate_dns_changes_total{name="other.ig.test:9"}', 2)
    sk.sendall(body)
    sk.settimeout(5)
    resp = b""
    while b"\r\n\r\n" not in resp:
        chunk = sk.recv(65536)
        assert chunk
        resp += chunk
    sk.close()
    assert resp.startswith(b"HTTP/1.1 200"), resp[:300]
    assert sim_stats(other)["requests"] == 2


def test_a_refused_reload_keeps_the_resolver(sim, gateway, workdir, dns):
    port = free_port()
    sims(sim, port, "127.0.0.2", "127.0.0.3")
    dns.set(NAME, ["127.0.0.2"])
    g = gateway(dns_config(dns, port, workdir))
    assert post(g)[0] == 200
    # another name server, and an error: the whole reload is refused
    bad = dns_config(dns, port, workdir).replace(
        '["127.0.0.1:%d"]' % dns.port, '["127.0.0.1:%d"]' % free_port())
    bad = bad.replace("    timeouts:", '      - address: "nosuch.invalid:80"'
                      "\n    timeouts:", 1)
    with open(g.config_path, "w") as f:
        f.write(bad.replace("{port}", str(g.port))
                .replace("{admin_port}", str(g.admin_port)))
    g.signal(signal.SIGHUP)
    wait_metric(g, "infergate_reload_failures_total", 1)
    dns.set(NAME, ["127.0.0.3"])        # still asked of this server
    wait_metric(g, "infergate_dns_changes_total{%s}" % label(port), 2)


def test_a_dead_name_server_does_not_hold_the_start(gateway, workdir, dns):
    port = free_port()
    dns.mode = "drop"
    t0 = time.monotonic()
    g = gateway(dns_config(dns, port, workdir, timeout="300ms"))
    assert time.monotonic() - t0 < 5    # 300 ms x 1 attempt + 1 s at most
    m = metrics(g)
    assert m["infergate_dns_addresses{%s}" % label(port)] == 0
    assert m['infergate_dns_resolutions_total{%s,result="failed"}'
             % label(port)] >= 1


def test_a_reload_forgets_a_name_with_its_query_in_flight(sim, gateway,
                                                          workdir, dns):
    port = free_port()
    sims(sim, port, "127.0.0.2")
    other = sim()
    dns.set(NAME, ["127.0.0.2"])
    g = gateway(dns_config(dns, port, workdir, timeout="2s"))
    assert post(g)[0] == 200
    dns.mode = "drop"
    time.sleep(0.3)                     # a query in flight
    with open(g.config_path, "w") as f:
        f.write(gw_config([other.port], workdir, workers=2)
                .replace("{port}", str(g.port))
                .replace("{admin_port}", str(g.admin_port)))
    g.signal(signal.SIGHUP)
    wait_metric(g, "infergate_reloads_total", 1)
    m = metrics(g)
    assert not any(k.startswith("infergate_dns_") for k in m)
    assert post(g)[0] == 200


def test_the_start_waits_for_the_first_answer(sim, gateway, workdir, dns):
    port = free_port()
    a, = sims(sim, port, "127.0.0.2")
    dns.set(NAME, ["127.0.0.2"])
    dns.delay = 0.3     # A, then AAAA: 0.6 s in all
    g = gateway(dns_config(dns, port, workdir, every="10s", timeout="2s",
                           pool_extra="""
    when_empty: fail
"""))
    # ready means routable: no request finds the pool empty
    assert post(g)[0] == 200


def test_a_reload_waits_for_the_names_it_adds(sim, gateway, workdir, dns):
    port = free_port()
    a, = sims(sim, port, "127.0.0.2")
    other = sim(model="sim-model")
    models = """
models:
  - name: m
    pool: p
    upstream_model: sim-model
"""
    dns.set(NAME, None)
    cfg = gw_config([other.port], workdir, workers=2, models=models, extra="""
resolver:
  nameservers: ["127.0.0.1:%d"]
  timeout: 200ms
  attempts: 1
""" % dns.port)
    g = gateway(cfg)
    assert post(g)[0] == 200
    assert sim_stats(a)["requests"] == 0
    # the reload names the DNS backend instead; its answer comes late
    dns.set(NAME, ["127.0.0.2"])
    dns.delay = 0.3
    new = dns_config(dns, port, workdir, every="10s", models=models,
                     timeout="2s", pool_extra="""
    when_empty: fail
""")
    path = os.path.join(workdir, "gw1.yaml")
    with open(path, "w") as f:
        f.write(new.replace("{port}", str(g.port))
                .replace("{admin_port}", str(g.admin_port)))
    ok = metrics(g)["infergate_reloads_total"]
    g.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while True:
        st, _, body = post(g)
        assert st == 200, body          # never an empty pool
        if sim_stats(a)["requests"] > 0:
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert metrics(g)["infergate_reloads_total"] == ok + 1


def test_resolver_section_is_checked(workdir):
    cfg = os.path.join(workdir, "bad.yaml")
    with open(cfg, "w") as f:
        f.write(gw_config([1], workdir).replace("{port}", "1").replace(
            "{admin_port}", "2") + """
resolver:
  nameservers: ["dns.example:53"]
""")
    p = subprocess.run([GATEWAY, "-t", "-c", cfg], capture_output=True,
                       timeout=10)
    assert p.returncode == 1
    assert b"resolver.nameservers" in p.stderr or b"nameservers" in p.stderr
    assert b"not an IP address" in p.stderr
