"""Folding node reports into a cluster aggregate."""

from __future__ import annotations

import ctypes
from typing import Sequence, Union

from ._base import Handle, raise_error
from ._lib import byref, c_void_p, lib
from .model import ClusterAggregate, NodeReport

Document = Union[str, bytes, dict]

__all__ = ["fold"]


def as_reports(reports: Sequence[Union[NodeReport, Document]]) -> list[NodeReport]:
    """NodeReport objects, or documents (str/bytes/dict) parsed into NodeReport."""
    return [r if isinstance(r, NodeReport) else NodeReport.from_json(r) for r in reports]


def handle_array(objects: Sequence[Handle]) -> ctypes.Array:
    """A C array of the objects' pointers (borrowed: keep objects alive while it is used)."""
    array = (c_void_p * max(len(objects), 1))()
    for i, obj in enumerate(objects):
        array[i] = obj._ptr.value
    return array


def fold(reports: Sequence[Union[NodeReport, Document]], now_ms: int = 0,
         node_timeout_ms: int = 10000) -> ClusterAggregate:
    """Folds reports (NodeReport or JSON documents) into a ClusterAggregate. A report counts as
    active when now_ms is 0, its received_at_ms is 0, or it is at most node_timeout_ms old."""
    reports = as_reports(reports)
    array = handle_array(reports)
    err = c_void_p()
    ptr = lib.oakuk_aggregate_fold(array, len(reports), int(now_ms), int(node_timeout_ms), byref(err))
    if not ptr:
        raise_error(err, what="oakuk_aggregate_fold")
    return ClusterAggregate._wrap(ptr)
