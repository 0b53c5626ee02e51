"""TLS on both sides: a TLS listener, and a pool that reaches its backends
over TLS with the certificate and host name verified."""
import json
import os
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from http.client import HTTPSConnection

import pytest

from conftest import GATEWAY, http, metrics, sim_stats, wait_metric
from test_proxy import gw_config, CHAT


def make_cert(workdir, name):
    crt = os.path.join(workdir, name + ".crt")
    key = os.path.join(workdir, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return crt, key


@pytest.fixture
def cert(workdir):
    return make_cert(workdir, "srv")


def tls_listener_config(sim_port, crt, key, workdir):
    return gw_config([sim_port], workdir).replace(
        '  - address: "127.0.0.1:{port}"\n',
        '  - address: "127.0.0.1:{port}"\n'
        '    tls:\n      certificate: "%s"\n      key: "%s"\n' % (crt, key))


def https(url, body, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
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


def read(path):
    with open(path) as f:
        return f.read()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_a_reload_rotates_the_listener_certificate(sim, gateway, workdir):
    # certificate and key files rewritten (cert-manager's renewal), then
    # SIGHUP: new handshakes get the new certificate, a connection made
    # before keeps going, and a pair that does not match is refused
    s = sim()
    crt, key = make_cert(workdir, "srv")
    old_pem = os.path.join(workdir, "old.pem")
    write(old_pem, read(crt))
    new_crt, new_key = make_cert(workdir, "next")
    g = gateway(tls_listener_config(s.port, crt, key, workdir))
    url = "https://localhost:%d/v1/chat/completions" % g.port
    ctx = ssl.create_default_context(cafile=old_pem)
    kept = HTTPSConnection("localhost", g.port, context=ctx, timeout=10)

    def on_kept():
        kept.request("POST", "/v1/chat/completions", json.dumps(CHAT),
                     {"Content-Type": "application/json"})
        r = kept.getresponse()
        r.read()
        return r.status

    assert on_kept() == 200
    write(crt, read(new_crt))
    write(key, read(new_key))
    g.signal(signal.SIGHUP)
    wait_metric(g, "infergate_reloads_total", 1)
    assert https(url, CHAT, new_crt)[0] == 200
    with pytest.raises(urllib.error.URLError) as e:
        https(url, CHAT, old_pem)
    assert isinstance(e.value.reason, ssl.SSLCertVerificationError)
    assert on_kept() == 200
    kept.close()
    # a key that is not the certificate's: the reload is refused and the
    # certificate of the last good one is still served
    write(key, read(make_cert(workdir, "stray")[1]))
    g.signal(signal.SIGHUP)
    wait_metric(g, "infergate_reload_failures_total", 1)
    assert "TLS key" in g.output()
    assert https(url, CHAT, new_crt)[0] == 200


def test_a_reload_that_turns_listener_tls_off_says_it_waits_for_restart(
        sim, gateway, workdir):
    # the listener stays TLS until a restart, with the certificate of the
    # last reload that had one (a renewed one, not the start's)
    s = sim()
    crt, key = make_cert(workdir, "srv")
    old_pem = os.path.join(workdir, "old.pem")
    write(old_pem, read(crt))
    new_crt, new_key = make_cert(workdir, "next")
    g = gateway(tls_listener_config(s.port, crt, key, workdir))
    write(crt, read(new_crt))
    write(key, read(new_key))
    g.signal(signal.SIGHUP)
    wait_metric(g, "infergate_reloads_total", 1)
    cfg = read(g.config_path)
    at = cfg.index("    tls:\n      certificate")
    write(g.config_path, cfg[:at] + cfg[at:].split("\n", 3)[3])
    g.signal(signal.SIGHUP)
    wait_metric(g, "infergate_reloads_total", 2)
    assert "TLS is turned off on restart" in g.output()
    url = "https://localhost:%d/v1/chat/completions" % g.port
    assert https(url, CHAT, new_crt)[0] == 200
    with pytest.raises(urllib.error.URLError) as e:
        https(url, CHAT, old_pem)
    assert isinstance(e.value.reason, ssl.SSLCertVerificationError)


def test_a_ca_bundle_trusts_every_certificate_in_it(sim, gateway, workdir,
                                                    cert):
    # the backend's certificate second in the file, after another CA's
    s = sim()
    front = gateway(tls_listener_config(s.port, *cert, workdir))
    other = make_cert(workdir, "other")[0]
    bundle = os.path.join(workdir, "bundle.pem")
    write(bundle, read(other) + read(cert[0]))
    edge = gateway(gw_config([front.port], workdir, pool_extra=(
        '    tls:\n      ca: "%s"\n      server_name: localhost\n' % bundle),
        models="models:\n  - name: m\n    pool: p\n"))
    st, _, body = http("POST", edge.url + "/v1/chat/completions",
                       dict(CHAT, model="m"))
    assert st == 200, body


def config_test(workdir, text):
    cfg = os.path.join(workdir, "check.yaml")
    write(cfg, text.replace("{port}", "1").replace("{admin_port}", "2"))
    return subprocess.run([GATEWAY, "-t", "-c", cfg], capture_output=True,
                          timeout=10)


def test_config_test_reads_what_a_start_reads(workdir, cert):
    # -t builds what a start or reload does, so that "test is successful"
    # before a SIGHUP means the reload takes
    p = config_test(workdir, tls_listener_config(1, *cert, workdir))
    assert p.returncode == 0, p.stderr
    notcert = os.path.join(workdir, "notcert.pem")
    write(notcert, "# no certificate here\n")
    for text, said in [
        (gw_config([1], workdir, pool_extra=(
            '    tls:\n      ca: "%s"\n' % notcert)),
         b"TLS CA %s: no certificate in it" % notcert.encode()),
        (gw_config([1], workdir, pool_extra=(
            '    tls:\n      ca: "%s"\n' % (notcert + ".missing"))),
         b"No such file or directory"),
        (tls_listener_config(1, cert[0], make_cert(workdir, "k2")[1],
                             workdir), b"TLS key"),
        (tls_listener_config(1, notcert, cert[1], workdir),
         b"TLS certificate"),
    ]:
        p = config_test(workdir, text)
        assert p.returncode == 1, text
        assert said in p.stderr, p.stderr
        assert b"test failed" in p.stderr


def test_an_encrypted_key_is_refused_not_prompted_for(workdir, cert):
    # on a terminal OpenSSL would ask for the passphrase and wait (a
    # reload would block the main thread): `script` gives -t one
    key = os.path.join(workdir, "enc.key")
    subprocess.run(["openssl", "pkey", "-in", cert[1], "-out", key,
                    "-aes256", "-passout", "pass:secret"], check=True,
                   capture_output=True, timeout=30)
    cfg = os.path.join(workdir, "enc.yaml")
    write(cfg, tls_listener_config(1, cert[0], key, workdir)
          .replace("{port}", "1").replace("{admin_port}", "2"))
    p = subprocess.run(["script", "-qec", "%s -t -c %s" % (GATEWAY, cfg),
                        "/dev/null"], capture_output=True, timeout=10,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 1, p.stdout
    assert b"TLS key" in p.stdout and b"test failed" in p.stdout


def test_clients_resume_tls_sessions_across_a_reload_that_keeps_the_pair(
        sim, gateway, workdir, cert):
    # a reload that leaves certificate and key as they are keeps their
    # context (session cache, ticket keys): a client resumes instead of a
    # full handshake; one that renews them does not resume
    import socket
    s = sim()
    g = gateway(tls_listener_config(s.port, *cert, workdir))
    ctx = ssl.create_default_context(cafile=cert[0])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2    # the session at once

    def handshake(session=None):
        raw = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        t = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        reused, sess = t.session_reused, t.session
        t.close()
        return reused, sess

    reused, sess = handshake()
    assert not reused
    assert handshake(sess)[0]
    os.utime(g.config_path)
    g.signal(signal.SIGHUP)
    wait_metric(g, "infergate_reloads_total", 1)
    assert handshake(sess)[0]
    new_crt, new_key = make_cert(workdir, "next")
    write(cert[0], read(new_crt))
    write(cert[1], read(new_key))
    g.signal(signal.SIGHUP)
    wait_metric(g, "infergate_reloads_total", 2)
    ctx.load_verify_locations(new_crt)     # the session's own context
    assert not handshake(sess)[0]
