"""Node and cluster selection (docs/architecture.md §6)."""

from __future__ import annotations

import ctypes
from typing import Callable, Optional, Sequence, Union

from ._base import Handle, OakukError, accel_name, raise_error, virt_name
from ._lib import byref, c_void_p, lib, take_string, text, to_bytes
from .aggregate import as_reports, handle_array
from .descriptor import Microservice
from .model import ClusterAggregate, NodeReport, instance_status_name

Document = Union[str, bytes, dict]

__all__ = ["Reservations", "Placement", "select_node", "select_cluster", "POLICIES"]

OAKUK_ENOCAPACITY = -6
OPTIONS_VERSION = 1
POLICIES = {"most-free": 0, "best-fit": 1}


class _Options(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("policy", ctypes.c_int32),
                ("now_ms", ctypes.c_int64), ("timeout_ms", ctypes.c_int64)]


class Reservations(Handle):
    """Resources placed on targets but not yet visible in their reports."""

    _unref_fn = lib.oakuk_reservations_unref
    _ref_fn = lib.oakuk_reservations_ref

    def __init__(self) -> None:
        """An empty set of reservations."""
        Handle.__init__(self, lib.oakuk_reservations_new())

    def add(self, key: str, target_id: str, vcpus: int, memory_mb: int) -> None:
        """Adds (or replaces) the reservation called key on target_id."""
        lib.oakuk_reservations_add(self, to_bytes(key, "key"), to_bytes(target_id, "target_id"),
                                   int(vcpus), int(memory_mb))

    def remove(self, key: str) -> bool:
        """Drops a reservation; False when key is unknown."""
        return bool(lib.oakuk_reservations_remove(self, to_bytes(key, "key")))

    def total(self, target_id: str) -> tuple[int, int]:
        """(vcpus, memory_mb) reserved on target_id."""
        vcpus = ctypes.c_int64()
        memory = ctypes.c_int64()
        lib.oakuk_reservations_total(self, to_bytes(target_id, "target_id"), byref(vcpus), byref(memory))
        return vcpus.value, memory.value


class Placement(Handle):
    """The outcome of a selection: chosen target and variant (when ok) and one explanation line
    per candidate."""

    _unref_fn = lib.oakuk_placement_unref
    _ref_fn = lib.oakuk_placement_ref

    @property
    def ok(self) -> bool:
        """Whether a target was chosen."""
        return bool(lib.oakuk_placement_ok(self))

    @property
    def target(self) -> Optional[str]:
        """The chosen node or cluster id, or None."""
        return text(lib.oakuk_placement_target(self))

    @property
    def index(self) -> int:
        """Index of the chosen candidate; -1 when nothing was chosen."""
        return lib.oakuk_placement_index(self)

    @property
    def virt(self) -> Optional[str]:
        """The chosen variant: "container" or "unikernel"."""
        return virt_name(lib.oakuk_placement_virt(self))

    @property
    def arch(self) -> Optional[str]:
        """The chosen architecture."""
        return text(lib.oakuk_placement_arch(self))

    @property
    def code(self) -> Optional[str]:
        """The code (URL or reference) of the chosen variant and architecture."""
        return text(lib.oakuk_placement_code(self))

    @property
    def code_sha256(self) -> Optional[str]:
        """The code's expected sha256, or None."""
        return text(lib.oakuk_placement_code_sha256(self))

    @property
    def accel(self) -> Optional[str]:
        """"kvm"/"tcg" for unikernels, None for containers."""
        return accel_name(lib.oakuk_placement_accel(self))

    @property
    def status(self) -> Optional[str]:
        """"NODE_SCHEDULED", "NO_QUALIFIED_WORKER_FOUND", "NO_WORKER_CAPACITY", ..."""
        return instance_status_name(lib.oakuk_placement_status(self))

    @property
    def explanation(self) -> list[str]:
        """One line per candidate: why it was chosen or rejected."""
        return [text(lib.oakuk_placement_explanation(self, i))
                for i in range(lib.oakuk_placement_explanation_count(self))]

    def explain(self) -> str:
        """All explanation lines joined by newlines."""
        return take_string(lib.oakuk_placement_explain(self)) or ""

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        if self.ok:
            return "<oakuk.Placement %s %s %s>" % (self.target, self.virt, self.arch)
        return "<oakuk.Placement not placed: %s>" % self.status


def _options(policy: Union[str, int], now_ms: int, timeout_ms: int) -> _Options:
    opts = _Options()
    rc = lib.oakuk_sched_options_init(byref(opts), OPTIONS_VERSION)
    if rc != 0:
        raise OakukError(rc, "oakuk_sched_options_init: library does not accept options version %d"
                         % OPTIONS_VERSION)
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError("unknown policy %r (expected one of %s)" % (policy, ", ".join(POLICIES)))
        policy = POLICIES[policy]
    opts.policy = policy
    opts.now_ms = int(now_ms)
    opts.timeout_ms = int(timeout_ms)
    return opts


def _select(fn: Callable[..., int], ms: Microservice, candidates: Sequence[Handle], policy: Union[str, int],
            reservations: Optional[Reservations], reserve_key: Optional[str], now_ms: int,
            timeout_ms: int) -> Placement:
    opts = _options(policy, now_ms, timeout_ms)
    array = handle_array(candidates)
    out = c_void_p()
    err = c_void_p()
    rc = fn(byref(out), ms, array, len(candidates), reservations, to_bytes(reserve_key, "reserve_key"),
            byref(opts), byref(err))
    if rc == 0 or (rc == OAKUK_ENOCAPACITY and out.value):
        if err.value:  # "not placed" is reported by the Placement itself
            lib.oakuk_error_free(err)
        return Placement._wrap(out.value)
    if out.value:
        lib.oakuk_placement_unref(out)
    raise_error(err, rc, fn.__name__)


def select_node(ms: Microservice, nodes: Sequence[Union[NodeReport, Document]],
                policy: Union[str, int] = "most-free", reservations: Optional[Reservations] = None,
                reserve_key: Optional[str] = None, now_ms: int = 0, timeout_ms: int = 10000) -> Placement:
    """Chooses a node for microservice ms among nodes (NodeReport or JSON documents).

    Returns a Placement also when no node qualifies (placement.ok is False, placement.status says
    why); raises OakukError for invalid input. With reservations and reserve_key, a successful
    placement is recorded so the next call sees the node's remaining capacity."""
    return _select(lib.oakuk_sched_select_node, ms, as_reports(nodes), policy, reservations,
                   reserve_key, now_ms, timeout_ms)


def select_cluster(ms: Microservice, clusters: Sequence[Union[ClusterAggregate, Document]],
                   policy: Union[str, int] = "most-free", reservations: Optional[Reservations] = None,
                   reserve_key: Optional[str] = None, now_ms: int = 0,
                   timeout_ms: int = 10000) -> Placement:
    """Chooses a cluster for ms among ClusterAggregate objects (or JSON documents); as select_node."""
    clusters = [c if isinstance(c, ClusterAggregate) else ClusterAggregate.from_json(c) for c in clusters]
    return _select(lib.oakuk_sched_select_cluster, ms, clusters, policy, reservations, reserve_key,
                   now_ms, timeout_ms)
