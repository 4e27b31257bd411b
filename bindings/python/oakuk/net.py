"""The node's network plumber (<oakuk/net.h>): bridge, per-instance netns/veth/tap, port
mappings, service IPs and VXLAN peers. Every call blocks until the kernel work is done. Needs
CAP_NET_ADMIN (root)."""

from __future__ import annotations

import ctypes
import json
import os
from typing import Optional, Sequence, Union

from ._base import Handle, OakukError, raise_error
from ._lib import byref, c_void_p, fs_bytes, lib, take_string, text, to_bytes

__all__ = ["Net", "NetInstanceInfo", "MODES"]

PathLike = Union[str, bytes, "os.PathLike[str]"]

MODES = {"container": 0, "uk-direct": 1, "uk-nat": 2}
"""Instance network modes: OAKUK_NET_CONTAINER, OAKUK_NET_UK_DIRECT, OAKUK_NET_UK_NAT."""
_MODE_NAMES = {v: k for k, v in MODES.items()}
OPTIONS_VERSION = 1


class _Options(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("bridge", ctypes.c_char_p),
                ("node_subnet", ctypes.c_char_p), ("overlay_cidr", ctypes.c_char_p),
                ("service_cidr", ctypes.c_char_p), ("underlay_ip", ctypes.c_char_p),
                ("vxlan_id", ctypes.c_uint32), ("vxlan_port", ctypes.c_uint32),
                ("netns_path", ctypes.c_char_p)]


def _check(rc: int, err: c_void_p, what: str) -> None:
    if rc != 0:
        raise_error(err, rc, what)


def _strings(values: Sequence[str], what: str) -> "ctypes.Array[ctypes.c_char_p]":
    array = (ctypes.c_char_p * max(len(values), 1))()
    for i, value in enumerate(values):
        array[i] = to_bytes(value, what)
    return array


class NetInstanceInfo(Handle):
    """An instance's network: its namespace, veth, tap and what the guest configures."""

    _unref_fn = lib.oakuk_net_instance_info_unref
    _ref_fn = lib.oakuk_net_instance_info_ref

    @property
    def name(self) -> str:
        """The instance name."""
        return text(lib.oakuk_net_instance_info_name(self))

    @property
    def mode(self) -> str:
        """"container", "uk-direct" or "uk-nat"."""
        return _MODE_NAMES.get(lib.oakuk_net_instance_info_mode(self), "unknown")

    @property
    def netns_path(self) -> str:
        """"/run/netns/<name>"."""
        return text(lib.oakuk_net_instance_info_netns_path(self))

    @property
    def host_ifname(self) -> str:
        """Host end of the veth pair."""
        return text(lib.oakuk_net_instance_info_host_ifname(self))

    @property
    def ip(self) -> str:
        """The instance IP (what other instances connect to)."""
        return text(lib.oakuk_net_instance_info_ip(self))

    @property
    def tap(self) -> Optional[str]:
        """"tap0" for unikernels, None for containers."""
        return text(lib.oakuk_net_instance_info_tap(self))

    @property
    def guest_ip(self) -> str:
        """The IP the guest configures."""
        return text(lib.oakuk_net_instance_info_guest_ip(self))

    @property
    def guest_prefix(self) -> int:
        """The guest's prefix length."""
        return int(lib.oakuk_net_instance_info_guest_prefix(self))

    @property
    def guest_gateway(self) -> str:
        """The guest's gateway."""
        return text(lib.oakuk_net_instance_info_guest_gateway(self))

    @property
    def guest_mac(self) -> str:
        """The guest's MAC address."""
        return text(lib.oakuk_net_instance_info_guest_mac(self))

    def __repr__(self) -> str:
        return "<oakuk.NetInstanceInfo %s %s %s>" % (self.name, self.mode, self.ip)


class Net(Handle):
    """The plumber of one node. node_subnet is required ("10.18.3.0/24"); netns_path puts the
    node (its bridge, nftables table, routes) in that network namespace instead of the process's.
    Creating it touches nothing in the kernel: setup_node does."""

    _unref_fn = lib.oakuk_net_unref
    _ref_fn = lib.oakuk_net_ref

    def __init__(self, node_subnet: str, bridge: Optional[str] = None, overlay_cidr: Optional[str] = None,
                 service_cidr: Optional[str] = None, underlay_ip: Optional[str] = None,
                 vxlan_id: Optional[int] = None, vxlan_port: Optional[int] = None,
                 netns_path: Optional[PathLike] = None) -> None:
        """Validates the options and starts the plumbing thread; None keeps a default."""
        opts = _Options()
        rc = lib.oakuk_net_options_init(byref(opts), OPTIONS_VERSION)
        if rc != 0:
            raise OakukError(rc, "oakuk_net_options_init: version %d unknown to the library" % OPTIONS_VERSION)
        # the struct points into these bytes objects: they live until oakuk_net_new copied them
        keep = {"node_subnet": to_bytes(node_subnet, "node_subnet"), "bridge": to_bytes(bridge, "bridge"),
                "overlay_cidr": to_bytes(overlay_cidr, "overlay_cidr"),
                "service_cidr": to_bytes(service_cidr, "service_cidr"),
                "underlay_ip": to_bytes(underlay_ip, "underlay_ip"),
                "netns_path": fs_bytes(netns_path, "netns_path")}
        for key, value in keep.items():
            if value is not None or key in ("underlay_ip", "netns_path"):
                setattr(opts, key, value)
        if vxlan_id is not None:
            opts.vxlan_id = int(vxlan_id)
        if vxlan_port is not None:
            opts.vxlan_port = int(vxlan_port)
        err = c_void_p()
        ptr = lib.oakuk_net_new(byref(opts), byref(err))
        if not ptr:
            raise_error(err, what="oakuk_net_new")
        Handle.__init__(self, ptr)

    def setup_node(self) -> None:
        """Bridge, forwarding, nftables table, service route, VXLAN device; idempotent."""
        err = c_void_p()
        _check(lib.oakuk_net_setup_node(self, byref(err)), err, "oakuk_net_setup_node")

    def teardown_node(self) -> None:
        """Removes every instance, the table, the VXLAN device and the bridge."""
        err = c_void_p()
        _check(lib.oakuk_net_teardown_node(self, byref(err)), err, "oakuk_net_teardown_node")

    def instance_setup(self, name: str, ip: Optional[str] = None, mode: Union[str, int] = "uk-direct") -> NetInstanceInfo:
        """Creates (or adopts) netns /run/netns/<name>, the veth pair and, for unikernels, tap0;
        ip None takes the next free address of the subnet. mode: a MODES key."""
        code = mode if isinstance(mode, int) else MODES.get(mode)
        if code is None:
            raise ValueError("unknown network mode %r (expected one of %s)" % (mode, ", ".join(MODES)))
        out = c_void_p()
        err = c_void_p()
        rc = lib.oakuk_net_instance_setup(self, to_bytes(name, "name"), to_bytes(ip, "ip"), code, byref(out),
                                          byref(err))
        _check(rc, err, "oakuk_net_instance_setup")
        return NetInstanceInfo._wrap(out.value)

    def instance_teardown(self, name: str) -> None:
        """Removes the instance's netns, veth, tap and port mappings; succeeds when none exist."""
        err = c_void_p()
        _check(lib.oakuk_net_instance_teardown(self, to_bytes(name, "name"), byref(err)), err,
               "oakuk_net_instance_teardown")

    def port_map_add(self, instance: str, spec: str) -> None:
        """Maps "HOST:GUEST[/tcp|/udp]" to the instance's IP; OAKUK_EEXISTS when taken."""
        err = c_void_p()
        _check(lib.oakuk_net_port_map_add(self, to_bytes(instance, "instance"), to_bytes(spec, "spec"),
                                          byref(err)), err, "oakuk_net_port_map_add")

    def port_map_remove(self, instance: str, spec: str) -> None:
        """Removes a mapping the instance owns; OAKUK_ENOTFOUND when absent."""
        err = c_void_p()
        _check(lib.oakuk_net_port_map_remove(self, to_bytes(instance, "instance"), to_bytes(spec, "spec"),
                                             byref(err)), err, "oakuk_net_port_map_remove")

    def service_set(self, rr_ip: str, port: int, backends: Sequence[str]) -> None:
        """Spreads new connections to rr_ip (port, or any port when 0) over backends; [] removes."""
        array = _strings(backends, "backends")
        err = c_void_p()
        _check(lib.oakuk_net_service_set(self, to_bytes(rr_ip, "rr_ip"), int(port), array, len(backends),
                                         byref(err)), err, "oakuk_net_service_set")

    def service_remove(self, rr_ip: str) -> None:
        """Removes the service IP rr_ip."""
        err = c_void_p()
        _check(lib.oakuk_net_service_remove(self, to_bytes(rr_ip, "rr_ip"), byref(err)), err,
               "oakuk_net_service_remove")

    def peer_add(self, underlay_ip: str, node_subnet: str) -> None:
        """Adds a peer node reached over VXLAN (needs underlay_ip set on this node)."""
        err = c_void_p()
        _check(lib.oakuk_net_peer_add(self, to_bytes(underlay_ip, "underlay_ip"),
                                      to_bytes(node_subnet, "node_subnet"), byref(err)), err,
               "oakuk_net_peer_add")

    def peer_remove(self, underlay_ip: str, node_subnet: Optional[str] = None) -> None:
        """Removes a peer; succeeds when it is unknown."""
        err = c_void_p()
        _check(lib.oakuk_net_peer_remove(self, to_bytes(underlay_ip, "underlay_ip"),
                                         to_bytes(node_subnet, "node_subnet"), byref(err)), err,
               "oakuk_net_peer_remove")

    def reconcile(self, instances: Sequence[str] = (), services: Sequence[str] = (),
                  peers: Sequence[str] = ()) -> None:
        """Removes every instance, service and peer of ours that is not in the keep lists."""
        a, b, c = (_strings(instances, "instances"), _strings(services, "services"),
                   _strings(peers, "peers"))
        err = c_void_p()
        _check(lib.oakuk_net_reconcile(self, a, len(instances), b, len(services), c, len(peers), byref(err)),
               err, "oakuk_net_reconcile")

    def list(self) -> dict:
        """What exists in the kernel with our naming: {"bridge", "vxlan", "table", "instances",
        "netns", "ports", "services", "peers", "fdb"} (see <oakuk/net.h>)."""
        err = c_void_p()
        ptr = lib.oakuk_net_list(self, byref(err))
        if not ptr:
            raise_error(err, what="oakuk_net_list")
        return json.loads(take_string(ptr) or "{}")

    def __repr__(self) -> str:
        return "<oakuk.Net>"
