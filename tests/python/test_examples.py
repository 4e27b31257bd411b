"""The C and Python `place` examples agree with each other and with the scheduler."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import oakuk
from _support import example

PLACE_C = os.environ.get("OAKUK_PLACE") or os.path.join(os.environ["OAKUK_BUILD_ROOT"], "examples", "place")
PLACE_PY = example("python", "place.py")
MIXED = example("descriptors", "mixed-app.json")
INVALID = example("descriptors", "invalid.json")
EDGE = example("nodes", "edge.json")


def run_both(*args):
    c = subprocess.run([PLACE_C, *args], capture_output=True, text=True, timeout=30)
    py = subprocess.run([sys.executable, PLACE_PY, *args], capture_output=True, text=True, timeout=30)
    return c, py


class Examples(unittest.TestCase):
    def test_mixed_app_on_edge_nodes(self):
        c, py = run_both(MIXED, EDGE)
        self.assertEqual(c.returncode, 0, c.stderr)
        self.assertEqual(py.returncode, 0, py.stderr)
        self.assertEqual(c.stdout, py.stdout)
        lines = c.stdout.splitlines()
        placed = [l for l in lines if not l.startswith("    ")]
        self.assertEqual(placed, [
            "mixed.demo.web.demo: edge-kvm-1 (unikernel amd64 via kvm)",
            "mixed.demo.client.demo: edge-ctr-1 (container amd64)",
        ])
        # every placement is explained, one line per candidate node
        self.assertEqual(len(lines), 2 + 2 * 4)
        self.assertIn("    node edge-kvm-1: chosen (unikernel amd64 via kvm;", c.stdout)
        self.assertIn("    node edge-ctr-1: does not offer unikernel", c.stdout)
        self.assertIn("    node edge-tcg-1: does not offer container", c.stdout)

    def test_every_thesis_descriptor_example(self):
        for name in ("aggregation-unikernel.json", "aggregation-container.json",
                     "aggregation-listing-4.9.json", "nginx-unikernel.json", "multiarch-unikernel.json"):
            with self.subTest(name=name):
                c, py = run_both(example("descriptors", name), EDGE)
                self.assertEqual((c.returncode, c.stdout), (py.returncode, py.stdout))
                self.assertIn(c.returncode, (0, 1), c.stderr)
                self.assertTrue(c.stdout.startswith("testing.test.testaggr.test: ") or
                                c.stdout.startswith("aggr.aggr.testaggr.aggr: ") or
                                c.stdout.startswith("multi.arch.web.edge: "), c.stdout)

    def test_unikraft_examples(self):
        """The Unikraft descriptors of docs/unikernels.md parse, without warnings, and place by arch."""
        for name, rr_ip in (("unikraft-httpreply.json", "10.30.0.40"), ("unikraft-nginx.json", "10.30.0.41")):
            with self.subTest(name=name):
                d = oakuk.Descriptor.parse_file(example("descriptors", name))
                self.assertEqual(d.warnings, [])
                [ms] = d.microservices
                self.assertEqual(ms.arch, ["amd64", "arm64"])
                self.assertEqual(ms.unikernel["flavor"], "unikraft")
                self.assertEqual(ms.rr_ip, rr_ip)
                self.assertGreater(ms.readiness["tcp"], 0)
                c, py = run_both(example("descriptors", name), EDGE)
                self.assertEqual((c.returncode, c.stdout), (py.returncode, py.stdout))
                self.assertIn(c.returncode, (0, 1), c.stderr)

    def test_not_placed_prints_status_and_explanation(self):
        with open(EDGE, encoding="utf-8") as f:
            container_only = [n for n in json.load(f) if n["id"] == "edge-ctr-1"]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(container_only, f)
        try:
            c, py = run_both(MIXED, f.name)
        finally:
            os.unlink(f.name)
        self.assertEqual((c.returncode, py.returncode), (1, 1), c.stderr + py.stderr)
        self.assertEqual(c.stdout, py.stdout)
        lines = c.stdout.splitlines()
        self.assertEqual(lines[0], "mixed.demo.web.demo: not placed (NO_QUALIFIED_WORKER_FOUND)")
        self.assertTrue(lines[1].startswith("    node edge-ctr-1: "), lines)
        self.assertEqual(lines[2], "mixed.demo.client.demo: edge-ctr-1 (container amd64)")
        self.assertTrue(lines[3].startswith("    node edge-ctr-1: chosen ("), lines)

    def test_invalid_descriptor_prints_every_path(self):
        with self.assertRaises(oakuk.OakukError) as cm:
            oakuk.Descriptor.parse_file(INVALID)
        expected = ["%s: %s" % item for item in cm.exception.items]
        c, py = run_both(INVALID, EDGE)
        self.assertEqual((c.returncode, py.returncode), (2, 2))
        self.assertEqual((c.stdout, py.stdout), ("", ""))
        self.assertEqual(c.stderr.splitlines(), expected)
        self.assertEqual(py.stderr.splitlines(), expected)
        self.assertGreaterEqual(len(expected), 5)

    def test_bad_node_report_and_usage(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump([{"id": "n1", "architecture": "amd64", "vcpus": 2}], f)
        try:
            c, py = run_both(MIXED, f.name)
        finally:
            os.unlink(f.name)
        self.assertEqual((c.returncode, py.returncode), (2, 2))
        for out in (c.stderr, py.stderr):
            self.assertIn("memory", out)
        c, py = run_both(MIXED)
        self.assertEqual((c.returncode, py.returncode), (2, 2))
        self.assertIn("usage", c.stderr)
        self.assertIn("usage", py.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
