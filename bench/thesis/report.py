"""bench-thesis's report: report.md and one PNG per figure from one run's results
(bench_thesis.py; docs/evaluation.md is one such report)."""
import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SEGMENTS = (("control plane", lambda r: r["control_plane_ms"], "#7f7f7f"),
            ("image (cache)", lambda r: r["phases_ms"]["fetch"] + r["phases_ms"]["unpack"], "#9467bd"),
            ("network setup", lambda r: r["phases_ms"]["network"], "#2ca02c"),
            ("VMM / runtime start", lambda r: r["phases_ms"]["boot"], "#1f77b4"),
            ("boot to ready", lambda r: r["phases_ms"]["ready"], "#ff7f0e"))
SERVICES = ("unikernel", "container", "nginx")
PATHS = ("instance IP", "service IP", "port mapping")


def med(values):
    return statistics.median(values) if values else 0.0


def startup_bars(ax, runs):
    kinds = list(runs)
    for x, kind in enumerate(kinds):
        bottom = 0.0
        for label, fn, color in SEGMENTS:
            v = med([fn(r) for r in runs[kind]])
            ax.bar(x, v, bottom=bottom, color=color, width=0.55, label=label if x == 0 else None)
            bottom += v
        ready = [r["to_ready_ms"] for r in runs[kind]]
        ax.errorbar(x, med(ready), yerr=[[med(ready) - min(ready)], [max(ready) - med(ready)]], fmt="none",
                    ecolor="black", capsize=6)
        running = med([r["to_running_ms"] for r in runs[kind]])
        ax.plot([x - 0.3, x + 0.3], [running, running], color="black", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(kinds)), [k.replace(", ", "\n") for k in kinds], fontsize=8)
    ax.set_ylabel("ms from the deploy request")


def startup_figure(res, out):
    """Stacked medians of the phases, to ready; the dashed line is RUNNING. The right panel is
    the same up to the slowest RUNNING, where the shorter phases can be seen."""
    runs = res["startup"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.8))
    startup_bars(a, runs)
    a.set_title("deploy request -> ready (bars; whiskers min..max)")
    startup_bars(b, runs)
    top = max(med([r["to_running_ms"] for r in rs]) for rs in runs.values())
    b.set_ylim(0, top * 1.4)
    b.set_title("the same, up to RUNNING (dashed)")
    handles, labels = a.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(SEGMENTS), fontsize=8)
    fig.suptitle("Startup, medians of %d interleaved runs" % res["runs"])
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(os.path.join(out, "startup.png"), dpi=110)
    plt.close(fig)


def grouped(ax, groups, series, values, ylabel):
    width = 0.8 / len(series)
    for k, s in enumerate(series):
        xs = [g + (k - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [values(s, g) for g in groups], width=width, label=s)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def throughput_figure(res, out):
    tp = res["throughput"]
    fig, ax = plt.subplots(figsize=(7, 4))
    grouped(ax, PATHS, SERVICES, lambda s, p: tp[s][p]["rps"], "requests/s")
    ax.set_title("Throughput (wrk, 1 thread, 16 connections, %d s); 1 vCPU, %d MB each" % (
        res["wrk_seconds"], res["memory_mb"]))
    fig.tight_layout()
    fig.savefig(os.path.join(out, "throughput.png"), dpi=110)
    plt.close(fig)


def sizes_figure(res, out):
    sz, mem = res["sizes"], res["memory"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
    names = [s for s in SERVICES if s in sz]
    grouped(a, names, ("compressed", "unpacked"), lambda k, s: sz[s][k] / 1e6, "MB")
    a.set_title("Image sizes")
    labels, values = [], []
    for s in SERVICES:
        m = mem[s]
        if "rss_kb" in m:
            labels += [s + "\nRSS", s + "\nPSS"]
            values += [m["rss_kb"] / 1024, m["pss_kb"] / 1024]
        else:
            labels.append(s + "\ncgroup")
            values.append(m["cgroup_kb"] / 1024)
    b.bar(range(len(values)), values, color="#1f77b4")
    b.set_xticks(range(len(values)), labels, fontsize=8)
    b.set_ylabel("MB")
    b.set_title("Node memory per running instance")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sizes.png"), dpi=110)
    plt.close(fig)


def cpu_figure(res, out):
    cpu = res["cpu"]
    fig, ax = plt.subplots(figsize=(7, 4))
    grouped(ax, SERVICES, ("service", "whole node"), lambda k, s: cpu[s]["service_cpu_pct" if k == "service" else
                                                                       "node_cpu_pct"], "% of one core")
    rate = next(iter(cpu.values()))["rate"]
    ax.set_title("CPU while serving %d requests/s (the client's own CPU excluded)" % rate)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "cpu.png"), dpi=110)
    plt.close(fig)


def fmt(v, digits=0):
    return ("%%.%df" % digits) % v


def write(res, out, report="report.md", figures=""):
    """report (in out) and the PNGs (in out/figures); the report links them as figures/NAME.png."""
    fig_dir = os.path.join(out, figures)
    os.makedirs(fig_dir, exist_ok=True)
    startup_figure(res, fig_dir)
    throughput_figure(res, fig_dir)
    sizes_figure(res, fig_dir)
    cpu_figure(res, fig_dir)
    prefix = figures + "/" if figures else ""

    def link(name):
        return "![%s](%s%s.png)" % (name, prefix, name)
    m = res["machine"]
    accel = res.get("accel", "?")
    lines = ["# bench-thesis report", "",
             "One run of `scripts/bench-thesis.sh` (bench/thesis/), %s to %s. Every figure and table below "
             "comes from this run." % (res["started"], res["finished"]), "",
             "## Machine", "",
             "| | |", "|---|---|",
             "| CPU | %s, %d cores, %d MB |" % (m["cpu"], m["cores"], m["memory_mb"]),
             "| unikernels | %s (the node's accelerator%s) |" % (accel.upper(), "" if accel == "kvm" else
                                                                 ": QEMU emulates the guest's CPU, TCG"),
             "| kernel | %s |" % m["kernel"], "| QEMU | %s |" % m["qemu"], "| runc | %s |" % m["runc"],
             ""]
    if accel != "kvm":
        lines += ["**Unikernels ran under TCG** here: QEMU translated every guest instruction (this machine "
                  "has no usable KVM). Their boot, throughput and CPU figures say what emulation costs on this "
                  "machine, not what the same image does under KVM on an edge box; containers are not "
                  "affected.", ""]
    if res["unikernel"].startswith("the amd64 Linux test guest"):
        lines += ["The unikernel is the project's own **test guest** (a small Linux kernel and busybox "
                  "initrd, tests/guests), not a Unikraft image: a Unikraft nginx can be passed with "
                  "`--unikernel-image`.", ""]
    lines += ["## Services", "",
             "Each has 1 vCPU and %d MB and serves HTTP on port 80; root, cluster and node run on this "
             "machine, the node in a network namespace of its own." % res["memory_mb"], "",
             "| service | image |", "|---|---|",
             "| unikernel | %s |" % res["unikernel"], "| container | %s |" % res["container"],
             "| nginx | nginx as a container, its rootfs from Debian's nginx packages |", ""]
    runs = res["startup"]
    lines += ["## 1. Startup (the thesis's Fig. 5.7)", "", link("startup"), "",
              "Medians of %d interleaved runs, each image in the node's cache; ms." % res["runs"], "",
              "| | request -> RUNNING | request -> ready (min..max) | control plane | image (cache) | network "
              "setup | VMM / runtime start | boot to ready |", "|---|---|---|---|---|---|---|---|"]
    for kind, rs in runs.items():
        ready = [r["to_ready_ms"] for r in rs]
        lines.append("| %s | %s | %s (%s..%s) | %s |" % (
            kind, fmt(med([r["to_running_ms"] for r in rs])), fmt(med(ready)), fmt(min(ready)), fmt(max(ready)),
            " | ".join(fmt(med([fn(r) for r in rs]), 1) for _, fn, _ in SEGMENTS)))
    lines += ["", "The node's phases are its `oakuk_node_deploy_phase_seconds` histogram, read before and "
              "after each deploy; the control plane is the rest of request -> RUNNING (the root's log "
              "line): the API, the root's and the cluster's placement, the MQTT hops and the status "
              "report back. \"no network\" is the descriptor's `network: \"none\"`: no namespace plumbing, "
              "no interface, no port or service IP (the thesis's deployments without the overlay). "
              "Without a network there is no TCP probe: the test guest is ready at its console line, "
              "a container and a unikernel passed with `--unikernel-image` at RUNNING.", ""]
    tp = res["throughput"]
    lines += ["## 2. Throughput (Fig. 5.5)", "", link("throughput"), "",
              "wrk, 1 thread, 16 connections, %d s per line; from the node's host namespace (instance IP), "
              "from a client container's namespace on the same node (service IP), from the control "
              "host over the underlay (port mapping)." % res["wrk_seconds"], "",
              "| service | path | requests/s | p50 ms | p90 ms | p99 ms | non-2xx |",
              "|---|---|---|---|---|---|---|"]
    for s in SERVICES:
        for p in PATHS:
            t = tp[s][p]
            lines.append("| %s | %s | %s | %s | %s | %s | %d |" % (s, p, fmt(t["rps"]), fmt(t["p50_ms"], 2),
                                                                   fmt(t["p90_ms"], 2), fmt(t["p99_ms"], 2),
                                                                   t["non_2xx"]))
    sz, mem = res["sizes"], res["memory"]
    lines += ["", "## 3. Sizes (Table 5.2)", "", link("sizes"), "",
              "| service | compressed | unpacked | compressed vs the container's | node memory per instance |",
              "|---|---|---|---|---|"]
    for s in SERVICES:
        z = sz.get(s)
        m = mem[s]
        memtext = ("QEMU RSS %s MB, PSS %s MB" % (fmt(m["rss_kb"] / 1024, 1), fmt(m["pss_kb"] / 1024, 1))
                   if "rss_kb" in m else "cgroup %s MB" % fmt(m["cgroup_kb"] / 1024, 1))
        if z:
            ratio = "%.1f %%" % (100.0 * z["compressed"] / sz["container"]["compressed"])
            lines.append("| %s | %s MB | %s MB | %s | %s |" % (s, fmt(z["compressed"] / 1e6, 2),
                                                              fmt(z["unpacked"] / 1e6, 2), ratio, memtext))
        else:
            lines.append("| %s | (an OCI reference: not measured) | | | %s |" % (s, memtext))
    cpu = res["cpu"]
    lines += ["", "## 4. CPU (Fig. 5.3)", "", link("cpu"), "",
              "A client in the node's host namespace asks for `/` at a fixed rate through the instance IP. "
              "The service is QEMU's process (a unikernel) or the container's cgroup; the node is this "
              "whole machine less the client's own CPU (so anything else running on it shows there too). "
              "% of one core.", "",
              "| service | rate asked | answered/s | service CPU % | node CPU % |", "|---|---|---|---|---|"]
    for s in SERVICES:
        c = cpu[s]
        lines.append("| %s | %d | %s | %s | %s |" % (s, c["rate"], fmt(c["answered"], 1), fmt(c["service_cpu_pct"], 1),
                                                     fmt(c["node_cpu_pct"], 1)))
    lines.append("")
    with open(os.path.join(out, report), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    # report.py RESULTS.json DIR REPORT.md FIGURES: the report of a run again, e.g. docs/evaluation.md
    import json
    import sys
    with open(sys.argv[1]) as f:
        write(json.load(f), sys.argv[2], sys.argv[3], sys.argv[4])
