"""Shared fixtures for the black-box integration tests.

Every test starts the real binaries on free loopback ports and stops them
when it ends, whatever happens. Nothing here waits without a bound.

  sim(**flags)        -> Proc running build/infergate-sim, .port, .url
  redis()             -> Proc running a private redis-server, .port
  gateway(cfg_text)   -> Proc running build/infergate with that YAML config,
                         .port (first listener), .admin_port, .url, .admin_url
  free_port()         -> an unused TCP port on 127.0.0.1

Set IG_VALGRIND=1 to run the gateway under valgrind memcheck (make valgrind):
an error report fails the test that started it.
"""
import json
import os
import shutil
import signal as _signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

BUILD = os.environ.get("IG_BUILD") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build")
BUILD = os.path.abspath(BUILD)
GATEWAY = os.path.join(BUILD, "infergate")
SIM = os.path.join(BUILD, "infergate-sim")
VALGRIND = os.environ.get("IG_VALGRIND") == "1"


_given_ports = set()


def free_port():
    """A port nothing listens on, never one this run handed out before:
    the kernel may give the same ephemeral port to two binds in a row once
    the first socket is closed (a gateway's listen and admin ports
    clashed that way)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port


def wait_port(port, timeout=10.0, proc=None, host="127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d"
                               % (proc.returncode, port))
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listening on port %d after %.1fs" % (port, timeout))


def http(method, url, body=None, headers=None, timeout=10):
    """One request; returns (status, headers dict lower-cased, body bytes)."""
    data = body
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
    elif isinstance(body, str):
        data = body.encode()
    req = urllib.request.Request(url, data=data, method=method)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if data is not None and "Content-Type" not in (headers or {}):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:",
                   "ERROR: LeakSanitizer", "Invalid read", "Invalid write",
                   "definitely lost in")


def _test_env(env):
    env = dict(env or os.environ)
    # a small quarantine keeps RSS measurements meaningful under ASan
    env.setdefault("ASAN_OPTIONS", "quarantine_size_mb=8:detect_leaks=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    return env


class Proc:
    def __init__(self, argv, name, workdir, env=None):
        env = _test_env(env)
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(workdir, name + ".log")
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env,
                                  start_new_session=True)

    @property
    def pid(self):
        return self.p.pid

    def poll(self):
        return self.p.poll()

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def signal(self, sig):
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def stop(self, sig=_signal.SIGTERM, timeout=10):
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, _signal.SIGKILL)
                self.p.wait(timeout=5)
        if not self.log.closed:
            self.log.close()
        return self.p.returncode

    def sanitizer_report(self):
        out = self.output()
        for m in SANITIZER_MARKS:
            if m in out:
                return out
        return None


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="ig-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def procs(workdir):
    started = []
    yield started
    problems = []
    for p in reversed(started):
        if getattr(p, "killed", False):
            p.stop()
            continue
        rc = p.stop()
        report = p.sanitizer_report()
        if report or (p.name.startswith("gw") and rc not in (0, None)):
            problems.append("%s exited %s:\n%s" % (p.name, rc, p.output()[-4000:]))
    assert not problems, "\n".join(problems)


@pytest.fixture
def sim(procs, workdir):
    """sim(model="m", ttft_ms=0, itl_ms=0, stamp=True, ...) -> a running
    simulator. Keyword arguments become --flags (underscores to dashes);
    True gives a flag without a value; address="127.0.0.2" listens there
    (any 127/8 address is the loopback's)."""
    counter = [0]

    def start(**flags):
        port = flags.pop("port", None) or free_port()
        argv = [SIM, "--port", str(port)]
        for k, v in flags.items():
            argv += ["--" + k.replace("_", "-")] + ([] if v is True else [str(v)])
        counter[0] += 1
        p = Proc(argv, "sim%d" % counter[0], workdir)
        procs.append(p)
        host = flags.get("address", "127.0.0.1")
        wait_port(port, proc=p.p, host=host)
        p.port = port
        p.url = "http://%s:%d" % (host, port)
        return p
    return start


def metrics(g):
    """The gateway's /metrics as {series: value}."""
    st, _, body = http("GET", g.admin_url + "/metrics")
    assert st == 200
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def wait_metric(g, name, value, timeout=5.0):
    """Polls /metrics until series NAME is VALUE; returns the metrics."""
    deadline = time.monotonic() + timeout
    while True:
        m = metrics(g)
        if m.get(name) == value:
            return m
        if time.monotonic() > deadline:
            raise AssertionError("%s: %r, not %r" % (name, m.get(name), value))
        time.sleep(0.01)


def access_lines(workdir):
    """The JSON lines of WORKDIR/access.log."""
    with open(os.path.join(workdir, "access.log")) as f:
        return [json.loads(l) for l in f if l.strip()]


def sim_stats(s):
    st, _, body = http("GET", s.url + "/sim/stats")
    assert st == 200
    return json.loads(body)


@pytest.fixture
def redis(procs, workdir):
    def start(port=None):
        port = port or free_port()
        d = tempfile.mkdtemp(dir=workdir, prefix="redis-")
        p = Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                  "--save", "", "--appendonly", "no", "--dir", d],
                 "redis%d" % port, workdir)
        procs.append(p)
        wait_port(port, proc=p.p)
        p.port = port
        return p
    return start


@pytest.fixture
def gateway(procs, workdir):
    """gateway(config_text, extra_args=[], files={name: text}, nofile=N)
    -> running gateway. The text may use {port} and {admin_port}; both are
    filled with free ports. Waits until /health/ready answers 200. NOFILE
    sets its RLIMIT_NOFILE; ENV adds to its environment."""
    counter = [0]

    def start(cfg, extra_args=(), files=None, wait_ready=True, port=None,
              admin_port=None, nofile=None, env=None):
        counter[0] += 1
        port = port or free_port()
        admin_port = admin_port or free_port()
        for name, text in (files or {}).items():
            path = os.path.join(workdir, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        path = os.path.join(workdir, "gw%d.yaml" % counter[0])
        with open(path, "w") as f:
            f.write(cfg.replace("{port}", str(port))
                       .replace("{admin_port}", str(admin_port)))
        argv = [GATEWAY, "-c", path] + list(extra_args)
        if VALGRIND:
            argv = ["valgrind", "--quiet", "--error-exitcode=99",
                    "--leak-check=full", "--errors-for-leak-kinds=definite",
                    "--show-leak-kinds=definite"] + argv
        if nofile:          # RLIMIT_NOFILE of the gateway (prlimit execs it)
            argv = ["prlimit", "--nofile=%d:%d" % (nofile, nofile), "--"] + argv
        p = Proc(argv, "gw%d" % counter[0], workdir,
                 env=dict(os.environ, **env) if env else None)
        procs.append(p)
        p.port = port
        p.admin_port = admin_port
        p.config_path = path
        p.url = "http://127.0.0.1:%d" % port
        p.admin_url = "http://127.0.0.1:%d" % admin_port
        if wait_ready:
            deadline = time.monotonic() + (30 if VALGRIND else 10)
            while True:
                if p.poll() is not None:
                    raise RuntimeError("gateway exited: %s" % p.output())
                try:
                    st, _, _ = http("GET", p.admin_url + "/health/ready", timeout=1)
                    if st == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("gateway not ready: %s" % p.output())
                time.sleep(0.02)
            wait_port(port, proc=p.p)
        return p
    return start
