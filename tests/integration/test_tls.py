"""TLS on both sides: a TLS listener, and a pool that reaches its backends
over TLS with the certificate and host name verified."""
import json
import os
import ssl
import subprocess
import urllib.request

import pytest

from conftest import http, sim_stats
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
