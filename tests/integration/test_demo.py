"""make run's demo comes up and the README's curl commands work through it."""
import os
import re
import signal
import subprocess
import time

from conftest import BUILD, wait_port

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def readme_curls(port, admin):
    with open(os.path.join(TOP, "README.md")) as f:
        text = f.read()
    block = text.split("## Try the demo", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    cmds = " ".join(l.rstrip("\\").strip() for l in block.splitlines()).split("curl ")
    return ["curl " + c.strip().replace("8080", str(port)).replace("9090", str(admin))
            for c in cmds if c.strip()]


def test_demo_and_readme_curls(tmp_path):
    import random
    # a base whose derived ports are all free, below the ephemeral range
    # (where other tests' outgoing connections would take them)
    for _ in range(200):
        port = random.randrange(12000, 28000)
        if all(_free(p) for p in (port, port + 1010, port - 79, port - 78,
                                  port - 77, port - 1690)):
            break
    admin = port + 1010
    env = dict(os.environ, IG_DEMO_PORT=str(port))
    p = subprocess.Popen(["sh", os.path.join(TOP, "tests/demo/run.sh"), BUILD],
                         cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for q in (port - 79, port - 78, port - 77, port - 1690, port):
            wait_port(q, timeout=15)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = subprocess.run(["curl", "-s", "http://127.0.0.1:%d/health/ready" % admin],
                               capture_output=True, timeout=5)
            if r.stdout.strip() == b"ready":
                break
            time.sleep(0.1)
        outs = []
        for cmd in readme_curls(port, admin):
            r = subprocess.run(cmd + " -m 10 -w '\\n%{http_code}'", shell=True,
                               capture_output=True, timeout=20)
            outs.append(r.stdout.decode())
            assert r.stdout.decode().rsplit("\n", 1)[-1] == "200", (cmd, r.stdout)
        assert '"chat-small"' in outs[0]
        assert "tok0" in outs[1] and "[DONE]" in outs[2]
        assert "infergate_requests_total" in outs[3]
    finally:
        os.killpg(p.pid, signal.SIGINT)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)


def _free(port):
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
