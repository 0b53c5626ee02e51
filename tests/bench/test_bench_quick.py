"""`make bench QUICK=1` works: every scenario runs briefly and the report is
written. No timing is asserted (benchmark targets are never test assertions);
infergate (local and Redis store) must be among the measured contenders.

    IG_BUILD=build /usr/bin/python3 -m pytest -q tests/bench/test_bench_quick.py
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.abspath(os.environ.get("IG_BUILD") or os.path.join(HERE, "..", "..", "build"))


def test_bench_quick():
    with tempfile.TemporaryDirectory(prefix="ig-bench-") as out:
        r = subprocess.run([sys.executable, os.path.join(HERE, "bench.py"), "--build", BUILD,
                            "--quick", "--out", out],
                           capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr[-3000:]
        md = open(os.path.join(out, "report.md")).read()
        data = json.load(open(os.path.join(out, "report.json")))
        assert md.strip() and md.strip() in r.stdout
        for key in ("machine", "versions", "settings", "results"):
            assert key in data
        assert data["settings"]["quick"] is True
        res = data["results"]
        for s in ("s1", "s2", "s3", "s4", "s5"):
            assert s in res, s
            assert "error" not in res[s], res[s].get("error")
        # the reference contenders must work: they are what the harness is
        # checked against
        for s in ("s1", "s2", "s3", "s4"):
            for name in ("direct", "nginx", "haproxy"):
                assert name in res[s]["contenders"], (s, name, res[s]["unavailable"])
        for name in ("direct", "nginx", "haproxy"):
            assert res["s1"]["contenders"][name]["rps"]["median"] > 0
            assert res["s1"]["contenders"][name]["errors"] == 0
            c3 = res["s3"]["contenders"][name]
            assert c3["streams_measured"] > 0
            assert res["s4"]["contenders"][name]["ok"] > 0
        # infergate itself is measured in every scenario, without errors
        for s in ("s1", "s2", "s3", "s4"):
            for name in ("infergate-local", "infergate-redis",
                         "infergate-redis-slices"):
                assert name in res[s]["contenders"], (s, name, res[s]["unavailable"])
        for name in ("infergate-local", "infergate-redis", "infergate-redis-slices"):
            assert res["s1"]["contenders"][name]["rps"]["median"] > 0
            assert res["s1"]["contenders"][name]["errors"] == 0
        # scenario 3's instrument: the simulator's stamps came through every
        # proxy unchanged and gave the split figures and the load's CPU
        for name in ("direct", "nginx", "haproxy", "infergate-local", "infergate-redis"):
            c3 = res["s3"]["contenders"][name]
            assert c3["events_unstamped"] == 0 and c3["streams_first_unstamped"] == 0, name
            for k in ("added_ttft_p99_us", "path_p99_us", "req_path_p99_us",
                      "first_transit_p99_us", "transit_p99_us", "added_transit_p99_us",
                      "ttft_p99_us", "added_e2e_ttft_p99_us", "sim_cpu_pct",
                      "sseload_cpu_pct"):
                assert c3[k] is not None, (name, k)
        assert res["s5"]["contenders"].get("infergate-local")
