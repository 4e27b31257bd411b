"""Node and cluster selection through the binding."""

import collections
import json
import unittest

import oakuk
from _support import edge_nodes, node, read, service, thesis


class SelectNode(unittest.TestCase):
    def test_unikernel_explanations_name_every_reject_reason(self):
        nodes = [node("arm", "arm64", memory=8000, accel="kvm"),
                 node("ctr", "amd64", memory=9000, virt=["container"]),
                 node("kvm", "amd64", memory=2000, accel="kvm"),
                 node("small", "amd64", memory=64, accel="kvm")]
        ms = oakuk.Microservice.parse(service("web", arch=["amd64"], memory=128))
        p = oakuk.select_node(ms, nodes)
        self.assertTrue(p.ok)
        self.assertEqual((p.target, p.index), ("kvm", 2))
        self.assertEqual((p.virt, p.arch, p.accel), ("unikernel", "amd64", "kvm"))
        self.assertEqual(p.code, "http://127.0.0.1:8000/web-amd64.tar.gz")
        self.assertIsNone(p.code_sha256)
        self.assertEqual(p.status, "NODE_SCHEDULED")
        lines = p.explanation
        self.assertEqual(len(lines), 4, lines)
        for line, nid in zip(lines, ("arm", "ctr", "kvm", "small")):
            self.assertTrue(line.startswith("node %s:" % nid), line)
        self.assertIn("arm64", lines[0])
        self.assertIn("unikernel", lines[1])
        self.assertIn("chosen", lines[2])
        self.assertIn("64 MB", lines[3])  # free memory shown against the 128 MB needed
        self.assertEqual(sum("chosen" in line for line in lines), 1)
        self.assertEqual(p.explain(), "\n".join(lines))

    def test_not_placed_returns_placement(self):
        ms = oakuk.Microservice.parse(service("web", arch=["riscv64"]))
        p = oakuk.select_node(ms, list(edge_nodes().values()))
        self.assertFalse(p.ok)
        self.assertFalse(p)
        self.assertEqual(p.status, "NO_QUALIFIED_WORKER_FOUND")
        self.assertIsNone(p.target)
        self.assertEqual(p.index, -1)
        self.assertEqual(len(p.explanation), 4)

    def test_no_capacity_status(self):
        ms = oakuk.Microservice.parse(service("big", virt="container", arch=None, memory=100000))
        p = oakuk.select_node(ms, list(edge_nodes().values()))
        self.assertFalse(p.ok)
        self.assertEqual(p.status, "NO_WORKER_CAPACITY")

    def test_kvm_beats_tcg_and_emulation_must_be_allowed(self):
        nodes = edge_nodes()
        forbid = oakuk.Microservice.parse(service("web", arch=["arm64"]))
        allow = oakuk.Microservice.parse(service("web", arch=["arm64"], emulation="allow"))
        only_tcg = [nodes["edge-tcg-1"], nodes["edge-ctr-1"]]
        self.assertFalse(oakuk.select_node(forbid, only_tcg).ok)
        p = oakuk.select_node(allow, only_tcg)
        self.assertEqual((p.target, p.arch, p.accel), ("edge-tcg-1", "arm64", "tcg"))
        # the TCG node has ten times the free memory, still the KVM node wins
        p = oakuk.select_node(allow, list(nodes.values()))
        self.assertEqual((p.target, p.arch, p.accel), ("edge-arm-1", "arm64", "kvm"))

    def test_policies(self):
        nodes = [node("big", memory=8000), node("fit", memory=600), node("mid", memory=3000)]
        ms = oakuk.Microservice.parse(service("web", memory=512))
        self.assertEqual(oakuk.select_node(ms, nodes).target, "big")
        self.assertEqual(oakuk.select_node(ms, nodes, policy="best-fit").target, "fit")
        with self.assertRaises(ValueError):
            oakuk.select_node(ms, nodes, policy="random")
        with self.assertRaises(oakuk.OakukError) as cm:
            oakuk.select_node(ms, nodes, policy=7)
        self.assertEqual(cm.exception.code_name, "OAKUK_EINVAL")

    def test_stale_nodes_are_skipped(self):
        reports = [oakuk.NodeReport.from_json(node("old", memory=9000)),
                   oakuk.NodeReport.from_json(node("fresh", memory=1000))]
        reports[0].received_at_ms = 1000
        reports[1].received_at_ms = 59000
        ms = oakuk.Microservice.parse(service("web"))
        p = oakuk.select_node(ms, reports, now_ms=60000, timeout_ms=10000)
        self.assertEqual(p.target, "fresh")
        self.assertEqual(oakuk.select_node(ms, reports, now_ms=0).target, "old")


class Reservations(unittest.TestCase):
    def test_api(self):
        res = oakuk.Reservations()
        res.add("a.instance.0", "n1", 1, 100)
        res.add("b.instance.0", "n1", 2, 200)
        res.add("c.instance.0", "n2", 1, 50)
        self.assertEqual(res.total("n1"), (3, 300))
        res.add("a.instance.0", "n1", 1, 400)  # replaces
        self.assertEqual(res.total("n1"), (3, 600))
        self.assertTrue(res.remove("b.instance.0"))
        self.assertFalse(res.remove("b.instance.0"))
        self.assertEqual(res.total("n1"), (1, 400))
        self.assertEqual(res.total("nowhere"), (0, 0))

    def test_five_services_spread_without_overcommit(self):
        nodes = [node("n1", vcpus=2, memory=2048), node("n2", vcpus=2, memory=2048),
                 node("n3", vcpus=2, memory=2048)]
        res = oakuk.Reservations()
        placed = collections.Counter()
        for i in range(5):
            ms = oakuk.Microservice.parse(service("s%d" % i, virt="container", arch=None, memory=1000))
            p = oakuk.select_node(ms, nodes, reservations=res, reserve_key="s%d.instance.0" % i)
            self.assertTrue(p.ok, p.explanation)
            placed[p.target] += 1
        self.assertEqual(sorted(placed.values()), [1, 2, 2])
        for nid, count in placed.items():
            self.assertEqual(res.total(nid), (count, count * 1000))
        # one slot left: the sixth fits, the seventh finds no capacity
        six = oakuk.Microservice.parse(service("s5", virt="container", arch=None, memory=1000))
        self.assertTrue(oakuk.select_node(six, nodes, reservations=res, reserve_key="s5.instance.0").ok)
        p = oakuk.select_node(six, nodes, reservations=res, reserve_key="s6.instance.0")
        self.assertEqual(p.status, "NO_WORKER_CAPACITY")
        self.assertIsNone(p.target)
        # the reports now show the first instance; dropping its reservation frees exactly that
        self.assertTrue(res.remove("s0.instance.0"))
        self.assertTrue(oakuk.select_node(six, nodes, reservations=res, reserve_key="s6.instance.0").ok)

    def test_without_reservations_everything_lands_on_one_node(self):
        nodes = [node("n1", memory=4096), node("n2", memory=4000)]
        ms = oakuk.Microservice.parse(service("web", virt="container", arch=None, memory=1000))
        self.assertEqual({oakuk.select_node(ms, nodes).target for _ in range(3)}, {"n1"})


class SelectCluster(unittest.TestCase):
    def clusters(self):
        nodes = edge_nodes()
        east = oakuk.aggregate.fold([nodes["edge-kvm-1"], nodes["edge-ctr-1"]])
        east.set_identity("c-east", "east")
        west = oakuk.aggregate.fold([nodes["edge-arm-1"]])
        west.set_identity("c-west", "west")
        thesis_agg = oakuk.ClusterAggregate.from_json(read(thesis("cluster-aggregate-listing-4.8.json")))
        thesis_agg.set_identity("c-lab", "lab")
        return [east, west, thesis_agg]

    def test_arm64_unikernel_goes_to_cluster_with_arm64_nodes(self):
        ms = oakuk.Microservice.parse(service("web", arch=["arm64"]))
        p = oakuk.select_cluster(ms, self.clusters())
        self.assertTrue(p.ok, p.explanation)
        self.assertEqual((p.target, p.index, p.arch), ("c-west", 1, "arm64"))
        self.assertEqual(p.status, "CLUSTER_SCHEDULED")
        self.assertEqual(len(p.explanation), 3)
        self.assertTrue(all(line.startswith("cluster ") for line in p.explanation), p.explanation)

    def test_no_cluster(self):
        ms = oakuk.Microservice.parse(service("web", arch=["riscv64"]))
        p = oakuk.select_cluster(ms, self.clusters())
        self.assertFalse(p.ok)
        self.assertEqual(p.status, "NoActiveClusterWithCapacity")

    def test_accepts_json_documents(self):
        docs = [json.loads(c.to_json()) for c in self.clusters()]
        ms = oakuk.Microservice.parse(service("web", arch=["amd64"]))
        self.assertTrue(oakuk.select_cluster(ms, docs).ok)


if __name__ == "__main__":
    unittest.main(verbosity=2)
