#!/usr/bin/python3
"""infergate benchmarks side by side with nginx and HAProxy (`make bench`).

    /usr/bin/python3 tests/bench/bench.py --build BUILD_DIR [--quick]
        [--rounds N] [--scenarios 1,2,3,4,5] [--contenders direct,nginx,...]
        [--no-pin] [--out DIR]

Everything runs on 127.0.0.1 on free ports; every process is started and
stopped by this script (process groups, killed at exit whatever happens), and
every wait has a time bound. Only the Python standard library is used.

Contenders (CONTENDERS below) are plain data: a kind (direct | nginx | haproxy
| infergate) and options. One that does not start or does not answer the
probe request correctly is reported "unavailable (reason)" and the run goes
on without it.

Scenarios (issue 5):
  1 rps      wrk -t1 -c50, small non-streaming POST /v1/chat/completions
  2 latency  wrk -t1 -c1 (sequential requests): latency added over direct
  3 stream   N concurrent SSE streams of 64 tokens 20 ms apart (simulator
             backend), driven by sseload (C, libevent, built into
             BUILD/bench/)
  4 idle     N idle keep-alive client connections: RSS per connection
  5 scale    infergate with 10,000 tenants and 200 models: start-up time,
             SIGHUP reload time, plain-path RPS vs a 1-tenant config

Contenders run in alternating rounds (A B C A B C ...) after a warm-up; the
report gives medians and the min-max spread. Proxy CPU is utime+stime from
/proc/PID/stat over each run, for the whole process tree of the proxy (the
nginx master included), and of redis-server where it is in the path. Peak RSS
is VmHWM summed over the tree. With two or more CPUs the proxy under test is
pinned to the last CPU and everything else (backend, load generator, redis)
to the others, so that the proxy is what saturates (--no-pin to disable).

Output: a markdown report on stdout and in OUT/report.md, raw numbers in
OUT/report.json (OUT defaults to BUILD/bench). Targets from issue 5 are
listed next to the results as pass/miss: benchmark targets, never assertions.
"""
import argparse
import atexit
import hashlib
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))

# --------------------------------------------------------------------------
# Contenders: adding one is adding a line here.
# --------------------------------------------------------------------------
CONTENDERS = [
    {"name": "direct", "kind": "direct"},
    {"name": "nginx", "kind": "nginx"},
    {"name": "haproxy", "kind": "haproxy"},
    # no tenants: routing only, admission off (the plain path of issue 4's
    # "cost of admission per request" ratio)
    {"name": "infergate-open", "kind": "infergate", "store": "none"},
    {"name": "infergate-local", "kind": "infergate", "store": "local"},
    {"name": "infergate-redis", "kind": "infergate", "store": "redis"},
    # the Redis store with store.slices: admissions answered from each
    # worker's slice of the tenant's limits, Redis asked in bulk
    {"name": "infergate-redis-slices", "kind": "infergate", "store": "slices"},
]

MODEL = "bench-model"
API_KEY = "ig-bench-key-0"
STREAM_TOKENS = 64
STREAM_ITL_MS = 20

# Targets from issue 5 (infergate vs nginx, same run). Never assertions.
TARGETS = {
    "s1_local_rps": ">= 1.1x nginx RPS (local store)",
    "s1_local_cpu": "<= 0.9x nginx CPU/request (local store)",
    "s1_redis_rps": ">= 0.75x nginx RPS (Redis store)",
    "s2_p50": "added p50 <= nginx added p50",
    "s2_p99": "added p99 <= 250 us",
    "s3_ttft": "added TTFT p99 <= 300 us (request path + first transit)",
    "s3_stalled": "zero stalled streams",
    "s3_rss": "<= 16 KiB per stream",
    "s4_rss": "<= 1.5 KiB per idle connection",
    "s5_reload": "reload of the 10,000-tenant config < 200 ms",
    "s5_rps": "no change in the plain path (10k tenants vs 1)",
}

CANNED = json.dumps({
    "id": "chatcmpl-bench0000000000000000000000",
    "object": "chat.completion",
    "created": 1700000000,
    "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant",
                 "content": "Hello! How can I help you today?"},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 13, "completion_tokens": 9, "total_tokens": 22},
}, separators=(",", ":"))

BODY = json.dumps({"model": MODEL, "max_tokens": 16, "messages": [
    {"role": "user", "content": "Say hello in one short sentence."}]})
STREAM_BODY = json.dumps({"model": MODEL, "stream": True,
                          "max_tokens": STREAM_TOKENS, "messages": [
                              {"role": "user", "content": "Count to sixty-four."}]})

CLK_TCK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------
_ALL_PROCS = []


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, argv, name, workdir, cpus=None, env=None, cwd=None):
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(workdir, name + ".log")
        self.log = open(self.log_path, "ab")

        def pre():
            if cpus:
                os.sched_setaffinity(0, cpus)
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                  start_new_session=True, preexec_fn=pre)
        _ALL_PROCS.append(self)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def output(self, tail=2000):
        try:
            self.log.flush()
            with open(self.log_path, "rb") as f:
                data = f.read()
            return data[-tail:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=10):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # the whole group: nginx workers, anything forked
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if not self.log.closed:
            self.log.close()
        if self in _ALL_PROCS:
            _ALL_PROCS.remove(self)


def stop_all():
    for p in list(reversed(_ALL_PROCS)):
        p.stop(timeout=3)


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


def wait_port(port, timeout=10.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError("%s exited (%s) before listening on %d: %s" % (
                proc.name, proc.p.returncode, port, last_line(proc.output())))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError("nothing listening on port %d after %.1fs" % (port, timeout))


def last_line(text):
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return lines[-1][:300] if lines else "(no output)"


def http(method, url, body=None, headers=None, timeout=5):
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


# /proc readings -----------------------------------------------------------

def proc_tree(pid):
    """pid and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pids):
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def status_kb(pids, field):
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def cpu_stat():
    """{cpu number: (busy, softirq, steal, total)} in ticks from /proc/stat;
    busy is everything but idle and iowait (softirq and steal included)."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                name, *vals = line.split()
                v = [int(x) for x in vals[:8]]
                total = sum(v)
                out[int(name[3:])] = (total - v[3] - v[4], v[6], v[7], total)
    except OSError:
        pass
    return out


def all_ticks():
    """{pid: utime+stime} of every process on the machine."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            t = cpu_ticks([int(d)])
            if t:
                out[int(d)] = t
    return out


class CpuWindow:
    """utime+stime of named process groups and the busy share of each CPU
    between start and end (time.monotonic() values), sampled by a thread:
    .result() -> {"window_s", "<name>_pct" (% of one CPU), "others_pct" (every
    other process on the machine but this harness), "cpus": {cpu:
    {"busy_pct", "softirq_pct", "steal_pct"}}} or None when the window was
    not reached. With tick accounting (no CONFIG_IRQ_TIME_ACCOUNTING) a
    softirq tick counts both as the CPU's softirq and in the stime of the
    process it interrupted."""

    def __init__(self, groups, start, end):
        self.groups = groups      # name -> function returning pids
        self.start, self.end = start, end
        self._a = self._b = None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _snap(self):
        pids = {k: f() for k, f in self.groups.items()}
        return (time.monotonic(), {k: cpu_ticks(v) for k, v in pids.items()},
                cpu_stat(), all_ticks(), {p for v in pids.values() for p in v})

    def _run(self):
        if self._stop.wait(max(0.0, self.start - time.monotonic())):
            return
        self._a = self._snap()
        if self._stop.wait(max(0.0, self.end - time.monotonic())):
            return
        self._b = self._snap()

    def result(self):
        self._stop.set()
        self._t.join(2)
        if not self._a or not self._b or self._b[0] <= self._a[0]:
            return None
        wall = self._b[0] - self._a[0]
        out = {"window_s": round(wall, 3)}
        for k in self.groups:
            out[k + "_pct"] = 100.0 * (self._b[1][k] - self._a[1][k]) / CLK_TCK / wall
        ours = self._a[4] | self._b[4] | {os.getpid()}
        others = sum(t - self._a[3].get(p, 0) for p, t in self._b[3].items()
                     if p not in ours)
        out["others_pct"] = 100.0 * others / CLK_TCK / wall
        cpus = {}
        for cpu, b in self._b[2].items():
            a = self._a[2].get(cpu)
            if a and b[3] > a[3]:
                d = [100.0 * (y - x) / (b[3] - a[3]) for x, y in zip(a, b)]
                cpus[cpu] = {"busy_pct": d[0], "softirq_pct": d[1], "steal_pct": d[2]}
        out["cpus"] = cpus
        return out


class RssSampler:
    """Samples VmRSS of a set of pids every 50 ms in a thread; .peak in KiB."""

    def __init__(self, pids):
        self.pids = pids
        self.peak = status_kb(pids, "VmRSS") if pids else 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.wait(0.05):
            if self.pids:
                self.peak = max(self.peak, status_kb(self.pids, "VmRSS"))

    def stop(self):
        self._stop.set()
        self._t.join(2)
        return self.peak


# --------------------------------------------------------------------------
# Environment: work dir, CPUs, tools
# --------------------------------------------------------------------------

class Env:
    def __init__(self, args):
        self.build = os.path.abspath(args.build)
        self.out = os.path.abspath(args.out or os.path.join(self.build, "bench"))
        self.work = os.path.join(self.out, "work")
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work, exist_ok=True)
        self.quick = args.quick
        ncpu = os.cpu_count() or 1
        allowed = sorted(os.sched_getaffinity(0))
        if args.no_pin or len(allowed) < 2:
            self.proxy_cpus = None
            self.load_cpus = None
        else:
            self.proxy_cpus = {allowed[-1]}
            self.load_cpus = set(allowed[:-1])
        self.ncpu = ncpu
        self.body_file = os.path.join(self.work, "body.json")
        with open(self.body_file, "w") as f:
            f.write(BODY)
        self.stream_body_file = os.path.join(self.work, "stream_body.json")
        with open(self.stream_body_file, "w") as f:
            f.write(STREAM_BODY)
        self.auth = "Bearer " + API_KEY
        self.gateway = os.path.join(self.build, "infergate")
        self.sim = os.path.join(self.build, "infergate-sim")
        self.sseload = os.path.join(self.out, "sseload")
        self.sseload_error = None
        self.counter = 0

    def dir(self, name):
        d = os.path.join(self.work, name)
        os.makedirs(d, exist_ok=True)
        return d

    def uniq(self, name):
        self.counter += 1
        return "%s-%d" % (name, self.counter)


def build_sseload(env):
    src = os.path.join(HERE, "sseload.c")
    try:
        if (os.path.exists(env.sseload)
                and os.path.getmtime(env.sseload) >= os.path.getmtime(src)):
            return
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libevent"],
                               capture_output=True, text=True, timeout=30)
        if flags.returncode != 0:
            raise RuntimeError("pkg-config libevent: " + flags.stderr.strip())
        r = subprocess.run(["cc", "-O2", "-o", env.sseload, src] + flags.stdout.split(),
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("cc sseload.c: " + last_line(r.stderr))
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        env.sseload_error = str(e)


# --------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------

def nginx_common(prefix, worker_conns):
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(prefix, d), exist_ok=True)
    return """
worker_processes 1;
user root;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {wc}; }}
""".format(p=prefix, nofile=worker_conns + 100, wc=worker_conns), """
    access_log off;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    keepalive_timeout 600s;
    keepalive_requests 10000000;
""".format(p=prefix)


def start_nginx(env, name, http_block, cpus, worker_conns):
    prefix = env.dir(env.uniq(name))
    main, common = nginx_common(prefix, worker_conns)
    conf = main + "http {\n" + common + http_block + "\n}\n"
    path = os.path.join(prefix, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return Proc(["/usr/sbin/nginx", "-p", prefix, "-e", prefix + "/error.log",
                 "-c", path, "-g", "daemon off; master_process on;"],
                name, prefix, cpus=cpus)


def start_canned_backend(env, worker_conns=16384):
    port = free_port()
    block = """
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}""".format(port=port, body=CANNED)
    p = start_nginx(env, "backend-nginx", block, env.load_cpus, worker_conns)
    wait_port(port, proc=p)
    p.port = port
    return p


def start_sim(env):
    port = free_port()
    # --stamp: write times in every event, the request's arrival in the first
    p = Proc([env.sim, "--port", str(port), "--model", MODEL, "--ttft", "0",
              "--itl", str(STREAM_ITL_MS), "--stamp"], "sim", env.dir("sim"),
             cpus=env.load_cpus)
    wait_port(port, proc=p)
    p.port = port
    return p


def start_redis(env):
    port = free_port()
    d = env.dir(env.uniq("redis"))
    p = Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
              "--save", "", "--appendonly", "no", "--dir", d,
              "--maxclients", "10000"],
             "redis", d, cpus=env.load_cpus)
    wait_port(port, proc=p)
    p.port = port
    return p


# --------------------------------------------------------------------------
# Contenders
# --------------------------------------------------------------------------

class Unavailable(Exception):
    pass


class Contender:
    """A running contender: .port, .cpu_pids() (proxy tree), .redis_pids()."""

    def __init__(self, spec, env):
        self.spec = spec
        self.name = spec["name"]
        self.kind = spec["kind"]
        self.env = env
        self.procs = []
        self.proxy = None
        self.redis = None
        self.port = None
        self.error = None

    def cpu_pids(self):
        return proc_tree(self.proxy.pid) if self.proxy else []

    def redis_pids(self):
        return [self.redis.pid] if self.redis else []

    def start(self, backend_port, stream=False, idle_conns=0):
        env = self.env
        if self.kind == "direct":
            if idle_conns:
                # a fresh backend of its own, so that its RSS growth is measured
                b = start_canned_backend(env, worker_conns=idle_conns + 1024)
                self.procs.append(b)
                self.proxy = b
                self.port = b.port
            else:
                self.port = backend_port
            return self
        wc = max(4096, idle_conns * 2 + 2048)
        if self.kind == "nginx":
            port = free_port()
            block = """
    upstream be {{
        server 127.0.0.1:{bp};
        keepalive 1024;
        keepalive_requests 10000000;
        keepalive_timeout 600s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}""".format(bp=backend_port, port=port)
            self.proxy = start_nginx(env, "nginx", block, env.proxy_cpus, wc)
        elif self.kind == "haproxy":
            port = free_port()
            d = env.dir(env.uniq("haproxy"))
            nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            # HAProxy refuses to start unless ulimit-n >= ~2 * maxconn
            maxconn = min(max(4000, idle_conns + 1000), (nofile - 100) // 2)
            self.note = None
            if maxconn < idle_conns:
                self.note = ("haproxy maxconn capped at %d: HAProxy needs ~2 fds per "
                             "connection and RLIMIT_NOFILE is %d" % (maxconn, nofile))
            conf = """global
    nbthread 1
    maxconn {maxconn}
    ulimit-n {nofile}
    tune.maxaccept 64

defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    timeout http-request 30s
    timeout http-keep-alive 600s
    http-reuse always
    option http-keep-alive
    no option http-server-close
    option http-no-delay
    maxconn {maxconn}

frontend fe
    bind 127.0.0.1:{port} backlog 4096
    default_backend be

backend be
    server s1 127.0.0.1:{bp}
""".format(maxconn=maxconn, nofile=nofile,
           port=port, bp=backend_port)
            path = os.path.join(d, "haproxy.cfg")
            with open(path, "w") as f:
                f.write(conf)
            self.proxy = Proc(["/usr/sbin/haproxy", "-db", "-f", path], "haproxy", d,
                              cpus=env.proxy_cpus)
        elif self.kind == "infergate":
            if not os.access(env.gateway, os.X_OK):
                raise Unavailable("%s not built" % env.gateway)
            if self.spec.get("store") in ("redis", "slices"):
                self.redis = start_redis(env)
                self.procs.append(self.redis)
            port = free_port()
            self.admin_port = free_port()
            d = env.dir(env.uniq(self.name))
            cfg = infergate_config(port, self.admin_port, backend_port,
                                   self.spec.get("store", "local"),
                                   self.redis.port if self.redis else None)
            path = os.path.join(d, "infergate.yaml")
            with open(path, "w") as f:
                f.write(cfg)
            self.proxy = Proc([env.gateway, "-c", path], self.name, d, cpus=env.proxy_cpus)
        else:
            raise Unavailable("unknown kind %r" % self.kind)
        self.procs.append(self.proxy)
        self.port = port
        try:
            wait_port(port, timeout=10, proc=self.proxy)
        except RuntimeError as e:
            raise Unavailable(str(e))
        return self

    def probe(self, stream=False, timeout=10):
        """One request must succeed; retried for up to `timeout` s (health
        checks, start-up). Raises Unavailable with the reason."""
        deadline = time.monotonic() + timeout
        why = "no answer"
        while time.monotonic() < deadline:
            if self.proxy and not self.proxy.alive():
                raise Unavailable("exited (%s): %s; log %s" % (
                    self.proxy.p.returncode, last_line(self.proxy.output()),
                    os.path.relpath(self.proxy.log_path, self.env.out)))
            try:
                st, h, b = http("POST", "http://127.0.0.1:%d/v1/chat/completions" % self.port,
                                STREAM_BODY if stream else BODY,
                                {"Content-Type": "application/json",
                                 "Authorization": self.env.auth}, timeout=5)
                if st == 200 and not stream and b'"chat.completion"' in b:
                    return
                if st == 200 and stream and b"data: [DONE]" in b and b.count(b"data:") >= STREAM_TOKENS:
                    return
                why = "probe got %d: %s" % (st, b[:160].decode(errors="replace"))
            except (OSError, ValueError) as e:
                why = "probe failed: %s" % e
            time.sleep(0.1)
        raise Unavailable(why)

    def stop(self):
        for p in reversed(self.procs):
            p.stop()
        self.procs = []
        self.proxy = None
        self.redis = None


def sha256_hex(s):
    return hashlib.sha256(s.encode()).hexdigest()


BIG_LIMITS = """    limits:
      max_input_tokens: 100000
      max_output_tokens: 100000
      max_concurrent_requests: 100000
      daily_token_budget: 1000000000000
      requests_per_minute: 100000000
      tokens_per_minute: 1000000000000
"""


def infergate_config(port, admin_port, backend_port, store, redis_port,
                     n_tenants=1, n_models=1, extra_model=None):
    """The gateway's config for the bench: auth + routing + admission on,
    access log off, one worker. Tenant 0 holds API_KEY."""
    out = ["# generated by tests/bench/bench.py",
           "listen:", '  - address: "127.0.0.1:%d"' % port,
           "admin:", '  address: "127.0.0.1:%d"' % admin_port,
           "workers: 1",
           "log:", "  level: warn", '  access_log: "off"', '  error_log: "-"',
           "limits:", "  keepalive_timeout: 600s",
           "  max_requests_per_connection: 100000000"]
    if store in ("redis", "slices"):
        out += ["store:", "  type: redis", "  redis:",
                '    address: "127.0.0.1:%d"' % redis_port, "    timeout: 50ms",
                "  on_store_failure: closed"]
        if store == "slices":
            out += ["  slices: true"]
    else:
        out += ["store:", "  type: local"]
    n_pools = max(1, n_models // 20)
    out.append("pools:")
    for i in range(n_pools):
        out += ["  pool%d:" % i, "    backends:",
                '      - address: "127.0.0.1:%d"' % backend_port,
                # the same idle upstream connections as nginx's keepalive 1024
                "    keepalive_connections: 1024",
                "    max_inflight: 100000",
                "    queue:", "      max_waiting: 100000", "      max_wait: 5s",
                "    timeouts:", "      connect: 1s", "      first_byte: 60s",
                "      idle: 30s", "      request: 600s"]
    out.append("models:")
    names = [MODEL] + ["model-%03d" % i for i in range(1, n_models)]
    if extra_model:
        names.append(extra_model)
    for i, m in enumerate(names):
        out += ["  - name: %s" % m, "    pool: pool%d" % (i % n_pools),
                "    upstream_model: %s" % MODEL]
    if store == "none":		# no tenants: no authentication, no admission
        return "\n".join(out) + "\n"
    out.append("tenants:")
    for i in range(n_tenants):
        out += ["  - id: tenant-%05d" % i,
                '    keys: ["sha256:%s"]' % sha256_hex("ig-bench-key-%d" % i),
                '    models: ["*"]']
        out.append(BIG_LIMITS.rstrip("\n"))
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# Load generators
# --------------------------------------------------------------------------

def run_wrk(env, port, conns, duration, auth):
    e = dict(os.environ, BENCH_BODY=env.body_file, BENCH_AUTH=auth,
             BENCH_PATH="/v1/chat/completions")
    argv = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % max(1, round(duration)), "--timeout", "5s",
            "-s", os.path.join(HERE, "post.lua"), "http://127.0.0.1:%d" % port]

    def pre():
        if env.load_cpus:
            os.sched_setaffinity(0, env.load_cpus)
    r = subprocess.run(argv, capture_output=True, text=True, env=e,
                       timeout=float(duration) + 30, preexec_fn=pre)
    m = re.search(r"^BENCHJSON (\{.*\})$", r.stdout, re.M)
    if not m:
        raise RuntimeError("wrk: no result (rc %d): %s" % (
            r.returncode, last_line(r.stderr or r.stdout)))
    d = json.loads(m.group(1))
    d["rps"] = d["requests"] / (d["duration_us"] / 1e6) if d["duration_us"] else 0
    d["errors"] = sum(d[k] for k in ("err_connect", "err_read", "err_write",
                                     "err_status", "err_timeout"))
    return d


def measured(c, fn):
    """Runs fn() and adds CPU of the proxy tree and of redis, and each CPU's
    busy share and softirq over the run ("cpus": {cpu: [busy %, softirq %]},
    every process on it, from /proc/stat)."""
    pids = c.cpu_pids()
    rpids = c.redis_pids()
    t0, r0, s0 = cpu_ticks(pids), cpu_ticks(rpids), cpu_stat()
    res = fn()
    t1, r1, s1 = cpu_ticks(pids), cpu_ticks(rpids), cpu_stat()
    res["proxy_cpu_s"] = (t1 - t0) / CLK_TCK if pids else None
    res["redis_cpu_s"] = (r1 - r0) / CLK_TCK if rpids else None
    res["cpus"] = {cpu: [100.0 * (b[0] - s0[cpu][0]) / (b[3] - s0[cpu][3]),
                         100.0 * (b[1] - s0[cpu][1]) / (b[3] - s0[cpu][3])]
                   for cpu, b in s1.items() if cpu in s0 and b[3] > s0[cpu][3]}
    return res


def busy_share(r, cpus):
    """(busy %, softirq %) of CPUS (averaged) in a measured() run, or None."""
    st = [r["cpus"][k] for k in (cpus or []) if k in r.get("cpus", {})]
    if not st:
        return None, None
    return (sum(x[0] for x in st) / len(st), sum(x[1] for x in st) / len(st))


def run_sseload(env, port, conns, duration, ramp, auth, measure_after=None,
                watch=None):
    """Runs sseload; returns its JSON. watch: {name: function returning
    pids}; with it, "cpu_window" holds their CPU and each CPU's busy share
    over the measured part of the run (see CpuWindow), sseload's own
    included."""
    if measure_after is None:
        measure_after = ramp
    argv = [env.sseload, "--port", str(port), "--body-file", env.stream_body_file,
            "--header", "Authorization: " + auth, "--conns", str(conns),
            "--duration", str(duration), "--ramp", str(ramp),
            "--measure-after", str(measure_after),
            "--drain", "10",
            "--stall-ms", str(10 * STREAM_ITL_MS)]

    def pre():
        if env.load_cpus:
            os.sched_setaffinity(0, env.load_cpus)
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, preexec_fn=pre)
    win = None
    if watch is not None:
        groups = dict(watch, sseload=lambda: [p.pid])
        win = CpuWindow(groups, t0 + measure_after, t0 + duration)
    try:
        out, err = p.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise RuntimeError("sseload did not finish in %.0f s" % (duration + 30))
    finally:
        cw = win.result() if win else None
    if p.returncode != 0:
        raise RuntimeError("sseload rc %d: %s" % (p.returncode, last_line(err)))
    res = json.loads(out)
    res["cpu_window"] = cw
    return res


def hold_idle(port, n, request, timeout=60, batch=250):
    """Opens n connections, sends one request on each, reads the whole reply
    and keeps the connection open. Returns (sockets, ok count, failures)."""
    socks = []
    ok = 0
    fails = {}
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    for start in range(0, n, batch):
        pending = {}
        for _ in range(min(batch, n - start)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            pending[s] = [b"", "connect"]
            sel.register(s, selectors.EVENT_WRITE)
        while pending and time.monotonic() < deadline:
            for key, ev in sel.select(0.5):
                s = key.fileobj
                st = pending[s]
                try:
                    if st[1] == "connect":
                        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            raise OSError(err, os.strerror(err))
                        s.send(request)
                        st[1] = "read"
                        sel.modify(s, selectors.EVENT_READ)
                        continue
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed by peer")
                    st[0] += data
                    buf = st[0]
                    he = buf.find(b"\r\n\r\n")
                    if he < 0:
                        continue
                    m = re.search(rb"(?im)^content-length:\s*(\d+)", buf[:he])
                    done = False
                    if m:
                        done = len(buf) >= he + 4 + int(m.group(1))
                    elif re.search(rb"(?im)^transfer-encoding:\s*chunked", buf[:he]):
                        done = buf.endswith(b"0\r\n\r\n")
                    if done:
                        code = buf[9:12]
                        sel.unregister(s)
                        del pending[s]
                        if code == b"200":
                            ok += 1
                            socks.append(s)
                        else:
                            fails["status " + code.decode(errors="replace")] = \
                                fails.get("status " + code.decode(errors="replace"), 0) + 1
                            s.close()
                except OSError as e:
                    fails[str(e)[:60]] = fails.get(str(e)[:60], 0) + 1
                    sel.unregister(s)
                    del pending[s]
                    s.close()
        for s in list(pending):
            fails["timeout"] = fails.get("timeout", 0) + 1
            sel.unregister(s)
            s.close()
        if time.monotonic() >= deadline:
            break
    sel.close()
    return socks, ok, fails


def count_open(socks):
    n = 0
    for s in socks:
        try:
            d = s.recv(1, socket.MSG_PEEK)
            if d:
                n += 1  # data pending; still open
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n


# --------------------------------------------------------------------------
# Statistics helpers
# --------------------------------------------------------------------------

def summary(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def fmt(s, digits=0, unit=""):
    if s is None:
        return "-"
    f = "%%.%df" % digits
    if s["n"] == 1 or s["min"] == s["max"]:
        return (f % s["median"]) + unit
    return (f + "%s (" + f + "–" + f + ")") % (s["median"], unit, s["min"], s["max"])


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------

class Run:
    def __init__(self, env, args, specs):
        self.env = env
        self.args = args
        self.specs = specs
        self.rounds = 1 if args.quick else args.rounds
        self.results = {}

    def start_all(self, backend_port, stream=False):
        """Starts every contender; returns (running list, unavailable dict)."""
        running, unavailable = [], {}
        for spec in self.specs:
            c = Contender(spec, self.env)
            try:
                c.start(backend_port, stream=stream)
                c.probe(stream=stream)
                running.append(c)
            except (Unavailable, RuntimeError, OSError) as e:
                unavailable[spec["name"]] = str(e)[:300]
                log("%s unavailable: %s" % (spec["name"], e))
                c.stop()
        return running, unavailable

    def alternate(self, running, unavailable, warm, body):
        """warm(c) once per contender, then body(c, round) in A B C A B C
        order. A contender that fails is dropped with the reason."""
        per = {c.name: [] for c in running}
        for c in list(running):
            try:
                if warm is not None:
                    warm(c)
            except Exception as e:  # noqa: BLE001 - any failure = unavailable
                unavailable[c.name] = "warm-up failed: %s" % str(e)[:250]
                log("%s: %s" % (c.name, unavailable[c.name]))
                running.remove(c)
        for r in range(self.rounds):
            for c in list(running):
                try:
                    if c.proxy and not c.proxy.alive():
                        raise RuntimeError("exited: %s" % last_line(c.proxy.output()))
                    res = body(c, r)
                    res["round"] = r
                    per[c.name].append(res)
                except Exception as e:  # noqa: BLE001
                    unavailable[c.name] = "round %d failed: %s" % (r, str(e)[:250])
                    log("%s: %s" % (c.name, unavailable[c.name]))
                    running.remove(c)
        return {k: v for k, v in per.items() if v}

    # -- 1 and 2: wrk --------------------------------------------------------
    def scenario_wrk(self, key, conns):
        env = self.env
        dur = 1 if env.quick else self.args.duration
        warm = 1 if env.quick else 2
        backend = start_canned_backend(env)
        try:
            running, unavailable = self.start_all(backend.port)
            try:
                per = self.alternate(
                    running, unavailable,
                    None if env.quick else (lambda c: run_wrk(env, c.port, conns, warm,
                                                              env.auth)),
                    lambda c, r: measured(c, lambda: run_wrk(env, c.port, conns, dur,
                                                             env.auth)))
                peaks = {c.name: status_kb(c.cpu_pids(), "VmHWM") for c in running
                         if c.proxy}
            finally:
                for c in running:
                    c.stop()
        finally:
            backend.stop()
        # added latency over direct, same round
        direct = {r["round"]: r for r in per.get("direct", [])}
        rows = {}
        for name, runs in per.items():
            for r in runs:
                d = direct.get(r["round"])
                r["added_p50_us"] = r["lat_p50"] - d["lat_p50"] if d else None
                r["added_p99_us"] = r["lat_p99"] - d["lat_p99"] if d else None
                r["cpu_us_per_req"] = (r["proxy_cpu_s"] * 1e6 / r["requests"]
                                       if r["proxy_cpu_s"] is not None and r["requests"]
                                       else None)
                r["redis_cpu_us_per_req"] = (r["redis_cpu_s"] * 1e6 / r["requests"]
                                             if r["redis_cpu_s"] is not None and r["requests"]
                                             else None)
                r["load_busy_pct"], r["load_softirq_pct"] = busy_share(r, env.load_cpus)
                r["proxy_busy_pct"], r["proxy_softirq_pct"] = busy_share(r, env.proxy_cpus)
                # the load CPUs' time per request, every process on them
                # (wrk, the backend, redis-server) and their softirq
                r["load_cpu_us_per_req"] = (
                    r["load_busy_pct"] / 100.0 * len(env.load_cpus) * r["duration_us"]
                    / r["requests"] if r["load_busy_pct"] is not None and r["requests"]
                    else None)
            rows[name] = {
                "runs": runs,
                "rps": summary([r["rps"] for r in runs]),
                "cpu_us_per_req": summary([r["cpu_us_per_req"] for r in runs]),
                "redis_cpu_us_per_req": summary([r["redis_cpu_us_per_req"] for r in runs]),
                "p50_us": summary([r["lat_p50"] for r in runs]),
                "p99_us": summary([r["lat_p99"] for r in runs]),
                "added_p50_us": summary([r["added_p50_us"] for r in runs]),
                "added_p99_us": summary([r["added_p99_us"] for r in runs]),
                "errors": sum(r["errors"] for r in runs),
                "peak_rss_kib": peaks.get(name),
                **{k: summary([r[k] for r in runs]) for k in (
                    "load_busy_pct", "load_softirq_pct", "proxy_busy_pct",
                    "proxy_softirq_pct", "load_cpu_us_per_req")},
            }
        self.results[key] = {"conns": conns, "duration_s": dur, "rounds": self.rounds,
                             "contenders": rows, "unavailable": unavailable,
                             "load_cpus": sorted(env.load_cpus) if env.load_cpus else None,
                             "proxy_cpus": sorted(env.proxy_cpus) if env.proxy_cpus
                             else None}

    def scenario1(self):
        self.scenario_wrk("s1", 50)

    def scenario2(self):
        # Sequential requests: with the proxy on a CPU of its own every hop
        # is a cross-CPU wake-up (tens of us on a VM), the same for every
        # contender but larger than what is measured. So here the load
        # generator, the proxy and the backend share one CPU: only one of
        # them runs at a time, and the added latency is the proxy's own path.
        env = self.env
        saved = env.proxy_cpus, env.load_cpus
        if env.proxy_cpus:
            env.proxy_cpus = env.load_cpus = {min(env.load_cpus)}
        try:
            self.scenario_wrk("s2", 1)
        finally:
            env.proxy_cpus, env.load_cpus = saved

    # -- 3: streams ------------------------------------------------------------
    def scenario3(self):
        env = self.env
        n = 100 if env.quick else self.args.streams
        # connection i starts at i * ramp / n; only streams started after the
        # ramp (keep-alive, steady state) are measured. Quick: one stream per
        # connection, all measured.
        ramp = STREAM_TOKENS * STREAM_ITL_MS / 1000.0 * (0.25 if env.quick else 1)
        dur = ramp if env.quick else (ramp + self.args.stream_duration)
        measure_after = 0 if env.quick else ramp
        res = {"streams": n, "duration_s": dur, "ramp_s": ramp, "rounds": self.rounds,
               "contenders": {}, "unavailable": {}}
        self.results["s3"] = res
        if env.sseload_error:
            for s in self.specs:
                res["unavailable"][s["name"]] = "sseload: " + env.sseload_error
            return
        if not os.access(env.sim, os.X_OK):
            for s in self.specs:
                res["unavailable"][s["name"]] = "simulator %s not built" % env.sim
            return
        try:
            sim = start_sim(env)
        except RuntimeError as e:
            for s in self.specs:
                res["unavailable"][s["name"]] = "simulator: %s" % e
            return
        try:
            running, unavailable = self.start_all(sim.port, stream=True)
            base_rss = {c.name: status_kb(c.cpu_pids(), "VmRSS") for c in running}

            watch = {"sim": lambda: [sim.pid]}

            def one(c, r):
                s = RssSampler(c.cpu_pids())
                w = dict(watch)
                if c.proxy:
                    w["proxy"] = c.cpu_pids
                if c.redis:
                    w["redis"] = c.redis_pids
                try:
                    out = measured(c, lambda: run_sseload(env, c.port, n, dur, ramp,
                                                          env.auth, measure_after, w))
                finally:
                    peak = s.stop()
                out["peak_rss_kib"] = peak
                return out
            per = self.alternate(
                running, unavailable,
                None if env.quick else (
                    lambda c: run_sseload(env, c.port, max(10, n // 10), 1.0, 0.2, env.auth)),
                one)
            peaks = {c.name: status_kb(c.cpu_pids(), "VmHWM") for c in running}
            for c in running:
                c.stop()
        finally:
            sim.stop()
        res["unavailable"] = unavailable
        direct = {r["round"]: r for r in per.get("direct", [])}
        # events per complete stream through the direct path = expected count
        expected = None
        if per.get("direct"):
            hist = {}
            for r in per["direct"]:
                for k, v in r["events_hist"].items():
                    hist[int(k)] = hist.get(int(k), 0) + v
            expected = max(hist.items(), key=lambda kv: kv[1])[0] if hist else None
        res["expected_events"] = expected
        load_cpus = sorted(env.load_cpus) if env.load_cpus else None
        proxy_cpus = sorted(env.proxy_cpus) if env.proxy_cpus else None

        def minus(r, d, key, p):
            """r[key][p] - d[key][p]: percentiles of each one's own
            distribution, d = direct in the same round."""
            a = (r.get(key) or {}).get(p)
            b = (d.get(key) or {}).get(p) if d else None
            return a - b if a is not None and b is not None else None

        for name, runs in per.items():
            for r in runs:
                d = direct.get(r["round"])
                # the proxy's share of the time to first token: request
                # path + first event's transit (kernel receive times)
                r["added_ttft_p50_us"] = minus(r, d, "path_us", "p50")
                r["added_ttft_p99_us"] = minus(r, d, "path_us", "p99")
                r["added_transit_p50_us"] = minus(r, d, "transit_us", "p50")
                r["added_transit_p99_us"] = minus(r, d, "transit_us", "p99")
                # end to end, as a client reads it (carries the load's noise)
                r["added_e2e_ttft_p50_us"] = minus(r, d, "ttft_us", "p50")
                r["added_e2e_ttft_p99_us"] = minus(r, d, "ttft_us", "p99")
                r["added_gap_p99_us"] = minus(r, d, "gap_us", "p99")
                cw = r.get("cpu_window") or {}
                for k in ("sim", "sseload", "proxy", "redis"):
                    r[k + "_cpu_pct"] = cw.get(k + "_pct")
                r["others_cpu_pct"] = cw.get("others_pct")
                # each pinned CPU's busy share (all processes) and softirq
                for tag, cpus in (("load", load_cpus), ("proxy", proxy_cpus)):
                    st = [cw["cpus"][k] for k in (cpus or []) if k in cw.get("cpus", {})]
                    r[tag + "_busy_pct"] = (sum(x["busy_pct"] for x in st) / len(st)
                                            if st else None)
                    r[tag + "_softirq_pct"] = (sum(x["softirq_pct"] for x in st) / len(st)
                                               if st else None)
                lost = 0
                if expected is not None:
                    lost = sum(v for k, v in r["events_hist"].items() if int(k) < expected)
                r["lost_chunk_streams"] = lost
                r["stalled_streams"] = (r["streams_stalled"] + r["streams_unfinished"]
                                        + r["streams_error"] + r["streams_no_done"]
                                        + r["streams_bad_status"])
                r["streams_measured"] = (r["streams_ok"] + r["streams_no_done"]
                                         + r["streams_bad_status"] + r["streams_error"]
                                         + r["streams_unfinished"])
                b = base_rss.get(name)
                r["rss_per_stream_kib"] = ((r["peak_rss_kib"] - b) / n
                                           if name != "direct" and b else None)
                r["cpu_us_per_stream"] = (r["proxy_cpu_s"] * 1e6 / r["streams_measured"]
                                          if r["proxy_cpu_s"] is not None
                                          and r["streams_measured"] else None)
            def pick(key, p):
                return summary([(r.get(key) or {}).get(p) for r in runs])
            res["contenders"][name] = {
                "runs": runs,
                "added_ttft_p50_us": summary([r["added_ttft_p50_us"] for r in runs]),
                "added_ttft_p99_us": summary([r["added_ttft_p99_us"] for r in runs]),
                "path_p50_us": pick("path_us", "p50"),
                "path_p99_us": pick("path_us", "p99"),
                "req_path_p50_us": pick("req_path_us", "p50"),
                "req_path_p99_us": pick("req_path_us", "p99"),
                "first_transit_p50_us": pick("first_transit_us", "p50"),
                "first_transit_p99_us": pick("first_transit_us", "p99"),
                "transit_p50_us": pick("transit_us", "p50"),
                "transit_p99_us": pick("transit_us", "p99"),
                "transit_p999_us": pick("transit_us", "p999"),
                "added_transit_p50_us": summary([r["added_transit_p50_us"] for r in runs]),
                "added_transit_p99_us": summary([r["added_transit_p99_us"] for r in runs]),
                "ttft_p50_us": pick("ttft_us", "p50"),
                "ttft_p99_us": pick("ttft_us", "p99"),
                "added_e2e_ttft_p50_us": summary([r["added_e2e_ttft_p50_us"] for r in runs]),
                "added_e2e_ttft_p99_us": summary([r["added_e2e_ttft_p99_us"] for r in runs]),
                "sim_wait_p99_us": pick("sim_wait_us", "p99"),
                "read_lag_p50_us": pick("read_lag_us", "p50"),
                "read_lag_p99_us": pick("read_lag_us", "p99"),
                **{k: summary([r[k] for r in runs]) for k in (
                    "sim_cpu_pct", "sseload_cpu_pct", "proxy_cpu_pct", "redis_cpu_pct",
                    "others_cpu_pct", "load_busy_pct", "load_softirq_pct",
                    "proxy_busy_pct", "proxy_softirq_pct")},
                # stamps that did not come through (a proxy that rewrote or
                # dropped them) and reads without a kernel receive time
                "events_unstamped": sum(r.get("events_unstamped", 0) for r in runs),
                "streams_first_unstamped": sum(r.get("streams_first_unstamped", 0)
                                               for r in runs),
                "reads_no_rx_stamp": sum(r.get("reads_no_rx_stamp", 0) for r in runs),
                "gap_p99_us": pick("gap_us", "p99"),
                "added_gap_p99_us": summary([r["added_gap_p99_us"] for r in runs]),
                "stalled_streams": sum(r["stalled_streams"] for r in runs),
                "lost_chunk_streams": sum(r["lost_chunk_streams"] for r in runs),
                "streams_measured": sum(r["streams_measured"] for r in runs),
                "rss_per_stream_kib": summary([r["rss_per_stream_kib"] for r in runs]),
                "cpu_us_per_stream": summary([r["cpu_us_per_stream"] for r in runs]),
                "peak_rss_kib": peaks.get(name) if name != "direct" else None,
            }
        res["load_cpus"] = load_cpus
        res["proxy_cpus"] = proxy_cpus

    # -- 4: idle connections -----------------------------------------------------
    def scenario4(self):
        env = self.env
        n = 500 if env.quick else self.args.idle_conns
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if n + 200 > soft:
            n = max(100, soft - 200)
        res = {"conns": n, "rounds": self.rounds, "contenders": {}, "unavailable": {},
               "notes": []}
        self.results["s4"] = res
        req = ("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Content-Type: application/json\r\nAuthorization: %s\r\n"
               "Content-Length: %d\r\n\r\n%s" % (env.auth, len(BODY), BODY)).encode()
        backend = start_canned_backend(env)
        per = {}
        unavailable = {}
        live = [s for s in self.specs]
        try:
            for r in range(self.rounds):
                for spec in list(live):
                    c = Contender(spec, env)
                    socks = []
                    try:
                        c.start(backend.port, idle_conns=n)
                        c.probe()
                        time.sleep(0.2)
                        pids = c.cpu_pids()
                        base = status_kb(pids, "VmRSS")
                        if getattr(c, "note", None) and c.note not in res["notes"]:
                            res["notes"].append(c.note)
                        socks, ok, fails = hold_idle(c.port, n, req, timeout=20)
                        time.sleep(1.0)
                        rss = status_kb(pids, "VmRSS")
                        still = count_open(socks)
                        per.setdefault(spec["name"], []).append({
                            "round": r, "base_rss_kib": base, "rss_kib": rss,
                            "ok": ok, "failures": fails, "open_after_1s": still,
                            "rss_per_conn_kib": (rss - base) / ok if ok else None,
                            "peak_rss_kib": status_kb(pids, "VmHWM")})
                        if ok < n:
                            log("%s: %d/%d idle connections ok: %s" % (spec["name"], ok, n, fails))
                    except (Unavailable, RuntimeError, OSError) as e:
                        unavailable[spec["name"]] = str(e)[:300]
                        log("%s unavailable: %s" % (spec["name"], e))
                        live.remove(spec)
                    finally:
                        for s in socks:
                            s.close()
                        c.stop()
        finally:
            backend.stop()
        res["unavailable"] = unavailable
        for name, runs in per.items():
            if name in unavailable:
                continue
            res["contenders"][name] = {
                "runs": runs,
                "rss_per_conn_kib": summary([x["rss_per_conn_kib"] for x in runs]),
                "ok": min(x["ok"] for x in runs),
                "open_after_1s": min(x["open_after_1s"] for x in runs),
                "peak_rss_kib": max(x["peak_rss_kib"] for x in runs),
            }

    # -- 5: config scale (infergate only) --------------------------------------
    def scenario5(self):
        env = self.env
        nt = 1000 if env.quick else self.args.tenants
        nm = 20 if env.quick else self.args.models
        res = {"tenants": nt, "models": nm, "rounds": self.rounds, "contenders": {},
               "unavailable": {}}
        self.results["s5"] = res
        specs = [s for s in self.specs if s["kind"] == "infergate"
                 and s.get("store", "local") == "local"]
        if not specs:
            res["unavailable"]["infergate-local"] = "not among the contenders"
            return
        name = specs[0]["name"]
        if not os.access(env.gateway, os.X_OK):
            res["unavailable"][name] = "%s not built" % env.gateway
            return
        dur = 1 if env.quick else self.args.duration
        backend = start_canned_backend(env)
        d = env.dir("scale")
        key_big = "ig-bench-key-%d" % (nt // 2)
        procs = []

        def launch(tag, n_t, n_m, extra=None):
            port, admin = free_port(), free_port()
            path = os.path.join(d, "%s.yaml" % tag)
            with open(path, "w") as f:
                f.write(infergate_config(port, admin, backend.port, "local", None,
                                         n_t, n_m, extra))
            t0 = time.monotonic()
            p = Proc([env.gateway, "-c", path], env.uniq("gw-" + tag), d,
                     cpus=env.proxy_cpus)
            procs.append(p)
            p.port, p.admin, p.cfg = port, admin, path
            p.n_t, p.n_m = n_t, n_m
            ready = None
            first_ok = None
            deadline = t0 + 60
            while time.monotonic() < deadline and (ready is None or first_ok is None):
                if not p.alive():
                    raise Unavailable("%s config: exited: %s" % (tag, last_line(p.output())))
                now = time.monotonic()
                if ready is None:
                    try:
                        st, _, _ = http("GET", "http://127.0.0.1:%d/health/ready" % admin,
                                        timeout=1)
                        if st == 200:
                            ready = now - t0
                    except OSError:
                        pass
                if first_ok is None:
                    try:
                        st, _, _ = http("POST", "http://127.0.0.1:%d/v1/chat/completions"
                                        % port, BODY, {"Content-Type": "application/json",
                                                       "Authorization": "Bearer " + (
                                                           key_big if n_t > 1 else API_KEY)},
                                        timeout=1)
                        if st == 200:
                            first_ok = now - t0
                    except OSError:
                        pass
                time.sleep(0.005)
            if first_ok is None:
                raise Unavailable("%s config: no successful request in 60 s: %s"
                                  % (tag, last_line(p.output())))
            return p, ready, first_ok

        def reload_once(p, i):
            """Rewrite the config with one more model, SIGHUP, and poll
            GET /v1/models until the new model shows up."""
            probe = "reload-probe-%d" % i
            with open(p.cfg, "w") as f:
                f.write(infergate_config(p.port, p.admin, backend.port, "local", None,
                                         p.n_t, p.n_m, probe))
            auth = {"Authorization": "Bearer " + (key_big if p.n_t > 1 else API_KEY)}
            t0 = time.monotonic()
            os.kill(p.pid, signal.SIGHUP)
            deadline = t0 + 30
            while time.monotonic() < deadline:
                if not p.alive():
                    raise Unavailable("exited on reload: %s" % last_line(p.output()))
                try:
                    st, _, b = http("GET", "http://127.0.0.1:%d/v1/models" % p.port,
                                    headers=auth, timeout=1)
                    if st == 200 and probe.encode() in b:
                        return time.monotonic() - t0
                except OSError:
                    pass
                time.sleep(0.002)
            raise Unavailable("reload: %s never appeared in /v1/models within 30 s" % probe)

        try:
            try:
                starts = {"small": [], "big": []}
                readies = {"small": [], "big": []}
                reloads = []
                rps = {"small": [], "big": []}
                cpu = {"small": [], "big": []}
                for r in range(self.rounds):
                    for tag, n_t, n_m in (("small", 1, 1), ("big", nt, nm)):
                        p, ready, first_ok = launch(tag, n_t, n_m)
                        starts[tag].append(first_ok)
                        readies[tag].append(ready)
                        if tag == "big":
                            try:
                                reloads.append(reload_once(p, r))
                            except Unavailable as e:
                                res.setdefault("notes", []).append(str(e))
                        p.stop()
                        procs.remove(p)
                # plain path: both running, alternating wrk runs
                small, _, _ = launch("small", 1, 1)
                big, _, _ = launch("big", nt, nm)
                for i in range(self.rounds + 1):
                    for tag, p, key in (("small", small, API_KEY), ("big", big, key_big)):
                        pids = proc_tree(p.pid)
                        c0 = cpu_ticks(pids)
                        w = run_wrk(env, p.port, 50, 1 if i == 0 else dur, "Bearer " + key)
                        c1 = cpu_ticks(pids)
                        if i == 0:
                            continue  # warm-up
                        rps[tag].append(w["rps"])
                        cpu[tag].append((c1 - c0) / CLK_TCK * 1e6 / w["requests"]
                                        if w["requests"] else None)
                        if w["errors"]:
                            res.setdefault("notes", []).append(
                                "%s: %d wrk errors" % (tag, w["errors"]))
                res["contenders"][name] = {
                    "startup_s": {k: summary(v) for k, v in starts.items()},
                    "ready_s": {k: summary(v) for k, v in readies.items()},
                    "reload_s": summary(reloads),
                    "rps": {k: summary(v) for k, v in rps.items()},
                    "cpu_us_per_req": {k: summary(v) for k, v in cpu.items()},
                    "peak_rss_kib": {"small": status_kb([small.pid], "VmHWM"),
                                     "big": status_kb([big.pid], "VmHWM")},
                    "config_bytes": os.path.getsize(big.cfg),
                }
            except (Unavailable, RuntimeError, OSError) as e:
                res["unavailable"][name] = str(e)[:300]
                log("%s unavailable: %s" % (name, e))
        finally:
            for p in procs:
                p.stop()
            backend.stop()


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def versions(env):
    def cmd(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return last_line((r.stdout + "\n" + r.stderr).strip().splitlines()[0]
                             if (r.stdout + r.stderr).strip() else "")
        except (OSError, subprocess.TimeoutExpired) as e:
            return "unavailable (%s)" % e
    v = {
        "nginx": cmd(["/usr/sbin/nginx", "-v"]),
        "haproxy": cmd(["/usr/sbin/haproxy", "-v"]),
        "wrk": cmd(["wrk", "-v"]),
        "redis-server": cmd(["redis-server", "-v"]),
        "libevent": cmd(["pkg-config", "--modversion", "libevent"]),
    }
    v["infergate"] = cmd([env.gateway, "-v"]) if os.access(env.gateway, os.X_OK) \
        else "not built"
    try:
        v["infergate git"] = subprocess.run(
            ["git", "-C", HERE, "describe", "--always", "--dirty"], capture_output=True,
            text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return v


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = "%.1f GiB" % (int(f.readline().split()[1]) / 1048576)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "memory": mem}


def is_ig(name):
    return name.startswith("infergate")


def hl(name, text):
    return "**%s**" % text if is_ig(name) and text not in ("-", "") else text


def verdict(ok):
    return "-" if ok is None else ("pass" if ok else "**miss**")


def report_md(data):
    out = []
    a = out.append
    a("# infergate benchmarks%s" % (" (QUICK: harness check, numbers meaningless)"
                                    if data["settings"]["quick"] else ""))
    a("")
    m = data["machine"]
    a("Machine: %s CPUs, %s, kernel %s, %s RAM. " % (m["nproc"], m["cpu"], m["kernel"],
                                                    m["memory"]))
    a("Versions: " + "; ".join("%s: %s" % kv for kv in data["versions"].items()) + ".")
    a("")
    s = data["settings"]
    a("Settings: %s." % ", ".join("%s=%s" % (k, v) for k, v in s.items()))
    a("")
    a("All ratios are against nginx in the same run; medians, with (min–max) over "
      "the rounds. CPU = utime+stime of the proxy's process tree per request. "
      "Targets (issue 5) are benchmark targets, not assertions.")
    a("")
    res = data["results"]
    targets = []

    def unav(r):
        for k, v in r.get("unavailable", {}).items():
            a("- %s: unavailable (%s)" % (k, v))

    for key, title in (("s1", "1. Plain path, 50 connections"),
                       ("s2", "2. Added latency, concurrency 1")):
        if key not in res:
            continue
        r = res[key]
        a("## %s (%d s x %d rounds, wrk -t1 -c%d)" % (title, r["duration_s"],
                                                       r["rounds"], r["conns"]))
        a("")
        lcs = ",".join(str(x) for x in r.get("load_cpus") or [])
        pcs = ",".join(str(x) for x in r.get("proxy_cpus") or [])
        # one column per CPU the run was pinned to (scenario 2: one for all)
        cols = [("load", lcs)] if lcs else []
        if pcs and pcs != lcs:
            cols.append(("proxy", pcs))
        a("| contender | req/s | vs nginx | proxy CPU µs/req | vs nginx | redis CPU µs/req "
          "| p50 µs | p99 µs | added p50 µs | added p99 µs | peak RSS MiB | errors |"
          + "".join(" CPU %s busy %% (softirq) |" % v for _, v in cols))
        a("|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(cols))
        cs = r["contenders"]
        ng = cs.get("nginx")

        def busy(c, tag):
            if not c.get(tag + "_busy_pct"):
                return "-"
            return "%.0f (%.0f)" % (c[tag + "_busy_pct"]["median"],
                                    c[tag + "_softirq_pct"]["median"])
        ceilings = []
        for name, c in cs.items():
            rr = ratio(c["rps"]["median"], ng["rps"]["median"]) if ng else None
            cr = ratio(c["cpu_us_per_req"]["median"] if c["cpu_us_per_req"] else None,
                       ng["cpu_us_per_req"]["median"] if ng and ng["cpu_us_per_req"] else None)
            a("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |" % (
                hl(name, name), fmt(c["rps"]), hl(name, "%.2fx" % rr if rr else "-"),
                fmt(c["cpu_us_per_req"], 1), hl(name, "%.2fx" % cr if cr else "-"),
                fmt(c["redis_cpu_us_per_req"], 1), fmt(c["p50_us"]), fmt(c["p99_us"]),
                fmt(c["added_p50_us"]), fmt(c["added_p99_us"]),
                "%.1f" % (c["peak_rss_kib"] / 1024) if c.get("peak_rss_kib") else "-",
                c["errors"]) + "".join(" %s |" % busy(c, t) for t, _ in cols))
            lc = c.get("load_cpu_us_per_req")
            if key == "s1" and lcs != pcs and lc and name != "direct" and ng:
                cap = 1e6 / lc["median"]
                ceilings.append("%s %.1f µs, %.0f req/s (%.2fx)" % (
                    name, lc["median"], cap, cap / ng["rps"]["median"]))
            if key == "s1" and is_ig(name) and ng:
                if "redis" in name:
                    targets.append(("1", name, TARGETS["s1_redis_rps"],
                                    "%.2fx" % rr if rr else "-",
                                    rr >= 0.75 if rr else None))
                else:
                    targets.append(("1", name, TARGETS["s1_local_rps"],
                                    "%.2fx" % rr if rr else "-", rr >= 1.1 if rr else None))
                    targets.append(("1", name, TARGETS["s1_local_cpu"],
                                    "%.2fx" % cr if cr else "-", cr <= 0.9 if cr else None))
            if key == "s2" and is_ig(name):
                p50 = c["added_p50_us"]["median"] if c["added_p50_us"] else None
                n50 = ng["added_p50_us"]["median"] if ng and ng["added_p50_us"] else None
                p99 = c["added_p99_us"]["median"] if c["added_p99_us"] else None
                targets.append(("2", name, TARGETS["s2_p50"],
                                "%s vs %s µs" % (p50, n50),
                                p50 <= n50 if p50 is not None and n50 is not None else None))
                targets.append(("2", name, TARGETS["s2_p99"], "%s µs" % p99,
                                p99 <= 250 if p99 is not None else None))
        if ceilings:
            a("")
            a("CPU %s's time per request (wrk, the backend and redis-server, with "
              "their softirq), and the requests per second it allows when it is "
              "saturated (vs nginx's measured): %s. A contender near its ceiling is "
              "held back by the load CPU, whatever its own CPU per request." % (
                  lcs, "; ".join(ceilings)))
        unav(r)
        a("")

    if "s3" in res:
        r = res["s3"]
        cs = r["contenders"]
        a("## 3. Streaming: %d concurrent SSE streams, %d tokens %d ms apart "
          "(%.1f s per run after a %.2f s ramp, %d rounds; expected events per stream: %s)"
          % (r["streams"], STREAM_TOKENS, STREAM_ITL_MS, r["duration_s"], r["ramp_s"],
             r["rounds"], r.get("expected_events")))
        a("")

        def pair(x, y, digits=0):
            return "%s / %s" % (fmt(x, digits), fmt(y, digits))
        a("What the proxy adds, from the simulator's stamps (µs; arrivals are "
          "kernel receive times, so neither the simulator's nor sseload's turn "
          "on the CPU is in them):")
        a("")
        a("| contender | added TTFT p50 | added TTFT p99 | path p50 / p99 "
          "| request path p50 / p99 | first transit p50 / p99 "
          "| transit p50 / p99 / p999 | added transit p99 |")
        a("|---|---|---|---|---|---|---|---|")
        for name, c in cs.items():
            a("| %s | %s | %s | %s | %s | %s | %s / %s / %s | %s |" % (
                hl(name, name), hl(name, fmt(c["added_ttft_p50_us"], 1)),
                hl(name, fmt(c["added_ttft_p99_us"], 1)),
                pair(c["path_p50_us"], c["path_p99_us"], 1),
                pair(c["req_path_p50_us"], c["req_path_p99_us"], 1),
                pair(c["first_transit_p50_us"], c["first_transit_p99_us"], 1),
                fmt(c["transit_p50_us"], 1), fmt(c["transit_p99_us"], 1),
                fmt(c["transit_p999_us"], 1), hl(name, fmt(c["added_transit_p99_us"], 1))))
        a("")
        a("End to end as the client reads it, streams, memory:")
        a("")
        a("| contender | TTFT p50 / p99 µs | added p50 / p99 µs (end to end) "
          "| gap p99 µs | added gap p99 µs | stalled/failed | lost chunks | streams "
          "| RSS KiB/stream | CPU µs/stream | peak RSS MiB |")
        a("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, c in cs.items():
            a("| %s | %s | %s | %s | %s | %d | %d | %d | %s | %s | %s |" % (
                hl(name, name), pair(c["ttft_p50_us"], c["ttft_p99_us"]),
                pair(c["added_e2e_ttft_p50_us"], c["added_e2e_ttft_p99_us"]),
                fmt(c["gap_p99_us"]), fmt(c["added_gap_p99_us"]), c["stalled_streams"],
                c["lost_chunk_streams"], c["streams_measured"],
                fmt(c["rss_per_stream_kib"], 1), fmt(c["cpu_us_per_stream"]),
                "%.1f" % (c["peak_rss_kib"] / 1024) if c.get("peak_rss_kib") else "-"))
        a("")
        def cpus_label(key):
            v = r.get(key)
            return ",".join(str(x) for x in v) if v else None
        lcs, pcs = cpus_label("load_cpus"), cpus_label("proxy_cpus")
        a("The load: %s. In %% of one CPU over the measured part of each run: "
          "processes' utime+stime (/proc/PID/stat); a CPU's busy share and its "
          "softirq (the kernel's network work, loopback TCP included; with tick "
          "accounting it is also in the time of the process it interrupted) from "
          "/proc/stat; others = every process on the machine that is not part of "
          "the benchmark (the machine is shared)." % (
              "simulator, sseload (and redis) on CPU %s, the proxy on CPU %s" % (lcs, pcs)
              if lcs else "not pinned"))
        a("")
        a("| contender | simulator | sseload | redis | CPU %s busy (softirq) | proxy "
          "| CPU %s busy (softirq) | others | sseload read lag p50 / p99 µs "
          "| simulator's own wait p99 µs |" % (lcs or "-", pcs or "-"))
        a("|---|---|---|---|---|---|---|---|---|---|")

        def busy(c, tag):
            if not c[tag + "_busy_pct"]:
                return "-"
            return "%s (%s)" % (fmt(c[tag + "_busy_pct"], unit="%"),
                                fmt(c[tag + "_softirq_pct"], unit="%"))
        for name, c in cs.items():
            a("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                hl(name, name), fmt(c["sim_cpu_pct"], unit="%"),
                fmt(c["sseload_cpu_pct"], unit="%"), fmt(c["redis_cpu_pct"], unit="%"),
                busy(c, "load"), fmt(c["proxy_cpu_pct"], unit="%"), busy(c, "proxy"),
                fmt(c["others_cpu_pct"], unit="%"),
                pair(c["read_lag_p50_us"], c["read_lag_p99_us"]), fmt(c["sim_wait_p99_us"])))
        a("")

        def med(c, k):
            return c[k]["median"] if c.get(k) else 0
        peak = [(c["load_busy_pct"]["max"], n) for n, c in cs.items() if c["load_busy_pct"]]
        load = [(med(c, "sim_cpu_pct") + med(c, "sseload_cpu_pct") + med(c, "redis_cpu_pct"),
                 n) for n, c in cs.items()]
        d = cs.get("direct")
        if peak:
            mb, mn = max(peak)
            ml, mln = max(load)
            a("%sCPU %s was up to %.0f%% busy (%s)%s; the simulator, sseload and redis "
              "took up to %.0f%% of a CPU (%s)%s." % (
                  "**" if mb >= 90 else "", lcs, mb, mn,
                  ": saturated**" if mb >= 90 else "", ml, mln,
                  ", **the load alone saturates it**" if ml >= 90 else ""))
            gap = med(d, "gap_p99_us") if d else 0
            wait = med(d, "sim_wait_p99_us") if d else 0
            if d and gap:
                late = gap > 1.25 * STREAM_ITL_MS * 1000
                a("Direct, the gap p99 was %.1f ms for %d ms asked and the simulator's "
                  "own wait p99 %.1f ms: %s" % (
                      gap / 1000, STREAM_ITL_MS, wait / 1000,
                      "**the load ran late**; end-to-end TTFT and gaps measure the "
                      "load generator as much as the proxy." if late else
                      "the load kept time."))
            a("The stamped figures run from a write to the kernel's receive time: "
              "the load generator's turn on the CPU is not in them.")
            a("")
        for name, c in cs.items():
            o = c["others_cpu_pct"]
            if o and o["max"] >= 10:
                a("- %s: processes outside the benchmark used up to %.0f%% of a CPU "
                  "during its runs: its figures are disturbed." % (name, o["max"]))
        for name, c in cs.items():
            if c["events_unstamped"] or c["streams_first_unstamped"]:
                a("- %s: %d events arrived without their stamp (%d streams' first event): "
                  "the proxy changed them; the stamped figures cover the rest."
                  % (name, c["events_unstamped"], c["streams_first_unstamped"]))
            if c["reads_no_rx_stamp"]:
                a("- %s: %d reads had no kernel receive time; their read time was used."
                  % (name, c["reads_no_rx_stamp"]))
        for name, c in cs.items():
            if is_ig(name):
                t = c["added_ttft_p99_us"]["median"] if c["added_ttft_p99_us"] else None
                targets.append(("3", name, TARGETS["s3_ttft"],
                                "%.1f µs" % t if t is not None else "-",
                                t <= 300 if t is not None else None))
                targets.append(("3", name, TARGETS["s3_stalled"],
                                "%d stalled, %d lost" % (c["stalled_streams"],
                                                         c["lost_chunk_streams"]),
                                c["stalled_streams"] == 0 and c["lost_chunk_streams"] == 0))
                k = c["rss_per_stream_kib"]["median"] if c["rss_per_stream_kib"] else None
                targets.append(("3", name, TARGETS["s3_rss"],
                                "%.1f KiB" % k if k is not None else "-",
                                k <= 16 if k is not None else None))
        unav(r)
        a("")
        a("The simulator (--stamp) puts its CLOCK_MONOTONIC write time into every "
          "event and the request's arrival (kernel receive time) into the first; "
          "sseload takes each event's arrival from the kernel (SO_TIMESTAMPNS). "
          "Request path = request's arrival at the simulator - request write; "
          "first transit = first event's arrival at sseload - its write; "
          "path = their sum = TTFT minus the simulator's own wait; transit = the "
          "same for every event. 'Added' = a percentile of the contender's own "
          "distribution minus the same percentile through direct, same round. "
          "End-to-end TTFT is from the request write to sseload reading the first "
          "event: it also holds the simulator's wait and sseload's read lag, "
          "which are the shared CPU's. Stalled/failed: a gap over %d ms, no "
          "[DONE], an error or non-200, or not finished 10 s after the end; lost "
          "chunks: fewer events than through direct. RSS/stream: (peak RSS during "
          "the run - RSS after start) / streams." % (10 * STREAM_ITL_MS))
        a("")

    if "s4" in res:
        r = res["s4"]
        a("## 4. %d idle keep-alive connections (one request each, then idle; %d rounds, "
          "fresh process per round)" % (r["conns"], r["rounds"]))
        a("")
        a("| contender | RSS KiB/conn | vs nginx | conns ok | still open after 1 s "
          "| peak RSS MiB |")
        a("|---|---|---|---|---|---|")
        ng = r["contenders"].get("nginx")
        for name, c in r["contenders"].items():
            k = c["rss_per_conn_kib"]["median"] if c["rss_per_conn_kib"] else None
            nk = ng["rss_per_conn_kib"]["median"] if ng and ng["rss_per_conn_kib"] else None
            rr = ratio(k, nk)
            a("| %s | %s | %s | %d | %d | %.1f |" % (
                hl(name, name), fmt(c["rss_per_conn_kib"], 2),
                hl(name, "%.2fx" % rr if rr else "-"), c["ok"], c["open_after_1s"],
                c["peak_rss_kib"] / 1024))
            if is_ig(name):
                targets.append(("4", name, TARGETS["s4_rss"],
                                "%.2f KiB" % k if k is not None else "-",
                                k <= 1.5 if k is not None else None))
        unav(r)
        a("")
        for note in r.get("notes", []):
            a("- note: %s" % note)
        a("")
        a("direct: a fresh backend nginx per round (its own RSS growth). "
          "RSS/conn is over the connections that got their reply.")
        a("")

    if "s5" in res:
        r = res["s5"]
        a("## 5. Config scale: %d tenants, %d models vs 1 tenant, 1 model (%d rounds)"
          % (r["tenants"], r["models"], r["rounds"]))
        a("")
        for name, c in r["contenders"].items():
            a("| %s | 1 tenant | %d tenants / %d models | ratio |" % (
                hl(name, name), r["tenants"], r["models"]))
            a("|---|---|---|---|")
            for label, k, scale, dg in (("start-up to first 200 (ms)", "startup_s", 1000, 1),
                                        ("start-up to /health/ready (ms)", "ready_s", 1000, 1)):
                sm, bg = c[k]["small"], c[k]["big"]
                if sm:
                    sm = {kk: (vv * scale if kk != "n" else vv) for kk, vv in sm.items()}
                if bg:
                    bg = {kk: (vv * scale if kk != "n" else vv) for kk, vv in bg.items()}
                rr = ratio(bg["median"] if bg else None, sm["median"] if sm else None)
                a("| %s | %s | %s | %s |" % (label, fmt(sm, dg), fmt(bg, dg),
                                             "%.2fx" % rr if rr else "-"))
            rl = c["reload_s"]
            rl_ms = {kk: (vv * 1000 if kk != "n" else vv) for kk, vv in rl.items()} if rl else None
            a("| reload on SIGHUP (ms, until /v1/models shows the change) | | %s | |"
              % fmt(rl_ms, 1))
            sm, bg = c["rps"]["small"], c["rps"]["big"]
            rr = ratio(bg["median"] if bg else None, sm["median"] if sm else None)
            a("| plain path req/s (wrk -c50) | %s | %s | **%s** |" % (
                fmt(sm), fmt(bg), "%.2fx" % rr if rr else "-"))
            sm2, bg2 = c["cpu_us_per_req"]["small"], c["cpu_us_per_req"]["big"]
            a("| CPU µs/req | %s | %s | |" % (fmt(sm2, 1), fmt(bg2, 1)))
            a("| peak RSS MiB | %.1f | %.1f | |" % (c["peak_rss_kib"]["small"] / 1024,
                                                  c["peak_rss_kib"]["big"] / 1024))
            a("")
            a("Config file: %.1f MiB." % (c["config_bytes"] / 1048576))
            rlm = rl_ms["median"] if rl_ms else None
            targets.append(("5", name, TARGETS["s5_reload"],
                            "%.1f ms" % rlm if rlm is not None else "-",
                            rlm < 200 if rlm is not None else None))
            targets.append(("5", name, TARGETS["s5_rps"], "%.2fx" % rr if rr else "-",
                            rr >= 0.95 if rr else None))
        for n in r.get("notes", []):
            a("- note: %s" % n)
        unav(r)
        a("")

    a("## Targets (issue 5; infergate vs nginx, same run)")
    a("")
    if targets:
        a("| scenario | contender | target | result | verdict |")
        a("|---|---|---|---|---|")
        for t in targets:
            a("| %s | %s | %s | %s | %s |" % (t[0], t[1], t[2], t[3], verdict(t[4])))
    else:
        a("No infergate results in this run: " + "; ".join(TARGETS.values()) + ".")
    a("")
    data["targets"] = [{"scenario": t[0], "contender": t[1], "target": t[2],
                        "result": t[3], "pass": t[4]} for t in targets]
    return "\n".join(out)


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(HERE, "..", "..", "build"))
    ap.add_argument("--out", help="report directory (default BUILD/bench)")
    ap.add_argument("--quick", action="store_true",
                    help="every scenario briefly, 1 round: checks the harness only")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5, help="s per wrk run")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--stream-duration", type=float, default=4,
                    help="s of steady state per streaming run (after the ramp)")
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument("--tenants", type=int, default=10000)
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--scenarios", default="1,2,3,4,5")
    ap.add_argument("--contenders", help="comma-separated names (default: all)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin CPUs")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    atexit.register(stop_all)
    # 10,000 idle client connections: HAProxy wants 2 fds per maxconn
    # (maxsock ~ 2 * maxconn), so ask for 65536 (root may raise the hard
    # limit), else take the hard limit as it is.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 1048576:
        hard = 1048576
    for lim in (max(hard, 65536), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (lim, lim))
            break
        except (ValueError, OSError):
            continue

    env = Env(args)
    specs = CONTENDERS
    if args.contenders:
        want = args.contenders.split(",")
        specs = [s for s in CONTENDERS if s["name"] in want]
    if not any(s["kind"] == "direct" for s in specs):
        specs = [CONTENDERS[0]] + specs  # added latency needs the direct path
    build_sseload(env)
    run = Run(env, args, specs)
    t0 = time.monotonic()
    scen = [int(x) for x in args.scenarios.split(",") if x.strip()]
    for n in scen:
        log("scenario %d" % n)
        ts = time.monotonic()
        try:
            getattr(run, "scenario%d" % n)()
        except Exception as e:  # noqa: BLE001 - report and go on with the rest
            import traceback
            traceback.print_exc()
            run.results["s%d" % n] = {"error": str(e), "contenders": {},
                                      "unavailable": {"all": "harness error: %s" % e}}
        log("scenario %d took %.1f s" % (n, time.monotonic() - ts))
        stop_all()
    data = {
        "machine": machine(),
        "versions": versions(env),
        "settings": {
            "quick": bool(args.quick), "rounds": run.rounds,
            "wrk_duration_s": 1 if args.quick else args.duration,
            "workers": 1, "wrk_threads": 1,
            "pinning": ("proxy on CPU %s, load+backend+redis on CPU %s (scenario 2: "
                        "all on one CPU)" % (
                sorted(env.proxy_cpus), sorted(env.load_cpus)) if env.proxy_cpus
                else "none"),
            "RLIMIT_NOFILE": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "contenders": ",".join(s["name"] for s in specs),
        },
        "results": run.results,
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    md = report_md(data)
    os.makedirs(env.out, exist_ok=True)
    with open(os.path.join(env.out, "report.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(env.out, "report.json"), "w") as f:
        json.dump(data, f, indent=1, default=str)
    print(md)
    log("done in %.1f s; logs in %s" % (data["elapsed_s"], env.work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
