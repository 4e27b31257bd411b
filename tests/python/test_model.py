"""Node reports, cluster aggregates and aggregation through the binding."""

import json
import unittest

import oakuk
from _support import deep, edge_nodes, node, read, thesis


class NodeReports(unittest.TestCase):
    def test_getters(self):
        doc = node("n1", arch="amd64", vcpus=4, memory=2048, accel="tcg", emulated=["arm64"],
                   instances=[{"name": "a.b.c.d.instance.0", "status": "RUNNING", "cpu_percent": 1.5,
                               "memory_mb": 64}])
        r = oakuk.NodeReport.from_json(doc)
        self.assertEqual((r.id, r.host, r.architecture), ("n1", "n1", "amd64"))
        self.assertEqual((r.vcpus, r.memory_mb, r.memory_total_mb), (4, 2048, 4096))
        self.assertAlmostEqual(r.cpu_percent, 10.0)
        self.assertAlmostEqual(r.memory_percent, 50.0)
        self.assertEqual(r.virtualization, ["container", "unikernel"])
        self.assertEqual(r.unikernel_accel, "tcg")
        self.assertEqual(r.qemu_version, "7.2.0")
        self.assertEqual(r.emulated_archs, ["arm64"])
        self.assertEqual(r.accel_for_arch("amd64"), "tcg")
        self.assertEqual(r.accel_for_arch("arm64"), "tcg")
        self.assertIsNone(r.accel_for_arch("riscv64"))
        self.assertEqual(r.instances, [{"name": "a.b.c.d.instance.0", "status": "RUNNING",
                                        "cpu_percent": 1.5, "memory_mb": 64}])

    def test_container_only_node_has_no_accel(self):
        r = oakuk.NodeReport.from_json(edge_nodes()["edge-ctr-1"])
        self.assertEqual(r.virtualization, ["container"])
        self.assertIsNone(r.unikernel_accel)
        self.assertIsNone(r.accel_for_arch("amd64"))

    def test_received_at(self):
        r = oakuk.NodeReport.from_json(json.dumps(node("n1")))
        self.assertEqual(r.received_at_ms, 0)
        r.received_at_ms = 123456
        self.assertEqual(r.received_at_ms, 123456)
        self.assertNotIn("received_at_ms", json.loads(r.to_json()))

    def test_round_trip(self):
        r = oakuk.NodeReport.from_json(edge_nodes()["edge-tcg-1"])
        again = oakuk.NodeReport.from_json(r.to_json(pretty=True))
        for attr in ("id", "architecture", "vcpus", "memory_mb", "virtualization", "unikernel_accel",
                     "emulated_archs"):
            self.assertEqual(getattr(again, attr), getattr(r, attr), attr)

    def test_missing_key_is_named(self):
        for key in ("id", "architecture", "vcpus", "memory"):
            with self.subTest(key=key):
                doc = node("n1")
                del doc[key]
                with self.assertRaises(oakuk.OakukError) as cm:
                    oakuk.NodeReport.from_json(doc)
                self.assertEqual(cm.exception.code_name, "OAKUK_EINVAL")
                self.assertIn(key, cm.exception.message)

    def test_wrong_type_is_named(self):
        doc = node("n1")
        doc["vcpus"] = "four"
        with self.assertRaises(oakuk.OakukError) as cm:
            oakuk.NodeReport.from_json(doc)
        self.assertIn("vcpus", cm.exception.message)


class Aggregates(unittest.TestCase):
    def test_thesis_listing(self):
        a = oakuk.ClusterAggregate.from_json(read(thesis("cluster-aggregate-listing-4.8.json")))
        self.assertEqual(a.cpu_cores, 12)
        self.assertEqual(a.memory_mb, 7627)
        self.assertEqual(a.number_of_nodes, 1)
        self.assertEqual(a.virtualization, ["container", "unikernel"])
        self.assertEqual(a.arch, ["amd64"])
        self.assertEqual(a.per_arch_names, ["amd64"])
        amd = a.per_arch("amd64")
        self.assertEqual((amd["cpu_cores"], amd["memory_mb"]), (12, 7627))
        self.assertAlmostEqual(amd["cpu_percent"], 0.9)
        self.assertAlmostEqual(amd["memory_percent"], 38.766353153520356)
        self.assertIsNone(a.per_arch("arm64"))
        kept = json.loads(a.to_json())
        self.assertEqual(kept["gpu_cores"], 0)
        self.assertEqual(kept["more"], 0)

    def test_identity(self):
        a = oakuk.ClusterAggregate.from_json(read(thesis("cluster-aggregate-listing-4.8.json")))
        self.assertIsNone(a.id)
        a.set_identity("c-1", "munich")
        self.assertEqual((a.id, a.name), ("c-1", "munich"))
        a.received_at_ms = 99
        self.assertEqual(a.received_at_ms, 99)


class Fold(unittest.TestCase):
    def mixed(self):
        return [node("kvm-amd", "amd64", vcpus=4, memory=4000, accel="kvm", cpu=10.0,
                     instances=[{"name": "a.b.c.d.instance.0", "status": "RUNNING", "cpu_percent": 1.0,
                                 "memory_mb": 64}]),
                node("ctr-amd", "amd64", vcpus=8, memory=8000, virt=["container"], cpu=20.0),
                node("kvm-arm", "arm64", vcpus=2, memory=1000, accel="kvm", cpu=30.0),
                node("tcg-amd", "amd64", vcpus=16, memory=16000, accel="tcg", cpu=40.0)]

    def test_mixed_nodes(self):
        agg = oakuk.aggregate.fold(self.mixed())
        self.assertEqual(agg.number_of_nodes, 4)
        self.assertEqual(agg.active_nodes, 4)
        self.assertEqual(agg.cpu_cores, 4 + 8 + 2 + 16)
        self.assertEqual(agg.memory_mb, 4000 + 8000 + 1000 + 16000)
        self.assertAlmostEqual(agg.cpu_percent, 25.0)
        self.assertEqual(sorted(agg.arch), ["amd64", "arm64"])
        self.assertEqual(agg.virtualization, ["container", "unikernel"])
        arm = agg.per_arch("arm64")  # only the arm64 KVM node
        self.assertEqual((arm["cpu_cores"], arm["memory_mb"], arm["accel"]), (2, 1000, "kvm"))
        self.assertAlmostEqual(arm["cpu_percent"], 30.0)
        amd = agg.per_arch("amd64")  # the two unikernel-capable amd64 nodes, not the container-only one
        self.assertEqual((amd["cpu_cores"], amd["memory_mb"], amd["accel"]), (20, 20000, "kvm"))
        self.assertIsNone(agg.per_arch("riscv64"))
        self.assertEqual(json.loads(agg.to_json())["jobs"], ["a.b.c.d.instance.0"])

    def test_emulated_arch_counts_as_tcg(self):
        nodes = edge_nodes()
        agg = oakuk.aggregate.fold([nodes["edge-tcg-1"], nodes["edge-ctr-1"]])
        arm = agg.per_arch("arm64")
        self.assertEqual((arm["cpu_cores"], arm["accel"]), (16, "tcg"))
        self.assertEqual(agg.per_arch("amd64")["accel"], "tcg")

    def test_stale_node_counts_only_in_number_of_nodes(self):
        reports = [oakuk.NodeReport.from_json(d) for d in self.mixed()]
        for r in reports:
            r.received_at_ms = 100000
        reports[2].received_at_ms = 100000 - 30000  # the arm node went quiet
        agg = oakuk.aggregate.fold(reports, now_ms=100000, node_timeout_ms=10000)
        self.assertEqual(agg.number_of_nodes, 4)
        self.assertEqual(agg.active_nodes, 3)
        self.assertEqual(agg.cpu_cores, 4 + 8 + 16)
        self.assertIsNone(agg.per_arch("arm64"))

    def test_empty(self):
        agg = oakuk.aggregate.fold([])
        self.assertEqual((agg.number_of_nodes, agg.active_nodes, agg.cpu_cores), (0, 0, 0))

    def test_duplicate_ids_last_wins(self):
        old = node("n1", memory=1000)
        new = deep(old)
        new["memory"] = 3000
        agg = oakuk.aggregate.fold([old, new])
        self.assertEqual(agg.number_of_nodes, 1)
        self.assertEqual(agg.memory_mb, 3000)

    def test_aggregate_round_trips_through_json(self):
        agg = oakuk.aggregate.fold(self.mixed())
        again = oakuk.ClusterAggregate.from_json(agg.to_json())
        self.assertEqual(again.per_arch("arm64"), agg.per_arch("arm64"))
        self.assertEqual(again.cpu_cores, agg.cpu_cores)


if __name__ == "__main__":
    unittest.main(verbosity=2)
