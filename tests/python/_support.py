"""Shared paths and sample documents for the python suite."""

import copy
import json
import os

SOURCE_ROOT = os.environ.get("OAKUK_SOURCE_ROOT",
                             os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FIXTURES = os.environ.get("OAKUK_FIXTURES", os.path.join(SOURCE_ROOT, "tests", "fixtures"))
THESIS = os.path.join(FIXTURES, "thesis")
EXAMPLES = os.environ.get("OAKUK_EXAMPLES", os.path.join(SOURCE_ROOT, "examples"))


def thesis(name):
    return os.path.join(THESIS, name)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def example(*parts):
    return os.path.join(EXAMPLES, *parts)


def edge_nodes():
    """The four node reports of examples/nodes/edge.json, as dicts keyed by id."""
    with open(example("nodes", "edge.json"), encoding="utf-8") as f:
        return {doc["id"]: doc for doc in json.load(f)}


def node(id, arch="amd64", vcpus=4, memory=4096, virt=("container", "unikernel"), accel="kvm",
         emulated=(), cpu=10.0, instances=()):
    doc = {"id": id, "host": id, "ip": "10.18.0.1", "architecture": arch, "cpu_percent": cpu,
           "vcpus": vcpus, "memory": memory, "memory_total": memory * 2, "memory_percent": 50.0,
           "virtualization": list(virt), "instances": list(instances)}
    if "unikernel" in virt:
        doc["unikernel"] = {"accel": accel, "qemu_version": "7.2.0", "emulated_archs": list(emulated)}
    return doc


def service(name="svc", virt="unikernel", arch=("amd64",), memory=128, vcpus=1, **extra):
    doc = {"microservice_name": name, "microservice_namespace": "test", "virtualization": virt,
           "memory": memory, "vcpus": vcpus, "app_name": "app", "app_ns": "test"}
    if virt == "unikernel":
        doc["code"] = ",".join("http://127.0.0.1:8000/%s-%s.tar.gz" % (name, a) for a in arch)
    else:
        doc["code"] = "localhost:5000/oakuk/busybox:1"
    if arch:
        doc["arch"] = list(arch)
    doc.update(extra)
    return json.dumps(doc)


def deep(doc):
    return copy.deepcopy(doc)
