"""Descriptors through the binding: thesis fixtures, validation errors, round trips, extensions."""

import json
import os
import tempfile
import unittest

import oakuk
from _support import example, thesis


class ThesisFixtures(unittest.TestCase):
    def test_aggregation_unikernel(self):
        d = oakuk.Descriptor.parse_file(thesis("aggregation-unikernel.json"))
        self.assertEqual(d.sla_version, "v2.0")
        self.assertEqual(d.customer_id, "Admin")
        [app] = d.applications
        self.assertEqual((app.name, app.namespace, app.desc), ("testing", "test", "Testing "))
        [ms] = app.microservices
        self.assertEqual(ms.service_name, "testing.test.testaggr.test")
        self.assertEqual(ms.virtualizations, ["unikernel"])
        self.assertTrue(ms.has_virt("unikernel"))
        self.assertFalse(ms.has_virt("container"))
        self.assertEqual(ms.arch, ["arm"])
        self.assertEqual(ms.code("unikernel", 0), "http://192.168.1.173:8001/aggregationarm.tar.gz")
        self.assertIsNone(ms.code("container"))
        self.assertEqual((ms.memory_mb, ms.vcpus), (300, 1))
        self.assertEqual(len(ms.cmd), 12)
        self.assertEqual(ms.cmd[0], "--video-source")
        self.assertEqual(ms.rr_ip, "10.30.30.30")
        self.assertIsNone(ms.rr_ip_v6)
        self.assertEqual(ms.ports, [])
        self.assertEqual(ms.emulation, "forbid")
        self.assertEqual(ms.restart, "on-failure")

    def test_aggregation_container_keeps_unknown_key_as_warning(self):
        d = oakuk.Descriptor.parse_file(thesis("aggregation-container.json"))
        [ms] = d.microservices
        self.assertEqual(ms.virtualizations, ["container"])
        self.assertEqual(ms.code("container"), "docker.io/psabanic/caggregation:arm")
        self.assertEqual(ms.cmd[0], "./aggr")
        self.assertTrue(any("images" in w for w in d.warnings), d.warnings)
        self.assertIn("images", json.loads(d.to_json())["applications"][0]["microservices"][0])

    def test_listing_4_9_without_arch(self):
        d = oakuk.Descriptor.parse_file(thesis("aggregation-listing-4.9.json"))
        [ms] = d.microservices
        self.assertEqual(ms.arch, [])
        self.assertEqual(ms.service_name, "aggr.aggr.testaggr.aggr")

    def test_nginx_port(self):
        [ms] = oakuk.Descriptor.parse_file(thesis("nginx-unikernel.json")).microservices
        self.assertEqual(ms.ports, [(80, 80, "tcp")])
        self.assertEqual(ms.memory_mb, 1000)
        # no readiness key: the node probes the first TCP port's guest side
        self.assertEqual(ms.readiness, {"tcp": 80, "serial": None})
        self.assertEqual(ms.reschedule_after_s, 60)

    def test_multiarch_codes_match_arch_by_position(self):
        [ms] = oakuk.Descriptor.parse_file(thesis("multiarch-unikernel.json")).microservices
        self.assertEqual(ms.arch, ["amd64", "arm64"])
        self.assertEqual(ms.code("unikernel", 0), "http://192.168.1.173:8001/web-amd64.tar.gz")
        self.assertEqual(ms.code("unikernel", 1), "http://192.168.1.173:8001/web-arm64.tar.gz")
        self.assertIsNone(ms.code("unikernel", 2))
        self.assertEqual(ms.ports, [(8080, 8080, "tcp")])

    def test_parse_accepts_str_and_bytes(self):
        with open(thesis("nginx-unikernel.json"), "rb") as f:
            raw = f.read()
        for doc in (raw, raw.decode()):
            self.assertEqual(oakuk.Descriptor.parse(doc).microservices[0].memory_mb, 1000)


class Errors(unittest.TestCase):
    def test_invalid_example_lists_every_problem(self):
        with self.assertRaises(oakuk.OakukError) as cm:
            oakuk.Descriptor.parse_file(example("descriptors", "invalid.json"))
        e = cm.exception
        self.assertEqual(e.code, -2)
        self.assertEqual(e.code_name, "OAKUK_EINVAL")
        self.assertGreaterEqual(len(e.items), 5, e.items)
        self.assertEqual(e.path, e.items[0][0])
        paths = [p for p, _ in e.items]
        self.assertIn("applications[0].application_name", paths)
        self.assertIn("applications[0].microservices[1].virtualization", paths)
        self.assertIn("applications[0].microservices[2].port", paths)
        self.assertIn("applications[0].microservices[2].restart", paths)
        self.assertTrue(any(p.startswith("applications[0].microservices[0].") for p in paths), paths)
        self.assertTrue(all(m for _, m in e.items))
        self.assertIn(str(len(e.items)), e.message)
        self.assertIn("OAKUK_EINVAL", str(e))

    def test_malformed_json(self):
        with self.assertRaises(oakuk.OakukError) as cm:
            oakuk.Descriptor.parse('{"sla_version": "v2.0", ')
        self.assertEqual(cm.exception.code_name, "OAKUK_EINVAL")

    def test_missing_file_is_io_error_naming_it(self):
        missing = os.path.join(tempfile.gettempdir(), "oakuk-no-such-descriptor.json")
        with self.assertRaises(oakuk.OakukError) as cm:
            oakuk.Descriptor.parse_file(missing)
        self.assertEqual(cm.exception.code_name, "OAKUK_EIO")
        self.assertIn(missing, cm.exception.message)

    def test_microservice_errors_use_relative_paths(self):
        doc = {"microservice_name": "web", "microservice_namespace": "x", "virtualization": "unikernel",
               "memory": 64, "vcpus": 1, "arch": ["amd64", "arm64"],
               "code": "http://127.0.0.1:8000/a.tar.gz"}
        with self.assertRaises(oakuk.OakukError) as cm:
            oakuk.Microservice.parse(doc)
        self.assertTrue(cm.exception.path in ("arch", "code"), cm.exception.path)

    def test_wrong_argument_type(self):
        with self.assertRaises(TypeError):
            oakuk.Descriptor.parse(42)


class RoundTrip(unittest.TestCase):
    def test_every_fixture_round_trips(self):
        for name in ("aggregation-unikernel.json", "aggregation-container.json",
                     "aggregation-listing-4.9.json", "nginx-unikernel.json", "multiarch-unikernel.json"):
            with self.subTest(name=name):
                first = oakuk.Descriptor.parse_file(thesis(name))
                text = first.to_json()
                second = oakuk.Descriptor.parse(text)
                self.assertEqual(json.loads(second.to_json()), json.loads(text))
                a, b = first.microservices[0], second.microservices[0]
                for attr in ("service_name", "virtualizations", "arch", "cmd", "memory_mb", "vcpus",
                             "ports", "rr_ip", "environment", "constraints"):
                    self.assertEqual(getattr(a, attr), getattr(b, attr), attr)

    def test_pretty(self):
        d = oakuk.Descriptor.parse_file(thesis("nginx-unikernel.json"))
        self.assertNotIn("\n", d.to_json())
        self.assertIn("\n", d.to_json(pretty=True))
        self.assertEqual(json.loads(d.to_json(True)), json.loads(d.to_json()))

    def test_application_and_microservice_to_json(self):
        d = oakuk.Descriptor.parse_file(example("descriptors", "mixed-app.json"))
        [app] = d.applications
        self.assertEqual(json.loads(app.to_json())["application_name"], "mixed")
        client = app.microservices[1]
        again = oakuk.Microservice.parse(client.to_json())
        self.assertEqual(again.cmd, client.cmd)
        self.assertEqual(again.code("container"), "localhost:5000/oakuk/busybox:1")

    def test_set_id_is_serialized(self):
        d = oakuk.Descriptor.parse_file(thesis("nginx-unikernel.json"))
        app = d.applications[0]
        ms = app.microservices[0]
        app.set_id("64b7e5f0c0ffee0000000001")
        ms.set_id("64b7e5f0c0ffee0000000002")
        self.assertEqual(d.applications[0].id, "64b7e5f0c0ffee0000000001")
        doc = json.loads(d.to_json())["applications"][0]
        self.assertEqual(doc["applicationID"], "64b7e5f0c0ffee0000000001")
        self.assertEqual(doc["microservices"][0]["microserviceID"], "64b7e5f0c0ffee0000000002")


class Extensions(unittest.TestCase):
    def test_mixed_app(self):
        web, client = oakuk.Descriptor.parse_file(example("descriptors", "mixed-app.json")).microservices
        self.assertEqual(web.service_name, "mixed.demo.web.demo")
        self.assertEqual(web.emulation, "allow")
        self.assertEqual(web.unikernel["flavor"], "linux")
        self.assertEqual(web.unikernel["net"], "direct")
        self.assertEqual(web.ports, [(8080, 8080, "tcp")])
        self.assertEqual(web.rr_ip, "10.30.0.10")
        self.assertEqual(client.rr_ip, "10.30.0.11")
        self.assertEqual(client.cmd[0], "sh")
        self.assertIn("10.30.0.10", client.cmd[-1])

    def test_variants_sha256_constraints(self):
        sha_u = "a" * 64
        sha_c = "b" * 64
        doc = {"microservice_name": "both", "microservice_namespace": "x", "app_name": "app",
               "app_ns": "ns", "virtualization": ["unikernel", "container"], "memory": 64, "vcpus": 1,
               "arch": ["amd64"],
               "code": {"unikernel": "http://127.0.0.1:8000/u.tar.gz", "container": "localhost:5000/x:1"},
               "code_sha256": {"unikernel": sha_u, "container": sha_c},
               "port": "80:8080/tcp;5353:53/udp;9080",
               "environment": ["A=1", "B=two"], "restart": "always", "one_shot": True,
               "unikernel": {"flavor": "unikraft", "version": "0.16.3", "net": "nat", "graceful_stop_s": 3},
               "constraints": [{"type": "direct", "node": "n1;n2"},
                               {"type": "arch", "allowed": ["amd64"]},
                               {"type": "clusters", "allowed": ["c1", "c2"]}]}
        ms = oakuk.Microservice.parse(doc)
        self.assertEqual(ms.service_name, "app.ns.both.x")
        self.assertEqual(ms.virtualizations, ["unikernel", "container"])
        self.assertEqual(ms.code("unikernel", 0), "http://127.0.0.1:8000/u.tar.gz")
        self.assertEqual(ms.code("docker"), "localhost:5000/x:1")
        self.assertEqual(ms.code_sha256("unikernel", 0), sha_u)
        self.assertEqual(ms.code_sha256("container"), sha_c)
        self.assertEqual(ms.ports, [(80, 8080, "tcp"), (5353, 53, "udp"), (9080, 9080, "tcp")])
        self.assertEqual(ms.environment, ["A=1", "B=two"])
        self.assertEqual(ms.restart, "always")
        self.assertTrue(ms.one_shot)
        self.assertEqual(ms.unikernel, {"flavor": "unikraft", "version": "0.16.3", "net": "nat",
                                        "graceful_stop_s": 3})
        self.assertEqual(ms.constraints, [
            {"type": "direct", "cluster": None, "nodes": ["n1", "n2"]},
            {"type": "arch", "allowed": ["amd64"]},
            {"type": "clusters", "allowed": ["c1", "c2"]}])

    def test_unknown_virtualization_name(self):
        ms = oakuk.Microservice.parse(
            '{"microservice_name":"a","microservice_namespace":"b","virtualization":"container",'
            '"memory":1,"vcpus":1,"code":"localhost:5000/x:1"}')
        with self.assertRaises(ValueError):
            ms.code("vm")


class Module(unittest.TestCase):
    def test_version(self):
        self.assertRegex(oakuk.version(), r"^\d+\.\d+\.\d+$")

    def test_arch_names(self):
        self.assertTrue(oakuk.arch_is_known("arm64"))
        self.assertFalse(oakuk.arch_is_known("x86_64"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
