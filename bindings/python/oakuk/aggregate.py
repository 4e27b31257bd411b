"""Folding node reports into a cluster aggregate."""

from ._base import raise_error
from ._lib import byref, c_void_p, lib
from .model import ClusterAggregate, NodeReport

__all__ = ["fold"]


def as_reports(reports):
    """NodeReport objects, or documents (str/bytes/dict) parsed into NodeReport."""
    return [r if isinstance(r, NodeReport) else NodeReport.from_json(r) for r in reports]


def handle_array(objects):
    array = (c_void_p * max(len(objects), 1))()
    for i, obj in enumerate(objects):
        array[i] = obj._ptr.value
    return array


def fold(reports, now_ms=0, node_timeout_ms=10000):
    """Folds reports (NodeReport or JSON documents) into a ClusterAggregate. A report counts as
    active when now_ms is 0, its received_at_ms is 0, or it is at most node_timeout_ms old."""
    reports = as_reports(reports)
    array = handle_array(reports)
    err = c_void_p()
    ptr = lib.oakuk_aggregate_fold(array, len(reports), int(now_ms), int(node_timeout_ms), byref(err))
    if not ptr:
        raise_error(err, what="oakuk_aggregate_fold")
    return ClusterAggregate._wrap(ptr)
