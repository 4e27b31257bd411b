"""Node reports and cluster aggregates (docs/architecture.md §7)."""

from __future__ import annotations

import ctypes
from typing import Any, Callable, Optional, TypeVar, Union

from ._base import Handle, accel_name, raise_error, virt_code, virt_name
from ._lib import byref, c_void_p, json_bytes, lib, take_string, text, to_bytes

__all__ = ["NodeReport", "ClusterAggregate", "instance_status_name", "instance_name"]

Document = Union[str, bytes, dict]
_H = TypeVar("_H", bound=Handle)


def instance_status_name(status: int) -> Optional[str]:
    """OAKUK_STATUS_* int -> "RUNNING", "NO_QUALIFIED_WORKER_FOUND", ...; None if unknown."""
    return text(lib.oakuk_instance_status_name(status))


def instance_name(service_name: str, n: int) -> str:
    """"<service_name>.instance.<n>"."""
    ptr = lib.oakuk_instance_name(to_bytes(service_name, "service_name"), n)
    if not ptr:
        raise ValueError("instance_name: service_name must be set and n >= 0")
    return take_string(ptr)


def _to_json(fn: Callable[..., Any], obj: Handle, pretty: bool) -> str:
    err = c_void_p()
    ptr = fn(obj, bool(pretty), byref(err))
    if not ptr:
        raise_error(err, what="to_json")
    return take_string(ptr)


def _from_json(cls: type[_H], fn: Callable[..., Any], document: Document) -> _H:
    data = json_bytes(document)
    err = c_void_p()
    ptr = fn(data, len(data), byref(err))
    if not ptr:
        raise_error(err, what=fn.__name__)
    return cls._wrap(ptr)


class NodeReport(Handle):
    """What a node publishes every report_interval."""

    _unref_fn = lib.oakuk_node_report_unref
    _ref_fn = lib.oakuk_node_report_ref

    @classmethod
    def from_json(cls, document: Document) -> NodeReport:
        """From str, bytes or a dict; raises OakukError naming a missing/mistyped key."""
        return _from_json(cls, lib.oakuk_node_report_from_json, document)

    def to_json(self, pretty: bool = False) -> str:
        """The report as a JSON document (indented with pretty)."""
        return _to_json(lib.oakuk_node_report_to_json, self, pretty)

    @property
    def id(self) -> Optional[str]:
        """The node's id."""
        return text(lib.oakuk_node_report_id(self))

    @property
    def host(self) -> Optional[str]:
        """The node's host name."""
        return text(lib.oakuk_node_report_host(self))

    @property
    def ip(self) -> Optional[str]:
        """The node's IP address."""
        return text(lib.oakuk_node_report_ip(self))

    @property
    def architecture(self) -> Optional[str]:
        """The node's GOARCH."""
        return text(lib.oakuk_node_report_architecture(self))

    @property
    def cpu_percent(self) -> float:
        """CPU use in percent."""
        return lib.oakuk_node_report_cpu_percent(self)

    @property
    def vcpus(self) -> int:
        """CPU cores."""
        return lib.oakuk_node_report_vcpus(self)

    @property
    def memory_mb(self) -> int:
        """Free memory in MB."""
        return lib.oakuk_node_report_memory_mb(self)

    @property
    def memory_total_mb(self) -> int:
        """Total memory in MB."""
        return lib.oakuk_node_report_memory_total_mb(self)

    @property
    def memory_percent(self) -> float:
        """Memory use in percent."""
        return lib.oakuk_node_report_memory_percent(self)

    @property
    def unikernel_accel(self) -> Optional[str]:
        """"kvm", "tcg" or None."""
        return accel_name(lib.oakuk_node_report_unikernel_accel(self))

    @property
    def qemu_version(self) -> Optional[str]:
        """The node's QEMU version, or None."""
        return text(lib.oakuk_node_report_qemu_version(self))

    def has_virt(self, virt: Union[str, int]) -> bool:
        """Whether the node offers virt ("container"/"unikernel" or OAKUK_VIRT_*)."""
        return bool(lib.oakuk_node_report_has_virt(self, virt_code(virt)))

    @property
    def virtualization(self) -> list[str]:
        """The virtualizations the node offers, "container" before "unikernel"."""
        return [name for code, name in ((1, "container"), (2, "unikernel"))
                if lib.oakuk_node_report_has_virt(self, code)]

    @property
    def emulated_archs(self) -> list[str]:
        """Foreign architectures the node runs unikernels of under TCG."""
        return [text(lib.oakuk_node_report_emulated_arch(self, i))
                for i in range(lib.oakuk_node_report_emulated_arch_count(self))]

    def accel_for_arch(self, arch: str) -> Optional[str]:
        """"kvm"/"tcg" the node offers unikernels of arch, or None."""
        return accel_name(lib.oakuk_node_report_accel_for_arch(self, to_bytes(arch, "arch")))

    @property
    def instances(self) -> list[dict[str, Any]]:
        """[{"name", "status" (wire name), "cpu_percent", "memory_mb"}, ...]"""
        return [{"name": text(lib.oakuk_node_report_instance_name(self, i)),
                 "status": instance_status_name(lib.oakuk_node_report_instance_status(self, i)),
                 "cpu_percent": lib.oakuk_node_report_instance_cpu_percent(self, i),
                 "memory_mb": lib.oakuk_node_report_instance_memory_mb(self, i)}
                for i in range(lib.oakuk_node_report_instance_count(self))]

    @property
    def received_at_ms(self) -> int:
        """When the report arrived (ms, caller's clock; 0: unknown); not serialized."""
        return lib.oakuk_node_report_received_at_ms(self)

    @received_at_ms.setter
    def received_at_ms(self, ms: int) -> None:
        lib.oakuk_node_report_set_received_at_ms(self, int(ms))

    def __repr__(self) -> str:
        return "<oakuk.NodeReport %s %s>" % (self.id, self.architecture)


class ClusterAggregate(Handle):
    """A cluster's aggregate as the root receives it (Oakestra-compatible keys)."""

    _unref_fn = lib.oakuk_cluster_aggregate_unref
    _ref_fn = lib.oakuk_cluster_aggregate_ref

    @classmethod
    def from_json(cls, document: Document) -> ClusterAggregate:
        """From str, bytes or a dict; raises OakukError naming a missing/mistyped key."""
        return _from_json(cls, lib.oakuk_cluster_aggregate_from_json, document)

    def to_json(self, pretty: bool = False) -> str:
        """The aggregate as a JSON document (indented with pretty)."""
        return _to_json(lib.oakuk_cluster_aggregate_to_json, self, pretty)

    def set_identity(self, id: Optional[str], name: Optional[str]) -> None:
        """Sets the cluster's id and name (the root knows them; the document does not carry them)."""
        lib.oakuk_cluster_aggregate_set_identity(self, to_bytes(id, "id"), to_bytes(name, "name"))

    @property
    def id(self) -> Optional[str]:
        """The cluster's id (set_identity), or None."""
        return text(lib.oakuk_cluster_aggregate_id(self))

    @property
    def name(self) -> Optional[str]:
        """The cluster's name (set_identity), or None."""
        return text(lib.oakuk_cluster_aggregate_name(self))

    @property
    def cpu_percent(self) -> float:
        """Average CPU use of the active nodes, in percent."""
        return lib.oakuk_cluster_aggregate_cpu_percent(self)

    @property
    def memory_percent(self) -> float:
        """Average memory use of the active nodes, in percent."""
        return lib.oakuk_cluster_aggregate_memory_percent(self)

    @property
    def cpu_cores(self) -> int:
        """CPU cores of the active nodes."""
        return lib.oakuk_cluster_aggregate_cpu_cores(self)

    @property
    def memory_mb(self) -> int:
        """cumulative_memory_in_mb"""
        return lib.oakuk_cluster_aggregate_memory_mb(self)

    @property
    def number_of_nodes(self) -> int:
        """Nodes known, active or not."""
        return lib.oakuk_cluster_aggregate_number_of_nodes(self)

    @property
    def active_nodes(self) -> int:
        """Nodes whose reports are recent."""
        return lib.oakuk_cluster_aggregate_active_nodes(self)

    @property
    def received_at_ms(self) -> int:
        """When the aggregate arrived (ms, caller's clock; 0: unknown); not serialized."""
        return lib.oakuk_cluster_aggregate_received_at_ms(self)

    @received_at_ms.setter
    def received_at_ms(self, ms: int) -> None:
        lib.oakuk_cluster_aggregate_set_received_at_ms(self, int(ms))

    def has_virt(self, virt: Union[str, int]) -> bool:
        """Whether some active node offers virt ("container"/"unikernel" or OAKUK_VIRT_*)."""
        return bool(lib.oakuk_cluster_aggregate_has_virt(self, virt_code(virt)))

    @property
    def virtualization(self) -> list[str]:
        """The virtualizations the cluster offers, "container" before "unikernel"."""
        return [virt_name(code) for code in (1, 2) if lib.oakuk_cluster_aggregate_has_virt(self, code)]

    @property
    def arch(self) -> list[str]:
        """The architectures of the cluster's nodes."""
        return [text(lib.oakuk_cluster_aggregate_arch(self, i))
                for i in range(lib.oakuk_cluster_aggregate_arch_count(self))]

    @property
    def per_arch_names(self) -> list[str]:
        """Keys of aggregation_per_architecture, in key order."""
        return [text(lib.oakuk_cluster_aggregate_per_arch_name(self, i))
                for i in range(lib.oakuk_cluster_aggregate_per_arch_count(self))]

    def per_arch(self, arch: str) -> Optional[dict[str, Any]]:
        """aggregation_per_architecture[arch] as {"cpu_percent", "cpu_cores", "memory_percent",
        "memory_mb", "accel"}, or None when the cluster has no unikernel node for arch."""
        cpu = ctypes.c_double()
        cores = ctypes.c_int64()
        mem_pct = ctypes.c_double()
        mem = ctypes.c_int64()
        accel = ctypes.c_int32()
        if not lib.oakuk_cluster_aggregate_per_arch(self, to_bytes(arch, "arch"), byref(cpu),
                                                    byref(cores), byref(mem_pct), byref(mem),
                                                    byref(accel)):
            return None
        return {"cpu_percent": cpu.value, "cpu_cores": cores.value, "memory_percent": mem_pct.value,
                "memory_mb": mem.value, "accel": accel_name(accel.value)}

    def __repr__(self) -> str:
        return "<oakuk.ClusterAggregate %s>" % (self.name or self.id or "unnamed")
