"""conf/: the systemd unit and the Kubernetes manifests say what the real
gateway does (its flags, probe paths, metric names, grace times)."""
import os
import re
import subprocess

import yaml

import conftest
from conftest import http

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CONF = os.path.join(ROOT, "conf")


def seconds(d):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", d)
    n, unit = int(m.group(1)), m.group(2)
    return n / 1000 if unit == "ms" else n * {"s": 1, "m": 60, "h": 3600}[unit]


def manifests():
    docs = []
    for name in ("gateway.yaml", "keda-scaledobject.yaml"):
        with open(os.path.join(CONF, "kubernetes", name)) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    return {d["kind"]: d for d in docs}


def shutdown_grace():
    with open(os.path.join(CONF, "infergate.yaml")) as f:
        return seconds(yaml.safe_load(f)["shutdown_grace"])


def unit():
    out = {}
    with open(os.path.join(CONF, "infergate.service")) as f:
        for line in f:
            if "=" in line and not line.startswith("#"):
                k, v = line.rstrip("\n").split("=", 1)
                out.setdefault(k, []).append(v)
    return out


def test_systemd_unit_commands_and_stop_time():
    u = unit()
    assert u["KillSignal"] == ["SIGTERM"]
    assert seconds(u["TimeoutStopSec"][0]) > shutdown_grace()
    assert u["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    # the config check it runs before start and reload works on our config
    check = u["ExecStartPre"][0].split()
    assert check[1:3] == ["-t", "-c"]
    r = subprocess.run([conftest.GATEWAY, "-t", "-c",
                        os.path.join(CONF, "infergate.yaml")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert u["ExecStart"][0].split()[1:] == ["-c",
                                             "/etc/infergate/infergate.yaml"]


def test_deployment_grace_covers_prestop_and_drain():
    dep = manifests()["Deployment"]["spec"]["template"]["spec"]
    c = dep["containers"][0]
    pre = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert dep["terminationGracePeriodSeconds"] > pre + shutdown_grace()
    assert c["args"] == ["-c", "/etc/infergate/infergate.yaml"]


def test_probes_and_scaler_metrics_exist(sim, gateway):
    s = sim()
    g = gateway("""
listen:
  - address: "127.0.0.1:{port}"
admin:
  address: "127.0.0.1:{admin_port}"
workers: 1
pools:
  small:
    backends:
      - address: "127.0.0.1:%d"
    max_inflight: 16
models:
  - name: m
    pool: small
""" % s.port)
    m = manifests()
    c = m["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    admin_ports = {p["name"] for p in c["ports"] if p["containerPort"] == 9090}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = c[probe]["httpGet"]
        assert get["port"] in admin_ports
        st, _, _ = http("GET", g.admin_url + get["path"])
        assert st == 200, (probe, get["path"])
    st, _, body = http("GET", g.admin_url + "/metrics")
    exported = set(re.findall(r"^(infergate_\w+)\{pool=\"small\"",
                              body.decode(), re.M))
    queries = [t["metadata"]["query"]
               for t in m["ScaledObject"]["spec"]["triggers"]]
    used = set()
    for q in queries:
        used |= set(re.findall(r"infergate_\w+", q))
        assert 'pool="small"' in q
    assert used and used <= exported, used - exported
