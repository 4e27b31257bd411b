"""Deployment descriptors (SLA): Descriptor, Application, Microservice."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional, Union

from ._base import Handle, raise_error, virt_code, virt_name
from ._lib import byref, c_void_p, lib, take_string, text, to_bytes

__all__ = ["Descriptor", "Application", "Microservice"]

_CONSTRAINT_TYPES = {0: "direct", 1: "clusters", 2: "arch", 3: "latency", 4: "geo"}
_EMULATION = {0: "forbid", 1: "allow"}
_RESTART = {0: "never", 1: "on-failure", 2: "always"}
_UKNET = {0: "direct", 1: "nat"}
_PROTO = {0: "tcp", 1: "udp"}


def _list(count_fn: Callable[..., int], item_fn: Callable[..., Any], obj: Handle) -> list[str]:
    return [text(item_fn(obj, i)) for i in range(count_fn(obj))]


def _to_json(fn: Callable[..., Any], obj: Handle, pretty: bool) -> str:
    err = c_void_p()
    ptr = fn(obj, bool(pretty), byref(err))
    if not ptr:
        raise_error(err, what="to_json")
    return take_string(ptr)


def _set_id(fn: Callable[..., int], obj: Handle, value: str) -> None:
    err = c_void_p()
    rc = fn(obj, to_bytes(value, "id"), byref(err))
    if rc != 0:
        raise_error(err, rc, "set_id")


class Descriptor(Handle):
    """A parsed and validated SLA document (applications -> microservices)."""

    _unref_fn = lib.oakuk_descriptor_unref
    _ref_fn = lib.oakuk_descriptor_ref

    @classmethod
    def parse(cls, document: Union[str, bytes]) -> Descriptor:
        """Parses str or bytes; raises OakukError (OAKUK_EINVAL with every problem in .items)."""
        data = to_bytes(document, "document")
        err = c_void_p()
        ptr = lib.oakuk_descriptor_parse(data, len(data), byref(err))
        if not ptr:
            raise_error(err, what="oakuk_descriptor_parse")
        return cls._wrap(ptr)

    @classmethod
    def parse_file(cls, path: Union[str, bytes, "os.PathLike[str]"]) -> Descriptor:
        """Reads and parses the file at path; raises OakukError (OAKUK_EIO naming the file,
        OAKUK_EINVAL with every problem)."""
        err = c_void_p()
        ptr = lib.oakuk_descriptor_parse_file(os.fsencode(path), byref(err))
        if not ptr:
            raise_error(err, what="oakuk_descriptor_parse_file")
        return cls._wrap(ptr)

    @property
    def sla_version(self) -> Optional[str]:
        """The document's sla_version."""
        return text(lib.oakuk_descriptor_sla_version(self))

    @property
    def customer_id(self) -> Optional[str]:
        """The document's customerID."""
        return text(lib.oakuk_descriptor_customer_id(self))

    @property
    def applications(self) -> list[Application]:
        """The applications, in document order."""
        return [Application._wrap(lib.oakuk_descriptor_application(self, i), owned=False)
                for i in range(lib.oakuk_descriptor_application_count(self))]

    @property
    def microservices(self) -> list[Microservice]:
        """Every microservice of every application, in document order."""
        return [ms for app in self.applications for ms in app.microservices]

    @property
    def warnings(self) -> list[str]:
        """What parsing accepted but noted (unknown keys, ...)."""
        return _list(lib.oakuk_descriptor_warning_count, lib.oakuk_descriptor_warning, self)

    def to_json(self, pretty: bool = False) -> str:
        """The object as a JSON document (indented with pretty)."""
        return _to_json(lib.oakuk_descriptor_to_json, self, pretty)

    def __repr__(self) -> str:
        return "<oakuk.Descriptor %d application(s)>" % lib.oakuk_descriptor_application_count(self)


class Application(Handle):
    """An application of a descriptor; keeps its descriptor alive."""

    _unref_fn = lib.oakuk_application_unref
    _ref_fn = lib.oakuk_application_ref

    @property
    def id(self) -> Optional[str]:
        """The applicationID, or None."""
        return text(lib.oakuk_application_id(self))

    def set_id(self, value: str) -> None:
        """Sets the applicationID (serialized by to_json)."""
        _set_id(lib.oakuk_application_set_id, self, value)

    @property
    def name(self) -> Optional[str]:
        """application_name"""
        return text(lib.oakuk_application_name(self))

    @property
    def namespace(self) -> Optional[str]:
        """application_namespace"""
        return text(lib.oakuk_application_namespace(self))

    @property
    def desc(self) -> Optional[str]:
        """application_desc"""
        return text(lib.oakuk_application_desc(self))

    @property
    def microservices(self) -> list[Microservice]:
        """The application's microservices, in document order."""
        return [Microservice._wrap(lib.oakuk_application_microservice(self, i), owned=False)
                for i in range(lib.oakuk_application_microservice_count(self))]

    def to_json(self, pretty: bool = False) -> str:
        """The object as a JSON document (indented with pretty)."""
        return _to_json(lib.oakuk_application_to_json, self, pretty)

    def __repr__(self) -> str:
        return "<oakuk.Application %s.%s>" % (self.name, self.namespace)


class Microservice(Handle):
    """One microservice (a job), from a descriptor or parsed on its own."""

    _unref_fn = lib.oakuk_microservice_unref
    _ref_fn = lib.oakuk_microservice_ref

    @classmethod
    def parse(cls, document: Union[str, bytes, dict]) -> Microservice:
        """Parses one microservice object (str, bytes or dict); error paths are relative to it."""
        if isinstance(document, dict):
            document = json.dumps(document)
        data = to_bytes(document, "document")
        err = c_void_p()
        ptr = lib.oakuk_microservice_parse(data, len(data), byref(err))
        if not ptr:
            raise_error(err, what="oakuk_microservice_parse")
        return cls._wrap(ptr)

    def to_json(self, pretty: bool = False) -> str:
        """The object as a JSON document (indented with pretty)."""
        return _to_json(lib.oakuk_microservice_to_json, self, pretty)

    @property
    def id(self) -> Optional[str]:
        """The microserviceID, or None."""
        return text(lib.oakuk_microservice_id(self))

    def set_id(self, value: str) -> None:
        """Sets the microserviceID (serialized by to_json)."""
        _set_id(lib.oakuk_microservice_set_id, self, value)

    @property
    def name(self) -> Optional[str]:
        """microservice_name"""
        return text(lib.oakuk_microservice_name(self))

    @property
    def namespace(self) -> Optional[str]:
        """microservice_namespace"""
        return text(lib.oakuk_microservice_namespace(self))

    @property
    def app_name(self) -> Optional[str]:
        """app_name"""
        return text(lib.oakuk_microservice_app_name(self))

    @property
    def app_namespace(self) -> Optional[str]:
        """app_ns"""
        return text(lib.oakuk_microservice_app_namespace(self))

    @property
    def service_name(self) -> Optional[str]:
        """<app>.<appns>.<svc>.<svcns>, or None when the application is unknown."""
        return text(lib.oakuk_microservice_service_name(self))

    @property
    def virtualizations(self) -> list[str]:
        """Variants in order of preference: "container" / "unikernel"."""
        return [virt_name(lib.oakuk_microservice_virt(self, i))
                for i in range(lib.oakuk_microservice_virt_count(self))]

    def has_virt(self, virt: Union[str, int]) -> bool:
        """Whether the service has a variant for virt ("container"/"docker"/"unikernel")."""
        return bool(lib.oakuk_microservice_has_virt(self, virt_code(virt)))

    @property
    def arch(self) -> list[str]:
        """The architectures the service is built for ([] = any)."""
        return _list(lib.oakuk_microservice_arch_count, lib.oakuk_microservice_arch, self)

    def code(self, virt: Union[str, int], arch_index: int = 0) -> Optional[str]:
        """Unikernel URL for arch[arch_index] (or the unikernel's one OCI reference, whatever
        arch_index), or the container reference; None if absent."""
        return text(lib.oakuk_microservice_code(self, virt_code(virt), arch_index))

    def code_is_oci(self, virt: Union[str, int]) -> bool:
        """Whether the variant's code is an OCI reference (a unikernel's may be; a container's is)."""
        return bool(lib.oakuk_microservice_code_is_oci(self, virt_code(virt)))

    def code_sha256(self, virt: Union[str, int], arch_index: int = 0) -> Optional[str]:
        """The expected sha256 of code(virt, arch_index), or None."""
        return text(lib.oakuk_microservice_code_sha256(self, virt_code(virt), arch_index))

    @property
    def memory_mb(self) -> int:
        """Memory in MB."""
        return lib.oakuk_microservice_memory_mb(self)

    @property
    def vcpus(self) -> int:
        """Virtual CPUs."""
        return lib.oakuk_microservice_vcpus(self)

    @property
    def vgpus(self) -> int:
        """Virtual GPUs."""
        return lib.oakuk_microservice_vgpus(self)

    @property
    def vtpus(self) -> int:
        """Virtual TPUs."""
        return lib.oakuk_microservice_vtpus(self)

    @property
    def bandwidth_in(self) -> int:
        """bandwidth_in"""
        return lib.oakuk_microservice_bandwidth_in(self)

    @property
    def bandwidth_out(self) -> int:
        """bandwidth_out"""
        return lib.oakuk_microservice_bandwidth_out(self)

    @property
    def storage(self) -> int:
        """storage"""
        return lib.oakuk_microservice_storage(self)

    @property
    def cmd(self) -> list[str]:
        """The command (container) or arguments (unikernel)."""
        return _list(lib.oakuk_microservice_cmd_count, lib.oakuk_microservice_cmd, self)

    @property
    def environment(self) -> list[str]:
        """Environment entries "KEY=VALUE"."""
        return _list(lib.oakuk_microservice_env_count, lib.oakuk_microservice_env, self)

    @property
    def ports(self) -> list[tuple[int, int, str]]:
        """[(host, guest, "tcp"|"udp"), ...]"""
        return [(lib.oakuk_microservice_port_host(self, i), lib.oakuk_microservice_port_guest(self, i),
                 _PROTO.get(lib.oakuk_microservice_port_proto(self, i), "tcp"))
                for i in range(lib.oakuk_microservice_port_count(self))]

    @property
    def rr_ip(self) -> Optional[str]:
        """The round-robin service IP (IPv4), or None."""
        return text(lib.oakuk_microservice_rr_ip(self))

    @property
    def rr_ip_v6(self) -> Optional[str]:
        """The round-robin service IP (IPv6), or None."""
        return text(lib.oakuk_microservice_rr_ip_v6(self))

    @property
    def closest_ip(self) -> Optional[str]:
        """The closest-instance service IP (IPv4), or None."""
        return text(lib.oakuk_microservice_closest_ip(self))

    @property
    def closest_ip_v6(self) -> Optional[str]:
        """The closest-instance service IP (IPv6), or None."""
        return text(lib.oakuk_microservice_closest_ip_v6(self))

    @property
    def one_shot(self) -> bool:
        """Whether the service runs once (COMPLETED when it exits cleanly)."""
        return bool(lib.oakuk_microservice_one_shot(self))

    @property
    def privileged(self) -> bool:
        """privileged"""
        return bool(lib.oakuk_microservice_privileged(self))

    @property
    def target_node(self) -> Optional[str]:
        """The node the service is pinned to, or None."""
        return text(lib.oakuk_microservice_target_node(self))

    @property
    def constraints(self) -> list[dict[str, Any]]:
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

    @property
    def emulation(self) -> Optional[str]:
        """'forbid' or 'allow': whether the service may run emulated (TCG)."""
        return _EMULATION.get(lib.oakuk_microservice_emulation(self))

    @property
    def restart(self) -> Optional[str]:
        """'never', 'on-failure' or 'always'."""
        return _RESTART.get(lib.oakuk_microservice_restart(self))

    @property
    def unikernel(self) -> dict[str, Any]:
        """{"flavor": str|None, "version": str|None, "net": "direct"|"nat", "graceful_stop_s": int}"""
        return {"flavor": text(lib.oakuk_microservice_uk_flavor(self)),
                "version": text(lib.oakuk_microservice_uk_version(self)),
                "net": _UKNET.get(lib.oakuk_microservice_uk_net(self)),
                "graceful_stop_s": lib.oakuk_microservice_uk_graceful_stop_s(self)}

    @property
    def readiness(self) -> dict[str, Any]:
        """{"tcp": guest port probed (0: none), "serial": console text or None}"""
        return {"tcp": lib.oakuk_microservice_readiness_tcp(self),
                "serial": text(lib.oakuk_microservice_readiness_serial(self))}

    @property
    def reschedule_after_s(self) -> int:
        """seconds a silent node or cluster keeps the instances (docs/reconcile.md)"""
        return lib.oakuk_microservice_reschedule_after_s(self)

    def __repr__(self) -> str:
        return "<oakuk.Microservice %s>" % (self.service_name or self.name)

