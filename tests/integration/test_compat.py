"""A real client: the official OpenAI SDK for Node drives the gateway unmodified.

The SDK's version is pinned in tests/compat/package.json (and its lock file);
`npm ci` installs it into tests/compat/node_modules when that is missing. The
tests themselves are tests/compat/*.test.mjs, run with node's own test runner
against a gateway in front of simulators:

  m         -> pool p, healthy simulator, model rewritten to sim-model
  m-plain   -> pool p, passed as is: the simulator does not serve it (its 404)
  sim-model -> pool p, passed as is and served: the body goes up unrewritten
  m-broken  -> pool broken, a simulator that closes every stream after 2 tokens
  m-down    -> pool down, a backend port nothing listens on

Node and npm are part of the bootstrap: their absence fails the test.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import free_port

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COMPAT = os.path.join(ROOT, "tests", "compat")
NPM_TIMEOUT = 180
NODE_TIMEOUT = 120
API_KEY = "sk-test-compat"


def compat_config(good, broken, down):
    return """
listen:
  - address: "127.0.0.1:{port}"
admin:
  address: "127.0.0.1:{admin_port}"
workers: 2
log:
  level: info
  access_log: "-"
limits:
  header_timeout: 2s
  body_timeout: 2s
  keepalive_timeout: 5s
  max_body_bytes: 65536
pools:
  p:
    backends:
      - address: "127.0.0.1:%d"
    timeouts:
      connect: 1s
      first_byte: 2s
      idle: 2s
      request: 20s
  broken:
    backends:
      - address: "127.0.0.1:%d"
    timeouts:
      connect: 1s
      first_byte: 2s
      idle: 2s
      request: 20s
  down:
    backends:
      - address: "127.0.0.1:%d"
    timeouts:
      connect: 1s
      first_byte: 2s
      idle: 2s
      request: 5s
models:
  - name: m
    pool: p
    upstream_model: sim-model
  - name: m-plain
    pool: p
  - name: sim-model
    pool: p
  - name: m-broken
    pool: broken
    upstream_model: sim-model
  - name: m-down
    pool: down
    upstream_model: sim-model
""" % (good, broken, down)


def _tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.fail("%s is not installed (the bootstrap installs Node 20 and npm); "
                    "the OpenAI SDK compatibility test cannot run without it" % name)
    return path


def _run(argv, timeout, **kw):
    """Runs argv in its own process group; on timeout kills the whole group
    (npm and node --test start children that would keep the pipe open)."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True, **kw)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate(timeout=10)
        pytest.fail("%s did not finish within %ds:\n%s"
                    % (" ".join(argv), timeout, out.decode(errors="replace")))
    return subprocess.CompletedProcess(argv, p.returncode, out)


def _installed_matches_pin():
    """node_modules holds the openai version package.json pins."""
    try:
        with open(os.path.join(COMPAT, "package.json")) as f:
            pinned = json.load(f)["dependencies"]["openai"]
        with open(os.path.join(COMPAT, "node_modules", "openai", "package.json")) as f:
            return json.load(f)["version"] == pinned
    except (OSError, ValueError, KeyError):
        return False


def _ensure_sdk(npm):
    if _installed_matches_pin():
        return
    r = _run([npm, "ci", "--no-audit", "--no-fund"], NPM_TIMEOUT, cwd=COMPAT)
    if r.returncode != 0 or not _installed_matches_pin():
        pytest.fail("npm ci in tests/compat failed (exit %s):\n%s"
                    % (r.returncode, r.stdout.decode(errors="replace")))


def test_openai_node_sdk(sim, gateway):
    node = _tool("node")
    npm = _tool("npm")
    _ensure_sdk(npm)

    good = sim(model="sim-model", itl=1)
    broken = sim(model="sim-model", itl=5, close_rate=1, close_after=2)
    down = free_port()
    g = gateway(compat_config(good.port, broken.port, down))

    env = dict(os.environ,
               GATEWAY_URL=g.url + "/v1",
               API_KEY=API_KEY,
               MODEL="m",
               MODELS="m,m-plain,sim-model,m-broken,m-down",
               PLAIN_MODEL="sim-model",
               UNSERVED_MODEL="m-plain",
               SIM_URL=good.url,
               BROKEN_MODEL="m-broken",
               DOWN_MODEL="m-down",
               NO_COLOR="1")
    # the SDK must not pick up a proxy or a real endpoint from the environment
    for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "HTTP_PROXY", "HTTPS_PROXY",
              "http_proxy", "https_proxy", "NODE_OPTIONS"):
        env.pop(k, None)
    t0 = time.monotonic()
    r = _run([node, "--test", "--test-reporter=spec", COMPAT + os.sep],
             NODE_TIMEOUT, cwd=COMPAT, env=env)
    out = r.stdout.decode(errors="replace")
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, (
        "node --test tests/compat/ failed (exit %s, %.1fs):\n%s\n--- gateway log ---\n%s"
        % (r.returncode, elapsed, out, g.output()[-4000:]))
    # the runner really ran the SDK tests (a directory with no test file passes too)
    counts = dict((k, int(v)) for k, v in re.findall(r"^\u2139 (\w+) (\d+)$", out, re.M))
    assert counts.get("pass", 0) >= 12 and counts.get("fail") == 0, out
    print("node --test tests/compat/: %s in %.1fs" % (counts, elapsed))
    assert g.poll() is None, "gateway exited: %s" % g.output()
