"""Object lifetimes across the binding: children outliving parents, shutdown, loading errors."""

import gc
import os
import subprocess
import sys
import textwrap
import unittest

import oakuk
from _support import edge_nodes, example, service, thesis


class Lifetimes(unittest.TestCase):
    def test_microservice_outlives_descriptor_and_application(self):
        d = oakuk.Descriptor.parse_file(example("descriptors", "mixed-app.json"))
        app = d.applications[0]
        web = app.microservices[0]
        del d, app
        gc.collect()
        # allocate and free enough to reuse the descriptor's memory if it had been freed
        for _ in range(50):
            oakuk.Descriptor.parse_file(thesis("aggregation-container.json"))
        self.assertEqual(web.service_name, "mixed.demo.web.demo")
        self.assertEqual(web.code("unikernel", 1), "http://127.0.0.1:8000/hello-arm64.tar.gz")
        self.assertIn('"microservice_name"', web.to_json())

    def test_application_outlives_descriptor(self):
        app = oakuk.Descriptor.parse_file(thesis("multiarch-unikernel.json")).applications[0]
        gc.collect()
        self.assertEqual(app.name, "multi")
        self.assertEqual(app.microservices[0].arch, ["amd64", "arm64"])

    def test_repeated_getters_do_not_leak_or_double_free(self):
        d = oakuk.Descriptor.parse_file(example("descriptors", "mixed-app.json"))
        for _ in range(2000):
            ms = d.applications[0].microservices[1]
            self.assertEqual(ms.name, "client")
        self.assertEqual(d.applications[0], d.applications[0])

    def test_placement_outlives_its_inputs(self):
        ms = oakuk.Microservice.parse(service("web", arch=["amd64"]))
        nodes = [oakuk.NodeReport.from_json(n) for n in edge_nodes().values()]
        res = oakuk.Reservations()
        p = oakuk.select_node(ms, nodes, reservations=res, reserve_key="web.instance.0")
        del ms, nodes, res
        gc.collect()
        self.assertEqual(p.target, "edge-kvm-1")
        self.assertEqual(p.code, "http://127.0.0.1:8000/web-amd64.tar.gz")
        self.assertTrue(p.explanation)

    def test_aggregate_outlives_reports(self):
        agg = oakuk.aggregate.fold(list(edge_nodes().values()))
        gc.collect()
        self.assertEqual(agg.number_of_nodes, 4)

    def test_failed_parses_leave_nothing_behind(self):
        for _ in range(200):
            with self.assertRaises(oakuk.OakukError):
                oakuk.Descriptor.parse_file(example("descriptors", "invalid.json"))

    def run_python(self, code, **env):
        full_env = dict(os.environ)
        full_env.update(env)
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                              capture_output=True, text=True, timeout=30)

    def test_objects_alive_at_interpreter_exit(self):
        r = self.run_python("""
            import json
            import oakuk
            d = oakuk.Descriptor.parse_file(%r)
            ms = d.microservices[0]
            cycle = [ms]
            cycle.append(cycle)
            p = oakuk.select_node(ms, json.load(open(%r)))
            class Holder:
                pass
            Holder.keep = (d, p, oakuk.Reservations())
            print("done")
        """ % (example("descriptors", "mixed-app.json"), example("nodes", "edge.json")))
        self.assertEqual((r.returncode, r.stdout.strip(), r.stderr), (0, "done", ""))

    def test_load_error_names_what_was_tried(self):
        r = self.run_python("import oakuk", OAKUK_LIBRARY="/nonexistent/liboakuk.so.0")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ImportError", r.stderr)
        self.assertIn("/nonexistent/liboakuk.so.0", r.stderr)
        self.assertIn("OAKUK_LIBRARY", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
