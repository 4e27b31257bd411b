"""Loads liboakuk and declares the C prototypes the binding uses (ctypes, stdlib only)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from ctypes import (POINTER, byref, c_bool, c_char_p, c_double, c_int, c_int32, c_int64,
                    c_size_t, c_uint, c_void_p)

__all__ = ["lib", "glib", "library_path", "byref", "c_void_p", "take_string", "text", "to_bytes",
           "json_bytes", "fs_bytes", "STATUS_CB", "READY_CB", "PROGRESS_CB"]


SONAME = "liboakuk.so.0"


def _load() -> ctypes.CDLL:
    """OAKUK_LIBRARY (a path) wins; otherwise the soname through the dynamic linker's search
    (ld.so.cache, LD_LIBRARY_PATH), then what ctypes.util.find_library("oakuk") finds, when it is
    the same ABI (liboakuk.so.0)."""
    explicit = os.environ.get("OAKUK_LIBRARY")
    if explicit:
        candidates = [("OAKUK_LIBRARY=" + explicit, explicit)]
    else:
        candidates = [(SONAME, SONAME)]
        found = ctypes.util.find_library("oakuk")
        if found is None:
            candidates.append(('ctypes.util.find_library("oakuk") found nothing', None))
        elif os.path.basename(found) != SONAME:
            candidates.append(('ctypes.util.find_library("oakuk") -> %s, not %s' % (found, SONAME), None))
        elif found != SONAME:
            candidates.append(('ctypes.util.find_library("oakuk") -> ' + found, found))
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
                      " (install liboakuk, or set OAKUK_LIBRARY to the path of liboakuk.so.0)")


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
    # runtime: instance spec
    "oakuk_instance_spec_new": (_vp, [c_char_p]),
    "oakuk_instance_spec_ref": (_vp, [_vp]),
    "oakuk_instance_spec_unref": (None, [_vp]),
    "oakuk_instance_spec_name": (c_char_p, [_vp]),
    "oakuk_instance_spec_set_virt": (None, [_vp, c_int32]),
    "oakuk_instance_spec_virt": (c_int32, [_vp]),
    "oakuk_instance_spec_set_kernel": (None, [_vp, c_char_p]),
    "oakuk_instance_spec_kernel": (c_char_p, [_vp]),
    "oakuk_instance_spec_set_initrd": (None, [_vp, c_char_p]),
    "oakuk_instance_spec_initrd": (c_char_p, [_vp]),
    "oakuk_instance_spec_set_files_dir": (None, [_vp, c_char_p]),
    "oakuk_instance_spec_files_dir": (c_char_p, [_vp]),
    "oakuk_instance_spec_set_bundle": (None, [_vp, c_char_p]),
    "oakuk_instance_spec_bundle": (c_char_p, [_vp]),
    "oakuk_instance_spec_set_rootfs": (None, [_vp, c_char_p]),
    "oakuk_instance_spec_rootfs": (c_char_p, [_vp]),
    "oakuk_instance_spec_set_image": (None, [_vp, c_char_p]),
    "oakuk_instance_spec_image": (c_char_p, [_vp]),
    "oakuk_instance_spec_set_registry_auth": (None, [_vp, c_char_p, c_char_p]),
    "oakuk_instance_spec_registry_username": (c_char_p, [_vp]),
    "oakuk_instance_spec_registry_password": (c_char_p, [_vp]),
    "oakuk_instance_spec_set_readonly_rootfs": (None, [_vp, c_bool]),
    "oakuk_instance_spec_readonly_rootfs": (c_bool, [_vp]),
    "oakuk_instance_spec_set_workdir": (None, [_vp, c_char_p]),
    "oakuk_instance_spec_workdir": (c_char_p, [_vp]),
    "oakuk_instance_spec_set_memory_mb": (None, [_vp, c_int64]),
    "oakuk_instance_spec_memory_mb": (c_int64, [_vp]),
    "oakuk_instance_spec_set_vcpus": (None, [_vp, c_int32]),
    "oakuk_instance_spec_vcpus": (c_int32, [_vp]),
    "oakuk_instance_spec_set_arch": (None, [_vp, c_char_p]),
    "oakuk_instance_spec_arch": (c_char_p, [_vp]),
    "oakuk_instance_spec_set_accel": (None, [_vp, c_int32]),
    "oakuk_instance_spec_accel": (c_int32, [_vp]),
    "oakuk_instance_spec_add_arg": (None, [_vp, c_char_p]),
    "oakuk_instance_spec_arg_count": (c_size_t, [_vp]),
    "oakuk_instance_spec_arg": (c_char_p, [_vp, c_size_t]),
    "oakuk_instance_spec_add_env": (None, [_vp, c_char_p]),
    "oakuk_instance_spec_env_count": (c_size_t, [_vp]),
    "oakuk_instance_spec_env": (c_char_p, [_vp, c_size_t]),
    "oakuk_instance_spec_set_one_shot": (None, [_vp, c_bool]),
    "oakuk_instance_spec_one_shot": (c_bool, [_vp]),
    "oakuk_instance_spec_set_graceful_stop_s": (None, [_vp, c_int32]),
    "oakuk_instance_spec_graceful_stop_s": (c_int32, [_vp]),
    "oakuk_instance_spec_set_flavor": (None, [_vp, c_char_p]),
    "oakuk_instance_spec_flavor": (c_char_p, [_vp]),
    "oakuk_instance_spec_set_version": (None, [_vp, c_char_p]),
    "oakuk_instance_spec_version": (c_char_p, [_vp]),
    "oakuk_instance_spec_set_cmdline_extra": (None, [_vp, c_char_p]),
    "oakuk_instance_spec_cmdline_extra": (c_char_p, [_vp]),
    "oakuk_instance_spec_set_network": (None, [_vp, c_char_p, c_char_p, c_char_p, c_int32, c_char_p,
                                               c_char_p]),
    "oakuk_instance_spec_netns_path": (c_char_p, [_vp]),
    "oakuk_instance_spec_tap_name": (c_char_p, [_vp]),
    "oakuk_instance_spec_ip": (c_char_p, [_vp]),
    "oakuk_instance_spec_prefix": (c_int32, [_vp]),
    "oakuk_instance_spec_gateway": (c_char_p, [_vp]),
    "oakuk_instance_spec_mac": (c_char_p, [_vp]),
    "oakuk_instance_spec_set_readiness_tcp": (None, [_vp, c_char_p, c_int32]),
    "oakuk_instance_spec_readiness_tcp_port": (c_int32, [_vp]),
    "oakuk_instance_spec_readiness_tcp_address": (c_char_p, [_vp]),
    "oakuk_instance_spec_set_readiness_serial": (None, [_vp, c_char_p]),
    "oakuk_instance_spec_readiness_serial": (c_char_p, [_vp]),
    # runtime
    "oakuk_runtime_ref": (_vp, [_vp]),
    "oakuk_runtime_unref": (None, [_vp]),
    "oakuk_runtime_set_keep_instances": (None, [_vp, c_bool]),
    "oakuk_runtime_virt": (c_int32, [_vp]),
    "oakuk_runtime_set_status_callback": (None, [_vp, _vp, _vp]),
    "oakuk_runtime_set_ready_callback": (None, [_vp, _vp, _vp]),
    "oakuk_runtime_deploy": (c_int, [_vp, _vp, _err]),
    "oakuk_runtime_undeploy": (c_int, [_vp, c_char_p, _err]),
    "oakuk_runtime_stats": (c_int, [_vp, c_char_p, POINTER(c_double), POINTER(c_int64), _err]),
    "oakuk_runtime_cgroup_memory_kb": (c_int, [_vp, c_char_p, POINTER(c_int64), _err]),
    "oakuk_runtime_adopt": (c_int, [_vp, _err]),
    "oakuk_runtime_instance_count": (c_size_t, [_vp]),
    "oakuk_runtime_instance_name": (c_char_p, [_vp, c_size_t]),
    "oakuk_runtime_instance_status": (c_int32, [_vp, c_char_p]),
    "oakuk_runtime_instance_pid": (c_int64, [_vp, c_char_p]),
    "oakuk_runtime_instance_ready": (c_bool, [_vp, c_char_p]),
    "oakuk_runtime_instance_ready_ms": (c_int64, [_vp, c_char_p]),
    "oakuk_runtime_instance_exit": (c_int32, [_vp, c_char_p]),
    "oakuk_runtime_instance_console_path": (_vp, [_vp, c_char_p]),
    # qemu
    "oakuk_qemu_options_init": (c_int, [_vp, c_uint]),
    "oakuk_qemu_probe": (c_int, [POINTER(c_void_p), _vp, _err]),
    "oakuk_qemu_caps_ref": (_vp, [_vp]),
    "oakuk_qemu_caps_unref": (None, [_vp]),
    "oakuk_qemu_caps_host_arch": (c_char_p, [_vp]),
    "oakuk_qemu_caps_kvm": (c_bool, [_vp]),
    "oakuk_qemu_caps_kvm_reason": (c_char_p, [_vp]),
    "oakuk_qemu_caps_qemu_path": (c_char_p, [_vp, c_char_p]),
    "oakuk_qemu_caps_qemu_version": (c_char_p, [_vp, c_char_p]),
    "oakuk_qemu_caps_accel_for_arch": (c_int32, [_vp, c_char_p]),
    "oakuk_qemu_caps_accel": (c_int32, [_vp]),
    "oakuk_qemu_caps_emulated_arch_count": (c_size_t, [_vp]),
    "oakuk_qemu_caps_emulated_arch": (c_char_p, [_vp, c_size_t]),
    "oakuk_qemu_caps_to_json": (_vp, [_vp]),
    "oakuk_qemu_build_argv": (c_int, [POINTER(POINTER(c_char_p)), POINTER(c_size_t), _vp, c_char_p,
                                      c_char_p, _err]),
    "oakuk_qemu_argv_free": (None, [POINTER(c_char_p)]),
    "oakuk_qemu_runtime_new": (_vp, [c_char_p, _vp, _err]),
    # image
    "oakuk_image_cache_options_init": (c_int, [_vp, c_uint]),
    "oakuk_image_ref": (_vp, [_vp]),
    "oakuk_image_unref": (None, [_vp]),
    "oakuk_image_dir": (c_char_p, [_vp]),
    "oakuk_image_kernel": (c_char_p, [_vp]),
    "oakuk_image_initrd": (c_char_p, [_vp]),
    "oakuk_image_files_dir": (c_char_p, [_vp]),
    "oakuk_image_flavor": (c_char_p, [_vp]),
    "oakuk_image_version": (c_char_p, [_vp]),
    "oakuk_image_cmdline_style": (c_char_p, [_vp]),
    "oakuk_image_cmdline_extra": (c_char_p, [_vp]),
    "oakuk_image_arch": (c_char_p, [_vp]),
    "oakuk_image_sha256": (c_char_p, [_vp]),
    "oakuk_image_url": (c_char_p, [_vp]),
    "oakuk_image_digest": (c_char_p, [_vp]),
    "oakuk_image_arg_count": (c_size_t, [_vp]),
    "oakuk_image_arg": (c_char_p, [_vp, c_size_t]),
    "oakuk_image_env_count": (c_size_t, [_vp]),
    "oakuk_image_env": (c_char_p, [_vp, c_size_t]),
    "oakuk_image_cache_new": (_vp, [c_char_p, _vp, _err]),
    "oakuk_image_cache_ref": (_vp, [_vp]),
    "oakuk_image_cache_unref": (None, [_vp]),
    "oakuk_image_cache_dir": (c_char_p, [_vp]),
    "oakuk_image_cache_fetch_sync": (_vp, [_vp, c_char_p, c_char_p, _vp, _vp, _err]),
    "oakuk_image_cache_fetch_oci_sync": (_vp, [_vp, c_char_p, c_char_p, c_char_p, c_char_p, _vp, _vp,
                                               _err]),
    "oakuk_image_code_is_oci": (c_bool, [c_char_p]),
    "oakuk_image_cache_size": (ctypes.c_uint64, [_vp]),
    "oakuk_image_cache_prune": (c_int, [POINTER(ctypes.c_uint64), _vp, ctypes.c_uint64, _err]),
    "oakuk_image_kernel_arch": (c_char_p, [c_char_p, _err]),
    "oakuk_image_kernel_format": (c_char_p, [c_char_p, _err]),
    "oakuk_image_kernel_unikraft_version": (c_int, [POINTER(c_char_p), POINTER(c_void_p), c_char_p, _err]),
    # console
    "oakuk_console_new": (_vp, []),
    "oakuk_console_free": (None, [_vp]),
    "oakuk_console_feed": (_vp, [_vp, c_char_p, c_size_t]),
    "oakuk_console_finish": (_vp, [_vp]),
    "oakuk_console_tail": (c_int, [POINTER(c_void_p), c_char_p, ctypes.c_uint32, ctypes.c_uint64,
                                   ctypes.c_uint32, _err]),
    "oakuk_console_crash": (c_int32, [POINTER(c_void_p), c_char_p]),
    "oakuk_console_line_crash": (c_int32, [c_char_p]),
    # net
    "oakuk_net_options_init": (c_int, [_vp, c_uint]),
    "oakuk_net_new": (_vp, [_vp, _err]),
    "oakuk_net_ref": (_vp, [_vp]),
    "oakuk_net_unref": (None, [_vp]),
    "oakuk_net_setup_node": (c_int, [_vp, _err]),
    "oakuk_net_teardown_node": (c_int, [_vp, _err]),
    "oakuk_net_instance_setup": (c_int, [_vp, c_char_p, c_char_p, c_int32, POINTER(c_void_p), _err]),
    "oakuk_net_instance_teardown": (c_int, [_vp, c_char_p, _err]),
    "oakuk_net_instance_info_ref": (_vp, [_vp]),
    "oakuk_net_instance_info_unref": (None, [_vp]),
    "oakuk_net_instance_info_name": (c_char_p, [_vp]),
    "oakuk_net_instance_info_mode": (c_int32, [_vp]),
    "oakuk_net_instance_info_netns_path": (c_char_p, [_vp]),
    "oakuk_net_instance_info_host_ifname": (c_char_p, [_vp]),
    "oakuk_net_instance_info_ip": (c_char_p, [_vp]),
    "oakuk_net_instance_info_tap": (c_char_p, [_vp]),
    "oakuk_net_instance_info_guest_ip": (c_char_p, [_vp]),
    "oakuk_net_instance_info_guest_prefix": (ctypes.c_uint32, [_vp]),
    "oakuk_net_instance_info_guest_gateway": (c_char_p, [_vp]),
    "oakuk_net_instance_info_guest_mac": (c_char_p, [_vp]),
    "oakuk_net_port_map_add": (c_int, [_vp, c_char_p, c_char_p, _err]),
    "oakuk_net_port_map_remove": (c_int, [_vp, c_char_p, c_char_p, _err]),
    "oakuk_net_service_set": (c_int, [_vp, c_char_p, ctypes.c_uint32, POINTER(c_char_p), c_size_t, _err]),
    "oakuk_net_service_remove": (c_int, [_vp, c_char_p, _err]),
    "oakuk_net_peer_add": (c_int, [_vp, c_char_p, c_char_p, _err]),
    "oakuk_net_peer_remove": (c_int, [_vp, c_char_p, c_char_p, _err]),
    "oakuk_net_reconcile": (c_int, [_vp, POINTER(c_char_p), c_size_t, POINTER(c_char_p), c_size_t,
                                    POINTER(c_char_p), c_size_t, _err]),
    "oakuk_net_list": (_vp, [_vp, _err]),
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


def fs_bytes(value, what="path"):
    """A path (str, bytes or os.PathLike) as bytes for the C API; None stays None."""
    if value is None:
        return None
    try:
        return os.fsencode(value)
    except TypeError:
        raise TypeError("%s must be a path (str, bytes or os.PathLike), not %s"
                        % (what, type(value).__name__)) from None


def library_path():
    """The file the loaded liboakuk came from (resolved through /proc/self/maps when it was
    loaded by soname)."""
    name = lib._name
    if os.path.isabs(name):
        return os.path.realpath(name)
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) == 6 and os.path.basename(fields[5].strip()).startswith(SONAME):
                    return fields[5].strip()
    except OSError:
        pass
    return name


# Callback types of <oakuk/runtime.h> and <oakuk/image.h>.
STATUS_CB = ctypes.CFUNCTYPE(None, c_char_p, c_int32, c_char_p, c_void_p)
READY_CB = ctypes.CFUNCTYPE(None, c_char_p, c_int64, c_void_p)
PROGRESS_CB = ctypes.CFUNCTYPE(None, c_int64, c_int64, c_void_p)


def _load_glib():
    """GLib, which liboakuk links: its callbacks (runtime statuses, readiness) are delivered on a
    GMainContext, and the C API has no call of its own that runs one."""
    g = ctypes.CDLL("libglib-2.0.so.0")
    g.g_main_context_iteration.restype = c_int
    g.g_main_context_iteration.argtypes = [c_void_p, c_int]
    g.g_main_context_pending.restype = c_int
    g.g_main_context_pending.argtypes = [c_void_p]
    return g


glib = _load_glib()
