"""Loads liboakuk and declares the C prototypes the binding uses (ctypes, stdlib only)."""

import ctypes
import ctypes.util
import os

from ctypes import (POINTER, byref, c_bool, c_char_p, c_double, c_int, c_int32, c_int64,
                    c_size_t, c_uint, c_void_p)

__all__ = ["lib", "byref", "c_void_p", "take_string", "text", "to_bytes", "json_bytes"]


def _load():
    """OAKUK_LIBRARY (a path) wins; otherwise the linker's search path, then the soname."""
    explicit = os.environ.get("OAKUK_LIBRARY")
    if explicit:
        candidates = [("OAKUK_LIBRARY=" + explicit, explicit)]
    else:
        candidates = []
        found = ctypes.util.find_library("oakuk")
        if found:
            candidates.append(('ctypes.util.find_library("oakuk") -> ' + found, found))
        else:
            candidates.append(('ctypes.util.find_library("oakuk") found nothing', None))
        candidates.append(("liboakuk.so.0", "liboakuk.so.0"))
    failures = []
    for label, name in candidates:
        if name is None:
            failures.append(label)
            continue
        try:
            return ctypes.CDLL(name)
        except OSError as exc:
            failures.append("%s: %s" % (label, exc))
    raise ImportError("cannot load liboakuk; tried: " + "; ".join(failures) +
                      " (set OAKUK_LIBRARY to the path of liboakuk.so.0)")


lib = _load()

_vp = c_void_p
_err = POINTER(c_void_p)

# name: (restype, [argtypes])
_PROTOTYPES = {
    # common
    "oakuk_free": (None, [_vp]),
    "oakuk_version": (c_char_p, []),
    "oakuk_virt_name": (c_char_p, [c_int32]),
    "oakuk_virt_from_name": (c_int32, [c_char_p]),
    "oakuk_accel_name": (c_char_p, [c_int32]),
    "oakuk_accel_from_name": (c_int32, [c_char_p]),
    "oakuk_arch_is_known": (c_bool, [c_char_p]),
    # error
    "oakuk_error_code": (c_int32, [_vp]),
    "oakuk_error_errno": (c_int32, [_vp]),
    "oakuk_error_message": (c_char_p, [_vp]),
    "oakuk_error_path": (c_char_p, [_vp]),
    "oakuk_error_item_count": (c_size_t, [_vp]),
    "oakuk_error_item_path": (c_char_p, [_vp, c_size_t]),
    "oakuk_error_item_message": (c_char_p, [_vp, c_size_t]),
    "oakuk_error_free": (None, [_vp]),
    "oakuk_status_name": (c_char_p, [c_int32]),
    # descriptor
    "oakuk_descriptor_parse": (_vp, [c_char_p, c_size_t, _err]),
    "oakuk_descriptor_parse_file": (_vp, [c_char_p, _err]),
    "oakuk_descriptor_ref": (_vp, [_vp]),
    "oakuk_descriptor_unref": (None, [_vp]),
    "oakuk_descriptor_sla_version": (c_char_p, [_vp]),
    "oakuk_descriptor_customer_id": (c_char_p, [_vp]),
    "oakuk_descriptor_application_count": (c_size_t, [_vp]),
    "oakuk_descriptor_application": (_vp, [_vp, c_size_t]),
    "oakuk_descriptor_warning_count": (c_size_t, [_vp]),
    "oakuk_descriptor_warning": (c_char_p, [_vp, c_size_t]),
    "oakuk_descriptor_to_json": (_vp, [_vp, c_bool, _err]),
    "oakuk_application_ref": (_vp, [_vp]),
    "oakuk_application_unref": (None, [_vp]),
    "oakuk_application_id": (c_char_p, [_vp]),
    "oakuk_application_set_id": (c_int, [_vp, c_char_p, _err]),
    "oakuk_application_name": (c_char_p, [_vp]),
    "oakuk_application_namespace": (c_char_p, [_vp]),
    "oakuk_application_desc": (c_char_p, [_vp]),
    "oakuk_application_microservice_count": (c_size_t, [_vp]),
    "oakuk_application_microservice": (_vp, [_vp, c_size_t]),
    "oakuk_application_to_json": (_vp, [_vp, c_bool, _err]),
    "oakuk_microservice_parse": (_vp, [c_char_p, c_size_t, _err]),
    "oakuk_microservice_ref": (_vp, [_vp]),
    "oakuk_microservice_unref": (None, [_vp]),
    "oakuk_microservice_to_json": (_vp, [_vp, c_bool, _err]),
    "oakuk_microservice_id": (c_char_p, [_vp]),
    "oakuk_microservice_set_id": (c_int, [_vp, c_char_p, _err]),
    "oakuk_microservice_name": (c_char_p, [_vp]),
    "oakuk_microservice_namespace": (c_char_p, [_vp]),
    "oakuk_microservice_app_name": (c_char_p, [_vp]),
    "oakuk_microservice_app_namespace": (c_char_p, [_vp]),
    "oakuk_microservice_service_name": (c_char_p, [_vp]),
    "oakuk_microservice_virt_count": (c_size_t, [_vp]),
    "oakuk_microservice_virt": (c_int32, [_vp, c_size_t]),
    "oakuk_microservice_has_virt": (c_bool, [_vp, c_int32]),
    "oakuk_microservice_arch_count": (c_size_t, [_vp]),
    "oakuk_microservice_arch": (c_char_p, [_vp, c_size_t]),
    "oakuk_microservice_code": (c_char_p, [_vp, c_int32, c_size_t]),
    "oakuk_microservice_code_sha256": (c_char_p, [_vp, c_int32, c_size_t]),
    "oakuk_microservice_code_is_oci": (c_bool, [_vp, c_int32]),
    "oakuk_microservice_memory_mb": (c_int64, [_vp]),
    "oakuk_microservice_vcpus": (c_int64, [_vp]),
    "oakuk_microservice_vgpus": (c_int64, [_vp]),
    "oakuk_microservice_vtpus": (c_int64, [_vp]),
    "oakuk_microservice_bandwidth_in": (c_int64, [_vp]),
    "oakuk_microservice_bandwidth_out": (c_int64, [_vp]),
    "oakuk_microservice_storage": (c_int64, [_vp]),
    "oakuk_microservice_cmd_count": (c_size_t, [_vp]),
    "oakuk_microservice_cmd": (c_char_p, [_vp, c_size_t]),
    "oakuk_microservice_env_count": (c_size_t, [_vp]),
    "oakuk_microservice_env": (c_char_p, [_vp, c_size_t]),
    "oakuk_microservice_port_count": (c_size_t, [_vp]),
    "oakuk_microservice_port_host": (c_int32, [_vp, c_size_t]),
    "oakuk_microservice_port_guest": (c_int32, [_vp, c_size_t]),
    "oakuk_microservice_port_proto": (c_int32, [_vp, c_size_t]),
    "oakuk_microservice_rr_ip": (c_char_p, [_vp]),
    "oakuk_microservice_rr_ip_v6": (c_char_p, [_vp]),
    "oakuk_microservice_closest_ip": (c_char_p, [_vp]),
    "oakuk_microservice_closest_ip_v6": (c_char_p, [_vp]),
    "oakuk_microservice_one_shot": (c_bool, [_vp]),
    "oakuk_microservice_privileged": (c_bool, [_vp]),
    "oakuk_microservice_target_node": (c_char_p, [_vp]),
    "oakuk_microservice_constraint_count": (c_size_t, [_vp]),
    "oakuk_microservice_constraint_type": (c_int32, [_vp, c_size_t]),
    "oakuk_microservice_constraint_cluster": (c_char_p, [_vp, c_size_t]),
    "oakuk_microservice_constraint_value_count": (c_size_t, [_vp, c_size_t]),
    "oakuk_microservice_constraint_value": (c_char_p, [_vp, c_size_t, c_size_t]),
    "oakuk_microservice_emulation": (c_int32, [_vp]),
    "oakuk_microservice_restart": (c_int32, [_vp]),
    "oakuk_microservice_uk_flavor": (c_char_p, [_vp]),
    "oakuk_microservice_uk_version": (c_char_p, [_vp]),
    "oakuk_microservice_uk_net": (c_int32, [_vp]),
    "oakuk_microservice_uk_graceful_stop_s": (c_int64, [_vp]),
    "oakuk_microservice_readiness_tcp": (c_int32, [_vp]),
    "oakuk_microservice_readiness_serial": (c_char_p, [_vp]),
    "oakuk_microservice_reschedule_after_s": (c_int64, [_vp]),
    # model
    "oakuk_instance_status_name": (c_char_p, [c_int32]),
    "oakuk_instance_status_from_name": (c_int32, [c_char_p]),
    "oakuk_instance_name": (_vp, [c_char_p, c_int64]),
    "oakuk_node_report_from_json": (_vp, [c_char_p, c_size_t, _err]),
    "oakuk_node_report_to_json": (_vp, [_vp, c_bool, _err]),
    "oakuk_node_report_ref": (_vp, [_vp]),
    "oakuk_node_report_unref": (None, [_vp]),
    "oakuk_node_report_id": (c_char_p, [_vp]),
    "oakuk_node_report_host": (c_char_p, [_vp]),
    "oakuk_node_report_ip": (c_char_p, [_vp]),
    "oakuk_node_report_architecture": (c_char_p, [_vp]),
    "oakuk_node_report_cpu_percent": (c_double, [_vp]),
    "oakuk_node_report_vcpus": (c_int64, [_vp]),
    "oakuk_node_report_memory_mb": (c_int64, [_vp]),
    "oakuk_node_report_memory_total_mb": (c_int64, [_vp]),
    "oakuk_node_report_memory_percent": (c_double, [_vp]),
    "oakuk_node_report_has_virt": (c_bool, [_vp, c_int32]),
    "oakuk_node_report_unikernel_accel": (c_int32, [_vp]),
    "oakuk_node_report_qemu_version": (c_char_p, [_vp]),
    "oakuk_node_report_emulated_arch_count": (c_size_t, [_vp]),
    "oakuk_node_report_emulated_arch": (c_char_p, [_vp, c_size_t]),
    "oakuk_node_report_accel_for_arch": (c_int32, [_vp, c_char_p]),
    "oakuk_node_report_instance_count": (c_size_t, [_vp]),
    "oakuk_node_report_instance_name": (c_char_p, [_vp, c_size_t]),
    "oakuk_node_report_instance_status": (c_int32, [_vp, c_size_t]),
    "oakuk_node_report_instance_cpu_percent": (c_double, [_vp, c_size_t]),
    "oakuk_node_report_instance_memory_mb": (c_int64, [_vp, c_size_t]),
    "oakuk_node_report_received_at_ms": (c_int64, [_vp]),
    "oakuk_node_report_set_received_at_ms": (None, [_vp, c_int64]),
    "oakuk_cluster_aggregate_from_json": (_vp, [c_char_p, c_size_t, _err]),
    "oakuk_cluster_aggregate_to_json": (_vp, [_vp, c_bool, _err]),
    "oakuk_cluster_aggregate_ref": (_vp, [_vp]),
    "oakuk_cluster_aggregate_unref": (None, [_vp]),
    "oakuk_cluster_aggregate_set_identity": (None, [_vp, c_char_p, c_char_p]),
    "oakuk_cluster_aggregate_id": (c_char_p, [_vp]),
    "oakuk_cluster_aggregate_name": (c_char_p, [_vp]),
    "oakuk_cluster_aggregate_received_at_ms": (c_int64, [_vp]),
    "oakuk_cluster_aggregate_set_received_at_ms": (None, [_vp, c_int64]),
    "oakuk_cluster_aggregate_cpu_percent": (c_double, [_vp]),
    "oakuk_cluster_aggregate_memory_percent": (c_double, [_vp]),
    "oakuk_cluster_aggregate_cpu_cores": (c_int64, [_vp]),
    "oakuk_cluster_aggregate_memory_mb": (c_int64, [_vp]),
    "oakuk_cluster_aggregate_number_of_nodes": (c_int64, [_vp]),
    "oakuk_cluster_aggregate_active_nodes": (c_int64, [_vp]),
    "oakuk_cluster_aggregate_has_virt": (c_bool, [_vp, c_int32]),
    "oakuk_cluster_aggregate_arch_count": (c_size_t, [_vp]),
    "oakuk_cluster_aggregate_arch": (c_char_p, [_vp, c_size_t]),
    "oakuk_cluster_aggregate_per_arch_count": (c_size_t, [_vp]),
    "oakuk_cluster_aggregate_per_arch_name": (c_char_p, [_vp, c_size_t]),
    "oakuk_cluster_aggregate_per_arch": (c_bool, [_vp, c_char_p, POINTER(c_double), POINTER(c_int64),
                                                  POINTER(c_double), POINTER(c_int64), POINTER(c_int32)]),
    # aggregate
    "oakuk_aggregate_fold": (_vp, [POINTER(c_void_p), c_size_t, c_int64, c_int64, _err]),
    # sched
    "oakuk_sched_options_init": (c_int, [_vp, c_uint]),
    "oakuk_reservations_new": (_vp, []),
    "oakuk_reservations_ref": (_vp, [_vp]),
    "oakuk_reservations_unref": (None, [_vp]),
    "oakuk_reservations_add": (None, [_vp, c_char_p, c_char_p, c_int64, c_int64]),
    "oakuk_reservations_remove": (c_bool, [_vp, c_char_p]),
    "oakuk_reservations_total": (None, [_vp, c_char_p, POINTER(c_int64), POINTER(c_int64)]),
    "oakuk_placement_ref": (_vp, [_vp]),
    "oakuk_placement_unref": (None, [_vp]),
    "oakuk_placement_ok": (c_bool, [_vp]),
    "oakuk_placement_target": (c_char_p, [_vp]),
    "oakuk_placement_index": (c_int64, [_vp]),
    "oakuk_placement_virt": (c_int32, [_vp]),
    "oakuk_placement_arch": (c_char_p, [_vp]),
    "oakuk_placement_code": (c_char_p, [_vp]),
    "oakuk_placement_code_sha256": (c_char_p, [_vp]),
    "oakuk_placement_accel": (c_int32, [_vp]),
    "oakuk_placement_status": (c_int32, [_vp]),
    "oakuk_placement_explanation_count": (c_size_t, [_vp]),
    "oakuk_placement_explanation": (c_char_p, [_vp, c_size_t]),
    "oakuk_placement_explain": (_vp, [_vp]),
    "oakuk_sched_select_node": (c_int, [POINTER(c_void_p), _vp, POINTER(c_void_p), c_size_t, _vp,
                                        c_char_p, _vp, _err]),
    "oakuk_sched_select_cluster": (c_int, [POINTER(c_void_p), _vp, POINTER(c_void_p), c_size_t, _vp,
                                           c_char_p, _vp, _err]),
}

for _name, (_restype, _argtypes) in _PROTOTYPES.items():
    try:
        _fn = getattr(lib, _name)
    except AttributeError as _exc:
        raise ImportError("liboakuk at %s does not export %s (older library?)" % (lib._name, _name)) from _exc
    _fn.restype = _restype
    _fn.argtypes = _argtypes


def to_bytes(value, what="argument"):
    """str -> UTF-8 bytes; bytes pass through; None stays None."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError("%s must be str or bytes, not %s" % (what, type(value).__name__))


def json_bytes(value, what="document"):
    """A JSON document given as str, bytes, or a Python object (dict/list) to serialize."""
    if isinstance(value, (str, bytes)):
        return to_bytes(value, what)
    import json
    return json.dumps(value).encode("utf-8")


def text(raw):
    """A borrowed const char * (bytes or None) as str or None."""
    return None if raw is None else raw.decode("utf-8", "replace")


def take_string(ptr):
    """Decodes a string the library allocated and frees it with oakuk_free."""
    if not ptr:
        return None
    try:
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        lib.oakuk_free(ptr)
