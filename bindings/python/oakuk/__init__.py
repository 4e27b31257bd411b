"""Python binding of liboakuk (ctypes, standard library only).

The shared library is found through OAKUK_LIBRARY (a path), else the soname liboakuk.so.0 through
the dynamic linker's search path, else ctypes.util.find_library("oakuk").

    import oakuk
    d = oakuk.Descriptor.parse_file("app.json")
    nodes = [oakuk.NodeReport.from_json(r) for r in reports]
    p = oakuk.select_node(d.applications[0].microservices[0], nodes)
    print(p.target if p.ok else p.status, *p.explanation, sep="\\n")

Running a unikernel (root; QEMU runs as an unprivileged user):

    cache = oakuk.ImageCache("/var/cache/oakuk", file_allowed_dirs=["/srv/images"])
    image = cache.fetch("file:///srv/images/guest-amd64.tar.gz")
    rt = oakuk.qemu_runtime("/run/oakuk-py", run_as="nobody")
    rt.deploy(oakuk.InstanceSpec.from_image("web.instance.0", image, accel="tcg", memory_mb=96))
    rt.wait_status("web.instance.0", "RUNNING")
    print(rt.console("web.instance.0"))
    rt.undeploy("web.instance.0")
"""

from __future__ import annotations

from . import _lib
from ._version import __version__
from ._base import OakukError
from .descriptor import Application, Descriptor, Microservice
from .model import ClusterAggregate, NodeReport, instance_name, instance_status_name
from . import aggregate, console, image, net, runtime
from .sched import Placement, Reservations, select_cluster, select_node
from .image import Image, ImageCache
from .runtime import (InstanceSpec, QemuCaps, Runtime, StatusEvent, process_events, qemu_build_argv,
                      qemu_probe, qemu_runtime)
from .net import Net, NetInstanceInfo

__all__ = ["OakukError", "Descriptor", "Application", "Microservice", "NodeReport",
           "ClusterAggregate", "Reservations", "Placement", "select_node", "select_cluster",
           "aggregate", "instance_name", "instance_status_name", "version", "arch_is_known",
           "library_path", "console", "image", "runtime", "net", "Image", "ImageCache",
           "InstanceSpec", "Runtime", "StatusEvent", "QemuCaps", "qemu_probe", "qemu_build_argv",
           "qemu_runtime", "process_events", "Net", "NetInstanceInfo", "__version__"]


def version() -> str:
    """The loaded library's version, "major.minor.micro" (the package's is __version__)."""
    return _lib.text(_lib.lib.oakuk_version())


def arch_is_known(name: str) -> bool:
    """True for the GOARCH names the project knows (amd64, arm64, arm, riscv64)."""
    return bool(_lib.lib.oakuk_arch_is_known(name.encode("utf-8")))


def library_path() -> str:
    """The file of the liboakuk this package loaded."""
    return _lib.library_path()
