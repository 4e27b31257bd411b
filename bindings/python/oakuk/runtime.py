"""Running instances (<oakuk/runtime.h>, <oakuk/qemu.h>): instance specs, the QEMU unikernel
runtime, its capability probe and command builder.

A runtime reports statuses through callbacks that the library delivers on the GLib main context
that was the thread's default when the runtime was created; the C API has no call that runs it, so
this module runs it through GLib (process_events, and the wait_* methods of Runtime, which do so
while they wait). Create a runtime and wait for it on the same thread.
"""

from __future__ import annotations

import ctypes
import os
import time
import weakref
from typing import TYPE_CHECKING, Callable, NamedTuple, Optional, Sequence, Union

from ._base import Handle, OakukError, accel_name, raise_error, virt_code, virt_name
from ._lib import (READY_CB, STATUS_CB, byref, c_void_p, fs_bytes, glib, lib, take_string, text,
                   to_bytes)
from . import console as _console
from .model import instance_status_name

if TYPE_CHECKING:
    from .image import Image

__all__ = ["InstanceSpec", "Runtime", "StatusEvent", "QemuCaps", "qemu_probe", "qemu_build_argv",
           "qemu_runtime", "process_events", "EXIT_KINDS"]

PathLike = Union[str, bytes, "os.PathLike[str]"]

EXIT_KINDS = {0: "none", 1: "clean", 2: "crash", 3: "killed", 4: "failed"}
"""OAKUK_EXIT_* -> "none" (not ended, or ended by undeploy), "clean", "crash", "killed",
"failed" (never ran)."""

_TERMINAL = ("FAILED", "DEAD", "COMPLETED", "UNDEPLOYED")
QEMU_OPTIONS_VERSION = 2


def process_events(may_block: bool = False) -> int:
    """Runs the thread's default GLib main context: dispatches what is pending (callbacks of the
    runtimes created on this thread); with may_block, waits for one event first. Returns the
    number of iterations that dispatched something."""
    n = 0
    if may_block and glib.g_main_context_iteration(None, 1):
        n += 1
    while glib.g_main_context_iteration(None, 0):
        n += 1
    return n


def _accel_code(accel: Union[str, int]) -> int:
    if isinstance(accel, int):
        return accel
    code = lib.oakuk_accel_from_name(to_bytes(accel, "accel"))
    if code == 0:
        raise ValueError("unknown acceleration %r (expected kvm or tcg)" % (accel,))
    return code


class InstanceSpec(Handle):
    """What to run: identity, resources, payload (kernel/initrd/files or container bundle/image)
    and network. Every setter copies its argument."""

    _unref_fn = lib.oakuk_instance_spec_unref
    _ref_fn = lib.oakuk_instance_spec_ref

    def __init__(self, name: str, **settings: object) -> None:
        """A spec named name (A-Z a-z 0-9 . _ -, checked at deploy). Keyword arguments set the
        properties of the same name (kernel=..., memory_mb=..., accel="tcg", args=[...], ...)."""
        ptr = lib.oakuk_instance_spec_new(to_bytes(name, "name"))
        if not ptr:
            raise ValueError("InstanceSpec: invalid name %r" % (name,))
        Handle.__init__(self, ptr)
        for key, value in settings.items():
            if not isinstance(getattr(type(self), key, None), property) and key not in ("args", "env"):
                raise TypeError("InstanceSpec: unknown setting %r" % key)
            if key == "args":
                for arg in value:  # type: ignore[attr-defined]
                    self.add_arg(arg)
            elif key == "env":
                for entry in value:  # type: ignore[attr-defined]
                    self.add_env(entry)
            else:
                setattr(self, key, value)

    @classmethod
    def from_image(cls, name: str, image: Image, **settings: object) -> InstanceSpec:
        """A unikernel spec running an oakuk.Image: its kernel, initrd, files/, flavor (and
        version, for Unikraft), cmdline_extra, arch, arguments and environment; settings as for
        the constructor (args and env are appended)."""
        spec = cls(name)
        spec.kernel = image.kernel
        if image.initrd:
            spec.initrd = image.initrd
        if image.files_dir:
            spec.files_dir = image.files_dir
        if image.flavor and image.flavor != "unknown":
            spec.flavor = image.flavor
        # only a Unikraft version selects a network convention; a Linux one ("6.1.0-57-amd64")
        # is not x.y.z and the runtime refuses it (as the node daemon does, leave it out)
        if image.flavor == "unikraft" and image.version:
            spec.version = image.version
        if image.cmdline_extra:
            spec.cmdline_extra = image.cmdline_extra
        if image.arch:
            spec.arch = image.arch
        for arg in image.args:
            spec.add_arg(arg)
        for entry in image.env:
            spec.add_env(entry)
        for key, value in settings.items():
            if key == "args":
                for arg in value:  # type: ignore[attr-defined]
                    spec.add_arg(arg)
            elif key == "env":
                for entry in value:  # type: ignore[attr-defined]
                    spec.add_env(entry)
            elif isinstance(getattr(cls, key, None), property):
                setattr(spec, key, value)
            else:
                raise TypeError("InstanceSpec: unknown setting %r" % key)
        return spec

    @property
    def name(self) -> str:
        """The instance name."""
        return text(lib.oakuk_instance_spec_name(self))

    @property
    def virt(self) -> Optional[str]:
        """"unikernel" (the default) or "container"."""
        return virt_name(lib.oakuk_instance_spec_virt(self))

    @virt.setter
    def virt(self, value: Union[str, int]) -> None:
        lib.oakuk_instance_spec_set_virt(self, virt_code(value))

    def _path_property(getter, setter, doc):  # type: ignore[no-untyped-def]
        def get(self: "InstanceSpec") -> Optional[str]:
            return text(getter(self))

        def set(self: "InstanceSpec", value: Optional[PathLike]) -> None:
            setter(self, fs_bytes(value))

        get.__doc__ = doc
        return property(get, set, doc=doc)

    def _str_property(getter, setter, doc):  # type: ignore[no-untyped-def]
        def get(self: "InstanceSpec") -> Optional[str]:
            return text(getter(self))

        def set(self: "InstanceSpec", value: Optional[str]) -> None:
            setter(self, to_bytes(value))

        get.__doc__ = doc
        return property(get, set, doc=doc)

    def _int_property(getter, setter, doc):  # type: ignore[no-untyped-def]
        def get(self: "InstanceSpec") -> int:
            return int(getter(self))

        def set(self: "InstanceSpec", value: int) -> None:
            setter(self, int(value))

        get.__doc__ = doc
        return property(get, set, doc=doc)

    def _bool_property(getter, setter, doc):  # type: ignore[no-untyped-def]
        def get(self: "InstanceSpec") -> bool:
            return bool(getter(self))

        def set(self: "InstanceSpec", value: bool) -> None:
            setter(self, bool(value))

        get.__doc__ = doc
        return property(get, set, doc=doc)

    kernel = _path_property(lib.oakuk_instance_spec_kernel, lib.oakuk_instance_spec_set_kernel,
                            "Path of the unikernel's kernel.")
    initrd = _path_property(lib.oakuk_instance_spec_initrd, lib.oakuk_instance_spec_set_initrd,
                            "Path of the initrd, or None.")
    files_dir = _path_property(lib.oakuk_instance_spec_files_dir, lib.oakuk_instance_spec_set_files_dir,
                               "Directory shared with the guest by 9p (tag fs0; copied per instance).")
    bundle = _path_property(lib.oakuk_instance_spec_bundle, lib.oakuk_instance_spec_set_bundle,
                            "A container's OCI bundle directory.")
    rootfs = _path_property(lib.oakuk_instance_spec_rootfs, lib.oakuk_instance_spec_set_rootfs,
                            "A container's root filesystem.")
    workdir = _path_property(lib.oakuk_instance_spec_workdir, lib.oakuk_instance_spec_set_workdir,
                             "Working directory of a container's process (None: the image's).")
    image = _str_property(lib.oakuk_instance_spec_image, lib.oakuk_instance_spec_set_image,
                          "A container's OCI reference or \"oci-archive:<url>\".")
    arch = _str_property(lib.oakuk_instance_spec_arch, lib.oakuk_instance_spec_set_arch,
                         "GOARCH of the guest (None: the host's).")
    flavor = _str_property(lib.oakuk_instance_spec_flavor, lib.oakuk_instance_spec_set_flavor,
                           "\"unikraft\" or \"linux\" (None: detected from the kernel).")
    version = _str_property(lib.oakuk_instance_spec_version, lib.oakuk_instance_spec_set_version,
                            "The flavor's version (None: detected from the kernel).")
    cmdline_extra = _str_property(lib.oakuk_instance_spec_cmdline_extra,
                                  lib.oakuk_instance_spec_set_cmdline_extra,
                                  "Extra kernel arguments, before the network parameters.")
    readiness_serial = _str_property(lib.oakuk_instance_spec_readiness_serial,
                                     lib.oakuk_instance_spec_set_readiness_serial,
                                     "Text the console must show for the instance to be ready.")
    memory_mb = _int_property(lib.oakuk_instance_spec_memory_mb, lib.oakuk_instance_spec_set_memory_mb,
                              "Guest memory in MB (default 64).")
    vcpus = _int_property(lib.oakuk_instance_spec_vcpus, lib.oakuk_instance_spec_set_vcpus,
                          "Virtual CPUs (default 1).")
    graceful_stop_s = _int_property(lib.oakuk_instance_spec_graceful_stop_s,
                                    lib.oakuk_instance_spec_set_graceful_stop_s,
                                    "Seconds granted after an ACPI power-down request (0: none).")
    one_shot = _bool_property(lib.oakuk_instance_spec_one_shot, lib.oakuk_instance_spec_set_one_shot,
                              "A one-shot instance that exits cleanly is COMPLETED, not DEAD.")
    readonly_rootfs = _bool_property(lib.oakuk_instance_spec_readonly_rootfs,
                                     lib.oakuk_instance_spec_set_readonly_rootfs,
                                     "Mount a container's root filesystem read-only.")
    del _path_property, _str_property, _int_property, _bool_property

    @property
    def accel(self) -> Optional[str]:
        """"kvm" or "tcg" (the default)."""
        return accel_name(lib.oakuk_instance_spec_accel(self))

    @accel.setter
    def accel(self, value: Union[str, int]) -> None:
        lib.oakuk_instance_spec_set_accel(self, _accel_code(value))

    def add_arg(self, arg: str) -> None:
        """Appends an argument placed after "--" on the guest command line."""
        lib.oakuk_instance_spec_add_arg(self, to_bytes(arg, "arg"))

    @property
    def args(self) -> list[str]:
        """The guest's arguments."""
        return [text(lib.oakuk_instance_spec_arg(self, i))
                for i in range(lib.oakuk_instance_spec_arg_count(self))]

    def add_env(self, key_value: str) -> None:
        """Appends an environment entry "KEY=VALUE"."""
        lib.oakuk_instance_spec_add_env(self, to_bytes(key_value, "key_value"))

    @property
    def env(self) -> list[str]:
        """The environment entries."""
        return [text(lib.oakuk_instance_spec_env(self, i))
                for i in range(lib.oakuk_instance_spec_env_count(self))]

    def set_registry_auth(self, username: Optional[str], password: Optional[str]) -> None:
        """Registry credentials for a container image (None: anonymous)."""
        lib.oakuk_instance_spec_set_registry_auth(self, to_bytes(username, "username"),
                                                  to_bytes(password, "password"))

    def set_network(self, netns_path: Optional[PathLike], tap_name: Optional[str] = None,
                    ip: Optional[str] = None, prefix: int = 0, gateway: Optional[str] = None,
                    mac: Optional[str] = None) -> None:
        """Runs the instance in the network namespace at netns_path with the tap device tap_name
        as its NIC; ip/gateway dotted IPv4, prefix 0..32, mac "52:54:00:..". None: no network."""
        lib.oakuk_instance_spec_set_network(self, fs_bytes(netns_path), to_bytes(tap_name), to_bytes(ip),
                                            int(prefix), to_bytes(gateway), to_bytes(mac))

    @property
    def network(self) -> Optional[dict]:
        """{"netns_path", "tap_name", "ip", "prefix", "gateway", "mac"}, or None without network."""
        if lib.oakuk_instance_spec_netns_path(self) is None:
            return None
        return {"netns_path": text(lib.oakuk_instance_spec_netns_path(self)),
                "tap_name": text(lib.oakuk_instance_spec_tap_name(self)),
                "ip": text(lib.oakuk_instance_spec_ip(self)),
                "prefix": lib.oakuk_instance_spec_prefix(self),
                "gateway": text(lib.oakuk_instance_spec_gateway(self)),
                "mac": text(lib.oakuk_instance_spec_mac(self))}

    def set_readiness_tcp(self, port: int, address: Optional[str] = None) -> None:
        """Ready when address:port accepts a connection (address None: the guest's ip; port 0:
        no TCP probe)."""
        lib.oakuk_instance_spec_set_readiness_tcp(self, to_bytes(address, "address"), int(port))

    @property
    def readiness_tcp(self) -> tuple[Optional[str], int]:
        """(address or None, port); port 0 when there is no TCP probe."""
        return (text(lib.oakuk_instance_spec_readiness_tcp_address(self)),
                int(lib.oakuk_instance_spec_readiness_tcp_port(self)))

    def __repr__(self) -> str:
        return "<oakuk.InstanceSpec %s>" % self.name


class StatusEvent(NamedTuple):
    """One status a runtime reported: instance name, status name ("RUNNING", ...), detail (a
    sentence or None) and time.monotonic() when it arrived."""

    instance: str
    status: str
    detail: Optional[str]
    at: float


StatusCallback = Callable[[str, str, Optional[str]], None]
ReadyCallback = Callable[[str, int], None]


class Runtime(Handle):
    """A runtime (unikernel or container) running named instances. Dropping the last reference
    (close(), or garbage collection) stops every instance unless keep_instances is set.

    Statuses arrive while the GLib main context runs: every wait_* method and process_events run
    it. They are recorded in events, and passed to the callbacks added with on_status."""

    _unref_fn = lib.oakuk_runtime_unref
    _ref_fn = lib.oakuk_runtime_ref

    @classmethod
    def _adopt(cls, ptr: int) -> "Runtime":
        rt = cls._wrap(ptr)
        rt.events = []
        rt._status_callbacks = []
        rt._ready_callbacks = []
        rt._errors = []
        rt._since = {}
        # The C callbacks hold the runtime weakly: a cycle would delay the unref that stops the
        # instances until the cycle collector runs.
        ref = weakref.ref(rt)

        def on_status(name: bytes, status: int, detail: Optional[bytes], _data: Optional[int]) -> None:
            obj = ref()
            if obj is not None:
                obj._on_status(name, status, detail)

        def on_ready(name: bytes, ready_ms: int, _data: Optional[int]) -> None:
            obj = ref()
            if obj is not None:
                obj._on_ready(name, ready_ms)

        rt._c_status = STATUS_CB(on_status)
        rt._c_ready = READY_CB(on_ready)
        lib.oakuk_runtime_set_status_callback(rt, rt._c_status, None)
        lib.oakuk_runtime_set_ready_callback(rt, rt._c_ready, None)
        return rt

    def _on_status(self, name: bytes, status: int, detail: Optional[bytes]) -> None:
        event = StatusEvent(text(name), instance_status_name(status) or str(status), text(detail),
                            time.monotonic())
        self.events.append(event)
        for cb in list(self._status_callbacks):
            try:
                cb(event.instance, event.status, event.detail)
            except BaseException as exc:  # raised again by the wait that dispatched it
                self._errors.append(exc)

    def _on_ready(self, name: bytes, ready_ms: int) -> None:
        for cb in list(self._ready_callbacks):
            try:
                cb(text(name), ready_ms)
            except BaseException as exc:
                self._errors.append(exc)

    def _check(self) -> None:
        if self._ptr is None:
            raise ValueError("Runtime: closed")

    def on_status(self, callback: StatusCallback) -> None:
        """Calls callback(instance, status_name, detail) for every status from now on."""
        self._status_callbacks.append(callback)

    def on_ready(self, callback: ReadyCallback) -> None:
        """Calls callback(instance, ready_ms) when an instance becomes ready (ready_ms -1 for an
        adopted instance)."""
        self._ready_callbacks.append(callback)

    def process_events(self, may_block: bool = False) -> int:
        """Runs the main context (see the module function); re-raises what a callback raised."""
        n = process_events(may_block)
        if self._errors:
            exc = self._errors.pop(0)
            raise exc
        return n

    @property
    def virt(self) -> Optional[str]:
        """"unikernel" or "container"."""
        self._check()
        return virt_name(lib.oakuk_runtime_virt(self))

    def set_keep_instances(self, keep: bool) -> None:
        """With keep, closing the runtime leaves the instances running for a later runtime on
        the same state directory to adopt."""
        self._check()
        lib.oakuk_runtime_set_keep_instances(self, bool(keep))

    def deploy(self, spec: InstanceSpec) -> None:
        """Validates spec and starts the instance in the background; statuses follow (CREATING,
        then RUNNING or FAILED). Raises OakukError: OAKUK_EINVAL for an invalid spec (the message
        says what), OAKUK_EEXISTS for a name already running."""
        self._check()
        err = c_void_p()
        start = len(self.events)
        rc = lib.oakuk_runtime_deploy(self, spec, byref(err))
        if rc != 0:
            raise_error(err, rc, "oakuk_runtime_deploy")
        self._since[spec.name] = start

    def undeploy(self, name: str) -> None:
        """Stops the instance and removes its state; UNDEPLOYED follows. Raises OakukError
        (OAKUK_ENOTFOUND for an unknown name)."""
        self._check()
        err = c_void_p()
        rc = lib.oakuk_runtime_undeploy(self, to_bytes(name, "name"), byref(err))
        if rc != 0:
            raise_error(err, rc, "oakuk_runtime_undeploy")

    def stats(self, name: str) -> tuple[float, int]:
        """(cpu_percent of one core since the previous call, rss_kb)."""
        self._check()
        cpu = ctypes.c_double()
        rss = ctypes.c_int64()
        err = c_void_p()
        rc = lib.oakuk_runtime_stats(self, to_bytes(name, "name"), byref(cpu), byref(rss), byref(err))
        if rc != 0:
            raise_error(err, rc, "oakuk_runtime_stats")
        return cpu.value, rss.value

    def cgroup_memory_kb(self, name: str) -> int:
        """Memory charged to the instance's cgroup, in kB."""
        self._check()
        kb = ctypes.c_int64()
        err = c_void_p()
        rc = lib.oakuk_runtime_cgroup_memory_kb(self, to_bytes(name, "name"), byref(kb), byref(err))
        if rc != 0:
            raise_error(err, rc, "oakuk_runtime_cgroup_memory_kb")
        return kb.value

    def adopt(self) -> int:
        """Re-adopts instances a previous runtime left in the state directory; returns how many
        live ones were adopted."""
        self._check()
        err = c_void_p()
        rc = lib.oakuk_runtime_adopt(self, byref(err))
        if rc < 0:
            raise_error(err, rc, "oakuk_runtime_adopt")
        return rc

    @property
    def instances(self) -> list[str]:
        """Names of the instances this runtime knows, sorted."""
        self._check()
        return [text(lib.oakuk_runtime_instance_name(self, i))
                for i in range(lib.oakuk_runtime_instance_count(self))]

    def status(self, name: str) -> Optional[str]:
        """Last reported status name ("RUNNING", ...), or None when unknown."""
        self._check()
        code = lib.oakuk_runtime_instance_status(self, to_bytes(name, "name"))
        return None if code < 0 else instance_status_name(code)

    def pid(self, name: str) -> int:
        """Host process id of the instance (QEMU), or 0 when not running."""
        self._check()
        return int(lib.oakuk_runtime_instance_pid(self, to_bytes(name, "name")))

    def ready(self, name: str) -> bool:
        """Whether the instance is ready (its readiness probes succeeded)."""
        self._check()
        return bool(lib.oakuk_runtime_instance_ready(self, to_bytes(name, "name")))

    def ready_ms(self, name: str) -> int:
        """Milliseconds from deploy to ready; -1 when not ready or adopted."""
        self._check()
        return int(lib.oakuk_runtime_instance_ready_ms(self, to_bytes(name, "name")))

    def exit_kind(self, name: str) -> str:
        """How the instance's process ended: one of EXIT_KINDS' values."""
        self._check()
        return EXIT_KINDS.get(lib.oakuk_runtime_instance_exit(self, to_bytes(name, "name")), "none")

    def console_path(self, name: str) -> Optional[str]:
        """Path of the instance's console (serial log), or None for an unknown name."""
        self._check()
        return take_string(lib.oakuk_runtime_instance_console_path(self, to_bytes(name, "name")))

    def console(self, name: str, max_lines: int = 200, max_bytes: int = 1 << 20, flags: int = 0) -> str:
        """The last max_lines lines of the instance's console, cleaned (oakuk.console.tail)."""
        path = self.console_path(name)
        if path is None:
            raise OakukError(-3, "instance %s: unknown to this runtime" % name, path=None)
        return _console.tail(path, max_lines, max_bytes, flags)

    def _wait(self, done: Callable[[], object], timeout: float, what: Callable[[], str]) -> object:
        deadline = time.monotonic() + timeout
        while True:
            self.process_events()
            result = done()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(what())
            time.sleep(0.02)

    def _events_of(self, name: str) -> list[StatusEvent]:
        """name's events since its latest deploy through this object."""
        return [e for e in self.events[self._since.get(name, 0):] if e.instance == name]

    def wait_status(self, name: str, status: str, timeout: float = 60.0) -> StatusEvent:
        """Runs the main context until name reported status (a name such as "RUNNING") since its
        latest deploy; returns that event. Raises OakukError when the instance ended otherwise
        first (FAILED, DEAD, COMPLETED, UNDEPLOYED; only UNDEPLOYED may follow another end),
        TimeoutError after timeout seconds."""

        def seen() -> Optional[StatusEvent]:
            for event in self._events_of(name):
                if event.status == status:
                    return event
                if event.status in _TERMINAL and status != "UNDEPLOYED":
                    raise OakukError(-1, "instance %s: %s while waiting for %s%s" % (
                        name, event.status, status, ": " + event.detail if event.detail else ""))
            return None

        return self._wait(seen, timeout, lambda: "instance %s: no %s within %g s (seen: %s)" % (
            name, status, timeout, [e.status for e in self._events_of(name)]))  # type: ignore[return-value]

    def wait_ready(self, name: str, timeout: float = 60.0) -> int:
        """Runs the main context until name is ready; returns ready_ms."""
        self._wait(lambda: self.ready(name), timeout,
                   lambda: "instance %s: not ready within %g s (status %s)" % (name, timeout, self.status(name)))
        return self.ready_ms(name)

    def wait_console(self, name: str, needle: str, timeout: float = 60.0) -> str:
        """Runs the main context until the instance's cleaned console contains needle; returns
        the console's text."""

        def found() -> Optional[str]:
            try:
                out = self.console(name)
            except OakukError:
                return None
            return out if needle in out else None

        return self._wait(found, timeout, lambda: "instance %s: %r not on its console within %g s"
                          % (name, needle, timeout))  # type: ignore[return-value]

    def close(self) -> None:
        """Drops this reference now (the last one stops every instance unless keep_instances)."""
        ptr = self.__dict__.get("_ptr")
        if ptr is not None:
            self._ptr = None
            lib.oakuk_runtime_unref(ptr)

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<oakuk.Runtime %s>" % (self.virt if self._ptr is not None else "closed")


class _QemuOptions(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("allow_emulation", ctypes.c_bool),
                ("search_path", ctypes.c_char_p), ("run_as", ctypes.c_char_p)]


def _qemu_options(allow_emulation: bool, search_path: Optional[Sequence[PathLike]],
                  run_as: Optional[Union[str, int]]) -> _QemuOptions:
    opts = _QemuOptions()
    rc = lib.oakuk_qemu_options_init(byref(opts), QEMU_OPTIONS_VERSION)
    if rc != 0:
        raise OakukError(rc, "oakuk_qemu_options_init: version %d unknown to the library"
                         % QEMU_OPTIONS_VERSION)
    opts.allow_emulation = bool(allow_emulation)
    opts.search_path = b":".join(fs_bytes(p) for p in search_path) if search_path else None
    opts.run_as = None if run_as is None else to_bytes(str(run_as), "run_as")
    return opts


class QemuCaps(Handle):
    """What the probe found on this machine: host arch, QEMU binaries, KVM."""

    _unref_fn = lib.oakuk_qemu_caps_unref
    _ref_fn = lib.oakuk_qemu_caps_ref

    @property
    def host_arch(self) -> str:
        """GOARCH of the host."""
        return text(lib.oakuk_qemu_caps_host_arch(self))

    @property
    def kvm(self) -> bool:
        """Whether KVM is usable."""
        return bool(lib.oakuk_qemu_caps_kvm(self))

    @property
    def kvm_reason(self) -> Optional[str]:
        """Why KVM is unusable, or None."""
        return text(lib.oakuk_qemu_caps_kvm_reason(self))

    def qemu_path(self, arch: str) -> Optional[str]:
        """Path of qemu-system-<arch> for a GOARCH, or None."""
        return text(lib.oakuk_qemu_caps_qemu_path(self, to_bytes(arch, "arch")))

    def qemu_version(self, arch: str) -> Optional[str]:
        """Version of qemu-system-<arch> ("7.2.22"), or None."""
        return text(lib.oakuk_qemu_caps_qemu_version(self, to_bytes(arch, "arch")))

    def accel_for_arch(self, arch: str) -> Optional[str]:
        """"kvm", "tcg" or None for guests of arch."""
        return accel_name(lib.oakuk_qemu_caps_accel_for_arch(self, to_bytes(arch, "arch")))

    @property
    def accel(self) -> Optional[str]:
        """The node's unikernel acceleration (that of the host arch)."""
        return accel_name(lib.oakuk_qemu_caps_accel(self))

    @property
    def emulated_archs(self) -> list[str]:
        """Foreign architectures runnable under TCG (with allow_emulation)."""
        return [text(lib.oakuk_qemu_caps_emulated_arch(self, i))
                for i in range(lib.oakuk_qemu_caps_emulated_arch_count(self))]

    def to_json(self) -> str:
        """The node report's "unikernel" object."""
        return take_string(lib.oakuk_qemu_caps_to_json(self)) or ""

    def __repr__(self) -> str:
        return "<oakuk.QemuCaps %s accel=%s>" % (self.host_arch, self.accel)


def qemu_probe(allow_emulation: bool = True, search_path: Optional[Sequence[PathLike]] = None) -> QemuCaps:
    """Probes this machine; never fails because QEMU or KVM is missing (the caps say so)."""
    opts = _qemu_options(allow_emulation, search_path, None)
    out = c_void_p()
    err = c_void_p()
    rc = lib.oakuk_qemu_probe(byref(out), byref(opts), byref(err))
    if rc != 0:
        raise_error(err, rc, "oakuk_qemu_probe")
    return QemuCaps._wrap(out.value)


def qemu_build_argv(spec: InstanceSpec, instance_dir: PathLike, qemu_binary: Optional[PathLike] = None) -> list[str]:
    """The QEMU command line the runtime would run for spec with instance_dir as the instance's
    directory; raises OakukError for an invalid spec (missing kernel, wrong arch, bad args)."""
    argv = ctypes.POINTER(ctypes.c_char_p)()
    argc = ctypes.c_size_t()
    err = c_void_p()
    rc = lib.oakuk_qemu_build_argv(byref(argv), byref(argc), spec, fs_bytes(instance_dir),
                                   fs_bytes(qemu_binary), byref(err))
    if rc != 0:
        raise_error(err, rc, "oakuk_qemu_build_argv")
    try:
        return [text(argv[i]) for i in range(argc.value)]
    finally:
        lib.oakuk_qemu_argv_free(argv)


def qemu_runtime(state_dir: PathLike, allow_emulation: bool = True, run_as: Optional[Union[str, int]] = None,
                 search_path: Optional[Sequence[PathLike]] = None) -> Runtime:
    """A unikernel runtime keeping its instances under <state_dir>/instances/<name>/. run_as: the
    unprivileged user (name or uid) QEMU runs as (required in practice when running as root).
    Create it on the thread that will wait for it."""
    opts = _qemu_options(allow_emulation, search_path, run_as)
    err = c_void_p()
    ptr = lib.oakuk_qemu_runtime_new(fs_bytes(state_dir, "state_dir"), byref(opts), byref(err))
    if not ptr:
        raise_error(err, what="oakuk_qemu_runtime_new")
    return Runtime._adopt(ptr)
