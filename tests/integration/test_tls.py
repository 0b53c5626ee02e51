"""TLS on both sides: a TLS listener, and a pool that reaches its backends
over TLS with the certificate and host name verified."""
import json
import os
import signal
import ssl
import subprocess
import urllib.request

import pytest

from conftest import GATEWAY, http, metrics, sim_stats, wait_metric
from test_proxy import gw_config, CHAT


@pytest.fixture
def cert(workdir):
    crt, key = os.path.join(workdir, "srv.crt"), os.path.join(workdir, "srv.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return crt, key


def tls_listener_config(sim_port, crt, key, workdir):
    return gw_config([sim_port], workdir).replace(
        '  - address: "127.0.0.1:{port}"\n',
        '  - address: "127.0.0.1:{port}"\n'
        '    tls:\n      certificate: "%s"\n      key: "%s"\n' % (crt, key))


def https(url, body, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return r.status, json.loads(r.read())


def test_tls_listener(sim, gateway, workdir, cert):
    s = sim()
    g = gateway(tls_listener_config(s.port, *cert, workdir))
    st, body = https("https://localhost:%d/v1/chat/completions" % g.port,
                     CHAT, cert[0])
    assert st == 200 and body["usage"]["completion_tokens"] == 5
    # plain HTTP on a TLS listener gets nowhere, and the gateway carries on
    with pytest.raises(Exception):
        http("POST", g.url + "/v1/chat/completions", CHAT, timeout=2)
    assert https("https://localhost:%d/v1/chat/completions" % g.port,
                 CHAT, cert[0])[0] == 200


def test_tls_to_backends(sim, gateway, workdir, cert):
    s = sim()
    front = gateway(tls_listener_config(s.port, *cert, workdir))
    # the edge gateway's pool speaks TLS to the other gateway
    cfg = gw_config([front.port], workdir, pool_extra=(
        '    tls:\n      ca: "%s"\n      server_name: localhost\n' % cert[0]),
        models="models:\n  - name: m\n    pool: p\n")
    edge = gateway(cfg)
    st, _, body = http("POST", edge.url + "/v1/chat/completions",
                       dict(CHAT, model="m"))
    assert st == 200, body
    assert sim_stats(s)["last_request"]["body"]["model"] == "sim-model"
    # a name the certificate does not carry is refused: 502
    bad = gateway(cfg.replace("server_name: localhost", "server_name: evil.example"))
    st, _, body = http("POST", bad.url + "/v1/chat/completions", dict(CHAT, model="m"))
    assert st == 502


def test_tls_health_checks_verify_the_backend(sim, gateway, workdir, cert):
    import time
    s = sim()
    front = gateway(tls_listener_config(s.port, *cert, workdir))
    # timeout: the whole check, handshake included (slow under valgrind)
    health = ("    health:\n      path: /v1/models\n      interval: 100ms\n"
              "      timeout: 5s\n"
              "      healthy_after: 1\n      unhealthy_after: 1\n")
    cfg = gw_config([front.port], workdir, pool_extra=(
        '    tls:\n      ca: "%s"\n      server_name: localhost\n' % cert[0]
        + health), models="models:\n  - name: m\n    pool: p\n")
    key = 'infergate_backend_%s{pool="p",backend="127.0.0.1:%d"} '

    def metric(g, name):
        body = http("GET", g.admin_url + "/metrics")[2].decode()
        for line in body.splitlines():
            if line.startswith(key % (name, front.port)):
                return float(line.split()[-1])

    good = gateway(cfg)
    bad = gateway(cfg.replace("server_name: localhost",
                              "server_name: evil.example"))
    deadline = time.monotonic() + 5
    while metric(bad, "up") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # checks over TLS pass with the right name and fail with a wrong one
    time.sleep(0.3)
    assert metric(good, "up") == 1
    assert metric(good, "health_check_failures_total") == 0
    assert metric(bad, "health_check_failures_total") >= 1


def test_a_reload_that_changes_the_ca_opens_new_connections(sim, gateway,
                                                            workdir, cert):
    # pooled TLS connections are kept across a reload that keeps the CA,
    # and not across one that changes it (the same certificate, its file
    # rewritten: the connections the old trust verified are not reused)
    s = sim()
    front = gateway(tls_listener_config(s.port, *cert, workdir))
    ca = os.path.join(workdir, "ca.pem")
    with open(cert[0]) as f:
        pem = f.read()
    with open(ca, "w") as f:
        f.write(pem)
    cfg = gw_config([front.port], workdir, workers=1, pool_extra=(
        '    tls:\n      ca: "%s"\n      server_name: localhost\n' % ca),
        models="models:\n  - name: m\n    pool: p\n")
    edge = gateway(cfg)

    def post():
        st, _, body = http("POST", edge.url + "/v1/chat/completions",
                           dict(CHAT, model="m"))
        assert st == 200, body

    def reload(n):
        os.utime(edge.config_path)
        edge.signal(signal.SIGHUP)
        wait_metric(edge, "infergate_reloads_total", n)

    post()
    post()
    m = metrics(edge)
    assert m["infergate_upstream_connects_total"] == 1
    assert m["infergate_upstream_reuses_total"] == 1
    reload(1)
    post()
    assert metrics(edge)["infergate_upstream_connects_total"] == 1
    with open(ca, "w") as f:
        f.write("# rotated\n" + pem)
    reload(2)
    post()
    m = metrics(edge)
    assert m["infergate_upstream_connects_total"] == 2
    assert m["infergate_upstream_reuses_total"] == 2


def test_a_server_name_longer_than_dns_allows_is_refused(workdir):
    cfg = os.path.join(workdir, "bad.yaml")
    with open(cfg, "w") as f:
        f.write(gw_config([1], workdir, pool_extra=(
            "    tls:\n      server_name: %s\n" % ("a" * 254)))
                .replace("{port}", "1").replace("{admin_port}", "2"))
    p = subprocess.run([GATEWAY, "-t", "-c", cfg], capture_output=True,
                       timeout=10)
    assert p.returncode == 1
    assert b"server_name" in p.stderr
    assert b"at most 253 bytes" in p.stderr
