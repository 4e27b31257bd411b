"""Deployment descriptors (SLA): Descriptor, Application, Microservice."""

import json
import os

from ._base import Handle, raise_error, virt_code, virt_name
from ._lib import byref, c_void_p, lib, take_string, text, to_bytes

__all__ = ["Descriptor", "Application", "Microservice"]

_CONSTRAINT_TYPES = {0: "direct", 1: "clusters", 2: "arch", 3: "latency", 4: "geo"}
_EMULATION = {0: "forbid", 1: "allow"}
_RESTART = {0: "never", 1: "on-failure", 2: "always"}
_UKNET = {0: "direct", 1: "nat"}
_PROTO = {0: "tcp", 1: "udp"}


def _list(count_fn, item_fn, obj):
    return [text(item_fn(obj, i)) for i in range(count_fn(obj))]


def _to_json(fn, obj, pretty):
    err = c_void_p()
    ptr = fn(obj, bool(pretty), byref(err))
    if not ptr:
        raise_error(err, what="to_json")
    return take_string(ptr)


def _set_id(fn, obj, value):
    err = c_void_p()
    rc = fn(obj, to_bytes(value, "id"), byref(err))
    if rc != 0:
        raise_error(err, rc, "set_id")


class Descriptor(Handle):
    """A parsed and validated SLA document (applications -> microservices)."""

    _unref_fn = lib.oakuk_descriptor_unref
    _ref_fn = lib.oakuk_descriptor_ref

    @classmethod
    def parse(cls, document):
        """Parses str or bytes; raises OakukError (OAKUK_EINVAL with every problem in .items)."""
        data = to_bytes(document, "document")
        err = c_void_p()
        ptr = lib.oakuk_descriptor_parse(data, len(data), byref(err))
        if not ptr:
            raise_error(err, what="oakuk_descriptor_parse")
        return cls._wrap(ptr)

    @classmethod
    def parse_file(cls, path):
        err = c_void_p()
        ptr = lib.oakuk_descriptor_parse_file(os.fsencode(path), byref(err))
        if not ptr:
            raise_error(err, what="oakuk_descriptor_parse_file")
        return cls._wrap(ptr)

    @property
    def sla_version(self):
        return text(lib.oakuk_descriptor_sla_version(self))

    @property
    def customer_id(self):
        return text(lib.oakuk_descriptor_customer_id(self))

    @property
    def applications(self):
        return [Application._wrap(lib.oakuk_descriptor_application(self, i), owned=False)
                for i in range(lib.oakuk_descriptor_application_count(self))]

    @property
    def microservices(self):
        """Every microservice of every application, in document order."""
        return [ms for app in self.applications for ms in app.microservices]

    @property
    def warnings(self):
        return _list(lib.oakuk_descriptor_warning_count, lib.oakuk_descriptor_warning, self)

    def to_json(self, pretty=False):
        return _to_json(lib.oakuk_descriptor_to_json, self, pretty)

    def __repr__(self):
        return "<oakuk.Descriptor %d application(s)>" % lib.oakuk_descriptor_application_count(self)


class Application(Handle):
    """An application of a descriptor; keeps its descriptor alive."""

    _unref_fn = lib.oakuk_application_unref
    _ref_fn = lib.oakuk_application_ref

    @property
    def id(self):
        return text(lib.oakuk_application_id(self))

    def set_id(self, value):
        _set_id(lib.oakuk_application_set_id, self, value)

    @property
    def name(self):
        return text(lib.oakuk_application_name(self))

    @property
    def namespace(self):
        return text(lib.oakuk_application_namespace(self))

    @property
    def desc(self):
        return text(lib.oakuk_application_desc(self))

    @property
    def microservices(self):
        return [Microservice._wrap(lib.oakuk_application_microservice(self, i), owned=False)
                for i in range(lib.oakuk_application_microservice_count(self))]

    def to_json(self, pretty=False):
        return _to_json(lib.oakuk_application_to_json, self, pretty)

    def __repr__(self):
        return "<oakuk.Application %s.%s>" % (self.name, self.namespace)


class Microservice(Handle):
    """One microservice (a job), from a descriptor or parsed on its own."""

    _unref_fn = lib.oakuk_microservice_unref
    _ref_fn = lib.oakuk_microservice_ref

    @classmethod
    def parse(cls, document):
        """Parses one microservice object (str, bytes or dict); error paths are relative to it."""
        if isinstance(document, dict):
            document = json.dumps(document)
        data = to_bytes(document, "document")
        err = c_void_p()
        ptr = lib.oakuk_microservice_parse(data, len(data), byref(err))
        if not ptr:
            raise_error(err, what="oakuk_microservice_parse")
        return cls._wrap(ptr)

    def to_json(self, pretty=False):
        return _to_json(lib.oakuk_microservice_to_json, self, pretty)

    @property
    def id(self):
        return text(lib.oakuk_microservice_id(self))

    def set_id(self, value):
        _set_id(lib.oakuk_microservice_set_id, self, value)

    name = property(lambda self: text(lib.oakuk_microservice_name(self)))
    namespace = property(lambda self: text(lib.oakuk_microservice_namespace(self)))
    app_name = property(lambda self: text(lib.oakuk_microservice_app_name(self)))
    app_namespace = property(lambda self: text(lib.oakuk_microservice_app_namespace(self)))
    service_name = property(lambda self: text(lib.oakuk_microservice_service_name(self)),
                            doc="<app>.<appns>.<svc>.<svcns>, or None when the application is unknown")

    @property
    def virtualizations(self):
        """Variants in order of preference: "container" / "unikernel"."""
        return [virt_name(lib.oakuk_microservice_virt(self, i))
                for i in range(lib.oakuk_microservice_virt_count(self))]

    def has_virt(self, virt):
        return bool(lib.oakuk_microservice_has_virt(self, virt_code(virt)))

    @property
    def arch(self):
        return _list(lib.oakuk_microservice_arch_count, lib.oakuk_microservice_arch, self)

    def code(self, virt, arch_index=0):
        """Unikernel URL for arch[arch_index] (or the unikernel's one OCI reference, whatever
        arch_index), or the container reference; None if absent."""
        return text(lib.oakuk_microservice_code(self, virt_code(virt), arch_index))

    def code_is_oci(self, virt):
        """Whether the variant's code is an OCI reference (a unikernel's may be; a container's is)."""
        return bool(lib.oakuk_microservice_code_is_oci(self, virt_code(virt)))

    def code_sha256(self, virt, arch_index=0):
        return text(lib.oakuk_microservice_code_sha256(self, virt_code(virt), arch_index))

    memory_mb = property(lambda self: lib.oakuk_microservice_memory_mb(self))
    vcpus = property(lambda self: lib.oakuk_microservice_vcpus(self))
    vgpus = property(lambda self: lib.oakuk_microservice_vgpus(self))
    vtpus = property(lambda self: lib.oakuk_microservice_vtpus(self))
    bandwidth_in = property(lambda self: lib.oakuk_microservice_bandwidth_in(self))
    bandwidth_out = property(lambda self: lib.oakuk_microservice_bandwidth_out(self))
    storage = property(lambda self: lib.oakuk_microservice_storage(self))

    @property
    def cmd(self):
        return _list(lib.oakuk_microservice_cmd_count, lib.oakuk_microservice_cmd, self)

    @property
    def environment(self):
        return _list(lib.oakuk_microservice_env_count, lib.oakuk_microservice_env, self)

    @property
    def ports(self):
        """[(host, guest, "tcp"|"udp"), ...]"""
        return [(lib.oakuk_microservice_port_host(self, i), lib.oakuk_microservice_port_guest(self, i),
                 _PROTO.get(lib.oakuk_microservice_port_proto(self, i), "tcp"))
                for i in range(lib.oakuk_microservice_port_count(self))]

    rr_ip = property(lambda self: text(lib.oakuk_microservice_rr_ip(self)))
    rr_ip_v6 = property(lambda self: text(lib.oakuk_microservice_rr_ip_v6(self)))
    closest_ip = property(lambda self: text(lib.oakuk_microservice_closest_ip(self)))
    closest_ip_v6 = property(lambda self: text(lib.oakuk_microservice_closest_ip_v6(self)))
    one_shot = property(lambda self: bool(lib.oakuk_microservice_one_shot(self)))
    privileged = property(lambda self: bool(lib.oakuk_microservice_privileged(self)))
    target_node = property(lambda self: text(lib.oakuk_microservice_target_node(self)))

    @property
    def constraints(self):
        """[{"type": "direct", "cluster": str|None, "nodes": [...]},
            {"type": "clusters"|"arch", "allowed": [...]}, {"type": "latency"|"geo"}, ...]"""
        out = []
        for i in range(lib.oakuk_microservice_constraint_count(self)):
            kind = _CONSTRAINT_TYPES.get(lib.oakuk_microservice_constraint_type(self, i), "unknown")
            values = [text(lib.oakuk_microservice_constraint_value(self, i, j))
                      for j in range(lib.oakuk_microservice_constraint_value_count(self, i))]
            entry = {"type": kind}
            if kind == "direct":
                entry["cluster"] = text(lib.oakuk_microservice_constraint_cluster(self, i))
                entry["nodes"] = values
            elif kind in ("clusters", "arch"):
                entry["allowed"] = values
            out.append(entry)
        return out

    emulation = property(lambda self: _EMULATION.get(lib.oakuk_microservice_emulation(self)),
                         doc='"forbid" or "allow"')
    restart = property(lambda self: _RESTART.get(lib.oakuk_microservice_restart(self)),
                       doc='"never", "on-failure" or "always"')

    @property
    def unikernel(self):
        """{"flavor": str|None, "version": str|None, "net": "direct"|"nat", "graceful_stop_s": int}"""
        return {"flavor": text(lib.oakuk_microservice_uk_flavor(self)),
                "version": text(lib.oakuk_microservice_uk_version(self)),
                "net": _UKNET.get(lib.oakuk_microservice_uk_net(self)),
                "graceful_stop_s": lib.oakuk_microservice_uk_graceful_stop_s(self)}

    @property
    def readiness(self):
        """{"tcp": guest port probed (0: none), "serial": console text or None}"""
        return {"tcp": lib.oakuk_microservice_readiness_tcp(self),
                "serial": text(lib.oakuk_microservice_readiness_serial(self))}

    reschedule_after_s = property(lambda self: lib.oakuk_microservice_reschedule_after_s(self),
                                  doc="seconds a silent node or cluster keeps the instances (docs/reconcile.md)")

    def __repr__(self):
        return "<oakuk.Microservice %s>" % (self.service_name or self.name)

