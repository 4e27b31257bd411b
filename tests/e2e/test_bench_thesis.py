#!/usr/bin/python3
"""bench-thesis's short mode (bench/thesis, docs/evaluation.md) on a scratch edge of its own: 2
startup runs, 2 s of wrk per path, 3 s of fixed-rate load per service. It checks what it wrote:
every PNG decodes, the report has each table, both kinds of service are in it, and every figure
is a positive number. The report and figures stay in meson-logs/bench-thesis/. Needs root.

Usage: test_bench_thesis.py <build root> <source root>"""
import json
import os
import re
import subprocess
import sys
import unittest

BUILD = SOURCE = None


class BenchThesisTest(unittest.TestCase):
    def test_short_mode(self):
        out = os.path.join(BUILD, "meson-logs", "bench-thesis")
        p = subprocess.run(["/usr/bin/python3", os.path.join(SOURCE, "bench", "thesis", "bench_thesis.py"),
                            "--build", BUILD, "--runs", "2", "--wrk-seconds", "2", "--cpu-seconds", "3",
                            "--out", out], capture_output=True, text=True, timeout=900)
        self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr[-3000:])
        import matplotlib.image
        for name in ("startup", "throughput", "sizes", "cpu"):
            img = matplotlib.image.imread(os.path.join(out, name + ".png"))
            self.assertGreater(min(img.shape[:2]), 200, name)
        with open(os.path.join(out, "report.md")) as f:
            report = f.read()
        for heading in ("## Machine", "## 1. Startup", "## 2. Throughput", "## 3. Sizes", "## 4. CPU"):
            self.assertIn(heading, report)
        for figure in ("startup", "throughput", "sizes", "cpu"):
            self.assertIn("![%s](%s.png)" % (figure, figure), report)
        self.assertRegex(report, r"\| unikernels \| (TCG|KVM) ")
        with open(os.path.join(out, "results.json")) as f:
            res = json.load(f)
        self.assertEqual(set(res["startup"]), {"unikernel", "container", "unikernel, no network",
                                               "container, no network"})
        for kind, runs in res["startup"].items():
            self.assertEqual(len(runs), 2, kind)
            for r in runs:
                self.assertGreater(r["to_running_ms"], 0, kind)
                self.assertGreater(r["to_ready_ms"], r["to_running_ms"] * 0.5, kind)
                self.assertGreater(r["phases_ms"]["boot"], 0, kind)
                if "no network" in kind:
                    self.assertLess(r["phases_ms"]["network"], 5, kind)
                else:
                    self.assertGreater(r["phases_ms"]["network"], 0, kind)
                self.assertGreaterEqual(r["control_plane_ms"], 0, kind)
        for svc in ("unikernel", "container", "nginx"):
            for path, t in res["throughput"][svc].items():
                self.assertGreater(t["rps"], 0, (svc, path))
                self.assertGreater(t["p99_ms"], 0, (svc, path))
                self.assertEqual(t["non_2xx"], 0, (svc, path))
            self.assertGreater(res["sizes"][svc]["compressed"], 0, svc)
            self.assertGreater(res["sizes"][svc]["unpacked"], res["sizes"][svc]["compressed"] * 0.5, svc)
            self.assertGreater(max(res["memory"][svc].values()), 0, svc)
            c = res["cpu"][svc]
            self.assertGreater(c["answered"], c["rate"] * 0.5, svc)
            self.assertGreater(c["service_cpu_pct"], 0, svc)
        self.assertIn("rss_kb", res["memory"]["unikernel"])
        self.assertIn("cgroup_kb", res["memory"]["container"])
        # the rows of the tables carry the same figures
        self.assertTrue(re.search(r"^\| unikernel \| instance IP \| \d+ \|", report, re.M), report)
        self.assertTrue(re.search(r"^\| container \| \d+ \| \d+ \(", report, re.M), report)


if __name__ == "__main__":
    BUILD, SOURCE = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    del sys.argv[1:3]
    unittest.main(verbosity=2)
