#!/usr/bin/env python3
"""Reference for bench/sched: the same filter-and-rank decision as liboakuk's sched module, written
the straightforward way Oakestra's Python schedulers are (dicts, list comprehensions, sorted()).

Usage: sched-reference.py <input.json> <node|cluster> <iterations>
Input: {"service": {...microservice...}, "candidates": [node reports | {"id","name","aggregate"}]}.
Prints "chosen <id>" and "us_per_decision <float>" (CPU time of decisions only; parsing is not timed).
Covers what the benchmark exercises: variants in order of preference, arch[], emulation, KVM before
TCG, most-free ranking with id tie-break. No constraints, reservations or timeouts.
"""
import json
import sys
import time


def variants(service):
    v = service["virtualization"]
    v = v if isinstance(v, list) else [v]
    return ["container" if x == "docker" else x for x in v]


def node_accel(node, arch):
    if "unikernel" not in node.get("virtualization", []):
        return None
    uk = node.get("unikernel") or {}
    if arch == node["architecture"]:
        return uk.get("accel")
    if arch in uk.get("emulated_archs", []):
        return "tcg"
    return None


def node_options(service, node):
    """Yields (variant_index, accel, arch, free_mem, free_cores, cpu) for each runnable variant."""
    allow = service.get("emulation") == "allow"
    archs = service.get("arch") or []
    out = []
    for vi, virt in enumerate(variants(service)):
        if virt == "container":
            if "container" not in node["virtualization"]:
                continue
            if archs and node["architecture"] not in archs:
                continue
            out.append((vi, None, node["architecture"]))
        else:
            best = None
            for a in archs:
                acc = node_accel(node, a)
                if acc is None or (acc == "tcg" and not allow):
                    continue
                if best is None or (acc == "kvm" and best[0] != "kvm"):
                    best = (acc, a)
            if best:
                out.append((vi, best[0], best[1]))
    if node["vcpus"] < service["vcpus"] or node["memory"] < service["memory"]:
        return []
    return [(vi, acc, a, node["memory"], node["vcpus"], node["cpu_percent"]) for vi, acc, a in out]


def cluster_options(service, cand):
    agg = cand["aggregate"]
    allow = service.get("emulation") == "allow"
    archs = service.get("arch") or []
    virt = ["container" if v == "docker" else v for v in agg.get("virtualization", [])]
    out = []
    for vi, kind in enumerate(variants(service)):
        if kind == "container":
            if "container" not in virt:
                continue
            carch = [a for a in agg.get("arch", []) if not archs or a in archs]
            if agg.get("arch") and not carch:
                continue
            if agg["cpu_cores"] >= service["vcpus"] and agg["cumulative_memory_in_mb"] >= service["memory"]:
                out.append((vi, None, carch[0] if carch else None, agg["cumulative_memory_in_mb"],
                            agg["cpu_cores"], agg["cpu_percent"]))
        else:
            if "unikernel" not in virt:
                continue
            fits = []
            for i, a in enumerate(archs):
                e = agg.get("aggregation_per_architecture", {}).get(a)
                if e is None:
                    continue
                acc = e.get("accel") or "kvm"  # no accel: Oakestra's aggregate, treated as KVM
                if acc == "tcg" and not allow:
                    continue
                if e["cpu_cores"] >= service["vcpus"] and e["memory_in_mb"] >= service["memory"]:
                    fits.append((acc == "tcg", i, acc, a, e["memory_in_mb"], e["cpu_cores"], e["cpu_percent"]))
            if fits:
                _, _, acc, a, mem, cores, cpu = min(fits)
                out.append((vi, acc, a, mem, cores, cpu))
    return out


def decide(service, candidates, options_of, id_of):
    qualified = []
    for c in candidates:
        for opt in options_of(service, c):
            qualified.append((opt, id_of(c)))
    nvariants = len(variants(service))
    chosen_variant = None
    for vi in range(nvariants):
        if any(o[0] == vi and o[1] != "tcg" for o, _ in qualified):
            chosen_variant = vi
            break
    if chosen_variant is None:
        for vi in range(nvariants):
            if any(o[0] == vi for o, _ in qualified):
                chosen_variant = vi
                break
    if chosen_variant is None:
        return None
    ranked = sorted((o for o in qualified if o[0][0] == chosen_variant),
                    key=lambda q: (q[0][1] == "tcg", -q[0][3], -q[0][4], q[0][5], q[1]))
    return ranked[0][1]


def main():
    path, kind, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(path) as f:
        doc = json.load(f)
    service, candidates = doc["service"], doc["candidates"]
    if kind == "node":
        options_of, id_of = node_options, lambda n: n["id"]
    else:
        options_of, id_of = cluster_options, lambda c: c["id"]
    chosen = decide(service, candidates, options_of, id_of)
    # CPU time, as the C side measures: the machine may be busy with other work.
    start = time.process_time()
    for _ in range(iterations):
        decide(service, candidates, options_of, id_of)
    elapsed = time.process_time() - start
    print("chosen", chosen if chosen is not None else "-")
    print("us_per_decision %.3f" % (elapsed * 1e6 / iterations))


if __name__ == "__main__":
    main()
