"""Node reports and cluster aggregates (DESIGN §6)."""

import ctypes

from ._base import Handle, accel_name, raise_error, virt_code, virt_name
from ._lib import byref, c_void_p, json_bytes, lib, take_string, text, to_bytes

__all__ = ["NodeReport", "ClusterAggregate", "instance_status_name", "instance_name"]


def instance_status_name(status):
    """OAKUK_STATUS_* int -> "RUNNING", "NO_QUALIFIED_WORKER_FOUND", ...; None if unknown."""
    return text(lib.oakuk_instance_status_name(status))


def instance_name(service_name, n):
    """"<service_name>.instance.<n>"."""
    ptr = lib.oakuk_instance_name(to_bytes(service_name, "service_name"), n)
    if not ptr:
        raise ValueError("instance_name: service_name must be set and n >= 0")
    return take_string(ptr)


def _to_json(fn, obj, pretty):
    err = c_void_p()
    ptr = fn(obj, bool(pretty), byref(err))
    if not ptr:
        raise_error(err, what="to_json")
    return take_string(ptr)


def _from_json(cls, fn, document):
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
    def from_json(cls, document):
        """From str, bytes or a dict; raises OakukError naming a missing/mistyped key."""
        return _from_json(cls, lib.oakuk_node_report_from_json, document)

    def to_json(self, pretty=False):
        return _to_json(lib.oakuk_node_report_to_json, self, pretty)

    id = property(lambda self: text(lib.oakuk_node_report_id(self)))
    host = property(lambda self: text(lib.oakuk_node_report_host(self)))
    ip = property(lambda self: text(lib.oakuk_node_report_ip(self)))
    architecture = property(lambda self: text(lib.oakuk_node_report_architecture(self)))
    cpu_percent = property(lambda self: lib.oakuk_node_report_cpu_percent(self))
    vcpus = property(lambda self: lib.oakuk_node_report_vcpus(self))
    memory_mb = property(lambda self: lib.oakuk_node_report_memory_mb(self))
    memory_total_mb = property(lambda self: lib.oakuk_node_report_memory_total_mb(self))
    memory_percent = property(lambda self: lib.oakuk_node_report_memory_percent(self))
    unikernel_accel = property(lambda self: accel_name(lib.oakuk_node_report_unikernel_accel(self)),
                               doc='"kvm", "tcg" or None')
    qemu_version = property(lambda self: text(lib.oakuk_node_report_qemu_version(self)))

    def has_virt(self, virt):
        return bool(lib.oakuk_node_report_has_virt(self, virt_code(virt)))

    @property
    def virtualization(self):
        return [name for code, name in ((1, "container"), (2, "unikernel"))
                if lib.oakuk_node_report_has_virt(self, code)]

    @property
    def emulated_archs(self):
        return [text(lib.oakuk_node_report_emulated_arch(self, i))
                for i in range(lib.oakuk_node_report_emulated_arch_count(self))]

    def accel_for_arch(self, arch):
        """"kvm"/"tcg" the node offers unikernels of arch, or None."""
        return accel_name(lib.oakuk_node_report_accel_for_arch(self, to_bytes(arch, "arch")))

    @property
    def instances(self):
        """[{"name", "status" (wire name), "cpu_percent", "memory_mb"}, ...]"""
        return [{"name": text(lib.oakuk_node_report_instance_name(self, i)),
                 "status": instance_status_name(lib.oakuk_node_report_instance_status(self, i)),
                 "cpu_percent": lib.oakuk_node_report_instance_cpu_percent(self, i),
                 "memory_mb": lib.oakuk_node_report_instance_memory_mb(self, i)}
                for i in range(lib.oakuk_node_report_instance_count(self))]

    @property
    def received_at_ms(self):
        return lib.oakuk_node_report_received_at_ms(self)

    @received_at_ms.setter
    def received_at_ms(self, ms):
        lib.oakuk_node_report_set_received_at_ms(self, int(ms))

    def __repr__(self):
        return "<oakuk.NodeReport %s %s>" % (self.id, self.architecture)


class ClusterAggregate(Handle):
    """A cluster's aggregate as the root receives it (Oakestra-compatible keys)."""

    _unref_fn = lib.oakuk_cluster_aggregate_unref
    _ref_fn = lib.oakuk_cluster_aggregate_ref

    @classmethod
    def from_json(cls, document):
        return _from_json(cls, lib.oakuk_cluster_aggregate_from_json, document)

    def to_json(self, pretty=False):
        return _to_json(lib.oakuk_cluster_aggregate_to_json, self, pretty)

    def set_identity(self, id, name):
        lib.oakuk_cluster_aggregate_set_identity(self, to_bytes(id, "id"), to_bytes(name, "name"))

    id = property(lambda self: text(lib.oakuk_cluster_aggregate_id(self)))
    name = property(lambda self: text(lib.oakuk_cluster_aggregate_name(self)))
    cpu_percent = property(lambda self: lib.oakuk_cluster_aggregate_cpu_percent(self))
    memory_percent = property(lambda self: lib.oakuk_cluster_aggregate_memory_percent(self))
    cpu_cores = property(lambda self: lib.oakuk_cluster_aggregate_cpu_cores(self))
    memory_mb = property(lambda self: lib.oakuk_cluster_aggregate_memory_mb(self),
                         doc="cumulative_memory_in_mb")
    number_of_nodes = property(lambda self: lib.oakuk_cluster_aggregate_number_of_nodes(self))
    active_nodes = property(lambda self: lib.oakuk_cluster_aggregate_active_nodes(self))

    @property
    def received_at_ms(self):
        return lib.oakuk_cluster_aggregate_received_at_ms(self)

    @received_at_ms.setter
    def received_at_ms(self, ms):
        lib.oakuk_cluster_aggregate_set_received_at_ms(self, int(ms))

    def has_virt(self, virt):
        return bool(lib.oakuk_cluster_aggregate_has_virt(self, virt_code(virt)))

    @property
    def virtualization(self):
        return [virt_name(code) for code in (1, 2) if lib.oakuk_cluster_aggregate_has_virt(self, code)]

    @property
    def arch(self):
        return [text(lib.oakuk_cluster_aggregate_arch(self, i))
                for i in range(lib.oakuk_cluster_aggregate_arch_count(self))]

    @property
    def per_arch_names(self):
        """Keys of aggregation_per_architecture, in key order."""
        return [text(lib.oakuk_cluster_aggregate_per_arch_name(self, i))
                for i in range(lib.oakuk_cluster_aggregate_per_arch_count(self))]

    def per_arch(self, arch):
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

    def __repr__(self):
        return "<oakuk.ClusterAggregate %s>" % (self.name or self.id or "unnamed")
