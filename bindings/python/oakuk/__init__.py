"""Python binding of liboakuk (ctypes, standard library only).

The shared library is found through OAKUK_LIBRARY (a path), else ctypes.util.find_library("oakuk"),
else the soname liboakuk.so.0.

    import oakuk
    d = oakuk.Descriptor.parse_file("app.json")
    nodes = [oakuk.NodeReport.from_json(r) for r in reports]
    p = oakuk.select_node(d.applications[0].microservices[0], nodes)
    print(p.target if p.ok else p.status, *p.explanation, sep="\\n")
"""

from ._lib import lib as _lib, text as _text
from ._base import OakukError
from .descriptor import Application, Descriptor, Microservice
from .model import ClusterAggregate, NodeReport, instance_name, instance_status_name
from . import aggregate
from .sched import Placement, Reservations, select_cluster, select_node

__all__ = ["OakukError", "Descriptor", "Application", "Microservice", "NodeReport",
           "ClusterAggregate", "Reservations", "Placement", "select_node", "select_cluster",
           "aggregate", "instance_name", "instance_status_name", "version", "arch_is_known"]


def version():
    """The loaded library's version, "major.minor.micro"."""
    return _text(_lib.oakuk_version())


def arch_is_known(name):
    """True for the GOARCH names the project knows (amd64, arm64, arm, riscv64)."""
    return bool(_lib.oakuk_arch_is_known(name.encode("utf-8")))
