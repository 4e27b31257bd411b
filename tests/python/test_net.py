"""The network plumber through the binding, in network namespaces this test creates and deletes
(a "host" namespace holding the node's bridge, and one per instance); no traffic leaves them. With
the test guest (OAKUK_GUESTS_DIR) and QEMU, a guest deployed on the plumbed network answers HTTP
inside the host namespace, directly and through a port mapping on 127.0.0.1. Needs root."""

import ipaddress
import os
import shutil
import subprocess
import tempfile
import unittest

import oakuk

GUESTS = os.environ.get("OAKUK_GUESTS_DIR")
PREFIX = "pyh%d" % os.getpid()
SUBNET = "10.18.77.0/24"
NETNS_DIR = "/run/netns"


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def netns_exists(name):
    return os.path.exists(os.path.join(NETNS_DIR, name))


def delete_our_namespaces():
    """Every namespace named with this process's prefix (what a failed test may leave)."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(PREFIX):
            ip("netns", "del", name, check=False)


def in_host(host, code, timeout=30):
    """Runs Python code inside the host namespace (the only place the instances are reachable)."""
    return subprocess.run(["ip", "netns", "exec", host, "python3", "-c", code], capture_output=True,
                          text=True, timeout=timeout)


HTTP_GET = ("import sys, urllib.request\n"
            "print(urllib.request.urlopen(sys.argv[1] if len(sys.argv) > 1 else %r, timeout=5).read().decode())")


class Plumbing(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root (network namespaces, netlink, nftables)")
        if not shutil.which("ip"):
            self.skipTest("needs ip (iproute2) to make the host namespace")
        self.host = PREFIX + "-host"
        self.addCleanup(delete_our_namespaces)
        ip("netns", "add", self.host)
        ip("-n", self.host, "link", "set", "lo", "up")
        self.net = oakuk.Net(SUBNET, netns_path=os.path.join(NETNS_DIR, self.host))
        self.addCleanup(self.teardown_net)
        self.net.setup_node()

    def teardown_net(self):
        try:
            self.net.teardown_node()
        finally:
            del self.net

    def name(self, what):
        return "%s.%s.instance.0" % (PREFIX, what)

    def test_node_and_instances(self):
        state = self.net.list()
        self.assertTrue(state["bridge"])
        self.assertTrue(state["table"])
        self.assertFalse(state["vxlan"])
        self.assertIn("oakuk0", ip("-n", self.host, "-o", "link", "show").stdout)

        a = self.net.instance_setup(self.name("a"), mode="uk-direct")
        self.assertEqual((a.name, a.mode, a.tap), (self.name("a"), "uk-direct", "tap0"))
        self.assertEqual(a.netns_path, os.path.join(NETNS_DIR, self.name("a")))
        self.assertTrue(netns_exists(self.name("a")))
        self.assertIn(ipaddress.ip_address(a.ip), ipaddress.ip_network(SUBNET))
        self.assertEqual((a.guest_gateway, a.guest_prefix), ("10.18.77.1", 24))
        self.assertRegex(a.guest_mac, r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
        self.assertLessEqual(len(a.host_ifname), 15)
        self.assertIn(a.host_ifname, ip("-n", self.host, "-o", "link", "show", "master", "oakuk0").stdout)
        again = self.net.instance_setup(self.name("a"), mode="uk-direct")  # adopts
        self.assertEqual(again.ip, a.ip)

        b = self.net.instance_setup(self.name("b"), ip="10.18.77.50", mode="container")
        self.assertEqual((b.mode, b.ip, b.tap), ("container", "10.18.77.50", None))

        self.net.port_map_add(self.name("a"), "18080:8080/tcp")
        ports = self.net.list()["ports"]
        self.assertIn({"instance": self.name("a"), "proto": "tcp", "host": 18080, "ip": a.ip, "guest": 8080},
                      ports)
        with self.assertRaises(oakuk.OakukError) as cm:
            self.net.port_map_add(self.name("b"), "18080:80")
        self.assertEqual(cm.exception.code_name, "OAKUK_EEXISTS")
        self.assertIn(self.name("a"), cm.exception.message)
        with self.assertRaises(oakuk.OakukError) as cm:
            self.net.port_map_remove(self.name("b"), "18080:80")  # a's mapping, not b's
        self.assertEqual(cm.exception.code_name, "OAKUK_ENOTFOUND")

        self.net.service_set("10.30.77.1", 80, [a.ip, b.ip])
        [svc] = [s for s in self.net.list()["services"] if s["ip"] == "10.30.77.1"]
        self.assertEqual(sorted(svc["backends"]), sorted([a.ip, b.ip]))
        self.net.service_remove("10.30.77.1")

        # reconcile keeps a, removes b (its netns and veth)
        self.net.reconcile(instances=[self.name("a")])
        self.assertFalse(netns_exists(self.name("b")))
        self.assertEqual([i["name"] for i in self.net.list()["instances"]], [self.name("a")])

        self.net.instance_teardown(self.name("a"))
        self.assertFalse(netns_exists(self.name("a")))
        self.assertEqual(self.net.list()["ports"], [])
        self.net.instance_teardown(self.name("a"))  # nothing left: still fine

        self.net.teardown_node()
        state = self.net.list()
        self.assertFalse(state["bridge"])
        self.assertFalse(state["table"])

    def test_errors_carry_path_and_message(self):
        with self.assertRaises(oakuk.OakukError) as cm:
            oakuk.Net("10.18.77.7/33")
        self.assertEqual(cm.exception.code_name, "OAKUK_EINVAL")
        self.assertIn("node_subnet", (cm.exception.path or "") + cm.exception.message)
        with self.assertRaises(oakuk.OakukError) as cm:
            self.net.instance_setup(self.name("c"), ip="10.99.0.9")  # outside the subnet
        self.assertEqual(cm.exception.code_name, "OAKUK_EINVAL")
        self.assertIn("10.99.0.9", cm.exception.message)
        self.assertFalse(netns_exists(self.name("c")))
        with self.assertRaises(ValueError):
            self.net.instance_setup(self.name("c"), mode="bridge")

    def test_guest_on_the_plumbed_network(self):
        if not shutil.which("qemu-system-x86_64") or not GUESTS or \
                not os.path.exists(os.path.join(GUESTS, "guest-amd64.tar.gz")):
            self.skipTest("needs qemu-system-x86_64 and the amd64 test guest (OAKUK_GUESTS_DIR)")
        tmp = tempfile.mkdtemp(prefix="oakuk-py-net-")
        self.addCleanup(shutil.rmtree, tmp, True)
        cache = oakuk.ImageCache(os.path.join(tmp, "cache"), file_allowed_dirs=[GUESTS])
        image = cache.fetch("file://" + os.path.join(GUESTS, "guest-amd64.tar.gz"))
        rt = oakuk.qemu_runtime(os.path.join(tmp, "state"), run_as="nobody")
        self.addCleanup(rt.close)  # runs before the namespaces go (cleanups run last-in first-out)

        name = self.name("web")
        info = self.net.instance_setup(name, mode="uk-direct")
        spec = oakuk.InstanceSpec.from_image(name, image, accel="tcg", memory_mb=96, args=["net"])
        spec.set_network(info.netns_path, info.tap, info.guest_ip, info.guest_prefix, info.guest_gateway,
                         info.guest_mac)
        # readiness by console: a TCP probe would connect from this process's namespace, where
        # the instance subnet is not (and must not be) routed
        spec.readiness_serial = "oakuk-guest: ready ip=%s" % info.guest_ip
        self.assertEqual(spec.network["tap_name"], "tap0")
        rt.deploy(spec)
        rt.wait_status(name, "RUNNING", timeout=60)
        rt.wait_ready(name, timeout=180)
        self.assertIn("oakuk-guest: ready ip=%s files=yes args=net" % info.guest_ip, rt.console(name))

        r = in_host(self.host, HTTP_GET % ("http://%s:8080/cgi-bin/index.cgi" % info.ip))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ip: %s" % info.guest_ip, r.stdout)
        self.assertIn("args: net", r.stdout)
        self.net.port_map_add(name, "18080:8080/tcp")
        r = in_host(self.host, HTTP_GET % "http://127.0.0.1:18080/cgi-bin/index.cgi")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ip: %s" % info.guest_ip, r.stdout)

        rt.undeploy(name)
        rt.wait_status(name, "UNDEPLOYED", timeout=30)
        self.net.instance_teardown(name)
        self.assertFalse(netns_exists(name))


if __name__ == "__main__":
    unittest.main(verbosity=2)
